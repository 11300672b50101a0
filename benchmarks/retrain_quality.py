"""Retraining on the demo scenarios: per-segment recall, FAR, threshold and version, frozen
vs retraining, and the issue-12 goals checked against them.

Each scenario (``streamae.demo.scenario``: base, poison, ramp, drift) streams through the
daemon's own parts in process (``streamae.replay.replay_rows``: the same ``Scorer``,
threshold, ``Retrainer`` and ``DriftMonitor`` as ``streamae run``), each retrain waited for
as a slow live stream would allow. Recall counts visibly anomalous readings (any label but
``normal`` and ``*-faint``), FAR the ``normal`` ones; the first ``warmup`` readings train
the first model and are not counted.

Goals (issue 12): base: recall in every segment >= frozen - 0.03 and FAR <= frozen + 0.1
pp; poison and ramp: >= 0.95 of the faulty readings flagged through >= 5 retrains; drift:
with ``--follow-drift`` FAR < 1% from 5k readings after the drift stops and a drift event,
without it a drift event and continued alarms; the same reading's score within a factor 2
across the versions of a run.

Usage: ``python benchmarks/retrain_quality.py [--scenarios base,poison,ramp,drift]
[--count 100000] [--every 5000] [--segment 10000] [--warmup 5000] [--clean-prefix 5000]
[--follow-drift] [--no-frozen]``. The defaults are what a new user gets from
``streamae demo --scenario NAME`` and ``streamae run``: a clean commissioning period of
5,000 readings and the daemon's 5,000-reading warm-up.
"""

from __future__ import annotations

import argparse
import logging
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from streamae.demo import (  # noqa: E402
    CLEAN_PREFIX,
    SCENARIOS,
    SENSORS,
    DemoStream,
    Scenario,
    scenario,
)
from streamae.reference import SCORE_FLOOR  # noqa: E402
from streamae.replay import RowVerdicts, replay_rows  # noqa: E402
from streamae.settings import Settings  # noqa: E402


@dataclass
class Stream:
    """A labelled demo stream, as the replay wants it."""

    spec: Scenario
    values: np.ndarray  # (N, 8)
    labels: np.ndarray  # (N,) str
    ts_ms: np.ndarray

    @property
    def anomalous(self) -> np.ndarray:
        return np.array([lab != "normal" and not lab.endswith("-faint") for lab in self.labels])

    @property
    def normal(self) -> np.ndarray:
        return self.labels == "normal"


def stream(name: str, count: int, seed: int = 0, pumps: int = 4,
           anomaly_rate: float = 0.002, clean_prefix: int = 0) -> Stream:
    spec = scenario(name, count)
    readings = DemoStream(pumps=pumps, anomaly_rate=anomaly_rate, seed=seed,
                          clean_prefix=clean_prefix, scenario=spec).take(count)
    values = np.array([[r.values[s] for s in SENSORS] for r in readings], dtype=np.float32)
    return Stream(spec, values, np.array([r.label for r in readings]),
                  np.array([r.ts_ms for r in readings]))


def settings_for(workdir: Path, every: int, follow: bool, enabled: bool,
                 warmup: int) -> Settings:
    return Settings(device="cpu", warmup_size=warmup, metrics_port=0,
                    retrain={"enabled": enabled, "every_windows": every, "executor": "thread",
                             "follow_drift": follow},
                    checkpoints={"directory": workdir, "keep": 2})


def run(data: Stream, every: int, follow: bool, retrain: bool, warmup: int) -> RowVerdicts:
    with tempfile.TemporaryDirectory() as tmp:
        settings = settings_for(Path(tmp), every, follow, retrain, warmup)
        return replay_rows("demo", data.ts_ms, data.values, settings, list(SENSORS),
                           retrain=retrain)


def segments(data: Stream, verdicts: RowVerdicts, size: int, warmup: int) -> list[dict]:
    """Per segment of ``size`` readings (from ``warmup`` on): recall, FAR, threshold, versions."""
    out = []
    anomalous, normal = data.anomalous, data.normal
    for start in range(warmup, len(data.values), size):
        part = slice(start, min(start + size, len(data.values)))
        hit, bad = anomalous[part], normal[part]
        flags = verdicts.flags[part]
        versions = verdicts.versions[part] if verdicts.versions is not None else [1]
        thresholds = verdicts.thresholds[part] if verdicts.thresholds is not None else [np.nan]
        out.append({"start": start, "end": part.stop,
                    "recall": float(flags[hit].mean()) if hit.any() else float("nan"),
                    "far": float(flags[bad].mean()) if bad.any() else float("nan"),
                    "anomalous": int(hit.sum()),
                    "threshold": float(np.nanmedian(thresholds)),
                    "versions": f"{int(np.min(versions))}-{int(np.max(versions))}"})
    return out


def score_spread(data: Stream, verdicts: RowVerdicts, probe: int = 2_000) -> dict:
    """Every version of a run scores the same probe readings (anomalous and normal, from
    before any scenario change): share within a factor 2 of each other, where every
    version scores them above SCORE_FLOOR."""
    models = verdicts.models
    if len(models) < 2:
        return {"versions": len(models), "within_2x": float("nan"), "probed": 0}
    before = np.arange(len(data.values)) < (data.spec.start or len(data.values))
    idx = np.flatnonzero(before)[:: max(1, int(before.sum()) // probe)][:probe]
    scores = np.stack([m.scorer.score(data.values[idx]).scores for m in models.values()])
    lo, hi = scores.min(axis=0), scores.max(axis=0)
    keep = lo >= SCORE_FLOOR
    ratio = hi[keep] / lo[keep]
    return {"versions": len(models), "probed": int(keep.sum()),
            "within_2x": float(np.mean(ratio <= 2.0)) if keep.any() else float("nan"),
            "median_ratio": float(np.median(ratio)) if keep.any() else float("nan")}


def faulty_share(data: Stream, verdicts: RowVerdicts) -> tuple[float, int]:
    """Share of the scenario's visible faulty readings flagged, and retrains meanwhile."""
    faulty = data.labels == data.spec.name
    if not faulty.any():
        return float("nan"), 0
    first = int(np.argmax(faulty))
    return float(verdicts.flags[faulty].mean()), sum(r >= first for r in verdicts.retrain_rows)


def drift_far(data: Stream, verdicts: RowVerdicts, after: int = 5_000) -> tuple[float, int]:
    """FAR on normal readings from ``after`` readings past the end of the drift."""
    stop = data.spec.start + data.spec.length + after
    normal = data.normal.copy()
    normal[:stop] = False
    return (float(verdicts.flags[normal].mean()) if normal.any() else float("nan"),
            int(normal.sum()))


def table(rows: list[dict], frozen: list[dict] | None) -> str:
    lines = ["| readings | anomalous | recall | FAR % | threshold | versions |"
             + (" frozen recall | frozen FAR % |" if frozen else ""),
             "|---|---|---|---|---|---|" + ("---|---|" if frozen else "")]
    for i, row in enumerate(rows):
        line = (f"| {row['start']:,}-{row['end']:,} | {row['anomalous']} | "
                f"{row['recall']:.3f} | {100 * row['far']:.3f} | {row['threshold']:.2f} | "
                f"{row['versions']} |")
        if frozen:
            line += f" {frozen[i]['recall']:.3f} | {100 * frozen[i]['far']:.3f} |"
        lines.append(line)
    return "\n".join(lines)


def report(name: str, data: Stream, retrained: RowVerdicts, frozen: RowVerdicts | None,
           args: argparse.Namespace) -> None:
    rows = segments(data, retrained, args.segment, args.warmup)
    base = segments(data, frozen, args.segment, args.warmup) if frozen else None
    outcomes = {o: retrained.retrains.count(o) for o in sorted(set(retrained.retrains))}
    reasons = {r: retrained.verdicts.count(r) for r in sorted(set(retrained.verdicts))}
    print(f"\n## {name} (follow_drift={args.follow_drift})  retrains={outcomes} "
          f"verdicts={reasons} drift_events={[e['readings_seen'] for e in retrained.drift]}")
    print(table(rows, base))
    if base:
        worst = min(r["recall"] - b["recall"] for r, b in zip(rows, base, strict=True))
        far = max(r["far"] - b["far"] for r, b in zip(rows, base, strict=True))
        print(f"worst recall - frozen: {worst:+.3f} (goal >= -0.03); "
              f"worst FAR - frozen: {100 * far:+.3f} pp (goal <= +0.1 pp)")
    if data.spec.faulty:
        share, retrains = faulty_share(data, retrained)
        print(f"faulty readings flagged: {share:.3f} (goal >= 0.95) through ~{retrains} "
              f"retrains (goal >= 5)")
    if data.spec.name == "drift":
        far, n = drift_far(data, retrained)
        print(f"FAR from 5k readings after the drift stops: {100 * far:.2f}% on {n} normal "
              f"readings; drift events: {len(retrained.drift)}")
    print(f"score spread across versions: {score_spread(data, retrained)}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scenarios", default=",".join(SCENARIOS))
    parser.add_argument("--count", type=int, default=100_000)
    parser.add_argument("--every", type=int, default=5_000, help="windows between retrains")
    parser.add_argument("--segment", type=int, default=10_000)
    parser.add_argument("--warmup", type=int, default=Settings().warmup_size,
                        help="readings that train the first model (the daemon's default)")
    parser.add_argument("--clean-prefix", type=int, default=CLEAN_PREFIX,
                        help="readings without episodes at the start (streamae demo's default; "
                             "0: episodes from the first reading)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--follow-drift", action="store_true")
    parser.add_argument("--no-frozen", action="store_true", help="skip the frozen runs")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    for name in args.scenarios.split(","):
        data = stream(name, args.count, args.seed, clean_prefix=args.clean_prefix)
        began = time.monotonic()
        frozen = None if args.no_frozen else run(data, args.every, False, False, args.warmup)
        retrained = run(data, args.every, args.follow_drift, True, args.warmup)
        report(name, data, retrained, frozen, args)
        print(f"seconds: {time.monotonic() - began:.0f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
