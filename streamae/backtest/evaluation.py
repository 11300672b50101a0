"""Figures of flags against labels: point-wise confusion and event-level quality.

Point-wise (:class:`Confusion`): every reading counts once; SKAB's F1, FAR and MAR.
Event-level (:func:`quality`): an *event* is a run of labelled readings; it is found when
a flag falls on it or within ``length - 1`` readings after it (a window holding an
anomalous reading is anomalous, so a window model's flags trail the event by up to its
length and are not false alarms). An *alarm* is a run of flags; it is true when it
touches an event's reach. Normal readings are those outside every reach.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np


@dataclass
class Confusion:
    """Point-wise confusion counts, pooled by ``add``."""

    tp: int = 0
    fp: int = 0
    fn: int = 0
    tn: int = 0

    def add(self, flags: np.ndarray, labels: np.ndarray) -> None:
        flags, labels = np.asarray(flags, dtype=bool), np.asarray(labels, dtype=bool)
        self.tp += int(np.sum(flags & labels))
        self.fp += int(np.sum(flags & ~labels))
        self.fn += int(np.sum(~flags & labels))
        self.tn += int(np.sum(~flags & ~labels))

    @property
    def precision(self) -> float:
        return self.tp / (self.tp + self.fp) if self.tp + self.fp else 0.0

    @property
    def recall(self) -> float:
        return self.tp / (self.tp + self.fn) if self.tp + self.fn else 0.0

    @property
    def f1(self) -> float:
        """F1 = TP / (TP + (FP + FN) / 2), as SKAB writes it."""
        denominator = self.tp + (self.fp + self.fn) / 2
        return self.tp / denominator if denominator else 0.0

    @property
    def far(self) -> float:
        """False alarm rate, % of normal rows flagged."""
        return 100.0 * self.fp / max(1, self.fp + self.tn)

    @property
    def mar(self) -> float:
        """Missed alarm rate, % of anomalous rows not flagged."""
        return 100.0 * self.fn / max(1, self.fn + self.tp)


@dataclass(frozen=True)
class Quality:
    recall: float  # anomalous events with at least one flag in reach
    false_per_1000: float  # flagged normal readings per 1,000 normal readings
    f1: float  # event-level: precision over alarm runs, recall over events
    events: int
    alarms: int
    precision: float = 1.0  # alarm runs that touch an event (1 when there are none)


def runs(mask: np.ndarray) -> list[tuple[int, int]]:
    """[start, end) of each run of True."""
    edges = np.diff(np.r_[0, np.asarray(mask, dtype=np.int8), 0])
    return list(zip(np.flatnonzero(edges == 1).tolist(), np.flatnonzero(edges == -1).tolist(),
                    strict=True))


@dataclass
class _Counts:
    found: int = 0
    events: int = 0
    true_alarms: int = 0
    alarms: int = 0
    false: int = 0
    normal: int = 0


def _count(labels: np.ndarray, flags: np.ndarray, length: int, into: _Counts) -> None:
    labels, flags = np.asarray(labels, dtype=bool), np.asarray(flags, dtype=bool)
    reached = np.convolve(labels.astype(float), np.ones(length))[: len(labels)] > 0
    into.normal += int(np.sum(~reached))
    into.false += int(np.sum(flags & ~reached))
    reach = [(s, e + length - 1) for s, e in runs(labels)]
    into.events += len(reach)
    into.found += sum(bool(flags[s:e].any()) for s, e in reach)
    alarms = runs(flags)
    into.alarms += len(alarms)
    into.true_alarms += sum(any(a < e and s < b for s, e in reach) for a, b in alarms)


def pooled(parts: Iterable[tuple[np.ndarray, np.ndarray]], length: int = 1) -> Quality:
    """Event figures over several series (keys, files): ``(labels, flags)`` each, pooled."""
    counts = _Counts()
    for labels, flags in parts:
        _count(labels, flags, length, counts)
    recall = counts.found / max(1, counts.events)
    precision = counts.true_alarms / counts.alarms if counts.alarms else 1.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return Quality(recall, 1000.0 * counts.false / max(1, counts.normal), f1, counts.events,
                   counts.alarms, precision)


def quality(labels: np.ndarray, flags: np.ndarray, first: int = 0, length: int = 1) -> Quality:
    """Event figures over rows ``first`` onwards of one series, windows of ``length``."""
    return pooled([(labels[first:], flags[first:])], length)
