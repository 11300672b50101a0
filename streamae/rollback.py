"""Watching a promotion: an alarm rate that explodes or collapses is checked, both ways.

After a promotion the next ``rollback_window`` scores are watched (the readings kept).
When the alarm rate moved by more than ``rollback_alert_ratio`` either way, the previous
model scores the same readings in the background:

* **explosion**: roll back when the new model flags them far more often than the previous
  one does (a fault that began meanwhile raises both rates: that is the data, not the
  model);
* **collapse**: roll back when the readings the previous model flagged go unflagged by
  the new one beyond what the anchor also misses (less the share of them that false
  alarms explain, ``reference.chance_share``); when too few are flagged beyond chance,
  the ones it confirmed (scored ``confirm_margin`` above its threshold). The confirmed
  ones join the reference set either way.

A regime retrain (a followed drift, an operator's accept) is not checked for a collapse:
the alarms falling is what was asked for.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from streamae.live import LiveModel
from streamae.reference import MIN_ALARMS, chance_share, detection_rate
from streamae.scoring import Scorer
from streamae.thresholds import AlarmRate

log = logging.getLogger(__name__)


@dataclass
class Watch:
    """A promotion under observation: rates before and after it, the readings after it."""

    version: int
    previous: LiveModel
    before: float
    after: AlarmRate
    regime: bool  # a regime retrain: a collapse of the alarm rate is what was asked for
    values: list[np.ndarray] = field(default_factory=list)


def change(watch: Watch, target: float, ratio: float) -> str | None:
    """'explosion', 'collapse' or None, from the watched alarm rate against the one before
    (never below the threshold's target rate)."""
    rate, before = watch.after.rate, watch.before
    if rate > ratio * max(before, target):
        return "explosion"
    if not watch.regime and rate * ratio < before and before > ratio * target:
        return "collapse"
    return None


@dataclass(frozen=True)
class Check:
    """What a background check needs besides the watch."""

    live: LiveModel  # the promoted model
    anchor: Scorer  # a copy of the anchor's model, and its threshold
    anchor_threshold: float | None
    target: float
    ratio: float
    tolerance: float
    confirm_margin: float
    device: str
    max_batch: int


def should_roll_back(watch: Watch, kind: str, check: Check,
                     add_confirmed: Callable[[np.ndarray], None]) -> bool:
    """Score the watched readings with the previous model and judge ``kind``."""
    values = np.concatenate(watch.values)
    old = Scorer(watch.previous.detector, check.device, check.max_batch).score(values).scores
    new = Scorer(check.live.detector, check.device, check.max_batch)
    if kind == "explosion":
        return _exploded(watch, check, new.score(values).scores, old)
    return _collapsed(watch, check, values, new, old, add_confirmed)


def _exploded(watch: Watch, check: Check, new: np.ndarray, old: np.ndarray) -> bool:
    new_rate = detection_rate(new, check.live.threshold.value)
    old_rate = detection_rate(old, watch.previous.threshold.value)
    bad = new_rate > check.ratio * max(old_rate, check.target)
    log.log(logging.WARNING if bad else logging.INFO,
            "event=%s reason=explosion version=%d rate=%.4f previous_rate=%.4f",
            "rollback" if bad else "promotion_confirmed", watch.version, new_rate, old_rate)
    return bad


def _collapsed(watch: Watch, check: Check, values: np.ndarray, new: Scorer, old: np.ndarray,
               add_confirmed: Callable[[np.ndarray], None]) -> bool:
    old_value = watch.previous.threshold.value
    flagged = old > (old_value if old_value is not None else math.inf)
    confirmed = values[old > (old_value if old_value is not None else math.inf)
                       + check.confirm_margin]
    chance = chance_share(int(flagged.sum()), len(values), check.target)
    if chance is None and len(confirmed) < MIN_ALARMS:
        log.info("event=promotion_confirmed reason=collapse version=%d confirmed=%d "
                 "detail=%r", watch.version, len(confirmed), "too few alarms to judge")
        return False
    if len(confirmed):
        add_confirmed(confirmed)
    judged = values[flagged] if chance is not None else confirmed
    recall = detection_rate(new.score(judged).scores, check.live.threshold.value)
    expected = (detection_rate(check.anchor.score(judged).scores, check.anchor_threshold)
                - (chance or 0.0))
    bad = recall < expected - check.tolerance
    log.log(logging.WARNING if bad else logging.INFO,
            "event=%s reason=collapse version=%d recall=%.3f anchor_recall=%.3f",
            "rollback" if bad else "promotion_confirmed", watch.version, recall, expected)
    return bad
