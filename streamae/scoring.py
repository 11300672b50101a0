"""The scorer, the detector it serves, and what turns raw errors into explainable numbers.

Raw reconstruction errors mean nothing on their own: they depend on the model, the data
and its scale. ``ErrorStats`` remembers how large they were on held-out normal data: the
sample score becomes ``-log10`` of its tail probability among normal errors (see
``calibration``), so a score of 4 means "one normal reading in 10,000 is this extreme" for
any model, and per-feature z-scores say which inputs an alert is about.

Nothing here imports torch: on a CPU the network runs in numpy (``models.arrays``), and
only images (where torch's convolutions are 5x faster) or a GPU load torch.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Literal, Union

import numpy as np

from streamae.calibration import TailCalibration
from streamae.exceptions import ModelError
from streamae.models.arrays import ArrayNet, as_arrays
from streamae.modes import ModeLevels
from streamae.scaling import Scaler
from streamae.windows import MAD_TO_SIGMA

if TYPE_CHECKING:
    from streamae.models.base import AutoEncoder
    from streamae.models.device import DeviceNet

    Network = Union[AutoEncoder, ArrayNet]  # noqa: UP007 - a forward reference

logger = logging.getLogger(__name__)

ErrorMethod = Literal["z", "robust_z"]
MIN_SCALE = 1e-8  # absolute floor of any scale
# A feature's error scale is at least this share of the typical feature's: a pixel of blank
# background or a channel reconstructed perfectly must not turn a tiny error into z = 1000s.
RELATIVE_FLOOR = 0.1
# Image (conv) models score fastest in chunks of about this many images on a CPU: larger
# ones spill the activations out of the cache (28x28: 1,024 at a chunk run ~0.4x the rate of
# 256, benchmarks/images_speed.py). A GPU takes the batch whole.
CPU_CONV_CHUNK = 256
# Where a GPU shows itself to a process (Linux, NVIDIA): without it CUDA cannot be there, and
# asking torch would cost a CPU scorer torch's ~550 MB for a "no".
NVIDIA_DEVICE = Path("/dev/nvidiactl")


def cuda_available() -> bool:
    """Whether torch would find a GPU; torch is imported only where one may be."""
    if "torch" not in sys.modules and not NVIDIA_DEVICE.exists():
        return False
    import torch

    return torch.cuda.is_available()


def resolve_device(name: str) -> str:
    """'auto' picks CUDA when present; asking for CUDA without it is an error, not a fallback.
    The answer is a torch device string: 'cpu', 'cuda' or 'cuda:N'."""
    if name == "auto":
        return "cuda" if cuda_available() else "cpu"
    if name == "cpu":
        return "cpu"
    if name == "cuda" or name.startswith("cuda:"):
        if not cuda_available():
            raise ModelError(f"device {name!r} requested but CUDA is not available")
        return name
    raise ModelError(f"unknown device {name!r}; expected 'auto', 'cpu' or 'cuda[:N]'")


def limit_threads(threads: int) -> None:
    """Compute threads per process (``STREAMAE_TORCH_THREADS``): numpy's BLAS, which scores
    on a CPU, now (OpenBLAS would spin a thread per core); torch wherever it is imported
    later (it reads ``OMP_NUM_THREADS`` when it loads) or already was."""
    from threadpoolctl import threadpool_limits

    threadpool_limits(threads, user_api="blas")
    os.environ["OMP_NUM_THREADS"] = str(threads)
    if "torch" in sys.modules:
        sys.modules["torch"].set_num_threads(threads)


def runs_in_torch(kind: str, device: str) -> bool:
    """A GPU, or images on a CPU (torch's 2-D convolutions are 5x numpy's); everything else
    scores in numpy at 0.7-0.9x torch's rate (``benchmarks/scoring_kinds.py --engines``)."""
    return device != "cpu" or kind == "conv"


LIVELY_SHARE = 4.0  # a feature whose 1% lowest spread stays above typical / this is lively


def _centre_scale(values: np.ndarray, method: ErrorMethod) -> tuple[np.ndarray, np.ndarray]:
    """Centre and scale over axis 0, the scale floored so no division explodes."""
    if method == "z":
        centre = values.mean(axis=0)
        scale = values.std(axis=0)
    elif method == "robust_z":
        centre = np.median(values, axis=0)
        scale = MAD_TO_SIGMA * np.median(np.abs(values - centre), axis=0)
    else:
        raise ModelError(f"unknown error method {method!r}; expected 'z' or 'robust_z'")
    # A feature that is always reconstructed perfectly would get scale 0 and turn the
    # smallest error into an enormous z; floor it against the typical feature's error.
    floor = max(MIN_SCALE, RELATIVE_FLOOR * float(np.mean(np.abs(centre) + scale)))
    return centre.astype(np.float32), np.maximum(scale, floor).astype(np.float32)


def floored(typical: np.ndarray) -> np.ndarray:
    """Per-feature sizes floored at a share of the typical feature's, so that a feature
    which barely moves (a blank pixel, a flag column) never divides by ~0."""
    values = np.asarray(typical, dtype=np.float64)
    return np.maximum(values, max(MIN_SCALE, RELATIVE_FLOOR * float(np.mean(values))))


def feature_weights(feature_mean: np.ndarray, modes: ModeLevels | None = None) -> np.ndarray:
    """Per feature: 1 / its typical error, floored (a pixel of blank background must not
    weigh a thousand times a stroke); 0 for a window's mode columns, which are context
    (``streamae.modes``)."""
    weight = (1.0 / floored(feature_mean)).astype(np.float32)
    if modes is not None:
        weight[..., modes.mode_columns] = 0.0
    return weight


def weighted_raw(model_scores: np.ndarray, feature_errors: np.ndarray, weight: np.ndarray,
                 feature_mean: np.ndarray) -> np.ndarray:
    """Mean of weighted feature errors (B,), plus what the model adds beyond reconstruction
    (a VAE's KL term) at the mean weight."""
    flat = np.asarray(feature_errors, dtype=np.float32).reshape(len(feature_errors), -1)
    weighted = flat @ (weight.reshape(-1) / flat.shape[1])
    extra = np.asarray(model_scores, dtype=np.float32).ravel() - flat.mean(axis=1)
    mean_error = max(float(np.mean(feature_mean)), MIN_SCALE)
    return weighted + np.maximum(extra, 0.0) / mean_error


def window_spread(scaled: np.ndarray) -> np.ndarray:
    """Windows (B, L, D), scaled -> (B, D): each feature's mean absolute deviation from its
    median over the window (a spike adds 1/L of its size, not its square). The median by
    sorting: np.median over the middle axis is 3x slower on small windows."""
    ordered = np.sort(scaled, axis=1)
    length = scaled.shape[1]
    centre = 0.5 * (ordered[:, (length - 1) // 2] + ordered[:, length // 2])
    return np.abs(scaled - centre[:, None]).mean(axis=1)


def spread_typical(spread: np.ndarray) -> np.ndarray:
    """Per feature, the median spread of normal windows, floored."""
    return floored(np.median(np.asarray(spread, dtype=np.float64), axis=0)).astype(np.float32)


def spread_raw(scaled: np.ndarray, typical: np.ndarray) -> np.ndarray:
    """Windows (B, L, D) -> (B,): the largest feature spread in units of its typical one.
    A vibration whose amplitude triples is the normal shape scaled: the model rebuilds it
    and its error stays small; its spread does not. (Both sides, a cycle gone flat as
    well, was tried: the calm side's tail hid the rising amplitude, recall 1.0 -> 0.17.)"""
    return (window_spread(scaled) / typical).max(axis=1)


def spread_low(spread: np.ndarray, typical: np.ndarray) -> np.ndarray:
    """Per feature, the 1% lowest spread of normal windows where that stays above
    1/LIVELY_SHARE of the typical spread (a feature that always moves: a cycle, a noisy
    sensor), else 0 (a flag, a level that is often steady: its calm is normal)."""
    low = np.quantile(np.asarray(spread, dtype=np.float64), 0.01, axis=0)
    return np.where(low > typical / LIVELY_SHARE, low, 0.0).astype(np.float32)


def flat_ratios(spread: np.ndarray, low: np.ndarray) -> np.ndarray:
    """Window spreads (B, D) -> (B, D): for features that always move, the ratio of the
    feature's 1% lowest normal spread to this window's (0 where calm is normal). A stuck
    sensor or a missing cycle is a flat window, which a model of a cycle rebuilds as one
    of zero amplitude: its error stays small, its spread does not. Normal windows stay at
    or below 1 (99%), under the growing amplitude's ratios, so the two share one
    calibration. (The typical spread in the numerator instead let calm normal windows
    into the tail, and spiky normal's recall fell to 0.58.)"""
    return low / np.maximum(spread, np.maximum(1e-3 * low, 1e-12))


def peak_raw(feature_errors: np.ndarray, weight: np.ndarray) -> np.ndarray:
    """Windows (B, L, D) -> (B,): the largest of the window's per-reading errors (each the
    mean over features of the weighted error), where the mean over the window dilutes a
    single-reading anomaly L times."""
    errors = np.asarray(feature_errors, dtype=np.float32)
    # einsum: no (B, L, D) temporary (3x faster than multiplying, 8 features)
    return np.einsum("bld,ld->bl", errors, weight).max(axis=1) / errors.shape[2]


@dataclass
class ErrorStats:
    """How large errors are on normal data: per sample (calibrated) and per feature (z).

    A sample's raw score weighs each feature's error by that feature's typical error on
    normal data (``sample_raw``): a feature the model reconstructs well is not drowned by
    a noisy one, so a small deviation of a well-predicted channel still counts. The raw
    score is then calibrated to a tail probability.

    Windows are judged three ways: by the mean error over the window (a distorted shape),
    by its worst reading (a spike, diluted L times in the mean) and by the spread of its
    readings (``spread_raw``: an amplitude that grows; ``flat_ratios``: a feature that always
    moves gone flat, as a stuck sensor). Each statistic is first calibrated
    on its own (``parts``). Mean and peak are strongly correlated: ``calibration`` maps the
    rarer of the two to the tail probability of the pair (fitted, no Bonferroni guess).
    The spread, nearly independent of the errors, joins by the union bound: P(pair or
    spread at least this rare) <= 2 x 10^-s, exact when they never fire together, so the
    score is the larger minus log10(2). A fitted tail of the max of all three came out
    1.2-3.5x the target rate (benchmarks/quality/stability.py), this one 0.5-1.4x. Windows
    with operating modes (``streamae.modes``) are judged a fourth way, by how far a value
    holds off its mode's level, joined the same way (minus log10(3)). States saved before a
    part existed score without it.
    """

    method: ErrorMethod  # how per-feature errors become z
    calibration: TailCalibration  # raw sample score -> -log10 tail probability
    feature_centre: np.ndarray  # (*input_shape,)
    feature_scale: np.ndarray  # (*input_shape,)
    feature_mean: np.ndarray  # (*input_shape,) mean error, weighs features in the raw score
    parts: tuple[TailCalibration, ...] | None = None  # windows: (mean, peak[, spread])
    spread_typical: np.ndarray | None = None  # (D,) windows: typical spread per feature
    spread_low: np.ndarray | None = None  # (D,) windows: see spread_low (None: older state)
    modes: ModeLevels | None = None  # windows with mode columns: the scaler's (None: none)
    mode_tail: TailCalibration | None = None  # their deviations' part (with ``modes``)

    def __post_init__(self) -> None:
        if (self.modes is None) != (self.mode_tail is None):
            raise ModelError("mode levels and their calibration come together")
        self._weight = feature_weights(self.feature_mean, self.modes)
        # The parts joined by the union bound: the pair, the spread, the modes' levels.
        joined = (self.spread_typical is not None) + (self.modes is not None)
        self._union = float(np.log10(1 + joined))

    def sample_raw(self, model_scores: np.ndarray, feature_errors: np.ndarray,
                   scaled: np.ndarray | None = None) -> np.ndarray:
        """A model's per-sample scores (B,), feature errors (B, *shape) and the scaled
        inputs -> raw scores: the mean of feature errors, each in units of its typical
        error; for windows the rarest of that, the worst reading's error and the spread
        (see the class docstring)."""
        mean = self.mean_raw(model_scores, feature_errors)
        if self.parts is None:
            return mean
        pair = np.maximum(self.parts[0].scores(mean),
                          self.parts[1].scores(peak_raw(feature_errors, self._weight)))
        if self.spread_typical is None:
            return pair
        if scaled is None:
            raise ModelError("a window's spread needs its scaled readings")
        joined = np.maximum(self.calibration.scores(pair),
                            self.parts[2].scores(self._spread_raw(scaled)))
        if self.modes is None:
            return joined
        return np.maximum(joined, self.mode_tail.scores(self.modes.deviations(scaled)))

    def spread_scores(self, scaled: np.ndarray) -> np.ndarray | None:
        """Windows (B, L, D) -> the spread part's calibrated score (B,) on the score's scale
        (the union with the pair taken), None without a spread part: what tells an event
        that the spread, not the error, made the alarm."""
        if self.spread_typical is None or self.parts is None or len(self.parts) < 3:
            return None
        return self.parts[2].scores(self._spread_raw(scaled)) - self._union

    def mode_scores(self, scaled: np.ndarray) -> np.ndarray | None:
        """Windows (B, L, D) -> the mode levels' calibrated score (B,) on the score's scale,
        None without mode columns: what tells an event that a value left its mode's level."""
        if self.modes is None:
            return None
        return self.mode_tail.scores(self.modes.deviations(scaled)) - self._union

    def spread_change(self, window: np.ndarray) -> tuple[int, str, float] | None:
        """One scaled window (L, D) -> (feature, "grown" or "flat", its spread / typical)
        for the feature whose spread lies furthest outside normal (the measure the spread
        part scores), None if none does."""
        spread = window_spread(window[None])
        grown, flat = self._spread_ratios(spread)
        feature = int(np.argmax(np.maximum(grown, flat)[0]))
        ratio = float(spread[0, feature] / self.spread_typical[feature])
        if grown[0, feature] >= flat[0, feature]:
            return (feature, "grown", ratio) if grown[0, feature] > 1.0 else None
        return (feature, "flat", ratio) if flat[0, feature] > 1.0 else None

    def _spread_ratios(self, spread: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Window spreads (B, D) -> (grown, flat) ratios (B, D): spread over typical, and
        ``flat_ratios`` (zeros for a state saved before windows were judged flat)."""
        grown = spread / self.spread_typical
        if self.spread_low is None:
            return grown, np.zeros_like(grown)
        return grown, flat_ratios(spread, self.spread_low)

    def _spread_raw(self, scaled: np.ndarray) -> np.ndarray:
        """A window's spread in units of normal: grown (``spread_raw``) or gone flat
        (``flat_ratios``), whichever is further out, over its features."""
        grown, flat = self._spread_ratios(window_spread(scaled))
        return np.maximum(grown, flat).max(axis=1)

    def mean_raw(self, model_scores: np.ndarray, feature_errors: np.ndarray) -> np.ndarray:
        """The mean of feature errors, each in units of its typical error: an error's size
        (``sample_raw`` of a window is a tail probability's -log10 instead)."""
        return weighted_raw(model_scores, feature_errors, self._weight, self.feature_mean)

    @classmethod
    def from_errors(
        cls, sample_scores: np.ndarray, feature_errors: np.ndarray, method: ErrorMethod,
        scaled: np.ndarray | None = None, spread_reference: np.ndarray | None = None,
        modes: ModeLevels | None = None,
    ) -> ErrorStats:
        """Fit on raw scores (N,), per-feature errors (N, *shape) and (windows) the scaled
        inputs of held-out normal samples (never the ones the model was fitted on: those
        errors are optimistic). The spread needs no model, so its part may be fitted on
        more normal windows (``spread_reference``, e.g. all of the warm-up's): a steadier
        tail. ``modes``, the scaler's mode levels, join as a part where the windows have
        them."""
        scores = np.asarray(sample_scores, dtype=np.float64).ravel()
        errors = np.asarray(feature_errors, dtype=np.float64)
        if len(scores) < 2 or len(errors) != len(scores):
            raise ModelError(f"need >= 2 matching errors, got {len(scores)}/{len(errors)}")
        f_centre, f_scale = _centre_scale(errors, method)
        f_mean = errors.mean(axis=0).astype(np.float32)
        windows = errors.ndim == 3 and errors.shape[1] > 1  # (N, L, D)
        reference = scaled if spread_reference is None else spread_reference
        if not windows or reference is None:
            modes = None
        weight = feature_weights(f_mean, modes)
        raw = weighted_raw(scores, errors, weight, f_mean)
        parts, typical = None, None
        if windows:
            peak = peak_raw(errors, weight)
            parts = (TailCalibration.fit(raw), TailCalibration.fit(peak))
            raw = np.maximum(parts[0].scores(raw), parts[1].scores(peak))
            if scaled is not None:
                spreads = window_spread(reference)
                typical = spread_typical(spreads)
                tail = None if modes is None else TailCalibration.fit(modes.deviations(reference))
                stats = cls(method, TailCalibration.fit(raw), f_centre, f_scale, f_mean,
                            None, typical, spread_low(spreads, typical), modes, tail)
                stats.parts = (*parts, TailCalibration.fit(stats._spread_raw(reference)))
                return stats
        return cls(method, TailCalibration.fit(raw), f_centre, f_scale, f_mean, parts, typical)

    def normalise_scores(self, raw: np.ndarray) -> np.ndarray:
        """Raw per-sample scores -> calibrated scores, ``-log10`` P(normal >= raw)."""
        if self.spread_typical is not None:  # raw is already the joined parts' score
            return np.asarray(raw, dtype=np.float32) - self._union
        return self.calibration.scores(raw)

    def normalise_features(self, errors: np.ndarray) -> np.ndarray:
        """Per-feature squared errors (B, *shape) -> per-feature z."""
        return ((errors - self.feature_centre) / self.feature_scale).astype(np.float32)

    def state(self) -> dict:
        """JSON-able state; arrays as nested lists with their shape."""
        return {
            "method": self.method,
            "calibration": self.calibration.state(),
            "parts": None if self.parts is None else [p.state() for p in self.parts],
            "spread_typical": (None if self.spread_typical is None
                               else self.spread_typical.tolist()),
            "spread_low": None if self.spread_low is None else self.spread_low.tolist(),
            "modes": (None if self.modes is None else
                      {k: v.tolist() for k, v in self.modes.state().items()}),
            "mode_tail": None if self.mode_tail is None else self.mode_tail.state(),
            "shape": list(self.feature_centre.shape),
            "feature_centre": self.feature_centre.ravel().tolist(),
            "feature_scale": self.feature_scale.ravel().tolist(),
            "feature_mean": self.feature_mean.ravel().tolist(),
        }

    @classmethod
    def from_state(cls, state: dict) -> ErrorStats:
        """Inverse of ``state``; raises ModelError on a malformed dict."""
        try:
            shape = tuple(int(s) for s in state["shape"])
            centre = np.asarray(state["feature_centre"], dtype=np.float32).reshape(shape)
            scale = np.asarray(state["feature_scale"], dtype=np.float32).reshape(shape)
            method = state["method"]
            if method not in ("z", "robust_z"):
                raise ValueError(f"unknown method {method!r}")
            mean = np.asarray(state["feature_mean"], dtype=np.float32).reshape(shape)
            calibration = TailCalibration.from_state(state["calibration"])
            tail = state.get("mode_tail")
            return cls(method, calibration, centre, scale, mean, *parts_from_state(state),
                       ModeLevels.from_state(state.get("modes")),
                       None if tail is None else TailCalibration.from_state(tail))
        except (KeyError, TypeError, ValueError) as exc:
            raise ModelError(f"malformed error stats: {exc}") from exc


def parts_from_state(
    state: dict,
) -> tuple[tuple[TailCalibration, ...] | None, np.ndarray | None, np.ndarray | None]:
    """The part calibrations of a state, the typical spreads and the lively features' low
    spreads: (mean, peak) from before the spread part existed, nothing from before parts
    did, no low spreads from before flat windows were judged."""
    parts, typical, low = state.get("parts"), state.get("spread_typical"), state.get("spread_low")
    if parts is None:
        return None, None, None
    if not isinstance(parts, list) or len(parts) != (2 if typical is None else 3):
        raise ModelError("malformed error stats: parts")
    spreads = None if typical is None else np.asarray(typical, dtype=np.float32).ravel()
    if spreads is not None and not (np.isfinite(spreads).all() and (spreads > 0).all()):
        raise ModelError("malformed error stats: typical spreads must be finite and > 0")
    lows = None if low is None or spreads is None else np.asarray(low, np.float32).ravel()
    if lows is not None and (lows.shape != spreads.shape or not np.isfinite(lows).all()
                             or (lows < 0).any()):
        raise ModelError("malformed error stats: low spreads must be finite, >= 0, one per "
                         "feature")
    return tuple(TailCalibration.from_state(part) for part in parts), spreads, lows


@dataclass
class Detector:
    """A trained model with what it takes to score: scaler and normal error statistics.

    ``model`` is a torch ``AutoEncoder`` where it was trained, an ``ArrayNet`` where it was
    loaded from a checkpoint; ``Scorer`` runs either on the right engine."""

    model: Network
    scaler: Scaler
    error_stats: ErrorStats
    train_loss: float
    val_loss: float
    validation_scores: np.ndarray  # raw scores of the calibration samples (training.fit)
    epochs_run: int
    # Share of held-out samples with a synthetic 6-sigma spike that score above 3 (None:
    # not measured, e.g. loaded from a checkpoint).
    spike_sensitivity: float | None = None
    trimmed: int = 0  # training samples dropped as far outside the bulk (see ``fit``)


@dataclass
class ScoreBatch:
    """Scores of one batch, everything in numpy and in the input's original units.

    Reconstructions are kept in the model's units and brought back to the input's only
    when asked (``reconstruction``): only flagged samples are explained, and doing it for
    every sample cost up to a quarter of scoring a window."""

    scores: np.ndarray  # (B,) calibrated: -log10 P(normal error >= this one)
    raw_scores: np.ndarray  # (B,) feature-weighted error, before calibration
    feature_z: np.ndarray  # (B, *shape)
    model_reconstruction: np.ndarray  # (B, *shape), the model's (scaled) units
    inputs: np.ndarray  # (B, *shape), original units
    scaler: Scaler
    latent: np.ndarray | None = None  # (B, latent_size), posterior mean for VAEs
    unseen: np.ndarray | None = None  # (B, *shape) bools: constant-in-training, now changed
    scaled: np.ndarray | None = None  # (B, L, D) windows: the model's view (spread_change)

    def reconstruction(self, i: int) -> np.ndarray:
        """Sample ``i``'s reconstruction in original units."""
        return self.scaler.inverse(self.model_reconstruction[i:i + 1],
                                   like=self.inputs[i:i + 1])[0]

    @property
    def reconstructed(self) -> np.ndarray:
        """Every sample's reconstruction in original units (B, *shape)."""
        return self.scaler.inverse(self.model_reconstruction, like=self.inputs)


def chunk_size(kind: str, device: str, max_batch: int) -> int:
    """How many samples one forward pass takes: ``max_batch``, capped for images on CPU."""
    if kind == "conv" and device == "cpu":
        return min(max_batch, CPU_CONV_CHUNK)
    return max_batch


class Scorer:
    """A detector's network, ready on its engine: numpy on a CPU, torch on a GPU or for
    images (its own copy on the device, so the retrainer can go on with its detector)."""

    def __init__(self, detector: Detector, device: str = "auto", max_batch: int = 4096):
        self.detector = detector
        self.device = resolve_device(device)
        self.kind = detector.model.kind
        self.input_shape = tuple(detector.model.input_shape)
        self.max_batch = chunk_size(self.kind, self.device, max_batch)
        self.network: ArrayNet | DeviceNet
        if runs_in_torch(self.kind, self.device):
            from streamae.models.device import DeviceNet

            self.network = DeviceNet(detector.model, self.device)
        else:
            self.network = as_arrays(detector.model)

    def _check(self, batch: np.ndarray) -> np.ndarray:
        """Float32 array shaped (B, *input_shape), or ModelError."""
        array = np.asarray(batch, dtype=np.float32)
        if array.ndim != len(self.input_shape) + 1 or array.shape[1:] != self.input_shape:
            raise ModelError(f"batch shape {array.shape} does not fit (B, *{self.input_shape})")
        return array

    def _chunks(self, array: np.ndarray) -> list[np.ndarray]:
        """Scaled slices of at most ``max_batch`` samples (at least one, maybe empty)."""
        return [self.detector.scaler.transform(array[start : start + self.max_batch])
                for start in range(0, max(len(array), 1), self.max_batch)]

    def analyse(self, batch: np.ndarray) -> tuple[np.ndarray, ...]:
        """The network's pass in scaled units, chunked: (reconstruction, latent, model
        scores, feature errors, the scaled input)."""
        parts = [(*self.network.analyse(chunk), chunk)
                 for chunk in self._chunks(self._check(batch))]
        return tuple(np.concatenate(p) for p in zip(*parts, strict=True))

    def score(self, batch: np.ndarray) -> ScoreBatch:
        """Score a batch in original units (chunked by ``max_batch``)."""
        array = self._check(batch)
        recon, latent, model_raw, errors, scaled = self.analyse(array)
        stats, scaler = self.detector.error_stats, self.detector.scaler
        raw = stats.sample_raw(model_raw, errors, scaled)
        return ScoreBatch(
            scores=stats.normalise_scores(raw),
            raw_scores=raw,
            feature_z=stats.normalise_features(errors),
            model_reconstruction=recon,
            inputs=array,
            scaler=scaler,
            latent=latent,
            unseen=scaler.unseen(array) if scaler.constant.any() else None,
            scaled=scaled if stats.spread_typical is not None else None,
        )

    def encode(self, batch: np.ndarray) -> np.ndarray:
        """Latent vectors (B, latent_size); the posterior mean for variational models."""
        chunks = self._chunks(self._check(batch))
        return np.concatenate([self.network.encode(chunk) for chunk in chunks])


def recalibrate(scorer: Scorer, normal: np.ndarray, method: ErrorMethod) -> Detector:
    """The scorer's detector with its error statistics fitted on ``normal``, data it was not
    trained on. A retrain learns from gated readings, which lack the top percent of normal
    (the gate's cut): its own validation split then has no tail, and every reading's tail
    probability came out too small (false alarms 15-45x the target after a few versions)."""
    _, _, model_scores, errors, scaled = scorer.analyse(normal)
    stats = ErrorStats.from_errors(model_scores, errors, method, scaled,
                                   modes=scorer.detector.scaler.modes)
    return dataclasses.replace(scorer.detector, error_stats=stats,
                               validation_scores=stats.sample_raw(model_scores, errors,
                                                                  scaled))


def sample(detector: Detector, n: int, device: str = "auto", seed: int = 0) -> np.ndarray:
    """n synthetic samples from a variational model's prior, in original units."""
    model = detector.model
    if not model.variational:
        raise ModelError(f"model kind {model.kind!r} is not variational; cannot sample")
    z = np.random.default_rng(seed).standard_normal((n, model.latent_size), np.float32)
    return detector.scaler.inverse(Scorer(detector, device).network.decode(z))


def top_features(
    values: np.ndarray,
    reconstructed: np.ndarray,
    z: np.ndarray,
    names: list[str] | None,
    k: int,
) -> list[dict]:
    """The k features with the largest z: what an operator reads first in an alert."""
    flat_z = np.asarray(z, dtype=np.float64).ravel()
    actual = np.asarray(values, dtype=np.float64).ravel()
    recon = np.asarray(reconstructed, dtype=np.float64).ravel()
    order = np.argsort(-flat_z, kind="stable")[: max(k, 0)]
    return [
        {
            "feature": names[i] if names is not None and i < len(names) else int(i),
            "actual": float(actual[i]),
            "reconstructed": float(recon[i]),
            "direction": "high" if actual[i] >= recon[i] else "low",
            "z": float(flat_z[i]),
        }
        for i in order
    ]


def _pooled_map(feature_z: np.ndarray) -> np.ndarray:
    """(C, H, W) or (H, W) -> (H, W), channels averaged."""
    z = np.asarray(feature_z, dtype=np.float64)
    if z.ndim == 3:
        return z.mean(axis=0)
    if z.ndim == 2:
        return z
    raise ModelError(f"expected (C, H, W) or (H, W) errors, got shape {z.shape}")


def worst_patches(feature_z: np.ndarray, patch: int, k: int) -> list[dict]:
    """The k non-overlapping square regions with the highest mean z (channels pooled)."""
    z = _pooled_map(feature_z)
    height, width = z.shape
    p_h, p_w = min(max(patch, 1), height), min(max(patch, 1), width)
    integral = np.pad(z.cumsum(0).cumsum(1), ((1, 0), (1, 0)))
    sums = (
        integral[p_h:, p_w:]
        - integral[:-p_h, p_w:]
        - integral[p_h:, :-p_w]
        + integral[:-p_h, :-p_w]
    )  # (H-p_h+1, W-p_w+1), one per top-left corner
    means = sums / (p_h * p_w)
    taken: list[dict] = []
    for flat in np.argsort(-means, axis=None, kind="stable"):
        row, col = divmod(int(flat), means.shape[1])
        if any(abs(row - t["row"]) < p_h and abs(col - t["col"]) < p_w for t in taken):
            continue
        taken.append(
            {"row": row, "col": col, "height": p_h, "width": p_w, "z": float(means[row, col])}
        )
        if len(taken) >= k:
            break
    return taken


def heatmap(feature_z: np.ndarray, size: int = 8) -> list[list[float]]:
    """A small (at most size x size) mean-pooled z map, small enough for an alert."""
    z = _pooled_map(feature_z)
    rows = np.array_split(np.arange(z.shape[0]), min(size, z.shape[0]))
    cols = np.array_split(np.arange(z.shape[1]), min(size, z.shape[1]))
    return [[round(float(z[np.ix_(r, c)].mean()), 4) for c in cols] for r in rows]
