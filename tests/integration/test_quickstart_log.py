"""The quickstart's first seconds, as an operator sees them: the daemon starts before the
demo creates its topic, and nothing expected looks like a failure in the log."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from tests.integration.conftest import ROOT
from tests.integration.test_daemon import committed, wait_for

pytestmark = pytest.mark.integration


def test_daemon_before_its_topic_exists_logs_no_error_nor_commit_warnings(daemon_env,
                                                                          spawn_daemon):
    env = daemon_env(STREAMAE_KAFKA__INPUT_TOPICS=f"quickstart-{uuid.uuid4().hex[:8]}",
                     STREAMAE_RETRAIN__ENABLED="false")
    daemon = spawn_daemon(env)
    log = Path(daemon.log_path)
    wait_for(lambda: "event=daemon_started" in log.read_text(), 60, "the daemon started")
    demo = subprocess.run([sys.executable, "-m", "streamae.cli", "demo", "--count", "3000",
                           "--rate", "0"], env={**os.environ, **env}, cwd=ROOT,
                          capture_output=True, text=True, timeout=120)
    assert demo.returncode == 0, demo.stderr
    assert "level=error" not in demo.stderr and "level=warning" not in demo.stderr
    wait_for(lambda: committed(env, 1) >= 3000, 240, "the demo stream committed")
    daemon.send_signal(signal.SIGTERM)
    assert daemon.wait(timeout=60) == 0
    text = log.read_text()
    assert "event=input_topics_missing" in text and "level=info" in text
    assert "level=error" not in text, [x for x in text.splitlines() if "level=error" in x]
    assert "async_commit_failed" not in text
