"""Turning a model's raw error into a score with one meaning: how rare it is among normal data.

A raw reconstruction error means nothing outside the model that made it: its scale moves
with the data's noise, the model kind and every retrain. ``TailCalibration`` is fitted once
per model on the raw errors of held-out normal samples and maps a raw error ``x`` to

    score = -log10 P(normal error >= x)

so a score of 4 means "one normal reading in 10,000 is at least this extreme", for every
model, version, key and data set. An operator's threshold on that scale is a false-alarm
rate (``STREAMAE_THRESHOLD__FALSE_ALARM_RATE=1e-4`` is a score of 4).

The body of the distribution is the empirical survival function of the held-out errors;
above their ``1 - tail_share`` quantile ``u`` the tail is a generalised Pareto fit of the
excesses (SPOT, Siffer et al., KDD 2017, Pickands-Balkema-de Haan), so rarer readings than
any seen get a finite, still-growing score instead of a saturated one (Merlion's calibrator
extrapolates linearly for the same reason). The tail is exponential (shape 0) unless the
fit says heavier by two standard errors: a shape fitted on a hundred excesses is mostly
noise, and a spuriously heavy tail halves the alarm rate three decades out. The shape is
kept in ``[0, MAX_SHAPE]``: a fitted bounded tail (shape < 0) would give infinite scores
past its end point from a few dozen samples.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from streamae.exceptions import ModelError

TAIL_SHARE = 0.05  # share of held-out errors above u, fitted by the tail
MIN_TAIL = 20  # at least this many excesses, or the tail fit swings
MAX_TAIL = 2_000  # beyond this more excesses only cost time
MAX_SHAPE = 0.5  # heavier fitted tails are fit noise more often than not
BODY_POINTS = 64  # anchors kept of the empirical body (the state stays small)
MIN_SIGMA = 1e-12


def fit_gpd(excesses: np.ndarray) -> tuple[float, float]:
    """Generalised Pareto (shape, scale) by probability-weighted moments.

    Hosking & Wallis (1987): closed form, valid for shape < 1 and robust on heavy tails;
    falls back to the exponential (shape 0) when there are too few excesses.
    """
    y = np.sort(np.asarray(excesses, dtype=np.float64))
    n = y.size
    if n == 0:
        return 0.0, MIN_SIGMA
    a0 = float(y.mean())
    if n < 3 or a0 <= 0.0:
        return 0.0, max(a0, MIN_SIGMA)
    p = (np.arange(1, n + 1) - 0.35) / n
    a1 = float(np.mean((1.0 - p) * y))
    denom = a0 - 2.0 * a1
    if denom <= 0.0:
        return 0.0, a0
    shape = float(np.clip(2.0 - a0 / denom, -0.9, 0.9))
    return shape, max(2.0 * a0 * a1 / denom, MIN_SIGMA)


@dataclass(frozen=True)
class TailCalibration:
    """Raw error -> ``-log10`` tail probability among normal errors."""

    body_x: np.ndarray  # (K,) raw errors, increasing
    body_logp: np.ndarray  # (K,) -log10 survival at body_x, non-decreasing
    u: float  # where the tail starts
    tail_logp: float  # -log10 P(error > u)
    shape: float  # GPD shape in [0, MAX_SHAPE]
    scale: float  # GPD scale (> 0)
    count: int  # held-out errors it was fitted on

    @classmethod
    def fit(cls, raw: np.ndarray) -> TailCalibration:
        """Fit on raw errors of held-out normal samples (at least 2, NaNs dropped)."""
        x = np.sort(np.asarray(raw, dtype=np.float64).ravel())
        x = x[np.isfinite(x)]
        n = x.size
        if n < 2:
            raise ModelError(f"calibration needs at least 2 finite errors, got {n}")
        n_tail = int(min(MAX_TAIL, max(MIN_TAIL, round(TAIL_SHARE * n)), n - 1))
        u = float(x[n - n_tail - 1])
        excess = x[n - n_tail :] - u
        shape, scale = fit_gpd(excess[excess > 0])
        if shape < 2.0 * (1.0 + abs(shape)) / math.sqrt(n_tail):  # ~2 standard errors
            shape, scale = 0.0, max(float(excess.mean()), MIN_SIGMA)  # exponential tail
        # A floor on the tail's scale relative to the errors' own size: a held-out set
        # with tied top values (a clean signal) must not make the next tiny step infinite.
        scale = max(scale, 1e-3 * max(float(np.median(x)), u, MIN_SIGMA))
        survival = (n - np.arange(n)) / (n + 1.0)  # P(error >= x_i), never 0 or 1
        keep = np.unique(np.linspace(0, n - n_tail - 1, min(BODY_POINTS, n - n_tail)).round())
        idx = keep.astype(int)
        return cls(
            body_x=x[idx],
            body_logp=-np.log10(survival[idx]),
            u=u,
            tail_logp=-math.log10(n_tail / (n + 1.0)),
            shape=float(np.clip(shape, 0.0, MAX_SHAPE)),
            scale=float(scale),
            count=int(n),
        )

    def scores(self, raw: np.ndarray) -> np.ndarray:
        """Raw errors (any shape) -> scores; 0 below every held-out error, never inf."""
        x = np.asarray(raw, dtype=np.float64)
        body = np.interp(x, self.body_x, self.body_logp, left=0.0, right=self.tail_logp)
        excess = np.maximum(x - self.u, 0.0) / self.scale
        if self.shape < 1e-6:
            tail = excess / math.log(10.0)
        else:
            tail = np.log10(1.0 + self.shape * excess) / self.shape
        out = np.where(x > self.u, self.tail_logp + tail, np.minimum(body, self.tail_logp))
        return np.nan_to_num(out, nan=0.0, posinf=np.finfo(np.float32).max).astype(np.float32)

    def raw_at(self, score: float) -> float:
        """The raw error whose score is ``score`` (inverse of ``scores`` in the tail)."""
        if score <= self.tail_logp:
            return float(np.interp(score, self.body_logp, self.body_x))
        excess_logp = score - self.tail_logp
        if self.shape < 1e-6:
            return self.u + self.scale * excess_logp * math.log(10.0)
        return self.u + self.scale * (10.0 ** (self.shape * excess_logp) - 1.0) / self.shape

    def state(self) -> dict:
        """JSON-able state (small: at most BODY_POINTS anchors)."""
        return {
            "body_x": self.body_x.tolist(),
            "body_logp": self.body_logp.tolist(),
            "u": self.u,
            "tail_logp": self.tail_logp,
            "shape": self.shape,
            "scale": self.scale,
            "count": self.count,
        }

    @classmethod
    def from_state(cls, state: dict) -> TailCalibration:
        """Inverse of ``state``; ModelError on anything malformed or non-finite."""
        try:
            body_x = np.asarray(state["body_x"], dtype=np.float64)
            body_logp = np.asarray(state["body_logp"], dtype=np.float64)
            values = [float(state[k]) for k in ("u", "tail_logp", "shape", "scale")]
            count = int(state["count"])
        except (KeyError, TypeError, ValueError) as exc:
            raise ModelError(f"malformed calibration: {exc}") from exc
        finite = np.all(np.isfinite(body_x)) and np.all(np.isfinite(body_logp))
        if body_x.shape != body_logp.shape or body_x.size == 0 or not finite:
            raise ModelError("malformed calibration: body anchors")
        if not all(math.isfinite(v) for v in values) or values[3] <= 0:
            raise ModelError("malformed calibration: tail parameters")
        u, tail_logp, shape, scale = values
        return cls(body_x, body_logp, u, tail_logp, shape, scale, count)
