"""The quality suite in small (benchmarks/quality/run.py, seed 0): every labelled scenario
through the daemon's own parts with the defaults, its goal asserted (issue 11: recall of
anomalous events >= 0.95, <= 1 false alarm per 1,000 normal readings). Every scenario
meets it; value + one-hot commands did not before readings were judged against their
operating mode (``streamae.modes``: recall 0.250 at 21.68 false alarms per 1,000 on seed 0;
with the commands still fed to the model, recall 1.000 at 1.25)."""

from __future__ import annotations

import pytest

from tests.conftest import load_script


@pytest.fixture(scope="module")
def suite():
    load_script("skab_data", "benchmarks/skab_data.py")
    generators = load_script("generators", "benchmarks/quality/generators.py")
    run = load_script("quality_run", "benchmarks/quality/run.py")
    return generators, run


@pytest.mark.parametrize("name", [
    "noiseless_spikes", "low_noise_spikes", "level_shifts", "periodic", "spiky_normal",
    "constant_switch", "value_commands", "slow_drift", "keys_in_units"])
def test_scenario_meets_the_goal_with_the_defaults(suite, name):
    generators, run = suite
    figures = run.run_scenario(generators.SCENARIOS[name](0), {})
    print(f"{name}: recall={figures.recall:.3f} false/1000={figures.false_per_1000:.2f}")
    assert figures.recall >= 0.95
    assert figures.false_per_1000 <= 1.0


@pytest.mark.parametrize("name", ["low_noise_spikes", "periodic"])
def test_the_goal_holds_on_seed_1_where_it_once_fell_short(suite, name):
    """Low noise + spikes flagged 1.38 normal readings per 1,000 while its calibration
    rested on the held-out windows alone; periodic missed a flat cycle (3.8 against 4)
    before a window gone flat was judged by its spread."""
    generators, run = suite
    figures = run.run_scenario(generators.SCENARIOS[name](1), {})
    assert figures.recall >= 0.95
    assert figures.false_per_1000 <= 1.0


def test_retraining_keeps_the_goal_where_a_challenger_went_blind(suite):
    """Spiky normal seed 0, retraining on: the first challenger is blind to the growing
    vibration the champion flagged (none of it scored 2 above the threshold, so none was
    confirmed); it was promoted and recall fell to 0.333. Judged on the champion's
    recent alarms too, it is rejected."""
    generators, run = suite
    figures = run.run_scenario(generators.SCENARIOS["spiky_normal"](0),
                               {"STREAMAE_RETRAIN__ENABLED": "true"})
    assert figures.recall >= 0.95
    assert figures.false_per_1000 <= 1.0
