"""The autoencoders and the one factory the rest of streamae builds them with.

Kinds and which options they honour:

    dense      vanilla MLP; noise, mask and variational are ignored (forced off)
    denoising  the dense MLP trained on corrupted input (noise_std, mask_probability)
    vae        the dense MLP with a gaussian latent (beta); no corruption
    conv       2-D conv for images (C, H, W); honours noise/mask (set both to 0 for a
               plain conv AE), variational and beta; hidden_sizes are channels per stage;
               downsample "stride" (strided convs) or "pool" (conv + max-pool)
    conv1d     1-D conv over time for windows (L, D); same options as conv

``model.constructor_args()`` records the effective options, so
``build_model(model.kind, model.input_shape, **model.constructor_args())`` rebuilds it.

This package's top level imports no torch: a CPU scoring process evaluates trained
networks with numpy (``arrays``) and never pays for torch; ``build_model`` and
``to_torch`` import the torch modules when called.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from typing import TYPE_CHECKING

from streamae.exceptions import ModelError
from streamae.models.arrays import ArrayNet, array_net

if TYPE_CHECKING:
    from streamae.models.base import AutoEncoder

logger = logging.getLogger(__name__)

KINDS = ("dense", "denoising", "vae", "conv", "conv1d")
DOWNSAMPLES = ("pool", "stride")

__all__ = ["KINDS", "ArrayNet", "array_net", "build_model", "default_latent_size", "to_torch"]


def _check_args(
    input_shape: tuple[int, ...],
    hidden_sizes: tuple[int, ...],
    latent_size: int,
    noise_std: float,
    mask_probability: float,
    beta: float,
) -> None:
    """Refuse arguments that would build a broken network, naming the bad one."""
    if not input_shape or any(s < 1 for s in input_shape):
        raise ModelError(f"input_shape must be positive sizes, got {input_shape}")
    if any(h < 1 for h in hidden_sizes):
        raise ModelError(f"hidden_sizes must be positive, got {list(hidden_sizes)}")
    if latent_size < 1:
        raise ModelError(f"latent_size must be >= 1, got {latent_size}")
    if noise_std < 0 or not 0 <= mask_probability < 1 or beta < 0:
        raise ModelError(
            f"need noise_std >= 0, 0 <= mask_probability < 1, beta >= 0; got "
            f"noise_std={noise_std} mask_probability={mask_probability} beta={beta}"
        )


# Layer widths (dense) or channels per stage (conv) when none are given. 16 then 32 channels
# train ~5x faster than 64/32 on CPU (28x28 images); 8, 16 lose AUROC on the hard digits.
DEFAULT_HIDDEN: dict[str, tuple[int, ...]] = {"dense": (64, 32), "conv": (16, 32),
                                              "conv1d": (16, 32)}


# How conv stages halve the resolution when not given. Images: strided convs (chosen by
# benchmarks/images_speed.py, docs/inputs.md "Speed on CPU"); windows keep max-pooling.
# A checkpoint written before the option existed was built with "pool" (checkpoints.py).
DEFAULT_DOWNSAMPLE: dict[str, str] = {"conv": "stride", "conv1d": "pool"}


def default_latent_size(input_shape: Sequence[int]) -> int:
    """A bottleneck that compresses whatever the input's width: about sqrt(width), at most
    a quarter of it and 32. A latent as wide as the input lets a model drift toward the
    identity and reconstruct anomalies as well as normal data."""
    width = math.prod(int(s) for s in input_shape)
    return max(1, min(32, width // 4, round(math.sqrt(width))))


def build_model(
    kind: str,
    input_shape: Sequence[int],
    *,
    hidden_sizes: Sequence[int] | None = None,
    latent_size: int | None = None,
    noise_std: float = 0.1,
    mask_probability: float = 0.1,
    beta: float = 1.0,
    variational: bool = False,
    downsample: str | None = None,
) -> AutoEncoder:
    """Build a fresh model of ``kind`` for samples shaped ``input_shape``; ``latent_size``
    None follows the input's width (``default_latent_size``), ``downsample`` None the
    kind's default (conv kinds only; dense kinds ignore it)."""
    shape = tuple(int(s) for s in input_shape)
    if hidden_sizes is None:
        hidden_sizes = DEFAULT_HIDDEN.get(kind, DEFAULT_HIDDEN["dense"])
    if latent_size is None:
        latent_size = default_latent_size(shape)
    hidden = tuple(int(h) for h in hidden_sizes)
    _check_args(shape, hidden, latent_size, noise_std, mask_probability, beta)
    if kind in ("dense", "denoising", "vae"):
        from streamae.models.dense import DenseAutoEncoder, DenseConfig
        from streamae.models.vae import DenseVAE

        if not hidden:
            raise ModelError("dense models need at least one hidden size")
        corrupting = kind == "denoising"
        config = DenseConfig(
            input_shape=shape,
            hidden_sizes=hidden,
            latent_size=int(latent_size),
            noise_std=float(noise_std) if corrupting else 0.0,
            mask_probability=float(mask_probability) if corrupting else 0.0,
            beta=float(beta),
            variational=kind == "vae",
        )
        return DenseVAE(config) if kind == "vae" else DenseAutoEncoder(config, kind=kind)
    if kind in ("conv", "conv1d"):
        return _build_conv(
            kind, shape, hidden, latent_size, noise_std, mask_probability, beta, variational,
            downsample or DEFAULT_DOWNSAMPLE[kind],
        )
    raise ModelError(f"unknown model kind {kind!r}; expected one of {', '.join(KINDS)}")


def _build_conv(
    kind: str,
    shape: tuple[int, ...],
    channels: tuple[int, ...],
    latent_size: int,
    noise_std: float,
    mask_probability: float,
    beta: float,
    variational: bool,
    downsample: str,
) -> AutoEncoder:
    """The conv branch of ``build_model``: checks the rank the kind needs."""
    from streamae.models.conv import Conv1dAutoEncoder, ConvAutoEncoder, ConvConfig

    rank = 3 if kind == "conv" else 2
    if len(shape) != rank:
        layout = "(C, H, W)" if kind == "conv" else "(L, D)"
        raise ModelError(f"{kind} needs input_shape {layout}, got {shape}")
    if not channels:
        raise ModelError(f"{kind} needs at least one stage in hidden_sizes")
    if downsample not in DOWNSAMPLES:
        raise ModelError(f"downsample must be one of {', '.join(DOWNSAMPLES)}, "
                         f"got {downsample!r}")
    config = ConvConfig(
        input_shape=shape,
        channels=channels,
        latent_size=int(latent_size),
        noise_std=float(noise_std),
        mask_probability=float(mask_probability),
        beta=float(beta),
        variational=bool(variational),
        downsample=downsample,  # type: ignore[arg-type]  # checked above
    )
    model = ConvAutoEncoder(config) if kind == "conv" else Conv1dAutoEncoder(config)
    logger.debug("model_built kind=%s input_shape=%s variational=%s", kind, shape, variational)
    return model


def to_torch(network: ArrayNet) -> AutoEncoder:
    """The torch model with ``network``'s weights (on the CPU, in eval mode)."""
    import torch

    model = build_model(network.kind, network.input_shape, **network.constructor_args())
    model.load_state_dict({k: torch.from_numpy(v) for k, v in network.state_dict().items()},
                          strict=True)
    return model.eval()
