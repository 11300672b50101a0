"""confluent-kafka (librdkafka) behind the kafka-python surface the daemon uses.

``STREAMAE_KAFKA__CLIENT=confluent`` (``pip install 'streamae[confluent]'``) selects it in
``kafka_io.build_consumer`` / ``build_producer`` and for the model topic. These are
adapters, not a second daemon: records are kafka-python ``ConsumerRecord`` tuples, offsets
``TopicPartition`` / ``OffsetAndMetadata``, send futures ``kafka.future.Future`` and errors
the classes of ``kafka.errors`` (broker codes map one to one), so ``kafka_io``,
``delivery``, ``pipeline`` and ``modelbus`` keep one code path and the same guarantees.
Topic administration, the incident restore read and ``streamae.unreadable``'s probe stay
on kafka-python (a core dependency either way).

Where librdkafka differs, and how the adapters keep the contract:

* the loop polls through :meth:`ConfluentConsumer.poll_records` (``consume`` in batches,
  no per-partition dict), which ``kafka_io.poll_available`` prefers when present;
* rebalance callbacks run inside ``consume`` on the loop's thread (kafka-python: its IO
  thread); the listener is the same ``ConsumerRebalanceListener``;
* delivery reports are served by a thread of the producer (as kafka-python's IO thread
  completes its futures), so ``add_callback``/``add_errback`` fire without a flush;
* async commits run on a thread of their own (librdkafka answers its own behind every
  prefetched record);
* a record whose header keys are not UTF-8 is readable apart from its headers: it is
  handed back as an ``UnreadableRecord`` with its key and value (``UnreadableRecords``),
  so its dead letter keeps the original bytes (kafka-python cannot read it at all).
"""

from __future__ import annotations

import contextlib
import logging
import operator
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from typing import Any

from kafka import errors as kerr
from kafka import future as kfuture
from kafka.consumer.fetcher import ConsumerRecord
from kafka.producer.future import RecordMetadata
from kafka.structs import TopicPartition

from streamae.exceptions import InfrastructureError, SettingsError
from streamae.kafka_io import METADATA_MAX_AGE_MS, request_limit, transactional_id
from streamae.settings import KafkaSettings
from streamae.unreadable import UnreadableRecord, UnreadableRecords

try:
    import confluent_kafka as ck
except ImportError as exc:  # the extra is not installed
    raise SettingsError("STREAMAE_KAFKA__CLIENT=confluent needs confluent-kafka: "
                        "pip install 'streamae[confluent]'") from exc

log = logging.getLogger(__name__)
RDKAFKA_LOG = logging.getLogger("streamae.transport.librdkafka")

QUEUED_KBYTES = 16_384  # prefetched per consumer (librdkafka's default 64 MB costs RSS)
DEFAULT_TIMEOUT_S = 10.0  # a metadata or offsets request when the caller gives none
SERVE_EVERY_S = 0.1  # the delivery thread's wait for reports
CLOSE_WAIT_S = 5.0  # close() waits this long for a commit in flight
MAX_BLOCK_S = 60.0  # a send waits this long for room in a full queue (kafka-python's)
# Not an error of the loop: the input topic does not exist yet, or a partition moved.
QUIET = {ck.KafkaError._PARTITION_EOF, ck.KafkaError.UNKNOWN_TOPIC_OR_PART,
         ck.KafkaError._UNKNOWN_TOPIC, ck.KafkaError._UNKNOWN_PARTITION}
LOCAL_ERRORS: dict[int, type[kerr.KafkaError]] = {
    ck.KafkaError._MSG_TIMED_OUT: kerr.KafkaTimeoutError,
    ck.KafkaError._TIMED_OUT: kerr.KafkaTimeoutError,
    ck.KafkaError._QUEUE_FULL: kerr.KafkaTimeoutError,
    ck.KafkaError._TRANSPORT: kerr.KafkaConnectionError,
    ck.KafkaError._ALL_BROKERS_DOWN: kerr.KafkaConnectionError,
    ck.KafkaError._STATE: kerr.IllegalStateError,
    ck.KafkaError._AUTHENTICATION: kerr.SaslAuthenticationFailedError,
}


# -- translation ------------------------------------------------------------------------
def translate(error: ck.KafkaError) -> kerr.KafkaError:
    """The kafka-python error for a librdkafka one: broker codes (>= 0) are Kafka's own
    table in both clients; local ones (< 0) map by meaning, else plain ``KafkaError``."""
    code = error.code()
    kind = kerr.for_code(code) if code >= 0 else LOCAL_ERRORS.get(code, kerr.KafkaError)
    return kind(f"{error.name()}: {error.str()}")


def raised(exc: BaseException) -> kerr.KafkaError:
    """The kafka-python error for an exception a confluent call raised."""
    if isinstance(exc, ck.KafkaException) and isinstance(exc.args[0], ck.KafkaError):
        return translate(exc.args[0])
    if isinstance(exc, RuntimeError):  # a call on a closed client
        return kerr.IllegalStateError(str(exc))
    return kerr.KafkaError(repr(exc))


def to_confluent(tp: Any, offset: int = ck.OFFSET_INVALID) -> ck.TopicPartition:
    return ck.TopicPartition(tp.topic, tp.partition, offset)


def to_kafka(partitions: Iterable[ck.TopicPartition]) -> list[TopicPartition]:
    return [TopicPartition(p.topic, p.partition) for p in partitions]


def offsets_to_confluent(offsets: dict[Any, Any]) -> list[ck.TopicPartition]:
    """kafka-python's {TopicPartition: OffsetAndMetadata | int} as a confluent list."""
    return [to_confluent(tp, getattr(meta, "offset", meta)) for tp, meta in offsets.items()]


_new = tuple.__new__
# Through a C call that checks the result: confluent-kafka leaves a UnicodeDecodeError set
# behind a returned value when a header key is not UTF-8, and a specialised method call
# in the interpreter lets it surface only at some later, unrelated call.
_headers = operator.methodcaller("headers")


def record_of(message: ck.Message) -> ConsumerRecord:
    """A kafka-python ``ConsumerRecord`` (timestamp types: 0 create, 1 log append);
    ``ValueError`` when the headers cannot be decoded (a key that is not UTF-8)."""
    ts_type, ts = message.timestamp()
    key, value = message.key(), message.value()
    try:
        headers = _headers(message) or []
    except Exception as exc:  # confluent raises SystemError around a UnicodeDecodeError
        raise ValueError(f"header keys are not UTF-8: {exc!r}") from exc
    return _new(ConsumerRecord, (
        message.topic(), message.partition(), -1, message.offset(), ts, ts_type - 1, key,
        value, headers, None, -1 if key is None else len(key),
        -1 if value is None else len(value), -1))


def stand_in(message: ck.Message) -> UnreadableRecord:
    """The record of ``message`` without its unreadable headers (its dead letter)."""
    return UnreadableRecord(message.topic(), message.partition(), message.offset(),
                            key=message.key(), value=message.value() or b"",
                            timestamp=message.timestamp()[1])


# -- configuration ----------------------------------------------------------------------
def client_config(kafka: KafkaSettings) -> dict[str, object]:
    """librdkafka's names for ``kafka_io.security_config`` (secrets unwrapped here only)."""
    config: dict[str, object] = {
        "bootstrap.servers": kafka.bootstrap_servers,
        "client.id": kafka.client_id,
        "security.protocol": kafka.security_protocol,
        "logger": RDKAFKA_LOG,
        "error_cb": _client_error,
    }
    if kafka.sasl_mechanism:
        config["sasl.mechanisms"] = kafka.sasl_mechanism
        if kafka.sasl_username is not None:
            config["sasl.username"] = kafka.sasl_username
        if kafka.sasl_password is not None:
            config["sasl.password"] = kafka.sasl_password.get_secret_value()
    for name, option in (("ssl_cafile", "ssl.ca.location"),
                         ("ssl_certfile", "ssl.certificate.location"),
                         ("ssl_keyfile", "ssl.key.location")):
        if (path := getattr(kafka, name)) is not None:
            config[option] = str(path)
    if kafka.ssl_password is not None:
        config["ssl.key.password"] = kafka.ssl_password.get_secret_value()
    return config


def consumer_config(kafka: KafkaSettings) -> dict[str, object]:
    """The daemon's group consumer: the options ``kafka_io.build_consumer`` gives
    kafka-python, in librdkafka's names."""
    return {
        **client_config(kafka),
        "group.id": kafka.group_id,
        "enable.auto.commit": False,
        "auto.offset.reset": kafka.auto_offset_reset,
        "max.poll.interval.ms": kafka.max_poll_interval_ms,
        "session.timeout.ms": kafka.session_timeout_ms,
        "heartbeat.interval.ms": min(3_000, kafka.session_timeout_ms // 3),
        "topic.metadata.refresh.interval.ms": METADATA_MAX_AGE_MS,
        "isolation.level": ("read_committed" if kafka.delivery == "exactly_once"
                            else "read_uncommitted"),
        "queued.max.messages.kbytes": QUEUED_KBYTES,
    }


def producer_config(kafka: KafkaSettings, max_bytes: int | None = None) -> dict[str, object]:
    """acks=all with retries (librdkafka's default), the dead-letter size limit; exactly
    once: transactional (idempotent) with the replica's stable id."""
    options: dict[str, object] = (
        # librdkafka: a record's timeout within the transaction's (60 s by default)
        {"transactional.id": transactional_id(kafka), "enable.idempotence": True,
         "message.timeout.ms": 60_000}
        if kafka.delivery == "exactly_once" and max_bytes is None
        else {"enable.idempotence": False, "message.timeout.ms": 120_000})
    return {**client_config(kafka), "acks": "all", "linger.ms": 5,
            "message.max.bytes": max_bytes or request_limit(kafka), **options}


def _client_error(error: ck.KafkaError) -> None:
    """librdkafka's client-wide errors (a broker down, a login refused): it retries by
    itself; a fatal one surfaces at the next call."""
    level = logging.ERROR if error.fatal() else logging.WARNING
    log.log(level, "event=kafka_client_error client=confluent code=%s error=%r",
            error.name(), error.str()[:300])


# -- builders ---------------------------------------------------------------------------
def build_consumer(kafka: KafkaSettings, max_poll_records: int,
                   topics: Sequence[str] | None = None) -> ConfluentConsumer:
    try:
        consumer = ConfluentConsumer(consumer_config(kafka), max_poll_records)
    except kerr.KafkaError as exc:
        raise InfrastructureError(f"cannot connect consumer: {exc}") from exc
    if topics:
        consumer.subscribe(list(topics))
    return consumer


def build_producer(kafka: KafkaSettings) -> ConfluentProducer:
    try:
        producer = ConfluentProducer(producer_config(kafka))
        if kafka.delivery == "exactly_once":
            producer.init_transactions()
        return producer
    except (ck.KafkaException, kerr.KafkaError) as exc:
        raise InfrastructureError(f"cannot connect producer: {exc}") from exc


def build_model_producer(kafka: KafkaSettings, max_bytes: int) -> ConfluentProducer:
    """The model publisher's own producer: sized for checkpoints, never transactional."""
    return ConfluentProducer(producer_config(kafka, max_bytes=max_bytes))


def build_reader(kafka: KafkaSettings, max_bytes: int) -> ConfluentConsumer:
    """A consumer without a group (assign, read from the beginning): the model topic."""
    config = {**client_config(kafka), "group.id": "streamae-reader-unused",
              "enable.auto.commit": False, "enable.auto.offset.store": False,
              "auto.offset.reset": "earliest", "fetch.max.bytes": max(max_bytes, 52_428_800),
              "max.partition.fetch.bytes": max_bytes,
              "receive.message.max.bytes": max(max_bytes, 52_428_800) + 1_048_576}
    return ConfluentConsumer(config, 500)


# -- consumer ---------------------------------------------------------------------------
class ConfluentConsumer:
    """The part of kafka-python's ``KafkaConsumer`` the daemon and the model topic use."""

    def __init__(self, config: dict[str, object], max_poll_records: int) -> None:
        self.max_poll_records = max_poll_records
        self._committer: ThreadPoolExecutor | None = None  # every commit, in order
        self._last_commit: Future | None = None
        self._paused: set[TopicPartition] = set()
        self._manual: list[TopicPartition] = []  # assign() without a group
        self._from_start: set[TopicPartition] = set()
        self._listener: Any = None
        self._config = config
        self._offsets: ck.Consumer | None = None  # end offsets, on a connection of its own
        try:
            self._consumer = ck.Consumer(config)
        except ck.KafkaException as exc:
            raise raised(exc) from exc

    # polling
    def poll_records(self, max_records: int, timeout_ms: int) -> list[Any]:
        """Up to ``max_records`` in one ``consume`` (returns early once that many are
        there); records with unreadable headers raise ``UnreadableRecords`` carrying
        every other record of the batch and their stand-ins."""
        try:
            messages = self._consumer.consume(max_records, max(0, timeout_ms) / 1000)
        except (ck.KafkaException, RuntimeError) as exc:
            raise raised(exc) from exc
        records, skipped, cause = [], [], None
        for message in messages:
            if (error := message.error()) is not None:
                self._consume_error(error)
                continue
            try:
                records.append(record_of(message))
            except ValueError as exc:
                skipped.append(stand_in(message))
                cause = exc
        if skipped:
            raise UnreadableRecords(records, cause, skipped=skipped)
        return records

    def poll(self, timeout_ms: int = 0, max_records: int | None = None,
             update_offsets: bool = True) -> dict[TopicPartition, list[Any]]:
        """kafka-python's shape; records with unreadable headers come with none."""
        try:
            records = self.poll_records(max_records or self.max_poll_records, timeout_ms)
        except UnreadableRecords as exc:
            records = [*exc.records, *exc.skipped]
        grouped: dict[TopicPartition, list[Any]] = {}
        for record in records:
            tp = TopicPartition(record.topic, record.partition)
            grouped.setdefault(tp, []).append(record)
        return grouped

    def _consume_error(self, error: ck.KafkaError) -> None:
        if error.fatal():
            raise translate(error)
        level = logging.DEBUG if error.code() in QUIET else logging.WARNING
        log.log(level, "event=consume_error client=confluent code=%s error=%r",
                error.name(), error.str()[:300])

    # group membership
    def subscribe(self, topics: Sequence[str] = (), pattern: str | None = None,
                  listener: Any = None) -> None:
        self._listener = listener
        self._consumer.subscribe(list(topics), on_assign=self._on_assign,
                                 on_revoke=self._on_revoke, on_lost=self._on_lost)

    def unsubscribe(self) -> None:
        self._consumer.unsubscribe()
        self._paused.clear()

    def _on_assign(self, _consumer: Any, partitions: list[ck.TopicPartition]) -> None:
        self._call_listener("on_partitions_assigned", to_kafka(partitions))

    def _on_revoke(self, _consumer: Any, partitions: list[ck.TopicPartition]) -> None:
        revoked = to_kafka(partitions)
        self._paused.difference_update(revoked)
        self._call_listener("on_partitions_revoked", revoked)

    def _on_lost(self, _consumer: Any, partitions: list[ck.TopicPartition]) -> None:
        lost = to_kafka(partitions)
        self._paused.difference_update(lost)
        name = ("on_partitions_lost" if hasattr(self._listener, "on_partitions_lost")
                else "on_partitions_revoked")
        self._call_listener(name, lost)

    def _call_listener(self, name: str, partitions: list[TopicPartition]) -> None:
        """As kafka-python: a failing listener is logged, the rebalance goes on."""
        if self._listener is None:
            return
        try:
            getattr(self._listener, name)(partitions)
        except Exception:
            log.exception("event=rebalance_listener_failed callback=%s", name)

    def assignment(self) -> set[TopicPartition]:
        try:
            return set(to_kafka(self._consumer.assignment()))
        except (ck.KafkaException, RuntimeError) as exc:
            raise raised(exc) from exc

    def group_metadata(self) -> Any:
        return self._consumer.consumer_group_metadata()

    # manual assignment (the model topic)
    def assign(self, partitions: Sequence[TopicPartition]) -> None:
        self._manual = list(partitions)
        self._consumer.assign([to_confluent(tp) for tp in self._manual])

    def seek_to_beginning(self, *partitions: TopicPartition) -> None:
        chosen = set(partitions or self._manual)
        self._from_start |= chosen
        self._consumer.assign([to_confluent(tp, ck.OFFSET_BEGINNING if tp in chosen
                                            else ck.OFFSET_STORED) for tp in self._manual])

    def seek(self, partition: TopicPartition, offset: int) -> None:
        try:
            self._consumer.seek(to_confluent(partition, offset))
        except (ck.KafkaException, RuntimeError) as exc:
            raise raised(exc) from exc

    def partitions_for_topic(self, topic: str) -> set[int] | None:
        try:
            meta = self._consumer.list_topics(topic, timeout=DEFAULT_TIMEOUT_S).topics.get(topic)
        except ck.KafkaException as exc:
            raise raised(exc) from exc
        if meta is None or meta.error is not None:
            return None
        return set(meta.partitions)

    def topics(self) -> set[str]:
        try:
            return set(self._consumer.list_topics(timeout=DEFAULT_TIMEOUT_S).topics)
        except ck.KafkaException as exc:
            raise raised(exc) from exc

    # positions and offsets
    def position(self, partition: TopicPartition, timeout_ms: int | None = None) -> int | None:
        """The next offset to fetch; before the first fetch after ``seek_to_beginning``
        the partition's first offset; None while unknown."""
        try:
            (found,) = self._consumer.position([to_confluent(partition)])
        except (ck.KafkaException, RuntimeError) as exc:
            raise raised(exc) from exc
        if found.offset >= 0:
            return found.offset
        if partition in self._from_start:
            return self._watermarks(partition, timeout_ms)[0]
        return None

    def highwater(self, partition: TopicPartition) -> int | None:
        """The end offset from the last fetch response (no request)."""
        _low, high = self._consumer.get_watermark_offsets(to_confluent(partition),
                                                           cached=True)
        return high if high >= 0 else None

    def end_offsets(self, partitions: Iterable[TopicPartition],
                    timeout_ms: int | None = None) -> dict[TopicPartition, int]:
        return {tp: self._watermarks(tp, timeout_ms)[1] for tp in partitions}

    def _watermarks(self, partition: TopicPartition, timeout_ms: int | None) -> tuple[int, int]:
        timeout = DEFAULT_TIMEOUT_S if timeout_ms is None else timeout_ms / 1000
        if self._offsets is None:
            # Never subscribes. The group consumer's connection holds a long-polling fetch
            # (up to fetch.wait.max.ms) once it has read to the end, and a ListOffsets
            # request queued behind it stalled the loop ~250 ms per call.
            self._offsets = ck.Consumer(self._config)
        try:
            found = self._offsets.get_watermark_offsets(to_confluent(partition),
                                                        timeout=timeout, cached=False)
        except (ck.KafkaException, RuntimeError) as exc:
            raise raised(exc) from exc
        if found is None:
            raise kerr.KafkaTimeoutError(f"no offsets for {partition} in {timeout}s")
        return found

    # commits
    def commit(self, offsets: dict | None = None, timeout_ms: int | None = None) -> None:
        """Synchronous, bounded by ``timeout_ms`` (librdkafka's own wait has no bound:
        it runs on the commit thread, and a commit still running at the timeout raises
        KafkaTimeoutError here and finishes there)."""
        pending = self._last_commit = self._commit_thread().submit(self._commit_now, offsets)
        try:
            pending.result(timeout=None if timeout_ms is None else timeout_ms / 1000)
        except FutureTimeout as exc:
            raise kerr.KafkaTimeoutError(f"commit not answered in {timeout_ms} ms") from exc

    def commit_async(self, offsets: dict | None = None) -> kfuture.Future:
        """A synchronous commit on the commit thread; the returned future (as kafka-python's)
        is answered there, with an exception on failure. librdkafka's own async commit
        answers through the consumer queue, behind every prefetched record: under backlog
        the answer (and so the next commit) would wait for thousands of records."""
        answer = kfuture.Future()
        self._last_commit = self._commit_thread().submit(self._commit_and_answer,
                                                         offsets or {}, answer)
        return answer

    def _commit_thread(self) -> ThreadPoolExecutor:
        if self._committer is None:
            self._committer = ThreadPoolExecutor(1, thread_name_prefix="confluent-commit")
        return self._committer

    def _commit_now(self, offsets: dict | None) -> None:
        try:
            result = self._consumer.commit(
                offsets=None if offsets is None else offsets_to_confluent(offsets),
                asynchronous=False)
        except (ck.KafkaException, RuntimeError) as exc:
            raise raised(exc) from exc
        for part in result or ():
            if part.error is not None:
                raise translate(part.error)

    def _commit_and_answer(self, offsets: dict, answer: kfuture.Future) -> None:
        try:
            self._commit_now(offsets)
        except kerr.KafkaError as exc:
            answer.failure(exc)
            return
        answer.success(offsets)

    # pausing
    def pause(self, *partitions: TopicPartition) -> None:
        if partitions:
            self._consumer.pause([to_confluent(tp) for tp in partitions])
            self._paused.update(partitions)

    def resume(self, *partitions: TopicPartition) -> None:
        if partitions:
            self._consumer.resume([to_confluent(tp) for tp in partitions])
            self._paused.difference_update(partitions)

    def paused(self) -> set[TopicPartition]:
        return set(self._paused)

    def close(self, autocommit: bool = False) -> None:
        """Leave the group (never commits: auto commit is off) once the commit in flight
        (if any) is answered; one still unanswered after CLOSE_WAIT_S (a broker away)
        leaves the client to the process's exit, as closing under it is unsafe."""
        if self._committer is not None:
            self._committer.shutdown(wait=False)  # commits run in order: the last one
            if self._last_commit is not None:
                try:
                    self._last_commit.exception(timeout=CLOSE_WAIT_S)
                except FutureTimeout:
                    log.warning("event=consumer_close_skipped client=confluent "
                                "reason=commit_unanswered seconds=%.0f", CLOSE_WAIT_S)
                    return
        if self._offsets is not None:
            self._offsets.close()
            self._offsets = None
        with contextlib.suppress(RuntimeError):  # closed already
            self._consumer.close()


# -- producer ---------------------------------------------------------------------------
class DeliveryFuture(kfuture.Future):
    """kafka-python's send future, completed by librdkafka's delivery report."""

    __slots__ = ("_producer",)

    def __init__(self, producer: ck.Producer) -> None:
        super().__init__()
        self._producer = producer

    def delivered(self, error: ck.KafkaError | None, message: ck.Message) -> None:
        if error is not None:
            self.failure(translate(error))
            return
        tp = TopicPartition(message.topic(), message.partition())
        key, value = message.key(), message.value()
        self.success(RecordMetadata(
            tp.topic, tp.partition, tp, message.offset(), message.timestamp()[1], None,
            -1 if key is None else len(key), -1 if value is None else len(value), -1))

    def get(self, timeout: float | None = None) -> Any:
        """The RecordMetadata once acknowledged; raises the failure, or KafkaTimeoutError."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while not self.is_done:
            left = SERVE_EVERY_S if deadline is None else deadline - time.monotonic()
            if left <= 0:
                raise kerr.KafkaTimeoutError(f"not acknowledged after {timeout}s")
            self._producer.poll(min(left, SERVE_EVERY_S))
        if self.exception is not None:
            raise self.exception
        return self.value


class ConfluentProducer:
    """The part of kafka-python's ``KafkaProducer`` the daemon uses, transactions
    included. A thread of its own serves delivery reports, so futures complete (and
    their callbacks run) while the caller does something else, as with kafka-python."""

    def __init__(self, config: dict[str, object]) -> None:
        try:
            self._producer = ck.Producer(config)
        except ck.KafkaException as exc:
            raise raised(exc) from exc
        self._closing = threading.Event()
        self._server = threading.Thread(target=self._serve, name="confluent-delivery",
                                        daemon=True)
        self._server.start()

    def _serve(self) -> None:
        while not self._closing.is_set():
            self._producer.poll(SERVE_EVERY_S)

    def send(self, topic: str, value: bytes | None = None, key: bytes | None = None,
             headers: list[tuple[str, bytes | None]] | None = None,
             partition: int | None = None, timestamp_ms: int | None = None) -> DeliveryFuture:
        """Queue one record; a record the client refuses raises its kafka-python error
        (``MessageSizeTooLargeError``), a queue still full after MAX_BLOCK_S
        ``KafkaTimeoutError``."""
        future = DeliveryFuture(self._producer)
        deadline = time.monotonic() + MAX_BLOCK_S
        while True:
            try:
                self._producer.produce(topic, value, key, partition=-1 if partition is None
                                       else partition, on_delivery=future.delivered,
                                       timestamp=timestamp_ms or 0, headers=headers or None)
                return future
            except BufferError as exc:  # queue full: wait for room, as kafka-python does
                if time.monotonic() > deadline:
                    raise kerr.KafkaTimeoutError(f"producer queue full: {exc}") from exc
                self._producer.poll(SERVE_EVERY_S)
            except (ck.KafkaException, RuntimeError) as exc:
                raise raised(exc) from exc

    def flush(self, timeout: float | None = None) -> None:
        """Wait for every queued record; KafkaTimeoutError when some are still out."""
        left = self._producer.flush() if timeout is None else self._producer.flush(timeout)
        if left:
            raise kerr.KafkaTimeoutError(f"{left} records not acknowledged after {timeout}s")

    def close(self, timeout: float | None = None) -> None:
        """Deliver what is queued (up to ``timeout``), then stop."""
        if self._closing.is_set():
            return
        try:
            self._producer.flush(DEFAULT_TIMEOUT_S if timeout is None else timeout)
        finally:
            self._closing.set()
            self._server.join(timeout=5)
            self._producer.close()

    # transactions (exactly once)
    def init_transactions(self) -> None:
        self._call(self._producer.init_transactions, 60.0)

    def begin_transaction(self) -> None:
        self._call(self._producer.begin_transaction)

    def send_offsets_to_transaction(self, offsets: dict, group_metadata: Any) -> None:
        self._call(self._producer.send_offsets_to_transaction,
                   offsets_to_confluent(offsets), group_metadata, 60.0)

    def commit_transaction(self) -> None:
        self._call(self._producer.commit_transaction, 60.0)

    def abort_transaction(self) -> None:
        self._call(self._producer.abort_transaction, 60.0)

    @staticmethod
    def _call(method: Callable[..., Any], *args: Any) -> None:
        try:
            method(*args)
        except (ck.KafkaException, RuntimeError) as exc:
            raise raised(exc) from exc
