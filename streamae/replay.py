"""Recorded messages through the daemon's own parts, in order, without a broker.

The same ``Decoding`` (decoder, window builder and its centring), ``train_detector``,
``calibrated_threshold``, ``Scorer`` and ``thresholds.classify_and_learn`` as
``streamae run``, optionally the ``Retrainer``: what a deployment would have said about a
recording, fast enough to evaluate and tune on. Rows become the JSON messages a producer
would send (:func:`row_records`), so a replay decodes exactly what the daemon decodes.
A row's verdict is that of the newest window ending at or before it (with stride 1, its
own); rows before the first window carry NaN and no flag.
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from streamae.intake import Decoding, Sample
from streamae.settings import Settings
from streamae.thresholds import classify_and_learn

if TYPE_CHECKING:
    from streamae.live import LiveModel


@dataclass(frozen=True)
class Record:
    """The fields of a Kafka consumer record that the daemon reads."""

    value: bytes
    offset: int  # the row of the recording
    key: bytes | None = None
    timestamp: int | None = None
    topic: str = "replay"
    partition: int = 0
    headers: tuple[tuple[str, bytes], ...] = ()


@dataclass
class Replayed:
    """Every sample the daemon would have scored, in order, with its verdict."""

    samples: list[Sample]
    scores: np.ndarray  # (S,) calibrated scores
    flags: np.ndarray  # (S,) bool
    thresholds: np.ndarray  # (S,) the value in force (NaN while the threshold is cold)
    warm: int  # the first ``warm`` samples trained the model (0 with a given model)
    dead: list[tuple[Any, Exception]] = field(default_factory=list)  # would be dead letters
    retrains: list[str] = field(default_factory=list)
    history: RetrainHistory | None = None  # with retraining on

    @property
    def rows(self) -> np.ndarray:
        """The row (record offset) each sample is reported under."""
        return np.array([s.record.offset for s in self.samples], dtype=np.int64)


@dataclass
class RetrainHistory:
    """What the retrainer did during a replay, per sample and per retrain."""

    versions: np.ndarray  # (S,) the model version that scored each sample
    models: dict[int, LiveModel] = field(default_factory=dict)  # version -> model
    ended: list[int] = field(default_factory=list)  # per retrain: the sample it ended at
    verdicts: list[str] = field(default_factory=list)  # each judged challenger's reason
    drift: list[dict] = field(default_factory=list)  # drift events


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


def row_message(key: str | None, ts: int | str | None, values: np.ndarray,
                names: Sequence[str] | None = None) -> bytes:
    """One row as a producer sends it: ``{"key", "ts", "values": [..] or {name: ..}}``."""
    body: dict[str, Any] = {} if key is None else {"key": key}
    if ts is not None:
        body["ts"] = ts
    floats = [float(v) for v in values]
    body["values"] = dict(zip(names, floats, strict=True)) if names else floats
    return json.dumps(body).encode()  # every digit: float32 -> JSON -> float32 is exact


def row_records(keys: Sequence[str | None], ts: Sequence[int | str | None],
                values: np.ndarray, names: Sequence[str] | None = None) -> list[Record]:
    """A recording's rows as records of one partition, offset = row."""
    return [Record(row_message(k, t, row, names), i, None if k is None else k.encode())
            for i, (k, t, row) in enumerate(zip(keys, ts, values, strict=True))]


def replay(records: Sequence[Record], settings: Settings, *, warmup_rows: int | None = None,
           live: LiveModel | None = None, retrain: bool = False,
           progress: Callable[[int], None] | None = None) -> Replayed:
    """Decode and window ``records``; unless ``live`` is given, train on the samples of
    the rows (offsets) before ``warmup_rows``, by default on the first
    ``settings.warmup_size`` samples as the cold start does; then score every sample in
    batches of :func:`replay_batch` as the daemon does (the warm-up ones too). With
    ``retrain`` the retrainer runs as well (waited for after each batch, as a slow stream
    would allow). ``progress`` is called with the samples scored by each batch."""
    decoding = Decoding(settings.input, settings.window, settings.kafka.max_message_bytes)
    intake = decoding.take(records)
    if not intake.samples:
        return Replayed([], np.zeros(0), np.zeros(0, bool), np.zeros(0), 0, intake.dead)
    data = np.stack([s.values for s in intake.samples]).astype(np.float32, copy=False)
    warm = (0 if live is not None else
            sum(s.record.offset < warmup_rows for s in intake.samples) if warmup_rows is not None
            else min(settings.warmup_size, len(data)))
    slot = _slot(settings, live if live is not None else _train(data[:warm], settings),
                 saved=retrain and live is None)
    scored = _score(slot, data, warm, settings, retrain, progress)
    return Replayed(intake.samples, scored.scores, scored.flags, scored.thresholds, warm,
                    intake.dead, scored.retrains, scored.history)


def _train(data: np.ndarray, settings: Settings) -> LiveModel:
    """The cold start's model: ``ColdStart`` trains and calibrates the same way."""
    from streamae.live import LiveModel, calibrated_threshold, train_detector
    from streamae.scoring import Scorer

    detector = train_detector(data, settings.model, settings.device,
                              normalisation=settings.threshold.normalisation)
    return LiveModel(Scorer(detector, settings.device, settings.batch.max_size),
                     calibrated_threshold(settings.threshold, detector), 1)


def _slot(settings: Settings, live: LiveModel, saved: bool) -> Any:
    """A slot holding ``live``; with ``saved`` (retraining on) the model first becomes a
    version on disk, as at a cold start, so the retrainer's versions follow it."""
    from streamae.live import LiveModel as Live
    from streamae.live import ModelSlot

    if saved:
        from streamae.checkpoints import save_checkpoint

        version = save_checkpoint(settings.checkpoints.directory, live.detector,
                                  threshold_state=live.threshold.state(),
                                  metadata={"origin": "replay"}, keep=settings.checkpoints.keep)
        live = Live(live.scorer, live.threshold, version)
    slot = ModelSlot()
    slot.swap(live)
    return slot


@dataclass
class _Scored:
    scores: np.ndarray
    flags: np.ndarray
    thresholds: np.ndarray
    retrains: list[str]
    history: RetrainHistory | None


REPLAY_BATCH = 256  # what the daemon polls at a time from a stream it keeps up with


def replay_batch(settings: Settings) -> int:
    """The batch a replay scores at a time: the daemon's on a stream it keeps up with
    (a few hundred), or ``batch.max_size`` when that is smaller."""
    return min(settings.batch.max_size, REPLAY_BATCH)


def _retraining(slot: Any, settings: Settings) -> tuple[Any, Any]:
    """The retrainer and drift monitor a trainer runs, wired as ``service`` wires them."""
    from streamae.drift import DriftMonitor
    from streamae.metrics import Metrics
    from streamae.retrain import Retrainer

    metrics = Metrics()
    retrainer = Retrainer(settings.retrain, settings.model, settings.threshold,
                          settings.checkpoints, settings.device, slot, metrics,
                          max_batch=settings.batch.max_size)
    monitor = DriftMonitor(settings.drift, metrics, follow=settings.retrain.follow_drift)
    monitor.listeners.append(retrainer.on_drift)
    retrainer.on_reanchor.append(monitor.reset)
    return retrainer, monitor


def _score(slot: Any, data: np.ndarray, warm: int, settings: Settings, retrain: bool,
           progress: Callable[[int], None] | None) -> _Scored:
    """The daemon's score-then-threshold step over ``data``, batch by batch, with the
    scored hooks (retrainer, drift monitor) when ``retrain``."""
    retrainer, monitor = _retraining(slot, settings) if retrain else (None, None)
    hooks = [monitor.observe, retrainer.observe] if retrain else []
    history = RetrainHistory(np.zeros(0, np.int64)) if retrain else None
    size = replay_batch(settings)
    bounds = [0, warm, *range(warm + size, len(data), size), len(data)]
    scores, flags, values, versions = [], [], [], []
    try:
        for start, end in itertools.pairwise(bounds):
            if start >= end:
                continue
            live = slot.live  # read once per batch, as the daemon does
            result = live.scorer.score(data[start:end])
            batch_flags, value = classify_and_learn(live.threshold, result.scores)
            scores.append(result.scores)
            flags.append(batch_flags)
            values.append(np.full(end - start, np.nan if value is None else value))
            versions.append(np.full(end - start, live.version))
            for hook in hooks:
                hook(live, data[start:end], result.scores, batch_flags)
            if retrainer is not None:
                history.models.setdefault(live.version, live)
                retrainer.wait()
                history.ended.extend([end - 1] * (len(retrainer.outcomes) - len(history.ended)))
            if progress is not None:
                progress(end - start)
    finally:
        if retrainer is not None:
            retrainer.close()
    if retrainer is not None:
        history.versions = np.concatenate(versions)
        history.verdicts = [v.reason for v in retrainer.verdicts]
        history.drift = list(monitor.events)
    outcomes = list(retrainer.outcomes) if retrainer is not None else []
    return _Scored(np.concatenate(scores), np.concatenate(flags), np.concatenate(values),
                   outcomes, history)


def replay_rows(key: str, ts_ms: np.ndarray, values: np.ndarray, settings: Settings,
                names: Sequence[str] | None = None, retrain: bool = False) -> RowVerdicts:
    """One key's rows (in time order) replayed; verdicts per row (see :func:`replay`)."""
    records = row_records([key] * len(values), [int(t) for t in ts_ms], values, names)
    result = replay(records, settings, retrain=retrain)
    rows = result.rows
    scores, flags = per_row(len(values), rows, result.scores, result.flags)
    thresholds = per_row(len(values), rows, result.thresholds, np.zeros(len(rows)))[0]
    verdicts = RowVerdicts(scores, flags, result.retrains, thresholds=thresholds)
    if (history := result.history) is not None:
        versions = per_row(len(values), rows, history.versions, np.zeros(len(rows)))[0]
        verdicts.versions = np.nan_to_num(versions).astype(int)
        verdicts.drift, verdicts.models, verdicts.verdicts = (history.drift, history.models,
                                                              history.verdicts)
        verdicts.retrain_rows = [int(rows[i]) for i in history.ended]
    return verdicts
