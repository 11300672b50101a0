"""A broker outage under load: the daemon keeps turning (/healthz), is not ready (/readyz)
while the broker is away, does not exit, and scores every input once it is back."""

from __future__ import annotations

import json
import threading
import time
import uuid

import pytest
from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer
from kafka.admin import NewTopic

from streamae.kafka_io import build_consumer, build_producer
from streamae.metrics import Metrics
from streamae.pipeline import Daemon
from tests.integration.conftest import settings_from
from tests.integration.test_daemon import wait_for
from tests.integration.test_poison import good

pytestmark = pytest.mark.integration

OUTAGE_S = 60  # the outage: the broker stopped for a minute under load


def produce(bootstrap: str, topic: str, start: int, count: int) -> None:
    producer = KafkaProducer(bootstrap_servers=bootstrap, acks="all")
    for i in range(start, start + count):
        producer.send(topic, key=b"k", value=good(i))
    producer.flush(timeout=60)
    producer.close()


def scored_offsets(bootstrap: str, topic: str, expect: int, timeout_s: float) -> set[int]:
    consumer = KafkaConsumer(topic, bootstrap_servers=bootstrap, group_id=None,
                             auto_offset_reset="earliest")
    offsets: set[int] = set()
    deadline = time.monotonic() + timeout_s
    while len(offsets) < expect and time.monotonic() < deadline:
        for part in consumer.poll(timeout_ms=500).values():
            offsets.update(json.loads(r.value)["offset"] for r in part)
    consumer.close()
    return offsets


def test_the_daemon_survives_a_broker_outage_and_loses_nothing(
        restartable_broker, monkeypatch, tmp_path):
    bootstrap = restartable_broker.bootstrap
    names = {n: f"{n}-{uuid.uuid4().hex[:8]}" for n in ("in", "out", "dead", "scores")}
    admin = KafkaAdminClient(bootstrap_servers=bootstrap)
    admin.create_topics([NewTopic(name, 1, 1) for name in names.values()])
    admin.close()
    env = {"STREAMAE_KAFKA__BOOTSTRAP_SERVERS": bootstrap,
           "STREAMAE_KAFKA__INPUT_TOPICS": names["in"],
           "STREAMAE_KAFKA__OUTPUT_TOPIC": names["out"],
           "STREAMAE_KAFKA__DEAD_LETTER_TOPIC": names["dead"],
           "STREAMAE_KAFKA__SCORES_TOPIC": names["scores"],
           "STREAMAE_KAFKA__GROUP_ID": f"g-{uuid.uuid4().hex[:8]}",
           "STREAMAE_KAFKA__OUTAGE_BUDGET_S": "120",
           "STREAMAE_CHECKPOINTS__DIRECTORY": str(tmp_path / "ck"),
           "STREAMAE_WARMUP_SIZE": "200", "STREAMAE_MODEL__EPOCHS": "3",
           "STREAMAE_DEVICE": "cpu", "STREAMAE_BATCH__MAX_SIZE": "50"}
    settings = settings_from(env, monkeypatch)
    produce(bootstrap, names["in"], 0, 400)
    daemon = Daemon(settings, build_consumer(settings.kafka, settings.batch.max_size),
                    build_producer(settings.kafka), metrics=Metrics())
    failure: list[BaseException] = []

    def run() -> None:
        try:
            daemon.run(timeout_s=400)
        except BaseException as exc:  # reported by the test thread
            failure.append(exc)

    worker = threading.Thread(target=run)
    worker.start()
    try:
        assert len(scored_offsets(bootstrap, names["scores"], 400, 180)) == 400
        assert daemon.readiness()[0]
        produce(bootstrap, names["in"], 400, 1000)  # a backlog in flight when it stops
        restartable_broker.stop()
        during: list[tuple[bool, bool]] = []
        for _ in range(OUTAGE_S * 2):
            during.append((daemon.liveness()[0], daemon.readiness()[0]))
            time.sleep(0.5)
        assert worker.is_alive() and not failure, failure  # the daemon's error, if any
        assert all(live for live, _ in during) and not during[-1][1]
        restartable_broker.start()
        produce(bootstrap, names["in"], 1400, 300)
        offsets = scored_offsets(bootstrap, names["scores"], 1700, 240)
        assert offsets == set(range(1700)), sorted(set(range(1700)) - offsets)[:10]
        wait_for(lambda: daemon.readiness()[0], 30, "ready again")
    finally:
        daemon.stop_event.set()
        worker.join(timeout=120)
    assert not failure, failure
