"""A broker that is away must not stop the loop: what the clients raise while it is gone
(a poll that gives up, a rejoin that cannot leave the group, a close that times out) is
retried within the outage budget and never hides why the loop stopped. The real outage
runs in tests/integration/test_outage.py; these pin the paths it hits only sometimes."""

from __future__ import annotations

import pytest
from kafka.errors import KafkaConnectionError, KafkaTimeoutError

from streamae import pipeline
from streamae.exceptions import InfrastructureError
from streamae.pipeline import Daemon
from streamae.settings import Settings


class AwayConsumer:
    """A consumer whose broker is away: polls, leaving the group and closing all raise."""

    def __init__(self) -> None:
        self.polls = self.unsubscribes = self.subscribed = 0

    def poll(self, timeout_ms: int = 0, max_records: int | None = None) -> dict:
        self.polls += 1
        raise KafkaConnectionError("111 ECONNREFUSED")

    def assignment(self) -> set:
        return set()

    def unsubscribe(self) -> None:
        self.unsubscribes += 1
        raise KafkaConnectionError("111 ECONNREFUSED")

    def subscribe(self, topics, listener=None) -> None:
        self.subscribed += 1

    def close(self, autocommit: bool = False) -> None:
        raise KafkaTimeoutError("Timeout waiting for future")


class AwayProducer:
    def close(self, timeout: float | None = None) -> None:
        raise KafkaTimeoutError("Timeout waiting for future")


@pytest.fixture
def daemon(monkeypatch: pytest.MonkeyPatch) -> Daemon:
    monkeypatch.setattr(pipeline, "POLL_RETRY_S", 0.0)
    settings = Settings(kafka={"outage_budget_s": 0.5}, incident={"enabled": False},
                        metrics_port=0)
    return Daemon(settings, AwayConsumer(), AwayProducer())


def test_a_poll_that_raises_returns_nothing_until_the_outage_budget_is_spent(daemon):
    assert daemon._poll() == [] and daemon._poll() == []
    assert not daemon.broker_reachable
    daemon._poll_failing_since -= 1.0  # the budget (0.5 s) is spent
    with pytest.raises(InfrastructureError, match="outage budget"):
        daemon._poll()


def test_a_rejoin_whose_leave_fails_still_subscribes_again(daemon, monkeypatch):
    monkeypatch.setattr(pipeline, "REJOIN_AFTER_S", 0.0)
    daemon._rejoin_if_stuck()  # starts the clock
    daemon._rejoin_if_stuck()  # leaving the group raises: logged, the loop goes on
    assert daemon.consumer.unsubscribes == 1 and daemon.consumer.subscribed == 1
    assert not daemon.broker_reachable


def test_clients_that_cannot_close_do_not_hide_why_the_loop_stopped(daemon):
    daemon._close_clients()  # both raise KafkaTimeoutError: logged, not raised
