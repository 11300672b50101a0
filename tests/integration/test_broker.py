"""The broker the tests use is a real Apache Kafka: partitions, groups, commits, restarts."""

from __future__ import annotations

import threading
import time

import pytest
from kafka import KafkaConsumer, KafkaProducer, TopicPartition
from kafka.structs import OffsetAndMetadata

pytestmark = pytest.mark.integration


def produce(bootstrap: str, topic: str, count: int, **config: object) -> None:
    producer = KafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=5, **config)
    futures = [producer.send(topic, key=str(i).encode(), value=str(i).encode())
               for i in range(count)]
    producer.flush(timeout=60)
    for future in futures:
        future.get(timeout=10)  # raises if the broker did not acknowledge it
    producer.close()


def consumer(bootstrap: str, topic: str, group: str) -> KafkaConsumer:
    return KafkaConsumer(topic, bootstrap_servers=bootstrap, group_id=group,
                         enable_auto_commit=False, auto_offset_reset="earliest")


def drain(cons: KafkaConsumer, want: int, timeout_s: float = 60) -> list:
    records: list = []
    deadline = time.monotonic() + timeout_s
    while len(records) < want and time.monotonic() < deadline:
        for batch in cons.poll(timeout_ms=500).values():
            records.extend(batch)
    return records


def test_ten_thousand_messages_through_a_consumer_group(kafka_bootstrap, make_topic):
    topic = make_topic("bulk", partitions=4)
    produce(kafka_bootstrap, topic, 10_000)
    cons = consumer(kafka_bootstrap, topic, "bulk-group")
    records = drain(cons, 10_000)
    cons.commit()
    assert sorted(int(r.value) for r in records) == list(range(10_000))
    assert {r.partition for r in records} == {0, 1, 2, 3}
    committed = sum(cons.committed(TopicPartition(topic, p)) for p in range(4))
    assert committed == 10_000
    cons.close()


def test_reopened_consumer_resumes_exactly_at_committed_offsets(kafka_bootstrap, make_topic):
    topic = make_topic("resume", partitions=3)
    produce(kafka_bootstrap, topic, 900)
    first = consumer(kafka_bootstrap, topic, "resume-group")
    seen = drain(first, 300)
    # Commit only what was processed: offset + 1 of the last record seen per partition.
    last: dict[int, int] = {}
    for record in seen:
        last[record.partition] = max(last.get(record.partition, -1), record.offset)
    first.commit({TopicPartition(topic, p): OffsetAndMetadata(o + 1, "", -1)
                  for p, o in last.items()})
    first.close()

    second = consumer(kafka_bootstrap, topic, "resume-group")
    rest = drain(second, 900 - len(seen))
    second.close()
    first_offsets: dict[int, int] = {}
    for record in rest:
        first_offsets.setdefault(record.partition, record.offset)
    for partition, offset in first_offsets.items():
        assert offset == last.get(partition, -1) + 1
    values = [int(r.value) for r in seen + rest]
    assert sorted(values) == list(range(900)), "a message was lost or read twice"


def test_client_that_retries_survives_a_broker_restart(restartable_broker):
    bootstrap = restartable_broker.bootstrap
    produce(bootstrap, "restart", 50)
    producer = KafkaProducer(bootstrap_servers=bootstrap, acks="all", retries=100,
                             delivery_timeout_ms=120_000, request_timeout_ms=10_000,
                             reconnect_backoff_max_ms=1_000)
    restartable_broker.stop()
    futures = []
    sender = threading.Thread(
        target=lambda: futures.extend(
            producer.send("restart", value=str(i).encode()) for i in range(50, 100)
        )
    )
    sender.start()
    time.sleep(2)
    restartable_broker.start()
    sender.join(timeout=60)
    producer.flush(timeout=90)
    assert all(f.get(timeout=30) for f in futures)
    producer.close()
    cons = consumer(bootstrap, "restart", "restart-group")
    values = sorted(int(r.value) for r in drain(cons, 100, timeout_s=90))
    cons.close()
    assert values == list(range(100))
