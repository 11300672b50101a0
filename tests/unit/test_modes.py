"""Readings judged against their operating mode (streamae.modes): a value that contradicts
its command is flagged, a sequence of commands training never showed is not."""

from __future__ import annotations

import numpy as np
import pytest
from numpy.lib.stride_tricks import sliding_window_view

from streamae.alerts import mode_deviations
from streamae.checkpoints import checkpoint_from_bytes, checkpoint_to_bytes
from streamae.exceptions import ModelError
from streamae.incidents import feature_names
from streamae.live import train_config
from streamae.modes import ModeLevels
from streamae.scaling import Scaler
from streamae.scoring import Scorer
from streamae.settings import Settings
from streamae.training import TrainConfig, fit

LEVELS = np.array([0.0, 2.0, -1.5])  # the value's level under each of three commands
LENGTH = 8


def telemetry(commands: np.ndarray, seed: int = 0) -> np.ndarray:
    """Rows (N, 4): a value at its command's level (noise 0.1), then the one-hot command."""
    rng = np.random.default_rng(seed)
    value = LEVELS[commands] + 0.1 * rng.normal(size=len(commands))
    return np.concatenate([value[:, None], np.eye(3)[commands]], axis=1).astype(np.float32)


def windows(rows: np.ndarray) -> np.ndarray:
    return sliding_window_view(rows, (LENGTH, rows.shape[1]))[:, 0].copy()


def training_commands() -> np.ndarray:
    """Segments of 50 rows cycling 0 -> 1 -> 2 -> 0: the pairs 1 -> 0, 2 -> 1, 0 -> 2
    never occur."""
    return np.tile(np.repeat([0, 1, 2], 50), 8)


@pytest.fixture(scope="module")
def detector():
    train = windows(telemetry(training_commands()))
    return fit(train, "dense", {"hidden_sizes": [32], "latent_size": 4},
               TrainConfig(epochs=15), device="cpu")


def test_two_valued_columns_become_modes_and_values_deviations_from_their_level():
    train = windows(telemetry(training_commands()))
    scaler = Scaler.fit(train, per_feature=True, centre="auto")
    modes = scaler.modes
    assert modes is not None
    assert modes.mode_columns.tolist() == [1, 2, 3] and modes.measured.tolist() == [0]
    assert len(modes.codes) == 3  # every command seen >= MIN_MODE_ROWS times
    scaled = scaler.transform(train)
    assert np.all(scaled[..., 1:] == 0.0)  # the commands are context, fed as 0
    # Each value is its deviation from its command's level: the levels are gone.
    assert abs(float(scaled[..., 0].mean())) < 0.05
    assert float(scaled[..., 0].std()) < 3 * float(np.median(modes.typical))
    restored = scaler.inverse(scaled, like=train)
    np.testing.assert_allclose(restored, train, atol=1e-4)


def test_no_two_valued_column_no_modes_and_a_mode_never_seen_keeps_its_values():
    rng = np.random.default_rng(1)
    assert Scaler.fit(rng.normal(size=(100, LENGTH, 3)), per_feature=True).modes is None
    scaler = Scaler.fit(windows(telemetry(training_commands())), per_feature=True)
    unknown = telemetry(np.zeros(LENGTH, dtype=int))
    unknown[:, 1:] = [1.0, 1.0, 0.0]  # two commands at once: a mode never seen
    scaled = scaler.transform(unknown[None])[0]
    assert np.all(scaled[:, 1:] != 0.0)
    assert scaler.modes.deviations(scaled[None])[0] == 0.0  # the model judges it alone


def test_a_command_used_more_late_in_training_is_never_centred():
    """A command used more often in the second half looks like a drift to auto-centring;
    centred it became a many-valued column and lost its mode."""
    commands = np.concatenate([np.repeat([0, 1] * 10, 50), np.repeat([2, 1] * 10, 50)])
    scaler = Scaler.fit(windows(telemetry(commands)), per_feature=True, centre="auto")
    assert not scaler.centred[1:].any()
    assert scaler.modes is not None and scaler.modes.mode_columns.tolist() == [1, 2, 3]


def test_a_value_off_its_commands_level_is_flagged_a_new_pair_of_commands_is_not(detector):
    stats = detector.error_stats
    assert stats.modes is not None and stats.mode_tail is not None
    assert np.all(stats._weight[..., 1:] == 0.0)  # the commands' errors leave the score
    scorer = Scorer(detector, "cpu")
    # 1 -> 0 never follows in training; every value at its command's level.
    new_pair = telemetry(np.repeat([1, 0], LENGTH), seed=5)
    # Under command 2 the value sits at command 0's level: 15 noise units off its own.
    off_level = telemetry(np.full(2 * LENGTH, 2), seed=6)
    off_level[LENGTH // 2:, 0] += 1.5
    fresh = windows(telemetry(training_commands(), seed=7))
    normal = scorer.score(fresh).scores
    threshold = float(np.quantile(normal, 0.999))
    assert float(scorer.score(windows(new_pair)).scores.max()) < max(threshold, 4.0)
    assert float(scorer.score(windows(off_level)).scores.max()) > max(threshold, 4.0) + 2.0


def test_mode_levels_survive_a_checkpoint_and_malformed_ones_are_refused(detector):
    batch = windows(telemetry(np.repeat([1, 0, 2], LENGTH), seed=3))
    loaded = checkpoint_from_bytes(checkpoint_to_bytes(detector, {}, {}, 1)).detector
    np.testing.assert_array_equal(Scorer(detector, "cpu").score(batch).scores,
                                  Scorer(loaded, "cpu").score(batch).scores)
    state = detector.scaler.modes.state()
    assert ModeLevels.from_state(state).codes.tolist() == detector.scaler.modes.codes.tolist()
    for bad in ({**state, "median": state["median"][:1]},
                {**state, "spread": -state["spread"]},
                {**state, "patterns": state["patterns"] * 2}):
        with pytest.raises(ModelError):
            ModeLevels.from_state(bad)


def test_an_event_names_the_value_that_left_its_modes_level(detector):
    """The model rebuilds a wrong level well, so its largest errors may name anything; the
    event's ``mode`` part names the value, and an incident ranks it first."""
    names = ("value", "cmd0", "cmd1", "cmd2")
    rows = telemetry(np.full(LENGTH, 2), seed=8)
    rows[-6:, 0] += 1.5  # held for most of the window
    scaled = detector.scaler.transform(rows[None])[0]
    (entry,) = mode_deviations(detector.error_stats, scaled, names, threshold=4.0)
    assert entry["feature"] == "value" and entry["deviation"] > 10.0
    assert mode_deviations(detector.error_stats, scaled, names, threshold=1e6) == []
    normal = detector.scaler.transform(telemetry(np.full(LENGTH, 2), seed=9)[None])[0]
    assert mode_deviations(detector.error_stats, normal, names, threshold=4.0) == []
    ranked = feature_names({"features": [{"feature": "cmd1", "z": 9.0}], "mode": [entry]})
    assert ranked[0] == ("value", 9.0)


def test_operating_modes_can_be_turned_off_from_the_environment(monkeypatch):
    """A two-valued column that is a measurement (an alarm bit) must be judgeable as one."""
    monkeypatch.setenv("STREAMAE_MODEL__OPERATING_MODES", "false")
    config = train_config(Settings().model)
    assert config.operating_modes is False
    train = windows(telemetry(training_commands()))
    scaler = Scaler.fit(train, per_feature=True, centre="auto", modes=config.operating_modes)
    assert scaler.modes is None
    np.testing.assert_array_equal(scaler.transform(train)[..., 1:].std(axis=(0, 1)) > 0,
                                  [True, True, True])  # the commands reach the model


def test_a_command_off_both_of_its_values_is_no_known_mode(detector):
    """Command 7 where training had 0 and 1: fed as it is, so the model sees it, instead of
    passing for the mode it rounds to."""
    rows = telemetry(np.full(LENGTH, 1), seed=10)
    rows[-1, 2] = 7.0
    scaled = detector.scaler.transform(rows[None])[0]
    assert np.all(scaled[:-1, 1:] == 0.0) and scaled[-1, 2] != 0.0
    assert float(Scorer(detector, "cpu").score(rows[None]).scores[0]) > 4.0


def test_a_command_sent_now_and_then_is_read_as_the_mode_in_force():
    """Command columns that are 1 on a few rows (a command sent, too rare to be a mode of
    its own): such a row is one flag away from exactly one known mode and is judged as
    that mode, so a pulse is not news, while a value off the mode's level still is."""
    rng = np.random.default_rng(3)
    n = 3000
    value = np.sin(np.arange(n) * 2 * np.pi / 60) + 0.1 * rng.normal(size=n)
    pulses = (rng.random((n, 4)) < 0.002).astype(float)
    rows = np.column_stack([value, pulses]).astype(np.float32)
    scaler = Scaler.fit(windows(rows), per_feature=True)
    modes = scaler.modes
    assert modes is not None and len(modes.codes) == 1  # only "no command sent" is a mode
    probe = rows[100:100 + LENGTH].copy()
    probe[:, 1:] = 0.0
    probe[3, 2] = 1.0  # a command sent
    scaled = scaler.transform(probe[None])[0]
    assert np.all(scaled[:, 1:] == 0.0)  # read as the mode in force: the pulse is context
    np.testing.assert_allclose(scaler.inverse(scaled[None], like=probe[None])[0], probe,
                               atol=1e-4)
    probe[3, 1] = 1.0  # two commands at once: two flags away from the only mode
    assert np.any(scaler.transform(probe[None])[0][:, 1:] != 0.0)
    detector = fit(windows(rows), "dense", {"hidden_sizes": [32], "latent_size": 4},
                   TrainConfig(epochs=15), device="cpu")
    sent = np.column_stack([value[2000:2000 + LENGTH], np.zeros((LENGTH, 4))])
    sent[4, 3] = 1.0
    off = sent.copy()
    off[:, 0] += 1.5  # 15 noise units off the value's usual course
    scores = Scorer(detector, "cpu").score(np.stack([sent, off]).astype(np.float32)).scores
    assert scores[0] < 4.0 < scores[1]
