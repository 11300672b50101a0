"""The README's backtest picture: a synthetic labelled stream through ``streamae backtest``.

    .venv/bin/python benchmarks/backtest_example.py [--scenario level_shifts] [--out DIR]

Writes the scenario (benchmarks/quality/generators.py, seed 0) as a CSV with a time and a
label column, runs ``streamae backtest`` on it with window input and the training part as
warm-up, and copies the key's PNG to ``docs/backtest-example.png``. Synthetic data only:
no data set's licence applies to the picture.
"""

from __future__ import annotations

import argparse
import csv
import os
import shutil
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks" / "quality"))

from generators import SCENARIOS  # noqa: E402

from streamae import cli  # noqa: E402


def write_csv(path: Path, scenario: str) -> int:
    s = SCENARIOS[scenario](0)
    with open(path, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["ts", *s.names, "label"])
        for ts, row, label in zip(s.ts_ms, s.values, s.labels, strict=True):
            writer.writerow([int(ts), *[repr(float(v)) for v in row], int(label)])
    return s.train_rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scenario", default="level_shifts", choices=sorted(SCENARIOS))
    parser.add_argument("--out", type=Path, default=None, help="report folder (default: temp)")
    args = parser.parse_args()
    os.environ.update({"STREAMAE_INPUT__KIND": "window", "STREAMAE_DEVICE": "cpu",
                       "STREAMAE_LOG_LEVEL": "WARNING"})
    work = Path(tempfile.mkdtemp(prefix="streamae-example-"))
    out = args.out or work / "report"
    warmup = write_csv(work / "recording.csv", args.scenario)
    code = cli.main(["backtest", "--input", str(work / "recording.csv"), "--label-column",
                     "label", "--warmup", str(warmup), "--out", str(out)])
    png = next(out.glob("*.png"))
    shutil.copyfile(png, ROOT / "docs" / "backtest-example.png")
    print(f"{png} -> docs/backtest-example.png")
    return code


if __name__ == "__main__":
    raise SystemExit(main())
