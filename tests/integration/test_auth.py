"""SASL/SCRAM against a real broker of the test's own (scripts/local_kafka.py --sasl-port):
the right password works; a wrong one ends the daemon within 60 s with a message naming
mechanism, user and bootstrap servers, and never the password."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from tests.conftest import free_port, load_local_kafka, unavailable
from tests.integration.test_daemon import stop_when_started

pytestmark = pytest.mark.integration

PASSWORD = "s3cr3t-Pa55word"


@pytest.fixture
def scram_broker(tmp_path: Path):
    local_kafka = load_local_kafka()
    port, sasl_port = free_port(), free_port()
    try:
        local_kafka.start(port, tmp_path / "kafka", sasl_port=sasl_port,
                          scram_users={"alice": PASSWORD})
    except SystemExit as exc:
        unavailable(str(exc))
    yield f"127.0.0.1:{sasl_port}"
    local_kafka.stop(tmp_path / "kafka")


def env_for(bootstrap: str, password: str, tmp_path: Path) -> dict[str, str]:
    return {"STREAMAE_KAFKA__BOOTSTRAP_SERVERS": bootstrap,
            "STREAMAE_KAFKA__SECURITY_PROTOCOL": "SASL_PLAINTEXT",
            "STREAMAE_KAFKA__SASL_MECHANISM": "SCRAM-SHA-512",
            "STREAMAE_KAFKA__SASL_USERNAME": "alice",
            "STREAMAE_KAFKA__SASL_PASSWORD": password,
            "STREAMAE_METRICS_PORT": "0", "STREAMAE_DEVICE": "cpu",
            "STREAMAE_CHECKPOINTS__DIRECTORY": str(tmp_path / "ck")}


def test_wrong_password_exits_clearly_within_60s_and_right_one_works(
        scram_broker, spawn_daemon, tmp_path):
    wrong = "not-" + PASSWORD
    started = time.monotonic()
    proc = spawn_daemon(env_for(scram_broker, wrong, tmp_path))
    assert proc.wait(timeout=90) == 1
    took = time.monotonic() - started
    log = Path(proc.log_path).read_text()
    print(f"auth: wrong password exited in {took:.1f}s")
    assert took <= 60, took
    assert "error=AuthenticationError" in log
    assert f"mechanism=SCRAM-SHA-512 user='alice' bootstrap={scram_broker}" in log
    assert wrong not in log and PASSWORD not in log

    good = spawn_daemon(env_for(scram_broker, PASSWORD, tmp_path))
    stop_when_started(good)
    assert good.wait(timeout=60) == 0
    assert PASSWORD not in Path(good.log_path).read_text()
