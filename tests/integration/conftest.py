"""Factories for daemon tests: settings for fresh topics, producing, reading a topic whole."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from kafka import KafkaConsumer, KafkaProducer

from streamae.settings import Settings

ROOT = Path(__file__).resolve().parents[2]
CONFLUENT = importlib.util.find_spec("confluent_kafka") is not None
# Run a test for both transports (STREAMAE_KAFKA__CLIENT): it overrides the fixture below.
BOTH_CLIENTS = pytest.mark.parametrize("kafka_client", [
    "kafka-python",
    pytest.param("confluent", marks=pytest.mark.skipif(
        not CONFLUENT, reason="confluent-kafka is not installed (extra 'confluent')")),
])


@pytest.fixture
def kafka_client() -> str:
    """The transport the daemon under test uses; BOTH_CLIENTS runs a test for each."""
    return "kafka-python"


@pytest.fixture
def daemon_env(kafka_bootstrap: str, make_topic: Callable[..., str], tmp_path: Path,
               kafka_client: str) -> Callable[..., dict[str, str]]:
    """Factory: STREAMAE_* variables for a daemon on fresh topics (overrides win)."""

    def build(partitions: int = 1, **overrides: str) -> dict[str, str]:
        env = {
            "STREAMAE_KAFKA__CLIENT": kafka_client,
            "STREAMAE_KAFKA__BOOTSTRAP_SERVERS": kafka_bootstrap,
            "STREAMAE_KAFKA__INPUT_TOPICS": make_topic("in", partitions=partitions),
            "STREAMAE_KAFKA__OUTPUT_TOPIC": make_topic("anomalies"),
            "STREAMAE_KAFKA__DEAD_LETTER_TOPIC": make_topic("dead"),
            "STREAMAE_KAFKA__SCORES_TOPIC": make_topic("scores"),
            "STREAMAE_KAFKA__INCIDENTS_TOPIC": make_topic("incidents", compacted=True),
            "STREAMAE_KAFKA__INCIDENT_STATE_TOPIC": make_topic("incstate", compacted=True),
            "STREAMAE_KAFKA__GROUP_ID": f"g-{uuid.uuid4().hex[:8]}",
            "STREAMAE_CHECKPOINTS__DIRECTORY": str(tmp_path / f"ck-{uuid.uuid4().hex[:6]}"),
            "STREAMAE_METRICS_PORT": "0",
            "STREAMAE_WARMUP_SIZE": "1000",
            "STREAMAE_MODEL__EPOCHS": "20",
            "STREAMAE_DEVICE": "cpu",
        }
        env.update(overrides)
        return env

    return build


def settings_from(env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> Settings:
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    return Settings()


@pytest.fixture
def produce(kafka_bootstrap: str) -> Iterator[Callable[..., None]]:
    """Factory: send (key, value[, headers]) tuples and wait for every ack."""
    producer = KafkaProducer(bootstrap_servers=kafka_bootstrap, acks="all", linger_ms=5)

    def send(topic: str, messages: list[tuple]) -> None:
        futures = []
        for key, value, *rest in messages:
            body = value if isinstance(value, bytes | None) else json.dumps(value).encode()
            headers = rest[0] if rest else []
            futures.append(producer.send(topic, key=key and key.encode(), value=body,
                                         headers=headers))
        producer.flush(timeout=60)
        for future in futures:
            future.get(timeout=10)

    yield send
    producer.close()


@pytest.fixture
def read_topic(kafka_bootstrap: str) -> Callable[..., list]:
    """Factory: every record of a topic, waiting until ``expect`` arrived or ``idle_s`` quiet."""

    def read(topic: str, expect: int | None = None, idle_s: float = 3.0,
             timeout_s: float = 120.0) -> list:
        consumer = KafkaConsumer(topic, bootstrap_servers=kafka_bootstrap, group_id=None,
                                 auto_offset_reset="earliest", enable_auto_commit=False)
        records: list = []
        deadline, quiet_since = time.monotonic() + timeout_s, time.monotonic()
        while time.monotonic() < deadline:
            batch = consumer.poll(timeout_ms=300)
            for part in batch.values():
                records.extend(part)
                quiet_since = time.monotonic()
            if expect is not None and len(records) >= expect:
                break
            if expect is None and time.monotonic() - quiet_since > idle_s:
                break
        consumer.close()
        return records

    return read


@pytest.fixture
def spawn_daemon(tmp_path: Path) -> Iterator[Callable[..., subprocess.Popen]]:
    """Factory: ``streamae run`` as a child process with the given environment."""
    children: list[subprocess.Popen] = []

    def spawn(env: dict[str, str], *args: str) -> subprocess.Popen:
        log = open(tmp_path / f"daemon-{len(children)}.log", "wb")  # noqa: SIM115
        full_env = {**os.environ, **env, "PYTHONUNBUFFERED": "1"}
        proc = subprocess.Popen([sys.executable, "-m", "streamae.cli", "run", *args],
                                env=full_env, stdout=log, stderr=subprocess.STDOUT, cwd=ROOT)
        proc.log_path = log.name  # type: ignore[attr-defined]
        children.append(proc)
        return proc

    yield spawn
    for proc in children:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=30)
