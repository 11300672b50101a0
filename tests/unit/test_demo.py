"""The demo stream's scenarios: the same labelled stream for the demo, tests and benchmarks."""

from __future__ import annotations

import numpy as np
import pytest

from streamae.demo import MEANS, SCALES, SENSORS, DemoStream, scenario


def z_of(readings) -> np.ndarray:
    values = np.array([[r.values[s] for s in SENSORS] for r in readings])
    return (values - MEANS) / SCALES


def test_base_is_the_plain_stream():
    plain = DemoStream(seed=3).take(500)
    base = DemoStream(seed=3, scenario=scenario("base", 500)).take(500)
    assert [r.values for r in plain] == [r.values for r in base]


def test_poison_moves_one_sensor_for_the_last_half_and_labels_it():
    count = 2_000
    readings = DemoStream(seed=1, anomaly_rate=0.0, scenario=scenario("poison", count)).take(
        count)
    z = z_of(readings)
    assert z[: count // 2, 2].mean() == pytest.approx(0.0, abs=0.3)
    assert z[count // 2 :, 2].mean() == pytest.approx(5.0, abs=0.3)
    assert {r.label for r in readings[: count // 2]} == {"normal"}
    assert {r.label for r in readings[count // 2 :]} == {"poison"}


def test_ramp_is_faint_then_visible_then_held():
    count = 10_000
    spec = scenario("ramp", count)
    readings = DemoStream(seed=2, anomaly_rate=0.0, scenario=spec).take(count)
    labels = [r.label for r in readings]
    assert labels[spec.start - 1] == "normal" and labels[spec.start] == "ramp-faint"
    assert labels[spec.start + spec.length] == "ramp" and labels[-1] == "ramp"
    assert z_of(readings[-500:])[:, 5].mean() == pytest.approx(5.0, abs=0.3)


def test_drift_moves_every_sensor_keeps_correlations_and_stays_normal():
    count = 10_000
    spec = scenario("drift", count)
    readings = DemoStream(seed=4, anomaly_rate=0.0, scenario=spec).take(count)
    z = z_of(readings)
    before, after = z[: spec.start], z[spec.start + spec.length :]
    np.testing.assert_allclose(after.mean(axis=0) - before.mean(axis=0), 4.0, atol=0.3)
    np.testing.assert_allclose(np.corrcoef(after.T), np.corrcoef(before.T), atol=0.1)
    assert {r.label for r in readings} == {"normal"}


def test_unknown_scenario_is_refused():
    with pytest.raises(ValueError, match="unknown scenario"):
        scenario("storm", 100)
