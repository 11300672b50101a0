"""Keeping the detector current: gate, buffer, retrain in the background, judge, swap, roll back.

Sensors drift, so the model must keep learning; but a model that learns from what it should
flag stops flagging it. The :class:`Retrainer` is the daemon's scored hook (it runs on the
loop thread and never blocks it):

* **gate** (``gate``): only readings well inside normal (calibrated score below
  ``gate_score``) enter the training buffer; readings flagged well above the threshold
  are confirmed anomalies, kept for the reference set.
* **when**: every ``every_windows`` scored windows, or every ``every_seconds``, once the
  buffer holds ``min_windows``; never while a retrain or a rollback watch is running.
* **job** (one background thread; training in a child process on CPU, on a CUDA stream
  of its own on a GPU): train a challenger on the buffer, judge it by the absolute rule of
  ``reference`` (detect the reference set as well as the anchor model, keep the target
  false-alarm rate), checkpoint, publish, ``slot.swap``.
* **rollback both ways**: after a promotion the alarm rate of the next ``rollback_window``
  scores is watched. An explosion rolls back when the previous model, on the same
  readings, would not have flagged nearly as many (a fault that began meanwhile raises
  both); a collapse when the anomalies the previous model confirmed go unflagged.
* **regimes**: after a drift (with ``follow_drift``) has settled, or when an operator
  accepts recent data, a retrain on the latest readings bypasses the gate and the
  reference check, and its model becomes the new anchor.

The retrainer is the only writer of the slot in a process that trains (one owner).
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import nullcontext
from dataclasses import dataclass

import numpy as np

from streamae.checkpoints import checkpoint_to_bytes, load_version, save_checkpoint
from streamae.drift import stable
from streamae.exceptions import CheckpointError
from streamae.gate import Alarms, Gate
from streamae.live import (
    KEY_PROFILES,
    LiveModel,
    ModelSlot,
    calibrated_threshold,
    live_from_checkpoint,
    train_detector,
)
from streamae.metrics import Metrics
from streamae.reference import (
    Verdict,
    chance_share,
    detection_rate,
    far_limit,
    judge,
    parts,
    score_agreement,
    synthetic,
    target_rate,
)
from streamae.rollback import Check, Watch, change, should_roll_back
from streamae.scoring import Detector, Scorer, recalibrate, resolve_device
from streamae.settings import CheckpointSettings, ModelSettings, RetrainSettings, ThresholdSettings
from streamae.thresholds import AlarmRate, Threshold
from streamae.trainer_process import ProcessTrainer, runs_in_process
from streamae.windows import Profile, profiles_to_json

log = logging.getLogger(__name__)

Publish = Callable[[bytes, int], None]  # (checkpoint blob, version)
Train = Callable[[np.ndarray, threading.Event], Detector]


def split_holdout(data: np.ndarray, fraction: float) -> tuple[np.ndarray, np.ndarray]:
    """(train, holdout): the holdout is the newest slice, so overlapping windows do not
    leak into it and the checks are on the most recent behaviour."""
    n_hold = min(len(data) - 4, max(1, round(len(data) * fraction)))
    return data[: len(data) - n_hold], data[len(data) - n_hold :]


def calibrate(settings: ThresholdSettings, detector: Detector, scores: np.ndarray) -> Threshold:
    """The challenger's threshold. On the calibrated scale a false-alarm-rate or static
    threshold is the same number for every model; a rolling quantile or SPOT is fitted on
    the challenger's scores of recent normal traffic too; a ``limit`` on its validation
    split alone (recent traffic sits below the champion's limit, a margin on top of it
    would raise the limit at every retrain)."""
    return calibrated_threshold(settings, detector,
                                None if settings.method == "limit" else scores)


@dataclass(frozen=True)
class _Anchor:
    """The model the reference set is measured against, and its threshold then."""

    live: LiveModel
    threshold: float | None


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
        self.gate = Gate(settings, self._flushed)
        self.buffer, self.recent, self.latest = (self.gate.buffer, self.gate.recent,
                                                 self.gate.latest)
        self.rate = AlarmRate(window_n=settings.rollback_window)
        self.stop = threading.Event()
        self._executor = ThreadPoolExecutor(1, thread_name_prefix="retrainer")
        self._job: Future | None = None
        self._watch: Watch | None = None
        self._anchor: _Anchor | None = None
        self._anchor_scorer: Scorer | None = None  # the job thread's copy of the anchor
        self._regime: str | None = None  # "drift" or "operator" while a regime retrain waits
        self._regime_checked = 0
        self._mark = 0  # gate.seen (windows scored) when the last retrain started
        self._last = clock()
        self._published: set[int] = set()
        self.outcomes: list[str] = []  # every finished job's outcome, oldest first
        self.verdicts: list[Verdict] = []  # every judged challenger, oldest first
        self.on_reanchor: list[Callable[[], None]] = []  # e.g. the drift monitor's reset
        # Window input: the daemon's key profiles, saved with every version this process
        # builds (``streamae.windows``). Read on the loop thread when a job starts.
        self.key_profiles: Callable[[], dict[str, Profile] | None] = lambda: None
        self._profiles_json: dict | None = None  # None: windows are not profiled
        self._process: ProcessTrainer | None = None
        if train is None and settings.enabled and runs_in_process(settings.executor, device):
            self._process = ProcessTrainer(model, device, settings.train_threads,
                                           threshold.normalisation, settings.start_method,
                                           settings.stop_grace_s)
        self.train = train or self._process or self._train_default

    # -- the loop thread --------------------------------------------------------------
    def observe(self, live: LiveModel, values: np.ndarray, scores: np.ndarray,
                flags: np.ndarray) -> None:
        """Scored hook: gate the batch into the buffers, watch a promotion, start a job."""
        self._announce(live)
        if not self.settings.enabled:
            return
        if self._anchor is None:
            self._anchor = self._restore_anchor(live) or _Anchor(live, live.threshold.value)
        elif self._anchor.threshold is None and self._anchor.live is live:
            self._anchor = _Anchor(live, live.threshold.value)  # a cold threshold warms
        flags = np.asarray(flags, dtype=bool)
        watching = self._watch is not None and self._watching(live, values, flags)
        if not self._gate(live, values, np.asarray(scores), flags) or watching or self.busy:
            return
        if self._regime is not None:
            self._maybe_start_regime(live)
        elif self._due():
            self._start(live)

    def request_regime(self, reason: str) -> None:
        """Retrain on the latest readings, bypassing the gate: at once for an operator
        (``streamae retrain --accept-recent``), once stable after a drift. Any thread."""
        self._regime = reason
        log.info("event=regime_retrain_requested reason=%s", reason)

    def on_drift(self, event: dict) -> None:
        """A drift monitor's listener: follow the drift only when the operator allows it."""
        if self.settings.follow_drift:
            self.request_regime("drift")

    @property
    def busy(self) -> bool:
        """True while a job (retrain, rollback, check or publish) is queued or running."""
        return self._job is not None and not self._job.done()

    def wait(self, timeout_s: float | None = None) -> None:
        """Block until the job in flight is done (benchmarks that replay a slow stream fast)."""
        if self._job is not None:
            self._job.exception(timeout=timeout_s)

    def close(self) -> None:
        """Stop a training in flight (its child process within ``stop_grace_s``) and wait."""
        self.stop.set()
        self._executor.shutdown(wait=True, cancel_futures=True)
        if self._process is not None:
            self._process.close()

    def _gate(self, live: LiveModel, values: np.ndarray, scores: np.ndarray,
              flags: np.ndarray) -> bool:
        """Route the batch into the rings; False while the threshold is cold."""
        return self.gate.route(values, scores, flags, live.threshold.value)

    def _flushed(self, flags: np.ndarray) -> None:
        """After the gate routed its pending batches: the alarm rate outside a watch (the
        rate 'before' a promotion), the buffer metrics."""
        if self._watch is None:
            self.rate.observe(flags)
        self.metrics.buffer_windows.set(len(self.buffer))
        self.metrics.buffer_bytes.set(self.buffer.nbytes)

    def _announce(self, live: LiveModel) -> None:
        """Publish a version this process did not build here (cold start, resumed)."""
        if self.publish is None or live.version in self._published:
            return
        self._published.add(live.version)
        state = live.threshold.state()  # read on the loop thread, which owns it
        self._snapshot_profiles()
        self._executor.submit(self._publish_blob, live.detector, state,
                              self._with_profiles({"origin": "announced"}), live.version)

    def _snapshot_profiles(self) -> None:
        """On the loop thread, which owns the profiles: what the next versions carry."""
        profiles = self.key_profiles()
        self._profiles_json = None if profiles is None else profiles_to_json(profiles)

    def _with_profiles(self, metadata: dict) -> dict:
        if self._profiles_json is None:
            return metadata
        return {**metadata, KEY_PROFILES: self._profiles_json}

    def _due(self) -> bool:
        """Every ``every_windows`` scored windows (so a starved buffer, all of it flagged,
        still retrains and the reference check keeps holding the line), or every
        ``every_seconds``; either once ``min_windows`` are buffered."""
        fresh = self.gate.seen - self._mark
        if (fresh < self.settings.every_windows
                and self.clock() - self._last < self.settings.every_seconds):
            return False
        self.gate.flush()
        return len(self.buffer) >= self.settings.min_windows

    def _start(self, live: LiveModel) -> None:
        self.gate.flush()
        self._snapshot_profiles()
        self._mark, self._last = self.gate.seen, self.clock()
        data, confirmed = self.buffer.snapshot(), self.buffer.flagged_snapshot()
        recent, alarms = self.recent.snapshot(), self.gate.take_alarms()
        log.info("event=retrain_started windows=%d confirmed=%d alarms=%d scored=%d "
                 "calibration=%d champion=%d anchor=%d", len(data), len(confirmed),
                 alarms.flagged, alarms.scored, len(recent), live.version,
                 self._anchor.live.version if self._anchor else live.version)
        self._job = self._executor.submit(self._job_guarded, self._retrain, live, data,
                                          confirmed, recent, alarms, self._anchor)

    def _maybe_start_regime(self, live: LiveModel) -> None:
        """An operator's request at once; a drift's once the latest readings are stable
        (checked every quarter regime, so the loop pays for it rarely)."""
        size = self.settings.regime_windows
        if self._regime == "drift":
            if self.gate.seen - self._regime_checked < size // 4:
                return
            self._regime_checked = self.gate.seen
            self.gate.flush()
            if not stable(self.latest.snapshot(), size, self.settings.regime_stable):
                return
        self.gate.flush()
        data = self.latest.snapshot()
        if len(data) < self.settings.min_windows:
            return
        reason, self._regime = self._regime, None
        self.gate.take_alarms()  # the old regime's alarms judge no later challenger
        self._mark, self._last = self.gate.seen, self.clock()
        self._snapshot_profiles()
        log.info("event=retrain_started kind=regime reason=%s windows=%d champion=%d", reason,
                 len(data), live.version)
        self._job = self._executor.submit(self._job_guarded, self._retrain_regime, live, data,
                                          reason)

    def _watching(self, live: LiveModel, values: np.ndarray, flags: np.ndarray) -> bool:
        """Feed the post-promotion rate; judge it when full. True while watching."""
        watch = self._watch
        assert watch is not None
        if live.version != watch.version:
            return live.version < watch.version  # batches of the old model still in flight
        watch.after.observe(flags)
        watch.values.append(np.asarray(values, dtype=np.float32).copy())
        if watch.after.count < self.settings.rollback_window:
            return True
        self._watch = None
        self._judge_watch(watch, live)
        self.rate.reset()
        return False

    def _judge_watch(self, watch: Watch, live: LiveModel) -> None:
        """An alarm rate that exploded or collapsed is checked in the background against
        the previous model on the same readings; otherwise the promotion is confirmed."""
        kind = change(watch, self._target(live.threshold.value),
                      self.settings.rollback_alert_ratio)
        log.info("event=%s version=%d rate_after=%.4f rate_before=%.4f",
                 f"alarm_rate_{kind}" if kind else "promotion_confirmed", watch.version,
                 watch.after.rate, watch.before)
        if kind is not None:
            self._job = self._executor.submit(self._check_watch, watch, kind, live,
                                              self._anchor)

    def _target(self, threshold: float | None) -> float:
        t = self.threshold_settings
        return target_rate(t.method, t.false_alarm_rate, t.quantile, threshold)

    # -- the worker thread ------------------------------------------------------------
    def _job_guarded(self, job: Callable[..., str], champion: LiveModel, *args: object) -> str:
        """Run one retrain; any failure keeps the old model and is counted."""
        started = time.monotonic()
        try:
            with self._stream():
                outcome = job(champion, *args)
        except Exception as exc:  # every failure keeps the champion
            outcome = "failed"
            if self.stop.is_set():  # closing: the training was stopped on purpose
                log.info("event=retrain_stopped champion=%d", champion.version)
            else:
                log.exception("event=retrain_failed champion=%d error=%r", champion.version,
                              exc)
        seconds = time.monotonic() - started
        self.metrics.retrains.labels(outcome=outcome).inc()
        self.metrics.retrain_seconds.observe(seconds)
        self.outcomes.append(outcome)
        log.info("event=retrain_finished outcome=%s seconds=%.2f", outcome, seconds)
        return outcome

    def _stream(self):  # a context manager
        """Train on a CUDA stream of its own, so scoring kernels are not queued behind it."""
        device = resolve_device(self.device)
        if not device.startswith("cuda"):
            return nullcontext()
        import torch  # a GPU's process has torch already: it scores with it

        return torch.cuda.stream(torch.cuda.Stream(device))

    def _fit(self, data: np.ndarray) -> Detector:
        detector = self.train(data, self.stop)
        if self.stop.is_set():
            raise RuntimeError("stopped")
        self.metrics.train_loss.set(detector.train_loss)
        self.metrics.validation_loss.set(detector.val_loss)
        if not (math.isfinite(detector.train_loss) and math.isfinite(detector.val_loss)):
            raise ValueError(f"challenger loss is not finite: {detector.val_loss}")
        return detector

    def _retrain(self, champion: LiveModel, data: np.ndarray, confirmed: np.ndarray,
                 recent: np.ndarray, alarms: Alarms, anchor: _Anchor) -> str:
        train, holdout = split_holdout(data, self.settings.holdout_fraction)
        detector = self._fit(train)
        normal = recent[-len(holdout):] if len(recent) else holdout  # not trained on
        if len(normal) >= 2 * self.settings.min_windows:
            # Half of it calibrates the score (the gated buffer lacks normal's tail), the
            # other half judges the false-alarm rate.
            detector = recalibrate(Scorer(detector, self.device, self.max_batch),
                                   normal[0::2], self.threshold_settings.normalisation)
            normal = normal[1::2]
        challenger = Scorer(detector, self.device, self.max_batch)
        scores = challenger.score(recent).scores if len(recent) else np.zeros(0, np.float32)
        threshold = calibrate(self.threshold_settings, challenger.detector, scores)
        verdict = self._judge(challenger, threshold, anchor, confirmed, alarms, data, normal)
        self.verdicts.append(verdict)
        log.info("event=challenger_judged promote=%s reason=%s part=%s recall=%.3f "
                 "anchor_recall=%.3f far=%.5f far_limit=%.5f score_agreement=%.3f "
                 "reference=%d confirmed=%d champion=%d anchor=%d", verdict.promote,
                 verdict.reason, verdict.part, verdict.recall, verdict.anchor_recall,
                 verdict.false_alarm_rate, verdict.far_limit, verdict.agreement,
                 verdict.reference, verdict.confirmed, champion.version,
                 anchor.live.version)
        if not verdict.promote:
            return "rejected"
        metadata = {"origin": "retrain", "windows": len(train), "holdout": len(holdout),
                    "champion": champion.version, "anchor": anchor.live.version,
                    "reason": verdict.reason, "recall": verdict.recall,
                    "anchor_recall": verdict.anchor_recall,
                    "false_alarm_rate": verdict.false_alarm_rate}
        self._install(challenger, threshold, metadata, watch=champion)
        return "promoted"

    def _judge(self, challenger: Scorer, threshold: Threshold, anchor: _Anchor,
               confirmed: np.ndarray, alarms: Alarms, data: np.ndarray,
               normal: np.ndarray) -> Verdict:
        """The absolute rule of ``reference`` on this challenger."""
        fake = synthetic(data[-4 * self.settings.reference_synthetic:],
                         self.settings.reference_synthetic)
        reference = parts(confirmed, fake)
        chance = chance_share(alarms.flagged, alarms.scored, self._target(threshold.value))
        if chance is not None and len(alarms.values):
            reference["alarms"] = alarms.values
        keeper = self._anchor_copy(anchor)
        scores = {name: (challenger.score(items).scores, keeper.score(items).scores)
                  for name, items in reference.items()}
        recalls = {name: (detection_rate(mine, threshold.value),
                          detection_rate(theirs, anchor.threshold)
                          - (chance if name == "alarms" else 0.0))
                   for name, (mine, theirs) in scores.items()}
        agreement = score_agreement(
            np.concatenate([mine for mine, _ in scores.values()] or [np.zeros(0)]),
            np.concatenate([theirs for _, theirs in scores.values()] or [np.zeros(0)]),
            self.settings.score_ratio)
        far = detection_rate(challenger.score(normal).scores, threshold.value)
        limit = far_limit(self._target(threshold.value), len(normal), self.settings.far_ratio)
        return judge(recalls, far, limit, {k: len(v) for k, v in reference.items()},
                     self.settings.tolerance, agreement, self.settings.score_agreement)

    def _anchor_copy(self, anchor: _Anchor) -> Scorer:
        """The job thread's own copy of the anchor's model (the loop scores with another)."""
        if self._anchor_scorer is None or self._anchor_scorer.detector is not anchor.live.detector:
            self._anchor_scorer = Scorer(anchor.live.detector, self.device, self.max_batch)
        return self._anchor_scorer

    def _retrain_regime(self, champion: LiveModel, data: np.ndarray, reason: str) -> str:
        """Learn the latest readings as normal: fit, drop what the fit itself scores
        outside ``gate_score`` (the new regime's own anomalies), fit again, install, and
        make it the anchor; the old regime's buffers are dropped."""
        detector = self._fit(data)
        scores = Scorer(detector, self.device, self.max_batch).score(data).scores
        inside = data[scores < self.settings.gate_score]
        if self.settings.min_windows <= len(inside) < len(data):
            detector = self._fit(inside)
        challenger = Scorer(detector, self.device, self.max_batch)
        threshold = calibrate(self.threshold_settings, detector, challenger.score(inside).scores)
        metadata = {"origin": "regime", "reason": reason, "windows": len(inside),
                    "champion": champion.version}
        version = self._install(challenger, threshold, metadata, watch=champion, regime=True)
        self.buffer.clear()
        self._anchor = _Anchor(self.slot.live, threshold.value)
        for listener in self.on_reanchor:
            listener()
        log.info("event=reanchored version=%d reason=%s", version, reason)
        return "promoted"

    def _check_watch(self, watch: Watch, kind: str, live: LiveModel, anchor: _Anchor) -> str:
        """``rollback.should_roll_back`` in the background; a failure keeps the model."""
        try:
            check = Check(live, self._anchor_copy(anchor), anchor.threshold,
                          self._target(live.threshold.value),
                          self.settings.rollback_alert_ratio, self.settings.tolerance,
                          self.settings.confirm_margin, self.device, self.max_batch)
            if should_roll_back(watch, kind, check, self.buffer.add_flagged):
                return self._rollback(watch.previous, watch.version)
            return "confirmed"
        except Exception as exc:
            log.exception("event=watch_check_failed version=%d error=%r", watch.version, exc)
            return "failed"

    def _restore_anchor(self, live: LiveModel) -> _Anchor | None:
        """The anchor named in the live model's checkpoint (``metadata["anchor"]``), so a
        restart keeps measuring challengers against the same model instead of taking the
        current champion for it (which would let the criteria compound across restarts).
        None when the live model is its own anchor or the anchor cannot be loaded."""
        directory = self.checkpoints.directory
        try:
            anchor = load_version(directory, live.version).metadata.get("anchor")
        except CheckpointError:
            return None  # not a checkpoint of this directory: its own anchor
        if not isinstance(anchor, int) or anchor == live.version:
            return None
        try:
            restored = live_from_checkpoint(load_version(directory, anchor),
                                            self.device, self.max_batch)
        except CheckpointError as exc:
            log.warning("event=anchor_not_restored version=%d error=%r fallback=live_model",
                        live.version, str(exc))
            return None
        log.info("event=anchor_restored anchor=%d live=%d", anchor, live.version)
        return _Anchor(restored, restored.threshold.value)

    def _install(self, scorer: Scorer, threshold: Threshold, metadata: dict,
                 watch: LiveModel | None = None, regime: bool = False) -> int:
        """Checkpoint (a new version), publish, swap: the order a restart can rely on.
        With ``watch`` (the champion) the next scores are judged for a rollback to it.
        Unless ``regime`` (the new model becomes the anchor), the checkpoint names the
        anchor, which pruning keeps."""
        detector, state = scorer.detector, threshold.state()
        anchor = None if regime or self._anchor is None else self._anchor.live.version
        metadata = self._with_profiles(metadata)
        if anchor is not None:
            metadata = {**metadata, "anchor": anchor}
        version = save_checkpoint(self.checkpoints.directory, detector, threshold_state=state,
                                  metadata=metadata, keep=self.checkpoints.keep,
                                  protect=() if anchor is None else (anchor,))
        self._published.add(version)
        self._publish_blob(detector, state, metadata, version)
        if scorer.device.startswith("cuda"):  # weights were copied on the training stream
            import torch

            torch.cuda.current_stream(scorer.device).synchronize()
        if watch is not None:
            self._watch = Watch(version, watch, self.rate.rate,
                                 AlarmRate(window_n=self.settings.rollback_window), regime)
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

