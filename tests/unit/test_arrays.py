"""The numpy networks give the torch models' outputs, so a CPU scorer needs no torch."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch

from streamae.checkpoints import checkpoint_from_bytes, checkpoint_to_bytes
from streamae.models import array_net, build_model, to_torch
from streamae.models.arrays import ArrayNet, from_torch
from streamae.scoring import Scorer
from streamae.training import TrainConfig, fit

CASES = [
    ("dense", (8,), {}),
    ("denoising", (16, 8), {}),
    ("vae", (8,), {}),
    ("conv1d", (16, 8), {}),
    ("conv1d", (13, 3), {"variational": True}),
    ("conv1d", (16, 8), {"downsample": "stride"}),
    ("conv", (1, 28, 28), {}),
    ("conv", (3, 10, 7), {"downsample": "pool", "variational": True}),
]


def trained_like(model: torch.nn.Module, seed: int) -> torch.nn.Module:
    """Weights far from their initialisation, so no symmetry hides a wrong layout."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.add_(0.3 * torch.randn(parameter.shape, generator=generator))
    return model.eval()


def close(have: np.ndarray, want: np.ndarray, name: str) -> None:
    """Equal up to float32 rounding, which sums in another order grow with the values."""
    np.testing.assert_allclose(have, want, rtol=1e-4, atol=1e-5 * (1 + np.abs(want).max()),
                               err_msg=name)


@pytest.mark.parametrize(("kind", "shape", "options"), CASES)
def test_every_kind_gives_the_torch_models_outputs(kind, shape, options):
    model = trained_like(build_model(kind, shape, **options), seed=len(shape))
    network = from_torch(model)
    x = np.random.default_rng(0).normal(size=(37, *shape)).astype(np.float32)
    with torch.inference_mode():
        expected = model.analyse(torch.from_numpy(x))
        decoded = model.decode(expected.latent).numpy()
    got = network.analyse(x)
    for name, want, have in zip(got._fields, expected, got, strict=True):
        close(have, want.numpy(), name)
    close(network.encode(x), expected.latent.numpy(), "encode")
    close(network.decode(got.latent), decoded, "decode")
    assert network.description == model.description


def test_the_round_trip_to_torch_keeps_every_weight():
    model = trained_like(build_model("conv1d", (16, 8)), seed=3)
    back = to_torch(from_torch(model))
    for name, tensor in model.state_dict().items():
        assert torch.equal(back.state_dict()[name], tensor), name


def test_weights_that_do_not_fit_the_network_are_refused():
    weights = from_torch(build_model("dense", (8,))).state_dict()
    args = from_torch(build_model("dense", (8,))).constructor_args()
    with pytest.raises(ValueError, match="do not make a dense network"):
        array_net("dense", (9,), args, weights)  # an input width the weights do not take
    missing = {k: v for k, v in weights.items() if not k.startswith("decoder.4")}
    with pytest.raises(ValueError, match="do not make"):
        array_net("dense", (8,), args, missing)


@pytest.fixture(scope="module")
def window_blob():
    data = np.random.default_rng(1).normal(size=(600, 16, 3)).astype(np.float32)
    detector = fit(data, "conv1d", {}, TrainConfig(epochs=2), device="cpu")
    return detector, checkpoint_to_bytes(detector, {"method": "static", "value": 4.0}, {}, 1)


def test_a_loaded_checkpoint_scores_in_numpy_exactly_as_torch_did(window_blob):
    trained, blob = window_blob
    loaded = checkpoint_from_bytes(blob).detector
    assert isinstance(loaded.model, ArrayNet)
    batch = np.random.default_rng(2).normal(size=(300, 16, 3)).astype(np.float32)
    batch[:5, 7] += 6.0  # anomalous readings score high on both engines
    by_torch = Scorer(trained, "cpu")  # a trained detector's torch model, run as arrays
    scores = Scorer(loaded, "cpu").score(batch).scores
    np.testing.assert_allclose(scores, by_torch.score(batch).scores, rtol=1e-4, atol=1e-4)
    assert scores[:5].min() > np.median(scores[5:]) + 1


def test_a_cpu_scoring_process_never_imports_torch(tmp_path, window_blob):
    """The daemon's modules, a checkpoint loaded as the live model, scoring and encoding:
    torch (~550 MB resident) stays out of the process."""
    _, blob = window_blob
    (tmp_path / "blob").write_bytes(blob)
    code = textwrap.dedent(f"""
        import sys
        from pathlib import Path
        import numpy as np
        import streamae.cli, streamae.service, streamae.pipeline
        from streamae.checkpoints import checkpoint_from_bytes, save_checkpoint
        from streamae.live import load_live
        ck = checkpoint_from_bytes(Path({str(tmp_path / "blob")!r}).read_bytes())
        save_checkpoint(Path({str(tmp_path / "ck")!r}), ck.detector,
                        threshold_state=ck.threshold_state, metadata={{}})
        live = load_live(Path({str(tmp_path / "ck")!r}), "auto", 256)
        batch = np.zeros((10, 16, 3), np.float32)
        assert live.scorer.score(batch).scores.shape == (10,)
        assert live.scorer.encode(batch).shape[0] == 10
        assert "torch" not in sys.modules, "torch was imported"
        print("ok")
    """)
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            timeout=120, check=False)
    assert result.returncode == 0 and result.stdout.strip() == "ok", result.stderr[-2000:]


def test_silu_is_finite_and_silent_far_out():
    import warnings

    from streamae.models.arrays import silu

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        out = silu(np.array([-1000.0, -90.0, 0.0, 90.0, 1000.0], np.float32))
    np.testing.assert_allclose(out, [0.0, 0.0, 0.0, 90.0, 1000.0], atol=1e-30)
