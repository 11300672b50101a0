"""Incidents through the real broker: one per demo episode, and a SIGKILL during an open
incident neither forgets it nor duplicates it."""

from __future__ import annotations

import json
import re
import signal
from collections import Counter
from pathlib import Path

import pytest

from streamae.demo import SCALES, SENSORS, DemoStream
from tests.conftest import load_script
from tests.integration.test_daemon import (
    committed,
    demo_messages,
    run_in_process,
    stop_when_started,
    wait_for,
)

pytestmark = pytest.mark.integration

bench = load_script("incidents_bench", "benchmarks/incidents.py")


def test_every_flagged_demo_episode_is_one_incident(daemon_env, produce, read_topic,
                                                    monkeypatch):
    env = daemon_env()
    messages, readings = demo_messages(10_000)
    produce(env["STREAMAE_KAFKA__INPUT_TOPICS"], messages)
    stats, metrics = run_in_process(env, monkeypatch, max_messages=len(messages))
    anomalies = [json.loads(r.value) for r in read_topic(env["STREAMAE_KAFKA__OUTPUT_TOPIC"],
                                                          expect=stats.anomalies)]
    events = [json.loads(r.value) for r in read_topic(env["STREAMAE_KAFKA__INCIDENTS_TOPIC"])]
    figures = bench.evaluate(readings, events, anomalies, pumps=4)
    print(f"incidents: {figures}")
    assert figures["episodes_flagged"] >= 0.9 * figures["episodes_labelled"]
    assert figures["covered_once"] == figures["episodes_flagged"]
    assert figures["incidents_without_episode"] <= 2
    assert figures["incident_events"] * 3 <= figures["anomaly_events"]
    opened = figures["incident_events_by_kind"]["opened"]
    assert sum(metrics.registry.get_sample_value("streamae_incidents_opened_total",
                                                 {"severity": s}) or 0
               for s in ("warning", "critical")) == opened
    first = next(e for e in events if e["event"] == "opened")
    assert first["schema"] == "streamae.incident/v1" and first["top_features"]


def anomalous_stream(count: int, start: int, stop: int) -> list[tuple[str, dict]]:
    """Normal demo readings; pump-1's flow ten scales high between ``start`` and ``stop``."""
    flow = SENSORS.index("flow")
    messages = []
    for n, reading in enumerate(DemoStream(seed=11, anomaly_rate=0.0).take(count)):
        body = reading.as_message()
        if start <= n < stop and reading.key == "pump-1":
            body["values"]["flow"] += 10 * SCALES[flow]
            body["label"] = "drift"
        messages.append((reading.key, body))
    return messages


def test_sigkill_during_an_open_incident_then_restart_resolves_it_once(
        daemon_env, produce, read_topic, spawn_daemon):
    env = daemon_env(STREAMAE_KAFKA__SESSION_TIMEOUT_MS="6000",
                     STREAMAE_RETRAIN__ENABLED="false")
    topic, incidents = env["STREAMAE_KAFKA__INPUT_TOPICS"], env["STREAMAE_KAFKA__INCIDENTS_TOPIC"]
    messages = anomalous_stream(2400, start=1600, stop=2000)
    produce(topic, messages[:1800])  # the episode is under way at the end of this part

    def pump1_opened() -> bool:
        events = [json.loads(r.value) for r in read_topic(incidents, idle_s=0.5, timeout_s=5)]
        return any(e["key"] == "pump-1" and e["event"] == "opened" for e in events)

    first = spawn_daemon(env)
    wait_for(pump1_opened, 300, "pump-1's incident opened")
    first.send_signal(signal.SIGKILL)
    first.wait(timeout=30)
    produce(topic, messages[1800:])  # the rest of the episode, then 100 quiet readings each
    second = spawn_daemon(env)
    wait_for(lambda: committed(env, 1) >= len(messages), 240, "the rest committed")
    stop_when_started(second)
    assert second.wait(timeout=60) == 0

    restored = re.findall(r"event=incidents_restored .* open=(\d+)",
                          Path(second.log_path).read_text())
    assert restored and int(restored[0]) >= 1, "the restart found no open incident"
    events = [json.loads(r.value) for r in read_topic(incidents)]
    assert max(Counter((e["id"], e["sequence"]) for e in events).values()) == 1
    kinds = Counter((e["id"], e["event"]) for e in events)
    ids = {e["id"] for e in events}
    assert all(kinds[(i, "opened")] == 1 and kinds[(i, "resolved")] == 1 for i in ids)
    episode_ts = [m[1]["ts"] for m in messages if m[1]["label"] == "drift"]
    pump1 = [e for e in events if e["key"] == "pump-1" and e["event"] == "resolved"
             and e["started_ts_ms"] <= episode_ts[-1] and e["last_flagged_ts_ms"] >= episode_ts[0]]
    assert len(pump1) == 1, pump1
    assert pump1[0]["resolution"] == "quiet" and pump1[0]["resolved_ts_ms"] > episode_ts[-1]
    assert pump1[0]["flagged_readings"] >= 90  # of 100: the killed run's count was kept
    print(f"incidents after SIGKILL: events={len(events)} incidents={len(ids)} "
          f"pump-1={pump1[0]['flagged_readings']} flagged of 100")
