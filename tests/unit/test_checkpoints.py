"""Checkpoints: round trips, atomicity, pruning, versions and corruption."""

from __future__ import annotations

import json

import numpy as np
import pytest
from safetensors.torch import load as load_tensors
from safetensors.torch import save as save_tensors

from streamae.checkpoints import (
    checkpoint_from_bytes,
    checkpoint_to_bytes,
    load_latest,
    load_version,
    save_checkpoint,
)
from streamae.exceptions import CheckpointError
from streamae.scoring import Detector, Scorer
from streamae.training import TrainConfig, fit

THRESHOLD = {"method": "spot", "level": 3.5, "history": [1.0, 2.0]}


@pytest.fixture(scope="module")
def detectors():
    """Small trained detectors of several kinds, with a batch to score each."""
    rng = np.random.default_rng(0)
    made: dict[str, tuple[Detector, np.ndarray]] = {}
    for kind, shape, args in [
        ("dense", (5,), {"hidden_sizes": [8], "latent_size": 2}),
        ("conv", (1, 7, 9), {"hidden_sizes": [4], "latent_size": 2, "variational": True}),
        ("conv1d", (10, 2), {"hidden_sizes": [4, 4], "latent_size": 2}),
    ]:
        data = rng.normal(2.0, 3.0, size=(60, *shape)).astype(np.float32)
        made[kind] = (fit(data, kind, args, TrainConfig(epochs=2), device="cpu"), data[:8])
    return made


def save(directory, detector, keep=5) -> int:
    return save_checkpoint(
        directory, detector, threshold_state=THRESHOLD, metadata={"topic": "in"}, keep=keep
    )


@pytest.mark.parametrize("kind", ["dense", "conv", "conv1d"])
def test_round_trip_scores_identically(tmp_path, detectors, kind):
    detector, batch = detectors[kind]
    version = save(tmp_path, detector)
    loaded = load_latest(tmp_path)
    assert loaded is not None and loaded.version == version == 1
    assert loaded.threshold_state == THRESHOLD and loaded.metadata == {"topic": "in"}
    assert loaded.detector.model.constructor_args() == detector.model.constructor_args()
    before = Scorer(detector, "cpu").score(batch)
    after = Scorer(loaded.detector, "cpu").score(batch)
    np.testing.assert_array_equal(before.scores, after.scores)
    np.testing.assert_array_equal(before.feature_z, after.feature_z)
    np.testing.assert_array_equal(loaded.detector.validation_scores, detector.validation_scores)
    assert (loaded.detector.error_stats.parts is not None) == (kind == "conv1d")  # windows
    for name in ("spread_typical", "spread_low"):  # windows: how the spread is judged
        saved, back = (getattr(d.error_stats, name) for d in (detector, loaded.detector))
        assert (saved is None) == (back is None) == (kind != "conv1d")
        if saved is not None:
            np.testing.assert_array_equal(back, saved)


def test_bytes_round_trip(detectors):
    detector, batch = detectors["conv1d"]
    blob = checkpoint_to_bytes(detector, THRESHOLD, {"a": np.float32(1.5)}, version=7)
    loaded = checkpoint_from_bytes(blob)
    assert loaded.version == 7 and loaded.metadata == {"a": 1.5}
    np.testing.assert_array_equal(
        Scorer(detector, "cpu").score(batch).raw_scores,
        Scorer(loaded.detector, "cpu").score(batch).raw_scores,
    )


def test_empty_directory_has_no_checkpoint(tmp_path):
    assert load_latest(tmp_path) is None
    assert load_latest(tmp_path / "missing") is None
    with pytest.raises(CheckpointError):
        load_version(tmp_path, 1)


def test_incomplete_writes_are_ignored(tmp_path, detectors):
    detector, _ = detectors["dense"]
    save(tmp_path, detector)
    (tmp_path / "model-000002.json.tmp-123").write_text("{half")
    (tmp_path / "model-000003.safetensors").write_bytes(b"no json beside me")
    loaded = load_latest(tmp_path)
    assert loaded is not None and loaded.version == 1
    assert save(tmp_path, detector) == 4  # versions only grow, past the orphan too


def test_keep_prunes_old_versions_and_versions_only_grow(tmp_path, detectors):
    detector, _ = detectors["dense"]
    versions = [save(tmp_path, detector, keep=2) for _ in range(4)]
    assert versions == [1, 2, 3, 4]
    names = sorted(p.name for p in tmp_path.iterdir())
    assert names == [
        "model-000003.json",
        "model-000003.safetensors",
        "model-000004.json",
        "model-000004.safetensors",
    ]
    assert load_latest(tmp_path).version == 4
    assert load_version(tmp_path, 3).version == 3
    with pytest.raises(CheckpointError):
        load_version(tmp_path, 1)


def test_json_describes_the_checkpoint(tmp_path, detectors):
    detector, _ = detectors["conv"]
    save(tmp_path, detector)
    header = json.loads((tmp_path / "model-000001.json").read_text())
    assert header["kind"] == "conv" and header["input_shape"] == [1, 7, 9]
    assert header["constructor_args"]["variational"] is True
    assert header["threshold_state"] == THRESHOLD and "sha256" in header


def test_corrupt_files_raise_checkpoint_error(tmp_path, detectors):
    detector, _ = detectors["dense"]
    save(tmp_path, detector)
    weights = tmp_path / "model-000001.safetensors"
    blob = weights.read_bytes()
    weights.write_bytes(blob[:-10])
    with pytest.raises(CheckpointError, match="do not match"):
        load_latest(tmp_path)
    weights.write_bytes(blob)
    (tmp_path / "model-000001.json").write_text("{not json")
    with pytest.raises(CheckpointError):
        load_latest(tmp_path)


@pytest.mark.parametrize("blob", [b"", b"\x00" * 16, b"\x10\x00\x00\x00\x00\x00\x00\x00{}"])
def test_garbage_bytes_raise_checkpoint_error(blob):
    with pytest.raises(CheckpointError):
        checkpoint_from_bytes(blob)


def test_mismatched_weights_raise_checkpoint_error(detectors):
    detector, _ = detectors["dense"]
    other, _ = detectors["conv1d"]
    good = checkpoint_to_bytes(detector, {}, {}, 1)
    wrong = checkpoint_to_bytes(other, {}, {}, 1)
    header_len = int.from_bytes(good[:8], "little")
    # the dense header glued onto the conv1d tensors: same file format, wrong model
    wrong_len = int.from_bytes(wrong[:8], "little")
    meta = json.loads(good[8 : 8 + header_len])["__metadata__"]
    tensors_header = json.loads(wrong[8 : 8 + wrong_len])
    tensors_header["__metadata__"] = meta
    text = json.dumps(tensors_header).encode()
    text += b" " * ((8 - len(text) % 8) % 8)
    franken = len(text).to_bytes(8, "little") + text + wrong[8 + wrong_len :]
    with pytest.raises(CheckpointError, match="valid model"):
        checkpoint_from_bytes(franken)


def test_load_live_falls_back_to_the_newest_intact_version(tmp_path, detectors):
    import torch

    from streamae.live import load_live
    from streamae.metrics import Metrics

    detector, _ = detectors["dense"]
    def save_static(directory, det):
        save_checkpoint(directory, det, threshold_state={"method": "static", "value": 3.0},
                        metadata={})

    save_static(tmp_path, detector)  # 1: intact
    save(tmp_path, detector)  # 2: its weights will not match its JSON
    blob = (tmp_path / "model-000002.safetensors").read_bytes()
    (tmp_path / "model-000002.safetensors").write_bytes(blob[:-10])
    state = {k: v.clone() for k, v in detector.model.state_dict().items()}
    with torch.no_grad():
        next(detector.model.parameters()).view(-1)[0] = float("nan")
    save_static(tmp_path, detector)  # 3: a NaN weight
    detector.model.load_state_dict(state)
    metrics = Metrics()
    live = load_live(tmp_path, "cpu", 16, metrics)
    assert live is not None and live.version == 1
    sample = metrics.registry.get_sample_value
    assert sample("streamae_models_rejected_total", {"reason": "non_finite"}) == 1
    assert sample("streamae_models_rejected_total", {"reason": "corrupt"}) == 1
    (tmp_path / "model-000002.safetensors").write_bytes(blob)  # 2 intact, its state is not
    assert load_live(tmp_path, "cpu", 16, metrics).version == 1
    assert sample("streamae_models_rejected_total", {"reason": "bad_threshold"}) == 1
    (tmp_path / "model-000002.safetensors").write_bytes(blob[:-10])
    with pytest.raises(CheckpointError, match="weights do not match"):
        load_version(tmp_path, 2)


def test_load_live_is_none_when_no_version_is_intact(tmp_path, detectors):
    from streamae.live import load_live

    save(tmp_path, detectors["dense"][0])
    (tmp_path / "model-000001.json").write_text("{not json")
    assert load_live(tmp_path, "cpu", 16) is None


def test_a_conv_checkpoint_from_before_the_downsample_option_loads_as_pooling():
    data = np.random.default_rng(1).normal(size=(40, 1, 8, 8)).astype(np.float32)
    detector = fit(data, "conv", {"hidden_sizes": [4], "latent_size": 2, "downsample": "pool"},
                   TrainConfig(epochs=1), device="cpu")
    blob = checkpoint_to_bytes(detector, THRESHOLD, {}, version=3)
    header_size = int.from_bytes(blob[:8], "little")
    metadata = json.loads(blob[8 : 8 + header_size])["__metadata__"]
    header = json.loads(metadata["streamae"])
    del header["constructor_args"]["downsample"]  # as written before the option existed
    old = save_tensors(load_tensors(blob), metadata={"streamae": json.dumps(header)})
    loaded = checkpoint_from_bytes(old)
    assert loaded.detector.model.constructor_args()["downsample"] == "pool"
    np.testing.assert_array_equal(Scorer(detector, "cpu").score(data[:5]).scores,
                                  Scorer(loaded.detector, "cpu").score(data[:5]).scores)
