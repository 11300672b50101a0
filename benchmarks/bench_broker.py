"""The broker a benchmark measures against: ``$STREAMAE_BENCH_BOOTSTRAP``, else the
project's own (scripts/local_kafka.py), started for the run and stopped after it."""

from __future__ import annotations

import contextlib
import importlib.util
import os
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


@contextlib.contextmanager
def bench_broker(data: Path, port: int) -> Iterator[str]:
    if address := os.environ.get("STREAMAE_BENCH_BOOTSTRAP"):
        yield address
        return
    spec = importlib.util.spec_from_file_location("local_kafka", ROOT / "scripts/local_kafka.py")
    local_kafka = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(local_kafka)
    local_kafka.start(port, data)
    try:
        yield f"127.0.0.1:{port}"
    finally:
        local_kafka.stop(data)
