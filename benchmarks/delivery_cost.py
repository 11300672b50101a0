"""The throughput cost of STREAMAE_KAFKA__DELIVERY=exactly_once against at_least_once.

    .venv/bin/python benchmarks/delivery_cost.py [--messages 20000] [--scores]

Same topic, same trained model, a fresh consumer group per run; each mode runs twice,
alternating, and the better run counts. With ``--scores`` every message also produces a
score record (one output per input, the transaction's worst case). Uses
STREAMAE_BENCH_BOOTSTRAP when set, else starts the project's own broker.
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
from bench_broker import bench_broker
from throughput import bench_settings, fill_topic

from streamae.checkpoints import save_checkpoint
from streamae.demo import DemoStream
from streamae.kafka_io import build_consumer, build_producer
from streamae.live import ModelSlot, calibrated_threshold, load_live, train_detector
from streamae.pipeline import Daemon


def run_once(bootstrap: str, topic: str, work: Path, delivery: str, scores: bool,
             count: int) -> float:
    os.environ["STREAMAE_KAFKA__DELIVERY"] = delivery
    os.environ["STREAMAE_KAFKA__TRANSACTIONAL_ID"] = f"bench-{uuid.uuid4().hex[:8]}"
    if scores:
        os.environ["STREAMAE_KAFKA__SCORES_TOPIC"] = f"{topic}-scores"
    settings = bench_settings(bootstrap, topic, work / "checkpoints", "cpu")
    slot = ModelSlot()
    slot.swap(load_live(settings.checkpoints.directory, "cpu", 256))
    daemon = Daemon(settings, build_consumer(settings.kafka, settings.batch.max_size),
                    build_producer(settings.kafka), slot=slot)
    first: list[float] = []
    daemon.scored_hooks.append(lambda *_: first or first.append(time.perf_counter()))
    daemon.run(max_messages=count, timeout_s=600)
    return count / (time.perf_counter() - first[0])


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--messages", type=int, default=20_000)
    parser.add_argument("--scores", action="store_true")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="streamae-bench-"))
    with bench_broker(work / "kafka", 19393) as bootstrap:
        readings = DemoStream(seed=1).take(args.messages)
        topic = fill_topic(bootstrap, [json.dumps(r.as_message()).encode() for r in readings],
                           [r.key.encode() for r in readings])
        settings = bench_settings(bootstrap, topic, work / "checkpoints", "cpu")
        data = np.array([list(r.values.values()) for r in readings[:2000]], dtype=np.float32)
        detector = train_detector(data, settings.model, "cpu")
        save_checkpoint(settings.checkpoints.directory, detector, metadata={"origin": "bench"},
                        threshold_state=calibrated_threshold(settings.threshold,
                                                             detector).state())
        rates: dict[str, list[float]] = {"at_least_once": [], "exactly_once": []}
        for _ in range(2):
            for mode in rates:
                rates[mode].append(run_once(bootstrap, topic, work, mode, args.scores,
                                            args.messages))
    best = {mode: max(values) for mode, values in rates.items()}
    print(f"messages={args.messages} scores_topic={args.scores} batch=256")
    for mode, values in rates.items():
        print(f"{mode:>14}: {best[mode]:,.0f} msg/s (runs: "
              f"{', '.join(f'{v:,.0f}' for v in values)})")
    print(f"exactly_once / at_least_once: {best['exactly_once'] / best['at_least_once']:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
