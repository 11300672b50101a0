"""Training: scaling, early stopping, errors, and that a trained model finds anomalies."""

from __future__ import annotations

import threading

import numpy as np
import pytest
import torch

from streamae.exceptions import ModelError
from streamae.models import build_model
from streamae.scaling import Scaler
from streamae.scoring import Scorer, recalibrate
from streamae.training import (
    Plateau,
    TrainConfig,
    _train,
    contaminated,
    favours_training,
    fit,
)

SMALL = {"hidden_sizes": [32, 16], "latent_size": 3}


def correlated(n: int, seed: int, dims: int = 8) -> np.ndarray:
    """Vectors driven by 3 shared factors: normal data has strong correlations."""
    rng = np.random.default_rng(seed)
    mixing = np.random.default_rng(42).normal(size=(3, dims))
    return (rng.normal(size=(n, 3)) @ mixing + 0.1 * rng.normal(size=(n, dims)) + 10.0).astype(
        np.float32
    )


def auc(normal: np.ndarray, anomalous: np.ndarray) -> float:
    """Probability that an anomaly outscores a normal sample (Mann-Whitney U / n1 n2)."""
    ranks = np.concatenate([normal, anomalous]).argsort().argsort() + 1
    u = ranks[len(normal) :].sum() - len(anomalous) * (len(anomalous) + 1) / 2
    return float(u / (len(normal) * len(anomalous)))


def test_scaler_round_trip_per_feature_and_global():
    data = np.random.default_rng(0).normal(5, 3, size=(100, 4, 2)).astype(np.float32)
    for per_feature in (True, False):
        scaler = Scaler.fit(data, per_feature=per_feature)
        scaled = scaler.transform(data)
        np.testing.assert_allclose(scaler.inverse(scaled), data, rtol=1e-5, atol=1e-4)
        assert abs(scaled.mean()) < 1e-4
        again = Scaler.from_state(scaler.state())
        np.testing.assert_array_equal(again.transform(data), scaled)
        assert again.per_feature is per_feature
    assert Scaler.fit(data, per_feature=True).mean.shape == (2,)


def test_scaler_floors_constant_features():
    data = np.ones((10, 3), dtype=np.float32)
    scaled = Scaler.fit(data, per_feature=True).transform(data)
    assert np.all(np.isfinite(scaled))


@pytest.mark.parametrize("kind", ["dense", "denoising", "vae"])
def test_trained_model_separates_shifted_and_decorrelated_data(kind):
    detector = fit(correlated(1000, 0), kind, SMALL, TrainConfig(epochs=30), device="cpu")
    scorer = Scorer(detector, device="cpu")
    normal = correlated(400, 1)
    shifted = normal.copy()
    shifted[:, 2] += 3 * normal[:, 2].std()
    decorrelated = normal.copy()
    decorrelated[:, 5] = np.random.default_rng(2).permutation(decorrelated[:, 5])

    normal_scores = scorer.score(normal).scores
    shifted_scores = scorer.score(shifted).scores
    assert np.median(normal_scores) < 1.0
    # Calibrated scale: at a 1% false-alarm rate (score 2) most shifted readings are caught.
    # 200 held-out samples calibrate a 1% tail to within a few x (the calibration property
    # test measures it on realistic sizes).
    assert np.mean(normal_scores > 2) < 0.05
    assert np.mean(shifted_scores > 2) > 0.5
    assert auc(normal_scores, shifted_scores) > 0.95
    # At beta=1 a VAE trades the fine correlation structure for a smooth latent (a broken
    # correlation scores AUC ~0.6); beta=0.1 brings it to ~0.8. Dense models keep it.
    if kind != "vae":
        assert auc(normal_scores, scorer.score(decorrelated).scores) > 0.8


def test_fit_returns_a_calibrated_detector_on_cpu():
    seen: list[tuple[int, float]] = []
    data = correlated(200, 0)
    config = TrainConfig(epochs=4, batch_size=32, validation_fraction=0.25)
    detector = fit(
        data, "dense", SMALL, config, device="cpu", progress=lambda e, v: seen.append((e, v))
    )
    assert [e for e, _ in seen] == [1, 2, 3, 4]
    assert detector.epochs_run == 4
    assert detector.validation_scores.shape == (50,)
    assert detector.val_loss == pytest.approx(min(v for _, v in seen))
    assert detector.error_stats.feature_centre.shape == (8,)
    assert next(detector.model.parameters()).device.type == "cpu"
    assert not detector.model.training


def test_training_errors_join_the_calibration_only_when_they_look_like_held_out_ones():
    rng = np.random.default_rng(0)
    held = rng.lognormal(size=1_500)
    same = rng.lognormal(size=3_500)
    assert not favours_training(same, held)
    learnt = same * np.where(same > np.quantile(same, 0.9), 0.5, 1.0)  # its tail fitted away
    assert favours_training(learnt, held)
    assert favours_training(same, held[:150])  # too few held out to see their top 2%: no


def test_calibration_pools_every_sample_of_a_clean_warm_up_but_not_of_a_dirty_one():
    """Five times the samples steady the calibrated tail; a warm-up with errors far outside
    the bulk calibrates on its held-out samples alone (the anomalies the model learnt keep
    moderate training errors that would read as normal)."""
    clean = correlated(1_500, seed=4)
    config = TrainConfig(seed=0)
    pooled = fit(clean, "dense", SMALL, config, device="cpu")
    assert pooled.error_stats.calibration.count == len(clean)
    assert len(pooled.validation_scores) == len(clean)
    dirty = clean.copy()
    dirty[np.random.default_rng(5).choice(len(dirty), 30, replace=False), 0] += 40.0
    held_out = fit(dirty, "dense", SMALL, config, device="cpu")
    assert held_out.error_stats.calibration.count == round(0.2 * len(dirty))


def test_fit_is_reproducible_with_a_seed():
    data = correlated(120, 0)
    first = fit(data, "denoising", SMALL, TrainConfig(epochs=3), device="cpu")
    second = fit(data, "denoising", SMALL, TrainConfig(epochs=3), device="cpu")
    np.testing.assert_array_equal(first.validation_scores, second.validation_scores)


def test_early_stopping_ends_before_the_epoch_limit():
    noise = np.random.default_rng(0).normal(size=(64, 4)).astype(np.float32)
    config = TrainConfig(epochs=200, patience=2, learning_rate=0.05, batch_size=8)
    detector = fit(noise, "dense", {"hidden_sizes": [64], "latent_size": 2}, config, "cpu")
    assert detector.epochs_run < 200


def test_fit_trains_windows_and_images():
    rng = np.random.default_rng(0)
    windows = rng.normal(size=(40, 12, 3)).astype(np.float32)
    images = rng.uniform(0, 255, size=(40, 1, 10, 10)).astype(np.float32)
    small = {"hidden_sizes": [8], "latent_size": 2}
    config = TrainConfig(epochs=2)
    assert fit(windows, "conv1d", small, config, "cpu").scaler.per_feature
    assert not fit(images, "conv", small, config, "cpu").scaler.per_feature


def test_stop_event_keeps_best_weights_or_refuses_when_nothing_finished():
    stop = threading.Event()
    data = correlated(100, 0)

    def stop_after_two(epoch: int, _loss: float) -> None:
        if epoch == 2:
            stop.set()

    detector = fit(data, "dense", SMALL, TrainConfig(epochs=50), "cpu", stop_after_two, stop)
    assert detector.epochs_run == 2
    with pytest.raises(ModelError):
        fit(data, "dense", SMALL, TrainConfig(), "cpu", stop=stop)


@pytest.mark.parametrize(
    ("data", "kind", "args"),
    [
        (np.zeros((3, 4), np.float32), "dense", {}),
        (np.full((10, 4), np.nan, np.float32), "dense", {}),
        (np.zeros(10, np.float32), "dense", {}),
        (np.zeros((10, 4), np.float32), "dense", {"no_such_arg": 1}),
        (np.zeros((10, 4), np.float32), "conv", {}),
    ],
)
def test_bad_input_raises_model_error(data, kind, args):
    with pytest.raises(ModelError):
        fit(data, kind, args, TrainConfig(epochs=1), "cpu")


def test_diverging_loss_raises_model_error():
    data = correlated(64, 0) * 1e3
    with pytest.raises(ModelError, match="loss"):
        fit(data, "dense", SMALL, TrainConfig(epochs=20, learning_rate=1e30), "cpu")


def test_training_measures_how_well_the_model_refuses_a_synthetic_spike():
    detector = fit(correlated(1000, 0), "dense", SMALL, TrainConfig(epochs=30), device="cpu")
    assert detector.spike_sensitivity is not None and detector.spike_sensitivity > 0.9


def test_contaminated_marks_only_errors_far_outside_the_bulk():
    rng = np.random.default_rng(0)
    raw = rng.chisquare(8, size=5000) / 8  # normal errors: a compact bulk
    assert not contaminated(raw, budget=1000).any()
    raw[:40] *= 200.0  # anomalies the warm-up held
    marked = contaminated(raw, budget=1000)
    assert marked[:40].all() and marked.sum() == 40
    worst = contaminated(raw, budget=10)  # the budget keeps the worst ones
    assert worst.sum() == 10 and raw[worst].min() >= np.sort(raw[:40])[-10]
    assert not contaminated(np.ones(100), budget=10).any()  # identical errors: nothing


def test_trimming_drops_anomalies_in_the_warm_up_and_keeps_scores_sharp():
    """Anomalies inside the training data blunt every later score; with trim_outliers they
    are dropped (and counted) and a clear anomaly scores as after a clean warm-up."""
    clean = correlated(3000, seed=1)
    dirty = clean.copy()
    rows = np.random.default_rng(2).choice(len(dirty), 90, replace=False)
    dirty[rows, 0] += 40.0  # 3% of the warm-up: spikes of ~15 standard deviations
    trim = TrainConfig(seed=0, trim_outliers=True)
    trained = {"clean": fit(clean, "dense", SMALL, trim, device="cpu"),
               "dirty": fit(dirty, "dense", SMALL, TrainConfig(seed=0), device="cpu"),
               "trimmed": fit(dirty, "dense", SMALL, trim, device="cpu")}
    assert trained["clean"].trimmed <= 3  # a trained model's clean errors: (almost) nothing
    assert trained["dirty"].trimmed == 0
    assert 70 <= trained["trimmed"].trimmed <= 120  # most of the 90, little else
    probe = correlated(200, seed=3)
    probe[:, 0] += 40.0
    median = {name: float(np.median(Scorer(d, device="cpu").score(probe).scores))
              for name, d in trained.items()}
    assert median["dirty"] < 0.5 * median["clean"]  # what the trimming is for
    # Trimmed, the anomaly is flagged again at the default threshold (score 4). Not "as
    # high as after a clean warm-up": the clean model calibrates on all its samples, whose
    # longer exponential tail scores a 15-sigma reading in the hundreds, while a warm-up
    # with errors far outside the bulk calibrates on its held-out samples only.
    assert median["trimmed"] > max(4.0, 4 * median["dirty"])


def test_trimming_reads_error_sizes_for_windows_too():
    """A window's score is a tail probability of the larger of two statistics; trimming
    judges the size of its mean error, as for vectors."""
    rng = np.random.default_rng(4)
    t = np.arange(3000)[:, None]
    series = np.sin(t * 2 * np.pi / [40, 70]) + 0.05 * rng.normal(size=(3000, 2))
    windows = np.lib.stride_tricks.sliding_window_view(series, 8, axis=0).transpose(0, 2, 1)
    dirty = np.array(windows, dtype=np.float32)
    rows = rng.choice(len(dirty), 60, replace=False)
    dirty[rows, 3, 0] += 5.0  # one reading of 60 windows, ~7 standard deviations
    trimmed = fit(dirty, "dense", SMALL, TrainConfig(seed=0, trim_outliers=True),
                  device="cpu").trimmed
    assert 40 <= trimmed <= 90, trimmed


def test_trimming_is_off_by_default():
    dirty = correlated(600, seed=1)
    dirty[:20, 0] += 40.0
    assert fit(dirty, "dense", SMALL, TrainConfig(epochs=2), device="cpu").trimmed == 0


def test_plateau_keeps_every_new_low_but_stops_when_the_gains_are_tiny():
    plateau = Plateau(patience=3, min_improvement=0.01)
    assert plateau.update(1.0) == (True, False)
    assert plateau.update(0.5) == (True, False)  # a real improvement: the clock restarts
    assert plateau.update(0.499) == (True, False)  # a new low, but under 1%: stale 1
    assert plateau.update(0.498) == (True, False)  # stale 2
    assert plateau.update(0.6) == (False, True)  # stale 3: stop
    assert plateau.best == 0.498


def test_plateau_restarts_its_clock_on_a_real_improvement():
    plateau = Plateau(patience=2, min_improvement=0.01)
    for loss, stop in ((1.0, False), (1.0, False), (0.9, False), (0.95, False), (0.95, True)):
        assert plateau.update(loss)[1] is stop


def test_training_stops_on_a_plateau_and_restores_the_best_weights():
    torch.manual_seed(0)
    noise = torch.from_numpy(np.random.default_rng(0).normal(size=(96, 4)).astype(np.float32))
    model = build_model("dense", (4,), hidden_sizes=(64,), latent_size=2)
    config = TrainConfig(epochs=200, patience=3, learning_rate=0.05, batch_size=8)
    losses: list[float] = []
    _, best_val, epochs = _train(model, noise[:64], noise[64:], config,
                                 lambda _epoch, loss: losses.append(loss), None)
    assert epochs == len(losses) < 200  # stopped early
    assert losses[-1] > min(losses)  # ... after rounds worse than the best
    model.eval()
    restored = float(model.score(noise[64:])[0].mean())
    assert best_val == min(losses)
    assert restored == pytest.approx(min(losses), rel=1e-5)


def test_recalibrating_on_ungated_normal_data_restores_the_false_alarm_rate():
    # A retrain learns from gated readings: the top 10% of normal cut away here (the
    # champion's own score is a stand-in for the cut). Its validation split has no tail.
    config = TrainConfig(epochs=6, batch_size=64)
    first = fit(correlated(4_000, 0), "dense", SMALL, config, device="cpu")
    pool = correlated(12_000, 1)
    kept = Scorer(first, device="cpu").score(pool).scores
    gated = pool[kept < np.quantile(kept, 0.9)]
    fresh = correlated(20_000, 2)
    challenger = fit(gated, "dense", SMALL, config, device="cpu")
    before = float(np.mean(Scorer(challenger, device="cpu").score(fresh).scores > 2))
    recalibrated = recalibrate(Scorer(challenger, device="cpu"), correlated(5_000, 3),
                               config.error_method)
    after = float(np.mean(Scorer(recalibrated, device="cpu").score(fresh).scores > 2))
    assert before > 0.02, before  # s = 2 should be 1% of normal: measured 4.1%
    assert 0.005 <= after <= 0.02, after  # measured 1.1%
    assert recalibrated.model is challenger.model  # the weights are the challenger's
