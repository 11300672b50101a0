"""Fitting a model on an array of normal samples: scale, split, train, early-stop, calibrate.

The result, a ``Detector``, is everything scoring needs: the model, the scaler fitted on
the same data, and the error statistics that turn raw errors into calibrated scores, fitted
on held-out samples or, where training samples' errors are as honest, on all of them
(``_calibration_set``). Data arrives in original units; nothing here knows about Kafka or
settings.
"""

from __future__ import annotations

import copy
import logging
import math
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

from streamae.exceptions import ModelError
from streamae.models import build_model
from streamae.models.base import AutoEncoder
from streamae.modes import ModeLevels
from streamae.scaling import Centring, Scaler
from streamae.scoring import Detector, ErrorMethod, ErrorStats, resolve_device

logger = logging.getLogger(__name__)

__all__ = ["Plateau", "TrainConfig", "fit"]

MIN_SAMPLES = 4
ROUND_STEPS = 50  # an "epoch" on small data repeats passes until this many steps
SPIKE_SIGMAS = 6.0  # the synthetic anomaly of the sensitivity check, in training stds
SPIKE_SCORE = 3.0  # ... counts as detected above this calibrated score (1 in 1,000)
WEAK_SENSITIVITY = 0.5  # below this share detected, training warns: event=weak_model
POOL_TAILS = (0.02, 0.01, 0.005)  # upper shares where training and held-out errors meet
POOL_MIN_BEYOND = 4  # ... each used when at least this many held-out errors lie beyond it
POOL_SHORTFALL = 0.5  # training errors there at under half the held-out rate: do not pool
TRIM_ROUNDS = 4  # refits after dropping training samples far outside the bulk
TRIM_SIGMAS = 3.5  # ... "far": robust sigmas of log10 raw error above the median
TRIM_MIN_DECADES = 0.5  # ... and at least 3x the median error
MAX_TRIM_SHARE = 0.2  # never drop more than this share of the training data in all


@dataclass(frozen=True)
class TrainConfig:
    """How long and how carefully to train."""

    epochs: int = 30  # upper bound (rounds of >= ROUND_STEPS steps); early stopping ends sooner
    learning_rate: float = 1e-3  # Adam
    batch_size: int = 64
    validation_fraction: float = 0.2  # held out for early stopping and error statistics
    patience: int = 5  # rounds without a real validation improvement before stopping
    min_improvement: float = 0.01  # a real improvement: val loss this share below the last
    seed: int = 0  # torch and numpy seeds, and the split
    error_method: ErrorMethod = "robust_z"  # how ErrorStats normalises feature errors
    centre: Centring = "auto"  # windows: which features are judged by shape, not level
    operating_modes: bool = True  # windows: judge values against their mode (modes.py)
    trim_outliers: bool = False  # drop samples far outside the bulk and refit (see ``fit``)


def _check_data(data: np.ndarray) -> np.ndarray:
    """Float32 (N, *shape) with N >= MIN_SAMPLES and no NaN/inf, or ModelError."""
    x = np.asarray(data, dtype=np.float32)
    if x.ndim < 2:
        raise ModelError(f"training data must be (N, *input_shape), got shape {x.shape}")
    if len(x) < MIN_SAMPLES:
        raise ModelError(f"need at least {MIN_SAMPLES} samples to train, got {len(x)}")
    if not np.all(np.isfinite(x)):
        raise ModelError("training data contains NaN or inf")
    return x


def _split(n: int, fraction: float, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Random train/validation indices; validation falls back to train when empty."""
    order = rng.permutation(n)
    n_val = min(n - 2, max(1, round(n * fraction))) if fraction > 0 else 0
    train, val = order[n_val:], order[:n_val]
    return train, (val if n_val else train)


def _epoch(
    model: AutoEncoder,
    optimiser: torch.optim.Optimizer,
    x: torch.Tensor,
    batch_size: int,
    stop: threading.Event | None,
) -> float | None:
    """One round: a pass over x in random batches, repeated until at least ROUND_STEPS
    optimiser steps were taken (a few hundred samples would otherwise train for a few dozen
    steps in all); mean loss, or None when stopped."""
    model.train()
    passes = max(1, math.ceil(ROUND_STEPS / math.ceil(len(x) / batch_size)))
    order = torch.cat([torch.randperm(len(x), device=x.device) for _ in range(passes)])
    total, count = 0.0, 0
    for start in range(0, len(order), batch_size):
        if stop is not None and stop.is_set():
            return None
        batch = x[order[start : start + batch_size]]
        loss = model.loss(batch)
        if not torch.isfinite(loss):
            raise ModelError(f"training loss became {loss.item()}; lower the learning rate")
        optimiser.zero_grad(set_to_none=True)
        loss.backward()
        optimiser.step()
        total += loss.item() * len(batch)
        count += len(batch)
    return total / count


def _evaluate(model: AutoEncoder, x: torch.Tensor, batch_size: int) -> tuple[np.ndarray, ...]:
    """Deterministic raw scores (N,) and per-feature errors (N, *shape) in eval mode."""
    model.eval()
    scores, errors = [], []
    with torch.inference_mode():
        for start in range(0, len(x), max(batch_size, 1024)):
            s, e = model.score(x[start : start + max(batch_size, 1024)])
            scores.append(s.cpu().numpy())
            errors.append(e.cpu().numpy())
    return np.concatenate(scores), np.concatenate(errors)


@dataclass
class Plateau:
    """Early stopping on a validation plateau.

    The best weights follow every new low, however small; the patience clock restarts only
    on a real improvement (``min_improvement`` below the last one), so a loss that creeps
    down by a fraction of a percent per round (common on images) still stops.
    """

    patience: int
    min_improvement: float
    best: float = math.inf  # lowest loss so far: its weights are the ones kept
    reference: float = math.inf  # the loss of the last real improvement
    stale: int = 0  # rounds since then

    def update(self, loss: float) -> tuple[bool, bool]:
        """Record one round's validation loss: (new best, stop now)."""
        is_best = loss < self.best
        self.best = min(self.best, loss)
        if loss < self.reference * (1.0 - self.min_improvement):
            self.reference, self.stale = loss, 0
        else:
            self.stale += 1
        return is_best, self.stale >= self.patience


def _train(
    model: AutoEncoder,
    x_train: torch.Tensor,
    x_val: torch.Tensor,
    config: TrainConfig,
    progress: Callable[[int, float], None] | None,
    stop: threading.Event | None,
) -> tuple[float, float, int]:
    """Rounds until a plateau (``Plateau``) or the epoch limit; leaves the best weights
    loaded. (train, val, epochs)."""
    optimiser = torch.optim.Adam(model.parameters(), lr=config.learning_rate)
    plateau = Plateau(config.patience, config.min_improvement)
    best_train, best_state, epochs_run = math.inf, None, 0
    for epoch in range(1, config.epochs + 1):
        train_loss = _epoch(model, optimiser, x_train, config.batch_size, stop)
        if train_loss is None:
            break
        epochs_run = epoch
        val_loss = float(_evaluate(model, x_val, config.batch_size)[0].mean())
        if not math.isfinite(val_loss):
            raise ModelError(f"validation loss became {val_loss}")
        if progress is not None:
            progress(epoch, val_loss)
        is_best, plateaued = plateau.update(val_loss)
        if is_best:
            best_train, best_state = train_loss, copy.deepcopy(model.state_dict())
        if plateaued:
            logger.debug("early_stop epoch=%d best_val_loss=%.5g", epoch, plateau.best)
            break
    if best_state is None:
        raise ModelError("training stopped before the first epoch finished")
    model.load_state_dict(best_state)
    return best_train, plateau.best, epochs_run


def fit(
    data: np.ndarray,
    kind: str,
    model_args: dict,
    config: TrainConfig,
    device: str = "auto",
    progress: Callable[[int, float], None] | None = None,
    stop: threading.Event | None = None,
) -> Detector:
    """Train a fresh ``kind`` model on samples (N, *input_shape) in original units that are
    meant to be normal but, on a live stream's warm-up, hold some anomalies.

    Anomalies in the training data are learnt (the model rebuilds them) and, worse, sit in
    the held-out errors that calibrate the score: a few percent of them make every later
    anomaly look ordinary. With ``config.trim_outliers`` the samples whose error is far
    outside the bulk (:func:`contaminated`) are dropped after a fit and the model is fitted
    again on the rest, up to TRIM_ROUNDS times. It is off by default because no error
    statistic tells a rare normal pattern from an anomaly: dropped, the pattern alarms.

    Early stopping watches the validation loss, which is the mean deterministic score
    (``model.score``), so it does not jitter with corruption or VAE sampling. The best
    weights are kept. ``progress(epoch, val_loss)`` is called after each epoch; setting
    ``stop`` ends training at the next batch with the best weights so far.
    """
    started = time.monotonic()
    x = _check_data(data)
    keep = np.ones(len(x), dtype=bool)
    rounds = TRIM_ROUNDS if config.trim_outliers else 0
    for trim_round in range(rounds + 1):
        detector, raw = _fit_once(x[keep], kind, model_args, config, device, progress, stop,
                                  score_all=trim_round < rounds)
        if raw is None or (stop is not None and stop.is_set()):
            break
        outliers = contaminated(raw, int(MAX_TRIM_SHARE * len(x)) - int((~keep).sum()))
        if not outliers.any():
            break
        keep[np.flatnonzero(keep)[outliers]] = False
        logger.info("event=training_data_trimmed round=%d dropped=%d kept=%d reason=%s",
                    trim_round + 1, int(outliers.sum()), int(keep.sum()),
                    "error_far_outside_the_bulk")
    detector.trimmed = int((~keep).sum())
    _log_trained(detector, time.monotonic() - started)
    return detector


def contaminated(raw: np.ndarray, budget: int) -> np.ndarray:
    """Samples whose raw error is far outside the bulk of the others: more than TRIM_SIGMAS
    robust standard deviations of log10 errors above their median (and at least
    TRIM_MIN_DECADES above it), at most ``budget`` of them, the worst first.

    The log makes the rule scale-free and the median/MAD make it blind to the outliers
    themselves (a Gaussian log error passes 3.5 sigmas once in 4,000 samples). The floor
    keeps clean data, whose errors can all be alike, from losing its top.
    """
    logs = np.log10(np.maximum(np.asarray(raw, dtype=np.float64), 1e-30))
    if budget <= 0 or logs.size < MIN_SAMPLES:
        return np.zeros(logs.size, dtype=bool)
    centre = float(np.median(logs))
    spread = 1.4826 * float(np.median(np.abs(logs - centre)))
    cut = centre + max(TRIM_SIGMAS * spread, TRIM_MIN_DECADES)
    far = np.flatnonzero(logs > cut)
    worst = far[np.argsort(logs[far])[::-1][:budget]]
    out = np.zeros(logs.size, dtype=bool)
    out[worst] = True
    return out


def _fit_once(
    x: np.ndarray,
    kind: str,
    model_args: dict,
    config: TrainConfig,
    device: str,
    progress: Callable[[int, float], None] | None,
    stop: threading.Event | None,
    score_all: bool,
) -> tuple[Detector, np.ndarray | None]:
    """One fit on ``x``: the detector and, with ``score_all``, every sample's raw score."""
    torch.manual_seed(config.seed)
    rng = np.random.default_rng(config.seed)
    target = resolve_device(device)
    try:
        model = build_model(kind, x.shape[1:], **model_args)
    except TypeError as exc:
        raise ModelError(f"bad model arguments for {kind!r}: {exc}") from exc
    model.to(target)
    train_idx, val_idx = _split(len(x), config.validation_fraction, rng)
    scaler = Scaler.fit(x[np.sort(train_idx)], per_feature=len(x.shape) < 4,
                        centre=config.centre, modes=config.operating_modes)
    scaled = torch.from_numpy(scaler.transform(x)).to(target)
    x_train, x_val = scaled[train_idx], scaled[val_idx]

    best_train, best_val, epochs_run = _train(model, x_train, x_val, config, progress, stop)
    x_calibrate = x_val if val_idx is train_idx else _calibration_set(model, x_train, x_val,
                                                                       config)
    detector = _finish(model, scaler, x_val, config, best_train, best_val, epochs_run,
                       scaled, x_calibrate)
    raw = None
    if score_all:
        scores, errors = _evaluate(model, scaled, config.batch_size)
        raw = detector.error_stats.mean_raw(scores, errors)  # trimming reads error sizes
    detector.model = model.cpu().eval()
    return detector, raw


def _calibration_set(model: AutoEncoder, x_train: torch.Tensor, x_val: torch.Tensor,
                     config: TrainConfig) -> torch.Tensor:
    """The samples whose errors calibrate the score: training and held-out ones together,
    unless only the held-out ones can be trusted: the model rebuilds its training samples
    better than held-out ones (``favours_training``), or some errors lie far outside the
    bulk (``contaminated``: the warm-up holds anomalies, and those the model learnt keep
    moderate errors in training that would teach the calibration that they are normal).

    The tail of a score at 1e-4 is extrapolated from a few dozen excesses; five times the
    samples narrow it (benchmarks/quality/stability.py: the rate's spread across seeds fell
    from 2.8-7.2x to 1.4-2.9x)."""
    if len(x_val) < MIN_SAMPLES:
        return x_val
    train_raw = _evaluate(model, x_train, config.batch_size)[0]
    held_raw = _evaluate(model, x_val, config.batch_size)[0]
    both = np.concatenate([train_raw, held_raw])
    reason = ("learnt_training_samples" if favours_training(train_raw, held_raw) else
              "errors_far_outside_the_bulk" if contaminated(both, both.size).any() else None)
    logger.info("event=calibration_set pooled=%s samples=%d reason=%s",
                str(reason is None).lower(),
                both.size if reason is None else len(x_val), reason or "consistent")
    return torch.cat([x_train, x_val]) if reason is None else x_val


def favours_training(train_raw: np.ndarray, held_raw: np.ndarray) -> bool:
    """Whether the model learnt its training samples, not just their distribution: they
    reach the held-out errors' upper tail (above their top 2%, 1% and 0.5%, as far as the
    held-out samples show it) at under POOL_SHORTFALL of the held-out rate, on average. With
    too few held-out samples to see their top 2% (a small retrain), it cannot tell: True.

    Measured: on i.i.d. data (benchmarks/quality/stability.py, 20 fits) the training share
    was 0.64-1.9x the held-out one; where the model learnt rare normal patterns (spiky
    normal data, a level shift in the warm-up) 0.16-0.26x, shrinking deeper in the tail,
    which a pooled calibration would carry into a 2x higher alarm rate."""
    train = np.asarray(train_raw, dtype=np.float64).ravel()
    held = np.asarray(held_raw, dtype=np.float64).ravel()
    levels = [q for q in POOL_TAILS if q * held.size >= POOL_MIN_BEYOND]
    if not levels:  # too few held-out samples to tell: trust only them
        return True
    ratios = [np.mean(train > np.quantile(held, 1.0 - q)) / q for q in levels]
    return float(np.mean(ratios)) < POOL_SHORTFALL


def _error_stats(model: AutoEncoder, x: torch.Tensor, config: TrainConfig,
                 spread_reference: torch.Tensor | None = None,
                 modes: ModeLevels | None = None) -> tuple[ErrorStats, np.ndarray]:
    """Error statistics fitted on held-out normal ``x``, and its samples' raw scores."""
    scores, errors = _evaluate(model, x, config.batch_size)
    scaled = x.detach().cpu().numpy()
    reference = None if spread_reference is None else spread_reference.detach().cpu().numpy()
    stats = ErrorStats.from_errors(scores, errors, config.error_method, scaled, reference,
                                   modes)
    return stats, stats.sample_raw(scores, errors, scaled)


def _finish(
    model: AutoEncoder,
    scaler: Scaler,
    x_val: torch.Tensor,
    config: TrainConfig,
    train_loss: float,
    val_loss: float,
    epochs_run: int,
    x_all: torch.Tensor | None = None,
    x_calibrate: torch.Tensor | None = None,
) -> Detector:
    """Calibrate error statistics on ``x_calibrate`` (default: the validation split; the
    model stays on its device); the windows' spread, which needs no model, on all of
    ``x_all``."""
    calibrate = x_val if x_calibrate is None else x_calibrate
    stats, scores = _error_stats(model, calibrate, config, x_all, scaler.modes)
    sensitivity = spike_sensitivity(model, stats, x_val, config)
    return Detector(model, scaler, stats, train_loss, val_loss, scores, epochs_run,
                    sensitivity)


def _log_trained(detector: Detector, seconds: float) -> None:
    sensitivity = detector.spike_sensitivity or 0.0
    logger.info(
        "model_trained kind=%s epochs=%d train_loss=%.5f val_loss=%.5f spike_sensitivity=%.3f "
        "trimmed=%d seconds=%.2f", detector.model.kind, detector.epochs_run,
        detector.train_loss, detector.val_loss, sensitivity, detector.trimmed, seconds,
    )
    if sensitivity < WEAK_SENSITIVITY:
        logger.warning(
            "event=weak_model kind=%s spike_sensitivity=%.3f reason=reconstructs_anomalies "
            "hint=the model rebuilds synthetic anomalies about as well as normal data; a "
            "smaller STREAMAE_MODEL__LATENT_SIZE or more training data may help",
            detector.model.kind, sensitivity)


def spike_sensitivity(model: AutoEncoder, stats: ErrorStats, x_val: torch.Tensor,
                      config: TrainConfig) -> float:
    """Share of held-out samples, each with 1/16 of its inputs (at least one) pushed
    SPIKE_SIGMAS standard deviations out, that score above SPIKE_SCORE: how well the model
    refuses to reconstruct an anomaly. A model near the identity rebuilds it, scoring ~0."""
    generator = torch.Generator(device="cpu").manual_seed(config.seed)
    flat = x_val.detach().cpu().reshape(len(x_val), -1).clone()
    width = max(1, flat.shape[1] // 16)
    cells = torch.randint(0, flat.shape[1], (len(flat), width), generator=generator)
    signs = torch.randint(0, 2, (len(flat), 1), generator=generator) * 2.0 - 1.0
    flat.scatter_add_(1, cells, (signs * SPIKE_SIGMAS).expand(-1, width).contiguous())
    spiked = flat.reshape(x_val.shape).to(x_val.device)
    raw, errors = _evaluate(model, spiked, config.batch_size)
    calibrated = stats.normalise_scores(stats.sample_raw(raw, errors,
                                                         spiked.detach().cpu().numpy()))
    return float(np.mean(calibrated > SPIKE_SCORE))
