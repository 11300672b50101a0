"""Drift: a sustained shift of the data, told apart from anomalies and reported as such.

An anomaly is a reading that is rare among normal readings; a drift is the normal readings
themselves moving (a recalibrated sensor, a new operating point). The frozen model flags
every reading after a drift, and a gated retrainer never learns the new regime (the gate
keeps it out: River's ``QuantileFilter(protect_anomaly_detector=True)`` has the same trap,
river#936). So drift is its own concept here:

* :class:`PageHinkley` (Page 1954; River's ``drift.PageHinkley``) on the stream of
  exceedances, 1 for a reading scored above ``level`` (2 = outside 99% of normal) and 0
  otherwise: it signals when their share rises and stays up. River's defaults (delta
  0.005, threshold 50, 30 instances) are for one observation per instance; here an
  instance is one reading, and an anomaly episode of the demo stream alone is 40 flagged
  readings, so the default threshold is 500 readings' worth of excess and 1,000 readings
  come first. Updated once per batch with the batch's count, so it costs the loop
  microseconds.
* :class:`DriftMonitor`: the daemon's scored hook. On a signal it publishes a
  ``streamae.drift/v1`` event, counts ``streamae_drift_events_total``, sets
  ``streamae_drift_active``, logs what happens next (follow the drift once stable, or keep
  alarming) and tells its listeners (the retrainer).
* :func:`stable`: whether the newest readings have stopped moving (the two halves of the
  latest ``2 x size`` readings have the same per-feature mean, within ``tolerance``
  standard deviations): when a followed drift is retrained on.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from streamae.metrics import Metrics
from streamae.settings import DriftSettings

log = logging.getLogger(__name__)

DRIFT_SCHEMA = "streamae.drift/v1"
Listener = Callable[[dict], None]
Send = Callable[[dict], None]


@dataclass
class PageHinkley:
    """Page-Hinkley test for a rise in the mean of a stream (no fading: reset on a signal)."""

    delta: float = 0.005
    threshold: float = 50.0
    min_instances: int = 30
    count: int = 0
    mean: float = 0.0
    cumulative: float = 0.0  # sum of (x - mean - delta)
    minimum: float = 0.0  # its lowest value so far

    @property
    def statistic(self) -> float:
        return self.cumulative - self.minimum

    def update(self, x: np.ndarray) -> bool:
        """Feed a batch of observations; True when a rise is signalled (then reset).

        One step per batch, with the batch's sum: the running mean moves little within a
        batch, and the loop pays a few microseconds instead of a numpy pass per element.
        """
        x = np.asarray(x)
        n = int(x.size)
        if n == 0:
            return False
        total = float(np.count_nonzero(x)) if x.dtype == bool else float(x.sum())
        self.count += n
        self.mean += (total - n * self.mean) / self.count  # as River: the mean with x
        self.cumulative += total - n * (self.mean + self.delta)
        self.minimum = min(self.minimum, self.cumulative)
        if self.count >= self.min_instances and self.statistic > self.threshold:
            self.reset()
            return True
        return False

    def reset(self) -> None:
        self.count, self.mean, self.cumulative, self.minimum = 0, 0.0, 0.0, 0.0


def stable(latest: np.ndarray, size: int, tolerance: float) -> bool:
    """True when the newest ``size`` readings have the per-feature mean of the ``size``
    before them, within ``tolerance`` of their standard deviation."""
    if len(latest) < 2 * size:
        return False
    flat = np.asarray(latest[-2 * size :], dtype=np.float64).reshape(2 * size, -1)
    older, newer = flat[:size], flat[size:]
    spread = np.maximum(flat.std(axis=0), 1e-9)
    return bool(np.max(np.abs(newer.mean(axis=0) - older.mean(axis=0)) / spread) < tolerance)


class DriftMonitor:
    """The scored hook that reports drift (module docstring)."""

    def __init__(self, settings: DriftSettings, metrics: Metrics, send: Send | None = None,
                 follow: bool = False, clock: Callable[[], float] = time.time) -> None:
        self.settings, self.metrics, self.send = settings, metrics, send
        self.follow, self.clock = follow, clock
        self.detector = PageHinkley(settings.delta, settings.threshold, settings.min_instances)
        self.listeners: list[Listener] = []
        self.events: list[dict] = []
        self._seen = 0

    def observe(self, live: object, values: np.ndarray, scores: np.ndarray,
                flags: np.ndarray) -> None:
        """Scored hook: feed the exceedances, report a signal."""
        if not self.settings.enabled:
            return
        scores = np.asarray(scores)
        self._seen += scores.size
        if self.detector.update(scores > self.settings.level):
            self._report(getattr(live, "version", None), float(np.mean(scores)))

    def reset(self) -> None:
        """A new regime was learnt (a followed drift, an operator's accept): start afresh,
        or the running mean would remember the drift and hide the next rise for long.
        Not on every promotion: mid-drift, the drifted level would become the baseline."""
        self.detector.reset()
        self.metrics.drift_active.set(0)

    def _report(self, version: int | None, batch_mean: float) -> None:
        action = "retrain_when_stable" if self.follow else "keep_alarming"
        event = {"schema": DRIFT_SCHEMA, "event": "detected", "detected_ms":
                 int(self.clock() * 1000), "model_version": version,
                 "readings_seen": self._seen, "level": self.settings.level,
                 "batch_mean_score": round(batch_mean, 4), "action": action}
        self.events.append(event)
        self.metrics.drift_events.inc()
        self.metrics.drift_active.set(1)
        log.warning("event=drift_detected version=%s readings_seen=%d action=%s detail=%r",
                    version, self._seen, action,
                    "retraining on the new regime once it is stable" if self.follow else
                    "the model keeps alarming; STREAMAE_RETRAIN__FOLLOW_DRIFT=true or "
                    "`streamae retrain --accept-recent` to learn the new regime")
        if self.send is not None:
            self.send(event)
        for listener in self.listeners:
            listener(event)
