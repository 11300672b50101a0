#!/usr/bin/env python3
"""One-class images: the conv model with its defaults against a PCA baseline, every digit.

    .venv/bin/python benchmarks/quality/images.py [--components 32]

scikit-learn's digits (8x8, upscaled to 16x16 as the daemon's image decoder does with
STREAMAE_INPUT__IMAGE_HEIGHT/WIDTH=16). For each digit d: train on 70% of d's images (the
daemon's cold start: every model setting at its default), score the other 30% of d (normal)
and every image of the other digits (anomalous). Per digit: ROC AUC of the calibrated score
and of a PCA reconstruction error (``--components``, fitted on the same training images) in
the same run; at the default threshold (1e-4), recall and the false-alarm rate on the held-out
normal images; the largest region z in the anomalies' explanations. Goal (issue 11): AUC above
PCA on every split, recall well above 0 at the target rate, bounded region z.
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from pathlib import Path

import numpy as np
from PIL import Image
from sklearn.datasets import load_digits
from sklearn.decomposition import PCA
from sklearn.metrics import roc_auc_score

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from streamae.live import train_detector
from streamae.scoring import Scorer, limit_threads, worst_patches
from streamae.settings import Settings

SIZE = 16


def upscaled(images: np.ndarray) -> np.ndarray:
    """(N, 8, 8) in 0..16 -> (N, 1, 16, 16) floats in 0..255, bilinear like the decoder."""
    out = [np.asarray(Image.fromarray((im * 255 / 16).astype(np.uint8), mode="L")
                      .resize((SIZE, SIZE), Image.BILINEAR), dtype=np.float32)
           for im in images]
    return np.stack(out)[:, None]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--components", type=int, default=32)
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    digits = load_digits()
    images, labels = upscaled(digits.images), digits.target
    settings = Settings(model={"kind": "conv"})
    limit_threads(settings.torch_threads)  # the daemon's default
    threshold = -np.log10(settings.threshold.false_alarm_rate)
    rng = np.random.default_rng(0)
    print("| digit | conv AUC | PCA AUC | recall @1e-4 | FAR on normal | max region z |")
    print("|---|---|---|---|---|---|")
    started, wins = time.monotonic(), 0
    for digit in range(10):
        own = rng.permutation(np.flatnonzero(labels == digit))
        cut = int(0.7 * len(own))
        train, normal = images[own[:cut]], images[own[cut:]]
        others = images[labels != digit]
        detector = train_detector(train, settings.model, "cpu")
        scorer = Scorer(detector, "cpu", 4096)
        test = np.concatenate([normal, others])
        y = np.r_[np.zeros(len(normal)), np.ones(len(others))]
        result = scorer.score(test)
        pca = PCA(min(args.components, len(train) - 1)).fit(train.reshape(len(train), -1))
        flat = test.reshape(len(test), -1)
        pca_error = ((pca.inverse_transform(pca.transform(flat)) - flat) ** 2).mean(axis=1)
        auc, pca_auc = roc_auc_score(y, result.scores), roc_auc_score(y, pca_error)
        wins += auc > pca_auc
        flags = result.scores > threshold
        region_z = max((worst_patches(z, 4, 1)[0]["z"] for z in result.feature_z[flags]),
                       default=0.0)
        print(f"| {digit} | {auc:.3f} | {pca_auc:.3f} | {flags[y == 1].mean():.3f} | "
              f"{flags[y == 0].mean():.3f} | {region_z:.1f} |", flush=True)
    print(f"conv above PCA on {wins}/10 digits; {time.monotonic() - started:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
