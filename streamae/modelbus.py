"""The model topic: how a trainer hands each new checkpoint to every scorer replica.

The topic is compacted and every checkpoint is sent under one key, so the broker keeps the
newest and a scorer that starts late (or restarts) still finds it. A record is the blob of
``checkpoint_to_bytes`` (safetensors + JSON, never pickle) with the version in a header, so
a subscriber can skip old versions without parsing them.

Checkpoints can outgrow Kafka's 1 MB default (conv models, long threshold windows), so the
topic is created with ``max.message.bytes`` and both clients with matching size limits
(``retrain.model_max_bytes``).
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any

from kafka import TopicPartition
from kafka.admin import NewTopic
from kafka.errors import KafkaError, TopicAlreadyExistsError

from streamae.checkpoints import checkpoint_from_bytes
from streamae.exceptions import CheckpointError, InfrastructureError, ModelRejected
from streamae.kafka_io import admin_client, build_model_producer, build_reader
from streamae.live import ModelSlot, admit, live_from_checkpoint, rejection_reason
from streamae.metrics import Metrics
from streamae.settings import KafkaSettings

log = logging.getLogger(__name__)

KEY = b"checkpoint"  # one key: compaction keeps the newest checkpoint only
VERSION_HEADER = "streamae-model-version"
CONTENT_TYPE = ("content-type", b"application/vnd.streamae.checkpoint+safetensors")
PUBLISH_TIMEOUT_S = 60.0


def ensure_model_topic(kafka: KafkaSettings, max_bytes: int) -> None:
    """Create the compacted model topic, sized for checkpoints, if it does not exist."""
    configs = {"cleanup.policy": "compact", "max.message.bytes": str(max_bytes)}
    admin = admin_client(kafka)
    try:
        if kafka.model_topic not in set(admin.list_topics()):
            admin.create_topics([NewTopic(kafka.model_topic, 1, 1, topic_configs=configs)])
            log.info("event=topics_created topics=%s compacted=true max_message_bytes=%d",
                     kafka.model_topic, max_bytes)
    except TopicAlreadyExistsError:
        pass  # another replica created it first
    except KafkaError as exc:
        log.warning("event=topic_creation_failed topic=%s error=%r", kafka.model_topic, exc)
    finally:
        admin.close()


class ModelPublisher:
    """Sends checkpoints to the model topic; a producer of its own, sized for them."""

    def __init__(self, kafka: KafkaSettings, max_bytes: int) -> None:
        self.topic = kafka.model_topic
        self.max_bytes = max_bytes
        try:
            self.producer = build_model_producer(kafka, max_bytes)
        except KafkaError as exc:
            raise InfrastructureError(f"cannot connect model producer: {exc}") from exc

    def __call__(self, blob: bytes, version: int) -> None:
        """Publish one version and wait for the ack (called from the retrainer's worker)."""
        if len(blob) > self.max_bytes:
            raise InfrastructureError(f"checkpoint of {len(blob)} bytes exceeds "
                                      f"retrain.model_max_bytes={self.max_bytes}")
        headers = [(VERSION_HEADER, str(version).encode()), CONTENT_TYPE]
        try:
            meta = self.producer.send(self.topic, key=KEY, value=blob,
                                      headers=headers).get(timeout=PUBLISH_TIMEOUT_S)
        except KafkaError as exc:
            raise InfrastructureError(f"cannot publish model version {version}: {exc}") from exc
        log.info("event=model_published topic=%s version=%d bytes=%d offset=%d", self.topic,
                 version, len(blob), meta.offset)

    def close(self) -> None:
        self.producer.close(timeout=10)


def record_version(record: Any) -> int | None:
    """The version a model-topic record carries in its header; None when it has none or
    the value is not a positive ASCII integer (a null value included)."""
    for name, value in record.headers or ():
        if name == VERSION_HEADER:
            text = value.decode("ascii", "replace") if isinstance(value, bytes) else ""
            return int(text) if text.isascii() and text.isdigit() and len(text) < 19 else None
    return None


class ModelSubscriber:
    """Loads each newer checkpoint from the model topic into the slot, without a restart.

    A consumer of its own without a group reads the topic from the beginning (every
    replica needs every version; nothing to share or commit) on a background thread.
    """

    def __init__(self, kafka: KafkaSettings, max_bytes: int, slot: ModelSlot, device: str,
                 max_batch: int, metrics: Metrics, kind: str | None = None) -> None:
        self.kafka, self.slot, self.device, self.kind = kafka, slot, device, kind
        self.max_batch, self.metrics = max_batch, metrics
        self.loaded = 0  # the highest version taken from the topic
        self.stop = threading.Event()
        self._thread: threading.Thread | None = None
        try:
            self.consumer = build_reader(kafka, max_bytes)
        except KafkaError as exc:
            raise InfrastructureError(f"cannot connect model consumer: {exc}") from exc

    def start(self, catch_up_s: float = 10.0) -> None:
        """Load the newest checkpoint already on the topic (bounded wait), then follow it."""
        self._assign(catch_up_s)
        deadline = time.monotonic() + catch_up_s
        while time.monotonic() < deadline and not self._caught_up():
            self.poll_once(timeout_ms=200)
        self._thread = threading.Thread(target=self._follow, name="model-subscriber",
                                        daemon=True)
        self._thread.start()

    def _assign(self, wait_s: float) -> None:
        deadline = time.monotonic() + wait_s
        partitions = self.consumer.partitions_for_topic(self.kafka.model_topic)
        while not partitions and time.monotonic() < deadline:
            time.sleep(0.2)
            partitions = self.consumer.partitions_for_topic(self.kafka.model_topic)
        if not partitions:
            raise InfrastructureError(f"model topic {self.kafka.model_topic} does not exist")
        tps = [TopicPartition(self.kafka.model_topic, p) for p in sorted(partitions)]
        self.consumer.assign(tps)
        self.consumer.seek_to_beginning(*tps)

    def _caught_up(self) -> bool:
        tps = list(self.consumer.assignment())
        ends = self.consumer.end_offsets(tps)
        return all(self.consumer.position(tp) >= ends.get(tp, 0) for tp in tps)

    def _follow(self) -> None:
        while not self.stop.is_set():
            try:
                self.poll_once(timeout_ms=500)
            except Exception as exc:  # the scorer keeps serving the model it has
                log.exception("event=model_subscriber_error error=%r", exc)
                self.stop.wait(5.0)

    def poll_once(self, timeout_ms: int) -> int | None:
        """Take the highest new version of one poll that passes the checks (falling back
        to lower new ones); returns the version swapped in. A refused record is logged,
        counted and never tried again."""
        polled = self.consumer.poll(timeout_ms=timeout_ms)
        candidates = []
        for records in polled.values():
            for record in records:
                version = record_version(record)
                if version is None:
                    self._reject(record, None, ModelRejected(
                        "no_version", f"header {VERSION_HEADER} missing or not an integer"))
                elif version > self.loaded:
                    candidates.append((version, record.offset, record))
        for version, _, record in sorted(candidates, key=lambda c: c[:2], reverse=True):
            if self._load(record, version) is not None:
                return version
        return None

    def _reject(self, record: Any, version: int | None, error: CheckpointError) -> None:
        reason = rejection_reason(error)
        self.metrics.models_rejected.labels(reason=reason).inc()
        log.warning("event=model_rejected origin=model_topic version=%s offset=%d reason=%s "
                    "error=%r", version, record.offset, reason, str(error)[:300])

    def _load(self, record: Any, version: int) -> int | None:
        try:
            checkpoint = checkpoint_from_bytes(record.value or b"")
            if checkpoint.version != version:
                raise ModelRejected("version_mismatch", f"header says {version}, checkpoint "
                                                        f"holds {checkpoint.version}")
            running = self.slot.live
            admit(checkpoint, kind=self.kind,
                  input_shape=None if running is None else running.scorer.input_shape)
            live = live_from_checkpoint(checkpoint, self.device, self.max_batch)
        except CheckpointError as exc:
            self._reject(record, version, exc)
            return None
        self.loaded = live.version
        self.slot.swap(live)
        self.metrics.set_model(live.kind, live.version)
        log.info("event=model_loaded origin=model_topic version=%d kind=%s offset=%d",
                 live.version, live.kind, record.offset)
        return live.version

    def close(self) -> None:
        self.stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
        self.consumer.close()
