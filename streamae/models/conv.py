"""Convolutional autoencoders: 2-D for images (C, H, W), 1-D for time windows (L, D).

Both share one network written for n spatial dimensions: each stage halves the resolution,
either by a 3-wide stride-2 convolution and SiLU (``downsample="stride"``) or by a 3-wide
convolution at full resolution, SiLU and a 2x max-pool (``"pool"``: 4x the multiply-adds of
the stage; on 28x28 digits half the speed and a lower AUROC, benchmarks/images_speed.py);
a linear layer maps to the latent (or to mean and log-variance when ``variational``); the
decoder mirrors it with stride-2 transposed convolutions. Sizes that are not divisible by
2**stages are zero-padded at the end of each axis before encoding (zero is the mean after
scaling) and the output is cropped back, so any image or window length works. Corruption
(``noise_std``, ``mask_probability``) makes either one a denoising autoencoder.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from streamae.models.base import AutoEncoder

Downsample = Literal["pool", "stride"]


@dataclass(frozen=True)
class ConvConfig:
    """Shape and regularisation of a convolutional autoencoder."""

    input_shape: tuple[int, ...]  # (C, H, W) for images, (L, D) for windows
    channels: tuple[int, ...] = field(default=(64, 32))  # channels per pooling stage
    latent_size: int = 8  # bottleneck width
    noise_std: float = 0.0  # gaussian corruption at training time (denoising)
    mask_probability: float = 0.0  # share of inputs zeroed at training time (denoising)
    beta: float = 1.0  # KL weight, variational only
    variational: bool = False  # gaussian posterior + KL instead of a point code
    downsample: Downsample = "pool"  # "stride": strided convs; "pool": conv + max-pool


# 2-D weights channels-last: oneDNN's CPU kernels run 1.5-2x faster on them (the
# activations follow); checkpoints store weights contiguous, loading copies them back.
# A switch so benchmarks/images_speed.py can measure the model without it.
CHANNELS_LAST = True

_LAYERS = {
    1: (nn.Conv1d, nn.ConvTranspose1d, nn.MaxPool1d),
    2: (nn.Conv2d, nn.ConvTranspose2d, nn.MaxPool2d),
}


class _ConvNet(AutoEncoder):
    """The shared n-d network; ``to_channels_first``/``from_channels_first`` adapt layouts."""

    def __init__(self, config: ConvConfig, kind: str, channels_first_shape: tuple[int, ...]):
        super().__init__()
        self.adopt(config, kind, config.channels)
        in_channels, *spatial = channels_first_shape
        conv, deconv, pool = _LAYERS[len(spatial)]
        stages = list(config.channels)
        factor = 2 ** len(stages)
        self.spatial = tuple(spatial)
        self.padded = tuple(math.ceil(s / factor) * factor for s in spatial)
        self.bottom = (stages[-1], *(p // factor for p in self.padded))

        self.downsample = config.downsample
        encoder: list[nn.Module] = []
        for n_in, n_out in zip([in_channels, *stages[:-1]], stages, strict=True):
            if config.downsample == "stride":
                encoder += [conv(n_in, n_out, 3, stride=2, padding=1), nn.SiLU()]
            else:
                encoder += [conv(n_in, n_out, 3, padding=1), nn.SiLU(), pool(2)]
        self.encoder = nn.Sequential(*encoder)  # (B, C, *padded) -> (B, *bottom)
        flat = math.prod(self.bottom)
        head = config.latent_size * (2 if config.variational else 1)
        self.to_latent = nn.Linear(flat, head)
        self.from_latent = nn.Linear(config.latent_size, flat)

        decoder: list[nn.Module] = []
        for n_in, n_out in zip(stages[::-1], [*stages[::-1][1:], stages[0]], strict=True):
            decoder += [nn.SiLU(), deconv(n_in, n_out, 2, stride=2)]
        decoder += [nn.SiLU(), conv(stages[0], in_channels, 3, padding=1)]
        self.decoder = nn.Sequential(*decoder)  # (B, *bottom) -> (B, C, *padded)
        if len(spatial) == 2 and CHANNELS_LAST:
            self.to(memory_format=torch.channels_last)

    def constructor_args(self) -> dict:
        """The shared options plus how stages downsample."""
        return {**super().constructor_args(), "downsample": self.downsample}

    def to_channels_first(self, x: Tensor) -> Tensor:
        """Input layout -> (B, C, *spatial)."""
        return x

    def from_channels_first(self, x: Tensor) -> Tensor:
        """(B, C, *spatial) -> input layout."""
        return x

    def encode_stats(self, x: Tensor) -> tuple[Tensor, Tensor | None]:
        """(B, *input_shape) -> mean (B, latent), logvar or None."""
        h = self.to_channels_first(x)
        pad: list[int] = []
        for size, padded in zip(reversed(self.spatial), reversed(self.padded), strict=True):
            pad += [0, padded - size]  # F.pad lists the last axis first
        h = F.pad(h, pad)
        h = self.encoder(h).flatten(1)
        return self.split_latent(self.to_latent(h))

    def decode(self, z: Tensor) -> Tensor:
        """(B, latent) -> (B, *input_shape), cropped back from the padded size."""
        h = self.from_latent(z).view(-1, *self.bottom)
        h = self.decoder(h)
        crop = tuple(slice(0, s) for s in self.spatial)
        h = h[(slice(None), slice(None), *crop)]
        return self.from_channels_first(h)


class ConvAutoEncoder(_ConvNet):
    """2-D conv autoencoder for images shaped (C, H, W)."""

    def __init__(self, config: ConvConfig) -> None:
        super().__init__(config, "conv", tuple(config.input_shape))


class Conv1dAutoEncoder(_ConvNet):
    """1-D conv autoencoder for windows shaped (L, D): convolves over time, D channels."""

    def __init__(self, config: ConvConfig) -> None:
        length, dims = config.input_shape
        super().__init__(config, "conv1d", (dims, length))

    def to_channels_first(self, x: Tensor) -> Tensor:
        """(B, L, D) -> (B, D, L)."""
        return x.transpose(1, 2)

    def from_channels_first(self, x: Tensor) -> Tensor:
        """(B, D, L) -> (B, L, D)."""
        return x.transpose(1, 2).contiguous()
