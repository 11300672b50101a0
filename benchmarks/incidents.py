"""Incidents on the demo stream: does every labelled episode page exactly once?

    .venv/bin/python benchmarks/incidents.py [--count 100000] [--seed 0]

Produces the stream ``streamae demo`` produces (same generator and defaults: 4 pumps,
0.002 episodes per reading, one reading every 100 ms) to fresh topics, runs the daemon
in process over it as ``streamae run`` does (cold start and retraining included) and
reads back its anomaly and incident events.
Uses STREAMAE_BENCH_BOOTSTRAP when set, else starts the project's own broker. Prints:

- episodes: runs of non-normal readings of one pump with at least one visible (labelled)
  reading; those the detector flagged at least once, and how many incidents cover each
  (overlap in event time with ``[started_ts_ms, last_flagged_ts_ms]`` of an incident of
  that pump); the goal is one. An episode never flagged is the detector's miss, listed
  apart: no incident can cover it;
- incidents that cover no episode (false alarms that persisted N of M), and apart those
  over episodes of faint readings only (labelled anomalous, a detection);
- anomaly events vs incident events (goal: at least 10x fewer incident events);
- the delay from each episode's first visible reading to its incident's ``opened``, in
  event time and in readings of that pump (median, 90th percentile, max).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
import uuid
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from kafka import KafkaConsumer, KafkaProducer
from kafka.admin import KafkaAdminClient, NewTopic

from streamae.demo import CLEAN_PREFIX, KINDS, DemoReading, DemoStream
from streamae.service import serve
from streamae.settings import Settings

PERIOD_MS = 100


@dataclass
class Episode:
    key: str
    kind: str
    start_ms: int  # first non-normal reading
    end_ms: int  # last non-normal reading
    first_visible_ms: int | None  # first reading labelled with the kind (not faint)
    visible: int = 0  # readings labelled with the kind


def episodes(readings: list[DemoReading]) -> list[Episode]:
    """Runs of non-normal readings of each key, in order."""
    found: list[Episode] = []
    current: dict[str, Episode] = {}
    for r in readings:
        episode = current.get(r.key)
        if r.label == "normal":
            if episode is not None:
                found.append(current.pop(r.key))
            continue
        visible = r.label in KINDS
        if episode is None:
            current[r.key] = Episode(r.key, r.label.removesuffix("-faint"), r.ts_ms, r.ts_ms,
                                     r.ts_ms if visible else None, int(visible))
            continue
        episode.end_ms = r.ts_ms
        episode.visible += visible
        if visible and episode.first_visible_ms is None:
            episode.first_visible_ms = r.ts_ms
    return sorted(found + list(current.values()), key=lambda e: e.start_ms)


def final_incidents(events: list[dict]) -> list[dict]:
    """The latest event of each incident id."""
    latest: dict[str, dict] = {}
    for event in events:
        if event["id"] not in latest or event["sequence"] >= latest[event["id"]]["sequence"]:
            latest[event["id"]] = event
    return list(latest.values())


def covering(episode: Episode, incidents: list[dict]) -> list[dict]:
    return [i for i in incidents if i["key"] == episode.key
            and i["started_ts_ms"] <= episode.end_ms
            and i["last_flagged_ts_ms"] >= episode.start_ms]


def flagged_in(episode: Episode, anomalies: list[dict]) -> int:
    return sum(1 for a in anomalies if a["key"] == episode.key
               and episode.start_ms <= a["event_ts_ms"] <= episode.end_ms)


def evaluate(readings: list[DemoReading], events: list[dict], anomalies: list[dict],
             pumps: int) -> dict:
    """The figures of the module docstring, as a dict."""
    every = episodes(readings)
    labelled = [e for e in every if e.first_visible_ms is not None]
    detected = [e for e in labelled if flagged_in(e, anomalies)]
    incidents = final_incidents(events)
    # An incident over an episode of faint readings only (labelled, but too faint to count
    # as a visible episode) is a detection, not a false incident.
    on_anomalies = {i["id"] for e in every for i in covering(e, incidents)}
    covers = [covering(e, incidents) for e in detected]
    shared = Counter(i["id"] for cover in covers for i in cover)
    opened = {e["id"]: e["opened_ts_ms"] for e in events if e["event"] == "opened"}
    delays = [opened[cover[0]["id"]] - e.first_visible_ms
              for e, cover in zip(detected, covers, strict=True) if len(cover) == 1]
    delay = np.array(delays or [0], dtype=float)
    label = {(r.key, r.ts_ms): r.label for r in readings}
    return {
        "episodes_labelled": len(labelled),
        # (key, kind, start, visible readings): labelled episodes the detector never flagged
        "episodes_never_flagged": [(e.key, e.kind, e.start_ms, e.visible)
                                   for e in labelled if e not in detected],
        "episodes_flagged": len(detected),
        "covered_once": sum(len(c) == 1 for c in covers),
        "covered_never": sum(not c for c in covers),
        "covered_twice_or_more": sum(len(c) > 1 for c in covers),
        "incidents": len(incidents),
        "incidents_covering_several_episodes": sum(n > 1 for n in shared.values()),
        "incidents_on_faint_episodes_only": len(on_anomalies - set(shared)),
        "incidents_without_episode": len(incidents) - len(on_anomalies),
        "incident_events": len(events),
        "incident_events_by_kind": dict(Counter(e["event"] for e in events)),
        "anomaly_events": len(anomalies),
        "anomaly_events_on_normal_readings": sum(
            label.get((a["key"], a["event_ts_ms"])) == "normal" for a in anomalies),
        "ratio": len(anomalies) / max(len(events), 1),
        "delay_ms": {"median": float(np.median(delay)),
                     "p90": float(np.percentile(delay, 90)), "max": float(delay.max())},
        "delay_readings_of_the_key_median": float(np.median(delay)) / (pumps * PERIOD_MS),
        "covered_once_by_kind": {kind: sum(1 for e, c in zip(detected, covers, strict=True)
                                           if e.kind == kind and len(c) == 1)
                                 for kind in KINDS},
    }


def read_all(bootstrap: str, topic: str) -> list:
    consumer = KafkaConsumer(topic, bootstrap_servers=bootstrap, group_id=None,
                             auto_offset_reset="earliest", enable_auto_commit=False)
    records, quiet = [], time.monotonic()
    while time.monotonic() - quiet < 3.0:
        for batch in consumer.poll(timeout_ms=300).values():
            records.extend(batch)
            quiet = time.monotonic()
    consumer.close()
    return records


def run(bootstrap: str, count: int, seed: int, pumps: int, anomaly_rate: float,
        clean_prefix: int = 0) -> dict:
    topic = f"incidents-bench-{uuid.uuid4().hex[:8]}"
    names = {"in": topic, "out": f"{topic}-anomalies", "inc": f"{topic}-incidents",
             "state": f"{topic}-incidents-state", "dead": f"{topic}-dead"}
    admin = KafkaAdminClient(bootstrap_servers=bootstrap)
    compacted = {"cleanup.policy": "compact"}
    admin.create_topics([NewTopic(n, 1, 1, topic_configs=compacted if "incidents" in n else {})
                         for n in names.values()])
    admin.close()
    readings = DemoStream(pumps=pumps, anomaly_rate=anomaly_rate, seed=seed,
                          start_ms=int(time.time() * 1000) - count * PERIOD_MS,
                          clean_prefix=clean_prefix).take(count)
    producer = KafkaProducer(bootstrap_servers=bootstrap, acks=1, linger_ms=20,
                             batch_size=256 * 1024)
    for r in readings:
        producer.send(topic, key=r.key.encode(),
                      value=json.dumps(r.as_message()).encode())
    producer.flush()
    producer.close()
    os.environ.update({
        "STREAMAE_KAFKA__BOOTSTRAP_SERVERS": bootstrap, "STREAMAE_KAFKA__INPUT_TOPICS": topic,
        "STREAMAE_KAFKA__OUTPUT_TOPIC": names["out"],
        "STREAMAE_KAFKA__INCIDENTS_TOPIC": names["inc"],
        "STREAMAE_KAFKA__INCIDENT_STATE_TOPIC": names["state"],
        "STREAMAE_KAFKA__DEAD_LETTER_TOPIC": names["dead"],
        "STREAMAE_KAFKA__GROUP_ID": uuid.uuid4().hex, "STREAMAE_DEVICE": "cpu",
        "STREAMAE_CHECKPOINTS__DIRECTORY": tempfile.mkdtemp(), "STREAMAE_METRICS_PORT": "0",
    })
    started = time.monotonic()
    stats = serve(Settings(), max_messages=count, timeout_s=1800)  # as `streamae run`
    seconds = time.monotonic() - started
    events = [json.loads(r.value) for r in read_all(bootstrap, names["inc"])]
    anomalies = [json.loads(r.value) for r in read_all(bootstrap, names["out"])]
    figures = evaluate(readings, events, anomalies, pumps)
    figures.update(messages=count, scored=stats.scored, seconds=round(seconds, 1))
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--count", type=int, default=100_000, help="demo messages")
    parser.add_argument("--seed", type=int, default=0, help="demo stream seed")
    parser.add_argument("--pumps", type=int, default=4, help="keys of the demo stream")
    parser.add_argument("--anomaly-rate", type=float, default=0.002,
                        help="episodes per reading (streamae demo's default)")
    parser.add_argument("--clean-prefix", type=int, default=CLEAN_PREFIX,
                        help="readings without episodes at the start (streamae demo's flag)")
    args = parser.parse_args()
    from bench_broker import bench_broker  # beside this script; tests import evaluate only

    with bench_broker(Path(tempfile.mkdtemp()) / "kafka", 19592) as bootstrap:
        figures = run(bootstrap, args.count, args.seed, args.pumps, args.anomaly_rate,
                      args.clean_prefix)
    print(json.dumps(figures, indent=1))


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    main()
