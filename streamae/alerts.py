"""Why an alert fired: turning one scored sample into the anomaly event an operator reads.

Vectors name their worst features; windows name their worst features too (z averaged
over the window, values of its last reading); images name their worst regions and may
carry a small heat map.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence

import numpy as np

from streamae.intake import Sample
from streamae.messages import anomaly_event
from streamae.scoring import ErrorStats, heatmap, top_features, worst_patches
from streamae.windows import Window

log = logging.getLogger("streamae.pipeline")  # the daemon's anomaly lines, as before

SUMMARY_EVERY_S = 10.0


def _top_names(top: list[dict]) -> str:
    return ",".join(str(t.get("feature", (t.get("row"), t.get("col")))) for t in top)


class AnomalyLog:
    """The log lines of anomalies: one INFO line per anomaly (``each``), or one DEBUG line
    each and an INFO summary at most every ``every_s`` (a line per anomaly costs more than
    scoring it under load, and floods the log in an incident)."""

    def __init__(self, each: bool = False, every_s: float = SUMMARY_EVERY_S,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.each, self.every_s, self.clock = each, every_s, clock
        self._since = clock()
        self._count, self._keys = 0, set()
        self._worst: tuple[float, str | None, int, float, str] | None = None

    def add(self, key: str | None, offset: int, score: float, threshold: float,
            top: list[dict]) -> None:
        level = logging.INFO if self.each else logging.DEBUG
        if log.isEnabledFor(level):
            log.log(level, "event=anomaly key=%s offset=%d score=%.3f threshold=%.3f top=%s",
                    key, offset, score, threshold, _top_names(top))
        if self.each:
            return
        self._count += 1
        if len(self._keys) < 100:  # a count, not a list: 100 is plenty to say "many"
            self._keys.add(key)
        if self._worst is None or score > self._worst[0]:
            self._worst = (score, key, offset, threshold, _top_names(top))

    def flush_if_due(self, force: bool = False) -> None:
        now = self.clock()
        if not force and now - self._since < self.every_s:
            return
        if self._count and self._worst is not None:
            score, key, offset, threshold, names = self._worst
            log.info("event=anomalies count=%d keys=%d seconds=%.0f worst_key=%s "
                     "worst_offset=%d worst_score=%.3f threshold=%.3f top=%s", self._count,
                     len(self._keys), now - self._since, key, offset, score, threshold, names)
        self._since, self._count, self._keys, self._worst = now, 0, set(), None

IMAGE_PATCH = 4  # pixels per side of a reported region


def explain(sample: Sample, values: np.ndarray, reconstructed: np.ndarray, z: np.ndarray,
            top_k: int, with_heatmap: bool, unseen: np.ndarray | None = None) -> dict:
    """The ``features`` / ``regions`` / ``heatmap`` / ``window`` / ``unseen`` parts of an
    event; ``unseen`` (bools shaped like ``values``) marks features that had one value in
    training and another now: named as such, since the model cannot judge them."""
    parts = _explain(sample, values, reconstructed, z, top_k, with_heatmap)
    if unseen is not None and unseen.any() and values.ndim < 3:
        parts["unseen"] = unseen_values(sample, values, unseen)
    return parts


def spread_changes(stats: ErrorStats, window: np.ndarray | None, names: Sequence[str] | None,
                   threshold: float | None) -> list[dict]:
    """The ``spread`` part of a window's event, when its spread alone passes the threshold
    (an amplitude that grew, or a feature that always moves gone flat): the model rebuilds
    such a window well, as the normal shape scaled, so the features with the largest
    errors are not what the alarm is about."""
    if window is None or threshold is None:
        return []
    score = stats.spread_scores(window[None])
    if score is None or float(score[0]) <= threshold:
        return []
    found = stats.spread_change(window)
    if found is None:
        return []
    feature, kind, ratio = found
    return [{"feature": _name(names, feature), "change": kind, "spread_ratio": round(ratio, 3)}]


def mode_deviations(stats: ErrorStats, window: np.ndarray | None,
                    names: Sequence[str] | None, threshold: float | None) -> list[dict]:
    """The ``mode`` part of a window's event, when the mode levels alone pass the threshold
    (``streamae.modes``): the measured feature furthest from its operating mode's level, in
    units of that mode's spread. A level that contradicts its command is rebuilt well by the
    model, so the largest errors would not name it."""
    if window is None or threshold is None:
        return []
    score = stats.mode_scores(window[None])
    if score is None or float(score[0]) <= threshold:
        return []
    feature, deviation = stats.modes.deviation(window)
    return [{"feature": _name(names, feature), "deviation": round(deviation, 3)}]


def _name(names: Sequence[str] | None, feature: int) -> str | int:
    """A feature's name where the reading has one, else its index."""
    return names[feature] if names is not None and feature < len(names) else feature


def unseen_values(sample: Sample, values: np.ndarray, unseen: np.ndarray) -> list[dict]:
    """One entry per feature constant in training that has another value in this sample."""
    names = list(sample.names) if sample.names else None
    latest = values[-1] if values.ndim == 2 else values
    if sample.window is not None:
        latest = sample.window.values[-1]
    columns = np.flatnonzero(unseen.any(axis=0) if unseen.ndim == 2 else unseen)
    return [{"feature": _name(names, int(c)),
             "actual": float(latest[c]), "note": "unseen value"} for c in columns]


def _explain(sample: Sample, values: np.ndarray, reconstructed: np.ndarray, z: np.ndarray,
             top_k: int, with_heatmap: bool) -> dict:
    if values.ndim == 3:  # (C, H, W) image
        parts: dict = {"regions": worst_patches(z, IMAGE_PATCH, top_k)}
        if with_heatmap:
            parts["heatmap"] = heatmap(z)
        return parts
    names = list(sample.names) if sample.names else None
    if values.ndim == 2:  # (L, D) window: per-feature z over time, latest values
        window = {"length": int(values.shape[0]), "end_ts": sample.ts_ms}
        actual, rebuilt = in_reading_units(sample.window, values[-1], reconstructed[-1])
        return {"features": top_features(actual, rebuilt, z.mean(axis=0), names, top_k),
                "window": window}
    return {"features": top_features(values, reconstructed, z, names, top_k)}


def in_reading_units(window: Window | None, latest: np.ndarray,
                     rebuilt: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """A window's latest row and its reconstruction in the reading's units, not the model's:
    the key's profile is undone and centred features get back the level taken from them."""
    if window is None:
        return latest, rebuilt
    level = window.values[-1] - window.to_reading_units(latest)
    return window.values[-1], window.to_reading_units(rebuilt) + level


def build_event(sample: Sample, *, score: float, threshold: float, method: str,
                kind: str, version: int, detected_ms: int, explanation: dict) -> dict:
    record = sample.record
    return anomaly_event(
        topic=record.topic, partition=record.partition, offset=record.offset,
        key=sample.key, event_ts_ms=sample.ts_ms, detected_ts_ms=detected_ms,
        score=score, threshold=threshold, threshold_method=method,
        model_kind=kind, model_version=version, **explanation,
    )
