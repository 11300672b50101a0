"""The reference set every challenger must keep detecting, and the absolute promotion rule.

A challenger is never compared with the champion it would replace: a rule relative to
the champion compounds (each version may lose a share of what the last one caught, and
after a few promotions nothing is caught). Instead, on the calibrated scale:

* **Reference set**: confirmed anomalies (windows some version scored well above its
  threshold, kept across versions), the windows the model in force flagged since the last
  retrain when they are far more than its false alarms would be (``chance_share``), plus
  synthetic perturbations of recent normal windows (a spike, a stuck value, a broken
  correlation), made by one generator with one seed, so the same data gives the same set.
* **Detection**: the challenger must flag each part of the reference set (the confirmed
  anomalies, the recent alarms, and each kind of synthetic one, so that a small part cannot
  hide in a large one) at no less than the *anchor* model's rate on the same part, minus
  ``tolerance`` (and, for the recent alarms, minus the share chance explains).
  The anchor is the first model (or the one an operator or a followed drift accepted);
  it never moves with promotions.
* **False alarms**: on recent normal windows it did not train on, the challenger's alarm
  rate must stay near the threshold's target rate.
* **The same scores**: on the reference items both score at least ``SCORE_FLOOR``, the
  challenger's score must stay within ``score_ratio`` of the anchor's for a
  ``score_agreement`` share of them. With the default ratio (the square root of 2) any two
  promoted versions score those readings within a factor 2 of each other, so a score, a
  static threshold and an alert rule keep their meaning across retrains.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

SEED = 20_261_130  # one seed: the same recent data gives the same synthetic set
SPIKE_SIGMAS = 6.0  # a spike's size, in the feature's spread over the recent windows
MIN_SHIFT_SIGMAS = 1.5  # stuck / mirrored values differ at least this much from the true one
CANDIDATES = 16  # windows tried per synthetic item to find a visible stuck value
KINDS = ("spike", "stuck", "correlation")  # synthetic kinds, in turn


def _spread(normal: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per element mean and std over the windows (the std floored: constant channels)."""
    mean = normal.mean(axis=0)
    std = normal.std(axis=0)
    return mean, np.maximum(std, 1e-3 * max(float(std.mean()), 1e-6))


def _columns(item: np.ndarray) -> np.ndarray:
    """An item as (time, features): a vector is one time step."""
    return item.reshape(1, -1) if item.ndim == 1 else item.reshape(item.shape[0], -1)


def _spike(item: np.ndarray, std: np.ndarray, feature: int, sign: float) -> None:
    """The newest reading of ``feature`` jumps by SPIKE_SIGMAS."""
    item[-1, feature] += sign * SPIKE_SIGMAS * std[-1, feature]


def _stuck(item: np.ndarray, donor: np.ndarray, feature: int) -> None:
    """``feature`` frozen at a value it had elsewhere (another window's first reading)."""
    item[:, feature] = donor[0, feature]


def _mirror(item: np.ndarray, mean: np.ndarray, feature: int) -> None:
    """``feature`` moves against the others: mirrored around its mean."""
    item[:, feature] = 2.0 * mean[:, feature] - item[:, feature]


def synthetic(normal: np.ndarray, n: int, seed: int = SEED) -> np.ndarray:
    """``n`` perturbed copies of windows of ``normal`` (N, *shape): spikes, stuck values and
    broken correlations in turn (item ``i`` is of ``KINDS[i % 3]``), each on the feature
    where it is visible."""
    data = np.asarray(normal, dtype=np.float32)
    if len(data) == 0 or n <= 0:
        return data[:0]
    rng = np.random.default_rng(seed)
    cols = np.stack([_columns(x) for x in data])  # (N, T, F)
    mean, std = _spread(cols)
    out = []
    for i in range(n):
        item = cols[int(rng.integers(len(cols)))].copy()
        deviation = np.abs(item - mean) / std  # (T, F)
        kind = i % 3
        if kind == 0:
            _spike(item, std, int(rng.integers(item.shape[1])), float(rng.choice([-1, 1])))
        elif kind == 1:
            donors = cols[rng.integers(len(cols), size=CANDIDATES)]
            gaps = np.abs(donors[:, 0, :] - item[-1]) / std[-1]  # (CANDIDATES, F)
            best = np.unravel_index(int(np.argmax(gaps)), gaps.shape)
            _stuck(item, donors[best[0]], int(best[1]))
        else:
            _mirror(item, mean, int(np.argmax(deviation.max(axis=0))))
        out.append(item.reshape(data.shape[1:]))
    return np.stack(out).astype(np.float32)


MIN_ALARMS = 10  # flagged windows needed to judge a model on them
OVER_CHANCE = 10.0  # ... and at least this many times the false alarms the target explains


def chance_share(flagged: int, scored: int, target: float) -> float | None:
    """The share of ``flagged`` windows (of ``scored``) that false alarms at the ``target``
    rate explain; None when there are too few, or too few beyond chance, to judge a model
    on (on clean data every alarm is a false one, and no model repeats another's)."""
    expected = target * scored
    if flagged < max(MIN_ALARMS, OVER_CHANCE * expected):
        return None
    return expected / flagged


SCORE_FLOOR = 1.0  # below this a factor of 2 is noise (0.2 against 0.4), not a new meaning


def score_agreement(challenger: np.ndarray, anchor: np.ndarray, ratio: float) -> float:
    """Share of items (both scores >= SCORE_FLOOR) scored within ``ratio`` of each other;
    1.0 when there is none to compare."""
    mine, theirs = np.asarray(challenger, np.float64), np.asarray(anchor, np.float64)
    both = (mine >= SCORE_FLOOR) & (theirs >= SCORE_FLOOR)
    if not both.any():
        return 1.0
    spread = np.maximum(mine[both], theirs[both]) / np.minimum(mine[both], theirs[both])
    return float(np.mean(spread <= ratio))


def detection_rate(scores: np.ndarray, threshold: float | None) -> float:
    """Share of ``scores`` above ``threshold`` (0 without a threshold or scores)."""
    if threshold is None or len(scores) == 0:
        return 0.0
    return float(np.mean(np.asarray(scores) > threshold))


def target_rate(method: str, false_alarm_rate: float, quantile: float,
                threshold: float | None) -> float:
    """The false-alarm rate a threshold aims at, on the calibrated scale."""
    if method == "false_alarm_rate":
        return false_alarm_rate
    if method in ("quantile", "spot"):
        return 1.0 - quantile
    return 10.0 ** -threshold if threshold is not None else 1.0


def far_limit(target: float, n: int, ratio: float) -> float:
    """The highest alarm rate on ``n`` normal windows still 'near' ``target``: ``ratio``
    times it, plus three Poisson sigmas of that count and one window, so a few hundred
    windows can judge a target of 1e-4 without rejecting for one unlucky window."""
    expected = ratio * target * max(n, 1)
    return (expected + 3.0 * math.sqrt(expected) + 1.0) / max(n, 1)


def parts(confirmed: np.ndarray, fake: np.ndarray) -> dict[str, np.ndarray]:
    """The reference set by part: confirmed anomalies and each synthetic kind."""
    out = {"confirmed": confirmed} if len(confirmed) else {}
    for k, kind in enumerate(KINDS):
        if len(fake[k::3]):
            out[kind] = fake[k::3]
    return out


@dataclass(frozen=True)
class Verdict:
    """Why a challenger was promoted or rejected, with the numbers behind it."""

    promote: bool
    reason: str
    part: str  # the reference part with the largest shortfall against the anchor
    recall: float  # challenger's detection rate on that part
    anchor_recall: float  # the anchor's rate on the same part
    false_alarm_rate: float  # challenger's alarm rate on recent normal windows
    far_limit: float
    reference: int  # windows in the reference set
    confirmed: int  # of which confirmed anomalies
    agreement: float = 1.0  # share of reference scores within score_ratio of the anchor's


def judge(recalls: dict[str, tuple[float, float]], far: float, limit: float,
          sizes: dict[str, int], tolerance: float, agreement: float = 1.0,
          min_agreement: float = 0.0) -> Verdict:
    """The absolute rule (module docstring): nothing in it depends on the champion.
    ``recalls`` maps each part to (challenger's rate, anchor's rate); ``agreement`` is
    ``score_agreement`` of the challenger's and the anchor's reference scores."""
    part, (recall, anchor) = min(recalls.items(), key=lambda kv: kv[1][0] - kv[1][1],
                                 default=("none", (1.0, 0.0)))
    numbers = (part, recall, anchor, far, limit, sum(sizes.values()),
               sizes.get("confirmed", 0), agreement)
    if not all(math.isfinite(v) for v in (recall, far)):
        return Verdict(False, "challenger_not_finite", *numbers)
    if recall < anchor - tolerance:
        return Verdict(False, "misses_reference", *numbers)
    if far > limit:
        return Verdict(False, "false_alarms", *numbers)
    if agreement < min_agreement:
        return Verdict(False, "score_shift", *numbers)
    return Verdict(True, "meets_reference", *numbers)
