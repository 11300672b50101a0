"""CPU and CUDA give the same scores for the same detector."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from streamae.scoring import Scorer, sample
from streamae.training import TrainConfig, fit

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device"),
]


@pytest.mark.parametrize(
    ("kind", "shape", "args"),
    [
        ("dense", (8,), {"hidden_sizes": [32, 16], "latent_size": 3}),
        ("vae", (8,), {"hidden_sizes": [32, 16], "latent_size": 3}),
        ("conv", (3, 15, 13), {"hidden_sizes": [8, 16], "latent_size": 4}),
        ("conv1d", (24, 3), {"hidden_sizes": [8, 16], "latent_size": 4}),
    ],
)
def test_cpu_and_cuda_scores_agree(kind, shape, args):
    rng = np.random.default_rng(0)
    data = rng.normal(1.0, 2.0, size=(256, *shape)).astype(np.float32)
    detector = fit(data, kind, args, TrainConfig(epochs=3), device="cuda")
    assert next(detector.model.parameters()).device.type == "cpu"
    batch = rng.normal(1.0, 2.0, size=(64, *shape)).astype(np.float32)
    on_cpu = Scorer(detector, device="cpu").score(batch)
    on_gpu = Scorer(detector, device="cuda").score(batch)
    # TF32 matmuls/convs on CUDA differ from CPU in the 3rd-4th significant digit.
    np.testing.assert_allclose(on_gpu.raw_scores, on_cpu.raw_scores, rtol=1e-2, atol=1e-4)
    np.testing.assert_allclose(on_gpu.reconstructed, on_cpu.reconstructed, rtol=1e-2, atol=1e-2)


def test_vae_sampling_on_cuda_is_finite():
    data = np.random.default_rng(0).normal(size=(128, 6)).astype(np.float32)
    detector = fit(
        data, "vae", {"hidden_sizes": [16], "latent_size": 2}, TrainConfig(epochs=2), device="cuda"
    )
    samples = sample(detector, 32, device="cuda", seed=1)
    assert samples.shape == (32, 6) and np.all(np.isfinite(samples))
