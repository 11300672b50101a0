"""alerts.explain and build_event: what an operator reads for vectors, windows and images."""

from __future__ import annotations

import json
from dataclasses import dataclass

import numpy as np
import pytest

from streamae.alerts import IMAGE_PATCH, build_event, explain, spread_changes
from streamae.intake import Sample
from streamae.messages import ANOMALY_SCHEMA, encode_json
from streamae.scoring import ErrorStats
from streamae.windows import Centring, Window


@dataclass
class Record:
    topic: str = "in"
    partition: int = 2
    offset: int = 41
    key: bytes | None = b"pump-7"
    timestamp: int = 1_000


def sample(values: np.ndarray, names=None, window=None) -> Sample:
    return Sample(Record(), values, "pump-7", 1_718_000_000_000, names, window)


def test_vector_names_the_worst_features_with_direction():
    values = np.array([1.0, 5.0, -3.0, 0.0], np.float32)
    recon = np.array([1.0, 2.0, 0.0, 0.1], np.float32)
    z = np.array([0.1, 9.0, 4.0, 0.2], np.float32)
    parts = explain(sample(values, ("a", "b", "c", "d")), values, recon, z, 2, True)
    assert set(parts) == {"features"}  # no heat map for vectors even when enabled
    first, second = parts["features"]
    assert first == {"feature": "b", "actual": 5.0, "reconstructed": 2.0, "direction": "high",
                     "z": 9.0}
    assert (second["feature"], second["direction"]) == ("c", "low")


def test_vector_without_names_uses_indices():
    values = np.zeros(3, np.float32)
    parts = explain(sample(values), values, values, np.array([0.0, 0.0, 5.0]), 1, False)
    assert parts["features"][0]["feature"] == 2


def test_window_averages_z_over_time_and_reports_the_latest_reading():
    length, dims = 5, 3
    values = np.arange(length * dims, dtype=np.float32).reshape(length, dims)
    recon = values - 1.0
    z = np.zeros((length, dims), np.float32)
    z[:, 2] = 1.0
    z[-1, 0] = 4.0  # one hot step (mean 0.8) loses to a steady deviation (mean 1.0)
    window = Window("pump-7", 1_718_000_000_000, values)
    parts = explain(sample(values, ("x", "y", "w"), window), values, recon, z, 2, True)
    assert parts["window"] == {"length": length, "end_ts": 1_718_000_000_000}
    top, runner_up = parts["features"]
    assert (top["feature"], top["z"]) == ("w", 1.0)
    assert (top["actual"], top["reconstructed"]) == (14.0, 13.0)  # last row
    assert runner_up["feature"] == "x" and np.isclose(runner_up["z"], 0.8)
    assert "regions" not in parts and "heatmap" not in parts


def test_centred_window_features_are_reported_in_the_units_of_the_reading():
    raw = np.array([[1.0, 50.0], [2.0, 52.0], [3.0, 54.0]], np.float32)
    centred = Centring.apply(raw, np.array([1]))  # temp: -2, 0, 2
    recon = centred.copy()
    recon[-1, 1] = 1.0  # the model expected the temperature to rise by less
    z = np.zeros_like(raw)
    z[:, 1] = 6.0
    parts = explain(sample(centred, ("flow", "temp"), Window("k", 0, raw)), centred, recon, z,
                    1, False)
    (top,) = parts["features"]
    assert (top["feature"], top["actual"], top["reconstructed"]) == ("temp", 54.0, 53.0)
    assert top["direction"] == "high"


def hot_image(channels: int = 1, size: int = 16, row: int = 8, col: int = 4) -> np.ndarray:
    z = np.zeros((channels, size, size), np.float32)
    z[:, row:row + IMAGE_PATCH, col:col + IMAGE_PATCH] = 10.0
    z[:, 0, size - 1] = 3.0  # a lone warm pixel elsewhere
    return z


def test_image_names_the_worst_regions_and_carries_a_heatmap():
    values = np.zeros((1, 16, 16), np.float32)
    parts = explain(sample(values), values, values, hot_image(), 3, True)
    regions = parts["regions"]
    assert len(regions) == 3 and "features" not in parts
    assert regions[0] == {"row": 8, "col": 4, "height": IMAGE_PATCH, "width": IMAGE_PATCH,
                          "z": 10.0}
    for a in regions:  # reported regions never overlap
        for b in regions:
            if a is not b:
                assert abs(a["row"] - b["row"]) >= 4 or abs(a["col"] - b["col"]) >= 4
    assert all(r["z"] <= regions[0]["z"] for r in regions)
    heat = np.asarray(parts["heatmap"])
    assert heat.shape == (8, 8)  # 16x16 pooled 2x2
    assert np.unravel_index(heat.argmax(), heat.shape) == (4, 2)


def test_rgb_image_regions_pool_channels_and_heatmap_can_be_off():
    values = np.zeros((3, 8, 8), np.float32)
    z = hot_image(3, 8, row=2, col=3)
    parts = explain(sample(values), values, values, z, 1, False)
    assert set(parts) == {"regions"}
    assert (parts["regions"][0]["row"], parts["regions"][0]["col"]) == (2, 3)


def test_small_image_heatmap_is_its_own_size():
    values = np.zeros((1, 4, 6), np.float32)
    z = np.ones((1, 4, 6), np.float32)
    parts = explain(sample(values), values, values, z, 1, True)
    assert np.asarray(parts["heatmap"]).shape == (4, 6)


def test_build_event_is_valid_json_with_the_explanation():
    values = np.zeros((1, 8, 8), np.float32)
    parts = explain(sample(values), values, values, hot_image(size=8, row=0, col=0), 2, True)
    event = build_event(sample(values), score=12.0, threshold=4.0, method="quantile",
                        kind="conv", version=3, detected_ms=1_718_000_000_500,
                        explanation=parts)
    decoded = json.loads(encode_json(event))
    assert decoded["schema"] == ANOMALY_SCHEMA
    assert (decoded["topic"], decoded["partition"], decoded["offset"]) == ("in", 2, 41)
    assert decoded["key"] == "pump-7" and decoded["p_value"] == pytest.approx(1e-12)
    assert decoded["model_kind"] == "conv" and decoded["model_version"] == 3
    assert decoded["regions"][0]["row"] == 0 and len(decoded["heatmap"]) == 8


def test_a_column_constant_in_training_is_named_as_an_unseen_value():
    from streamae.scaling import Scaler

    train = np.zeros((200, 3), np.float32)
    train[:, 0] = np.random.default_rng(0).normal(size=200)  # cmd stays 0 in training
    scaler = Scaler.fit(train, per_feature=True)
    reading = np.array([0.3, 1.0, 0.0], np.float32)  # cmd1 switched on
    assert scaler.transform(reading[None])[0, 1] == 0.0  # contributes nothing to the error
    unseen = scaler.unseen(reading[None])[0]
    assert unseen.tolist() == [False, True, False]
    parts = explain(sample(reading, ("v", "cmd1", "cmd2")), reading, reading, np.zeros(3),
                    1, True, unseen=unseen)
    assert parts["unseen"] == [{"feature": "cmd1", "actual": 1.0, "note": "unseen value"}]
    quiet = explain(sample(reading), reading, reading, np.zeros(3), 1, True,
                    unseen=np.zeros(3, bool))
    assert "unseen" not in quiet


def test_a_profiled_window_is_reported_in_the_units_of_the_reading():
    raw = np.array([[1000.0, 50.0], [1010.0, 52.0], [1030.0, 54.0]], np.float32)
    window = Window("k", 0, raw, loc=np.array([1000.0, 50.0], np.float32),
                    scale=np.array([10.0, 2.0], np.float32))
    model_units = Centring.apply(window.normalised(), np.array([1]))  # temp: -1, 0, 1
    recon = model_units.copy()
    recon[-1, 0] = 2.0  # the model expected a flow of 1020, not 1030
    z = np.zeros_like(raw)
    z[:, 0] = 6.0
    parts = explain(sample(model_units, ("flow", "temp"), window), model_units, recon, z,
                    2, False)
    flow, temp = parts["features"]
    assert (flow["feature"], flow["actual"], flow["reconstructed"]) == ("flow", 1030.0, 1020.0)
    assert (temp["feature"], temp["actual"], temp["reconstructed"]) == ("temp", 54.0, 54.0)


def cycling_windows(rng: np.random.Generator, n: int) -> np.ndarray:
    """Scaled windows (n, 16, 2): two features on a cycle at a random phase, plus noise."""
    phase = rng.uniform(0, 2 * np.pi, size=(n, 1, 1))
    t = np.arange(16)[None, :, None]
    return np.sin(t * 2 * np.pi / 20 + phase) + 0.3 * rng.normal(size=(n, 16, 2))


@pytest.fixture(scope="module")
def spread_stats() -> ErrorStats:
    rng = np.random.default_rng(8)
    errors = rng.chisquare(1, size=(4000, 16, 2))
    return ErrorStats.from_errors(errors.mean(axis=(1, 2)), errors, "robust_z",
                                  cycling_windows(rng, 4000))


def test_a_window_alarmed_by_its_spread_names_the_feature_that_grew(spread_stats):
    """Such a window is the normal shape scaled and rebuilt well: the largest errors would
    name the wrong feature."""
    rng = np.random.default_rng(9)
    names = ("pump", "vibration")
    grown = cycling_windows(rng, 1)[0]
    grown[:, 1] *= 4.0
    (entry,) = spread_changes(spread_stats, grown, names, threshold=4.0)
    assert (entry["feature"], entry["change"]) == ("vibration", "grown")
    assert entry["spread_ratio"] > 2.5
    assert spread_changes(spread_stats, grown, names, threshold=1e6) == []  # not the cause
    normal = cycling_windows(rng, 1)[0]
    assert spread_changes(spread_stats, normal, names, threshold=4.0) == []
    assert spread_changes(spread_stats, None, names, threshold=4.0) == []  # not a window


def test_a_window_alarmed_because_a_moving_feature_went_flat_names_it(spread_stats):
    """A stuck sensor on a cycle: rebuilt as a cycle of zero amplitude, small errors."""
    rng = np.random.default_rng(10)
    stuck = cycling_windows(rng, 1)[0]
    stuck[:, 0] = 0.2
    (entry,) = spread_changes(spread_stats, stuck, ("pump", "vibration"), threshold=4.0)
    assert (entry["feature"], entry["change"]) == ("pump", "flat")
    assert entry["spread_ratio"] < 0.05


def test_build_event_carries_the_spread_part():
    values = np.zeros((16, 2), np.float32)
    spread = [{"feature": "vibration", "change": "grown", "spread_ratio": 3.2}]
    event = build_event(sample(values, ("pump", "vibration")), score=6.0, threshold=4.0,
                        method="false_alarm_rate", kind="dense", version=2, detected_ms=5,
                        explanation={"features": [], "spread": spread})
    assert json.loads(encode_json(event))["spread"] == spread
