"""Deciding which scores are anomalies, with state that can be saved in a checkpoint.

Every threshold follows River's ``QuantileFilter`` habits: ``update(scores)`` learns,
``classify(scores)`` flags ``score > value``, and nothing is flagged until the threshold is
warm (``value`` is None before). ``state()`` is a JSON-able dict that
:func:`threshold_from_state` turns back into an equal threshold.

Scores are calibrated (``-log10`` of a reading's tail probability among normal readings,
see ``calibration``), so every method here works on one scale:

* :class:`FalseAlarmRateThreshold` (the default): the score ``-log10(rate)``; a target
  false-alarm rate an operator can read, the same before and after every retrain.
* :class:`StaticThreshold`: a fixed value, warm from the start.
* :class:`RollingQuantileThreshold`: the ``quantile`` of the last ``window`` scores.
* :class:`LimitThreshold`: a control limit, ``margin`` times the largest calibration
  score, fixed until the next calibration.
* :class:`SpotThreshold`: extreme-value threshold (SPOT, Siffer et al., KDD 2017) whose
  false-alarm probability is ``risk``, from a generalised Pareto tail fit.
* :class:`AlarmRate`: the recent fraction of flagged scores (for rollback decisions).

Whether the caller feeds ``update`` every score or only the normal ones is its choice;
SPOT itself never learns from scores above its own threshold.
"""

from __future__ import annotations

import logging
import math
import time
from collections import deque
from collections.abc import Callable
from typing import Protocol, runtime_checkable

import numpy as np

from streamae.calibration import fit_gpd

logger = logging.getLogger(__name__)


@runtime_checkable
class Threshold(Protocol):
    """What the pipeline needs from a threshold."""

    method: str

    @property
    def value(self) -> float | None: ...

    def update(self, scores: np.ndarray) -> None: ...

    def fit(self, scores: np.ndarray) -> None: ...

    def classify(self, scores: np.ndarray) -> np.ndarray: ...

    def state(self) -> dict: ...


def _finite(scores: np.ndarray | list[float]) -> np.ndarray:
    """Scores as flat float64 without NaN/Inf (a diverging model must not poison state)."""
    array = np.asarray(scores, dtype=np.float64).ravel()
    return array[np.isfinite(array)]


def _flag(scores: np.ndarray, value: float | None) -> np.ndarray:
    """``scores > value`` as bools, all False while there is no value."""
    array = np.asarray(scores, dtype=np.float64).ravel()
    if value is None:
        return np.zeros(array.shape, dtype=bool)
    return array > value


class StaticThreshold:
    """A fixed threshold: for scores whose scale is known (e.g. normalised z-scores)."""

    method = "static"

    def __init__(self, value: float) -> None:
        if not math.isfinite(value):
            raise ValueError(f"static threshold must be finite, got {value}")
        self._value = float(value)

    @property
    def value(self) -> float:
        return self._value

    def update(self, scores: np.ndarray) -> None:
        """Nothing to learn."""

    def fit(self, scores: np.ndarray) -> None:
        """Nothing to learn."""

    def classify(self, scores: np.ndarray) -> np.ndarray:
        return _flag(scores, self._value)

    def state(self) -> dict:
        return {"method": self.method, "value": self._value}


class FalseAlarmRateThreshold(StaticThreshold):
    """Flag readings rarer than ``rate`` among normal ones: score > ``-log10(rate)``."""

    method = "false_alarm_rate"

    def __init__(self, rate: float) -> None:
        if not 0.0 < rate < 1.0:
            raise ValueError(f"false-alarm rate must be in (0, 1), got {rate}")
        self.rate = float(rate)
        super().__init__(-math.log10(rate))

    def state(self) -> dict:
        return {"method": self.method, "rate": self.rate}


class LimitThreshold:
    """A control limit: ``margin`` x the largest score of the normal data it was fitted on.

    Where a quantile of a few hundred validation scores sits inside the normal range (and
    flags a fixed share of normal traffic by construction), the worst normal window seen,
    with a margin, is a limit normal traffic rarely crosses: an upper control limit in the
    sense of statistical process control. It learns nothing from the stream, so a long
    anomaly cannot raise it; each retrain recalibrates it. Before ``fit`` it is cold. The
    limit is at least ``margin`` (sigmas of a normalised score), so a model that
    reconstructs its validation data perfectly does not flag noise.
    """

    method = "limit"

    def __init__(self, margin: float, value: float | None = None) -> None:
        if not (math.isfinite(margin) and margin >= 1.0):
            raise ValueError(f"limit margin must be >= 1, got {margin}")
        self.margin = float(margin)
        self._value = value

    @property
    def value(self) -> float | None:
        return self._value

    def update(self, scores: np.ndarray) -> None:
        """Nothing to learn between calibrations."""

    def fit(self, scores: np.ndarray) -> None:
        finite = _finite(scores)
        if finite.size == 0:
            logger.warning("limit threshold still cold: no finite calibration scores")
            return
        self._value = self.margin * max(float(finite.max()), 1.0)

    def classify(self, scores: np.ndarray) -> np.ndarray:
        return _flag(scores, self._value)

    def state(self) -> dict:
        return {"method": self.method, "margin": self.margin, "value": self._value}


class RollingQuantileThreshold:
    """The ``quantile`` of the last ``window`` finite scores, in a numpy ring buffer.

    The quantile is recomputed lazily, when ``value`` is read and at least
    ``refresh_every`` scores arrived since the last computation (default 1% of the window),
    so a 10k window costs one partial sort per ~100 scores, not per score.
    """

    method = "quantile"

    def __init__(
        self, quantile: float, window: int, min_samples: int, refresh_every: int | None = None
    ) -> None:
        if not 0.0 < quantile < 1.0:
            raise ValueError(f"quantile must be in (0, 1), got {quantile}")
        if window < 1 or not 1 <= min_samples <= window:
            raise ValueError(f"need 1 <= min_samples <= window, got {min_samples}, {window}")
        self.quantile = float(quantile)
        self.window = int(window)
        self.min_samples = int(min_samples)
        self.refresh_every = int(refresh_every or max(1, window // 100))
        self._ring = np.zeros(self.window, dtype=np.float64)
        self._count = 0  # scores held (<= window)
        self._next = 0  # ring index of the next write
        self._stale = 0  # scores added since the cached value was computed
        self._cached: float | None = None

    def __len__(self) -> int:
        return self._count

    @property
    def value(self) -> float | None:
        if self._count < self.min_samples:
            return None
        if self._cached is None or self._stale >= self.refresh_every:
            held = self._ring[: self._count]
            self._cached = float(np.quantile(held, self.quantile))
            self._stale = 0
        return self._cached

    def update(self, scores: np.ndarray) -> None:
        """Append scores, overwriting the oldest once the window is full."""
        new = _finite(scores)[-self.window :]
        n = new.size
        if n == 0:
            return
        first = min(n, self.window - self._next)
        self._ring[self._next : self._next + first] = new[:first]
        self._ring[: n - first] = new[first:]
        self._next = (self._next + n) % self.window
        self._count = min(self.window, self._count + n)
        self._stale += n

    def fit(self, scores: np.ndarray) -> None:
        """Seed from training/validation scores, replacing what was held, so it starts warm."""
        self._count = self._next = self._stale = 0
        self._cached = None
        self.update(scores)
        if self._count < self.min_samples:
            logger.warning(
                "quantile threshold still cold after fit scores=%d min_samples=%d",
                self._count,
                self.min_samples,
            )

    def classify(self, scores: np.ndarray) -> np.ndarray:
        return _flag(scores, self.value)

    def held(self) -> np.ndarray:
        """The scores held, oldest first."""
        if self._count < self.window:
            return self._ring[: self._count].copy()
        return np.concatenate([self._ring[self._next :], self._ring[: self._next]])

    def state(self) -> dict:
        return {
            "method": self.method,
            "quantile": self.quantile,
            "window": self.window,
            "min_samples": self.min_samples,
            "refresh_every": self.refresh_every,
            "scores": self.held().tolist(),
        }

    @classmethod
    def from_state(cls, state: dict) -> RollingQuantileThreshold:
        threshold = cls(
            state["quantile"], state["window"], state["min_samples"], state.get("refresh_every")
        )
        threshold.update(np.asarray(state.get("scores", []), dtype=np.float64))
        return threshold


def classify_and_learn(
    threshold: Threshold, scores: np.ndarray
) -> tuple[np.ndarray, float | None]:
    """Flag a batch, then let the threshold learn it, flagged scores clipped to the value
    in force, so a long anomaly cannot drag the threshold up and silence itself.
    Returns (flags, the value the batch was judged by)."""
    flags = threshold.classify(scores)
    value = threshold.value
    threshold.update(scores if value is None else np.minimum(scores, value))
    return flags, value


class SpotThreshold:
    """SPOT: the score exceeded with probability ``risk``, from a GPD fit of the tail.

    Warm-up: the first ``min_samples`` scores (or :meth:`fit`) set the initial threshold
    ``t`` at quantile ``level`` and fit the excesses over it. Afterwards scores above ``t``
    are new peaks (the last ``max_peaks`` are kept) and the fit is refreshed lazily.

    Alarms (scores above the value z) are learnt winsorised at ``t + alarm_cap * (z - t)``.
    The paper leaves them out, which truncates the tail it fits: on a stationary stream z
    then drifts down until the false-alarm rate is ~4x ``risk`` (risk 1e-3, exponential
    scores). Capping keeps the rate within ~10% while one anomaly can move the fit by a
    bounded amount only. ``alarm_cap=None`` is the paper's behaviour.
    """

    method = "spot"

    def __init__(
        self,
        risk: float = 1e-4,
        level: float = 0.98,
        min_samples: int = 1000,
        max_peaks: int = 10_000,
        alarm_cap: float | None = 2.0,
    ) -> None:
        if alarm_cap is not None and alarm_cap < 1.0:
            raise ValueError(f"alarm_cap must be >= 1 or None, got {alarm_cap}")
        if not 0.0 < level < 1.0 or not 0.0 < risk < 1.0 - level:
            raise ValueError(f"need 0 < risk < 1 - level < 1, got risk={risk} level={level}")
        if min_samples < 2 or max_peaks < 1:
            raise ValueError(f"need min_samples >= 2, max_peaks >= 1: {min_samples}, {max_peaks}")
        self.risk = float(risk)
        self.level = float(level)
        self.min_samples = int(min_samples)
        self.max_peaks = int(max_peaks)
        self.alarm_cap = alarm_cap
        self._calibration: list[np.ndarray] = []
        self._t: float | None = None  # initial threshold; None while warming up
        self._peaks: deque[float] = deque(maxlen=self.max_peaks)
        self._n = 0  # normal observations seen since warm-up (incl. calibration)
        self._nt = 0  # of which above t
        self._z: float | None = None
        self._dirty = False

    @property
    def value(self) -> float | None:
        if self._t is None:
            return None
        if self._dirty or self._z is None:
            self._z = self._quantile()
            self._dirty = False
        return self._z

    def _quantile(self) -> float:
        """z_q = t + sigma/gamma * ((q n / N_t)^(-gamma) - 1) (eq. 1 of Siffer et al.)."""
        assert self._t is not None
        if self._nt == 0:
            return self._t
        gamma, sigma = fit_gpd(np.fromiter(self._peaks, dtype=np.float64))
        r = self.risk * self._n / self._nt
        if abs(gamma) < 1e-6:
            return self._t - sigma * math.log(r)
        return self._t + sigma / gamma * (r ** (-gamma) - 1.0)

    def fit(self, scores: np.ndarray) -> None:
        """Initialise from calibration scores (replacing any state) so it starts warm."""
        x = _finite(scores)
        if x.size < 2:
            raise ValueError(f"SPOT needs at least 2 finite calibration scores, got {x.size}")
        self._calibration = []
        self._t = float(np.quantile(x, self.level))
        excess = x[x > self._t] - self._t
        self._peaks = deque(excess[-self.max_peaks :].tolist(), maxlen=self.max_peaks)
        self._n, self._nt = int(x.size), int(excess.size)
        self._dirty = True
        logger.info("spot initialised t=%.6g peaks=%d n=%d", self._t, self._nt, self._n)

    def update(self, scores: np.ndarray) -> None:
        x = _finite(scores)
        if self._t is None:
            self._calibration.append(x)
            if sum(part.size for part in self._calibration) >= self.min_samples:
                self.fit(np.concatenate(self._calibration))
            return
        z = self.value
        assert z is not None
        if self.alarm_cap is None:
            learnt = x[x <= z]
        else:
            learnt = np.minimum(x, self._t + self.alarm_cap * max(z - self._t, 0.0))
        excess = learnt[learnt > self._t] - self._t
        self._n += int(learnt.size)
        if excess.size:
            self._nt += int(excess.size)
            self._peaks.extend(excess.tolist())
            self._dirty = True

    def classify(self, scores: np.ndarray) -> np.ndarray:
        return _flag(scores, self.value)

    def state(self) -> dict:
        calibration = np.concatenate(self._calibration) if self._calibration else np.zeros(0)
        return {
            "method": self.method,
            "risk": self.risk,
            "level": self.level,
            "min_samples": self.min_samples,
            "max_peaks": self.max_peaks,
            "alarm_cap": self.alarm_cap,
            "t": self._t,
            "n": self._n,
            "nt": self._nt,
            "peaks": list(self._peaks),
            "calibration": calibration.tolist(),
        }

    @classmethod
    def from_state(cls, state: dict) -> SpotThreshold:
        spot = cls(
            state["risk"],
            state["level"],
            state["min_samples"],
            state["max_peaks"],
            state.get("alarm_cap", 2.0),
        )
        if state.get("t") is None:
            spot.update(np.asarray(state.get("calibration", []), dtype=np.float64))
            return spot
        spot._t = float(state["t"])
        spot._n, spot._nt = int(state["n"]), int(state["nt"])
        spot._peaks.extend(float(p) for p in state.get("peaks", []))
        spot._dirty = True
        return spot


METHODS = ("false_alarm_rate", "static", "quantile", "spot", "limit")


def build_threshold(
    method: str,
    *,
    value: float,
    quantile: float,
    window: int,
    min_samples: int,
    risk: float | None = None,
    level: float | None = None,
    margin: float = 2.0,
    false_alarm_rate: float = 1e-4,
) -> Threshold:
    """The threshold named by ``method``; raises ValueError for unknown methods or bad values.

    For ``spot`` the risk defaults to ``1 - quantile`` and the initial level to
    ``min(0.98, 1 - 10 * risk)``; ``window`` bounds the peaks kept.
    """
    if method == "false_alarm_rate":
        return FalseAlarmRateThreshold(false_alarm_rate)
    if method == "static":
        return StaticThreshold(value)
    if method == "quantile":
        return RollingQuantileThreshold(quantile, window, min_samples)
    if method == "limit":
        return LimitThreshold(margin)
    if method == "spot":
        risk = risk if risk is not None else 1.0 - quantile
        level = level if level is not None else min(0.98, 1.0 - 10.0 * risk)
        return SpotThreshold(risk, level, max(2, min_samples), max_peaks=window)
    raise ValueError(f"unknown threshold method {method!r}; expected one of {METHODS}")


def threshold_from_state(state: dict) -> Threshold:
    """Rebuild a threshold from :meth:`state` (e.g. read from a checkpoint's JSON)."""
    method = state.get("method") if isinstance(state, dict) else None
    try:
        if method == "false_alarm_rate":
            return FalseAlarmRateThreshold(float(state["rate"]))
        if method == "static":
            return StaticThreshold(float(state["value"]))
        if method == "quantile":
            return RollingQuantileThreshold.from_state(state)
        if method == "spot":
            return SpotThreshold.from_state(state)
        if method == "limit":
            value = state["value"]
            return LimitThreshold(float(state["margin"]), None if value is None else float(value))
    except (KeyError, TypeError) as exc:
        raise ValueError(f"threshold state for {method!r} is incomplete: {exc}") from exc
    raise ValueError(f"unknown threshold method in state: {method!r}")


class AlarmRate:
    """The fraction of flagged scores among the last ``window_n`` scores or ``window_s`` s."""

    def __init__(
        self,
        window_n: int | None = None,
        window_s: float | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if (window_n is None) == (window_s is None):
            raise ValueError("give exactly one of window_n and window_s")
        if (window_n is not None and window_n < 1) or (window_s is not None and window_s <= 0):
            raise ValueError(f"window must be positive: window_n={window_n} window_s={window_s}")
        self.window_n = window_n
        self.window_s = window_s
        self._clock = clock
        self._batches: deque[tuple[float, np.ndarray]] = deque()  # (time, flags)
        self._total = 0
        self._flagged = 0

    def observe(self, flags: np.ndarray) -> None:
        """Record one batch of classify() results."""
        array = np.asarray(flags, dtype=bool).ravel()
        if array.size == 0:
            return
        self._batches.append((self._clock(), array.copy()))
        self._total += int(array.size)
        self._flagged += int(array.sum())
        self._prune()

    def _prune(self) -> None:
        """Forget flags that left the window (count windows are trimmed exactly)."""
        if self.window_s is not None:
            horizon = self._clock() - self.window_s
            while self._batches and self._batches[0][0] < horizon:
                self._drop_oldest(len(self._batches[0][1]))
            return
        assert self.window_n is not None
        while self._total > self.window_n:
            self._drop_oldest(min(self._total - self.window_n, len(self._batches[0][1])))

    def _drop_oldest(self, size: int) -> None:
        """Drop the first ``size`` flags of the oldest batch (the whole batch if all)."""
        stamp, oldest = self._batches[0]
        self._total -= size
        self._flagged -= int(oldest[:size].sum())
        if size >= oldest.size:
            self._batches.popleft()
        else:
            self._batches[0] = (stamp, oldest[size:])

    @property
    def count(self) -> int:
        """Scores in the current window (a rate over few scores means little)."""
        self._prune()
        return self._total

    @property
    def rate(self) -> float:
        """Flagged / observed in the window; 0.0 when nothing was observed."""
        total = self.count
        return self._flagged / total if total else 0.0

    def reset(self) -> None:
        """Forget everything (e.g. after a model swap, to judge the new model alone)."""
        self._batches.clear()
        self._total = self._flagged = 0
