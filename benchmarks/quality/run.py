#!/usr/bin/env python3
"""The quality suite: every labelled scenario and SKAB, with the daemon's defaults, one table.

    .venv/bin/python benchmarks/quality/run.py [--seeds 0,1,2] [--scenarios a,b] [--no-skab]

Each scenario (benchmarks/quality/generators.py) streams through the daemon's own parts in
process (``streamae.replay``; tests/integration/test_skab.py proves that path gives the
daemon's verdicts through Kafka): window input, the training part as warm-up, every other
setting at its default. Per scenario and seed: recall of anomalous events, false alarms per
1,000 normal readings, event-level F1 (``streamae.backtest.evaluation``, the figures
``streamae backtest`` reports). A window is anomalous when it holds an anomalous
reading (a spike stays in the window for its length: those windows are not false alarms).
SKAB runs its leaderboard protocol with the same defaults (``benchmarks/skab.py``).
``--set STREAMAE_RETRAIN__ENABLED=true`` runs the retrainer as well (retraining against
frozen: the default retrains every 5,000 windows, about once per test part).
Goals (issue 11): recall >= 0.95 and <= 1 false alarm per 1,000 normal readings on every
scenario; SKAB F1 > 0.78 with FAR < 13.55%.
"""

from __future__ import annotations

import argparse
import logging
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parents[1]))
sys.path.insert(0, str(HERE.parent))  # skab_data

import skab_data as skab  # noqa: E402
from generators import SCENARIOS, Scenario  # noqa: E402

from streamae.backtest.evaluation import Quality, pooled, quality  # noqa: E402
from streamae.replay import per_row, replay, replay_rows, row_records  # noqa: E402
from streamae.settings import Settings  # noqa: E402
from streamae.windows import windows_in  # noqa: E402

DEFAULTS = {"STREAMAE_INPUT__KIND": "window", "STREAMAE_DEVICE": "cpu",
            "STREAMAE_RETRAIN__ENABLED": "false", "STREAMAE_METRICS_PORT": "0"}


def run_scenario(scenario: Scenario, env: dict[str, str]) -> Quality:
    """With ``STREAMAE_RETRAIN__ENABLED=true`` the retrainer runs too (its versions go to a
    scratch folder): retraining against frozen on the same stream."""
    settings = skab.settings_from_env({**DEFAULTS, **env})
    length, window = settings.window.length, settings.window
    warm = windows_in(scenario.train_rows, length, window.stride, window.profile_readings)
    with tempfile.TemporaryDirectory(prefix="quality-") as scratch:
        settings = settings.model_copy(update={
            "warmup_size": warm,
            "checkpoints": settings.checkpoints.model_copy(update={"directory": Path(scratch)})})
        retrain = settings.retrain.enabled
        if scenario.keys is not None:
            return keyed_quality(scenario, settings, retrain)
        verdicts = replay_rows(scenario.name, scenario.ts_ms, scenario.values, settings,
                               scenario.names, retrain=retrain)
    return quality(scenario.labels, verdicts.flags, scenario.train_rows, length)


def keyed_quality(scenario: Scenario, settings: Settings, retrain: bool) -> Quality:
    """Interleaved keys: one replay, then each key's rows judged as its own series."""
    keys = np.array(scenario.keys)
    records = row_records(list(scenario.keys), [int(t) for t in scenario.ts_ms],
                          scenario.values, scenario.names)
    result = replay(records, settings, warmup_rows=scenario.train_rows, retrain=retrain)
    _, flags = per_row(len(keys), result.rows, result.scores, result.flags)
    series = [(scenario.labels[rows], flags[rows])
              for rows in (np.flatnonzero((keys == key) & (np.arange(len(keys)) >=
                                                           scenario.train_rows))
                           for key in dict.fromkeys(scenario.keys))]
    return pooled(series, settings.window.length)


def run_skab(env: dict[str, str]) -> str:
    directory = skab.data_dir()
    if directory is None:
        return "SKAB: not found (set STREAMAE_SKAB_DIR)"
    settings = skab.settings_from_env({**DEFAULTS, **env})
    window = settings.window
    warm = skab.warmup_windows(window.length, window.stride,
                               profile_readings=window.profile_readings)
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


def print_variants(variants: dict[str, Callable[[int], Scenario]],
                   env: dict[str, str], seeds: Sequence[int] = (0, 1, 2)) -> None:
    """A table of scenarios beyond the suite: recall (min), false alarms (max), per seed."""
    print("| variant | recall (min) | false alarms / 1,000 (max) | per seed (recall/false) |")
    print("|---|---|---|---|")
    for name, make in variants.items():
        figures = [run_scenario(make(seed), env) for seed in seeds]
        per_seed = " ".join(f"{f.recall:.2f}/{f.false_per_1000:.2f}" for f in figures)
        print(f"| {name} | {min(f.recall for f in figures):.3f} | "
              f"{max(f.false_per_1000 for f in figures):.2f} | {per_seed} |", flush=True)


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
