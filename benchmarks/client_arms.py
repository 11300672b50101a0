"""The transport arms of benchmarks/throughput.py (``--client confluent``): kafka-python
against confluent-kafka, each as a bare consume loop and as the daemon, on JSON and on
binary float32 input, arms alternated over rounds (median and range).

Bare loop: poll up to 500, decode every value to float32 (JSON: the named features;
binary: one ``np.frombuffer`` per batch), a synchronous commit per batch. Daemon: a loaded
checkpoint, default settings, no retrainer (``Daemon`` alone), only the transport differs
(``STREAMAE_KAFKA__CLIENT``). Rates and CPU time (the whole process, client threads
included) run from the first batch handled (to the last; CPU to the end of the run), so
start-up and group joins are left out.
"""

from __future__ import annotations

import json
import os
import statistics
import struct
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from kafka import KafkaConsumer, KafkaProducer
from kafka.admin import KafkaAdminClient, NewTopic

from streamae.demo import DemoStream
from streamae.kafka_io import build_consumer, build_producer
from streamae.live import ModelSlot, load_live
from streamae.pipeline import Daemon
from streamae.settings import Settings

PARTITIONS = 4
POLL = 500
F32 = [("content-type", b"application/x-float32")]
CLIENTS = ("kafka-python", "confluent")


@dataclass
class Figures:
    rate: float  # messages/s
    cpu_us: float  # process CPU time per message, microseconds


class Span:
    """First-to-last timing of a run: wall time to the last batch, process CPU time to
    ``finish`` (per batch, ``process_time`` itself cost ~1 us/msg), the count between."""

    def __init__(self) -> None:
        self.first: tuple[float, float, int] | None = None
        self.last: tuple[float, int] = (0.0, 0)
        self.cpu_end = 0.0

    def mark(self, seen: int) -> None:
        if self.first is None:
            self.first = (time.perf_counter(), time.process_time(), seen)
        self.last = (time.perf_counter(), seen)

    def finish(self) -> Figures:
        self.cpu_end = time.process_time()
        assert self.first is not None, "nothing was consumed"
        (wall0, cpu0, seen0), (wall1, seen1) = self.first, self.last
        count = seen1 - seen0
        return Figures(count / (wall1 - wall0), (self.cpu_end - cpu0) / count * 1e6)


def fill(bootstrap: str, readings: list, binary: bool) -> str:
    """A fresh topic of PARTITIONS partitions with every reading, JSON or binary."""
    topic = f"bench-{'bin' if binary else 'json'}-{uuid.uuid4().hex[:8]}"
    admin = KafkaAdminClient(bootstrap_servers=bootstrap)
    admin.create_topics([NewTopic(topic, PARTITIONS, 1)])
    admin.close()
    producer = KafkaProducer(bootstrap_servers=bootstrap, acks=1, linger_ms=20,
                             batch_size=256 * 1024)
    for reading in readings:
        if binary:
            values = list(reading.values.values())
            producer.send(topic, key=reading.key.encode(), headers=F32,
                          value=struct.pack(f"<{len(values)}f", *values))
        else:
            producer.send(topic, key=reading.key.encode(),
                          value=json.dumps(reading.as_message()).encode())
    producer.flush()
    producer.close()
    return topic


def decode(values: list[bytes], binary: bool, width: int) -> np.ndarray:
    if binary:
        return np.frombuffer(b"".join(values), "<f4").reshape(-1, width)
    out = np.empty((len(values), width), np.float32)
    for i, value in enumerate(values):
        out[i] = np.fromiter(json.loads(value)["values"].values(), np.float32, width)
    return out


def bare_kafka_python(bootstrap: str, topic: str, count: int, binary: bool,
                      width: int) -> Figures:
    consumer = KafkaConsumer(topic, bootstrap_servers=bootstrap, group_id=uuid.uuid4().hex,
                             enable_auto_commit=False, auto_offset_reset="earliest",
                             max_poll_records=POLL)
    span, seen = Span(), 0
    while seen < count:
        values = [r.value for batch in consumer.poll(timeout_ms=100).values() for r in batch]
        if values:
            decode(values, binary, width)
            consumer.commit()
            seen += len(values)
            span.mark(seen)
    figures = span.finish()
    consumer.close()
    return figures


def bare_confluent(bootstrap: str, topic: str, count: int, binary: bool,
                   width: int) -> Figures:
    import confluent_kafka as ck

    consumer = ck.Consumer({"bootstrap.servers": bootstrap, "group.id": uuid.uuid4().hex,
                            "enable.auto.commit": False, "auto.offset.reset": "earliest"})
    consumer.subscribe([topic])
    span, seen = Span(), 0
    while seen < count:
        values = [m.value() for m in consumer.consume(POLL, 0.1) if m.error() is None]
        if values:
            decode(values, binary, width)
            consumer.commit(asynchronous=False)
            seen += len(values)
            span.mark(seen)
    figures = span.finish()
    consumer.close()
    return figures


def daemon_arm(bootstrap: str, topic: str, count: int, client: str, checkpoints: Path,
               device: str) -> Figures:
    os.environ.update({
        "STREAMAE_KAFKA__BOOTSTRAP_SERVERS": bootstrap, "STREAMAE_KAFKA__INPUT_TOPICS": topic,
        "STREAMAE_KAFKA__OUTPUT_TOPIC": f"{topic}-anomalies", "STREAMAE_KAFKA__CLIENT": client,
        "STREAMAE_KAFKA__GROUP_ID": uuid.uuid4().hex, "STREAMAE_DEVICE": device,
        "STREAMAE_CHECKPOINTS__DIRECTORY": str(checkpoints), "STREAMAE_METRICS_PORT": "0",
    })
    try:
        settings = Settings()
    finally:
        os.environ.pop("STREAMAE_KAFKA__CLIENT")
    slot = ModelSlot()
    slot.swap(load_live(checkpoints, device, settings.batch.max_size))
    daemon = Daemon(settings, build_consumer(settings.kafka, settings.batch.max_size),
                    build_producer(settings.kafka), slot=slot)
    span = Span()
    daemon.scored_hooks.append(lambda *_: span.mark(daemon.stats.scored))
    daemon.run(max_messages=count, timeout_s=600)
    return span.finish()  # CPU time includes the shutdown (flush, commit, close)


def arms(bootstrap: str, count: int, binary: bool, width: int, checkpoints: Path,
         device: str, topic: str) -> dict[str, Callable[[], Figures]]:
    return {
        "bare kafka-python loop": lambda: bare_kafka_python(bootstrap, topic, count, binary,
                                                            width),
        "bare confluent loop": lambda: bare_confluent(bootstrap, topic, count, binary, width),
        "daemon kafka-python": lambda: daemon_arm(bootstrap, topic, count, "kafka-python",
                                                  checkpoints, device),
        "daemon confluent": lambda: daemon_arm(bootstrap, topic, count, "confluent",
                                               checkpoints, device),
    }


def compare_clients(bootstrap: str, count: int, rounds: int, checkpoints: Path,
                    device: str) -> None:
    """Print the table: each arm's median msg/s (range), ratio to the bare kafka-python
    loop of its format, CPU us/msg; and the transport goals of issue 14."""
    readings = DemoStream(seed=1).take(count)
    width = len(readings[0].values)
    results: dict[tuple[str, str], list[Figures]] = {}
    plans = {fmt: arms(bootstrap, count, fmt == "binary", width, checkpoints, device,
                       fill(bootstrap, readings, fmt == "binary"))
             for fmt in ("json", "binary")}
    for n in range(rounds):
        for fmt, plan in plans.items():
            names = list(plan)
            for name in names[n % len(names):] + names[:n % len(names)]:  # rotate order
                results.setdefault((fmt, name), []).append(plan[name]())
                print(f"  round {n + 1} {fmt:6} {name:24} "
                      f"{results[fmt, name][-1].rate:>9,.0f} msg/s "
                      f"{results[fmt, name][-1].cpu_us:6.1f} us/msg", flush=True)
    print(f"\nmessages={count} partitions={PARTITIONS} rounds={rounds} device={device}")
    print("| input | arm | msgs/s (median, range) | ratio to bare kafka-python | CPU us/msg |")
    print("|---|---|---|---|---|")
    median = {key: statistics.median(f.rate for f in runs) for key, runs in results.items()}
    for (fmt, name), runs in results.items():
        rates = [f.rate for f in runs]
        base = median[fmt, "bare kafka-python loop"]
        print(f"| {fmt} | {name} | {median[fmt, name]:,.0f} ({min(rates):,.0f}-"
              f"{max(rates):,.0f}) | {median[fmt, name] / base:.2f} | "
              f"{statistics.median(f.cpu_us for f in runs):.1f} |")
    for fmt, goal in (("binary", 3.0), ("json", 2.0)):
        ratio = median[fmt, "daemon confluent"] / median[fmt, "daemon kafka-python"]
        print(f"daemon confluent / daemon kafka-python, {fmt}: {ratio:.2f} (goal >= {goal})")
