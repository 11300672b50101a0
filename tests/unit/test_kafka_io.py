"""The at-least-once rule: commit offset + 1 only up to the first offset not done yet."""

from __future__ import annotations

import logging
import threading
import time
from collections import namedtuple

from kafka import TopicPartition
from kafka.errors import CommitFailedError, NodeNotReadyError
from kafka.future import Future
from pydantic import SecretStr

from streamae import kafka_io
from streamae.kafka_io import OffsetTracker, commit, security_config
from streamae.settings import KafkaSettings

Rec = namedtuple("Rec", "topic partition offset")


def records(partition, *offsets):
    return [Rec("t", partition, o) for o in offsets]


def test_commits_up_to_the_first_pending_offset():
    tracker = OffsetTracker()
    tracker.started(records(0, 10, 11, 12, 13))
    tracker.done(records(0, 10, 12, 13))  # 11 is still waiting (e.g. in warm-up)
    assert tracker.committable() == {TopicPartition("t", 0): (11, "", -1)}
    tracker.done(records(0, 11))
    assert tracker.committable()[TopicPartition("t", 0)].offset == 14


def test_nothing_to_commit_until_something_is_done_and_no_repeat_commits():
    tracker = OffsetTracker()
    tracker.started(records(1, 0, 1))
    assert tracker.committable() == {}
    tracker.done(records(1, 0, 1))
    offsets = tracker.committable()
    tracker.mark_committed(offsets)
    assert tracker.committable() == {}
    assert tracker.pending_count == 0


def test_partitions_are_independent_and_forgotten_after_revocation():
    tracker = OffsetTracker()
    tracker.started(records(0, 5) + records(1, 7))
    tracker.done(records(1, 7))
    assert set(tracker.committable()) == {TopicPartition("t", 1)}
    tracker.forget([TopicPartition("t", 0)])
    assert tracker.pending_count == 0
    tracker.done(records(0, 5))  # a record of a revoked partition finishing late
    assert set(tracker.committable()) == {TopicPartition("t", 1)}


def test_security_config_unwraps_secrets_only_for_the_client():
    kafka = KafkaSettings(security_protocol="SASL_SSL", sasl_mechanism="SCRAM-SHA-512",
                          sasl_username="u", sasl_password=SecretStr("p"),
                          bootstrap_servers="a:1,b:2")
    config = security_config(kafka)
    assert config["bootstrap_servers"] == ["a:1", "b:2"]
    assert config["sasl_plain_password"] == "p"
    assert config["sasl_mechanism"] == "SCRAM-SHA-512"
    assert "ssl_cafile" not in config


def test_a_synchronous_commit_repeats_what_an_async_commit_may_have_lost():
    tracker = OffsetTracker()
    tracker.started(records(0, 0, 1))
    tracker.done(records(0, 0, 1))
    tracker.mark_committed(tracker.committable())
    assert tracker.committable() == {}
    assert tracker.committable(again=True)[TopicPartition("t", 0)].offset == 2


class FakeConsumer:
    """Records async commits; each is answered when the test says (or at once)."""

    def __init__(self, fail_at_once: Exception | None = None) -> None:
        self.sent: list[dict] = []
        self.answers: list[Future] = []
        self.fail_at_once = fail_at_once

    def commit_async(self, offsets) -> Future:
        self.sent.append(dict(offsets))
        answer = Future()
        if self.fail_at_once is not None:
            answer.failure(self.fail_at_once)
        self.answers.append(answer)
        return answer


def answer_later(future: Future, after_s: float) -> threading.Thread:
    """Answers ``future`` from another thread, as the client's IO thread does."""
    thread = threading.Thread(target=lambda: (time.sleep(after_s), future.success(None)))
    thread.start()
    return thread


def test_one_async_commit_in_flight_and_a_turn_with_offsets_waits_for_its_answer():
    tracker, consumer = OffsetTracker(), FakeConsumer()
    tracker.started(records(0, 0, 1, 2, 3))
    tracker.done(records(0, 0, 1))
    assert commit(consumer, tracker, wait=False) == 1
    assert commit(consumer, tracker, wait=False) == 0  # nothing new: no wait, no request
    tracker.done(records(0, 2, 3))
    answering = answer_later(consumer.answers[0], 0.2)
    started = time.monotonic()
    assert commit(consumer, tracker, wait=False) == 1  # sent once the first was answered
    assert time.monotonic() - started >= 0.15
    answering.join()
    assert [c[TopicPartition("t", 0)].offset for c in consumer.sent] == [2, 4]


def test_a_retriable_async_failure_is_debug_and_its_offsets_go_again(caplog):
    tracker = OffsetTracker()
    consumer = FakeConsumer(fail_at_once=NodeNotReadyError("Node paused: {'max_in_flight'}"))
    tracker.started(records(0, 0, 1))
    tracker.done(records(0, 0, 1))
    with caplog.at_level(logging.DEBUG, logger="streamae.kafka_io"):
        commit(consumer, tracker, wait=False)
        assert not tracker.async_in_flight()
    (entry,) = [r for r in caplog.records if "async_commit_failed" in r.getMessage()]
    assert entry.levelno == logging.DEBUG
    assert tracker.committable()[TopicPartition("t", 0)].offset == 2  # offered again


def test_a_non_retriable_async_failure_is_a_warning(caplog):
    tracker = OffsetTracker()
    consumer = FakeConsumer(fail_at_once=CommitFailedError("group rebalanced"))
    tracker.started(records(0, 0))
    tracker.done(records(0, 0))
    with caplog.at_level(logging.DEBUG, logger="streamae.kafka_io"):
        commit(consumer, tracker, wait=False)
        assert not tracker.async_in_flight()
    (entry,) = [r for r in caplog.records if "async_commit_failed" in r.getMessage()]
    assert entry.levelno == logging.WARNING


def test_an_unanswered_async_commit_is_taken_as_lost_and_offered_again(monkeypatch):
    tracker, consumer = OffsetTracker(), FakeConsumer()
    tracker.started(records(0, 0))
    tracker.done(records(0, 0))
    commit(consumer, tracker, wait=False)
    assert tracker.committable() == {}
    monkeypatch.setattr(kafka_io, "ASYNC_COMMIT_TIMEOUT_S", 0.0)
    assert not tracker.async_in_flight()
    assert tracker.committable()[TopicPartition("t", 0)].offset == 1
