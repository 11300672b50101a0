"""STREAMAE_KAFKA__DELIVERY=exactly_once against the real broker: killed mid-stream and
restarted, a read_committed reader sees every input's score once, none twice."""

from __future__ import annotations

import json
import signal
import time
from collections import Counter

import pytest
from kafka import KafkaConsumer

from tests.integration.conftest import BOTH_CLIENTS
from tests.integration.test_daemon import (
    committed,
    consumed_records,
    demo_messages,
    stop_when_started,
    wait_for,
)

pytestmark = pytest.mark.integration


def read_committed(bootstrap: str, topic: str, idle_s: float = 3.0) -> tuple[list, int]:
    """The committed records of a topic, and how many records an uncommitted reader sees."""
    counts = {}
    records: list = []
    for isolation in ("read_uncommitted", "read_committed"):
        consumer = KafkaConsumer(topic, bootstrap_servers=bootstrap, group_id=None,
                                 auto_offset_reset="earliest", isolation_level=isolation)
        seen, quiet_since = [], time.monotonic()
        while time.monotonic() - quiet_since < idle_s:
            for part in consumer.poll(timeout_ms=300).values():
                seen.extend(part)
                quiet_since = time.monotonic()
        consumer.close()
        counts[isolation] = len(seen)
        records = seen
    return records, counts["read_uncommitted"]


@BOTH_CLIENTS
def test_sigkill_and_restart_give_each_output_exactly_once(daemon_env, produce, spawn_daemon):
    env = daemon_env(partitions=2, STREAMAE_KAFKA__DELIVERY="exactly_once",
                     STREAMAE_BATCH__MAX_SIZE="100", STREAMAE_WARMUP_SIZE="300",
                     STREAMAE_MODEL__EPOCHS="5",
                     # the killed member leaves the group after this, not the default 45 s
                     STREAMAE_KAFKA__SESSION_TIMEOUT_MS="6000")
    topic, scores_topic = env["STREAMAE_KAFKA__INPUT_TOPICS"], env["STREAMAE_KAFKA__SCORES_TOPIC"]
    messages, _ = demo_messages(2400, seed=11)
    produce(topic, messages)
    first = spawn_daemon(env)
    wait_for(lambda: committed(env, 2) >= 1200, 180, "half the stream committed")
    first.send_signal(signal.SIGKILL)
    first.wait(timeout=30)
    second = spawn_daemon(env)
    started = time.monotonic()
    wait_for(lambda: committed(env, 2) >= len(messages), 180, "the rest committed")
    took = time.monotonic() - started
    stop_when_started(second)
    assert second.wait(timeout=60) == 0

    scores, uncommitted = read_committed(env["STREAMAE_KAFKA__BOOTSTRAP_SERVERS"], scores_topic)
    scored = Counter((r["partition"], r["offset"]) for r in (json.loads(x.value) for x in scores))
    inputs = {(r.partition, r.offset) for r in consumed_records(env)}
    print(f"exactly_once: committed={len(scores)} uncommitted_reader={uncommitted} "
          f"second_run={took:.1f}s")
    assert set(scored) == inputs, "an input offset was never scored"
    assert max(scored.values()) == 1, "an input was scored twice in committed output"
