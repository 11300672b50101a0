"""The model that scores right now, and the one path that produces a new one.

A ``LiveModel`` is immutable: the daemon reads the current one once per batch, so a swap
(by the retrainer or a checkpoint arriving from the model topic) never splits a batch.
Cold start, retraining and ``streamae train`` all call ``train_detector`` and
``calibrated_threshold``, so a model is always built the same way. Training (and torch) is
imported only where a model is trained: a CPU scoring process never loads torch.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from streamae.checkpoints import Checkpoint, load_newest_intact
from streamae.exceptions import CheckpointError, ModelRejected
from streamae.metrics import Metrics
from streamae.scoring import Detector, Scorer
from streamae.settings import ModelSettings, ThresholdSettings
from streamae.thresholds import Threshold, build_threshold, threshold_from_state
from streamae.windows import Profile, WindowUnits, profiles_from_json

if TYPE_CHECKING:
    from streamae.training import TrainConfig

log = logging.getLogger(__name__)

# Checkpoint metadata: {key: [loc, scale]}, present when the model's windows were profiled.
KEY_PROFILES = "key_profiles"


@dataclass(frozen=True)
class LiveModel:
    scorer: Scorer
    threshold: Threshold
    version: int
    # Loaded models only (None: built in this process, nothing to follow): the units its
    # windows were in, "key" (profiled; the saved profiles beside) or "reading" (raw).
    window_units: WindowUnits | None = None
    key_profiles: dict[str, Profile] = field(default_factory=dict)

    @property
    def kind(self) -> str:
        return self.scorer.kind

    @property
    def detector(self) -> Detector:
        return self.scorer.detector


class ModelSlot:
    """One owner for the live model: readers take a snapshot, writers swap under a lock."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._live: LiveModel | None = None

    @property
    def live(self) -> LiveModel | None:
        return self._live

    def swap(self, new: LiveModel) -> LiveModel | None:
        with self._lock:
            old, self._live = self._live, new
        return old


def model_args(model: ModelSettings) -> dict:
    return {
        "hidden_sizes": None if model.hidden_sizes is None else tuple(model.hidden_sizes),
        "latent_size": model.latent_size,
        "noise_std": model.noise_std,
        "mask_probability": model.mask_probability,
        "beta": model.beta,
        "variational": model.variational,
        "downsample": model.downsample,
    }


def train_config(model: ModelSettings, normalisation: str = "robust_z") -> TrainConfig:
    from streamae.training import TrainConfig

    return TrainConfig(
        error_method=normalisation,
        epochs=model.epochs,
        learning_rate=model.learning_rate,
        batch_size=model.batch_size,
        validation_fraction=model.validation_fraction,
        patience=model.patience,
        min_improvement=model.min_improvement,
        seed=model.seed,
        centre=model.centring,
        operating_modes=model.operating_modes,
        trim_outliers=model.trim_outliers,
    )


def train_detector(data: np.ndarray, model: ModelSettings, device: str,
                   progress: Callable[[int, float], None] | None = None,
                   stop: threading.Event | None = None,
                   normalisation: str = "robust_z") -> Detector:
    """``normalisation`` (threshold settings) decides how errors become z-scores."""
    from streamae.training import fit

    config = train_config(model, normalisation)
    return fit(data, model.kind, model_args(model), config, device=device, progress=progress,
               stop=stop)


def calibrated_threshold(settings: ThresholdSettings, detector: Detector,
                         recent: np.ndarray | None = None) -> Threshold:
    """A threshold of the configured method, fitted on the detector's validation scores
    (plus ``recent`` normalised scores of normal traffic, when a retrain has them), so it
    flags from the first message."""
    threshold = build_threshold(settings.method, value=settings.value,
                                quantile=settings.quantile, window=settings.window,
                                min_samples=settings.min_samples, margin=settings.margin,
                                false_alarm_rate=settings.false_alarm_rate)
    scores = detector.error_stats.normalise_scores(detector.validation_scores)
    if recent is not None:
        scores = np.concatenate([scores, np.asarray(recent, dtype=np.float32)])
    threshold.fit(scores)
    return threshold


def live_from_checkpoint(checkpoint: Checkpoint, device: str, max_batch: int) -> LiveModel:
    try:
        threshold = threshold_from_state(checkpoint.threshold_state)
    except ValueError as exc:
        raise ModelRejected("bad_threshold", str(exc)) from exc
    return LiveModel(
        scorer=Scorer(checkpoint.detector, device=device, max_batch=max_batch),
        threshold=threshold,
        version=checkpoint.version,
        window_units="key" if KEY_PROFILES in checkpoint.metadata else "reading",
        key_profiles=profiles_from_json(checkpoint.metadata.get(KEY_PROFILES)),
    )


def admit(checkpoint: Checkpoint, *, input_shape: Sequence[int] | None,
          kind: str | None) -> None:
    """Raise ModelRejected unless ``checkpoint`` may replace a model of ``input_shape`` and
    ``kind`` (None: anything goes). Weights are checked finite when loaded."""
    model = checkpoint.detector.model
    if input_shape is not None and tuple(model.input_shape) != tuple(input_shape):
        raise ModelRejected("wrong_shape", f"input shape {tuple(model.input_shape)} != "
                                           f"{tuple(input_shape)} of the running model")
    if kind is not None and model.kind != kind:
        raise ModelRejected("wrong_kind", f"kind {model.kind!r} != configured {kind!r}")


def rejection_reason(error: CheckpointError) -> str:
    """The bounded label of a refused checkpoint."""
    return getattr(error, "reason", "corrupt")


def load_live(directory: Path, device: str, max_batch: int,
              metrics: Metrics | None = None) -> LiveModel | None:
    """The newest intact checkpoint on disk as a live model; corrupt newer versions are
    logged, counted and passed over (no crash loop on one bad file)."""
    def rejected(version: int, error: CheckpointError) -> None:
        reason = rejection_reason(error)
        log.warning("event=model_rejected origin=checkpoint version=%d reason=%s error=%r",
                    version, reason, str(error)[:300])
        if metrics is not None:
            metrics.models_rejected.labels(reason=reason).inc()

    return load_newest_intact(directory, on_reject=rejected,
                              build=lambda ck: live_from_checkpoint(ck, device, max_batch))
