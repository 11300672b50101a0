"""Kafka clients built from settings, batch polling, and at-least-once offset tracking.

``kafka.client`` picks the transport: kafka-python here, or confluent-kafka behind the same
surface (``streamae.transport.confluent``). ``OffsetTracker`` encodes the delivery rule:
an offset is done once what it produced is acknowledged (or it produced nothing), and a
partition commits ``offset + 1`` only up to its first offset that is not done yet.
"""

from __future__ import annotations

import logging
import socket
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field

from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer, TopicPartition
from kafka.admin import NewTopic
from kafka.consumer.fetcher import ConsumerRecord
from kafka.errors import (
    AuthorizationError,
    CorruptRecordError,
    KafkaError,
    SaslAuthenticationFailedError,
    TopicAlreadyExistsError,
)
from kafka.future import Future
from kafka.structs import OffsetAndMetadata

from streamae.exceptions import AuthenticationError, InfrastructureError
from streamae.settings import KafkaSettings
from streamae.unreadable import UnreadableRecords

log = logging.getLogger(__name__)

Record = ConsumerRecord
METADATA_MAX_AGE_MS = 15_000
FETCH_MAX_WAIT_MS = 20  # see build_consumer
# An async commit whose callback has not come back after this long is taken as lost.
ASYNC_COMMIT_TIMEOUT_S = 30.0
COMMIT_TIMEOUT_MS = 10_000  # a synchronous commit (stop, shutdown) never blocks for good


def security_config(kafka: KafkaSettings) -> dict[str, object]:
    """Client options shared by consumer, producer and admin (secrets unwrapped here only)."""
    config: dict[str, object] = {
        "bootstrap_servers": kafka.bootstrap_servers.split(","),
        "client_id": kafka.client_id,
        "security_protocol": kafka.security_protocol,
    }
    if kafka.sasl_mechanism:
        config["sasl_mechanism"] = kafka.sasl_mechanism
        config["sasl_plain_username"] = kafka.sasl_username
        if kafka.sasl_password is not None:
            config["sasl_plain_password"] = kafka.sasl_password.get_secret_value()
    for name in ("ssl_cafile", "ssl_certfile", "ssl_keyfile"):
        if (path := getattr(kafka, name)) is not None:
            config[name] = str(path)
    if kafka.ssl_password is not None:
        config["ssl_password"] = kafka.ssl_password.get_secret_value()
    return config


def build_consumer(kafka: KafkaSettings, max_poll_records: int,
                   topics: Sequence[str] | None = None) -> KafkaConsumer:
    """The daemon's group consumer, with the client ``kafka.client`` names."""
    if kafka.client == "confluent":
        from streamae.transport import confluent
        return confluent.build_consumer(kafka, max_poll_records, topics)
    try:
        consumer = KafkaConsumer(
            **security_config(kafka),
            group_id=kafka.group_id,
            enable_auto_commit=False,
            auto_offset_reset=kafka.auto_offset_reset,
            max_poll_records=max_poll_records,
            max_poll_interval_ms=kafka.max_poll_interval_ms,
            session_timeout_ms=kafka.session_timeout_ms,
            heartbeat_interval_ms=min(3_000, kafka.session_timeout_ms // 3),
            # kafka-python 3.0 may join a group with metadata that lacks a new topic and
            # then wait a full metadata refresh (default 5 min) for its partitions.
            metadata_max_age_ms=METADATA_MAX_AGE_MS,
            # the longest the broker holds a fetch for new data: after a poll that
            # emptied the client's buffer it bounds how late a quiet stream's next record
            # is seen (the default 500 ms put ~250 ms on every record at 1,800 msg/s)
            fetch_max_wait_ms=FETCH_MAX_WAIT_MS,
            # exactly once also reads only committed input (another transactional writer)
            isolation_level=("read_committed" if kafka.delivery == "exactly_once"
                             else "read_uncommitted"),
        )
    except KafkaError as exc:
        raise InfrastructureError(f"cannot connect consumer: {exc}") from exc
    if topics:
        consumer.subscribe(list(topics))
    return consumer


def build_producer(kafka: KafkaSettings) -> KafkaProducer:
    """acks=all with retries: a record counts as delivered only once every replica has it.
    Exactly once: a transactional producer, initialised (earlier instances fenced)."""
    if kafka.client == "confluent":
        from streamae.transport import confluent
        return confluent.build_producer(kafka)
    exactly_once = kafka.delivery == "exactly_once"
    options: dict[str, object] = (
        # kafka-python 3.0's idempotent producer (its default) turns one refused batch (a
        # dead letter the broker finds too large) into the same error for every later
        # send; at least once needs no idempotence, duplicates are bounded anyway.
        {"enable_idempotence": False} if not exactly_once else
        {"transactional_id": transactional_id(kafka), "enable_idempotence": True})
    try:
        producer = KafkaProducer(
            **security_config(kafka),
            acks="all",
            retries=2**31 - 1,
            delivery_timeout_ms=120_000,
            linger_ms=5,
            max_request_size=request_limit(kafka),
            **options,
        )
        if exactly_once:
            producer.init_transactions()
        return producer
    except KafkaError as exc:
        raise InfrastructureError(f"cannot connect producer: {exc}") from exc


def build_model_producer(kafka: KafkaSettings, max_bytes: int) -> KafkaProducer:
    """The model publisher's own producer, sized for checkpoints (never transactional)."""
    if kafka.client == "confluent":
        from streamae.transport import confluent
        return confluent.build_model_producer(kafka, max_bytes)
    return KafkaProducer(**security_config(kafka), acks="all", max_request_size=max_bytes)


def build_reader(kafka: KafkaSettings, max_bytes: int) -> KafkaConsumer:
    """A consumer without a group that reads assigned partitions from the beginning,
    records up to ``max_bytes`` (the model topic)."""
    if kafka.client == "confluent":
        from streamae.transport import confluent
        return confluent.build_reader(kafka, max_bytes)
    return KafkaConsumer(**security_config(kafka), group_id=None, enable_auto_commit=False,
                         auto_offset_reset="earliest", max_partition_fetch_bytes=max_bytes,
                         fetch_max_bytes=max(max_bytes, 52_428_800))


def transactional_id(kafka: KafkaSettings) -> str:
    """Stable per replica across restarts, so a restarted replica fences its old self."""
    return kafka.transactional_id or f"streamae-{kafka.group_id}-{socket.gethostname()}"


HEADER_ROOM = 64 * 1024  # dead-letter headers and batch overhead on top of a value


def request_limit(kafka: KafkaSettings) -> int:
    """The producer's max_request_size: the largest dead letter plus its headers."""
    return max(kafka.dead_letter_max_bytes, kafka.max_message_bytes, 1_048_576) + HEADER_ROOM


def topic_configs(kafka: KafkaSettings) -> dict[str, dict[str, str]]:
    """Per-topic configs for creation: the dead-letter topic holds the largest input."""
    return {kafka.dead_letter_topic: {"max.message.bytes": str(request_limit(kafka))}}


def ensure_topics(kafka: KafkaSettings, topics: Iterable[str], compacted: Iterable[str] = (),
                  partitions: int = 1, timeout_ms: int | None = None) -> None:
    """Create missing topics (output, dead letters, model); existing ones are left alone."""
    compacted = set(compacted)
    configs = topic_configs(kafka)
    wanted = [
        NewTopic(name, partitions, 1, topic_configs={
            **configs.get(name, {}), **({"cleanup.policy": "compact"} if name in compacted
                                         else {})})
        for name in dict.fromkeys([*topics, *compacted])
    ]
    admin = admin_client(kafka, timeout_ms)
    try:
        existing = set(admin.list_topics())
        missing = [topic for topic in wanted if topic.name not in existing]
        if missing:
            admin.create_topics(missing)
            log.info("event=topics_created topics=%s", ",".join(t.name for t in missing))
    except TopicAlreadyExistsError:
        pass  # another replica created it first
    except KafkaError as exc:
        log.warning("event=topic_creation_failed error=%r", exc)
    finally:
        admin.close()


def missing_topics(kafka: KafkaSettings, topics: Iterable[str]) -> list[str]:
    """Those of ``topics`` the broker does not know (yet)."""
    try:
        admin = KafkaAdminClient(**security_config(kafka))
    except KafkaError as exc:
        raise InfrastructureError(f"cannot reach the broker: {exc}") from exc
    try:
        existing = set(admin.list_topics())
    except KafkaError as exc:
        raise InfrastructureError(f"cannot list topics: {exc}") from exc
    finally:
        admin.close()
    return [topic for topic in topics if topic not in existing]


def read_to_end(kafka: KafkaSettings, topic: str, timeout_s: float = 60.0) -> list[Record]:
    """Every record of ``topic`` from the beginning to its end offsets at the time of the
    call (no group, nothing committed); empty when the topic does not exist.

    A read that cannot reach the end in ``timeout_s`` raises: state rebuilt from part of
    a topic would be silently wrong.
    """
    try:
        consumer = KafkaConsumer(**security_config(kafka), group_id=None,
                                 enable_auto_commit=False, auto_offset_reset="earliest")
    except KafkaError as exc:
        raise InfrastructureError(f"cannot connect consumer for {topic}: {exc}") from exc
    try:
        if topic not in consumer.topics():  # fetches fresh metadata
            return []
        tps = [TopicPartition(topic, p) for p in sorted(consumer.partitions_for_topic(topic))]
        consumer.assign(tps)
        consumer.seek_to_beginning(*tps)
        ends = consumer.end_offsets(tps)
        records: list[Record] = []
        deadline = time.monotonic() + timeout_s
        while any(consumer.position(tp) < ends[tp] for tp in tps):
            if time.monotonic() > deadline:
                raise InfrastructureError(f"could not read {topic} to its end in {timeout_s}s")
            for batch in consumer.poll(timeout_ms=500).values():
                records.extend(batch)
        return records
    except KafkaError as exc:
        raise InfrastructureError(f"cannot read {topic}: {exc}") from exc
    finally:
        consumer.close()
def admin_client(kafka: KafkaSettings, timeout_ms: int | None = None) -> KafkaAdminClient:
    """An admin client; AuthenticationError when the broker refuses the credentials,
    InfrastructureError when it cannot be reached in time."""
    extra = {} if timeout_ms is None else {"bootstrap_timeout_ms": timeout_ms}
    try:
        return KafkaAdminClient(**security_config(kafka), **extra)
    except (SaslAuthenticationFailedError, AuthorizationError) as exc:
        raise AuthenticationError(authentication_message(kafka, repr(exc))) from exc
    except KafkaError as exc:
        if kafka.sasl_mechanism and tcp_reachable(kafka.bootstrap_servers):
            # kafka-python 3.0 reports a refused SCRAM login as "socket disconnected" and
            # retries it until the bootstrap times out: a broker that accepts TCP but never
            # completes the SASL exchange is a credentials problem, not an outage.
            raise AuthenticationError(authentication_message(
                kafka, "the broker accepted the connection and closed it during SASL "
                       "authentication (wrong user or password?)")) from exc
        raise InfrastructureError(f"cannot reach the broker: {exc}") from exc


def authentication_message(kafka: KafkaSettings, detail: str) -> str:
    """Names mechanism, user and bootstrap servers; never the password."""
    return (f"authentication failed: mechanism={kafka.sasl_mechanism} "
            f"user={kafka.sasl_username!r} bootstrap={kafka.bootstrap_servers} "
            f"security_protocol={kafka.security_protocol}: {detail}")


def tcp_reachable(bootstrap_servers: str, timeout_s: float = 3.0) -> bool:
    """Does any bootstrap server accept a TCP connection?"""
    for server in bootstrap_servers.split(","):
        host, _, port = server.rpartition(":")
        try:
            with socket.create_connection((host.strip("[]"), int(port)), timeout=timeout_s):
                return True
        except (OSError, ValueError):
            continue
    return False


def poll_available(consumer: KafkaConsumer, max_records: int, max_wait_ms: int) -> list[Record]:
    """Wait up to ``max_wait_ms`` for anything, then take what the client already holds
    (up to ``max_records``) without waiting to fill a batch: a quiet stream is scored at
    once (latency), a backlog comes in large batches (the client's fetched records).

    The polls after the first do not wait; they are needed: a record the client cannot
    parse surfaces on the poll after the one that returned the records before it, and
    raises ``UnreadableRecords`` with those. (Such a poll sends a fetch the broker may
    hold for ``fetch_max_wait_ms``: see FETCH_MAX_WAIT_MS.)

    A client with a batch call of its own (``poll_records``: confluent-kafka) takes what
    it holds, else waits for one record and then takes what arrived with it.
    """
    if (poll_records := getattr(consumer, "poll_records", None)) is not None:
        return _poll_available_records(poll_records, max_records, max_wait_ms)
    records: list[Record] = []
    timeout_ms = max_wait_ms
    while len(records) < max_records:
        try:
            polled = consumer.poll(timeout_ms=timeout_ms,
                                   max_records=max_records - len(records))
        except CorruptRecordError as exc:  # see streamae.unreadable
            raise UnreadableRecords(records, exc) from exc
        if not polled:
            break
        for batch in polled.values():
            records.extend(batch)
        timeout_ms = 0
    return records


def _poll_available_records(poll_records: Callable[[int, int], list[Record]],
                            max_records: int, max_wait_ms: int) -> list[Record]:
    """``poll_available`` on a batch call that returns early only when it is full."""
    records = poll_records(max_records, 0)
    if records:
        return records
    records = poll_records(1, max_wait_ms)
    if not records or max_records <= 1:
        return records
    try:
        return records + poll_records(max_records - 1, 0)
    except UnreadableRecords as exc:  # the first record was read already: keep it
        raise UnreadableRecords(records + exc.records, exc.cause, exc.skipped) from exc


def _by_partition(records: Iterable[Record]) -> dict[tuple[str, int], list[int]]:
    """Offsets per (topic, partition): one set operation each instead of one per record."""
    groups: dict[tuple[str, int], list[int]] = {}
    for record in records:
        where = (record.topic, record.partition)
        offsets = groups.get(where)
        if offsets is None:
            offsets = groups[where] = []
        offsets.append(record.offset)
    return groups


@dataclass
class _AsyncCommit:
    future: Future  # answered on the client's IO (or commit) thread
    offsets: dict[TopicPartition, OffsetAndMetadata]
    sent_at: float  # monotonic


@dataclass
class _PartitionState:
    pending: set[int] = field(default_factory=set)
    highest_done: int = -1  # highest offset marked done (contiguity via `pending`)
    committed: int = -1  # next offset already committed


class OffsetTracker:
    """Which offsets are done; what may be committed (up to the first pending offset)."""

    def __init__(self) -> None:
        self._partitions: dict[TopicPartition, _PartitionState] = {}
        self._async: _AsyncCommit | None = None  # the async commit not yet answered

    def started(self, records: Iterable[Record]) -> None:
        for (topic, partition), offsets in _by_partition(records).items():
            tp = TopicPartition(topic, partition)
            self._partitions.setdefault(tp, _PartitionState()).pending.update(offsets)

    def done(self, records: Iterable[Record]) -> None:
        """Mark records done; records of partitions forgotten since (revoked) are skipped."""
        for (topic, partition), offsets in _by_partition(records).items():
            state = self._partitions.get(TopicPartition(topic, partition))
            if state is None:
                continue
            state.pending.difference_update(offsets)
            state.highest_done = max(state.highest_done, max(offsets))

    def committable(self, again: bool = False) -> dict[TopicPartition, OffsetAndMetadata]:
        """``offset + 1`` per partition, never past the first offset still pending.

        ``again`` includes offsets already sent: an async commit may have been lost in a
        rebalance, so the synchronous commit on revocation and shutdown repeats it.
        """
        offsets = {}
        for tp, state in self._partitions.items():
            if state.highest_done < 0:
                continue
            limit = min(state.pending) if state.pending else state.highest_done + 1
            if again or limit > state.committed:
                offsets[tp] = OffsetAndMetadata(limit, "", -1)
        return offsets

    def mark_committed(self, offsets: dict[TopicPartition, OffsetAndMetadata]) -> None:
        for tp, meta in offsets.items():
            self._partitions[tp].committed = meta.offset

    def unmark_committed(self, offsets: dict[TopicPartition, OffsetAndMetadata]) -> None:
        """An async commit failed: offer these partitions again on the next commit."""
        for tp in offsets:
            if (state := self._partitions.get(tp)) is not None:
                state.committed = -1

    def sent_async(self, future: Future, offsets: dict[TopicPartition, OffsetAndMetadata]
                   ) -> None:
        self._async = _AsyncCommit(future, offsets, time.monotonic())

    def async_in_flight(self) -> bool:
        """Whether the last async commit is still unanswered; settles it once answered
        (a failed or lost one offers its offsets again)."""
        pending = self._async
        if pending is None:
            return False
        lost = time.monotonic() - pending.sent_at >= ASYNC_COMMIT_TIMEOUT_S
        if not pending.future.is_done and not lost:
            return True
        self._async = None
        if lost or pending.future.failed():
            self.unmark_committed(pending.offsets)
            error = pending.future.exception if pending.future.is_done else "no answer"
            retriable = getattr(error, "retriable", False)
            log.log(logging.DEBUG if retriable else logging.WARNING,
                    "event=async_commit_failed error=%r partitions=%d", error,
                    len(pending.offsets))
        return False

    def wait_for_async(self) -> None:
        """Wait (in short steps, at most ASYNC_COMMIT_TIMEOUT_S) for the async commit in
        flight to be answered."""
        while self.async_in_flight():
            time.sleep(0.001)

    def forget(self, partitions: Iterable[TopicPartition]) -> None:
        """Drop partitions this consumer no longer owns (after a rebalance)."""
        for tp in partitions:
            self._partitions.pop(tp, None)

    @property
    def pending_count(self) -> int:
        return sum(len(state.pending) for state in self._partitions.values())


def commit(consumer: KafkaConsumer, tracker: OffsetTracker, wait: bool = True) -> int:
    """Commit what is done; returns how many partitions moved.

    ``wait=False`` commits asynchronously (the loop's steady state), one commit at a time:
    kafka-python fails a second request to the coordinator while one is in flight
    (``NodeNotReadyError: Node paused: max_in_flight``). A turn with offsets to commit
    waits for the answer to the one in flight first, usually a millisecond or two: so a
    crash makes the next owner consume again at most the turn whose commit was in flight,
    whatever the commit's round trip (see ``pipeline.REDELIVERED_TURNS``). Shutdown and
    rebalances commit synchronously.
    """
    if tracker.async_in_flight():
        if not wait and not tracker.committable():
            return 0
        tracker.wait_for_async()
    offsets = tracker.committable(again=wait)
    if not offsets:
        return 0
    try:
        if wait:
            consumer.commit(offsets, timeout_ms=COMMIT_TIMEOUT_MS)
            tracker.mark_committed(offsets)
        else:
            tracker.mark_committed(offsets)
            tracker.sent_async(consumer.commit_async(offsets), offsets)
    except KafkaError as exc:
        # A rebalance took the partitions away: their records will be redelivered to the
        # new owner, which is at-least-once, not loss.
        tracker.unmark_committed(offsets)
        log.warning("event=commit_failed error=%r partitions=%d", exc, len(offsets))
        return 0
    return len(offsets)


def consumer_lag(consumer: KafkaConsumer) -> dict[TopicPartition, int]:
    """Messages between each assigned partition's position and its end (local metadata)."""
    lags = {}
    for tp in consumer.assignment():
        highwater = consumer.highwater(tp)
        if highwater is None:
            continue
        try:
            position = consumer.position(tp, timeout_ms=0)
        except (KafkaError, TypeError):
            continue
        if position is not None:
            lags[tp] = max(0, highwater - position)
    return lags
