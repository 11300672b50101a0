"""Thresholds: warm-up, accuracy on known distributions, state round trips."""

from __future__ import annotations

import json
import time

import numpy as np
import pytest

from streamae.thresholds import (
    AlarmRate,
    LimitThreshold,
    RollingQuantileThreshold,
    SpotThreshold,
    StaticThreshold,
    Threshold,
    build_threshold,
    fit_gpd,
    threshold_from_state,
)


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(7)


def test_static():
    threshold = StaticThreshold(2.0)
    assert isinstance(threshold, Threshold)
    assert threshold.value == 2.0
    threshold.update(np.array([100.0]))
    assert threshold.classify(np.array([1.0, 2.0, 2.5])).tolist() == [False, False, True]
    with pytest.raises(ValueError):
        StaticThreshold(float("nan"))


def test_limit_is_margin_times_the_worst_calibration_score_and_learns_nothing_after():
    threshold = LimitThreshold(1.5)
    assert threshold.value is None and not threshold.classify(np.array([1e9])).any()
    threshold.fit(np.array([0.5, 4.0, np.nan, -2.0, 3.0]))  # NaN ignored
    assert threshold.value == pytest.approx(6.0)
    np.testing.assert_array_equal(threshold.classify(np.array([5.9, 6.0, 6.1])),
                                  [False, False, True])
    threshold.update(np.full(1000, 100.0))  # a long anomaly does not raise it
    assert threshold.value == pytest.approx(6.0)
    threshold.fit(np.array([2.0]))  # a recalibration replaces it
    assert threshold.value == pytest.approx(3.0)


def test_limit_is_never_below_margin_sigmas():
    threshold = LimitThreshold(2.0)
    threshold.fit(np.array([-0.5, 0.0, 0.2]))  # a model that reconstructs its data perfectly
    assert threshold.value == pytest.approx(2.0)
    threshold.fit(np.array([np.nan]))  # nothing finite: stays as it was
    assert threshold.value == pytest.approx(2.0)


def test_quantile_flags_nothing_before_min_samples():
    threshold = RollingQuantileThreshold(quantile=0.9, window=100, min_samples=10)
    threshold.update(np.arange(9.0))
    assert threshold.value is None
    assert not threshold.classify(np.array([1e9])).any()
    threshold.update(np.array([9.0]))
    assert threshold.value is not None
    assert threshold.classify(np.array([1e9]))[0]


def test_quantile_close_to_true_quantile(rng):
    threshold = RollingQuantileThreshold(quantile=0.99, window=10_000, min_samples=100)
    for _ in range(100):
        threshold.update(rng.standard_normal(256))
    assert threshold.value == pytest.approx(2.326, abs=0.1)
    flagged = threshold.classify(rng.standard_normal(100_000)).mean()
    assert flagged == pytest.approx(0.01, abs=0.004)


def test_quantile_window_forgets_old_scores():
    threshold = RollingQuantileThreshold(quantile=0.5, window=100, min_samples=10, refresh_every=1)
    threshold.update(np.full(100, 1000.0))
    threshold.update(np.arange(100.0))
    assert threshold.value == pytest.approx(49.5)
    np.testing.assert_array_equal(threshold.held(), np.arange(100.0))
    threshold.update(np.array([np.nan, np.inf]))  # ignored
    assert len(threshold) == 100


def test_quantile_refresh_is_lazy():
    threshold = RollingQuantileThreshold(quantile=0.5, window=1000, min_samples=1, refresh_every=50)
    threshold.update(np.zeros(10))
    assert threshold.value == 0.0
    threshold.update(np.full(40, 10.0))  # 40 < 50 new scores: cached value kept
    assert threshold.value == 0.0
    threshold.update(np.full(10, 10.0))
    assert threshold.value == 10.0


def test_quantile_ring_wraps_with_batches():
    threshold = RollingQuantileThreshold(quantile=0.5, window=10, min_samples=1)
    for start in range(0, 35, 7):
        threshold.update(np.arange(start, start + 7, dtype=float))
    np.testing.assert_array_equal(threshold.held(), np.arange(25.0, 35.0))
    threshold.update(np.arange(100.0, 130.0))  # bigger than the window
    np.testing.assert_array_equal(threshold.held(), np.arange(120.0, 130.0))


def test_quantile_fit_warms(rng):
    threshold = RollingQuantileThreshold(quantile=0.95, window=1000, min_samples=200)
    threshold.update(np.full(50, 99.0))
    threshold.fit(rng.uniform(size=500))
    assert threshold.value == pytest.approx(0.95, abs=0.05)
    assert len(threshold) == 500


def test_spot_warm_up_and_risk(rng):
    spot = SpotThreshold(risk=1e-3, level=0.98, min_samples=2000)
    spot.update(rng.exponential(size=1999))
    assert spot.value is None
    assert not spot.classify(np.array([1e9])).any()
    spot.update(rng.exponential(size=1))
    # Exp(1): P(X > z) = 1e-3 at z = ln(1000) ~ 6.91
    assert spot.value == pytest.approx(np.log(1000), abs=1.0)
    for _ in range(40):
        spot.update(rng.exponential(size=256))
    assert spot.value == pytest.approx(np.log(1000), abs=0.6)
    flagged = spot.classify(rng.exponential(size=200_000)).mean()
    assert flagged == pytest.approx(1e-3, abs=1e-3)


def test_spot_fit_warms_and_alarms_move_it_boundedly(rng):
    paper = SpotThreshold(risk=1e-3, level=0.98, min_samples=10_000, alarm_cap=None)
    capped = SpotThreshold(risk=1e-3, level=0.98, min_samples=10_000, alarm_cap=2.0)
    calibration = rng.standard_normal(5000)
    paper.fit(calibration)
    capped.fit(calibration)
    before = paper.value
    assert before is not None and capped.value == before
    paper.update(np.full(5, 1e6))  # alarms are not learnt at all
    assert paper.value == before
    capped.update(np.full(5, 1e6))  # learnt, but as if they were at most t + 2 (z - t)
    assert before < capped.value < before + 2.0


def test_fit_gpd_recovers_shape(rng):
    gamma, sigma = 0.2, 1.5
    u = rng.uniform(size=50_000)
    samples = sigma / gamma * (u ** (-gamma) - 1.0)  # GPD by inversion
    est_gamma, est_sigma = fit_gpd(samples)
    assert est_gamma == pytest.approx(gamma, abs=0.05)
    assert est_sigma == pytest.approx(sigma, rel=0.05)
    assert fit_gpd(np.array([1.0])) == (0.0, 1.0)


@pytest.mark.parametrize(
    "make",
    [
        lambda r: StaticThreshold(1.5),
        lambda r: _fed(RollingQuantileThreshold(0.9, 500, 50), r.standard_normal(700)),
        lambda r: _fed(RollingQuantileThreshold(0.9, 500, 50), r.standard_normal(20)),
        lambda r: _fed(SpotThreshold(1e-3, 0.98, 1000, 300), r.standard_normal(3000)),
        lambda r: _fed(SpotThreshold(1e-3, 0.98, 1000, 300), r.standard_normal(100)),
        lambda r: _fitted(LimitThreshold(1.75), r.standard_normal(200)),
        lambda r: LimitThreshold(2.0),
    ],
    ids=["static", "quantile", "quantile-cold", "spot", "spot-cold", "limit", "limit-cold"],
)
def test_state_round_trip(make, rng):
    threshold = make(rng)
    state = json.loads(json.dumps(threshold.state()))  # JSON-able
    restored = threshold_from_state(state)
    assert type(restored) is type(threshold)
    assert restored.method == threshold.method
    assert restored.value == pytest.approx(threshold.value) if threshold.value else True
    assert (restored.value is None) == (threshold.value is None)
    probe = rng.standard_normal(1000) * 3
    np.testing.assert_array_equal(restored.classify(probe), threshold.classify(probe))
    assert restored.state() == state


def _fed(threshold, scores):
    threshold.update(scores)
    return threshold


def _fitted(threshold, scores):
    threshold.fit(scores)
    return threshold


@pytest.mark.parametrize(
    ("method", "cls"),
    [("static", StaticThreshold), ("quantile", RollingQuantileThreshold), ("spot", SpotThreshold),
     ("limit", LimitThreshold)],
)
def test_build_threshold(method, cls):
    threshold = build_threshold(method, value=3.0, quantile=0.995, window=10_000, min_samples=100)
    assert isinstance(threshold, cls)
    assert threshold.method == method


@pytest.mark.parametrize(
    ("method", "kwargs"),
    [
        ("median", {}),
        ("quantile", {"quantile": 1.5}),
        ("quantile", {"window": 0}),
        ("quantile", {"min_samples": 20_000}),
        ("static", {"value": float("inf")}),
        ("spot", {"quantile": 0.5}),
        ("limit", {"margin": 0.9}),
        ("limit", {"margin": float("nan")}),
    ],
)
def test_build_threshold_errors(method, kwargs):
    args = {"value": 3.0, "quantile": 0.99, "window": 10_000, "min_samples": 100, **kwargs}
    with pytest.raises(ValueError):
        build_threshold(method, **args)


@pytest.mark.parametrize("state", [{}, {"method": "nope"}, {"method": "quantile"}, []])
def test_threshold_from_state_errors(state):
    with pytest.raises(ValueError):
        threshold_from_state(state)


def test_alarm_rate_by_count():
    rate = AlarmRate(window_n=10)
    assert rate.rate == 0.0
    rate.observe(np.array([True] * 5 + [False] * 5))
    assert rate.rate == 0.5
    rate.observe(np.array([False] * 5))  # the five oldest (flagged) leave the window
    assert rate.count == 10
    assert rate.rate == 0.0
    rate.observe(np.ones(30, dtype=bool))
    assert (rate.count, rate.rate) == (10, 1.0)
    rate.reset()
    assert rate.count == 0


def test_alarm_rate_by_time():
    now = [0.0]
    rate = AlarmRate(window_s=10.0, clock=lambda: now[0])
    rate.observe(np.array([True, True]))
    now[0] = 5.0
    rate.observe(np.array([False, False]))
    assert rate.rate == 0.5
    now[0] = 12.0
    assert rate.rate == 0.0
    assert rate.count == 2


def test_alarm_rate_needs_one_window():
    with pytest.raises(ValueError):
        AlarmRate()
    with pytest.raises(ValueError):
        AlarmRate(window_n=5, window_s=1.0)


def test_quantile_is_fast_enough_for_batches():
    """Not a timing assertion on CI speed; guards against an O(window) per-score design."""
    threshold = RollingQuantileThreshold(0.99, 10_000, 100)
    batch = np.random.default_rng(0).standard_normal(256)
    start = time.perf_counter()
    for _ in range(400):
        threshold.update(batch)
        threshold.classify(batch)
    assert time.perf_counter() - start < 5.0
