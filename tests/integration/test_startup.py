"""Start-up failures are clear: the health server answers before anything can block, an
unreachable broker is retried within the outage budget and then ends the process with a
message, a port in use is named. (No broker needed: nothing listens where they point.)"""

from __future__ import annotations

import socket
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from streamae.exceptions import SettingsError
from streamae.service import serve
from streamae.settings import Settings
from tests.conftest import free_port

pytestmark = pytest.mark.integration


def status(port: int, path: str) -> int | None:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=2) as response:
            return response.status
    except urllib.error.HTTPError as err:
        return err.code
    except OSError:
        return None


def test_unreachable_bootstrap_is_retried_within_the_budget_then_exits_clearly(
        spawn_daemon, tmp_path):
    metrics_port, dead_port = free_port(), free_port()
    proc = spawn_daemon({"STREAMAE_KAFKA__BOOTSTRAP_SERVERS": f"127.0.0.1:{dead_port}",
                         "STREAMAE_KAFKA__OUTAGE_BUDGET_S": "12",
                         "STREAMAE_METRICS_PORT": str(metrics_port),
                         "STREAMAE_METRICS_HOST": "127.0.0.1",
                         "STREAMAE_CHECKPOINTS__DIRECTORY": str(tmp_path / "ck")})
    started = time.monotonic()
    seen: set[tuple[int | None, int | None]] = set()
    while proc.poll() is None and time.monotonic() - started < 90:
        seen.add((status(metrics_port, "/healthz"), status(metrics_port, "/readyz")))
        time.sleep(0.5)
    took = time.monotonic() - started
    log = Path(proc.log_path).read_text()
    assert proc.wait(timeout=30) == 1
    assert (200, 503) in seen  # alive and not ready while it waits for the broker
    assert (200, 200) not in seen
    assert 10 <= took <= 60, took
    assert log.count("event=broker_unreachable_at_start") >= 2
    assert f"broker at 127.0.0.1:{dead_port} unreachable for 12s" in log
    assert "event=fatal error=InfrastructureError" in log


def test_a_metrics_port_in_use_is_a_clear_error(monkeypatch):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        monkeypatch.setenv("STREAMAE_METRICS_PORT", str(port))
        monkeypatch.setenv("STREAMAE_METRICS_HOST", "127.0.0.1")
        with pytest.raises(SettingsError, match=f"STREAMAE_METRICS_PORT={port}: cannot listen "
                           f"on 127.0.0.1:{port} .*in use"):
            serve(Settings())
