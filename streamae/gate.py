"""The gate: which scored readings a retrain may learn from, and the rings they go to.

* **training buffer**: only readings well inside normal, scored below ``gate_score`` on the
  calibrated scale (2 = inside 99% of normal), and never above the threshold in force. An
  absolute score, not a share of the threshold: as a relative gate, readings just under a
  threshold leaked in, and after a few retrains they were the training data's tail.
* **confirmed store** (the buffer's flagged ring): readings flagged ``confirm_margin``
  above the threshold, kept across versions for the reference set.
* **calibration ring**: every reading scored normal (for a rolling quantile or SPOT).
* **latest ring**: every reading, for a retrain on a new regime (drift, operator).

Adding a batch is a few slice copies into preallocated rings: the loop pays microseconds.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from streamae.buffer import ReplayBuffer
from streamae.settings import RetrainSettings


def gate_limit(threshold_value: float | None, gate_score: float) -> float | None:
    """Scores below this enter the buffer: ``gate_score``, never above the threshold;
    None while the threshold is not warm."""
    if threshold_value is None:
        return None
    return min(gate_score, threshold_value)


class Gate:
    """The rings and the routing of a scored batch into them (module docstring)."""

    def __init__(self, settings: RetrainSettings) -> None:
        self.settings = settings
        small = max(1024, settings.buffer_max_bytes // 4)
        self.buffer = ReplayBuffer(settings.buffer_max_windows, settings.buffer_max_bytes,
                                   settings.flagged_windows)
        self.recent = ReplayBuffer(settings.calibration_windows, small, 0)
        self.latest = ReplayBuffer(2 * settings.regime_windows, small, 0)

    def route(self, values: np.ndarray, scores: np.ndarray, flags: np.ndarray,
              threshold: float | None) -> bool:
        """Route one scored batch; False while the threshold is cold (only ``latest``)."""
        self._add(self.latest.add, values)
        limit = gate_limit(threshold, self.settings.gate_score)
        if limit is None or threshold is None:
            return False
        confirmed = flags & (scores > threshold + self.settings.confirm_margin)
        self._add(self.buffer.add, values[scores < limit])
        self._add(self.buffer.add_flagged, values[confirmed])
        self._add(self.recent.add, values[~flags])
        return True

    def _add(self, add: Callable[[np.ndarray], None], items: np.ndarray) -> None:
        if len(items) == 0:
            return
        try:
            add(items)
        except ValueError:  # a new model with another input shape: start over
            for ring in (self.buffer, self.recent, self.latest):
                ring.clear()
            add(items)
