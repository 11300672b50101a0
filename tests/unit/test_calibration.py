"""Calibrated scores: one meaning (a tail probability) for every model kind.

The property that lets an operator set one threshold from the environment: on normal data
the model never saw, the share of readings scoring above s is 10^-s (within a factor 2)."""

from __future__ import annotations

import numpy as np
import pytest

from streamae.calibration import TailCalibration
from streamae.exceptions import ModelError
from streamae.scoring import Scorer
from streamae.training import TrainConfig, fit
from tests.conftest import load_script


def test_scores_follow_the_empirical_tail_and_extrapolate_without_saturating():
    rng = np.random.default_rng(0)
    raw = rng.exponential(size=20_000)
    calibration = TailCalibration.fit(raw)
    probe = np.array([0.0, np.log(10), np.log(100), np.log(1e4), np.log(1e8), 1e3])
    scores = calibration.scores(probe)
    np.testing.assert_allclose(scores[1:4], [1, 2, 4], atol=0.15)  # exp tail: -log10 e^-x
    assert scores[0] == pytest.approx(0.0, abs=0.01)
    assert 7 < scores[4] < 9 and scores[5] > scores[4]  # beyond every sample, still growing
    assert np.all(np.diff(calibration.scores(np.linspace(0, 50, 500))) >= 0)  # monotone
    assert np.isfinite(calibration.scores(np.array([np.inf, np.nan]))).all()


def test_a_heavy_tailed_normal_keeps_its_heavy_tail_from_a_warm_ups_worth_of_errors():
    # Errors of heavy-tailed noise (squares of Student-t, 3 degrees of freedom, a GPD shape
    # ~2/3): 1,500 held-out errors, ~75 excesses, as a cold start has. A tail flattened to
    # an exponential alarms ~10x too often three decades out (it did, on 3 of these seeds).
    def errors(n: int, seed: int) -> np.ndarray:
        return (np.random.default_rng(seed).standard_t(3, size=(n, 6)) ** 2).mean(axis=1)

    fresh = errors(2_000_000, 99)
    for seed in range(8):
        scores = TailCalibration.fit(errors(1_500, seed)).scores(fresh)
        shares = [float(np.mean(scores > s)) / 10.0**-s for s in (2, 3, 4)]
        assert 0.5 < shares[0] < 2 and 0.5 < shares[1] < 3 and 0.5 < shares[2] < 6, shares


def test_ties_and_constant_errors_neither_flag_nothing_nor_explode():
    # A clean signal: most held-out errors tie at the top (pyod#360: a percentile of tied
    # scores flags nothing above it). A step just above them must score, not be infinite.
    raw = np.r_[np.full(900, 1.0), np.linspace(0.5, 1.0, 100)]
    calibration = TailCalibration.fit(raw)
    assert calibration.scores(np.array([1.0]))[0] < 2
    assert 2 < calibration.scores(np.array([1.5]))[0] < 1e6
    constant = TailCalibration.fit(np.zeros(50))
    assert np.isfinite(constant.scores(np.array([0.0, 1e-9, 1.0]))).all()


def test_state_round_trip_and_inverse():
    calibration = TailCalibration.fit(np.random.default_rng(1).gamma(2.0, size=5_000))
    again = TailCalibration.from_state(calibration.state())
    probe = np.linspace(0, 30, 61)
    np.testing.assert_array_equal(again.scores(probe), calibration.scores(probe))
    for score in (0.5, 2.0, 4.0, 8.0):
        assert calibration.scores(np.array([calibration.raw_at(score)]))[0] == pytest.approx(
            score, abs=0.05)
    with pytest.raises(ModelError):
        TailCalibration.from_state({"body_x": [1.0]})
    with pytest.raises(ModelError):
        TailCalibration.fit(np.array([1.0]))


STABILITY = load_script("stability", "benchmarks/quality/stability.py")
_vectors, _windows = STABILITY.vectors, STABILITY.windows


def _images(n: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:8, 0:8]
    centre = rng.uniform(2, 6, size=(n, 2, 1, 1))
    blob = np.exp(-((yy - centre[:, 0]) ** 2 + (xx - centre[:, 1]) ** 2) / 4.0)
    return (blob[:, None] + 0.1 * rng.normal(size=(n, 1, 8, 8))).astype(np.float32)


CASES = {
    "dense": (_vectors, {"hidden_sizes": (32, 16)}),
    "vae": (_vectors, {"hidden_sizes": (32, 16), "beta": 0.1}),
    "conv1d": (_windows, {"hidden_sizes": (8, 16)}),
    "conv": (_images, {"hidden_sizes": (8, 16), "noise_std": 0.0, "mask_probability": 0.0}),
}


@pytest.mark.parametrize("kind", list(CASES))
def test_share_above_s_is_ten_to_minus_s_on_unseen_normal_data(kind):
    make, args = CASES[kind]
    config = TrainConfig(epochs=15, batch_size=128, validation_fraction=0.4, seed=0)
    detector = fit(make(6_000, seed=0), kind, args, config, device="cpu")
    scores = Scorer(detector, device="cpu", max_batch=4096).score(make(40_000, seed=1)).scores
    for s in (1, 2, 3):
        share = float(np.mean(scores > s))
        assert 10.0 ** -s / 2 <= share <= 2 * 10.0 ** -s, f"{kind}: share above {s} = {share}"
