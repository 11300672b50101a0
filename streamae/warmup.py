"""Cold start: gather the first samples, train in the background, then score them too.

While the first model trains, the consumer's partitions are paused and the loop keeps
polling (so the group does not rebalance and nothing more piles up in memory). The
gathered samples stay uncommitted until they are scored: no message goes unscored. On a
CPU the first model trains in a child process, as retrains do (``trainer_process``), so
torch never enters the scoring process.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

import numpy as np

from streamae.checkpoints import save_checkpoint
from streamae.exceptions import InfrastructureError, ModelError
from streamae.intake import Batch, Decoding
from streamae.live import (
    KEY_PROFILES,
    LiveModel,
    ModelSlot,
    calibrated_threshold,
    train_detector,
)
from streamae.metrics import Metrics
from streamae.scoring import Detector, Scorer
from streamae.settings import Settings
from streamae.trainer_process import ProcessTrainer, Progress, runs_in_process
from streamae.windows import profiles_to_json

log = logging.getLogger(__name__)

PROGRESS_EVERY_S = 10.0  # training progress is logged at most this often (and epoch 1)


class ColdStart:
    def __init__(self, settings: Settings, slot: ModelSlot, metrics: Metrics) -> None:
        self.settings = settings
        self.slot = slot
        self.metrics = metrics
        self.gathered = Batch.empty()
        self._stop = threading.Event()
        self._executor: ThreadPoolExecutor | None = None
        self._training: Future | None = None
        self._started = 0.0
        self._trained_on = 0
        self._epoch = 0  # last finished epoch of the training in progress
        self._val_loss = float("nan")
        self._logged_at = 0.0

    def admit(self, samples: Batch, consumer: Any, decoding: Decoding) -> Batch:
        """Samples to score now: all of them once a model is live, else none (gathered).

        A ``scorer`` never trains: it gathers up to the warm-up size, pauses, and scores
        everything once the trainer's first model arrives on the model topic.
        """
        if self.slot.live is not None and self._training is None:
            if not len(self.gathered):
                return samples
            consumer.resume(*consumer.paused())
            ready, self.gathered = Batch.concat([self.gathered, samples]), Batch.empty()
            return ready
        self.gathered = Batch.concat([self.gathered, samples])
        full = len(self.gathered) >= self.settings.warmup_size
        if full and self.settings.role == "scorer":
            consumer.pause(*consumer.assignment())  # wait for the model topic
        elif full and self._training is None:
            self._begin(consumer)
        if self._training is not None and self._training.done():
            self._finish(consumer, decoding)
            ready, self.gathered = self.gathered, Batch.empty()
            return ready
        return Batch.empty()

    def releasing(self) -> bool:
        """True while gathered samples are sure to be handed out by a later ``admit``: a
        training is under way, or a model is live. (Samples short of the warm-up size
        wait for more input, which may never come.)"""
        return len(self.gathered) > 0 and (self._training is not None
                                           or self.slot.live is not None)

    def _begin(self, consumer: Any) -> None:
        # Exactly the warm-up: a batch that crosses the line is scored, not trained on.
        warm, _ = self.gathered.split(self.settings.warmup_size)
        data = np.array(warm.values, dtype=np.float32)
        self._trained_on = len(warm)
        consumer.pause(*consumer.assignment())
        self._executor = ThreadPoolExecutor(1, thread_name_prefix="cold-start")
        self._started = time.monotonic()
        model = self.settings.model
        log.info("event=cold_start_training samples=%d shape=%s kind=%s", len(data),
                 data.shape[1:], model.kind)
        self._epoch, self._logged_at = 0, 0.0
        self._training = self._executor.submit(self._trainer(), data, self._stop,
                                               self._progress)

    def _trainer(self) -> Callable[[np.ndarray, threading.Event, Progress], Detector]:
        """A training process on a CPU, the cold-start thread itself on a GPU (as retrains)."""
        s = self.settings
        if runs_in_process(s.retrain.executor, s.device):
            return ProcessTrainer(s.model, s.device, s.torch_threads, s.threshold.normalisation,
                                  s.retrain.start_method, s.retrain.stop_grace_s)
        return lambda data, stop, progress: train_detector(
            data, s.model, s.device, progress, stop, s.threshold.normalisation)

    def _progress(self, epoch: int, val_loss: float) -> None:
        """After each epoch (on the training thread): log at INFO at most every
        PROGRESS_EVERY_S, and keep the figures for ``status`` (/readyz)."""
        self._epoch, self._val_loss = epoch, val_loss  # epochs count from 1
        now = time.monotonic()
        if self._epoch > 1 and now - self._logged_at < PROGRESS_EVERY_S:
            return
        self._logged_at = now
        log.info("event=training_progress origin=cold_start %s", self._progress_fields(now))

    def _progress_fields(self, now: float) -> str:
        epochs, elapsed = self.settings.model.epochs, now - self._started
        left = elapsed / max(self._epoch, 1) * (epochs - self._epoch)
        return (f"epoch={self._epoch}/{epochs} val_loss={self._val_loss:.4g} "
                f"elapsed_s={elapsed:.0f} left_s={left:.0f}")

    def status(self) -> str:
        """How far the cold start is, for /readyz."""
        if self._training is not None:
            # left_s is an upper bound: early stopping may end training sooner.
            return f"training the first model: {self._progress_fields(time.monotonic())}"
        return (f"gathering samples for the first model: {len(self.gathered)}/"
                f"{self.settings.warmup_size}")

    def _finish(self, consumer: Any, decoding: Decoding) -> None:
        try:
            detector = self._training.result()
        except ModelError as exc:
            self.metrics.retrains.labels(outcome="failed").inc()
            raise InfrastructureError(f"cold-start training failed: {exc}") from exc
        finally:
            self._training = None
            consumer.resume(*consumer.paused())
        threshold = calibrated_threshold(self.settings.threshold, detector)
        metadata = {"origin": "cold_start", "samples": self._trained_on,
                    "input_kind": self.settings.input.kind}
        if (profiles := decoding.key_profiles()) is not None:
            metadata[KEY_PROFILES] = profiles_to_json(profiles)
        version = save_checkpoint(self.settings.checkpoints.directory, detector,
                                  threshold_state=threshold.state(), metadata=metadata,
                                  keep=self.settings.checkpoints.keep)
        scorer = Scorer(detector, self.settings.device, self.settings.batch.max_size)
        self.slot.swap(LiveModel(scorer, threshold, version))
        decoding.fix_shape(scorer.input_shape)
        self.metrics.set_model(scorer.kind, version)
        self.metrics.train_loss.set(detector.train_loss)
        self.metrics.validation_loss.set(detector.val_loss)
        log.info("event=model_ready origin=cold_start version=%d seconds=%.1f train_loss=%.4f "
                 "val_loss=%.4f threshold=%s", version, time.monotonic() - self._started,
                 detector.train_loss, detector.val_loss, threshold.value)

    def close(self) -> None:
        self._stop.set()
        if self._executor is not None:
            self._executor.shutdown(wait=True, cancel_futures=True)
