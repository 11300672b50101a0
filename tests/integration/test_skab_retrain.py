"""Evidence on real data: gating the replay buffer keeps the daemon alarming through an anomaly.

A few SKAB files stream through the daemon (in-memory clients, the benchmark's path); with
the gate the retrainer never learns the anomalous segment, without it (gate 1e9) it does
and misses more anomalous rows. ``benchmarks/skab_retrain.py`` prints the full table.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
FILES = ("valve1/0.csv", "valve1/1.csv", "valve1/2.csv", "other/3.csv")


def load_benchmark():
    spec = importlib.util.spec_from_file_location("skab_retrain",
                                                  ROOT / "benchmarks/skab_retrain.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules["skab_retrain"] = module
    spec.loader.exec_module(module)
    return module


def test_gated_retraining_misses_fewer_anomalous_rows_than_ungated():
    bench = load_benchmark()
    directory = bench.skab_dir()
    if directory is None:
        pytest.skip("SKAB data absent: set STREAMAE_SKAB_DIR or provide "
                    "../shared/datasets/skab")
    tallies = bench.evaluate([directory / f for f in FILES], modes=("gated", "ungated"))
    print("\n" + bench.table(tallies))
    gated, ungated = tallies["gated"], tallies["ungated"]
    assert gated.retrains > 0 and ungated.promoted > 0  # both really retrained
    assert gated.fn < ungated.fn, (gated, ungated)
