"""Sending what a batch produced and knowing when the broker has all of it.

Every record the daemon produces goes through :class:`Delivery`: anomaly events, scores
and dead letters. The loop does not wait for acks per batch: the records of a loop turn
are counted in a :class:`Turn`, the producer's callbacks acknowledge them, and
:meth:`Delivery.collect` returns the turns whose records are all acknowledged, so the
offsets behind them may be committed (at least once). ``settle`` waits for every ack (a
stop, exactly once). Failures split three ways:

* **the record itself** cannot be stored (the broker refuses its size): a dead letter is
  sent again without its value (*headers-only*), keeping the reason and source position
  and adding ``streamae.value.dropped``, ``streamae.value.bytes`` and
  ``streamae.value.refused_by``, so the committed offset still moves past the poison
  record;
* **the broker is away** (timeouts, leader changes, connection loss): the record is sent
  again (by the loop thread, on its next ``collect``); a turn waiting longer than a flush
  step calls ``on_wait`` (readiness), one waiting longer than the outage budget is an
  ``InfrastructureError``; ``settle`` waits in short steps the same way;
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

import collections
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
    turn: Turn | None = None  # the loop turn whose offsets wait for this record


class Turn:
    """The outputs of one loop turn and what becomes done once all are acknowledged.

    ``sent`` is written by the loop thread only, ``acked`` appended to by the producer's
    callbacks (its IO thread): one writer each, so no lock is needed."""

    __slots__ = ("acked", "done", "sealed", "sent", "started")

    def __init__(self, started: float) -> None:
        self.sent = 0
        self.acked: list[None] = []
        self.done: Any = None
        self.sealed = False
        self.started = started

    @property
    def complete(self) -> bool:
        return self.sealed and len(self.acked) >= self.sent

    def ack(self, _metadata: Any) -> None:
        self.acked.append(None)


class Delivery:
    """Sends records and settles them; one instance per daemon, used by its loop only.

    The loop does not wait for acks: each turn's outputs are counted in a :class:`Turn`,
    acknowledged from the producer's callbacks, and :meth:`collect` hands back what each
    completed turn covers (its input records, to be marked done and committed)."""

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
        self._pending: list[Outgoing] = []  # exactly once: this transaction's records
        self._failed: collections.deque[tuple[Outgoing, BaseException]] = collections.deque()
        self._unsent: list[Outgoing] = []  # the client refused to take them for now
        self._turn = Turn(time.monotonic())
        self._turns: list[Turn] = []  # sealed, not yet complete
        self.transactional = transactional
        self._in_transaction = False

    @property
    def pending(self) -> int:
        """Records sent and not acknowledged yet."""
        return sum(t.sent - len(t.acked) for t in (*self._turns, self._turn))

    def send(self, topic: str, value: bytes | None, key: bytes | None,
             headers: list[tuple[str, bytes]] | None = None) -> None:
        """Queue one output record (anomaly event, score)."""
        self._submit(Outgoing(topic, value, key, headers or [], turn=self._turn))

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
                              source=record, turn=self._turn))
        return reason

    def seal(self, done: Any) -> None:
        """End this turn: ``done`` is handed back by :meth:`collect` once every record
        sent during the turn is acknowledged."""
        turn, self._turn = self._turn, Turn(time.monotonic())
        turn.done, turn.sealed = done, True
        self._turns.append(turn)

    def in_flight(self) -> int:
        """Sealed turns still waiting for acks."""
        return len(self._turns)

    def collect(self, budget_s: float | None = None) -> list[Turn]:
        """Without waiting: send failed records again; the turns now complete (their
        ``done``: what the loop sealed them with). A turn waiting longer than the outage
        budget is an InfrastructureError; one waiting a flush step tells ``on_wait``."""
        self._retry()
        done = [turn for turn in self._turns if turn.complete]
        if done:
            self._turns = [turn for turn in self._turns if not turn.complete]
        if self._turns:
            waited = time.monotonic() - self._turns[0].started
            budget = self.outage_budget_s if budget_s is None else budget_s
            if waited >= budget:
                raise InfrastructureError(
                    f"{self.pending} records not acknowledged after {waited:.0f}s "
                    f"(outage budget {budget:.0f}s)")
            if waited >= self.flush_step_s:
                self.on_wait(waited)
        return done

    def wait_below(self, max_turns: int) -> list[Turn]:
        """Wait (in short steps) until at most ``max_turns`` turns are in flight: the
        loop's bound on what is polled and not yet acknowledged."""
        done = self.collect()
        while len(self._turns) > max_turns:
            time.sleep(0.001)
            done += self.collect()
        return done

    def settle(self, budget_s: float | None = None) -> None:
        """Return once every queued record is acknowledged (see the module docstring);
        ``budget_s`` replaces the outage budget (a stop has less time)."""
        budget = self.outage_budget_s if budget_s is None else budget_s
        if self.transactional:
            self._settle_transaction(budget)
            return
        outage_since: float | None = None
        while True:
            self._retry()
            with contextlib.suppress(KafkaError):  # not all acknowledged yet: see below
                self.producer.flush(timeout=self.flush_step_s)
            if not self._failed and not self._unsent and self.pending == 0:
                break
            now = time.monotonic()
            outage_since = now if outage_since is None else outage_since
            waited = now - outage_since
            if waited >= budget:
                raise InfrastructureError(
                    f"{self.pending} records not acknowledged after {waited:.0f}s "
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
        self._turns.clear()
        self._turn = Turn(time.monotonic())
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

    def _submit(self, item: Outgoing, again: bool = False) -> None:
        """Hand one record to the producer; ``again``: it was counted in its turn before."""
        if not again:
            item.turn.sent += 1
            if self.transactional:
                self._pending.append(item)
        try:
            self._begin()
            future = self.producer.send(item.topic, value=item.value, key=item.key,
                                        headers=item.headers)
        except (*RECORD_REFUSED, ValueError, TypeError) as exc:
            self._strip_value(item, exc)
            self._submit(item, again=True)
            return
        except IllegalStateError as exc:
            raise InfrastructureError(f"producer closed: {exc}") from exc
        except KafkaError as exc:  # metadata or buffer wait timed out: try again later
            if self.transactional:
                self.abort(f"cannot send to {item.topic}: {exc!r}")
            log.warning("event=send_delayed topic=%s error=%r", item.topic, exc)
            item.future = None
            self._unsent.append(item)
            return
        item.future = future
        future.add_callback(item.turn.ack)
        future.add_errback(self._failed_send, item)

    def _failed_send(self, item: Outgoing, error: BaseException) -> None:
        """Errback (producer IO thread): the loop thread decides in ``_retry``."""
        self._failed.append((item, error))

    def _retry(self) -> None:
        """Loop thread: failed records go again (refused dead letters headers-only)."""
        if self.transactional:
            return  # a failure aborts the transaction in _settle_transaction
        unsent, self._unsent = self._unsent, []
        for item in unsent:
            self._submit(item, again=True)
        while self._failed:
            item, error = self._failed.popleft()
            if isinstance(error, RECORD_REFUSED):
                self._strip_value(item, error)
            else:
                log.warning("event=send_retry topic=%s error=%r", item.topic, error)
            self._submit(item, again=True)

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
