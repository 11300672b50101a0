"""Recorded rows through the daemon's own parts, in order, without a broker.

The same window builder, centring, ``train_detector``, ``calibrated_threshold``, ``Scorer``
and ``thresholds.classify_and_learn`` as ``streamae run``, optionally the ``Retrainer``:
what a deployment would have said about a recording, fast enough to evaluate and tune on.
A row's verdict is that of the newest window ending at or before it (with stride 1, its
own); rows before the first window carry NaN and no flag.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from streamae.settings import Settings
from streamae.thresholds import classify_and_learn


@dataclass
class RowVerdicts:
    """Per-row scores (NaN before the first window) and flags, and retrain outcomes."""

    scores: np.ndarray
    flags: np.ndarray
    retrains: list[str] = field(default_factory=list)
    versions: np.ndarray | None = None  # per row: the model version that scored it (0: none)
    thresholds: np.ndarray | None = None  # per row: the threshold in force (NaN: none)
    drift: list[dict] = field(default_factory=list)  # drift events, with retraining on
    models: dict[int, object] = field(default_factory=dict)  # version -> LiveModel
    retrain_rows: list[int] = field(default_factory=list)  # the row each retrain ended at
    verdicts: list[str] = field(default_factory=list)  # each judged challenger's reason


def per_row(n_rows: int, rows: Sequence[int], scores: Sequence[float],
            flags: Sequence[bool]) -> tuple[np.ndarray, np.ndarray]:
    """Window verdicts keyed by their last row -> per-row arrays, carried forward."""
    score_at = np.full(n_rows, np.nan)
    flag_at = np.zeros(n_rows, dtype=bool)
    seen = np.zeros(n_rows, dtype=bool)
    score_at[list(rows)] = scores
    flag_at[list(rows)] = flags
    seen[list(rows)] = True
    last = np.maximum.accumulate(np.where(seen, np.arange(n_rows), -1))
    have = last >= 0
    out_scores = np.full(n_rows, np.nan)
    out_flags = np.zeros(n_rows, dtype=bool)
    out_scores[have] = score_at[last[have]]
    out_flags[have] = flag_at[last[have]]
    return out_scores, out_flags


def _samples(key: str, ts_ms: np.ndarray, values: np.ndarray, settings: Settings,
             names: Sequence[str] | None) -> tuple[np.ndarray, list[int]]:
    """What the model sees for each row (windows for window input) and the row of each."""
    if settings.input.kind != "window":
        return np.asarray(values, dtype=np.float32), list(range(len(values)))
    from streamae.windows import Centring, WindowBuilder

    w = settings.window
    builder = WindowBuilder(w.length, w.stride, w.max_keys, w.late_policy)
    centred = Centring(w.centred_features).columns(tuple(names) if names else None)
    windows, rows = [], []
    for i, (ts, row) in enumerate(zip(ts_ms, values, strict=True)):
        for built in builder.push(key, int(ts), row):
            windows.append(Centring.apply(built.values, centred))
            rows.append(i)
    return np.stack(windows).astype(np.float32), rows


def replay_rows(key: str, ts_ms: np.ndarray, values: np.ndarray, settings: Settings,
                names: Sequence[str] | None = None, retrain: bool = False) -> RowVerdicts:
    """Train on the first ``settings.warmup_size`` samples (windows), then score them and
    the rest in batches of ``settings.batch.max_size`` as the daemon does; with ``retrain``
    the retrainer runs too (waited for after each batch, as a slow stream would allow)."""
    from streamae.live import LiveModel, ModelSlot, calibrated_threshold, train_detector
    from streamae.metrics import Metrics
    from streamae.scoring import Scorer

    data, rows = _samples(key, ts_ms, values, settings, names)
    warm = settings.warmup_size
    detector = train_detector(data[:warm], settings.model, settings.device)
    slot = ModelSlot()
    threshold = calibrated_threshold(settings.threshold, detector)
    version = 1
    if retrain:  # the first model is a version on disk, as at a cold start
        from streamae.checkpoints import save_checkpoint

        version = save_checkpoint(settings.checkpoints.directory, detector,
                                  threshold_state=threshold.state(),
                                  metadata={"origin": "replay"}, keep=settings.checkpoints.keep)
    slot.swap(LiveModel(Scorer(detector, settings.device, settings.batch.max_size), threshold,
                        version))
    hooks, retrainer, monitor = [], None, None
    if retrain:
        from streamae.drift import DriftMonitor
        from streamae.retrain import Retrainer

        metrics = Metrics()
        retrainer = Retrainer(settings.retrain, settings.model, settings.threshold,
                              settings.checkpoints, settings.device, slot, metrics,
                              max_batch=settings.batch.max_size)
        monitor = DriftMonitor(settings.drift, metrics, follow=settings.retrain.follow_drift)
        monitor.listeners.append(retrainer.on_drift)
        retrainer.on_reanchor.append(monitor.reset)
        hooks = [monitor.observe, retrainer.observe]
    size = settings.batch.max_size
    bounds = [0, warm, *range(warm + size, len(data), size), len(data)]
    scores, flags, versions, thresholds, models, ended = [], [], [], [], {}, []
    try:
        for start, end in itertools.pairwise(bounds):
            if start >= end:
                continue
            live = slot.live
            models.setdefault(live.version, live)
            result = live.scorer.score(data[start:end])
            batch_flags, value = classify_and_learn(live.threshold, result.scores)
            scores.append(result.scores)
            flags.append(batch_flags)
            versions.append(np.full(end - start, live.version))
            thresholds.append(np.full(end - start, np.nan if value is None else value))
            for hook in hooks:
                hook(live, data[start:end], result.scores, batch_flags)
            if retrainer is not None:
                retrainer.wait()
                ended.extend([rows[end - 1]] * (len(retrainer.outcomes) - len(ended)))
    finally:
        if retrainer is not None:
            retrainer.close()
    row_scores, row_flags = per_row(len(values), rows, np.concatenate(scores),
                                    np.concatenate(flags))
    row_versions = per_row(len(values), rows, np.concatenate(versions), np.zeros(len(rows)))[0]
    row_thresholds = per_row(len(values), rows, np.concatenate(thresholds),
                             np.zeros(len(rows)))[0]
    return RowVerdicts(row_scores, row_flags,
                       list(retrainer.outcomes) if retrainer is not None else [],
                       np.nan_to_num(row_versions).astype(int), row_thresholds,
                       list(monitor.events) if monitor is not None else [], models, ended,
                       [v.reason for v in retrainer.verdicts] if retrainer else [])
