"""Sending what a batch produced and waiting until the broker has all of it.

Every record the daemon produces goes through :class:`Delivery`: anomaly events, scores
and dead letters. ``settle`` returns only once each of them is acknowledged, so the offsets
behind them may be committed (at least once). Failures split three ways:

* **the record itself** cannot be stored (the broker refuses its size): a dead letter is
  sent again without its value (*headers-only*), keeping the reason and source position
  and adding ``streamae.value.dropped``, ``streamae.value.bytes`` and
  ``streamae.value.refused_by``, so the committed offset still moves past the poison
  record;
* **the broker is away** (timeouts, leader changes, connection loss): the record is sent
  again, and ``settle`` keeps waiting in short steps, calling ``on_wait`` between them (the
  loop's heartbeat and readiness), until the outage budget is spent;
* anything else (an output refused, the budget spent) is an ``InfrastructureError``.

Exactly once (``transactional``): the records of a turn and its offsets are one Kafka
transaction, begun at the first send and committed by :meth:`commit`. A record cannot be
sent again inside a failed transaction, so any failure aborts it and raises
``InfrastructureError``: the restarted process consumes the batch again from the last
committed offsets, and ``read_committed`` readers never see the aborted outputs. Dead
letters too large for the producer still go headers-only (the client refuses them before
they join the transaction).
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from kafka.errors import (
    CorruptRecordError,
    IllegalStateError,
    InvalidRecordError,
    KafkaError,
    MessageSizeTooLargeError,
    RecordListTooLargeError,
)

from streamae.exceptions import InfrastructureError
from streamae.messages import (
    TOO_LARGE_FOR_DEAD_LETTERS,
    copy_headers,
    dead_letter_headers,
)
from streamae.metrics import Metrics

log = logging.getLogger(__name__)

# The broker (or the client's own size check) refuses this record: sending it again
# cannot help.
RECORD_REFUSED = (MessageSizeTooLargeError, RecordListTooLargeError, InvalidRecordError,
                  CorruptRecordError)
VALUE_DROPPED = "streamae.value.dropped"  # header of a headers-only dead letter
FLUSH_STEP_S = 5.0  # one wait in settle(); the loop's heartbeat is refreshed between steps


@dataclass
class Outgoing:
    topic: str
    value: bytes | None
    key: bytes | None
    headers: list[tuple[str, bytes]]
    source: Any = None  # the input record a dead letter carries (None: an output)
    future: Any = None  # None: not sent yet (or to be sent again)


class Delivery:
    """Sends records and settles them; one instance per daemon, used by its loop only."""

    def __init__(self, producer: Any, dead_letter_topic: str, metrics: Metrics, *,
                 outage_budget_s: float = 600.0, flush_step_s: float = FLUSH_STEP_S,
                 on_wait: Callable[[float], None] | None = None,
                 clock: Callable[[], float] = time.time, transactional: bool = False) -> None:
        self.producer = producer
        self.dead_letter_topic = dead_letter_topic
        self.metrics = metrics
        self.outage_budget_s = outage_budget_s
        self.flush_step_s = flush_step_s
        self.on_wait = on_wait or (lambda _waited: None)
        self.clock = clock
        self._pending: list[Outgoing] = []
        self.transactional = transactional
        self._in_transaction = False

    @property
    def pending(self) -> int:
        return len(self._pending)

    def send(self, topic: str, value: bytes | None, key: bytes | None,
             headers: list[tuple[str, bytes]] | None = None) -> None:
        """Queue one output record (anomaly event, score)."""
        self._submit(Outgoing(topic, value, key, headers or []))

    def dead_letter(self, record: Any, error: BaseException) -> str:
        """Queue the dead letter of ``record``: its bytes untouched, its headers copied
        safely, plus headers naming the error and the source; returns the reason."""
        reason = str(getattr(error, "reason", "unexpected"))
        headers = copy_headers(record.headers) + dead_letter_headers(
            error, topic=record.topic, partition=record.partition, offset=record.offset,
            now_ms=int(self.clock() * 1000))
        self.metrics.dead_letters.labels(reason=reason).inc()
        log.warning("event=dead_letter reason=%s error=%s topic=%s partition=%d offset=%d "
                    "detail=%r", reason, type(error).__name__, record.topic, record.partition,
                    record.offset, str(getattr(error, "detail", error))[:200])
        self._submit(Outgoing(self.dead_letter_topic, record.value, record.key, headers,
                              source=record))
        return reason

    def settle(self, budget_s: float | None = None) -> None:
        """Return once every queued record is acknowledged (see the module docstring);
        ``budget_s`` replaces the outage budget (a stop has less time)."""
        budget = self.outage_budget_s if budget_s is None else budget_s
        if self.transactional:
            self._settle_transaction(budget)
            return
        outage_since: float | None = None
        while self._pending:
            for item in self._pending:
                if item.future is None:
                    self._submit(item, queued=True)
            with contextlib.suppress(KafkaError):  # not all acknowledged yet: see below
                self.producer.flush(timeout=self.flush_step_s)
            self._pending = [item for item in self._pending if not self._settled(item)]
            if not self._pending:
                break
            now = time.monotonic()
            outage_since = now if outage_since is None else outage_since
            waited = now - outage_since
            if waited >= budget:
                raise InfrastructureError(
                    f"{len(self._pending)} records not acknowledged after {waited:.0f}s "
                    f"(outage budget {budget:.0f}s)")
            self.on_wait(waited)

    def commit(self, offsets: dict, group_metadata: Any) -> None:
        """Exactly once: commit this turn's transaction with ``offsets`` (after ``settle``)."""
        if not offsets and not self._in_transaction:
            return
        try:
            self._begin()
            if offsets:
                self.producer.send_offsets_to_transaction(offsets, group_metadata)
            self.producer.commit_transaction()
        except KafkaError as exc:
            self.abort(f"cannot commit the transaction: {exc!r}")
        self._in_transaction = False

    def abort(self, why: str) -> None:
        """Abort the open transaction (if any) and raise InfrastructureError(why)."""
        self._pending.clear()
        if self._in_transaction:
            self._in_transaction = False
            with contextlib.suppress(KafkaError):
                self.producer.abort_transaction()
        raise InfrastructureError(f"transaction aborted: {why}")

    # -- internals --------------------------------------------------------------------
    def _begin(self) -> None:
        if self.transactional and not self._in_transaction:
            self.producer.begin_transaction()
            self._in_transaction = True

    def _settle_transaction(self, budget_s: float) -> None:
        """Wait for every ack in steps (the loop's heartbeat between them); any failure or
        the budget spent aborts the transaction."""
        started = time.monotonic()
        while any(not item.future.is_done for item in self._pending):
            waited = time.monotonic() - started
            if waited >= budget_s:
                self.abort(f"{len(self._pending)} records not acknowledged after "
                           f"{waited:.0f}s")
            with contextlib.suppress(KafkaError):
                self.producer.flush(timeout=self.flush_step_s)
            if any(not item.future.is_done for item in self._pending):
                self.on_wait(time.monotonic() - started)
        failed = [item for item in self._pending if not item.future.succeeded()]
        if failed:
            self.abort(f"{len(failed)} records failed: {failed[0].future.exception!r}")
        self._pending.clear()

    def _submit(self, item: Outgoing, queued: bool = False) -> None:
        """Hand one record to the producer; ``queued``: it is in ``_pending`` already."""
        if not queued:
            self._pending.append(item)
        try:
            self._begin()
            item.future = self.producer.send(item.topic, value=item.value, key=item.key,
                                             headers=item.headers)
        except (*RECORD_REFUSED, ValueError, TypeError) as exc:
            self._strip_value(item, exc)
            self._submit(item, queued=True)
        except IllegalStateError as exc:
            raise InfrastructureError(f"producer closed: {exc}") from exc
        except KafkaError as exc:  # metadata or buffer wait timed out: try again in settle
            if self.transactional:
                self.abort(f"cannot send to {item.topic}: {exc!r}")
            log.warning("event=send_delayed topic=%s error=%r", item.topic, exc)
            item.future = None

    def _settled(self, item: Outgoing) -> bool:
        """True when acknowledged; a failed send is prepared to go again."""
        future = item.future
        if future is None or not future.is_done:
            return False
        if future.succeeded():
            return True
        error = future.exception
        if isinstance(error, RECORD_REFUSED):
            self._strip_value(item, error)
        else:
            log.warning("event=send_retry topic=%s error=%r", item.topic, error)
        item.future = None
        return False

    def _strip_value(self, item: Outgoing, error: Exception) -> None:
        """A dead letter the broker will not store becomes the same letter without its
        value; anything else refused is an infrastructure failure."""
        if item.source is None:
            raise InfrastructureError(f"{item.topic} refused a record: {error!r}") from error
        record, item.source = item.source, None
        size = len(record.value or b"")
        item.value = b""
        item.headers = [*item.headers,
                        (VALUE_DROPPED, TOO_LARGE_FOR_DEAD_LETTERS.encode()),
                        ("streamae.value.bytes", str(size).encode()),
                        ("streamae.value.refused_by", type(error).__name__.encode())]
        log.warning("event=dead_letter_headers_only reason=%s topic=%s partition=%d offset=%d "
                    "bytes=%d error=%r", TOO_LARGE_FOR_DEAD_LETTERS, record.topic,
                    record.partition, record.offset, size, str(error)[:200])
