"""Retraining against the real broker: no rebalance during a long retrain, and a scorer
replica that follows the trainer's checkpoints through the compacted model topic."""

from __future__ import annotations

import json
import logging
import signal
import threading
import time
import uuid
from pathlib import Path

import numpy as np
import pytest

from streamae.checkpoints import save_checkpoint
from streamae.demo import DemoStream
from streamae.kafka_io import build_consumer, build_producer
from streamae.live import train_detector
from streamae.metrics import Metrics
from streamae.modelbus import record_version
from streamae.pipeline import Daemon
from streamae.retrain import Retrainer
from streamae.settings import ModelSettings
from streamae.thresholds import FalseAlarmRateThreshold
from tests.integration.conftest import settings_from

pytestmark = pytest.mark.integration


def demo(count: int, seed: int) -> list[tuple]:
    """Clean demo readings from enough pumps (keys) to land on both partitions."""
    readings = DemoStream(pumps=12, seed=seed, clean_prefix=count).take(count)
    return [(r.key, r.as_message()) for r in readings]


def produce_slowly(produce, topic: str, messages: list[tuple], seconds: float) -> None:
    """Spread the messages over ``seconds`` so the daemon scores while the retrain runs."""
    chunks = 20
    size = max(1, len(messages) // chunks)
    for start in range(0, len(messages), size):
        produce(topic, messages[start : start + size])
        time.sleep(seconds / chunks)


def test_slow_retrain_keeps_scoring_and_never_rebalances(daemon_env, produce, monkeypatch,
                                                         caplog):
    env = daemon_env(STREAMAE_KAFKA__MAX_POLL_INTERVAL_MS="5000",
                     STREAMAE_KAFKA__SESSION_TIMEOUT_MS="6000", STREAMAE_WARMUP_SIZE="300",
                     STREAMAE_MODEL__EPOCHS="5", STREAMAE_RETRAIN__EVERY_WINDOWS="300",
                     STREAMAE_RETRAIN__MIN_WINDOWS="100")
    settings = settings_from(env, monkeypatch)
    topic = env["STREAMAE_KAFKA__INPUT_TOPICS"]
    messages = demo(4_000, seed=5)
    produce(topic, messages[:400])
    daemon = Daemon(settings, build_consumer(settings.kafka, settings.batch.max_size),
                    build_producer(settings.kafka), metrics=Metrics())
    spans: list[tuple[float, float]] = []
    scored_at: list[float] = []

    def train_slowly(data, stop):
        """Slower than max.poll.interval.ms (5 s): the loop must keep polling meanwhile."""
        begun = time.time()  # wall clock, as log records
        stop.wait(8.0)
        detector = train_detector(data, settings.model, "cpu", None, stop)
        spans.append((begun, time.time()))
        return detector

    retrainer = Retrainer(settings.retrain, settings.model, settings.threshold,
                          settings.checkpoints, "cpu", daemon.slot, daemon.metrics,
                          train=train_slowly)
    daemon.scored_hooks.append(retrainer.observe)
    daemon.scored_hooks.append(lambda *_: scored_at.append(time.time()))
    def feed_once_scoring() -> None:
        """The rest of the stream, spread out once the first model scores: a slow join
        (seen under load) would otherwise leave only a backlog, scored in one big batch
        before the retrain starts, and nothing to score while it runs."""
        deadline = time.monotonic() + 60
        while not scored_at and time.monotonic() < deadline:
            time.sleep(0.2)
        produce_slowly(produce, topic, messages[400:], 20.0)

    feeder = threading.Thread(target=feed_once_scoring)

    def stop_after_retrain() -> None:
        while not spans and not daemon.stop_event.wait(0.5):
            pass
        time.sleep(6.0)  # past another max.poll.interval: a late eviction would show too
        daemon.stop_event.set()

    caplog.set_level(logging.INFO, logger="streamae")
    feeder.start()
    threading.Thread(target=stop_after_retrain, daemon=True).start()
    try:
        daemon.run(timeout_s=120)
    finally:
        daemon.stop_event.set()
        feeder.join()
        retrainer.close()
    assert spans, "no retrain finished"
    begun, ended = spans[0]
    assert ended - begun > 8.0
    during = [t for t in scored_at if begun < t < ended]
    assert len(during) >= 5, "the loop stopped scoring while the retrain ran"
    # kafka-python reports empty revocations/assignments while it first joins; a rebalance
    # (a member evicted for exceeding max.poll.interval.ms) would assign partitions again.
    moves = [(r.created, r.getMessage()) for r in caplog.records
             if "event=partitions_" in r.getMessage() and "count=0" not in r.getMessage()]
    assigned = [t for t, m in moves if "assigned" in m]
    revoked = [t for t, m in moves if "revoked" in m]
    assert len(assigned) == 1, moves
    assert all(t > ended + 5.0 for t in revoked), moves  # only the final leave, on stop
    assert retrainer.outcomes and retrainer.outcomes[0] in {"promoted", "rejected"}
    outcomes = daemon.metrics.registry.get_sample_value
    assert sum(outcomes("streamae_retrains_total", {"outcome": o}) or 0
               for o in ("promoted", "rejected")) >= 1


def wait_for(predicate, timeout_s: float, what: str, procs=()) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return
        for proc in procs:
            if proc.poll() is not None:
                raise AssertionError(f"daemon exited ({proc.returncode}) while waiting for "
                                     f"{what}:\n{Path(proc.log_path).read_text()[-3000:]}")
        time.sleep(0.5)
    raise AssertionError(f"timed out waiting for {what}")


def versions_on(read_topic, topic: str) -> list[int]:
    return [record_version(r) for r in read_topic(topic, idle_s=1.0, timeout_s=10)]


def test_scorer_replica_follows_the_trainer_through_the_model_topic(
        daemon_env, produce, read_topic, spawn_daemon, make_topic):
    model_topic = f"models-{uuid.uuid4().hex[:8]}"  # the trainer creates it, compacted
    common = daemon_env(partitions=2, STREAMAE_KAFKA__MODEL_TOPIC=model_topic,
                        STREAMAE_WARMUP_SIZE="500", STREAMAE_MODEL__EPOCHS="10",
                        STREAMAE_RETRAIN__EVERY_WINDOWS="1000",
                        STREAMAE_RETRAIN__MIN_WINDOWS="200",
                        STREAMAE_RETRAIN__TOLERANCE="1",
                        STREAMAE_RETRAIN__SCORE_AGREEMENT="0",
                        STREAMAE_RETRAIN__ROLLBACK_ALERT_RATIO="1000")
    topic = common["STREAMAE_KAFKA__INPUT_TOPICS"]
    trainer_env = {**common, "STREAMAE_ROLE": "trainer"}
    scorer_env = {**common, "STREAMAE_ROLE": "scorer",
                  "STREAMAE_KAFKA__SCORES_TOPIC": make_topic("scorer-scores"),
                  "STREAMAE_CHECKPOINTS__DIRECTORY": common["STREAMAE_CHECKPOINTS__DIRECTORY"]
                  + "-scorer"}
    messages = demo(5_000, seed=9)
    produce(topic, messages[:600])
    trainer = spawn_daemon(trainer_env)
    scorer = None
    try:
        wait_for(lambda: 1 in versions_on(read_topic, model_topic), 120, "version 1 published",
                 [trainer])
        scorer = spawn_daemon(scorer_env)
        scorer_log = Path(scorer.log_path)
        wait_for(lambda: "origin=model_topic version=1" in scorer_log.read_text(), 90,
                 "the scorer to load version 1", [trainer, scorer])
        wait_for(lambda: "event=partitions_assigned count=1" in scorer_log.read_text(), 60,
                 "the scorer to own a partition", [trainer, scorer])
        produce(topic, messages[600:1_000])  # too few for the trainer to retrain yet
        wait_for(lambda: 1 in scored_versions(read_topic, scorer_env), 60,
                 "scores by version 1", [trainer, scorer])
        produce_slowly(produce, topic, messages[1_000:4_000], 15.0)
        wait_for(lambda: max(versions_on(read_topic, model_topic)) >= 2, 120,
                 "a retrained version on the model topic", [trainer, scorer])
        wait_for(lambda: "event=model_loaded origin=model_topic version=2"
                 in scorer_log.read_text(), 60, "the scorer to load version 2", [trainer, scorer])
        produce(topic, messages[4_000:])
        wait_for(lambda: {2} <= scored_versions(read_topic, scorer_env), 60,
                 "scores by version 2", [trainer, scorer])
    finally:
        for proc in (trainer, scorer):
            if proc is not None and proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                proc.wait(timeout=60)
    versions = scored_versions(read_topic, scorer_env)
    assert 1 in versions and 2 in versions, versions
    scorer_text = Path(scorer.log_path).read_text()
    assert "event=retrain_started" not in scorer_text  # a scorer never retrains
    assert "event=retrain_started" in Path(trainer.log_path).read_text()


def scored_versions(read_topic, env: dict) -> set[int]:
    records = read_topic(env["STREAMAE_KAFKA__SCORES_TOPIC"], idle_s=1.0, timeout_s=20)
    return {json.loads(r.value)["model_version"] for r in records}


def log_time(text: str, event: str) -> float:
    """Epoch seconds of the first log line with ``event`` (the key=value ``ts`` field)."""
    line = next(line for line in text.splitlines() if event in line)
    stamp = line.split()[0].removeprefix("ts=").removesuffix("Z")
    return time.mktime(time.strptime(stamp[:19], "%Y-%m-%dT%H:%M:%S")) + float(stamp[19:])


def children_of(pid: int) -> list[int]:
    """Processes whose parent is ``pid`` (from /proc)."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            found.append(int(stat.parent.name))
    return found


def test_training_runs_only_when_due_and_sigterm_ends_it_within_10_seconds(
        daemon_env, produce, spawn_daemon):
    """No training process before a retrain is due; a due one starts within seconds; a
    SIGTERM while it trains (for ever: epochs 10^5) ends the daemon within 10 s."""
    env = daemon_env(STREAMAE_MODEL__EPOCHS="100000", STREAMAE_MODEL__PATIENCE="100000",
                     STREAMAE_RETRAIN__EVERY_WINDOWS="1500",
                     STREAMAE_RETRAIN__MIN_WINDOWS="100")
    messages = demo(3_000, seed=13)
    values = np.array([list(m["values"].values()) for _, m in messages], dtype=np.float32)
    detector = train_detector(values[:1_000], ModelSettings(epochs=5), "cpu")
    save_checkpoint(Path(env["STREAMAE_CHECKPOINTS__DIRECTORY"]), detector,
                    threshold_state=FalseAlarmRateThreshold(1e-4).state(),
                    metadata={"origin": "test"})
    topic = env["STREAMAE_KAFKA__INPUT_TOPICS"]
    produce(topic, messages[:1_000])
    proc = spawn_daemon(env)
    log_path = Path(proc.log_path)
    try:
        wait_for(lambda: "event=daemon_started" in log_path.read_text(), 90, "the daemon",
                 [proc])
        time.sleep(5)  # 1,000 readings scored: not due yet
        assert "event=trainer_started" not in log_path.read_text()
        assert children_of(proc.pid) == []
        produce(topic, messages[1_000:])
        wait_for(lambda: "event=trainer_started" in log_path.read_text(), 60,
                 "the training process", [proc])
        text = log_path.read_text()
        assert log_time(text, "event=trainer_started") - log_time(
            text, "event=retrain_started") < 10.0
        time.sleep(2)  # well into training
        assert children_of(proc.pid), "no training child while training"
        began = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=30)
        assert time.monotonic() - began < 10.0
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, log_path.read_text()[-3000:]
