"""Scoring: normalisation, the scorer, explanations and sampling."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from streamae.calibration import TailCalibration
from streamae.exceptions import ModelError
from streamae.scoring import (
    CPU_CONV_CHUNK,
    ErrorStats,
    Scorer,
    chunk_size,
    feature_weights,
    heatmap,
    peak_raw,
    resolve_device,
    sample,
    spread_raw,
    top_features,
    weighted_raw,
    worst_patches,
)
from streamae.training import TrainConfig, fit

SMALL = {"hidden_sizes": [16, 8], "latent_size": 2}


@pytest.fixture(scope="module")
def make_detector():
    """Factory of small trained detectors, cached by kind."""
    cache: dict = {}

    def make(kind: str = "dense"):
        if kind not in cache:
            rng = np.random.default_rng(0)
            shape = (1, 8, 8) if kind == "conv" else (6,)
            data = rng.normal(3.0, 2.0, size=(120, *shape)).astype(np.float32)
            cache[kind] = fit(data, kind, SMALL, TrainConfig(epochs=3), device="cpu")
        return cache[kind]

    return make


def test_robust_z_ignores_outliers_that_move_z():
    rng = np.random.default_rng(0)
    scores = rng.normal(1.0, 0.1, size=1000)
    scores[:20] = 100.0  # contamination in the "normal" data
    errors = np.stack([scores, scores], axis=1)
    z = ErrorStats.from_errors(scores, errors, "z")
    robust = ErrorStats.from_errors(scores, errors, "robust_z")
    np.testing.assert_allclose(robust.feature_centre, 1.0, atol=0.02)
    np.testing.assert_allclose(robust.feature_scale, 0.1, rtol=0.15)
    assert np.all(z.feature_scale > 10 * robust.feature_scale)
    assert robust.normalise_features(np.array([[1.3, 1.0]]))[0, 0] == pytest.approx(3.0, abs=0.5)
    assert robust.feature_centre.shape == (2,)


def test_error_stats_floor_and_state_round_trip():
    errors = np.zeros((50, 2, 3))
    errors[:, 0, 0] = np.linspace(0, 1, 50)
    stats = ErrorStats.from_errors(errors.mean(axis=(1, 2)), errors, "robust_z")
    assert np.all(stats.feature_scale > 0)
    again = ErrorStats.from_state(stats.state())
    np.testing.assert_array_equal(again.feature_scale, stats.feature_scale)
    probe = np.linspace(0, 2, 9)
    np.testing.assert_array_equal(again.normalise_scores(probe), stats.normalise_scores(probe))
    assert again.method == "robust_z"
    with pytest.raises(ModelError):
        ErrorStats.from_state({"method": "z"})
    with pytest.raises(ModelError):
        ErrorStats.from_errors(np.ones(3), np.ones((3, 2)), "nope")


def window_errors(rng: np.random.Generator, n: int, length: int = 16) -> np.ndarray:
    """Squared errors of n normal windows (n, length, 2 features)."""
    return rng.chisquare(1, size=(n, length, 2))


def test_a_window_with_one_far_reading_is_rare_though_its_mean_error_is_not():
    rng = np.random.default_rng(1)
    normal = window_errors(rng, 4000)
    stats = ErrorStats.from_errors(normal.mean(axis=(1, 2)), normal, "robust_z")
    mean_only = ErrorStats(stats.method, TailCalibration.fit(
        normal.mean(axis=(1, 2))), stats.feature_centre, stats.feature_scale, stats.feature_mean)
    spiked = window_errors(rng, 200)
    spiked[:, 7, :] = 15.0  # one reading far out in both features
    def score(s: ErrorStats, errors: np.ndarray) -> np.ndarray:
        return s.normalise_scores(s.sample_raw(errors.mean(axis=(1, 2)), errors))
    assert np.median(score(stats, spiked)) > 4 > np.median(score(mean_only, spiked))
    # and the score keeps its meaning: unseen normal windows pass 2 about 1% of the time
    share = float(np.mean(score(stats, window_errors(rng, 20000)) > 2))
    assert 0.005 < share < 0.02


def calm_windows(rng: np.random.Generator, n: int, length: int = 16) -> np.ndarray:
    """Scaled windows (n, length, 2): a cycle at a random phase plus noise."""
    phase = rng.uniform(0, 2 * np.pi, size=(n, 1, 1))
    t = np.arange(length)[None, :, None]
    return np.sin(t * 2 * np.pi / 20 + phase) + 0.3 * rng.normal(size=(n, length, 2))


def test_a_window_whose_amplitude_triples_is_rare_though_its_errors_are_normal():
    rng = np.random.default_rng(3)
    errors, scaled = window_errors(rng, 4000), calm_windows(rng, 4000)
    stats = ErrorStats.from_errors(errors.mean(axis=(1, 2)), errors, "robust_z", scaled)
    assert stats.parts is not None and len(stats.parts) == 3

    def score(windows: np.ndarray) -> np.ndarray:
        fresh = window_errors(rng, len(windows))  # the model rebuilds either equally well
        return stats.normalise_scores(stats.sample_raw(fresh.mean(axis=(1, 2)), fresh,
                                                       windows))

    assert np.median(score(3 * calm_windows(rng, 200))) > 4
    # and the score keeps its meaning: unseen normal windows pass 2 about 1% of the time
    share = float(np.mean(score(calm_windows(rng, 20000)) > 2))
    assert 0.005 < share < 0.02, share  # measured 0.012
    with pytest.raises(ModelError, match="spread needs"):
        stats.sample_raw(errors[:3].mean(axis=(1, 2)), errors[:3])


def test_a_window_gone_flat_is_rare_where_the_feature_always_moves_and_normal_where_not():
    """A stuck sensor or a missing cycle: the model rebuilds a flat window as a cycle of
    zero amplitude, so only the spread can tell. A feature that is often calm in normal
    data (here a level that holds still half the time) may go flat unremarked."""
    rng = np.random.default_rng(6)
    errors, scaled = window_errors(rng, 4000), calm_windows(rng, 4000)
    scaled[:2000, :, 1] = 0.02 * rng.normal(size=(2000, 16))  # feature 1: often calm
    stats = ErrorStats.from_errors(errors.mean(axis=(1, 2)), errors, "robust_z", scaled)
    assert stats.spread_low is not None
    assert stats.spread_low[0] > 0 and stats.spread_low[1] == 0  # lively, and not

    def score(windows: np.ndarray) -> np.ndarray:
        fresh = window_errors(rng, len(windows))
        return stats.normalise_scores(stats.sample_raw(fresh.mean(axis=(1, 2)), fresh,
                                                       windows))

    stuck = calm_windows(rng, 200)
    stuck[:, :, 0] = 0.4 + 0.01 * rng.normal(size=(200, 16))
    assert np.median(score(stuck)) > 4
    calm = calm_windows(rng, 200)
    calm[:, :, 1] = 0.02 * rng.normal(size=(200, 16))
    assert np.median(score(calm)) < 2
    fresh_normal = calm_windows(rng, 20000)
    fresh_normal[:10000, :, 1] = 0.02 * rng.normal(size=(10000, 16))
    share = float(np.mean(score(fresh_normal) > 2))
    assert 0.005 < share < 0.02, share  # the meaning holds: ~1% of normal windows pass 2
    restored = ErrorStats.from_state(stats.state())
    np.testing.assert_array_equal(restored.spread_low, stats.spread_low)


def test_stats_saved_before_flat_windows_were_judged_score_by_the_grown_spread_alone():
    rng = np.random.default_rng(7)
    errors, scaled = window_errors(rng, 500), calm_windows(rng, 500)
    stats = ErrorStats.from_errors(errors.mean(axis=(1, 2)), errors, "robust_z", scaled)
    state = stats.state()
    del state["spread_low"]
    old = ErrorStats.from_state(state)
    assert old.spread_low is None
    stuck = calm_windows(rng, 5)
    stuck[:, :, 0] = 0.4
    probe = window_errors(rng, 5)
    pair = old.calibration.scores(np.maximum(
        old.parts[0].scores(old.mean_raw(probe.mean(axis=(1, 2)), probe)),
        old.parts[1].scores(peak_raw(probe, feature_weights(old.feature_mean)))))
    grown = old.parts[2].scores(spread_raw(stuck, old.spread_typical))
    np.testing.assert_allclose(old.sample_raw(probe.mean(axis=(1, 2)), probe, stuck),
                               np.maximum(pair, grown))
    for bad in ([-1.0, 0.0], [float("nan"), 0.0], [1.0]):
        with pytest.raises(ModelError, match="low spreads"):
            ErrorStats.from_state({**stats.state(), "spread_low": bad})


def test_stats_saved_before_the_spread_existed_score_by_mean_and_peak():
    rng = np.random.default_rng(4)
    errors, scaled = window_errors(rng, 500), calm_windows(rng, 500)
    with_spread = ErrorStats.from_errors(errors.mean(axis=(1, 2)), errors, "robust_z", scaled)
    state = with_spread.state()
    state["parts"], state["spread_typical"] = state["parts"][:2], None
    old = ErrorStats.from_state(state)
    assert old.spread_typical is None and len(old.parts) == 2
    probe = window_errors(rng, 5)
    pair = np.maximum(old.parts[0].scores(old.mean_raw(probe.mean(axis=(1, 2)), probe)),
                      old.parts[1].scores(peak_raw(probe, feature_weights(old.feature_mean))))
    np.testing.assert_allclose(old.sample_raw(probe.mean(axis=(1, 2)), probe), pair)
    with pytest.raises(ModelError):  # three parts need the typical spreads beside them
        ErrorStats.from_state({**with_spread.state(), "spread_typical": None})
    for bad in ([0.0, 1.0], [float("nan"), 1.0]):  # a zero would flag every window
        with pytest.raises(ModelError, match="typical spreads"):
            ErrorStats.from_state({**with_spread.state(), "spread_typical": bad})


def test_stats_saved_before_the_window_peak_existed_score_by_the_mean_alone():
    rng = np.random.default_rng(2)
    normal = window_errors(rng, 500)
    stats = ErrorStats.from_errors(normal.mean(axis=(1, 2)), normal, "robust_z")
    state = stats.state()
    assert ErrorStats.from_state(state).parts is not None
    del state["parts"]
    old = ErrorStats.from_state(state)
    assert old.parts is None
    probe = window_errors(rng, 5)
    mean = weighted_raw(probe.mean(axis=(1, 2)), probe, feature_weights(stats.feature_mean),
                        stats.feature_mean)
    np.testing.assert_array_equal(old.sample_raw(probe.mean(axis=(1, 2)), probe), mean)
    with pytest.raises(ModelError):
        ErrorStats.from_state({**stats.state(), "parts": [1]})


def test_scorer_returns_numpy_in_original_units(make_detector):
    detector = make_detector("dense")
    scorer = Scorer(detector, device="cpu", max_batch=7)
    batch = np.random.default_rng(1).normal(3.0, 2.0, size=(20, 6)).astype(np.float32)
    result = scorer.score(batch)
    assert result.scores.shape == result.raw_scores.shape == (20,)
    assert result.feature_z.shape == result.reconstructed.shape == (20, 6)
    assert result.latent.shape == (20, 2)
    assert abs(result.reconstructed.mean() - 3.0) < 1.0  # original units, not scaled
    np.testing.assert_allclose(scorer.encode(batch), result.latent, rtol=1e-5, atol=1e-6)
    assert scorer.network is not detector.model  # the scorer owns its copy
    with pytest.raises(ModelError):
        scorer.score(np.zeros((2, 5), np.float32))


def test_resolve_device():
    assert resolve_device("cpu") == "cpu"
    assert resolve_device("auto") == ("cuda" if torch.cuda.is_available() else "cpu")
    with pytest.raises(ModelError):
        resolve_device("tpu")
    if not torch.cuda.is_available():
        with pytest.raises(ModelError):
            resolve_device("cuda")


def test_top_features_sorted_by_z_with_direction():
    values = np.array([1.0, 5.0, 2.0, 0.0])
    recon = np.array([1.0, 2.0, 2.5, 3.0])
    z = np.array([0.1, 4.0, 0.5, 6.0])
    top = top_features(values, recon, z, ["a", "b", "c", "d"], k=2)
    assert [t["feature"] for t in top] == ["d", "b"]
    assert [t["direction"] for t in top] == ["low", "high"]
    assert top[0] == {
        "feature": "d",
        "actual": 0.0,
        "reconstructed": 3.0,
        "direction": "low",
        "z": 6.0,
    }
    assert [t["feature"] for t in top_features(values, recon, z, None, 10)] == [3, 1, 2, 0]


def test_worst_patches_find_an_injected_bright_square():
    z = np.random.default_rng(0).normal(0, 0.3, size=(3, 28, 28))
    z[:, 10:14, 17:21] += 8.0
    z[:, 0:4, 0:4] += 3.0
    patches = worst_patches(z, patch=4, k=2)
    assert (patches[0]["row"], patches[0]["col"]) == (10, 17)
    assert patches[0]["height"] == patches[0]["width"] == 4
    assert patches[0]["z"] > 7.0
    assert (patches[1]["row"], patches[1]["col"]) == (0, 0)


def test_heatmap_pools_to_a_small_grid():
    z = np.zeros((1, 16, 16))
    z[0, :8, :8] = 2.0
    grid = heatmap(z, size=2)
    assert grid == [[2.0, 0.0], [0.0, 0.0]]
    assert len(heatmap(np.zeros((5, 3)), size=8)) == 5


def test_sampling_needs_a_variational_model(make_detector):
    with pytest.raises(ModelError):
        sample(make_detector("dense"), 4, device="cpu")
    samples = sample(make_detector("vae"), 10, device="cpu", seed=3)
    assert samples.shape == (10, 6)
    assert np.all(np.isfinite(samples))
    np.testing.assert_array_equal(samples, sample(make_detector("vae"), 10, "cpu", seed=3))


def test_conv_scorer_scores_images(make_detector):
    scorer = Scorer(make_detector("conv"), device="cpu")
    result = scorer.score(np.full((3, 1, 8, 8), 3.0, np.float32))
    assert result.feature_z.shape == (3, 1, 8, 8)
    assert len(worst_patches(result.feature_z[0], patch=3, k=1)) == 1


def test_images_are_scored_in_cache_sized_chunks_on_cpu_only():
    cpu = "cpu"
    assert chunk_size("conv", cpu, 4096) == CPU_CONV_CHUNK < 4096
    assert chunk_size("conv", cpu, 16) == 16
    assert chunk_size("dense", cpu, 4096) == chunk_size("conv1d", cpu, 4096) == 4096
    assert chunk_size("conv", "cuda", 4096) == 4096
