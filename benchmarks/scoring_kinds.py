"""Scoring throughput by input kind and batch size, in process: how much an image or a
window costs next to a plain vector.

    .venv/bin/python benchmarks/scoring_kinds.py [--threads 1] [--device cpu]
        [--batches 1,16,64,256,1024] [--seconds 0.5]

Each model is built with the default settings a user gets for its kind (weights from one
epoch on random data: throughput does not depend on them) and timed through
``Scorer.score``, the call the daemon makes per batch (scaling, forward pass, error
normalisation, copies back to numpy). The dense model on 8-feature vectors is the
baseline; every other figure is also printed as a ratio to it at the same batch size.
Decoding is timed apart (PNG images, window building), because it is per message and on
the CPU whatever the device. ``--engines`` compares the two engines of the forward pass on
the CPU per kind: numpy (``ArrayNet``, what a CPU scorer runs) against torch (what images
and GPUs run); the scorer's choice (``scoring.runs_in_torch``) rests on it.
"""

from __future__ import annotations

import argparse
import io
import time
from collections.abc import Callable

import numpy as np
import torch
from PIL import Image

from streamae.images import ImageDecoder
from streamae.live import train_detector
from streamae.models import build_model
from streamae.models.arrays import from_torch
from streamae.scoring import Scorer, limit_threads
from streamae.settings import ModelSettings, Settings
from streamae.windows import WindowBuilder

# name, model kind, input shape (per sample)
CASES = (
    ("vector dense 8", "dense", (8,)),
    ("window dense 32x1", "dense", (32, 1)),
    ("window conv1d 32x1", "conv1d", (32, 1)),
    ("window dense 32x8", "dense", (32, 8)),
    ("window conv1d 32x8", "conv1d", (32, 8)),
    ("image conv 1x28x28", "conv", (1, 28, 28)),
    ("image conv 3x32x32", "conv", (3, 32, 32)),
)
BASELINE = CASES[0][0]


def rate(work: Callable[[], None], items: int, seconds: float) -> float:
    """Items per second of ``work`` (which handles ``items``), over at least ``seconds``."""
    work()  # warm-up: allocator, lazy init
    runs, started = 0, time.perf_counter()
    while True:
        work()
        runs += 1
        elapsed = time.perf_counter() - started
        if elapsed >= seconds and runs >= 3:
            return runs * items / elapsed


def scorer_for(kind: str, shape: tuple[int, ...], device: str) -> Scorer:
    rng = np.random.default_rng(0)
    data = rng.random((64, *shape), dtype=np.float32)
    model = ModelSettings(kind=kind, epochs=1)  # defaults otherwise
    return Scorer(train_detector(data, model, "cpu"), device=device, max_batch=4096)


def scoring_table(batches: list[int], device: str, seconds: float) -> dict[str, list[float]]:
    rng = np.random.default_rng(1)
    table: dict[str, list[float]] = {}
    for name, kind, shape in CASES:
        scorer = scorer_for(kind, shape, device)
        table[name] = []
        for size in batches:
            batch = rng.random((size, *shape), dtype=np.float32)
            table[name].append(rate(lambda b=batch, s=scorer: s.score(b), size, seconds))
    return table


def engine_rates(seconds: float, batch: int = 1024) -> dict[str, tuple[float, float]]:
    """Per kind: samples/s of the forward pass alone, numpy and torch, on the CPU."""
    rng = np.random.default_rng(3)
    rates = {}
    for name, kind, shape in CASES:
        model = build_model(kind, shape).eval()
        network = from_torch(model)
        x = rng.standard_normal((batch, *shape), dtype=np.float32)
        tensor = torch.from_numpy(x)

        def by_torch(m=model, t=tensor) -> None:
            with torch.inference_mode():
                m.analyse(t)

        rates[name] = (rate(lambda n=network, a=x: n.analyse(a), batch, seconds),
                       rate(by_torch, batch, seconds))
    return rates


def decoding_rates(seconds: float) -> dict[str, float]:
    """Per-message costs before scoring: PNG decode (+resize) and window building."""
    rng = np.random.default_rng(2)
    buffer = io.BytesIO()
    Image.fromarray(rng.integers(0, 255, (28, 28), dtype=np.uint8)).save(buffer, "PNG")
    png, headers = buffer.getvalue(), [("content-type", b"image/png")]
    same, upscale = ImageDecoder(28, 28, 1), ImageDecoder(56, 56, 1)
    builder = WindowBuilder(32, 1, max_keys=1000)
    readings = rng.random((1000, 8), dtype=np.float32)
    keys = [f"k{i % 100}" for i in range(1000)]

    def build() -> None:
        for key, row in zip(keys, readings, strict=True):
            builder.push(key, None, row)

    return {
        "decode PNG 28x28": rate(lambda: same.decode(png, headers), 1, seconds),
        "decode PNG 28x28 -> 56x56": rate(lambda: upscale.decode(png, headers), 1, seconds),
        "build windows 32x8 (100 keys)": rate(build, len(readings), seconds),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--threads", type=int, default=Settings().torch_threads)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--batches", default="1,16,64,256,1024")
    parser.add_argument("--seconds", type=float, default=0.5)
    parser.add_argument("--engines", action="store_true",
                        help="only the forward pass per kind: numpy against torch")
    args = parser.parse_args()
    limit_threads(args.threads)
    if args.engines:
        print("forward pass, samples/s at batch 1,024 on the CPU: numpy | torch | numpy/torch")
        for name, (arrays, reference) in engine_rates(args.seconds).items():
            print(f"| {name} | {arrays:,.0f} | {reference:,.0f} | {arrays / reference:.2f} |")
        return
    batches = [int(b) for b in args.batches.split(",")]
    print(f"device={args.device} torch_threads={args.threads} torch={torch.__version__}")
    table = scoring_table(batches, args.device, args.seconds)
    base = table[BASELINE]
    print("\nitems/s scored (Scorer.score), ratio to the dense-vector baseline in brackets")
    print("| model | " + " | ".join(f"batch {b}" for b in batches) + " |")
    print("|---|" + "---|" * len(batches))
    for name, rates in table.items():
        cells = [f"{r:,.0f}" + ("" if name == BASELINE else f" ({r / b:.3f})")
                 for r, b in zip(rates, base, strict=True)]
        print(f"| {name} | " + " | ".join(cells) + " |")
    print("\nper-message work before scoring (CPU)")
    for name, value in decoding_rates(args.seconds).items():
        print(f"| {name} | {value:,.0f}/s |")


if __name__ == "__main__":
    main()
