"""Records kafka-python cannot parse, and how the daemon gets past them with a trace.

kafka-python decodes every header key as strict UTF-8 while it walks a fetched record
batch. A record whose header key is not UTF-8 (any other client may write one) makes
``poll`` raise ``CorruptRecordError`` (a ``UnicodeDecodeError`` inside). What we saw with
kafka-python 3.0.12 against a real broker:

* the records of the batch before the bad one are returned by the poll before; the bad
  one's offset is the partition's position when the error is raised;
* every record after it *in the same batch* is unreadable too: a fetch always starts at
  the batch's first record, so seeking into the batch meets the bad record again;
* polling again without moving the position spins inside ``poll`` at 100 % CPU for good
  (the failed record iterator stays "in line" and yields nothing).

So on that error the daemon locates each unreadable range with a probe consumer of its
own (public API only): per assigned partition, can a fetch at its position be parsed? If
not, a binary search over seek positions finds the first offset that parses again. The
daemon seeks its consumer there and sends one headers-only dead letter per skipped offset
(reason ``unreadable_record``), so the committed offset moves past and nothing vanishes
without a trace.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from kafka import KafkaConsumer, TopicPartition
from kafka.errors import CorruptRecordError, KafkaError

from streamae.exceptions import InfrastructureError
from streamae.messages import UNREADABLE

log = logging.getLogger(__name__)

PROBE_WAIT_MS = 3_000  # one probe fetch; a partition with data answers far sooner


class UnreadableRecords(Exception):
    """Raised by ``kafka_io.poll_available``: ``records`` were read before ``cause``
    stopped the poll.

    ``skipped``: stand-ins of the records the client read past without their headers
    (confluent-kafka), so there is nothing to locate or seek.
    """

    def __init__(self, records: list[Any], cause: Exception,
                 skipped: Sequence[UnreadableRecord] = ()) -> None:
        super().__init__(str(cause))
        self.records = records
        self.cause = cause
        self.skipped = list(skipped)


class UnreadableError(Exception):
    """The dead-letter error of a record the client cannot parse."""

    reason = UNREADABLE

    def __init__(self, detail: str) -> None:
        super().__init__(detail)
        self.detail = detail


@dataclass(frozen=True)
class UnreadableRecord:
    """Stands in for a ConsumerRecord the client could not build (headers-only letter)."""

    topic: str
    partition: int
    offset: int
    key: bytes | None = None
    value: bytes = b""
    headers: list = field(default_factory=list)
    timestamp: int | None = None


def locate(consumer: KafkaConsumer, client_config: Mapping[str, Any]
           ) -> dict[TopicPartition, range]:
    """For each assigned partition that cannot be read at its position, the offsets to skip
    (from the position up to the first offset that parses again). ``client_config``: the
    connection options (``kafka_io.security_config``) for the probe consumer."""
    positions = {tp: consumer.position(tp) for tp in consumer.assignment()}
    probe = KafkaConsumer(**client_config, group_id=None, enable_auto_commit=False)
    try:
        ends = probe.end_offsets(list(positions))
        found = {}
        for tp, position in positions.items():
            end = ends.get(tp, position)
            if position < end and not _readable(probe, tp, position):
                found[tp] = range(position, _first_readable(probe, tp, position, end))
        return found
    except KafkaError as exc:
        raise InfrastructureError(f"cannot locate an unreadable record: {exc!r}") from exc
    finally:
        probe.close()


def _first_readable(probe: KafkaConsumer, tp: TopicPartition, bad: int, end: int) -> int:
    """Binary search: offsets from ``bad`` up to the answer fail, the answer parses (or is
    the end of the partition)."""
    low, high = bad, end
    while high - low > 1:
        middle = (low + high) // 2
        if _readable(probe, tp, middle):
            high = middle
        else:
            low = middle
    return high


def _readable(probe: KafkaConsumer, tp: TopicPartition, offset: int) -> bool:
    """Can a fetch starting at ``offset`` be parsed? (Seeking elsewhere after a failure
    also drops the probe's broken iterator, so it never spins.)"""
    probe.assign([tp])
    probe.seek(tp, offset)
    deadline = time.monotonic() + PROBE_WAIT_MS / 1000
    while time.monotonic() < deadline:
        try:
            if probe.poll(timeout_ms=500, max_records=1):
                return True
        except CorruptRecordError:
            return False
    log.warning("event=probe_without_answer topic=%s partition=%d offset=%d", tp.topic,
                tp.partition, offset)
    return True
