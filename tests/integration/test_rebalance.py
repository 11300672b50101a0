"""Two replicas in one group against the real broker: a second replica joining and the
first one stopping move partitions between them (revoked, then assigned), and every input
offset is still scored and committed (at least once)."""

from __future__ import annotations

import json
import re
import signal
from collections import Counter
from pathlib import Path

import pytest

from tests.integration.conftest import BOTH_CLIENTS
from tests.integration.test_daemon import committed, consumed_records, demo_messages, wait_for

pytestmark = pytest.mark.integration

PARTITIONS = 4
BATCH = 100


def counts(proc, event: str) -> list[int]:
    """The partition counts of each ``event`` (partitions_assigned/revoked) logged so far."""
    text = Path(proc.log_path).read_text()
    return [int(n) for n in re.findall(rf"event={event} count=(\d+)", text)]


@BOTH_CLIENTS
def test_partitions_move_between_replicas_and_every_offset_is_scored(
        daemon_env, produce, read_topic, spawn_daemon):
    env = daemon_env(partitions=PARTITIONS, STREAMAE_BATCH__MAX_SIZE=str(BATCH),
                     STREAMAE_WARMUP_SIZE="300", STREAMAE_MODEL__EPOCHS="5")
    topic, scores_topic = env["STREAMAE_KAFKA__INPUT_TOPICS"], env["STREAMAE_KAFKA__SCORES_TOPIC"]
    messages, _ = demo_messages(6000, seed=13)
    parts = [messages[:2000], messages[2000:4000], messages[4000:]]

    produce(topic, parts[0])
    first = spawn_daemon(env)
    wait_for(lambda: committed(env, PARTITIONS) >= 2000, 180, "the first part committed")
    second = spawn_daemon(env)  # joins: the first gives up some of its partitions
    wait_for(lambda: any(counts(second, "partitions_assigned")), 120,
             "the second replica got partitions")
    assert any(counts(first, "partitions_revoked")), "the first replica kept everything"
    produce(topic, parts[1])
    wait_for(lambda: committed(env, PARTITIONS) >= 4000, 180, "the second part committed")

    first.send_signal(signal.SIGTERM)  # leaves the group: the second takes everything
    assert first.wait(timeout=60) == 0
    wait_for(lambda: PARTITIONS in counts(second, "partitions_assigned"), 120,
             "the second replica got every partition")
    produce(topic, parts[2])
    wait_for(lambda: committed(env, PARTITIONS) >= len(messages), 180, "everything committed")
    second.send_signal(signal.SIGTERM)
    assert second.wait(timeout=60) == 0

    scored = Counter((r["partition"], r["offset"]) for r in
                     (json.loads(x.value) for x in read_topic(scores_topic)))
    inputs = {(r.partition, r.offset) for r in consumed_records(env)}
    assert len(inputs) == len(messages) == committed(env, PARTITIONS)
    assert set(scored) == inputs, "an input offset was never scored"
    duplicates = sum(n - 1 for n in scored.values())
    print(f"rebalance: duplicates={duplicates}")
    assert duplicates <= 2 * PARTITIONS * BATCH  # at most a batch per partition and move
