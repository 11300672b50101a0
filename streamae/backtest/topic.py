"""A range of an input topic as a backtest recording: what the daemon consumed, replayed.

``streamae backtest --topic T`` reads every partition of ``T`` between two offsets or two
times (inclusive; open ends are the topic's beginning and its end at the time of the call),
with no consumer group and nothing committed, so a live deployment is not disturbed. The
records are put in time order (broker timestamp, then partition and offset) and read as
the daemon's JSON input messages (``{"key", "ts", "values"}``): a body without ``key``
takes the message key and one without ``ts`` the broker timestamp. A record that is not
such a message is skipped and counted, as the daemon would have dead-lettered it.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass
from typing import Any

from kafka import KafkaConsumer, TopicPartition
from kafka.errors import KafkaError

from streamae.backtest.recording import Columns, Recording, recording_from_objects
from streamae.exceptions import InfrastructureError, StreamaeError
from streamae.kafka_io import security_config
from streamae.settings import KafkaSettings

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TopicRange:
    """Bounds are inclusive; an offset bound applies to every partition."""

    topic: str
    from_offset: int | None = None
    to_offset: int | None = None
    from_ms: int | None = None
    to_ms: int | None = None

    def describe(self) -> str:
        bounds = [f"{name}={value}" for name, value in (
            ("from_offset", self.from_offset), ("to_offset", self.to_offset),
            ("from_ms", self.from_ms), ("to_ms", self.to_ms)) if value is not None]
        return f"topic:{self.topic}" + (f" ({', '.join(bounds)})" if bounds else "")


def read_topic_recording(kafka: KafkaSettings, wanted: TopicRange, columns: Columns,
                         timeout_s: float = 300.0) -> Recording:
    """The range as a recording; StreamaeError when it holds no readable message."""
    records = read_range(kafka, wanted, timeout_s)
    objects, skipped = [], 0
    for record in records:
        body = message_object(record)
        if body is None:
            skipped += 1
        else:
            objects.append(body)
    if skipped:
        log.warning("event=backtest_records_skipped topic=%s skipped=%d reason=not_a_json_"
                    "input_message", wanted.topic, skipped)
    if not objects:
        raise StreamaeError(f"{wanted.describe()}: no JSON input message in the range "
                            f"({len(records)} records)")
    named = Columns(label=columns.label, key="key", time="ts", features=columns.features,
                    exclude=columns.exclude)
    return recording_from_objects(objects, named, wanted.describe())


def message_object(record: Any) -> dict | None:
    """The record's JSON body with its key and ts filled in, or None if it is not one."""
    try:
        body = json.loads(record.value)
    except (TypeError, ValueError):
        return None
    if not isinstance(body, dict) or not isinstance(body.get("values"), list | dict):
        return None
    if "key" not in body:
        body["key"] = record.key.decode("utf-8", "replace") if record.key else "all"
    if "ts" not in body:
        body["ts"] = record.timestamp
    return body


def read_range(kafka: KafkaSettings, wanted: TopicRange, timeout_s: float) -> list[Any]:
    """Every record of the range, in time order; raises if the end is not reached in time
    (a report on part of a range would be silently wrong)."""
    try:
        consumer = KafkaConsumer(**security_config(kafka), group_id=None,
                                 enable_auto_commit=False, allow_auto_create_topics=False)
    except KafkaError as exc:
        raise InfrastructureError(f"cannot connect to read {wanted.topic}: {exc}") from exc
    try:
        partitions = consumer.partitions_for_topic(wanted.topic)
        if not partitions:
            raise StreamaeError(f"topic {wanted.topic} not found")
        tps = [TopicPartition(wanted.topic, p) for p in sorted(partitions)]
        starts, ends = _bounds(consumer, tps, wanted)
        records = _read(consumer, {tp: (starts[tp], ends[tp]) for tp in tps
                                   if starts[tp] < ends[tp]}, timeout_s)
    except KafkaError as exc:
        raise InfrastructureError(f"cannot read {wanted.topic}: {exc}") from exc
    finally:
        consumer.close()
    records.sort(key=lambda r: (r.timestamp, r.partition, r.offset))
    return records


def _bounds(consumer: KafkaConsumer, tps: list[TopicPartition],
            wanted: TopicRange) -> tuple[dict, dict]:
    """Per partition: the first offset in the range and the first one past it."""
    first, last = consumer.beginning_offsets(tps), consumer.end_offsets(tps)
    starts, ends = dict(first), dict(last)
    if wanted.from_offset is not None:
        starts = {tp: max(starts[tp], wanted.from_offset) for tp in tps}
    if wanted.to_offset is not None:
        ends = {tp: min(ends[tp], wanted.to_offset + 1) for tp in tps}
    if wanted.from_ms is not None:
        starts = {tp: max(starts[tp], _at(consumer, tp, wanted.from_ms, last[tp]))
                  for tp in tps}
    if wanted.to_ms is not None:
        ends = {tp: min(ends[tp], _at(consumer, tp, wanted.to_ms + 1, last[tp])) for tp in tps}
    return starts, ends


def _at(consumer: KafkaConsumer, tp: TopicPartition, ms: int, end: int) -> int:
    """The first offset with a timestamp >= ``ms`` (the end when there is none)."""
    found = consumer.offsets_for_times({tp: ms}).get(tp)
    return end if found is None else found.offset


def _read(consumer: KafkaConsumer, spans: dict[TopicPartition, tuple[int, int]],
          timeout_s: float) -> list[Any]:
    if not spans:
        return []
    consumer.assign(list(spans))
    for tp, (start, _) in spans.items():
        consumer.seek(tp, start)
    records: list[Any] = []
    deadline = time.monotonic() + timeout_s
    while any(consumer.position(tp) < end for tp, (_, end) in spans.items()):
        if time.monotonic() > deadline:
            raise InfrastructureError(f"could not read the range in {timeout_s:.0f}s")
        for tp, batch in consumer.poll(timeout_ms=500).items():
            end = spans[tp][1]
            records.extend(r for r in batch if r.offset < end)
    return records
