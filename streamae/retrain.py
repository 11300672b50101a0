"""Keeping the detector current: gate, buffer, retrain in the background, judge, swap, roll back.

Sensors drift, so the model must keep learning; but a model that learns from what it should
flag stops flagging it. The :class:`Retrainer` is the daemon's scored hook (it runs on the
loop thread and never blocks it):

* **gate**: windows scored below ``gate * threshold`` enter the replay buffer; flagged
  windows that the gate kept out go to the buffer's small flagged store instead. Every
  window scored normal also enters a calibration ring (for the threshold only).
* **when**: every ``every_windows`` buffered windows, or every ``every_seconds`` once the
  buffer holds ``min_windows``; never while a retrain or a rollback watch is running.
* **job** (one background thread, its own CUDA stream on a GPU): snapshot the buffer, hold
  out its newest slice, train a challenger, compare it with the champion (:func:`judge`),
  calibrate its threshold on the calibration ring, checkpoint, publish, ``slot.swap``.
* **rollback**: after a promotion the alarm rate of the next ``rollback_window`` scores is
  compared with the rate before it; an explosion swaps the old model back in (as a new
  version, so versions only grow and a restart resumes the model that is live).

The retrainer is the only writer of the slot in a process that trains (one owner).
"""

from __future__ import annotations

import logging
import math
import multiprocessing
import os
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, ProcessPoolExecutor, ThreadPoolExecutor
from contextlib import nullcontext
from dataclasses import dataclass

import numpy as np
import torch

from streamae.buffer import ReplayBuffer
from streamae.checkpoints import checkpoint_from_bytes, checkpoint_to_bytes, save_checkpoint
from streamae.live import LiveModel, ModelSlot, calibrated_threshold, train_detector
from streamae.metrics import Metrics
from streamae.scoring import Scorer, resolve_device
from streamae.settings import CheckpointSettings, ModelSettings, RetrainSettings, ThresholdSettings
from streamae.thresholds import AlarmRate, Threshold
from streamae.training import Detector

log = logging.getLogger(__name__)

Publish = Callable[[bytes, int], None]  # (checkpoint blob, version)
Train = Callable[[np.ndarray, threading.Event], Detector]


@dataclass(frozen=True)
class Verdict:
    """Why a challenger was promoted or rejected, with the numbers behind it."""

    promote: bool
    reason: str
    champion_error: float
    challenger_error: float
    champion_recall: float | None = None  # share of flagged windows each model flags
    challenger_recall: float | None = None


def split_holdout(data: np.ndarray, fraction: float) -> tuple[np.ndarray, np.ndarray]:
    """(train, holdout): the holdout is the newest slice, so overlapping windows do not
    leak into it and the comparison is on the most recent behaviour."""
    n_hold = min(len(data) - 4, max(1, round(len(data) * fraction)))
    return data[: len(data) - n_hold], data[len(data) - n_hold :]


def common_scale(data: np.ndarray) -> np.ndarray:
    """Per-element spread of the training data: one yardstick for both models, whose own
    scalers and error statistics differ and so cannot be compared directly."""
    std = np.asarray(data, dtype=np.float64).std(axis=0)
    return np.maximum(std, 1e-3 * max(1.0, float(np.abs(std).mean())))


def reconstruction_error(scorer: Scorer, data: np.ndarray, scale: np.ndarray) -> float:
    """Mean squared reconstruction error in ``scale`` units (original units, rescaled)."""
    recon = scorer.score(data).reconstructed
    return float(np.mean(((np.asarray(data) - recon) / scale) ** 2))


def flag_share(scorer: Scorer, threshold_value: float | None, data: np.ndarray) -> float:
    """Share of ``data`` that scores above ``threshold_value``."""
    if threshold_value is None or len(data) == 0:
        return 0.0
    return float(np.mean(scorer.score(data).scores > threshold_value))


def judge(champion: Scorer, champion_threshold: float | None, challenger: Scorer,
          challenger_threshold: float | None, holdout: np.ndarray, flagged: np.ndarray,
          scale: np.ndarray, settings: RetrainSettings) -> Verdict:
    """Champion/challenger: no worse on the holdout (within tolerance), and still flagging
    what was flagged recently (when there is enough of it to judge)."""
    old = reconstruction_error(champion, holdout, scale)
    new = reconstruction_error(challenger, holdout, scale)
    if not math.isfinite(new):
        return Verdict(False, "challenger_not_finite", old, new)
    if new > old * (1.0 + settings.tolerance):
        return Verdict(False, "worse_on_holdout", old, new)
    if len(flagged) < settings.flagged_min_windows:
        return Verdict(True, "better_on_holdout", old, new)
    old_recall = flag_share(champion, champion_threshold, flagged)
    new_recall = flag_share(challenger, challenger_threshold, flagged)
    if new_recall < settings.flagged_recall * old_recall:
        return Verdict(False, "misses_flagged", old, new, old_recall, new_recall)
    return Verdict(True, "better_on_holdout", old, new, old_recall, new_recall)


def calibrate(settings: ThresholdSettings, detector: Detector, scores: np.ndarray) -> Threshold:
    """The challenger's threshold, fitted on its normalised scores of recent normal traffic
    (plus its validation split): it then flags the same share of that traffic the champion
    did, so the alert rate does not jump at the swap. A ``limit`` is fitted on the validation
    split alone: recent traffic already sits below the champion's limit, and a margin on
    top of it would raise the limit at every retrain."""
    return calibrated_threshold(settings, detector,
                                None if settings.method == "limit" else scores)


def gate_limit(threshold_value: float | None, gate: float) -> float | None:
    """Scores below this enter the buffer; None while the threshold is not warm."""
    if threshold_value is None:
        return None
    return threshold_value * gate if threshold_value > 0 else threshold_value


# -- training in a worker process: its own GIL and torch threads ---------------------------
_worker_stop: threading.Event | None = None
WORKER_NICENESS = 10  # below the scoring loop's priority; training may take longer


def _init_worker(stop: threading.Event, threads: int) -> None:
    """Nice the worker: on a busy node the scheduler then favours the scoring loop."""
    global _worker_stop
    _worker_stop = stop
    torch.set_num_threads(threads)
    os.nice(WORKER_NICENESS)


def _train_in_worker(data: np.ndarray, model: ModelSettings, device: str,
                     normalisation: str) -> bytes:
    """Runs in the worker; the detector comes back as a checkpoint blob (no pickled code)."""
    detector = train_detector(data, model, device, None, _worker_stop, normalisation)
    return checkpoint_to_bytes(detector, {}, {}, 0)


class ProcessTrainer:
    """``train_detector`` in a long-lived spawned process. On CPU a training thread would
    share the GIL with the scoring loop and slow it several-fold; a process does not."""

    def __init__(self, model: ModelSettings, device: str, threads: int,
                 normalisation: str = "robust_z") -> None:
        self.model, self.device, self.normalisation = model, device, normalisation
        context = multiprocessing.get_context("spawn")
        self.stop = context.Event()
        self._pool = ProcessPoolExecutor(1, mp_context=context, initializer=_init_worker,
                                         initargs=(self.stop, threads))

    def warm(self) -> None:
        """Start the worker and pay torch's first-use costs now, not in the first retrain."""
        self._pool.submit(_train_in_worker, np.zeros((8, 2), np.float32),
                          self.model.model_copy(update={"epochs": 1}), "cpu",
                          self.normalisation).result()

    def __call__(self, data: np.ndarray, stop: threading.Event) -> Detector:
        future = self._pool.submit(_train_in_worker, data, self.model, self.device,
                                   self.normalisation)
        while not future.done():
            if stop.wait(0.2):
                self.stop.set()
        return checkpoint_from_bytes(future.result(), self.device).detector

    def close(self) -> None:
        self.stop.set()
        self._pool.shutdown(wait=True, cancel_futures=True)


@dataclass
class _Watch:
    """A promotion under observation: rates before and after it."""

    version: int
    previous: LiveModel
    before: float
    after: AlarmRate


class Retrainer:
    """The scored hook that keeps the model current (see the module docstring)."""

    def __init__(self, settings: RetrainSettings, model: ModelSettings,
                 threshold: ThresholdSettings, checkpoints: CheckpointSettings, device: str,
                 slot: ModelSlot, metrics: Metrics, publish: Publish | None = None, *,
                 max_batch: int = 256, train: Train | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.settings, self.model_settings = settings, model
        self.threshold_settings, self.checkpoints = threshold, checkpoints
        self.device, self.slot, self.metrics = device, slot, metrics
        self.publish, self.max_batch, self.clock = publish, max_batch, clock
        self.buffer = ReplayBuffer(settings.buffer_max_windows, settings.buffer_max_bytes,
                                   settings.flagged_windows)
        self.recent = ReplayBuffer(settings.calibration_windows,
                                   max(1024, settings.buffer_max_bytes // 4), 0)
        self.rate = AlarmRate(window_n=settings.rollback_window)
        self.stop = threading.Event()
        self._executor = ThreadPoolExecutor(1, thread_name_prefix="retrainer")
        self._job: Future | None = None
        self._watch: _Watch | None = None
        self._mark = 0  # buffer.added_total when the last retrain started
        self._last = clock()
        self._published: set[int] = set()
        self.outcomes: list[str] = []  # every finished job's outcome, oldest first
        self._process: ProcessTrainer | None = None
        if train is None and settings.enabled and _executor(settings, device) == "process":
            self._process = ProcessTrainer(model, device, settings.train_threads,
                                           threshold.normalisation)
            self._job = self._executor.submit(self._process.warm)  # busy until warm
        self.train = train or self._process or self._train_default

    # -- the loop thread --------------------------------------------------------------
    def observe(self, live: LiveModel, values: np.ndarray, scores: np.ndarray,
                flags: np.ndarray) -> None:
        """Scored hook: gate the batch into the buffers, watch a promotion, start a job."""
        self._announce(live)
        if not self.settings.enabled:
            return
        flags = np.asarray(flags, dtype=bool)
        watching = self._watch is not None and self._watching(live, flags)
        if not watching:
            self.rate.observe(flags)
        limit = gate_limit(live.threshold.value, self.settings.gate)
        if limit is None:
            return
        admitted = np.asarray(scores) < limit
        self._add(self.buffer.add, values[admitted])
        self._add(self.buffer.add_flagged, values[flags & ~admitted])
        self._add(self.recent.add, values[~flags])
        self.metrics.buffer_windows.set(len(self.buffer))
        self.metrics.buffer_bytes.set(self.buffer.nbytes)
        if not watching and self._due():
            self._start(live)

    @property
    def busy(self) -> bool:
        """True while a job (retrain, rollback or publish) is queued or running."""
        return self._job is not None and not self._job.done()

    def wait(self, timeout_s: float | None = None) -> None:
        """Block until the job in flight is done (benchmarks that replay a slow stream fast)."""
        if self._job is not None:
            self._job.exception(timeout=timeout_s)

    def close(self) -> None:
        """Stop a training in flight at its next batch and wait for the worker."""
        self.stop.set()
        self._executor.shutdown(wait=True, cancel_futures=True)
        if self._process is not None:
            self._process.close()

    def _add(self, add: Callable[[np.ndarray], None], items: np.ndarray) -> None:
        if len(items) == 0:
            return
        try:
            add(items)
        except ValueError:  # a new model with another input shape: start over
            self.buffer.clear()
            self.recent.clear()
            add(items)

    def _announce(self, live: LiveModel) -> None:
        """Publish a version this process did not build here (cold start, resumed)."""
        if self.publish is None or live.version in self._published:
            return
        self._published.add(live.version)
        state = live.threshold.state()  # read on the loop thread, which owns it
        self._executor.submit(self._publish_blob, live.detector, state,
                              {"origin": "announced"}, live.version)

    def _due(self) -> bool:
        if self.busy:
            return False
        fresh = self.buffer.added_total - self._mark
        if fresh >= self.settings.every_windows and len(self.buffer) >= self.settings.min_windows:
            return True
        return (self.clock() - self._last >= self.settings.every_seconds
                and len(self.buffer) >= self.settings.min_windows)

    def _start(self, live: LiveModel) -> None:
        self._mark, self._last = self.buffer.added_total, self.clock()
        data, flagged = self.buffer.snapshot(), self.buffer.flagged_snapshot()
        recent = self.recent.snapshot()
        log.info("event=retrain_started windows=%d flagged=%d calibration=%d champion=%d",
                 len(data), len(flagged), len(recent), live.version)
        self._job = self._executor.submit(self._job_guarded, live, live.threshold.value, data,
                                          flagged, recent)

    def _watching(self, live: LiveModel, flags: np.ndarray) -> bool:
        """Feed the post-promotion rate; roll back when it explodes. True while watching."""
        watch = self._watch
        assert watch is not None
        if live.version != watch.version:
            return live.version < watch.version  # batches of the old model still in flight
        watch.after.observe(flags)
        if watch.after.count < self.settings.rollback_window:
            return True
        floor = max(watch.before, 1.0 - self.threshold_settings.quantile)
        self._watch = None
        if watch.after.rate > self.settings.rollback_alert_ratio * floor:
            log.warning("event=rollback version=%d rate_after=%.4f rate_before=%.4f",
                        watch.version, watch.after.rate, watch.before)
            self._job = self._executor.submit(self._rollback, watch.previous, watch.version)
        else:
            log.info("event=promotion_confirmed version=%d rate_after=%.4f rate_before=%.4f",
                     watch.version, watch.after.rate, watch.before)
        self.rate.reset()
        return False

    # -- the worker thread ------------------------------------------------------------
    def _job_guarded(self, champion: LiveModel, champion_threshold: float | None,
                     data: np.ndarray, flagged: np.ndarray, recent: np.ndarray) -> str:
        """Run one retrain; any failure keeps the old model and is counted."""
        started = time.monotonic()
        try:
            with self._stream():
                outcome = self._retrain(champion, champion_threshold, data, flagged, recent)
        except Exception as exc:  # every failure keeps the champion
            outcome = "failed"
            log.exception("event=retrain_failed champion=%d error=%r", champion.version, exc)
        seconds = time.monotonic() - started
        self.metrics.retrains.labels(outcome=outcome).inc()
        self.metrics.retrain_seconds.observe(seconds)
        self.outcomes.append(outcome)
        log.info("event=retrain_finished outcome=%s seconds=%.2f", outcome, seconds)
        return outcome

    def _stream(self):  # a context manager
        """Train on a CUDA stream of its own, so scoring kernels are not queued behind it."""
        device = resolve_device(self.device)
        if device.type != "cuda":
            return nullcontext()
        return torch.cuda.stream(torch.cuda.Stream(device))

    def _retrain(self, champion: LiveModel, champion_threshold: float | None,
                 data: np.ndarray, flagged: np.ndarray, recent: np.ndarray) -> str:
        train, holdout = split_holdout(data, self.settings.holdout_fraction)
        detector = self.train(train, self.stop)
        if self.stop.is_set():
            return "failed"
        self.metrics.train_loss.set(detector.train_loss)
        self.metrics.validation_loss.set(detector.val_loss)
        if not (math.isfinite(detector.train_loss) and math.isfinite(detector.val_loss)):
            raise ValueError(f"challenger loss is not finite: {detector.val_loss}")
        challenger = Scorer(detector, self.device, self.max_batch)
        scores = challenger.score(recent).scores if len(recent) else np.zeros(0, np.float32)
        threshold = calibrate(self.threshold_settings, detector, scores)
        own = Scorer(champion.detector, self.device, self.max_batch)  # a copy: no sharing
        verdict = judge(own, champion_threshold, challenger, threshold.value, holdout, flagged,
                        common_scale(train), self.settings)
        log.info("event=challenger_judged promote=%s reason=%s champion_error=%.5f "
                 "challenger_error=%.5f champion_recall=%s challenger_recall=%s",
                 verdict.promote, verdict.reason, verdict.champion_error,
                 verdict.challenger_error, verdict.champion_recall, verdict.challenger_recall)
        if not verdict.promote:
            return "rejected"
        metadata = {"origin": "retrain", "windows": len(train), "holdout": len(holdout),
                    "champion": champion.version, "reason": verdict.reason,
                    "champion_error": verdict.champion_error,
                    "challenger_error": verdict.challenger_error}
        self._install(challenger, threshold, metadata, watch=champion)
        return "promoted"

    def _install(self, scorer: Scorer, threshold: Threshold, metadata: dict,
                 watch: LiveModel | None = None) -> int:
        """Checkpoint (a new version), publish, swap: the order a restart can rely on.
        With ``watch`` (the champion) the next scores are judged for a rollback to it."""
        detector, state = scorer.detector, threshold.state()
        version = save_checkpoint(self.checkpoints.directory, detector, threshold_state=state,
                                  metadata=metadata, keep=self.checkpoints.keep)
        self._published.add(version)
        self._publish_blob(detector, state, metadata, version)
        if scorer.device.type == "cuda":  # weights were copied on the training stream
            torch.cuda.current_stream(scorer.device).synchronize()
        if watch is not None:
            self._watch = _Watch(version, watch, self.rate.rate,
                                 AlarmRate(window_n=self.settings.rollback_window))
        self.slot.swap(LiveModel(scorer, threshold, version))
        self.metrics.set_model(scorer.kind, version)
        log.info("event=model_swapped origin=%s version=%d threshold=%s", metadata["origin"],
                 version, threshold.value)
        return version

    def _rollback(self, previous: LiveModel, bad_version: int) -> str:
        """Put the previous model back, as a new version (versions only grow)."""
        try:
            self._install(previous.scorer, previous.threshold,
                          {"origin": "rollback", "replaces": bad_version,
                           "restores": previous.version})
        except Exception as exc:  # keep serving whatever is live
            log.exception("event=rollback_failed version=%d error=%r", bad_version, exc)
            return "failed"
        self.metrics.rollbacks.inc()
        return "rolled_back"

    def _publish_blob(self, detector: Detector, state: dict, metadata: dict,
                      version: int) -> None:
        if self.publish is None:
            return
        try:
            self.publish(checkpoint_to_bytes(detector, state, metadata, version), version)
        except Exception as exc:  # local serving goes on; replicas catch up
            log.exception("event=model_publish_failed version=%d error=%r", version, exc)

    def _train_default(self, data: np.ndarray, stop: threading.Event) -> Detector:
        return train_detector(data, self.model_settings, self.device, None, stop,
                              self.threshold_settings.normalisation)


def _executor(settings: RetrainSettings, device: str) -> str:
    """"auto": a thread on CUDA (its own stream), a process on CPU (its own GIL)."""
    if settings.executor != "auto":
        return settings.executor
    return "thread" if resolve_device(device).type == "cuda" else "process"
