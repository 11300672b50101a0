"""SKAB through windows with a frozen model: dense on the flattened window against conv1d.

    .venv/bin/python benchmarks/skab_windows.py [--kinds dense,conv1d] [--lengths 8,32]
        [--files valve1/0.csv,..] [--epochs 30] [--dir PATH]
        [--set STREAMAE_THRESHOLD__METHOD=static,STREAMAE_THRESHOLD__VALUE=10]

The leaderboard's split: per labelled file, the windows of the first 400 rows train a
fresh model (the cold start), its threshold comes from ``live.calibrated_threshold`` on
the validation windows, and every window is then scored in order by the daemon's own
parts (``WindowBuilder``, ``Scorer``, the threshold rule of ``pipeline.Daemon._score``;
see ``skab_data.replay``); no retraining. A row gets the verdict of the window it
completes. Rows 400 onwards are pooled over the 34 files: F1, FAR and MAR as SKAB defines
them and the ROC AUC of the continuous score, beside the always/never-alarm baselines and
the published table. ``benchmarks/skab.py`` streams the same through the real broker.

Data (GPL-3.0, never copied into the project): ``$STREAMAE_SKAB_DIR`` or
``../shared/datasets/skab``.
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))  # skab_data

import skab_data as skab  # noqa: E402

log = logging.getLogger("skab_windows")

BASE_ENV = {
    "STREAMAE_INPUT__KIND": "window",
    "STREAMAE_WINDOW__STRIDE": "1",
    "STREAMAE_THRESHOLD__METHOD": "quantile",
    # The first 400 rows make 369-393 windows, a fifth of them validation: fewer than the
    # default 100, which would leave the calibrated threshold cold.
    "STREAMAE_THRESHOLD__MIN_SAMPLES": "50",
    "STREAMAE_DEVICE": "cpu",
    "STREAMAE_BATCH__MAX_SIZE": "256",
    "STREAMAE_RETRAIN__ENABLED": "false",
}
# Default sizes for each kind; conv1d trains on clean input (no corruption), so both
# are plain autoencoders and differ only in their architecture.
KIND_ENV = {
    "dense": {"STREAMAE_MODEL__HIDDEN_SIZES": "64,32", "STREAMAE_MODEL__LATENT_SIZE": "8"},
    "conv1d": {"STREAMAE_MODEL__HIDDEN_SIZES": "32,16", "STREAMAE_MODEL__LATENT_SIZE": "8",
               "STREAMAE_MODEL__NOISE_STD": "0", "STREAMAE_MODEL__MASK_PROBABILITY": "0"},
}


def config_env(kind: str, length: int, epochs: int,
               extra: dict[str, str]) -> dict[str, str]:
    return {**BASE_ENV, **KIND_ENV[kind], "STREAMAE_MODEL__KIND": kind,
            "STREAMAE_MODEL__EPOCHS": str(epochs), "STREAMAE_WINDOW__LENGTH": str(length),
            "STREAMAE_WARMUP_SIZE": str(skab.warmup_windows(length)), **extra}


def run(kind: str, length: int, epochs: int, files: list[skab.SkabFile],
        extra: dict[str, str]) -> skab.Figure:
    settings = skab.settings_from_env(config_env(kind, length, epochs, extra))
    started = time.monotonic()
    results = [skab.replay(f, settings, retrain=False) for f in files]
    figure = skab.evaluate(f"{kind} windows L={length} (frozen)", results)
    log.info("event=skab_config kind=%s length=%d files=%d seconds=%.1f f1=%.3f auc=%.3f",
             kind, length, len(files), time.monotonic() - started, figure.confusion.f1,
             figure.auc)
    return figure


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--kinds", default="dense,conv1d")
    parser.add_argument("--lengths", default="8,32")
    parser.add_argument("--files", default=None, help="comma-separated, e.g. valve1/0.csv")
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--dir", type=Path, default=None)
    parser.add_argument("--set", default="", help="extra NAME=VALUE settings, comma-separated")
    args = parser.parse_args()
    extra = dict(item.split("=", 1) for item in args.set.split(",") if item)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    for noisy in ("streamae", "kafka"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    from streamae.scoring import limit_threads

    limit_threads(1)
    directory = args.dir or skab.data_dir(ROOT)
    if directory is None:
        print("SKAB data not found: set STREAMAE_SKAB_DIR", file=sys.stderr)
        return 2
    names = args.files.split(",") if args.files else skab.labelled_files(directory)
    files = [skab.load(directory, name) for name in names]
    figures = [run(kind, int(length), args.epochs, files, extra)
               for length in args.lengths.split(",") for kind in args.kinds.split(",")]
    threshold = skab.settings_from_env({**BASE_ENV, **extra}).threshold
    print(f"\nSKAB, {len(files)} files, rows {skab.FIT_ROWS}+ pooled, epochs={args.epochs}, "
          f"threshold: method={threshold.method} quantile={threshold.quantile} "
          f"value={threshold.value} min_samples={threshold.min_samples}")
    print(skab.table([*figures, *skab.baselines(files)]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
