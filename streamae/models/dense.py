"""Fully connected autoencoders: vanilla, denoising and (with vae.py) variational.

Any input shape is flattened, so a window (L, D) becomes a vector of L*D features.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass, field

from torch import Tensor, nn

from streamae.models.base import AutoEncoder


@dataclass(frozen=True)
class DenseConfig:
    """Shape and regularisation of a dense autoencoder."""

    input_shape: tuple[int, ...]  # one sample, e.g. (8,) or a window (L, D)
    hidden_sizes: tuple[int, ...] = field(default=(64, 32))  # encoder widths; decoder mirrors
    latent_size: int = 8  # bottleneck width
    noise_std: float = 0.0  # gaussian corruption at training time (denoising)
    mask_probability: float = 0.0  # share of inputs zeroed at training time (denoising)
    beta: float = 1.0  # KL weight, variational only
    variational: bool = False  # gaussian posterior + KL instead of a point code


def mlp(sizes: list[int]) -> nn.Sequential:
    """Linear layers with SiLU between them, none after the last."""
    layers: list[nn.Module] = []
    for i, (n_in, n_out) in enumerate(itertools.pairwise(sizes)):
        layers.append(nn.Linear(n_in, n_out))
        if i < len(sizes) - 2:
            layers.append(nn.SiLU())
    return nn.Sequential(*layers)


class DenseAutoEncoder(AutoEncoder):
    """m -> hidden... -> latent -> ...hidden -> m; denoising when noise/mask are set."""

    def __init__(self, config: DenseConfig, kind: str = "dense") -> None:
        super().__init__()
        self.adopt(config, kind, config.hidden_sizes)
        m = math.prod(self.input_shape)
        hidden = list(config.hidden_sizes)
        head = config.latent_size * (2 if config.variational else 1)
        self.encoder = mlp([m, *hidden, head])  # (B, m) -> (B, head)
        self.decoder = mlp([config.latent_size, *reversed(hidden), m])  # (B, latent) -> (B, m)

    def encode_stats(self, x: Tensor) -> tuple[Tensor, Tensor | None]:
        """(B, *input_shape) -> mean (B, latent), logvar or None."""
        return self.split_latent(self.encoder(x.flatten(1)))

    def decode(self, z: Tensor) -> Tensor:
        """(B, latent) -> (B, *input_shape)."""
        return self.decoder(z).view(-1, *self.input_shape)
