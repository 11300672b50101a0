"""One generic check over every model kind, plus what is special to each."""

from __future__ import annotations

import pytest
import torch

from streamae.exceptions import ModelError
from streamae.models import KINDS, build_model
from streamae.models.base import AutoEncoder

SHAPES = {
    "dense": (6,),
    "denoising": (5, 3),
    "vae": (6,),
    "conv": (2, 9, 7),  # not divisible by the pooling on purpose
    "conv1d": (13, 3),
}
VARIANTS = [(kind, False) for kind in KINDS] + [("conv", True), ("conv1d", True)]


def small(kind: str, variational: bool = False, **kwargs) -> AutoEncoder:
    return build_model(
        kind, SHAPES[kind], hidden_sizes=(16, 8), latent_size=3, variational=variational, **kwargs
    )


@pytest.mark.parametrize(("kind", "variational"), VARIANTS)
def test_every_model_fits_the_interface(kind, variational):
    torch.manual_seed(0)
    model = small(kind, variational)
    x = torch.randn(32, *SHAPES[kind])

    assert model.kind == kind
    assert model.input_shape == SHAPES[kind]
    assert model(x).shape == x.shape
    assert model.loss(x).shape == ()
    scores, errors = model.score(x)
    assert scores.shape == (32,)
    assert errors.shape == x.shape
    assert torch.all(scores >= 0)
    assert model.encode(x).shape == (32, 3)

    optimiser = torch.optim.Adam(model.parameters(), lr=1e-2)
    model.eval()
    before = model.score(x)[0].mean().item()
    model.train()
    for _ in range(40):
        optimiser.zero_grad()
        model.loss(x).backward()
        optimiser.step()
    model.eval()
    assert model.score(x)[0].mean().item() < before


@pytest.mark.parametrize(("kind", "variational"), VARIANTS)
def test_constructor_args_rebuild_the_same_model(kind, variational):
    model = small(kind, variational)
    rebuilt = build_model(model.kind, model.input_shape, **model.constructor_args())
    rebuilt.load_state_dict(model.state_dict())
    x = torch.randn(4, *SHAPES[kind])
    assert torch.equal(model.eval()(x), rebuilt.eval()(x))
    assert rebuilt.variational == model.variational


def test_denoising_corrupts_only_in_training_mode():
    torch.manual_seed(0)
    model = small("denoising", noise_std=0.5, mask_probability=0.3)
    x = torch.randn(16, *SHAPES["denoising"])
    model.train()
    assert model.loss(x).item() != model.loss(x).item()  # corruption is random
    model.eval()
    assert model.loss(x).item() == model.loss(x).item()
    first, second = model.score(x)[0], model.score(x)[0]
    assert torch.equal(first, second)


def test_dense_is_vanilla_and_vae_is_variational():
    dense = build_model("dense", (4,), noise_std=0.5, variational=True)
    assert dense.noise_std == 0 and dense.mask_probability == 0 and not dense.variational
    assert build_model("vae", (4,)).variational


@pytest.mark.parametrize(("kind", "variational", "kwargs", "description"), [
    ("dense", False, {"noise_std": 0.5}, "dense"),  # dense ignores corruption
    ("denoising", False, {}, "denoising"),
    ("vae", False, {}, "vae"),
    ("conv", False, {}, "conv+denoising"),  # noise 0.1 and masking 0.1 by default
    ("conv", False, {"noise_std": 0.0, "mask_probability": 0.0}, "conv"),
    ("conv1d", True, {"noise_std": 0.0, "mask_probability": 0.2}, "conv1d+variational+denoising"),
])
def test_description_names_what_runs(kind, variational, kwargs, description):
    assert small(kind, variational, **kwargs).description == description


def test_vae_score_adds_kl_to_reconstruction_error():
    torch.manual_seed(0)
    model = small("vae").eval()
    x = torch.randn(8, 6)
    scores, errors = model.score(x)
    assert torch.all(scores > errors.mean(dim=1))


def test_sampling_from_the_prior_has_the_input_shape():
    model = small("conv", variational=True).eval()
    out = model.sample(5, generator=torch.Generator().manual_seed(1))
    assert out.shape == (5, *SHAPES["conv"])
    assert torch.isfinite(out).all()


@pytest.mark.parametrize(
    ("kind", "shape", "kwargs"),
    [
        ("nope", (4,), {}),
        ("conv", (4, 4), {}),
        ("conv1d", (3, 4, 4), {}),
        ("dense", (4,), {"latent_size": 0}),
        ("dense", (0,), {}),
        ("denoising", (4,), {"mask_probability": 1.0}),
        ("conv", (1, 8, 8), {"downsample": "avg"}),
    ],
)
def test_bad_arguments_raise_model_error(kind, shape, kwargs):
    with pytest.raises(ModelError):
        build_model(kind, shape, **kwargs)


@pytest.mark.parametrize("kind", ["conv", "conv1d"])
@pytest.mark.parametrize("downsample", ["stride", "pool"])
def test_conv_stages_downsample_by_strided_convs_or_pooling(kind, downsample):
    model = small(kind, downsample=downsample)
    pools = [m for m in model.encoder if isinstance(m, torch.nn.MaxPool1d | torch.nn.MaxPool2d)]
    strides = [m.stride[0] for m in model.encoder if hasattr(m, "stride") and m not in pools]
    assert len(pools) == (2 if downsample == "pool" else 0)
    assert strides == ([2, 2] if downsample == "stride" else [1, 1])
    assert model.constructor_args()["downsample"] == downsample
    x = torch.randn(3, *SHAPES[kind])
    assert model(x).shape == x.shape


def test_images_default_to_strided_convs_and_windows_to_pooling():
    assert small("conv").constructor_args()["downsample"] == "stride"
    assert small("conv1d").constructor_args()["downsample"] == "pool"
