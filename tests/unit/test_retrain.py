"""The retrainer without a broker: gate, trigger, champion/challenger, failures, rollback."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest
from prometheus_client import CollectorRegistry

from streamae.checkpoints import (
    checkpoint_from_bytes,
    load_latest,
    load_version,
    save_checkpoint,
)
from streamae.exceptions import ModelError
from streamae.gate import gate_limit
from streamae.live import (
    LiveModel,
    ModelSlot,
    calibrated_threshold,
    live_from_checkpoint,
    train_detector,
)
from streamae.metrics import Metrics
from streamae.retrain import Retrainer, calibrate, split_holdout
from streamae.scoring import Scorer
from streamae.settings import (
    CheckpointSettings,
    ModelSettings,
    RetrainSettings,
    ThresholdSettings,
)
from streamae.thresholds import FalseAlarmRateThreshold, StaticThreshold, classify_and_learn

MODEL = ModelSettings(hidden_sizes=[16, 8], latent_size=2, epochs=25, batch_size=16, patience=4,
                      learning_rate=5e-3)
THRESHOLD = ThresholdSettings(method="quantile", quantile=0.99, window=2_000, min_samples=50)
LOADINGS = np.random.default_rng(7).normal(size=(8, 2))


def normal(n: int, seed: int = 0, shift: float = 0.0) -> np.ndarray:
    """Correlated 8-sensor readings driven by two hidden factors."""
    rng = np.random.default_rng(seed)
    z = rng.normal(size=(n, 2))
    return (z @ LOADINGS.T + 0.05 * rng.normal(size=(n, 8)) + shift).astype(np.float32)


def anomalous(n: int, seed: int = 1) -> np.ndarray:
    """Readings that break the correlation: sensor 0 moves against its factors."""
    data = normal(n, seed)
    data[:, 0] = -data[:, 0] + 3.0
    return data


@pytest.fixture(scope="module")
def champion_detector():
    return train_detector(normal(300, seed=11), MODEL, "cpu")


def live_model(detector, version: int = 1) -> LiveModel:
    return LiveModel(Scorer(detector, "cpu", 256), calibrated_threshold(THRESHOLD, detector),
                     version)


class Harness:
    """A retrainer on a slot holding the champion, with publish calls recorded."""

    def __init__(self, tmp_path, champion_detector, train=None, clock=None, **retrain):
        # score_agreement 0: these toy models (a few epochs on 8 columns) score the
        # reference set far apart from one another; the tests here are about promotion,
        # rollback and checkpoints. The score rule: test_reference.py and
        # tests/integration/test_retrain_quality.py.
        defaults = {"every_windows": 300, "min_windows": 100, "rollback_window": 200,
                    "calibration_windows": 1_000, "executor": "thread",
                    "score_agreement": 0.0}
        self.settings = RetrainSettings(**{**defaults, **retrain})
        self.metrics = Metrics(CollectorRegistry())
        self.slot = ModelSlot()
        champion = live_model(champion_detector)
        save_checkpoint(tmp_path / "ck", champion_detector, metadata={"origin": "test"},
                        threshold_state=champion.threshold.state())  # version 1
        self.slot.swap(champion)
        self.published: list[tuple[bytes, int]] = []
        extra = {"clock": clock} if clock is not None else {}
        self.retrainer = Retrainer(self.settings, MODEL, THRESHOLD,
                                   CheckpointSettings(directory=tmp_path / "ck", keep=3),
                                   "cpu", self.slot, self.metrics,
                                   lambda blob, v: self.published.append((blob, v)),
                                   train=train, **extra)

    def feed(self, data: np.ndarray, batch: int = 50) -> None:
        """What the daemon does per batch: score, classify, update, call the hook."""
        for start in range(0, len(data), batch):
            live = self.slot.live
            values = data[start : start + batch]
            scores = live.scorer.score(values).scores
            flags, _ = classify_and_learn(live.threshold, scores)
            self.retrainer.observe(live, values, scores, flags)
            self.retrainer.wait(timeout_s=60)

    def count(self, outcome: str) -> float:
        value = self.metrics.registry.get_sample_value("streamae_retrains_total",
                                                       {"outcome": outcome})
        return value or 0.0

    def close(self) -> None:
        self.retrainer.close()


def test_split_holdout_takes_the_newest_slice():
    data = np.arange(100, dtype=np.float32).reshape(50, 2)
    train, holdout = split_holdout(data, 0.2)
    assert len(train) == 40 and len(holdout) == 10
    assert holdout[0, 0] == 80 and train[-1, 0] == 78


def test_gate_limit_is_absolute_and_never_above_the_threshold():
    assert gate_limit(None, 2.0) is None
    assert gate_limit(4.0, 2.0) == 2.0  # the same for every threshold above it
    assert gate_limit(8.0, 2.0) == 2.0
    assert gate_limit(1.5, 2.0) == 1.5


def test_gate_admits_only_readings_well_inside_normal(tmp_path, champion_detector):
    h = Harness(tmp_path, champion_detector, every_windows=10_000, gate_score=2.0,
                confirm_margin=2.0)
    live = LiveModel(h.slot.live.scorer, FalseAlarmRateThreshold(1e-4), 1)  # score 4
    values = np.concatenate([normal(40, seed=3), anomalous(20)])
    # inside normal; near the threshold (leaked under the old relative gate); barely
    # flagged; flagged far above the threshold (confirmed)
    scores = np.r_[np.full(30, 0.5), np.full(10, 3.9), np.full(10, 5.0),
                   np.full(10, 7.0)].astype(np.float32)
    flags = scores > 4.0
    h.retrainer.observe(live, values, scores, flags)
    assert len(h.retrainer.latest) == 0  # batches are routed together, later
    h.retrainer.gate.flush()
    expected = 30
    assert len(h.retrainer.buffer) == expected
    np.testing.assert_array_equal(h.retrainer.buffer.snapshot(), values[:30])
    np.testing.assert_array_equal(h.retrainer.buffer.flagged_snapshot(), values[50:])
    assert len(h.retrainer.recent) == 40  # every window scored normal, for calibration
    assert len(h.retrainer.latest) == 60  # every window, for a regime retrain
    assert h.metrics.registry.get_sample_value("streamae_buffer_windows") == expected
    alarms = h.retrainer.gate.take_alarms()  # every flagged window, confirmed or not
    np.testing.assert_array_equal(alarms.values, values[40:])
    assert (alarms.flagged, alarms.scored) == (20, 60)
    again = h.retrainer.gate.take_alarms()  # a take starts a new span
    assert (len(again.values), again.flagged, again.scored) == (0, 0, 0)
    h.close()


def test_a_high_gate_score_still_keeps_flagged_readings_out(tmp_path, champion_detector):
    h = Harness(tmp_path, champion_detector, every_windows=10_000, gate_score=1e9)
    live = h.slot.live
    values = anomalous(20)
    scores = np.full(20, live.threshold.value + 1.0, dtype=np.float32)
    h.retrainer.observe(live, values, scores, np.ones(20, dtype=bool))
    h.retrainer.gate.flush()
    assert len(h.retrainer.buffer) == 0
    h.close()


def test_retrain_promotes_checkpoints_publishes_and_swaps(tmp_path, champion_detector):
    h = Harness(tmp_path, champion_detector, every_windows=600)
    h.feed(normal(700, seed=5))
    assert h.count("promoted") >= 1
    live = h.slot.live
    assert live.version >= 2
    checkpoint = load_latest(tmp_path / "ck")
    assert checkpoint.version == live.version
    assert checkpoint.metadata["origin"] == "retrain"
    assert checkpoint.threshold_state["method"] == "quantile"
    blob, version = h.published[-1]
    assert version == live.version and checkpoint_from_bytes(blob).version == version
    assert h.published[0][1] == 1  # the champion it found live was announced too
    reg = h.metrics.registry
    assert reg.get_sample_value("streamae_model_version") == live.version
    assert reg.get_sample_value("streamae_retrain_seconds_count") >= 1
    assert reg.get_sample_value("streamae_train_loss") > 0
    h.close()


def test_every_version_carries_the_key_profiles_of_the_loop_that_started_it(
        tmp_path, champion_detector):
    """Window input: a restart or a scorer must put each key back in the units its model
    was trained in, so the announced champion and each retrained version carry them."""
    h = Harness(tmp_path, champion_detector, every_windows=600)
    profiles = {"pump-1": (np.array([3.0], np.float32), np.array([0.5], np.float32))}
    h.retrainer.key_profiles = lambda: dict(profiles)
    h.feed(normal(700, seed=5))
    assert h.count("promoted") >= 1
    saved = load_latest(tmp_path / "ck")
    assert saved.metadata["key_profiles"] == {"pump-1": [[3.0], [0.5]]}
    announced = checkpoint_from_bytes(h.published[0][0])
    assert announced.version == 1 and announced.metadata["key_profiles"] == {
        "pump-1": [[3.0], [0.5]]}
    live = live_from_checkpoint(saved, "cpu", 256)
    assert live.window_units == "key"
    np.testing.assert_array_equal(live.key_profiles["pump-1"][1], [0.5])
    before = live_from_checkpoint(load_version(tmp_path / "ck", 1), "cpu", 256)
    assert before.window_units == "reading" and before.key_profiles == {}  # no key_profiles
    h.close()


def test_recalibrated_threshold_keeps_the_alert_rate(tmp_path, champion_detector):
    h = Harness(tmp_path, champion_detector, every_windows=600)
    h.feed(normal(700, seed=5))
    assert h.slot.live.version >= 2
    fresh = normal(4_000, seed=99)
    rates = []
    for detector_live in (live_model(champion_detector), h.slot.live):
        scores = detector_live.scorer.score(fresh).scores
        rates.append(float(np.mean(scores > detector_live.threshold.value)))
    assert rates[1] <= max(3 * rates[0], 0.03), rates
    h.close()


def test_a_limit_is_recalibrated_on_validation_alone_so_retrains_do_not_ratchet_it(
        champion_detector):
    limit = ThresholdSettings(method="limit", margin=1.5)
    validation = champion_detector.error_stats.normalise_scores(
        champion_detector.validation_scores)
    near_the_old_limit = np.full(500, 1.4 * float(validation.max()), dtype=np.float32)
    threshold = calibrate(limit, champion_detector, near_the_old_limit)
    assert threshold.value == pytest.approx(1.5 * max(float(validation.max()), 1.0))
    quantile = calibrate(THRESHOLD, champion_detector, near_the_old_limit)
    assert quantile.value == pytest.approx(near_the_old_limit[0])  # learns recent traffic


def test_worse_challenger_is_rejected(tmp_path, champion_detector):
    def train_badly(data, stop):
        return train_detector(normal(400, seed=2, shift=5.0) * 3, MODEL, "cpu")

    h = Harness(tmp_path, champion_detector, train=train_badly)
    h.feed(normal(400, seed=5))
    assert h.count("rejected") >= 1 and h.count("promoted") == 0
    assert h.slot.live.version == 1
    h.close()


@pytest.mark.parametrize("error", [ModelError("training loss became nan"), RuntimeError("boom")])
def test_failed_retrain_keeps_the_champion(tmp_path, champion_detector, error):
    def train_fails(data, stop):
        raise error

    h = Harness(tmp_path, champion_detector, train=train_fails)
    h.feed(normal(400, seed=5))
    assert h.count("failed") >= 1
    assert h.slot.live.version == 1
    h.close()


def test_nan_loss_is_a_failed_retrain(tmp_path, champion_detector):
    """A learning rate that diverges: fit raises on the non-finite loss."""
    wild = MODEL.model_copy(update={"learning_rate": 1e12})

    def train_wild(data, stop):
        return train_detector(data * 1e20, wild, "cpu")

    h = Harness(tmp_path, champion_detector, train=train_wild)
    h.feed(normal(400, seed=5))
    assert h.count("failed") >= 1 and h.slot.live.version == 1
    h.close()


def test_challenger_that_learnt_the_anomaly_is_rejected(tmp_path, champion_detector):
    """Flagged windows in the store: a challenger that no longer flags them loses."""
    def train_on_anomaly(data, stop):
        return train_detector(np.concatenate([data, anomalous(600, seed=4)]), MODEL, "cpu")

    h = Harness(tmp_path, champion_detector, train=train_on_anomaly)
    h.feed(np.concatenate([anomalous(60, seed=8), normal(400, seed=5)]))
    assert len(h.retrainer.buffer.flagged_snapshot()) >= 10
    assert h.count("rejected") >= 1 and h.count("promoted") == 0
    assert h.retrainer.verdicts[0].reason == "misses_reference"
    h.close()


def test_challenger_blind_to_the_champions_recent_alarms_is_rejected(
        tmp_path, champion_detector):
    """Nothing confirmed (the anomalies score just above the threshold), but the champion
    flagged far more than chance explains: a challenger that no longer flags them loses."""
    def train_on_anomaly(data, stop):
        return train_detector(np.concatenate([data, anomalous(600, seed=4)]), MODEL, "cpu")

    h = Harness(tmp_path, champion_detector, train=train_on_anomaly, confirm_margin=1e6)
    h.feed(np.concatenate([anomalous(60, seed=8), normal(400, seed=5)]))
    assert len(h.retrainer.buffer.flagged_snapshot()) == 0
    assert h.count("rejected") >= 1 and h.count("promoted") == 0
    verdict = h.retrainer.verdicts[0]
    assert (verdict.reason, verdict.part) == ("misses_reference", "alarms")
    assert verdict.confirmed == 0 and verdict.anchor_recall > 0.8
    h.close()


def test_promotions_do_not_compound_the_anchor_stays(tmp_path, champion_detector):
    """Every challenger is measured against the first model on the same reference set."""
    h = Harness(tmp_path, champion_detector, every_windows=300, rollback_window=50)
    h.feed(normal(1_300, seed=5))
    assert len(h.retrainer.verdicts) >= 2
    assert h.retrainer._anchor.live.version == 1
    for verdict in h.retrainer.verdicts:
        assert verdict.reference >= 300
        if verdict.promote:
            assert verdict.recall >= verdict.anchor_recall - h.settings.tolerance
    h.close()


def watch_with(h: Harness, live: LiveModel, data: np.ndarray) -> None:
    """Feed ``data`` scored and flagged by ``live`` (a promoted model gone wrong)."""
    for start in range(0, len(data), 50):
        values = data[start : start + 50]
        scores = live.scorer.score(values).scores
        h.retrainer.observe(live, values, scores, live.threshold.classify(scores))
    h.retrainer.wait(timeout_s=30)


def test_alert_explosion_after_promotion_rolls_back(tmp_path, champion_detector):
    h = Harness(tmp_path, champion_detector, every_windows=300)
    h.feed(normal(400, seed=5))
    promoted = h.slot.live
    assert promoted.version == 2
    broken = LiveModel(promoted.scorer, StaticThreshold(0.01), 2)  # flags everything
    watch_with(h, broken, normal(200, seed=6))
    live = h.slot.live
    assert live.version == 3 and live.scorer is not promoted.scorer
    assert h.metrics.registry.get_sample_value("streamae_rollbacks_total") == 1
    assert load_latest(tmp_path / "ck").metadata["origin"] == "rollback"
    h.close()


def test_an_explosion_the_previous_model_shares_is_the_data_not_the_model(
        tmp_path, champion_detector):
    """A fault that starts right after a promotion raises both models' alarm rates."""
    h = Harness(tmp_path, champion_detector, every_windows=300)
    h.feed(normal(400, seed=5))
    assert h.slot.live.version == 2
    watch_with(h, h.slot.live, anomalous(200, seed=6))
    assert "rolled_back" not in h.retrainer.outcomes
    assert not h.metrics.registry.get_sample_value("streamae_rollbacks_total")
    h.close()


@pytest.mark.parametrize("confirm_margin", [2.0, 1e6])  # confirmed, or only flagged
def test_alarm_collapse_that_misses_the_previous_alarms_rolls_back(tmp_path, champion_detector,
                                                                   confirm_margin):
    h = Harness(tmp_path, champion_detector, every_windows=300, rollback_window=100,
                confirm_margin=confirm_margin)
    mixed = normal(400, seed=5)
    mixed[::5] = anomalous(80, seed=9)  # 20% anomalous: the alarm rate before is high
    h.feed(mixed[:300])  # the retrain is due with the last batch: the watch starts next
    promoted = h.slot.live
    assert promoted.version == 2
    blind = LiveModel(promoted.scorer, StaticThreshold(1e6), 2)  # flags nothing
    watch_with(h, blind, mixed[300:])
    assert h.slot.live.version == 3
    assert h.metrics.registry.get_sample_value("streamae_rollbacks_total") == 1
    h.close()


def test_time_trigger_needs_min_windows(tmp_path, champion_detector):
    now = [0.0]
    h = Harness(tmp_path, champion_detector, clock=lambda: now[0], every_windows=100_000,
                every_seconds=60, min_windows=100)
    h.feed(normal(40, seed=5))
    now[0] = 120.0
    h.feed(normal(40, seed=6))
    assert h.retrainer.outcomes == []  # 80 scored: fewer than min_windows can be buffered
    h.feed(normal(100, seed=7))
    assert len(h.retrainer.outcomes) == 1
    h.close()


def test_close_stops_a_long_training(tmp_path, champion_detector):
    started = threading.Event()

    def train_slowly(data, stop):
        started.set()
        stop.wait(30)
        raise ModelError("stopped")

    h = Harness(tmp_path, champion_detector, train=train_slowly)
    live = h.slot.live
    values = normal(400, seed=5)
    h.retrainer.observe(live, values, live.scorer.score(values).scores, np.zeros(400, bool))
    assert started.wait(10)
    h.close()  # returns promptly: the stop event ends the job
    assert h.slot.live.version == 1


def test_process_trainer_returns_an_equivalent_detector():
    """Training in a spawned worker (the CPU default) brings the detector back intact."""
    from streamae.trainer_process import ProcessTrainer

    trainer = ProcessTrainer(MODEL, "cpu", threads=1)
    try:
        detector = trainer(normal(300, seed=3), threading.Event())
    finally:
        trainer.close()
    scores = Scorer(detector, "cpu").score(normal(50, seed=4)).scores
    assert detector.model.kind == "dense" and np.all(np.isfinite(scores))
    assert detector.val_loss < 1.0
    assert not trainer.alive  # the child ends with the retrain: nothing lingers


def test_a_stopped_training_child_ends_within_its_grace_period():
    """SIGTERM leads to stop: the child is asked, then made, to end; nothing lingers."""
    from streamae.trainer_process import ProcessTrainer

    endless = MODEL.model_copy(update={"epochs": 100_000, "patience": 100_000})
    trainer = ProcessTrainer(endless, "cpu", threads=1, grace_s=1.0)
    stop = threading.Event()
    threading.Timer(1.0, stop.set).start()
    began = time.monotonic()
    with pytest.raises(ModelError, match="stopped"):
        trainer(normal(300, seed=3), stop)
    assert time.monotonic() - began < 5.0
    assert not trainer.alive
    assert trainer.started_s is not None and trainer.started_s < 5.0


def test_a_restart_keeps_the_anchor_and_pruning_keeps_its_checkpoint(tmp_path,
                                                                     champion_detector):
    """The anchor is named in every promoted checkpoint and survives pruning, so a restarted
    daemon measures challengers against the first model, not the champion it resumes."""
    h = Harness(tmp_path, champion_detector, every_windows=300, rollback_window=50)
    h.feed(normal(3_000, seed=5))
    promoted = h.slot.live.version
    h.close()
    assert promoted >= 5  # more versions than CheckpointSettings(keep=3) keeps
    directory = tmp_path / "ck"
    assert load_latest(directory).metadata["anchor"] == 1
    assert load_version(directory, 1).version == 1  # protected from pruning
    assert not (directory / "model-000002.safetensors").exists()  # pruned as usual

    resumed = live_from_checkpoint(load_latest(directory), "cpu", 256)
    slot = ModelSlot()
    slot.swap(resumed)
    restarted = Retrainer(h.settings, MODEL, THRESHOLD,
                          CheckpointSettings(directory=directory, keep=3), "cpu", slot,
                          Metrics(CollectorRegistry()), None)
    batch = normal(50, seed=9)
    scores = resumed.scorer.score(batch).scores
    restarted.observe(resumed, batch, scores, np.zeros(len(batch), dtype=bool))
    anchor = restarted._anchor
    assert anchor.live.version == 1 and anchor.live is not resumed
    first = live_from_checkpoint(load_version(directory, 1), "cpu", 256)
    assert anchor.threshold is not None and anchor.threshold == first.threshold.value
    restarted.close()
