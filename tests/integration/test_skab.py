"""SKAB through the real daemon and broker: a regression guard on what the detector detects.

A few labelled SKAB files stream through ``benchmarks/skab.py``'s Kafka path (the frozen
configuration, the daemon's own threshold); the pooled figures must stay near what was
measured when the configuration was chosen (docs/quality.md), and the in-process replay
used for tuning must give the very same verdicts. Not a timing. The data is GPL-3.0 and
read from ``$STREAMAE_SKAB_DIR`` or ``../shared/datasets/skab``, never copied here.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from streamae import replay, skab
from tests.conftest import load_script

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
# A mix: valve1/0 mostly missed, valve1/5 caught cleanly, valve2/0 partly caught without
# false alarms, other/11 caught with false alarms after it.
FILES = ("valve1/0.csv", "valve1/5.csv", "valve2/0.csv", "other/11.csv")
# Measured with benchmarks/skab.py (frozen) on these files; see docs/quality.md.
EXPECTED = {"f1": 0.693, "far": 10.75, "mar": 42.27}
TOLERANCE = {"f1": 0.03, "far": 3.0, "mar": 3.0}  # CPU kernels differ a little between hosts


def load_benchmark():
    return load_script("skab_benchmark", "benchmarks/skab.py")


@pytest.fixture(scope="module")
def skab_data() -> Path:
    directory = skab.data_dir(ROOT)
    if directory is None:
        pytest.skip("SKAB data absent: set STREAMAE_SKAB_DIR or provide ../shared/datasets/skab")
    return directory


def test_metrics_follow_skab_definitions():
    c = skab.Confusion()
    c.add(np.array([1, 1, 0, 0, 1], bool), np.array([1, 0, 1, 0, 1], bool))
    assert (c.tp, c.fp, c.fn, c.tn) == (2, 1, 1, 1)
    assert c.f1 == pytest.approx(2 / (2 + 1)) and c.far == 50.0 and c.mar == pytest.approx(100 / 3)
    labels = np.array([0, 0, 1, 1], bool)
    assert skab.roc_auc(np.array([0.1, 0.2, 0.3, 0.4]), labels) == 1.0
    assert skab.roc_auc(np.array([0.4, 0.3, 0.2, 0.1]), labels) == 0.0
    assert skab.roc_auc(np.ones(4), labels) == 0.5  # ties count half
    scores, flags = replay.per_row(6, [2, 4], [1.0, 2.0], [False, True])
    assert np.isnan(scores[:2]).all() and scores[2:].tolist() == [1.0, 1.0, 2.0, 2.0]
    assert flags.tolist() == [False, False, False, False, True, True]
    assert skab.warmup_windows(16) == 385 and skab.warmup_windows(16, 4) == 97


def test_the_anomaly_free_recording_is_cut_into_experiments_of_the_labelled_length(
        skab_data: Path):
    pieces = skab.anomaly_free_pieces(skab_data)
    assert [len(p.labels) for p in pieces] == [1_100] * 8
    assert not any(p.labels.any() for p in pieces)
    assert all(np.all(np.diff(p.ts_ms) > 0) for p in pieces)  # each in time order
    assert pieces[1].ts_ms[0] > pieces[0].ts_ms[-1]  # consecutive, not overlapping
    assert len({p.name for p in pieces}) == 8


def test_skab_figures_through_kafka_stay_near_the_measured_ones(
        skab_data: Path, kafka_bootstrap: str, tmp_path: Path):
    bench = load_benchmark()
    env = bench.config_env("frozen")
    files = [skab.load(skab_data, name) for name in FILES]
    results = [bench.run_file(f, env, kafka_bootstrap, tmp_path) for f in files]
    figure = skab.evaluate("frozen", results)
    print("\n" + skab.table([figure, *skab.baselines(files)], published=False))

    # Every row from 400 on was scored by the daemon, with its own threshold.
    assert all(np.isfinite(r.scores[skab.FIT_ROWS:]).all() for r in results)
    c = figure.confusion
    got = {"f1": c.f1, "far": c.far, "mar": c.mar}
    for name, value in got.items():
        assert abs(value - EXPECTED[name]) <= TOLERANCE[name], (name, got, EXPECTED)
    assert figure.auc > 0.78  # 0.831 measured

    # The in-process replay used for tuning says exactly what the daemon said.
    settings = skab.settings_from_env(
        {**env, "STREAMAE_CHECKPOINTS__DIRECTORY": str(tmp_path / "replay")})
    for f, via_kafka in zip(files, results, strict=True):
        replayed = skab.replay(f, settings)
        np.testing.assert_array_equal(replayed.flags, via_kafka.flags)
        np.testing.assert_allclose(replayed.scores, via_kafka.scores, rtol=1e-4, atol=1e-4)
