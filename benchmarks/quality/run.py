#!/usr/bin/env python3
"""The quality suite: every labelled scenario and SKAB, with the daemon's defaults, one table.

    .venv/bin/python benchmarks/quality/run.py [--seeds 0,1,2] [--scenarios a,b] [--no-skab]

Each scenario (benchmarks/quality/generators.py) streams through the daemon's own parts in
process (``streamae.replay``; tests/integration/test_skab.py proves that path gives the
daemon's verdicts through Kafka): window input, the training part as warm-up, every other
setting at its default. Per scenario and seed: recall of anomalous events, false alarms per
1,000 normal readings, event-level F1. A window is anomalous when it holds an anomalous
reading (a spike stays in the window for its length: those windows are not false alarms).
SKAB runs its leaderboard protocol with the same defaults (``benchmarks/skab.py``).
Goals (issue 11): recall >= 0.95 and <= 1 false alarm per 1,000 normal readings on every
scenario; SKAB F1 > 0.78 with FAR < 13.55%.
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parents[1]))

from generators import SCENARIOS, Scenario  # noqa: E402

from streamae import skab  # noqa: E402
from streamae.replay import replay_rows  # noqa: E402

DEFAULTS = {"STREAMAE_INPUT__KIND": "window", "STREAMAE_DEVICE": "cpu",
            "STREAMAE_RETRAIN__ENABLED": "false", "STREAMAE_METRICS_PORT": "0"}


@dataclass(frozen=True)
class Quality:
    recall: float  # anomalous events with at least one flagged window
    false_per_1000: float  # flagged normal windows per 1,000 normal windows
    f1: float  # event-level: precision over alarm runs, recall over events
    events: int
    alarms: int


def _runs(mask: np.ndarray) -> list[tuple[int, int]]:
    """[start, end) of each run of True."""
    edges = np.diff(np.r_[0, mask.astype(np.int8), 0])
    return list(zip(np.flatnonzero(edges == 1), np.flatnonzero(edges == -1), strict=True))


def quality(labels: np.ndarray, flags: np.ndarray, first: int, length: int) -> Quality:
    """Event and reading figures over rows ``first`` onwards, windows of ``length``."""
    labels, flags = labels[first:], flags[first:]
    windowed = np.convolve(labels.astype(float), np.ones(length))[: len(labels)] > 0
    normal = ~windowed
    false_per_1000 = 1000.0 * float(np.sum(flags & normal)) / max(1, int(normal.sum()))
    events = _runs(labels)
    reach = [(s, e + length - 1) for s, e in events]
    found = sum(bool(flags[s:e].any()) for s, e in reach)
    alarms = _runs(flags)
    true_alarms = sum(any(a < e and s < b for s, e in reach) for a, b in alarms)
    recall = found / max(1, len(events))
    precision = true_alarms / len(alarms) if alarms else 1.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return Quality(recall, false_per_1000, f1, len(events), len(alarms))


def run_scenario(scenario: Scenario, env: dict[str, str]) -> Quality:
    settings = skab.settings_from_env({**DEFAULTS, **env})
    length = settings.window.length
    settings = settings.model_copy(update={"warmup_size": scenario.train_rows - length + 1})
    verdicts = replay_rows(scenario.name, scenario.ts_ms, scenario.values, settings,
                           scenario.names)
    return quality(scenario.labels, verdicts.flags, scenario.train_rows, length)


def run_skab(env: dict[str, str]) -> str:
    directory = skab.data_dir()
    if directory is None:
        return "SKAB: not found (set STREAMAE_SKAB_DIR)"
    settings = skab.settings_from_env({**DEFAULTS, **env})
    warm = skab.warmup_windows(settings.window.length, settings.window.stride)
    settings = settings.model_copy(update={"warmup_size": warm})
    results = [skab.replay(skab.load(directory, name), settings)
               for name in skab.labelled_files(directory)]
    c = skab.evaluate("defaults", results).confusion
    return f"| SKAB (34 files, leaderboard protocol) | F1 {c.f1:.3f} | FAR {c.far:.2f}% | " \
           f"MAR {c.mar:.2f}% |"


def table(rows: dict[str, list[Quality]]) -> str:
    lines = ["| scenario | recall (min over seeds) | false alarms / 1,000 (max) | event F1 "
             "(mean) | goal met |", "|---|---|---|---|---|"]
    for name, figures in rows.items():
        recall = min(q.recall for q in figures)
        false = max(q.false_per_1000 for q in figures)
        f1 = float(np.mean([q.f1 for q in figures]))
        met = "yes" if recall >= 0.95 and false <= 1.0 else "no"
        lines.append(f"| {name} | {recall:.3f} | {false:.2f} | {f1:.3f} | {met} |")
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", default="0,1,2", help="comma list of generator seeds")
    parser.add_argument("--scenarios", default=",".join(SCENARIOS), help="comma list")
    parser.add_argument("--no-skab", action="store_true", help="skip SKAB")
    parser.add_argument("--set", action="append", default=[],
                        help="NAME=VALUE setting applied to every run (for experiments)")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    env = dict(item.split("=", 1) for item in args.set)
    seeds = [int(s) for s in args.seeds.split(",")]
    started = time.monotonic()
    rows: dict[str, list[Quality]] = {}
    for key in filter(None, args.scenarios.split(",")):
        figures = [run_scenario(SCENARIOS[key](seed), env) for seed in seeds]
        rows[figures and SCENARIOS[key](seeds[0]).name] = figures
        for seed, q in zip(seeds, figures, strict=True):
            print(f"{key} seed={seed} recall={q.recall:.3f} false/1000={q.false_per_1000:.2f} "
                  f"f1={q.f1:.3f} events={q.events} alarms={q.alarms}", flush=True)
    print(table(rows))
    if not args.no_skab:
        print(run_skab(env))
    print(f"settings: defaults + {env or 'nothing'}; seeds {seeds}; "
          f"{time.monotonic() - started:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
