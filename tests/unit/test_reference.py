"""The reference set and the absolute promotion rule."""

from __future__ import annotations

import numpy as np
import pytest

from streamae.reference import (
    chance_share,
    far_limit,
    judge,
    parts,
    score_agreement,
    synthetic,
    target_rate,
)


def recent(n: int = 400, shape: tuple[int, ...] = (8,)) -> np.ndarray:
    rng = np.random.default_rng(3)
    return rng.normal(size=(n, *shape)).astype(np.float32)


def test_synthetic_is_the_same_for_the_same_data():
    data = recent()
    np.testing.assert_array_equal(synthetic(data, 90), synthetic(data, 90))
    assert synthetic(data, 90).shape == (90, 8)
    assert synthetic(data[:0], 10).shape == (0, 8)


@pytest.mark.parametrize("shape", [(8,), (16, 4)])
def test_every_synthetic_item_is_visibly_off_normal(shape):
    data = recent(shape=shape)
    fake = synthetic(data, 60)
    std = data.reshape(len(data), -1).std(axis=0)
    flat = data.reshape(len(data), -1)
    for item in fake.reshape(60, -1):  # no item is (nearly) a normal window
        assert np.min(np.abs(flat - item).max(axis=1)) > 0.5 * std.mean()


def test_parts_split_confirmed_and_each_kind():
    fake = synthetic(recent(), 30)
    split = parts(np.ones((5, 8), np.float32), fake)
    assert {k: len(v) for k, v in split.items()} == {"confirmed": 5, "spike": 10, "stuck": 10,
                                                     "correlation": 10}
    assert "confirmed" not in parts(np.zeros((0,), np.float32), fake)


def test_a_small_part_cannot_hide_in_a_large_one():
    recalls = {"confirmed": (0.0, 1.0), "spike": (1.0, 1.0), "stuck": (0.9, 0.9)}
    verdict = judge(recalls, 0.0, 0.01, {"confirmed": 10, "spike": 100, "stuck": 100}, 0.05)
    assert not verdict.promote and verdict.reason == "misses_reference"
    assert verdict.part == "confirmed" and verdict.confirmed == 10 and verdict.reference == 210


def test_judge_is_absolute_tolerance_and_false_alarms():
    sizes = {"spike": 100}
    assert judge({"spike": (0.86, 0.9)}, 0.0, 0.01, sizes, 0.05).promote
    assert not judge({"spike": (0.84, 0.9)}, 0.0, 0.01, sizes, 0.05).promote
    verdict = judge({"spike": (0.95, 0.9)}, 0.02, 0.01, sizes, 0.05)
    assert not verdict.promote and verdict.reason == "false_alarms"
    assert judge({"spike": (float("nan"), 0.9)}, 0.0, 0.01, sizes, 0.05).reason == (
        "challenger_not_finite")


def test_score_agreement_counts_readings_within_the_ratio_above_the_floor():
    anchor = np.array([10.0, 10.0, 10.0, 10.0, 0.2, 0.5])
    challenger = np.array([14.0, 7.2, 15.0, 6.0, 0.9, 3.0])  # last two: under the floor
    assert score_agreement(challenger, anchor, 1.41) == pytest.approx(2 / 4)
    assert score_agreement(challenger, anchor, 1.7) == 1.0
    assert score_agreement(np.zeros(3), np.zeros(3), 1.41) == 1.0  # nothing to compare


def test_a_challenger_whose_scores_moved_is_rejected_after_detection_and_alarms():
    sizes = {"spike": 100}
    shifted = judge({"spike": (0.9, 0.9)}, 0.0, 0.01, sizes, 0.05, agreement=0.5,
                    min_agreement=0.9)
    assert not shifted.promote and shifted.reason == "score_shift"
    assert shifted.agreement == 0.5
    assert judge({"spike": (0.9, 0.9)}, 0.0, 0.01, sizes, 0.05, 0.95, 0.9).promote
    # a challenger that also misses the reference is rejected for that first
    assert judge({"spike": (0.5, 0.9)}, 0.0, 0.01, sizes, 0.05, 0.5, 0.9).reason == (
        "misses_reference")


def test_recent_alarms_judge_a_model_only_when_far_beyond_chance():
    assert chance_share(9, 100, 1e-4) is None  # too few to judge
    assert chance_share(10, 200_000, 1e-4) is None  # 20 false alarms expected: all chance
    assert chance_share(50, 10_000, 1e-4) == pytest.approx(1.0 / 50)  # 1 of 50 is chance
    assert chance_share(200, 200_000, 1e-4) == pytest.approx(0.1)


def test_far_limit_is_near_the_target_and_allows_one_unlucky_window():
    assert far_limit(1e-4, 1_000, 3.0) == pytest.approx((0.3 + 3 * 0.3**0.5 + 1) / 1_000)
    assert far_limit(1e-2, 100_000, 3.0) < 0.032
    assert target_rate("false_alarm_rate", 1e-4, 0.99, 4.0) == 1e-4
    assert target_rate("quantile", 1e-4, 0.99, 2.0) == pytest.approx(0.01)
    assert target_rate("static", 1e-4, 0.99, 3.0) == pytest.approx(1e-3)
