"""Scoring throughput with and without a retrain running beside it.

The daemon's scoring path (``Scorer.score``, threshold classify/update, the retrainer's
scored hook) is timed for ``--seconds`` alone, then while the real ``Retrainer`` trains a
challenger in its background thread (on a GPU: on its own CUDA stream), then alone again.
The ratio is during / mean(before, after); the target is >= 0.8.

On CPU both run in one process: torch's intra-op thread count is process-global
(``STREAMAE_TORCH_THREADS``, default 1, which ``streamae run`` applies), and Python's GIL is
shared, so the figure depends on the cores there are; ``--threads`` sets it here.

Usage: ``python benchmarks/retrain_throughput.py [--device cpu|cuda] [--threads 1]
[--dim 8] [--batch 256] [--seconds 5]``
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from streamae.live import LiveModel, ModelSlot, calibrated_threshold, train_detector  # noqa: E402
from streamae.metrics import Metrics  # noqa: E402
from streamae.retrain import Retrainer  # noqa: E402
from streamae.scoring import Scorer  # noqa: E402
from streamae.settings import (  # noqa: E402
    CheckpointSettings,
    ModelSettings,
    RetrainSettings,
    ThresholdSettings,
)


def correlated(n: int, dim: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    loadings = rng.normal(size=(dim, 3))
    return (rng.normal(size=(n, 3)) @ loadings.T + 0.1 * rng.normal(size=(n, dim))).astype(
        np.float32)


def score_for(slot: ModelSlot, data: np.ndarray, batch: int, seconds: float,
              hook: Retrainer | None = None) -> float:
    """Vectors/s through the daemon's per-batch scoring steps for ``seconds``."""
    done, start, deadline = 0, 0, time.perf_counter() + seconds
    began = time.perf_counter()
    while time.perf_counter() < deadline:
        live = slot.live
        values = data[start : start + batch]
        start = (start + batch) % (len(data) - batch)
        scores = live.scorer.score(values).scores
        flags = live.threshold.classify(scores)
        live.threshold.update(scores)
        if hook is not None:
            hook.observe(live, values, scores, flags)
        done += len(values)
    return done / (time.perf_counter() - began)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--threads", type=int, default=int(os.environ.get(
        "STREAMAE_TORCH_THREADS", "1")))
    parser.add_argument("--dim", type=int, default=8)
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--train-windows", type=int, default=20_000)
    parser.add_argument("--executor", choices=("auto", "thread", "process"), default="auto")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    torch.set_num_threads(args.threads)
    data = correlated(max(args.train_windows, 4 * args.batch), args.dim)
    model = ModelSettings(epochs=10)
    threshold = ThresholdSettings()
    champion = train_detector(data[:2_000], model, args.device)
    slot = ModelSlot()
    slot.swap(LiveModel(Scorer(champion, args.device, args.batch),
                        calibrated_threshold(threshold, champion), 1))
    long_training = model.model_copy(update={"epochs": 100_000, "patience": 100_000})
    with tempfile.TemporaryDirectory() as tmp:
        retrainer = Retrainer(
            RetrainSettings(every_windows=10, min_windows=10, executor=args.executor,
                            buffer_max_windows=args.train_windows),
            long_training, threshold, CheckpointSettings(directory=Path(tmp)), args.device,
            slot, Metrics())
        retrainer.wait()  # a worker process is started and warmed before timing
        before = score_for(slot, data, args.batch, args.seconds)
        values = data[: args.train_windows]
        retrainer.observe(slot.live, values, np.zeros(len(values), np.float32),
                          np.zeros(len(values), bool))  # fills the buffer, starts a job
        time.sleep(0.5)
        assert retrainer.busy, "the retrain did not start"
        during = score_for(slot, data, args.batch, args.seconds, retrainer)
        training = retrainer.busy
        retrainer.close()
    after = score_for(slot, data, args.batch, args.seconds)
    ratio = during / ((before + after) / 2)
    executor = "process" if retrainer._process is not None else "thread"
    print(f"device={args.device} executor={executor} torch_threads={args.threads} "
          f"cores={os.cpu_count()} "
          f"dim={args.dim} batch={args.batch} seconds={args.seconds}")
    print(f"scoring alone (before): {before:,.0f} vectors/s")
    print(f"scoring during retrain: {during:,.0f} vectors/s (retrain still running: "
          f"{training})")
    print(f"scoring alone (after):  {after:,.0f} vectors/s")
    print(f"ratio during / alone:   {ratio:.2f} (target >= 0.80)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
