"""Poison records through the real broker: each is dead-lettered (byte-identical, or
headers-only when it cannot be stored or read), every good record is scored, the daemon
never stops, and the committed offset reaches the end of the input."""

from __future__ import annotations

import json
import struct
import uuid

import pytest
from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer, TopicPartition
from kafka.admin import NewTopic

from streamae.kafka_io import build_consumer, build_producer, ensure_topics
from streamae.metrics import Metrics
from streamae.pipeline import Daemon
from tests.integration.conftest import BOTH_CLIENTS, settings_from
from tests.integration.odd_records import NullValue, RawKey, null_header_values

pytestmark = pytest.mark.integration

F32 = ("content-type", b"application/x-float32")
WIDTH = 8


def j(obj: object) -> bytes:
    return json.dumps(obj).encode()


def good(i: int) -> bytes:
    return j({"key": f"p{i % 3}", "ts": 1_700_000_000_000 + i,
              "values": [float((i * 7 + k) % 11) for k in range(WIDTH)]})


def ok_values(**body: object) -> bytes:
    return j({"values": [1.0] * WIDTH, **body})


# (value, headers, expected reason); None reason: the value cannot be kept (headers-only)
BAD = [
    (b"{not json", [], "invalid_json"),
    (b"", [], "empty"),
    (b"\xff\xfe{", [], "invalid_json"),
    (b"[" * 30_000 + b"]" * 30_000, [], "invalid_json"),  # RecursionError
    (b'{"values": [' + b"9" * 5000 + b"]}", [], "invalid_json"),
    (b"[1,2,]", [], "invalid_json"),
    (j({"key": "k"}), [], "missing_values"),
    (j({"values": {}}), [], "missing_values"),
    (j({"values": ["a"] * WIDTH}), [], "non_numeric"),
    (j({"values": [True] * WIDTH}), [], "non_numeric"),
    (j({"values": "abc"}), [], "non_numeric"),
    (j({"values": [[1, 2]] * WIDTH}), [], "non_numeric"),
    (j({"value": "x"}), [], "non_numeric"),
    (j("hello"), [], "non_numeric"),
    (b"null", [], "non_numeric"),
    (b"true", [], "non_numeric"),
    (j({"values": [1.0] * 3}), [], "wrong_dimension"),
    (j({"values": {"a": 1.0}}), [], "wrong_dimension"),
    (b'{"values": [NaN, 1, 2, 3, 4, 5, 6, 7]}', [], "non_finite"),
    (b'{"values": [Infinity, 1, 2, 3, 4, 5, 6, 7]}', [], "non_finite"),
    (j({"values": [1e39] * WIDTH}), [], "non_finite"),
    (b'{"values": [1e400, 1, 2, 3, 4, 5, 6, 7]}', [], "non_finite"),
    (ok_values(ts="\u00b2"), [], "bad_timestamp"),
    (ok_values(ts="\u0663"), [], "bad_timestamp"),
    (ok_values(ts="yesterday"), [], "bad_timestamp"),
    (ok_values(ts=True), [], "bad_timestamp"),
    (ok_values(ts=[1]), [], "bad_timestamp"),
    (ok_values(ts="2024-13-40T00:00:00"), [], "bad_timestamp"),
    (ok_values(ts="9" * 5000), [], "timestamp_out_of_range"),
    (ok_values(ts=1e30), [], "timestamp_out_of_range"),
    (ok_values(ts=-1e16), [], "timestamp_out_of_range"),
    (ok_values(ts="1" * 20), [], "timestamp_out_of_range"),
    (ok_values(key={"a": 1}), [], "bad_key"),
    (ok_values(key=True), [], "bad_key"),
    (b"<x/>", [("content-type", b"text/xml")], "unsupported_content_type"),
    (b"\x00" * 5, [F32], "bad_binary"),
    (struct.pack("<3f", 1, 2, 3), [F32], "wrong_dimension"),
    (struct.pack(f"<{WIDTH}f", float("nan"), *[1.0] * (WIDTH - 1)), [F32], "non_finite"),
    (struct.pack(f"<{WIDTH}f", *[1.0] * WIDTH), [F32, ("ts", "\u00b2".encode())],
     "bad_timestamp"),
    (struct.pack(f"<{WIDTH}f", *[1.0] * WIDTH), [F32, ("ts", b"9" * 5000)],
     "timestamp_out_of_range"),
    (b"{not json", [NullValue("n"), ("a", b"1")], "invalid_json"),  # null header value
    (b"{not json", [("\u043a\u043b\u044e\u0447", b"\xff")], "invalid_json"),
    (b"x" * 70_000, [], "oversized"),
    (b"[" + b"1," * 600_000 + b"1]", [], "oversized"),  # 1.2 MB: the DLQ holds it
    (b"y" * 5_000_000, [], None),  # beyond dead_letter_max_bytes: headers-only
]
UNREADABLE = (b"[1,2,3,4,5,6,7,8]", [(RawKey(b"\xff\xfebad"), b"v")])


def create_input(bootstrap: str) -> str:
    name = f"in-{uuid.uuid4().hex[:10]}"
    admin = KafkaAdminClient(bootstrap_servers=bootstrap)
    admin.create_topics([NewTopic(name, 1, 1, topic_configs={"max.message.bytes": "6000000"})])
    admin.close()
    return name


def produce_mixed(bootstrap: str, topic: str) -> tuple[list[int], dict[int, tuple]]:
    """Good records with every bad kind (and the unreadable one) among them; returns the
    good offsets and, by offset, each bad record's (value, reason)."""
    producer = KafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=5,
                             max_request_size=6_000_000)
    plan = [("good", good(i), []) for i in range(420)]
    for n, (value, headers, reason) in enumerate(BAD):
        plan.insert(10 + n * 9, (reason, value, headers))
    plan.insert(300, ("unreadable", *UNREADABLE))
    good_offsets, bad = [], {}
    with null_header_values():
        for kind, value, headers in plan:
            if kind == "unreadable":
                producer.flush()  # alone in its batch: the client cannot read past it
            meta = producer.send(topic, key=b"k", value=value, headers=headers).get(30)
            if kind == "unreadable":
                producer.flush()
            if kind == "good":
                good_offsets.append(meta.offset)
            else:
                bad[meta.offset] = (value, kind)
    producer.close()
    return good_offsets, bad


@BOTH_CLIENTS
def test_every_poison_record_is_dead_lettered_and_every_good_one_scored(
        kafka_client, kafka_bootstrap, daemon_env, read_topic, monkeypatch):
    topic = create_input(kafka_bootstrap)
    env = daemon_env(STREAMAE_KAFKA__INPUT_TOPICS=topic,
                     STREAMAE_KAFKA__DEAD_LETTER_TOPIC=f"dead-{uuid.uuid4().hex[:10]}",
                     STREAMAE_KAFKA__MAX_MESSAGE_BYTES="65536",
                     STREAMAE_KAFKA__DEAD_LETTER_MAX_BYTES="2000000",
                     STREAMAE_WARMUP_SIZE="200", STREAMAE_MODEL__EPOCHS="3")
    settings = settings_from(env, monkeypatch)
    ensure_topics(settings.kafka, [settings.kafka.dead_letter_topic])  # sized for 2 MB
    good_offsets, bad = produce_mixed(kafka_bootstrap, topic)
    assert len(bad) == len(BAD) + 1 >= 40  # every kind, each once

    daemon = Daemon(settings, build_consumer(settings.kafka, settings.batch.max_size),
                    build_producer(settings.kafka), metrics=Metrics())
    stats = daemon.run(max_messages=len(good_offsets) + len(bad), timeout_s=240)

    letters = {int(dict(r.headers)["streamae.source.offset"]): r for r in
               read_topic(settings.kafka.dead_letter_topic, expect=len(bad))}
    assert set(letters) == set(bad)
    for offset, (value, reason) in bad.items():
        headers = dict(letters[offset].headers)
        if reason == "unreadable" and kafka_client == "confluent":
            assert letters[offset].value == value, offset  # unreadable are its headers only
        elif reason in (None, "unreadable"):
            assert letters[offset].value == b"", offset
        else:
            assert letters[offset].value == value, offset  # byte-identical
            assert headers["streamae.error.reason"].decode() == reason, offset
    big = next(o for o, (v, _) in bad.items() if len(v) == 5_000_000)
    assert dict(letters[big].headers)["streamae.value.bytes"] == b"5000000"
    assert dict(letters[big].headers)["streamae.error.reason"] == b"oversized"
    odd = next(o for o, (_, r) in bad.items() if r == "unreadable")
    assert dict(letters[odd].headers)["streamae.error.reason"] == b"unreadable_record"
    null = next(r for r in letters.values() if "streamae.headers.null" in dict(r.headers))
    assert dict(null.headers)["streamae.headers.null"] == b"n"

    scores = read_topic(settings.kafka.scores_topic, expect=len(good_offsets))
    assert sorted({json.loads(r.value)["offset"] for r in scores}) == good_offsets
    assert stats.scored == len(good_offsets) and stats.dead_letters == len(bad)
    assert committed(settings, topic) == len(good_offsets) + len(bad)  # the end


def committed(settings, topic: str) -> int:
    consumer = KafkaConsumer(bootstrap_servers=settings.kafka.bootstrap_servers,
                             group_id=settings.kafka.group_id, enable_auto_commit=False)
    try:
        return consumer.committed(TopicPartition(topic, 0))
    finally:
        consumer.close()


@BOTH_CLIENTS
def test_a_dead_letter_the_broker_refuses_goes_headers_only_and_is_committed(
        kafka_bootstrap, daemon_env, read_topic, monkeypatch):
    topic = create_input(kafka_bootstrap)
    dead = f"dead-{uuid.uuid4().hex[:10]}"
    admin = KafkaAdminClient(bootstrap_servers=kafka_bootstrap)
    admin.create_topics([NewTopic(dead, 1, 1, topic_configs={"max.message.bytes": "100000"})])
    admin.close()
    env = daemon_env(STREAMAE_KAFKA__INPUT_TOPICS=topic, STREAMAE_KAFKA__DEAD_LETTER_TOPIC=dead,
                     STREAMAE_KAFKA__MAX_MESSAGE_BYTES="65536")
    producer = KafkaProducer(bootstrap_servers=kafka_bootstrap, max_request_size=6_000_000)
    producer.send(topic, value=b"z" * 300_000, headers=[("origin", b"test")]).get(30)
    producer.close()
    settings = settings_from(env, monkeypatch)
    daemon = Daemon(settings, build_consumer(settings.kafka, settings.batch.max_size),
                    build_producer(settings.kafka), metrics=Metrics())
    daemon.run(max_messages=1, timeout_s=60)

    (letter,) = read_topic(dead, expect=1)
    headers = dict(letter.headers)
    assert letter.value == b"" and headers["origin"] == b"test"
    assert headers["streamae.error.reason"] == b"oversized"
    assert headers["streamae.value.dropped"] == b"too_large_for_dead_letters"
    assert headers["streamae.value.bytes"] == b"300000"
    assert headers["streamae.value.refused_by"] == b"MessageSizeTooLargeError"
    assert headers["streamae.source.offset"] == b"0"
    assert committed(settings, topic) == 1
