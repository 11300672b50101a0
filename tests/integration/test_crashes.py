"""Ten SIGKILLs at random moments (during the cold start, during a retrain, anywhere else)
against the real broker: nothing unscored, at most one batch per partition redone per kill;
with exactly-once delivery a read_committed reader sees every input's score exactly once."""

from __future__ import annotations

import json
import random
import signal
import subprocess
import time
from collections import Counter
from pathlib import Path

import pytest

from tests.integration.test_daemon import (
    committed,
    consumed_records,
    demo_messages,
    stop_when_started,
    wait_for,
)
from tests.integration.test_exactly_once import read_committed

pytestmark = pytest.mark.integration

KILLS = 10
BATCH = 100
PARTITIONS = 2


def kill_when_logged(proc: subprocess.Popen, needle: str, timeout_s: float = 180.0) -> None:
    """SIGKILL the daemon as soon as its log shows ``needle``."""
    wait_for(lambda: needle in Path(proc.log_path).read_text(), timeout_s, needle)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)


def kill_after(proc: subprocess.Popen, rng: random.Random) -> None:
    """SIGKILL the daemon at a random moment of its life (its start included)."""
    kill_when_logged(proc, "event=daemon_started")
    time.sleep(rng.uniform(0.2, 4.0))
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)


@pytest.mark.parametrize("delivery", ["at_least_once", "exactly_once"])
def test_ten_sigkills_at_random_moments_lose_nothing(delivery, daemon_env, produce, read_topic,
                                                     spawn_daemon):
    env = daemon_env(partitions=PARTITIONS, STREAMAE_KAFKA__DELIVERY=delivery,
                     STREAMAE_BATCH__MAX_SIZE=str(BATCH), STREAMAE_WARMUP_SIZE="500",
                     STREAMAE_MODEL__EPOCHS="10", STREAMAE_RETRAIN__EVERY_WINDOWS="1500",
                     STREAMAE_RETRAIN__MIN_WINDOWS="200",
                     # the killed member leaves the group after this, not the default 45 s
                     STREAMAE_KAFKA__SESSION_TIMEOUT_MS="6000")
    messages, _ = demo_messages(16_000, seed=13)
    produce(env["STREAMAE_KAFKA__INPUT_TOPICS"], messages)
    rng = random.Random(17)
    kill_when_logged(spawn_daemon(env), "event=cold_start_training")  # 1: training
    kill_when_logged(spawn_daemon(env), "event=retrain_started", 300)  # 2: retraining
    for _ in range(KILLS - 2):
        kill_after(spawn_daemon(env), rng)
    last = spawn_daemon(env)
    wait_for(lambda: committed(env, PARTITIONS) >= len(messages), 300, "everything committed")
    stop_when_started(last)
    assert last.wait(timeout=60) == 0

    scores_topic = env["STREAMAE_KAFKA__SCORES_TOPIC"]
    if delivery == "exactly_once":
        records, _ = read_committed(env["STREAMAE_KAFKA__BOOTSTRAP_SERVERS"], scores_topic)
    else:
        records = read_topic(scores_topic)
    scored = Counter((r["partition"], r["offset"]) for r in (json.loads(x.value) for x in records))
    inputs = {(r.partition, r.offset) for r in consumed_records(env)}
    duplicates = sum(n - 1 for n in scored.values())
    print(f"{delivery}: kills={KILLS} inputs={len(inputs)} duplicates={duplicates}")
    assert inputs <= set(scored), "an input offset was never scored"
    if delivery == "exactly_once":
        assert duplicates == 0
    else:
        assert duplicates <= KILLS * BATCH * PARTITIONS  # one batch per partition per kill
