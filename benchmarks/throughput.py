"""End-to-end throughput of the daemon against a bare kafka-python loop, on one broker.

    .venv/bin/python benchmarks/throughput.py [--messages 50000] [--device cpu]
    .venv/bin/python benchmarks/throughput.py --client confluent [--messages N --rounds 3]

Uses STREAMAE_BENCH_BOOTSTRAP when set, else starts the project's own broker. Prints
messages/s of (a) a bare consume loop (poll, json.loads, commit per batch), (b) the
daemon (decode, score, threshold, publish anomalies, flush, commit), their ratio, with
the baseline run before and after the daemon, and scoring-only vectors/s by batch size.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
import uuid
from pathlib import Path

import numpy as np
import torch
from bench_broker import bench_broker
from kafka import KafkaConsumer, KafkaProducer
from kafka.admin import KafkaAdminClient, NewTopic

from streamae.checkpoints import save_checkpoint
from streamae.demo import DemoStream
from streamae.kafka_io import build_consumer, build_producer
from streamae.live import ModelSlot, calibrated_threshold, load_live, train_detector
from streamae.pipeline import Daemon
from streamae.scoring import Scorer
from streamae.settings import Settings

ROOT = Path(__file__).resolve().parents[1]


def fill_topic(bootstrap: str, messages: list[bytes], keys: list[bytes]) -> str:
    topic = f"bench-{uuid.uuid4().hex[:8]}"
    admin = KafkaAdminClient(bootstrap_servers=bootstrap)
    admin.create_topics([NewTopic(topic, 1, 1)])
    admin.close()
    producer = KafkaProducer(bootstrap_servers=bootstrap, acks=1, linger_ms=20,
                             batch_size=256 * 1024)
    for key, value in zip(keys, messages, strict=True):
        producer.send(topic, key=key, value=value)
    producer.flush()
    producer.close()
    return topic


def bare_loop(bootstrap: str, topic: str, count: int) -> float:
    consumer = KafkaConsumer(topic, bootstrap_servers=bootstrap, group_id=uuid.uuid4().hex,
                             enable_auto_commit=False, auto_offset_reset="earliest",
                             max_poll_records=256)
    seen, started = 0, None
    while seen < count:
        for batch in consumer.poll(timeout_ms=100).values():
            started = started or time.perf_counter()
            for record in batch:
                json.loads(record.value)
            seen += len(batch)
        if started:
            consumer.commit()
    elapsed = time.perf_counter() - started
    consumer.close()
    return count / elapsed


def bench_settings(bootstrap: str, topic: str, checkpoints: Path, device: str) -> Settings:
    os.environ.update({
        "STREAMAE_KAFKA__BOOTSTRAP_SERVERS": bootstrap, "STREAMAE_KAFKA__INPUT_TOPICS": topic,
        "STREAMAE_KAFKA__OUTPUT_TOPIC": f"{topic}-anomalies",
        "STREAMAE_KAFKA__GROUP_ID": uuid.uuid4().hex, "STREAMAE_DEVICE": device,
        "STREAMAE_CHECKPOINTS__DIRECTORY": str(checkpoints), "STREAMAE_METRICS_PORT": "0",
    })
    return Settings()


def scoring_only(scorer: Scorer, data: np.ndarray) -> list[tuple[int, float]]:
    figures = []
    for size in (1, 16, 64, 256, 1024, 4096):
        batch = data[:size]
        scorer.score(batch)  # warm
        reps = max(3, 20_000 // size)
        started = time.perf_counter()
        for _ in range(reps):
            scorer.score(batch)
        figures.append((size, reps * size / (time.perf_counter() - started)))
    return figures


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--messages", type=int, default=50_000)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=Settings().torch_threads)
    parser.add_argument("--client", choices=["kafka-python", "confluent"],
                        default="kafka-python",
                        help="confluent: compare the transports instead (client_arms.py)")
    parser.add_argument("--rounds", type=int, default=3, help="--client confluent: rounds")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    work = Path(tempfile.mkdtemp(prefix="streamae-bench-"))
    if args.client == "confluent":
        return transport_comparison(args, work)
    with bench_broker(work / "kafka", 19392) as bootstrap:
        readings = DemoStream(seed=1).take(args.messages)
        messages = [json.dumps(r.as_message()).encode() for r in readings]
        keys = [r.key.encode() for r in readings]
        topic = fill_topic(bootstrap, messages, keys)
        settings = bench_settings(bootstrap, topic, work / "checkpoints", args.device)
        data = np.array([list(r.values.values()) for r in readings], dtype=np.float32)
        detector = train_detector(data[:2000], settings.model, args.device)
        threshold = calibrated_threshold(settings.threshold, detector)
        save_checkpoint(settings.checkpoints.directory, detector,
                        threshold_state=threshold.state(), metadata={"origin": "bench"})
        slot_live = load_live(settings.checkpoints.directory, args.device, 256)
        before = bare_loop(bootstrap, topic, args.messages)
        slot = ModelSlot()
        slot.swap(slot_live)
        daemon = Daemon(settings, build_consumer(settings.kafka, settings.batch.max_size),
                        build_producer(settings.kafka), slot=slot)
        first: list[float] = []
        daemon.scored_hooks.append(lambda *_: first or first.append(time.perf_counter()))
        daemon.run(max_messages=args.messages, timeout_s=600)
        daemon_rate = args.messages / (time.perf_counter() - first[0])
        after = bare_loop(bootstrap, topic, args.messages)
        baseline = (before + after) / 2
        print(f"messages={args.messages} device={args.device} torch_threads={args.threads}")
        print(f"bare kafka-python loop: {before:,.0f} msg/s (before), {after:,.0f} (after)")
        print(f"streamae daemon:        {daemon_rate:,.0f} msg/s "
              f"(anomalies {daemon.stats.anomalies})")
        print(f"ratio daemon/bare:      {daemon_rate / baseline:.2f}  (goal >= 0.85)")
        print("scoring only (dense, 8 features):")
        for size, rate in scoring_only(slot_live.scorer, data):
            print(f"  batch {size:>5}: {rate:>12,.0f} vectors/s")
    return 0


def transport_comparison(args: argparse.Namespace, work: Path) -> int:
    """``--client confluent``: the arms of client_arms.py on a model trained here."""
    from client_arms import compare_clients

    with bench_broker(work / "kafka", 19392) as bootstrap:
        readings = DemoStream(seed=1).take(2000)
        data = np.array([list(r.values.values()) for r in readings], dtype=np.float32)
        settings = Settings()
        detector = train_detector(data, settings.model, args.device)
        threshold = calibrated_threshold(settings.threshold, detector)
        save_checkpoint(work / "checkpoints", detector, threshold_state=threshold.state(),
                        metadata={"origin": "bench"})
        compare_clients(bootstrap, args.messages, args.rounds, work / "checkpoints",
                        args.device)
    return 0


if __name__ == "__main__":
    sys.exit(main())
