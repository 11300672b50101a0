"""The confluent-kafka adapters' translation: settings to librdkafka options (checked by
librdkafka itself, no broker needed), errors to kafka-python's classes, client selection."""

from __future__ import annotations

import importlib
import sys

import pytest
from kafka import TopicPartition
from kafka import errors as kerr
from kafka.structs import OffsetAndMetadata
from pydantic import SecretStr, ValidationError

from streamae.exceptions import SettingsError
from streamae.kafka_io import build_consumer, build_producer, request_limit
from streamae.settings import KafkaSettings

ck = pytest.importorskip("confluent_kafka")
confluent = importlib.import_module("streamae.transport.confluent")

SASL = {"security_protocol": "SASL_PLAINTEXT", "sasl_mechanism": "SCRAM-SHA-512",
        "sasl_username": "streamae", "sasl_password": SecretStr("s3cret")}


def settings(**overrides) -> KafkaSettings:
    return KafkaSettings(bootstrap_servers="127.0.0.1:1", client="confluent", **overrides)


def test_kafka_python_stays_the_default_and_other_clients_are_refused():
    assert KafkaSettings().client == "kafka-python"
    with pytest.raises(ValidationError):
        KafkaSettings(client="librdkafka")


def test_sasl_and_ssl_settings_map_to_librdkafka_names_with_secrets_unwrapped(tmp_path):
    files = {name: tmp_path / f"{name}.pem" for name in ("ca", "cert", "key")}
    config = confluent.client_config(settings(
        **{**SASL, "security_protocol": "SASL_SSL"}, ssl_cafile=files["ca"],
        ssl_certfile=files["cert"], ssl_keyfile=files["key"], ssl_password=SecretStr("k")))
    assert {k: v for k, v in config.items() if k.startswith(("sasl", "ssl", "security"))} == {
        "security.protocol": "SASL_SSL", "sasl.mechanisms": "SCRAM-SHA-512",
        "sasl.username": "streamae", "sasl.password": "s3cret",
        "ssl.ca.location": str(files["ca"]), "ssl.certificate.location": str(files["cert"]),
        "ssl.key.location": str(files["key"]), "ssl.key.password": "k"}
    assert "sasl.mechanisms" not in confluent.client_config(settings())


@pytest.mark.parametrize("delivery", ["at_least_once", "exactly_once"])
def test_librdkafka_accepts_every_option_the_daemon_sets(delivery):
    kafka = settings(**SASL, delivery=delivery)
    ck.Consumer(confluent.consumer_config(kafka)).close()  # raises on a bad option
    producer_options = confluent.producer_config(kafka)
    ck.Producer(producer_options)
    assert producer_options["message.max.bytes"] == request_limit(kafka)
    assert producer_options["acks"] == "all"
    transactional = delivery == "exactly_once"
    assert ("transactional.id" in producer_options) == transactional
    assert producer_options["enable.idempotence"] == transactional
    consumer_options = confluent.consumer_config(kafka)
    assert consumer_options["enable.auto.commit"] is False
    assert consumer_options["isolation.level"] == (
        "read_committed" if transactional else "read_uncommitted")


def test_the_model_producer_is_sized_for_checkpoints_and_never_transactional():
    options = confluent.producer_config(settings(delivery="exactly_once"), max_bytes=9_000_000)
    assert options["message.max.bytes"] == 9_000_000 and "transactional.id" not in options


@pytest.mark.parametrize(("code", "kind"), [
    (ck.KafkaError.MSG_SIZE_TOO_LARGE, kerr.MessageSizeTooLargeError),  # broker table
    (ck.KafkaError.REBALANCE_IN_PROGRESS, kerr.RebalanceInProgressError),
    (ck.KafkaError._MSG_TIMED_OUT, kerr.KafkaTimeoutError),  # local, by meaning
    (ck.KafkaError._TRANSPORT, kerr.KafkaConnectionError),
    (ck.KafkaError._STATE, kerr.IllegalStateError),
    (ck.KafkaError._FENCED, kerr.KafkaError),  # anything else local: the base class
])
def test_errors_become_the_kafka_python_classes_the_daemon_catches(code, kind):
    error = confluent.translate(ck.KafkaError(code))
    assert type(error) is kind
    assert ck.KafkaError(code).name() in str(error)


def test_retriable_flag_survives_translation():
    assert confluent.translate(ck.KafkaError(ck.KafkaError.NOT_COORDINATOR)).retriable
    assert not confluent.translate(ck.KafkaError(ck.KafkaError.MSG_SIZE_TOO_LARGE)).retriable


def test_raised_exceptions_translate_and_a_closed_client_is_illegal_state():
    exc = ck.KafkaException(ck.KafkaError(ck.KafkaError.MSG_SIZE_TOO_LARGE))
    assert isinstance(confluent.raised(exc), kerr.MessageSizeTooLargeError)
    assert isinstance(confluent.raised(RuntimeError("closed")), kerr.IllegalStateError)


def test_offsets_translate_to_confluent_partitions():
    offsets = {TopicPartition("a", 1): OffsetAndMetadata(7, "", -1), TopicPartition("b", 0): 3}
    assert [(p.topic, p.partition, p.offset) for p in
            confluent.offsets_to_confluent(offsets)] == [("a", 1, 7), ("b", 0, 3)]


def test_the_setting_selects_the_adapters():
    kafka = settings(group_id="g", input_topics=["t"])
    consumer = build_consumer(kafka, 100)
    producer = build_producer(kafka)
    try:
        assert isinstance(consumer, confluent.ConfluentConsumer)
        assert isinstance(producer, confluent.ConfluentProducer)
        assert callable(consumer.poll_records)  # kafka_io.poll_available's batch path
    finally:
        consumer.close()
        producer.close(timeout=0)


def test_without_the_extra_the_setting_is_a_clear_error(monkeypatch):
    monkeypatch.setitem(sys.modules, "confluent_kafka", None)  # import fails
    monkeypatch.delitem(sys.modules, "streamae.transport.confluent")
    monkeypatch.delattr(importlib.import_module("streamae.transport"), "confluent")
    with pytest.raises(SettingsError, match=r"pip install 'streamae\[confluent\]'"):
        build_consumer(settings(), 100)


def test_a_message_becomes_a_kafka_python_record():
    message = ck.Message(topic="t", partition=2, offset=41, key=b"pump-1", value=b"[1,2]",
                         headers=[("content-type", b"application/json"), ("n", None)],
                         timestamp=(ck.TIMESTAMP_CREATE_TIME, 1_700_000_000_000))
    record = confluent.record_of(message)
    assert (record.topic, record.partition, record.offset) == ("t", 2, 41)
    assert (record.key, record.value) == (b"pump-1", b"[1,2]")
    assert record.headers == [("content-type", b"application/json"), ("n", None)]
    assert (record.timestamp, record.timestamp_type) == (1_700_000_000_000, 0)  # create
    assert (record.serialized_key_size, record.serialized_value_size) == (6, 5)


def test_a_message_without_headers_key_or_value_has_kafka_pythons_empties():
    record = confluent.record_of(ck.Message(topic="t", partition=0, offset=0,
                                            timestamp=(ck.TIMESTAMP_LOG_APPEND_TIME, 5)))
    assert record.headers == [] and record.key is None and record.value is None
    assert record.timestamp_type == 1 and record.serialized_value_size == -1


def test_the_stand_in_of_an_unreadable_record_keeps_its_bytes_and_position():
    message = ck.Message(topic="t", partition=3, offset=9, key=b"k", value=b"raw",
                         timestamp=(ck.TIMESTAMP_CREATE_TIME, 7))
    stand_in = confluent.stand_in(message)
    assert (stand_in.topic, stand_in.partition, stand_in.offset) == ("t", 3, 9)
    assert (stand_in.key, stand_in.value, stand_in.headers) == (b"k", b"raw", [])
