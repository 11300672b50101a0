"""Per-key sliding windows, so a stream of single readings is scored in context.

Each key (entity) keeps a bounded deque of its last ``length`` readings. Once ``length``
readings are held, :meth:`WindowBuilder.push` emits a :class:`Window` (length, D) and then
one more every ``stride`` readings. Keys are independent; the width D is fixed per key by
its first reading (a scalar counts as width 1) and any other width raises
``DecodeError("wrong_dimension")`` without touching the key's state.

Memory is bounded by ``max_keys``: a new key beyond it evicts the least recently seen key
(its partial window is lost; ``evicted`` counts these).

Late readings. A reading whose ``ts_ms`` is older than the newest timestamp already seen
for its key is late (equal timestamps are not; readings without a timestamp never are).
With ``late_policy="drop"`` (default) it is discarded and counted in ``late_dropped``, so
every window is in time order. With ``"accept"`` it is appended in arrival order and
counted in ``late_accepted``: windows are then in arrival order, which suits sources whose
clocks jitter but whose arrival order is meaningful. There is no reordering buffer: a
streaming scorer would have to wait for stragglers, and we prefer low latency.
A window's ``end_ts_ms`` is the newest timestamp seen for the key (None if none had one).

Keys in their own units. One model scores every key, but keys are often different sensors:
a flow in m3/h beside a pressure in Pa. With ``profile_readings`` > 0 each key's first
readings fix its profile (per feature: the median and the typical spread within a window,
:func:`key_profile`), and every window of that key reaches the model as
``(values - loc) / scale`` (:meth:`Window.normalised`); ``values`` stay in the reading's
units for explanations. A key's windows start once its profile is known. A profile never
changes once fixed: the builder remembers the profiles of up to ``max_keys`` keys (past
an eviction of the key's readings), :meth:`WindowBuilder.key_profiles` snapshots them to
be saved with each model, and :meth:`WindowBuilder.adopt_profiles` restores them after a
restart, so a key's units, and what its scores mean, survive both.

Level-free features. :class:`Centring` subtracts each window's own mean from the features
an operator names (``STREAMAE_WINDOW__CENTRED_FEATURES``): a channel that drifts slowly
with its surroundings (a temperature following the room through a shift) leaves the range
the model saw in training, and a model of levels then flags every window. Centred, the
channel still shows a jump or a change of slope inside the window, but not its level.
"""

from __future__ import annotations

import logging
from collections import OrderedDict, deque
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np

from streamae.exceptions import DecodeError

logger = logging.getLogger(__name__)

LatePolicy = Literal["drop", "accept"]


@dataclass(frozen=True)
class Window:
    """``length`` consecutive readings of one key, oldest first: values (length, D) float32
    in the reading's units; ``loc``/``scale`` (D,) are the key's profile when there is one."""

    key: str
    end_ts_ms: int | None
    values: np.ndarray
    loc: np.ndarray | None = None
    scale: np.ndarray | None = None

    def normalised(self) -> np.ndarray:
        """The values in the key's own units (unchanged without a profile)."""
        if self.loc is None or self.scale is None:
            return self.values
        return ((self.values - self.loc) / self.scale).astype(np.float32, copy=False)

    def to_reading_units(self, values: np.ndarray) -> np.ndarray:
        """Inverse of :meth:`normalised`, for anything shaped like a row or the window."""
        if self.loc is None or self.scale is None:
            return values
        return (values * self.scale + self.loc).astype(np.float32, copy=False)


Profile = tuple[np.ndarray, np.ndarray]  # a key's (loc, scale), each (D,) float32
WindowUnits = Literal["key", "reading"]  # what a window model was trained on


def profiles_to_json(profiles: dict[str, Profile]) -> dict[str, list[list[float]]]:
    """``{key: [loc, scale]}`` in JSON (float32 survives the round trip exactly)."""
    return {key: [loc.tolist(), scale.tolist()] for key, (loc, scale) in profiles.items()}


def profiles_from_json(data: object) -> dict[str, Profile]:
    """Inverse of :func:`profiles_to_json`; entries that are not two equal-length lists of
    positive-scale finite numbers are skipped, so a bad entry never stops a start."""
    out: dict[str, Profile] = {}
    for key, pair in (data.items() if isinstance(data, dict) else ()):
        try:
            loc, scale = (np.asarray(v, dtype=np.float32) for v in pair)
        except (TypeError, ValueError):
            continue
        if (loc.ndim == 1 and loc.shape == scale.shape and np.isfinite(loc).all()
                and np.isfinite(scale).all() and (scale > 0).all()):
            out[str(key)] = (loc, scale)
    return out


MAD_TO_SIGMA = 1.4826  # MAD * this estimates sigma for gaussian data
MEAN_ABS_TO_SIGMA = 1.2533  # mean absolute deviation * this estimates sigma
PROFILE_MAGNITUDE_FLOOR = 1e-6  # a spread is at least this share of the key's level


def key_profile(rows: np.ndarray, length: int) -> tuple[np.ndarray, np.ndarray]:
    """Per column of (R, D): the median and a spread that cannot collapse.

    The spread is the median, over the sliding windows of ``length`` in ``rows``, of each
    window's standard deviation: what the model sees of a key, estimated alike whatever
    part of a slow cycle the rows cover (the spread of the values themselves varies 2-4x
    with the phase a key starts at), and a spike moves only the median's neighbours. When
    that is 0 (a feature that steps between flat stretches): MAD x 1.4826, else the mean
    absolute deviation x 1.2533, else (flat) the level's magnitude, else 1, so a key that was
    flat at first keeps raw units rather than turning its first change into a million
    sigmas."""
    x = np.asarray(rows, dtype=np.float64)
    loc = np.median(x, axis=0)
    span = max(1, min(length, len(x)))
    scale = np.median(np.lib.stride_tricks.sliding_window_view(x, span, axis=0).std(axis=-1),
                      axis=0)
    deviation = np.abs(x - loc)
    for fallback in (MAD_TO_SIGMA * np.median(deviation, axis=0),
                     MEAN_ABS_TO_SIGMA * deviation.mean(axis=0), np.abs(loc)):
        scale = np.where(scale > 0, scale, fallback)
    scale = np.where(scale > 0, scale, 1.0)
    scale = np.maximum(scale, PROFILE_MAGNITUDE_FLOOR * np.abs(loc))
    return loc.astype(np.float32), scale.astype(np.float32)


@dataclass
class _KeyState:
    """The readings held for one key and what is needed to decide the next emission."""

    width: int
    rows: deque[np.ndarray]
    newest_ts: int | None = None
    pushed: int = 0  # readings appended since the key was (re)created
    first: int = 1  # the reading that completes the key's first window
    early: list[np.ndarray] | None = None  # the first readings, until they fix the profile
    loc: np.ndarray | None = None
    scale: np.ndarray | None = None


def windows_in(readings: int, length: int, stride: int = 1, profile_readings: int = 0) -> int:
    """How many windows one key's first ``readings`` readings complete."""
    first = max(length, profile_readings)
    return 0 if readings < first else (readings - first) // stride + 1


class WindowBuilder:
    """Turn per-key readings into sliding windows; see the module docstring for policies."""

    def __init__(
        self,
        length: int,
        stride: int = 1,
        max_keys: int = 10_000,
        late_policy: LatePolicy = "drop",
        profile_readings: int = 0,
    ) -> None:
        if length < 1 or stride < 1 or max_keys < 1 or profile_readings < 0:
            raise ValueError(f"length/stride/max_keys must be >= 1 and profile_readings >= 0: "
                             f"{length}/{stride}/{max_keys}/{profile_readings}")
        if late_policy not in ("drop", "accept"):
            raise ValueError(f"late_policy must be 'drop' or 'accept', got {late_policy!r}")
        self.length = length
        self.stride = stride
        self.max_keys = max_keys
        self.late_policy: LatePolicy = late_policy
        self.profile_readings = profile_readings
        self.evicted = 0
        self.late_dropped = 0
        self.late_accepted = 0
        self._keys: OrderedDict[str, _KeyState] = OrderedDict()
        self._profiles: OrderedDict[str, Profile] = OrderedDict()  # outlive key states

    def __len__(self) -> int:
        return len(self._keys)

    def __contains__(self, key: object) -> bool:
        return key in self._keys

    def push(self, key: str, ts_ms: int | None, values: np.ndarray | float) -> list[Window]:
        """Add one reading; return the window it completes (zero or one, as a list)."""
        row = _as_row(values)
        state = self._keys.get(key)
        if state is not None and row.size != state.width:
            raise DecodeError(
                "wrong_dimension", f"key width {state.width}, reading width {row.size}"
            )
        if state is None:
            state = self._add_key(key, row.size)
        else:
            self._keys.move_to_end(key)
        if ts_ms is not None and state.newest_ts is not None and ts_ms < state.newest_ts:
            if self.late_policy == "drop":
                self.late_dropped += 1
                return []
            self.late_accepted += 1
        elif ts_ms is not None:
            state.newest_ts = ts_ms
        state.rows.append(row)
        state.pushed += 1
        if state.early is not None:
            self._learn_profile(key, state, row)
        if state.pushed < state.first or (state.pushed - state.first) % self.stride:
            return []
        return [Window(key, state.newest_ts, np.stack(state.rows), state.loc, state.scale)]

    def _learn_profile(self, key: str, state: _KeyState, row: np.ndarray) -> None:
        """Hold the key's first readings; the last of them fixes its profile."""
        assert state.early is not None
        state.early.append(row)
        if len(state.early) >= self.profile_readings:
            state.loc, state.scale = key_profile(np.stack(state.early), self.length)
            state.early = None
            self._remember(key, (state.loc, state.scale))

    def _remember(self, key: str, profile: Profile) -> None:
        self._profiles[key] = profile
        self._profiles.move_to_end(key)
        if len(self._profiles) > self.max_keys:
            self._profiles.popitem(last=False)

    def key_profiles(self) -> dict[str, Profile]:
        """Every remembered profile (a snapshot: safe to hand to another thread)."""
        return dict(self._profiles)

    def set_profiling(self, profile_readings: int) -> None:
        """Switch key profiles on (with this many readings) or off (0) for every key: the
        units a model was trained in rule over the setting. Keys held now start again."""
        self.profile_readings = profile_readings
        self._keys.clear()
        if not profile_readings:
            self._profiles.clear()

    def adopt_profiles(self, profiles: dict[str, Profile]) -> None:
        """Profiles saved with a model: each key without one of its own takes it; a key's
        own profile is never replaced, so its units never change under it."""
        for key, profile in profiles.items():
            if key in self._profiles:
                continue
            self._remember(key, profile)
            state = self._keys.get(key)  # still learning its own: the saved one wins
            if state is not None and state.early is not None and profile[0].shape == (
                    state.width,):
                state.loc, state.scale = profile
                state.early, state.first = None, self.length

    def drop(self, key: str) -> None:
        """Forget one key (e.g. when its partition is revoked)."""
        self._keys.pop(key, None)

    def clear(self) -> None:
        """Forget every key; counters are kept (they are totals)."""
        self._keys.clear()

    def _add_key(self, key: str, width: int) -> _KeyState:
        """Create a key's state, evicting the least recently seen key when full."""
        if len(self._keys) >= self.max_keys:
            self._keys.popitem(last=False)
            self.evicted += 1
            logger.debug("window key evicted keys=%d evicted_total=%d", self.max_keys, self.evicted)
        state = _KeyState(width=width, rows=deque(maxlen=self.length), first=self.length)
        if self.profile_readings:
            known = self._profiles.get(key)
            if known is not None and known[0].shape == (width,):
                state.loc, state.scale = known
                self._profiles.move_to_end(key)
            else:
                state.early, state.first = [], max(self.length, self.profile_readings)
        self._keys[key] = state
        return state


_NO_COLUMNS = np.empty(0, dtype=np.intp)


class Centring:
    """Subtract each window's mean from the named features (see the module docstring)."""

    def __init__(self, features: Sequence[str] = ()) -> None:
        self.features = tuple(features)
        self._columns: dict[tuple[str, ...], np.ndarray] = {}

    def columns(self, names: tuple[str, ...] | None) -> np.ndarray:
        """The centred features' columns among a reading's ``names``; DecodeError when a
        reading lacks names or one of the features, so it is dead-lettered, not guessed."""
        if not self.features:
            return _NO_COLUMNS
        if names is None:
            raise DecodeError("missing_feature", "centred features need named readings "
                              f"({','.join(self.features)}); this one is an unnamed array")
        found = self._columns.get(names)
        if found is None:
            missing = [f for f in self.features if f not in names]
            if missing:
                raise DecodeError("missing_feature", f"centred features {missing[:5]} are not "
                                  f"among the reading's features"[:200])
            found = np.array([names.index(f) for f in self.features], dtype=np.intp)
            self._columns[names] = found
        return found

    @staticmethod
    def apply(values: np.ndarray, columns: np.ndarray) -> np.ndarray:
        """A window (length, D) with ``columns`` centred; the input is not modified."""
        if columns.size == 0:
            return values
        out = values.copy()
        out[:, columns] -= out[:, columns].mean(axis=0)
        return out


def _as_row(values: np.ndarray | float) -> np.ndarray:
    """A reading as a 1-D float32 row; scalars become width 1."""
    array = np.asarray(values, dtype=np.float32)
    if array.ndim == 0:
        return array.reshape(1)
    if array.ndim != 1:
        raise DecodeError("wrong_dimension", f"window readings must be 1-D, got {array.shape}")
    return array.copy()
