"""Why an alert fired: turning one scored sample into the anomaly event an operator reads.

Vectors name their worst features; windows name their worst features too (z averaged
over the window, values of its last reading); images name their worst regions and may
carry a small heat map.
"""

from __future__ import annotations

import numpy as np

from streamae.intake import Sample
from streamae.messages import anomaly_event
from streamae.scoring import heatmap, top_features, worst_patches

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


def unseen_values(sample: Sample, values: np.ndarray, unseen: np.ndarray) -> list[dict]:
    """One entry per feature constant in training that has another value in this sample."""
    names = list(sample.names) if sample.names else None
    latest = values[-1] if values.ndim == 2 else values
    columns = np.flatnonzero(unseen.any(axis=0) if unseen.ndim == 2 else unseen)
    return [{"feature": names[c] if names is not None and c < len(names) else int(c),
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
        # Centred features are reported in the units of the reading, not of the model.
        level = sample.window.values[-1] - values[-1] if sample.window is not None else 0.0
        return {"features": top_features(values[-1] + level, reconstructed[-1] + level,
                                         z.mean(axis=0), names, top_k),
                "window": window}
    return {"features": top_features(values, reconstructed, z, names, top_k)}


def build_event(sample: Sample, *, score: float, threshold: float, method: str,
                kind: str, version: int, detected_ms: int, explanation: dict) -> dict:
    record = sample.record
    return anomaly_event(
        topic=record.topic, partition=record.partition, offset=record.offset,
        key=sample.key, event_ts_ms=sample.ts_ms, detected_ts_ms=detected_ms,
        score=score, threshold=threshold, threshold_method=method,
        model_kind=kind, model_version=version, **explanation,
    )
