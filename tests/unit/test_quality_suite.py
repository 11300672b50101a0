"""The quality suite in small (benchmarks/quality/run.py, seed 0): every labelled scenario
through the daemon's own parts with the defaults, its goal asserted (issue 11: recall of
anomalous events >= 0.95, <= 1 false alarm per 1,000 normal readings).

One scenario does not reach the goal yet and is marked ``xfail(strict=True)``: when a
change makes them pass, the test fails until the mark is removed, so the figure can only
move forward."""

from __future__ import annotations

import pytest

from tests.conftest import load_script

KNOWN_SHORT = {
    # A value level that contradicts its command is reconstructed anyway: the latent has
    # room for the level itself.
    "value_commands": "recall 0.0-0.25 (seeds 0-2)",
}


@pytest.fixture(scope="module")
def suite():
    load_script("skab_data", "benchmarks/skab_data.py")
    generators = load_script("generators", "benchmarks/quality/generators.py")
    run = load_script("quality_run", "benchmarks/quality/run.py")
    return generators, run


@pytest.mark.parametrize("name", [
    pytest.param(name, marks=pytest.mark.xfail(strict=True, reason=KNOWN_SHORT[name]))
    if name in KNOWN_SHORT else name
    for name in ("noiseless_spikes", "low_noise_spikes", "level_shifts", "periodic",
                 "spiky_normal", "constant_switch", "value_commands", "slow_drift",
                 "keys_in_units")])
def test_scenario_meets_the_goal_with_the_defaults(suite, name):
    generators, run = suite
    figures = run.run_scenario(generators.SCENARIOS[name](0), {})
    print(f"{name}: recall={figures.recall:.3f} false/1000={figures.false_per_1000:.2f}")
    assert figures.recall >= 0.95
    assert figures.false_per_1000 <= 1.0


def test_low_noise_spikes_meet_the_goal_on_the_seed_whose_calibration_fell_short(suite):
    """Seed 1 flagged 1.38 normal readings per 1,000 while its calibration rested on the
    held-out windows alone (~75 excesses); on every warm-up window it meets the goal."""
    generators, run = suite
    figures = run.run_scenario(generators.SCENARIOS["low_noise_spikes"](1), {})
    assert figures.recall >= 0.95
    assert figures.false_per_1000 <= 1.0
