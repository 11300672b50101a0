#!/usr/bin/env python3
"""Images on CPU: scoring rate, training time and one-class AUROC per conv architecture.

    flock /tmp/streamae-bench.lock .venv/bin/python benchmarks/images_speed.py \
        [--arms stride-16-32,pool-16-32] [--batches 64,256,1024] [--digits 0-9] \
        [--daemon 20000]

Images: scikit-learn's digits (8x8) upscaled to 28x28 (bilinear, as the daemon's decoder
resizes), pixels in [0, 1]. torch runs ``Settings().torch_threads`` threads, as the daemon
does; times are CPU seconds of this process (steadier than wall time on a shared machine).

An arm is ``<downsample>-<channels>[@<train batch>][-contiguous]``, e.g. ``stride-16-32``
(strided convs, 16 then 32 channels), ``pool-16-32-contiguous`` (the model before issue 14:
conv + max-pool, weights not channels-last), ``stride-8-16@128``. Every other model setting
is the default a user gets. Per arm:

* scored: images per CPU second through ``Scorer.score`` (the daemon's call per batch:
  scaling, forward pass, error statistics, copies back), per chunk size (``max_batch``:
  the images one forward pass takes; ``scoring.CPU_CONV_CHUNK`` is chosen from these);
* training: ``train_detector`` on 6,000 images (all digits, each shifted by up to 2 px):
  CPU seconds and the epochs run before early stopping;
* AUROC: per digit, train on 70% of its images, score the other 30% (normal) against every
  other digit (anomalous) with the calibrated score; mean and worst over the digits, and on
  how many digits the conv model beats a PCA reconstruction error (32 components, fitted on
  the same images) computed in the same run.

``--daemon N`` (needs STREAMAE_BENCH_BOOTSTRAP, a broker) also runs the whole daemon on N
28x28 images per arm, as raw uint8 (header ``shape: 28,28``) and as PNG bytes, with the
arm's 6,000-image model loaded from a checkpoint, everything else at its defaults:
images/s (wall) and CPU microseconds per image of the process.
"""

from __future__ import annotations

import argparse
import io
import logging
import os
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from sklearn.datasets import load_digits
from sklearn.decomposition import PCA
from sklearn.metrics import roc_auc_score

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from kafka import KafkaProducer
from kafka.admin import KafkaAdminClient, NewTopic

from streamae.checkpoints import save_checkpoint
from streamae.kafka_io import build_consumer, build_producer
from streamae.live import ModelSlot, calibrated_threshold, load_live, train_detector
from streamae.models import conv
from streamae.pipeline import Daemon
from streamae.scoring import Scorer, limit_threads
from streamae.settings import ModelSettings, Settings

SIZE = 28
TRAIN_IMAGES = 6_000
PCA_COMPONENTS = 32


@dataclass(frozen=True)
class Arm:
    name: str
    model: ModelSettings
    channels_last: bool


def parse_arm(name: str) -> Arm:
    """``stride-16-32@128-contiguous`` -> model settings and the channels-last switch."""
    spec, contiguous = name.removesuffix("-contiguous"), name.endswith("-contiguous")
    spec, _, batch = spec.partition("@")
    downsample, *channels = spec.split("-")
    model = ModelSettings(kind="conv", downsample=downsample,
                          hidden_sizes=[int(c) for c in channels],
                          **({"batch_size": int(batch)} if batch else {}))
    return Arm(name, model, not contiguous)


def upscaled(images: np.ndarray) -> np.ndarray:
    """(N, 8, 8) in 0..16 -> (N, 1, 28, 28) in [0, 1], bilinear like the decoder."""
    out = [np.asarray(Image.fromarray((im * 255 / 16).astype(np.uint8), mode="L")
                      .resize((SIZE, SIZE), Image.Resampling.BILINEAR), dtype=np.float32)
           for im in images]
    return np.stack(out)[:, None] / 255.0


def shifted(images: np.ndarray, n: int, rng: np.random.Generator) -> np.ndarray:
    """n images drawn from ``images``, each rolled by up to 2 px each way."""
    picks = images[rng.integers(0, len(images), n)]
    return np.stack([np.roll(im, tuple(rng.integers(-2, 3, 2)), axis=(1, 2)) for im in picks])


def cpu_seconds(work) -> tuple[float, object]:
    started = time.process_time()
    result = work()
    return time.process_time() - started, result


def scoring_rates(scorer: Scorer, images: np.ndarray, batches: list[int]) -> list[float]:
    """Images per CPU second of ``Scorer.score`` at each chunk size (>= 4,096 images)."""
    rates = []
    for size in batches:
        scorer.max_batch = size
        batch = images[:size]
        scorer.score(batch)  # warm-up
        repeats = max(3, 4096 // size)
        seconds, _ = cpu_seconds(lambda b=batch, r=repeats: [scorer.score(b) for _ in range(r)])
        rates.append(repeats * size / seconds)
    return rates


def digit_aucs(model: ModelSettings, images: np.ndarray, labels: np.ndarray,
               digits: list[int]) -> tuple[list[float], list[float], float]:
    """Per digit: conv AUROC, PCA AUROC; and the CPU seconds of the conv training."""
    rng = np.random.default_rng(0)
    aucs, pca_aucs, train_seconds = [], [], 0.0
    for digit in digits:
        own = rng.permutation(np.flatnonzero(labels == digit))
        cut = int(0.7 * len(own))
        train, normal, others = images[own[:cut]], images[own[cut:]], images[labels != digit]
        test = np.concatenate([normal, others])
        y = np.r_[np.zeros(len(normal)), np.ones(len(others))]
        seconds, detector = cpu_seconds(lambda t=train: train_detector(t, model, "cpu"))
        train_seconds += seconds
        aucs.append(roc_auc_score(y, Scorer(detector, "cpu", 1024).score(test).scores))
        flat_train, flat = train.reshape(len(train), -1), test.reshape(len(test), -1)
        pca = PCA(min(PCA_COMPONENTS, len(train) - 1)).fit(flat_train)
        error = ((pca.inverse_transform(pca.transform(flat)) - flat) ** 2).mean(axis=1)
        pca_aucs.append(roc_auc_score(y, error))
    return aucs, pca_aucs, train_seconds


def encoded(pixels: np.ndarray, png: bool) -> tuple[bytes, list[tuple[str, bytes]]]:
    """One (28, 28) uint8 image as a message value and headers."""
    if png:
        buffer = io.BytesIO()
        Image.fromarray(pixels, mode="L").save(buffer, format="PNG")
        return buffer.getvalue(), [("content-type", b"image/png")]
    return pixels.tobytes(), [("content-type", b"application/x-raw-uint8"),
                              ("shape", b"28,28")]


def fill_topic(bootstrap: str, images: np.ndarray, png: bool) -> str:
    topic = f"images-speed-{uuid.uuid4().hex[:8]}"
    admin = KafkaAdminClient(bootstrap_servers=bootstrap)
    admin.create_topics([NewTopic(topic, 1, 1)])
    admin.close()
    producer = KafkaProducer(bootstrap_servers=bootstrap, acks=1, linger_ms=20,
                             batch_size=512 * 1024)
    for n, image in enumerate(images):
        value, headers = encoded(np.ascontiguousarray(image), png)
        producer.send(topic, key=f"cam-{n % 8}".encode(), value=value, headers=headers)
    producer.flush()
    producer.close()
    return topic


def daemon_rate(detector, model: ModelSettings, images: np.ndarray, png: bool,
                bootstrap: str) -> tuple[float, float]:
    """Images/s (from the first scored batch) and CPU us per image of the whole daemon."""
    pixels = np.clip(images[:, 0] * 255, 0, 255).astype(np.uint8)
    topic = fill_topic(bootstrap, pixels, png)
    work = Path(tempfile.mkdtemp(prefix="images-speed-"))
    os.environ.update({
        "STREAMAE_KAFKA__BOOTSTRAP_SERVERS": bootstrap, "STREAMAE_KAFKA__INPUT_TOPICS": topic,
        "STREAMAE_KAFKA__OUTPUT_TOPIC": f"{topic}-anomalies",
        "STREAMAE_KAFKA__DEAD_LETTER_TOPIC": f"{topic}-dead",
        "STREAMAE_KAFKA__GROUP_ID": uuid.uuid4().hex, "STREAMAE_DEVICE": "cpu",
        "STREAMAE_CHECKPOINTS__DIRECTORY": str(work), "STREAMAE_METRICS_PORT": "0",
        "STREAMAE_INPUT__KIND": "image", "STREAMAE_MODEL__KIND": "conv"})
    settings = Settings(model=model)
    threshold = calibrated_threshold(settings.threshold, detector)
    save_checkpoint(work, detector, threshold_state=threshold.state(), metadata={})
    slot = ModelSlot()
    slot.swap(load_live(work, "cpu", settings.batch.max_size))
    daemon = Daemon(settings, build_consumer(settings.kafka, settings.batch.max_size),
                    build_producer(settings.kafka), slot=slot)
    first: list[float] = []
    daemon.scored_hooks.append(
        lambda *_: first or first.extend([time.perf_counter(), time.process_time()]))
    daemon.run(max_messages=len(images), timeout_s=600)
    wall, cpu = time.perf_counter() - first[0], time.process_time() - first[1]
    if daemon.stats.scored != len(images):
        raise SystemExit(f"daemon scored {daemon.stats.scored} of {len(images)} images")
    return len(images) / wall, cpu / len(images) * 1e6


def run_arm(arm: Arm, images: np.ndarray, labels: np.ndarray, batches: list[int],
            digits: list[int], daemon_images: int) -> str:
    conv.CHANNELS_LAST = arm.channels_last
    big = shifted(images, TRAIN_IMAGES, np.random.default_rng(1))
    seconds, detector = cpu_seconds(lambda: train_detector(big, arm.model, "cpu"))
    bootstrap = os.environ.get("STREAMAE_BENCH_BOOTSTRAP")
    through_daemon = ""
    if daemon_images and bootstrap:
        stream = shifted(images, daemon_images, np.random.default_rng(2))
        figures = [daemon_rate(detector, arm.model, stream, png, bootstrap)
                   for png in (False, True)]
        through_daemon = "".join(f" {rate:,.0f}/s, {us:,.0f} us |" for rate, us in figures)
    rates = scoring_rates(Scorer(detector, "cpu"), big, batches)
    quality = " - | - | - | - |"
    if digits:
        aucs, pcas, auc_seconds = digit_aucs(arm.model, images, labels, digits)
        wins = sum(a > p for a, p in zip(aucs, pcas, strict=True))
        quality = (f" {np.mean(aucs):.4f} / {min(aucs):.4f} | {np.mean(pcas):.4f} / "
                   f"{min(pcas):.4f} | {wins}/{len(digits)} | {auc_seconds / len(digits):.1f} |")
    cells = [f"{r:,.0f}" for r in rates]
    return (f"| {arm.name} | " + " | ".join(cells) + f" | {seconds:.0f} ({detector.epochs_run}) "
            "|" + quality + through_daemon)


def digit_list(text: str) -> list[int]:
    if text == "none":
        return []
    if "-" in text:
        low, high = (int(p) for p in text.split("-"))
        return list(range(low, high + 1))
    return [int(d) for d in text.split(",")]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--arms", default="pool-16-32-contiguous,stride-16-32")
    parser.add_argument("--batches", default="64,256,1024")
    parser.add_argument("--digits", default="0-9", help="0-9, 1,3,5 or none (no AUROC)")
    parser.add_argument("--daemon", type=int, default=0,
                        help="images through the whole daemon per arm (needs a broker)")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    logging.getLogger("kafka").setLevel(logging.ERROR)  # idempotence and metadata notices
    threads = Settings().torch_threads
    limit_threads(threads)
    batches, digits = [int(b) for b in args.batches.split(",")], digit_list(args.digits)
    raw = load_digits()
    images, labels = upscaled(raw.images), raw.target
    print(f"torch_threads={threads} torch={torch.__version__} images {SIZE}x{SIZE}, "
          f"digits {args.digits}")
    print("| arm | " + " | ".join(f"scored/CPU s, chunk {b}" for b in batches)
          + f" | train {TRAIN_IMAGES:,}: CPU s (epochs) | AUROC mean / worst | PCA mean / worst "
          "| above PCA | CPU s per digit |"
          + (" daemon raw uint8 | daemon PNG |" if args.daemon else ""))
    print("|---|" + "---|" * (len(batches) + 5 + (2 if args.daemon else 0)))
    for name in args.arms.split(","):
        print(run_arm(parse_arm(name), images, labels, batches, digits, args.daemon),
              flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
