"""Evidence on real data: gating the replay buffer keeps the daemon alarming through an anomaly.

A few SKAB files stream through the daemon (in-memory clients, the benchmark's path); with
the gate the retrainer never learns the anomalous segment, with the gate at the threshold
(gate_score 1e9: everything scored normal) it learns more of it and misses more rows.
``benchmarks/skab_retrain.py`` prints the full table.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.conftest import load_script

pytestmark = pytest.mark.skab
skab = load_script("skab_data", "benchmarks/skab_data.py")
ROOT = Path(__file__).resolve().parents[2]
FILES = ("valve1/0.csv", "valve1/1.csv", "valve1/2.csv", "other/3.csv")


def load_benchmark():
    return load_script("skab_retrain", "benchmarks/skab_retrain.py")


def test_gated_retraining_misses_fewer_anomalous_rows_than_ungated():
    bench = load_benchmark()
    directory = skab.data_dir(ROOT)
    if directory is None:
        pytest.skip("SKAB data absent: set STREAMAE_SKAB_DIR or provide "
                    "../shared/datasets/skab")
    tallies = bench.evaluate(directory, FILES, modes=("gated", "ungated"))
    print("\n" + bench.table(tallies))
    gated, ungated = tallies["gated"], tallies["ungated"]
    assert gated.retrains > 0 and ungated.promoted > 0  # both really retrained
    assert gated.fn < ungated.fn, (gated, ungated)
