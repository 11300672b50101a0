"""The gate: which scored readings a retrain may learn from, and the rings they go to.

* **training buffer**: only readings well inside normal, scored below ``gate_score`` on the
  calibrated scale (2 = inside 99% of normal), and never above the threshold in force. An
  absolute score, not a share of the threshold: as a relative gate, readings just under a
  threshold leaked in, and after a few retrains they were the training data's tail.
* **confirmed store** (the buffer's flagged ring): readings flagged ``confirm_margin``
  above the threshold, kept across versions for the reference set.
* **calibration ring**: every reading scored normal (for a rolling quantile or SPOT).
* **alarms**: the latest readings flagged since the last :meth:`Gate.take_alarms`, with how
  many were flagged and scored meanwhile, so a retrain is judged on what the model in
  force actually flagged (``reference.chance_share``), not only on confirmed anomalies.
* **latest ring**: every reading, for a retrain on a new regime (drift, operator).

The loop pays almost nothing per batch: ``route`` keeps a reference to the batch, and
every ``FLUSH_WINDOWS`` windows (or before a snapshot) the pending batches are routed at
once, a few slice copies into preallocated rings.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from streamae.buffer import ReplayBuffer
from streamae.settings import RetrainSettings

FLUSH_WINDOWS = 2_048  # windows routed at once (per-batch locks and copies cost ~30% at 500k/s)


def gate_limit(threshold_value: float | None, gate_score: float) -> float | None:
    """Scores below this enter the buffer: ``gate_score``, never above the threshold;
    None while the threshold is not warm."""
    if threshold_value is None:
        return None
    return min(gate_score, threshold_value)


@dataclass(frozen=True)
class Alarms:
    """Readings flagged since the last take: the latest of them, and the counts."""

    values: np.ndarray  # the latest flagged readings (at most ``flagged_windows``)
    flagged: int  # readings flagged meanwhile (kept or not)
    scored: int  # readings scored meanwhile with a warm threshold


class Gate:
    """The rings and the routing of a scored batch into them (module docstring)."""

    def __init__(self, settings: RetrainSettings,
                 on_flush: Callable[[np.ndarray], None] | None = None) -> None:
        self.settings, self.on_flush = settings, on_flush
        self.seen = 0  # windows ever routed (pending ones too)
        self._pending: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []
        self._pending_n = 0
        self._threshold: float | None = None
        small = max(1024, settings.buffer_max_bytes // 4)
        self.buffer = ReplayBuffer(settings.buffer_max_windows, settings.buffer_max_bytes,
                                   settings.flagged_windows)
        self.recent = ReplayBuffer(settings.calibration_windows, small, 0)
        self.latest = ReplayBuffer(2 * settings.regime_windows, small, 0)
        self.alarms = ReplayBuffer(max(1, settings.flagged_windows), small, 0)
        self._flagged = self._scored = 0

    def route(self, values: np.ndarray, scores: np.ndarray, flags: np.ndarray,
              threshold: float | None) -> bool:
        """Take one scored batch (routed at the next flush); False while the threshold is
        cold. The arrays are kept, not copied: the caller must not change them."""
        if threshold != self._threshold:  # pending batches are routed at their threshold
            self.flush()
            self._threshold = threshold
        self._pending.append((values, scores, flags))
        self._pending_n += len(values)
        self.seen += len(values)
        if self._pending_n >= FLUSH_WINDOWS:
            self.flush()
        return threshold is not None

    def flush(self) -> None:
        """Route the pending batches into the rings; ``on_flush`` gets their flags."""
        if not self._pending:
            return
        parts = list(zip(*self._pending, strict=True))
        self._pending, self._pending_n = [], 0
        values, scores, flags = (np.concatenate(p) for p in parts)
        self._add(self.latest.add, values)
        threshold = self._threshold
        limit = gate_limit(threshold, self.settings.gate_score)
        if limit is not None and threshold is not None:
            flags = np.asarray(flags, dtype=bool)
            confirmed = flags & (scores > threshold + self.settings.confirm_margin)
            self._add(self.buffer.add, values[scores < limit])
            self._add(self.buffer.add_flagged, values[confirmed])
            self._add(self.recent.add, values[~flags])
            self._add(self.alarms.add, values[flags])
            self._flagged += int(flags.sum())
            self._scored += len(flags)
        if self.on_flush is not None:
            self.on_flush(np.asarray(flags, dtype=bool))

    def _add(self, add: Callable[[np.ndarray], None], items: np.ndarray) -> None:
        if len(items) == 0:
            return
        try:
            add(items)
        except ValueError:  # a new model with another input shape: start over
            for ring in (self.buffer, self.recent, self.latest, self.alarms):
                ring.clear()
            add(items)

    def take_alarms(self) -> Alarms:
        """The readings flagged since the last take, and the counts; starts a new span."""
        self.flush()
        taken = Alarms(self.alarms.snapshot(), self._flagged, self._scored)
        self.alarms.clear()
        self._flagged = self._scored = 0
        return taken
