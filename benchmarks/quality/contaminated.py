#!/usr/bin/env python3
"""A warm-up that holds anomalies: what they do to detection, and what trimming buys.

    .venv/bin/python benchmarks/quality/contaminated.py [--count 30000] [--rates 0.002,0.0005]

The demo stream (``streamae.demo``: 4 pumps, episodes of spikes, drifts, stuck sensors and
broken correlations) replayed in process through the daemon's own parts (``streamae.replay``,
vector input, default settings, no retraining), the model cold-started on the first 5,000
readings. Per arm: readings in anomalous episodes inside the warm-up, training samples
dropped by ``STREAMAE_MODEL__TRIM_OUTLIERS``, false alarms per 1,000 normal readings after
the warm-up, episodes flagged at least once per kind, recall of visible anomalous readings.
Arms: a clean warm-up (``clean_prefix``), episodes from the first reading at each
``--rates`` (episodes per reading; the demo's 0.002 puts ~8% of readings in episodes),
each with trimming off (the default) and on.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from collections import defaultdict
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from streamae.demo import KINDS, DemoStream
from streamae.replay import Record, replay
from streamae.settings import Settings

WARMUP = 5_000


def episodes(keys: np.ndarray, labels: np.ndarray) -> list[np.ndarray]:
    """Runs of non-normal readings of one key (sample indices)."""
    runs = []
    for key in np.unique(keys):
        idx = np.flatnonzero(keys == key)
        abnormal = labels[idx] != "normal"
        edges = np.flatnonzero(np.diff(np.concatenate([[0], abnormal.astype(int), [0]])))
        runs += [idx[a:b] for a, b in zip(edges[::2], edges[1::2], strict=True)]
    return runs


def arm(count: int, rate: float, clean: bool, trim: bool) -> dict:
    readings = DemoStream(pumps=4, anomaly_rate=rate, seed=0,
                          clean_prefix=WARMUP if clean else 0).take(count)
    records = [Record(json.dumps(r.as_message()).encode(), i, r.key.encode(), r.ts_ms)
               for i, r in enumerate(readings)]
    settings = Settings(device="cpu", metrics_port=0, warmup_size=WARMUP,
                        model={"trim_outliers": trim}, retrain={"enabled": False})
    out = replay(records, settings)
    labels = np.array([readings[i].label for i in out.rows])
    keys = np.array([readings[i].key for i in out.rows])
    after = np.arange(len(labels)) >= out.warm
    visible = np.array([lab != "normal" and not lab.endswith("faint") for lab in labels])
    flagged: dict[str, list[int]] = defaultdict(lambda: [0, 0])
    for run in episodes(keys, labels):
        kinds = [lab for lab in labels[run] if lab in KINDS]
        if run[0] >= out.warm and kinds:
            flagged[kinds[0]][0] += int(out.flags[run].any())
            flagged[kinds[0]][1] += 1
    normal = (labels == "normal") & after
    return {"in_warmup": int((labels[: out.warm] != "normal").sum()),
            "false_per_1000": 1000 * float(out.flags[normal].mean()),
            "recall": float(out.flags[visible & after].mean()),
            "episodes": {k: f"{flagged[k][0]}/{flagged[k][1]}" for k in KINDS}}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=30_000, help="demo readings per arm")
    parser.add_argument("--rates", default="0.002,0.0005", help="episodes per reading")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    started = time.monotonic()
    print("| warm-up | trim | readings in episodes in warm-up | false alarms / 1,000 | "
          "episodes flagged (" + ", ".join(KINDS) + ") | recall of visible readings |")
    print("|---|---|---|---|---|---|")
    arms = [("clean", 0.002, True)] + [(f"episodes at {r}", float(r), False)
                                       for r in args.rates.split(",")]
    for name, rate, clean in arms:
        for trim in (False, True):
            f = arm(args.count, rate, clean, trim)
            print(f"| {name} | {'on' if trim else 'off'} | {f['in_warmup']} | "
                  f"{f['false_per_1000']:.2f} | {' '.join(f['episodes'].values())} | "
                  f"{f['recall']:.3f} |", flush=True)
    print(f"{args.count} readings per arm, seed 0; {time.monotonic() - started:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
