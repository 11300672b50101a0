"""A recording through the daemon's path (``streamae.replay``), then per key: verdicts per
row, incidents from the daemon's ``IncidentTracker``, and a sweep over false-alarm rates.

Scores are calibrated (``-log10`` of the tail probability among normal readings), so the
flags of a ``false_alarm_rate`` (or ``static``) threshold at another rate are exactly the
same scores compared with another value: the sweep re-thresholds the replay's scores
rather than replaying again. Only rows from the end of the warm-up on are evaluated; the
incident tracker sees their samples in the daemon's order and is swept once a batch.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

from streamae.backtest.evaluation import Confusion, Quality, pooled
from streamae.backtest.recording import Recording
from streamae.exceptions import StreamaeError
from streamae.incident_feed import observation, tracker_from
from streamae.replay import Replayed, per_row, replay, replay_batch, row_records
from streamae.settings import Settings

if TYPE_CHECKING:
    from streamae.live import LiveModel

RATES = (1e-2, 1e-3, 1e-4, 1e-5, 1e-6)  # the sweep's target false-alarm rates
DAY_MS = 86_400_000


@dataclass(frozen=True)
class Span:
    """One incident as a bar: from its first to its last flagged reading."""

    start_ms: int
    end_ms: int
    peak_score: float
    severity: str
    flagged: int
    resolved: bool


@dataclass
class KeyVerdicts:
    key: str
    rows: np.ndarray  # the recording's rows of this key, in order
    scores: np.ndarray  # per row: the newest window's score (NaN before the first)
    flags: np.ndarray  # per row, bool
    thresholds: np.ndarray  # per row: the value in force (NaN while cold)
    first: int  # rows[first:] are evaluated (after the warm-up)
    incidents: list[Span] = field(default_factory=list)

    @property
    def alarms(self) -> int:
        """Flagged samples of the evaluated part (readings, with windows of stride 1)."""
        return int(self.flags[self.first:].sum())


@dataclass(frozen=True)
class Figures:
    """What one threshold gives over the evaluated part."""

    rate: float | None  # target false-alarm rate (None: the configured method)
    threshold: float | None
    alarms: int
    incidents: int
    days: float | None  # evaluated event time; None when timestamps do not advance
    confusion: Confusion | None = None  # with labels
    quality: Quality | None = None  # event-level, with labels

    def per_day(self, count: int) -> float | None:
        return count / self.days if self.days else None


@dataclass
class Backtest:
    recording: Recording
    replayed: Replayed
    keys: list[KeyVerdicts]
    first_row: int  # rows from here on are evaluated
    window: int  # readings a sample spans (window length, or 1)
    figures: Figures
    sweep: list[Figures]


def run(recording: Recording, settings: Settings, *, warmup_rows: int | None = None,
        live: LiveModel | None = None, retrain: bool = False, rates: Sequence[float] = RATES,
        progress: Callable[[int], None] | None = None) -> Backtest:
    """Replay ``recording`` (train on ``warmup_rows`` or ``settings.warmup_size`` samples,
    or score everything with ``live``), then evaluate it and sweep ``rates``."""
    records = row_records(recording.keys, recording.ts, recording.values, recording.names)
    replayed = replay(records, settings, warmup_rows=warmup_rows, live=live, retrain=retrain,
                      progress=progress)
    if len(replayed.scores) <= replayed.warm:
        raise StreamaeError(f"nothing to score after the warm-up: {len(replayed.scores)} "
                            f"samples, {replayed.warm} for training")
    rows = replayed.rows
    first_row = int(rows[replayed.warm]) if warmup_rows is None else warmup_rows
    window = settings.window.length if settings.input.kind == "window" else 1
    keys, figures = judge(recording, replayed, replayed.flags, replayed.thresholds,
                          first_row, settings, None)
    sweep = [judge(recording, replayed, replayed.scores > -math.log10(rate),
                   np.full(len(rows), -math.log10(rate)), first_row, settings, rate)[1]
             for rate in rates]
    return Backtest(recording, replayed, keys, first_row, window, figures, sweep)


def judge(recording: Recording, replayed: Replayed, flags: np.ndarray,
          thresholds: np.ndarray, first_row: int, settings: Settings,
          rate: float | None) -> tuple[list[KeyVerdicts], Figures]:
    """Per-key verdicts and incidents for one set of sample flags; pooled figures."""
    keys = by_key(recording, replayed.rows, replayed.scores, flags, thresholds, first_row)
    spans = incidents(replayed, flags, thresholds, first_row, settings)
    for verdicts in keys:
        verdicts.incidents = spans.get(verdicts.key, [])
    confusion, quality = None, None
    if recording.labels is not None:
        confusion = Confusion()
        parts = []
        for v in keys:
            labels = recording.labels[v.rows[v.first:]]
            confusion.add(v.flags[v.first:], labels)
            parts.append((labels, v.flags[v.first:]))
        window = settings.window.length if settings.input.kind == "window" else 1
        quality = pooled(parts, window)
    value = None if rate is None else -math.log10(rate)
    if rate is None and replayed.warm < len(thresholds):
        value = float(thresholds[-1]) if np.isfinite(thresholds[-1]) else None
    return keys, Figures(rate, value, sum(v.alarms for v in keys),
                         sum(len(v.incidents) for v in keys),
                         evaluated_days(recording, first_row), confusion, quality)


def by_key(recording: Recording, rows: np.ndarray, scores: np.ndarray, flags: np.ndarray,
           thresholds: np.ndarray, first_row: int) -> list[KeyVerdicts]:
    """Sample verdicts -> per-row verdicts of each key (a row carries the newest verdict
    of its own key), keys in order of first appearance."""
    keys = np.asarray(recording.keys, dtype=object)
    sample_keys = keys[rows]
    out = []
    for key in dict.fromkeys(recording.keys):
        key_rows = np.flatnonzero(keys == key)
        mine = sample_keys == key
        at = np.searchsorted(key_rows, rows[mine])
        row_scores, row_flags = per_row(len(key_rows), at, scores[mine], flags[mine])
        row_values, _ = per_row(len(key_rows), at, thresholds[mine], flags[mine])
        first = int(np.searchsorted(key_rows, first_row))
        out.append(KeyVerdicts(str(key), key_rows, row_scores, row_flags, row_values, first))
    return out


def incidents(replayed: Replayed, flags: np.ndarray, thresholds: np.ndarray, first_row: int,
              settings: Settings) -> dict[str, list[Span]]:
    """The daemon's incident tracker over the evaluated samples, in order; bars per key."""
    tracker = tracker_from(settings.incident, settings.threshold.top_k, clock=lambda: 0.0)
    latest: dict[str, dict] = {}
    batch = replay_batch(settings)
    evaluated = [i for i, s in enumerate(replayed.samples) if s.record.offset >= first_row]
    for n, i in enumerate(evaluated, start=1):
        value = float(thresholds[i]) if np.isfinite(thresholds[i]) else None
        obs = observation(replayed.samples[i], float(replayed.scores[i]), bool(flags[i]),
                          value, (), 0)
        events = tracker.observe(obs)
        if n % batch == 0 or n == len(evaluated):
            events += tracker.sweep()  # the daemon sweeps after each batch
        latest.update((e["id"], e) for e in events)
    spans: dict[str, list[Span]] = {}
    for event in sorted(latest.values(), key=lambda e: e["started_ts_ms"]):
        spans.setdefault(event["key"], []).append(Span(
            int(event["started_ts_ms"]), int(event["last_flagged_ts_ms"]),
            float(event["peak_score"]), str(event["severity"]),
            int(event["flagged_readings"]), event["status"] == "resolved"))
    return spans


def evaluated_days(recording: Recording, first_row: int) -> float | None:
    ts = recording.ts_ms[first_row:]
    if len(ts) < 2:
        return None
    span = float(ts.max() - ts.min())
    return span / DAY_MS if span > 0 else None


def pick(sweep: Sequence[Figures], max_alarms_per_day: float) -> Figures | None:
    """The most sensitive rate whose alarms per day stay within the limit."""
    within = [f for f in sweep if (f.per_day(f.alarms) or 0.0) <= max_alarms_per_day]
    return max(within, key=lambda f: f.rate or 0.0) if within else None
