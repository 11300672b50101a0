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
    """``length`` consecutive readings of one key, oldest first: values (length, D) float32."""

    key: str
    end_ts_ms: int | None
    values: np.ndarray


@dataclass
class _KeyState:
    """The readings held for one key and what is needed to decide the next emission."""

    width: int
    rows: deque[np.ndarray]
    newest_ts: int | None = None
    pushed: int = 0  # readings appended since the key was (re)created


class WindowBuilder:
    """Turn per-key readings into sliding windows; see the module docstring for policies."""

    def __init__(
        self,
        length: int,
        stride: int = 1,
        max_keys: int = 10_000,
        late_policy: LatePolicy = "drop",
    ) -> None:
        if length < 1 or stride < 1 or max_keys < 1:
            raise ValueError(f"length/stride/max_keys must be >= 1: {length}/{stride}/{max_keys}")
        if late_policy not in ("drop", "accept"):
            raise ValueError(f"late_policy must be 'drop' or 'accept', got {late_policy!r}")
        self.length = length
        self.stride = stride
        self.max_keys = max_keys
        self.late_policy: LatePolicy = late_policy
        self.evicted = 0
        self.late_dropped = 0
        self.late_accepted = 0
        self._keys: OrderedDict[str, _KeyState] = OrderedDict()

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
        if state.pushed < self.length or (state.pushed - self.length) % self.stride:
            return []
        return [Window(key, state.newest_ts, np.stack(state.rows))]

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
        state = _KeyState(width=width, rows=deque(maxlen=self.length))
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
