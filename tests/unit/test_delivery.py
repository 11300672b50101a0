"""Delivery's decisions on failed sends: retry through an outage within the budget,
headers-only dead letters when the record is refused, anything else infrastructure.
(The broker behaviours themselves are tested against the real broker in tests/integration.)
"""

from __future__ import annotations

from dataclasses import dataclass, field

import pytest
from kafka.errors import KafkaTimeoutError, MessageSizeTooLargeError, NotLeaderForPartitionError

from streamae.delivery import Delivery
from streamae.exceptions import DecodeError, InfrastructureError
from streamae.metrics import Metrics


@dataclass
class Future:
    """Like kafka-python's: callbacks on success, errbacks (with the error) on failure."""

    is_done: bool = False
    exception: Exception | None = None
    callbacks: list = field(default_factory=list)
    errbacks: list = field(default_factory=list)

    def succeeded(self) -> bool:
        return self.is_done and self.exception is None

    def add_callback(self, f, *args):
        self.callbacks.append((f, args))

    def add_errback(self, f, *args):
        self.errbacks.append((f, args))

    def complete(self, outcome: Exception | None) -> None:
        self.is_done, self.exception = True, outcome
        for f, args in self.errbacks if outcome is not None else self.callbacks:
            f(*args, outcome)


@dataclass
class Producer:
    """Each flush completes every open future with the next outcome of ``outcomes``
    (None: acknowledged), then with ``then``; a value over ``refuse_over`` bytes fails
    inside send, like the client's own size check."""

    outcomes: list = field(default_factory=list)
    then: Exception | None = None  # the outcome once ``outcomes`` ran out
    refuse_over: int | None = None
    sent: list = field(default_factory=list)
    open: list = field(default_factory=list)
    calls: list = field(default_factory=list)  # transaction calls, in order

    def begin_transaction(self):
        self.calls.append("begin")

    def send_offsets_to_transaction(self, offsets, group_metadata):
        self.calls.append(("offsets", dict(offsets), group_metadata))

    def commit_transaction(self):
        self.calls.append("commit")

    def abort_transaction(self):
        self.calls.append("abort")

    def send(self, topic, value=None, key=None, headers=None):
        if self.refuse_over is not None and len(value or b"") > self.refuse_over:
            raise MessageSizeTooLargeError("bigger than max_request_size")
        self.sent.append((topic, value, key, list(headers or [])))
        future = Future()
        self.open.append(future)
        return future

    def flush(self, timeout=None):
        outcome = self.outcomes.pop(0) if self.outcomes else self.then
        for future in self.open:
            future.complete(outcome)
        self.open = []


@dataclass
class Record:
    value: bytes | None
    key: bytes | None = b"k"
    headers: list = field(default_factory=lambda: [("origin", b"x")])
    topic: str = "in"
    partition: int = 2
    offset: int = 41


def delivery(producer: Producer, waits: list, budget_s: float = 600.0) -> Delivery:
    return Delivery(producer, "dead", Metrics(), outage_budget_s=budget_s, flush_step_s=0.0,
                    on_wait=waits.append)


def test_sends_failing_through_an_outage_go_again_until_acknowledged():
    producer, waits = Producer([KafkaTimeoutError(), NotLeaderForPartitionError()]), []
    sender = delivery(producer, waits)
    sender.send("out", b"event", b"k")
    sender.settle()
    assert [s[1] for s in producer.sent] == [b"event"] * 3
    assert len(waits) == 2 and sender.pending == 0


def test_an_outage_longer_than_the_budget_is_infrastructure():
    producer, waits = Producer(then=KafkaTimeoutError()), []
    sender = delivery(producer, waits, budget_s=0.05)
    sender.send("out", b"event", b"k")
    with pytest.raises(InfrastructureError, match=r"after \d+s \(outage budget 0s\)"):
        sender.settle()
    assert waits  # the loop heard of each wait (heartbeat, readiness)


def test_a_dead_letter_the_broker_refuses_goes_again_without_its_value():
    producer, waits = Producer([MessageSizeTooLargeError()]), []
    sender = delivery(producer, waits)
    sender.dead_letter(Record(b"v" * 500), DecodeError("oversized", "500 bytes > limit 100"))
    sender.settle()
    (_, first, _, _), (topic, value, key, headers) = producer.sent
    named = dict(headers)
    assert first == b"v" * 500 and (topic, value, key) == ("dead", b"", b"k")
    assert named["origin"] == b"x" and named["streamae.error.reason"] == b"oversized"
    assert named["streamae.value.dropped"] == b"too_large_for_dead_letters"
    assert named["streamae.value.bytes"] == b"500"
    assert named["streamae.value.refused_by"] == b"MessageSizeTooLargeError"
    assert named["streamae.source.offset"] == b"41" and named["streamae.source.partition"] == b"2"


def test_a_dead_letter_over_the_client_limit_goes_headers_only_at_once():
    producer = Producer(refuse_over=100)
    sender = delivery(producer, [])
    sender.dead_letter(Record(b"v" * 500, key=None), ValueError("a bug"))
    sender.settle()
    ((_, value, key, headers),) = producer.sent
    named = dict(headers)
    assert value == b"" and key is None
    assert named["streamae.error.reason"] == b"unexpected"
    assert named["streamae.error.class"] == b"ValueError"


def test_an_output_the_broker_refuses_is_infrastructure():
    sender = delivery(Producer([MessageSizeTooLargeError()]), [])
    sender.send("out", b"event", b"k")
    with pytest.raises(InfrastructureError, match="out refused a record"):
        sender.settle()


def transactional(producer: Producer) -> Delivery:
    return Delivery(producer, "dead", Metrics(), flush_step_s=0.0, transactional=True)


def test_exactly_once_commits_outputs_and_offsets_in_one_transaction():
    producer = Producer()
    sender = transactional(producer)
    sender.send("out", b"a", b"k")
    sender.send("out", b"b", b"k")
    sender.settle()
    sender.commit({"tp": 5}, "group")
    sender.commit({}, "group")  # nothing sent, nothing to commit: no empty transaction
    assert producer.calls == ["begin", ("offsets", {"tp": 5}, "group"), "commit"]


def test_exactly_once_aborts_instead_of_sending_again():
    producer = Producer([KafkaTimeoutError()])
    sender = transactional(producer)
    sender.send("out", b"a", b"k")
    with pytest.raises(InfrastructureError, match="transaction aborted: 1 records failed"):
        sender.settle()
    assert producer.calls == ["begin", "abort"] and len(producer.sent) == 1
    assert sender.pending == 0


def test_a_turn_is_done_only_once_each_of_its_records_is_acknowledged():
    producer = Producer([None])
    sender = delivery(producer, [])
    sender.send("out", b"a", b"k")
    sender.seal("turn 1")
    sender.seal("turn 2")  # nothing sent: done at once
    assert [t.done for t in sender.collect()] == ["turn 2"]
    producer.flush()
    assert [t.done for t in sender.collect()] == ["turn 1"] and sender.pending == 0


def test_a_failed_send_goes_again_and_holds_its_turn_back_until_acknowledged():
    producer = Producer([KafkaTimeoutError(), None])
    sender = delivery(producer, [])
    sender.send("out", b"a", b"k")
    sender.seal("turn")
    producer.flush()  # fails: not done, sent again by the next collect
    assert sender.collect() == [] and len(producer.sent) == 2
    producer.flush()
    assert [t.done for t in sender.collect()] == ["turn"]
