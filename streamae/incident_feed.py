"""Between the daemon and the incident tracker: observations from scored samples in,
``streamae.incident/v1`` events out through the daemon's own send path, state restored
from the incidents topic.

Events go through the daemon's ``send`` (so an input offset is committed only after the
incident events it caused are acknowledged, like its anomaly events), keyed by incident id
on a compacted topic; so do the tracker's state snapshots, on a compacted topic of their
own (``kafka.incident_state_topic``: a pager reading the incidents topic sees events
only). After every partition assignment (the first one at start, and after each
rebalance) the tracker is rebuilt from both topics before any record of the new
assignment is counted; see :mod:`streamae.incidents`.
"""

from __future__ import annotations

import json
import logging
import math
import time
from collections.abc import Callable, Iterable
from typing import Any

import numpy as np

from streamae.incidents import OPENED, RESOLVED, IncidentTracker, Observation, Position
from streamae.intake import Batch, Sample
from streamae.kafka_io import read_to_end
from streamae.messages import encode_json
from streamae.metrics import Metrics
from streamae.settings import IncidentSettings, KafkaSettings

log = logging.getLogger(__name__)

Send = Callable[[str, bytes, bytes], None]  # (topic, value, key)


def tracker_from(settings: IncidentSettings, top_k: int,
                 clock: Callable[[], float] = time.time) -> IncidentTracker:
    return IncidentTracker(
        open_flags=settings.open_flags, open_readings=settings.open_readings,
        quiet_readings=settings.quiet_readings, critical_margin=settings.critical_margin,
        update_margin=settings.update_margin, update_factor=settings.update_factor,
        update_interval_ms=int(settings.update_interval_seconds * 1000),
        stale_ms=int(settings.stale_seconds * 1000),
        top_k=top_k, max_keys=settings.max_keys, clock=clock)


def observation(sample: Sample, score: float, flagged: bool, threshold: float | None,
                features: tuple[tuple[str, float], ...], now_ms: int) -> Observation:
    record = sample.record
    key = sample.key if sample.key is not None else f"{record.topic}/{record.partition}"
    ts = sample.ts_ms if sample.ts_ms is not None else (record.timestamp or now_ms)
    return Observation(key, int(ts), float(score),
                       math.inf if threshold is None else float(threshold), bool(flagged),
                       Position(record.topic, record.partition, record.offset), features)


class IncidentFeed:
    """Owns the tracker for the daemon; ``observe`` after each scored batch."""

    def __init__(self, kafka: KafkaSettings, settings: IncidentSettings, top_k: int,
                 metrics: Metrics, send: Send, clock: Callable[[], float] = time.time) -> None:
        self.kafka, self.topic = kafka, kafka.incidents_topic
        self.state_topic = kafka.incident_state_topic
        self.tracker = tracker_from(settings, top_k, clock)
        self.metrics, self.send, self.clock = metrics, send, clock
        self.reload_needed = True  # set again by every partition assignment

    def restore(self, assigned: Iterable[Any]) -> int:
        """Rebuild the tracker from the incidents topic for the partitions ``assigned``."""
        owned = {(tp.topic, tp.partition) for tp in assigned}
        events = []
        records = [*read_to_end(self.kafka, self.topic),
                   *read_to_end(self.kafka, self.state_topic)]
        for record in records:
            try:
                events.append(json.loads(record.value))
            except (TypeError, ValueError):
                log.warning("event=incident_unreadable offset=%d", record.offset)
        self.tracker.reset()
        count = self.tracker.restore(events, owned=lambda t, p: (t, p) in owned)
        self.reload_needed = False
        self._set_gauges()
        log.info("event=incidents_restored topics=%s,%s records=%d open=%d partitions=%d",
                 self.topic, self.state_topic, len(events), count, len(owned))
        return count

    def observe(self, batch: Batch, scores: np.ndarray, flags: np.ndarray,
                threshold: float | None,
                features: dict[int, tuple[tuple[str, float], ...]]) -> None:
        now_ms = int(self.clock() * 1000)
        limit = math.inf if threshold is None else float(threshold)
        observe, quiet, publish = self.tracker.observe, self.tracker.quiet, self._publish
        for i, (record, key, ts, score, flagged) in enumerate(zip(
                batch.records, batch.keys, batch.ts, scores.tolist(),
                flags.astype(bool).tolist(), strict=True)):
            if key is None:
                key = f"{record.topic}/{record.partition}"
            if ts is None:
                ts = record.timestamp or now_ms
            if not flagged and quiet(key, int(ts)):
                continue
            events = observe(Observation(key, int(ts), score, limit, flagged,
                                         Position(record.topic, record.partition,
                                                  record.offset), features.get(i, ())))
            if events:
                publish(events)
        self._publish(self.tracker.sweep())
        for state in self.tracker.snapshot():
            self.send(self.state_topic, encode_json(state), state["id"].encode())
        self._set_gauges()

    def _publish(self, events: list[dict]) -> None:
        for event in events:
            self.send(self.topic, encode_json(event), event["id"].encode())
            if event["event"] == OPENED:
                self.metrics.incidents_opened.labels(severity=event["severity"]).inc()
            elif event["event"] == RESOLVED:
                self.metrics.incidents_resolved.labels(reason=event["resolution"]).inc()
            log.info("event=incident_%s id=%s key=%s severity=%s peak_score=%.3f "
                     "flagged=%d readings=%d top=%s", event["event"], event["id"],
                     event["key"], event["severity"], event["peak_score"],
                     event["flagged_readings"], event["readings"],
                     ",".join(str(t["feature"]) for t in event["top_features"]))

    def _set_gauges(self) -> None:
        for severity, count in self.tracker.open_by_severity().items():
            self.metrics.incidents_open.labels(severity=severity).set(count)
