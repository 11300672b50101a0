"""What every input goes through before a model sees it: levels, scale, bounds.

``Scaler`` is fitted on the training samples and saved with the model, so training and
scoring can never disagree about it. Three rules keep any column from ruling the score:

* **Scales that cannot collapse.** A feature's standard deviation is floored at half its
  resolution (the smallest step between its distinct values: a 0/1 flag that flipped once
  in training is not a 0.03-sigma feature) and at a small share of its magnitude.
* **Constant columns are handled on purpose.** A feature with one value in training (a
  command flag never used) carries nothing the model could learn; it is fed as 0 and
  contributes nothing to the error. When it later takes another value, ``unseen`` says so
  and the alert names it ("unseen value") instead of scoring it 1e16.
* **Bounded inputs.** Standardised values are clipped to ``+-CLIP`` sigmas: a reading 1e6
  sigmas out is already as anomalous as the score can tell, and must not push the network
  into numbers it never saw.

Windows ``(N, L, D)`` may have features **centred**: each window's own mean is subtracted,
so the model judges the feature's shape in the window, not its level. ``auto`` centres a
feature that drifts in training (its level trends across training by more than it varies
around the trend: a temperature following the room), and always a scalar stream's only feature:
a level shift is then flagged while the window straddles the jump, and the new level is
normal afterwards instead of flagging every reading that follows. A level that recurs (a
cycle, a setpoint following a command) keeps its meaning. Where windows hold two-valued
columns (commands, modes), each measured value is fed less its mode's median
(``streamae.modes``): the model learns the shape within a mode, the mode's level is judged
apart.
"""

from __future__ import annotations

from typing import Literal

import numpy as np

from streamae.exceptions import ModelError
from streamae.modes import ModeLevels, distinct_counts

Centring = Literal["auto", "none", "all"]
CLIP = 10.0  # sigmas; standardised inputs are clipped to +-CLIP
MAGNITUDE_FLOOR = 1e-6  # a std is at least this share of the magnitude (~16 float32 ulps)
ABSOLUTE_FLOOR = 1e-6
# auto-centring: a feature drifts when its level's linear trend over training exceeds this
# many standard deviations of the level around that trend...
DRIFT_RATIO = 1.0
# ...and its level is slow: window means spread more than this many within-window standard
# deviations (a noisy channel's level is mostly noise; white noise gives about 1/sqrt(L)).
LEVEL_RATIO = 1.0
RESOLUTION_ROWS = 20_000  # rows sampled to find a feature's resolution


def _resolution(rows: np.ndarray) -> np.ndarray:
    """Per column of (R, D): the smallest positive gap between distinct values (0 if none)."""
    out = np.zeros(rows.shape[1])
    for j in range(rows.shape[1]):
        gaps = np.diff(np.unique(rows[:, j]))
        out[j] = gaps.min() if gaps.size else 0.0
    return out


def _drifting(levels: np.ndarray) -> np.ndarray:
    """(N, D) window means in time order -> per feature: does the level trend across
    training by more than it varies around the trend? A recurring level (a cycle, a setpoint
    following a command) does not; a drift (a temperature following the room) does."""
    n = len(levels)
    if n < 4:
        return np.zeros(levels.shape[1], dtype=bool)
    t = np.linspace(-0.5, 0.5, n)[:, None]  # spans 1 across training
    centred = levels - levels.mean(axis=0)
    slope = (t * centred).sum(axis=0) / (t * t).sum()  # level change over all of training
    spread = (centred - t * slope).std(axis=0)
    return np.abs(slope) > DRIFT_RATIO * np.maximum(spread, ABSOLUTE_FLOOR)


def _choose_centred(x: np.ndarray, centre: Centring) -> np.ndarray:
    """Which features of windows (N, L, D), in time order, to centre; none for other shapes."""
    width = x.shape[-1]
    if x.ndim != 3 or centre == "none":
        return np.zeros(width, dtype=bool)
    if centre == "all" or width == 1:
        return np.ones(width, dtype=bool)
    levels = x.mean(axis=1)  # (N, D) window means, in time order
    slow = levels.std(axis=0) > LEVEL_RATIO * np.maximum(x.std(axis=1).mean(axis=0),
                                                         ABSOLUTE_FLOOR)
    # A flag or command used more often late in training looks like a drift, but its level
    # is its meaning: centred, it would become a many-valued column and lose its mode.
    return _drifting(levels) & slow & (distinct_counts(x[:, -1, :]) > 2)


def _centre(x: np.ndarray, centred: np.ndarray) -> np.ndarray:
    """Windows with the chosen features' window means subtracted (a new array)."""
    out = np.array(x, dtype=np.float32, copy=True)
    if centred.any():
        out[..., centred] -= out[..., centred].mean(axis=-2, keepdims=True)
    return out


class Scaler:
    """Centring (windows), standardisation per feature (last axis) or global, clipping.

    Images use one global mean/std (pixels share a scale, and per-pixel statistics would
    erase the structure the conv model learns); vectors and windows use one per feature.
    """

    def __init__(self, mean: np.ndarray, std: np.ndarray, constant: np.ndarray | None = None,
                 centred: np.ndarray | None = None, modes: ModeLevels | None = None) -> None:
        self.mean = np.asarray(mean, dtype=np.float32)
        self.std = np.asarray(std, dtype=np.float32)
        if self.mean.shape != self.std.shape or self.mean.ndim > 1:
            raise ModelError(f"scaler mean/std shapes {self.mean.shape}/{self.std.shape}")
        if not (np.all(np.isfinite(self.mean)) and np.all(self.std > 0)):
            raise ModelError("scaler needs finite means and positive stds")
        self.constant = self._mask(constant)
        self.centred = self._mask(centred)
        if modes is not None and not modes.fits(self.mean.size):
            raise ModelError("scaler mode levels name columns it does not have")
        self.modes = modes

    def _mask(self, mask: np.ndarray | None) -> np.ndarray:
        """A bool per feature (all False when absent or global)."""
        if mask is None:
            return np.zeros(self.mean.shape, dtype=bool)
        array = np.asarray(mask).astype(bool)
        if array.shape != self.mean.shape:
            raise ModelError(f"scaler mask shape {array.shape} != {self.mean.shape}")
        return array

    @property
    def per_feature(self) -> bool:
        """True when there is one mean/std per feature of the last axis."""
        return self.mean.ndim == 1

    @classmethod
    def fit(cls, data: np.ndarray, per_feature: bool, centre: Centring = "none",
            modes: bool = True) -> Scaler:
        """Fit on (N, *shape) in original units and time order (auto-centring looks for
        drift); see the module docstring for the rules. ``modes``: look for operating
        modes in windows."""
        x = np.asarray(data, dtype=np.float64)
        if not per_feature:
            std = max(float(x.std()), MAGNITUDE_FLOOR * abs(float(x.mean())), ABSOLUTE_FLOOR)
            return cls(np.float32(x.mean()), np.float32(std))
        centred = _choose_centred(x, centre)
        rows = _centre(x, centred).reshape(-1, x.shape[-1]).astype(np.float64)
        mean, std = rows.mean(axis=0), rows.std(axis=0)
        sample = rows[:: max(1, len(rows) // RESOLUTION_ROWS)]
        floor = np.maximum(0.5 * _resolution(sample), MAGNITUDE_FLOOR * np.abs(mean))
        constant = (rows.max(axis=0) == rows.min(axis=0)) & ~centred
        std = np.maximum(std, np.maximum(floor, ABSOLUTE_FLOOR))
        readings = _centre(x, centred)[:, -1, :] if x.ndim == 3 and modes else None
        modes = None if readings is None else ModeLevels.fit(
            cls(mean, std, constant).transform(readings))
        return cls(mean, std, constant, centred, modes)

    def transform(self, data: np.ndarray) -> np.ndarray:
        """Original units -> centred, standardised, clipped float32."""
        x = _centre(data, self.centred) if self.centred.any() else data
        z = (np.asarray(x, dtype=np.float32) - self.mean) / self.std
        np.clip(z, -CLIP, CLIP, out=z)
        if self.constant.any():
            z[..., self.constant] = 0.0
        if self.modes is not None:
            z = self.modes.residual(z)
        return z.astype(np.float32, copy=False)

    def inverse(self, data: np.ndarray, like: np.ndarray | None = None) -> np.ndarray:
        """Standardised -> original units; ``like`` (the inputs) gives centred windows their
        levels back, and readings their modes' levels (without it they stay residuals)."""
        x = np.asarray(data, dtype=np.float32)
        if self.modes is not None and like is not None:
            columns = self.modes.mode_columns
            flags = np.asarray(like, np.float32)[..., columns]
            scaled = np.clip((flags - self.mean[columns]) / self.std[columns], -CLIP, CLIP)
            x = self.modes.restore(x, scaled)  # as transform() saw them
        x = x * self.std + self.mean
        if like is not None and self.centred.any():
            levels = np.asarray(like, dtype=np.float32)[..., self.centred].mean(axis=-2,
                                                                                 keepdims=True)
            x[..., self.centred] += levels
        return x.astype(np.float32, copy=False)

    def unseen(self, data: np.ndarray) -> np.ndarray:
        """(B, *shape) bools: a constant-in-training feature away from its only value."""
        x = np.asarray(data, dtype=np.float32)
        if not self.constant.any():
            return np.zeros(x.shape, dtype=bool)
        tolerance = MAGNITUDE_FLOOR * np.maximum(np.abs(self.mean), 1.0)
        return (np.abs(x - self.mean) > tolerance) & self.constant

    def state(self) -> dict[str, np.ndarray]:
        """The arrays (``mean``, ``std`` and the masks as 0/1; 0-d when global)."""
        modes = {} if self.modes is None else self.modes.state()
        return {"mean": self.mean.copy(), "std": self.std.copy(),
                "constant": self.constant.astype(np.float32),
                "centred": self.centred.astype(np.float32),
                **{f"modes_{k}": v for k, v in modes.items()}}

    @classmethod
    def from_state(cls, state: dict[str, np.ndarray]) -> Scaler:
        """Inverse of ``state``."""
        try:
            modes = {k[6:]: v for k, v in state.items() if k.startswith("modes_")}
            return cls(np.asarray(state["mean"]), np.asarray(state["std"]),
                       state.get("constant"), state.get("centred"),
                       ModeLevels.from_state(modes or None))
        except KeyError as exc:
            raise ModelError(f"scaler state lacks {exc}") from exc
