"""The one interface every autoencoder implements, and the maths they share.

A subclass only says how to encode (to a latent mean, plus a log-variance when it is
variational) and how to decode. Corruption, the training loss, the anomaly score and
sampling are written once here, so every kind scores the same way.
"""

from __future__ import annotations

import math
from typing import Any, NamedTuple

import torch
from torch import Tensor, nn

from streamae.models.arrays import LOGVAR_MAX, LOGVAR_MIN, describe


class Analysis(NamedTuple):
    """Everything one deterministic pass gives (all in the model's scaled units)."""

    reconstruction: Tensor  # (B, *input_shape)
    latent: Tensor  # (B, latent_size), the posterior mean for variational models
    sample_scores: Tensor  # (B,)
    feature_errors: Tensor  # (B, *input_shape), squared error per feature


def corrupt(x: Tensor, noise_std: float, mask_probability: float) -> Tensor:
    """Gaussian noise plus random zeroing (zero is the mean after scaling)."""
    if noise_std > 0:
        x = x + noise_std * torch.randn_like(x)
    if mask_probability > 0:
        keep = torch.rand_like(x) >= mask_probability
        x = x * keep
    return x


def reparameterise(mean: Tensor, logvar: Tensor) -> Tensor:
    """z = mean + sigma * eps, so gradients flow through mean and logvar."""
    return mean + torch.exp(0.5 * logvar) * torch.randn_like(mean)


def gaussian_kl(mean: Tensor, logvar: Tensor) -> Tensor:
    """KL(q(z|x) || N(0, I)) per sample, shape (B,)."""
    return 0.5 * torch.sum(mean.pow(2) + logvar.exp() - 1.0 - logvar, dim=1)


class AutoEncoder(nn.Module):
    """Base of every model: plain arrays in, reconstructions and errors out.

    Subclasses call ``adopt(config, kind, hidden_sizes)``, which sets ``kind``,
    ``input_shape``, ``hidden_sizes``, ``latent_size``, ``variational``, ``noise_std``,
    ``mask_probability`` and ``beta`` (what ``constructor_args`` records), and implement
    ``encode_stats`` and ``decode``. Inputs are already scaled
    (see ``training.Scaler``).
    """

    kind: str
    input_shape: tuple[int, ...]
    hidden_sizes: tuple[int, ...]
    latent_size: int
    variational: bool
    noise_std: float
    mask_probability: float
    beta: float

    def adopt(self, config: Any, kind: str, hidden_sizes: tuple[int, ...]) -> None:
        """Copy the options every model shares from its config (one place, not one each);
        ``hidden_sizes`` are the layer widths or channels, whatever the config calls them."""
        self.config = config
        self.kind = kind
        self.input_shape = tuple(config.input_shape)
        self.hidden_sizes = tuple(hidden_sizes)
        self.latent_size = config.latent_size
        self.variational = config.variational
        self.noise_std = config.noise_std
        self.mask_probability = config.mask_probability
        self.beta = config.beta

    # -- what subclasses provide ---------------------------------------------------------

    def encode_stats(self, x: Tensor) -> tuple[Tensor, Tensor | None]:
        """(B, *input_shape) -> mean (B, latent), logvar (B, latent) or None."""
        raise NotImplementedError

    def decode(self, z: Tensor) -> Tensor:
        """(B, latent) -> (B, *input_shape)."""
        raise NotImplementedError

    # -- shared behaviour ----------------------------------------------------------------

    def constructor_args(self) -> dict:
        """JSON-able keyword arguments that rebuild this model with ``build_model``."""
        return {
            "hidden_sizes": list(self.hidden_sizes),
            "latent_size": self.latent_size,
            "noise_std": self.noise_std,
            "mask_probability": self.mask_probability,
            "beta": self.beta,
            "variational": self.variational,
        }

    @property
    def description(self) -> str:
        """What runs, for events and logs: the kind plus what its options add
        (``conv+denoising``, ``conv1d+variational``); ``kind`` alone rebuilds it."""
        return describe(self.kind, self.constructor_args())

    @property
    def num_features(self) -> int:
        """Number of scalar inputs per sample (the loss is a mean over them)."""
        return math.prod(self.input_shape)

    def split_latent(self, h: Tensor) -> tuple[Tensor, Tensor | None]:
        """Split a (B, 2*latent) head into mean and clamped logvar when variational."""
        if not self.variational:
            return h, None
        mean, logvar = h.chunk(2, dim=1)
        return mean, logvar.clamp(LOGVAR_MIN, LOGVAR_MAX)

    def encode(self, x: Tensor) -> Tensor:
        """Latent code (the posterior mean for variational models), (B, latent)."""
        return self.encode_stats(x)[0]

    def forward(self, x: Tensor) -> Tensor:
        """Deterministic reconstruction (decoded from the mean), same shape as x."""
        return self.decode(self.encode(x))

    def loss(self, x: Tensor) -> Tensor:
        """Scalar training loss: mean squared error of the clean x (+ beta*KL per feature).

        In training mode the input is corrupted first (denoising), the target stays clean.
        """
        x_in = x
        if self.training:
            x_in = corrupt(x, self.noise_std, self.mask_probability)
        mean, logvar = self.encode_stats(x_in)
        z = mean if logvar is None else reparameterise(mean, logvar)
        per_sample = (self.decode(z) - x).pow(2).flatten(1).mean(dim=1)
        if logvar is not None:
            per_sample = per_sample + self.beta * gaussian_kl(mean, logvar) / self.num_features
        return per_sample.mean()

    @torch.no_grad()
    def analyse(self, x: Tensor) -> Analysis:
        """One deterministic pass: reconstruction, latent, per-sample and per-feature error.

        The sample score is the mean squared error of the reconstruction decoded from the
        latent mean; variational models add ``beta * KL / num_features``, the same terms
        as the training loss without sampling, so a point far from the prior scores high
        even when it happens to reconstruct well.
        """
        mean, logvar = self.encode_stats(x)
        reconstruction = self.decode(mean)
        feature_errors = (reconstruction - x).pow(2)
        sample_scores = feature_errors.flatten(1).mean(dim=1)
        if logvar is not None:
            sample_scores = sample_scores + self.beta * gaussian_kl(mean, logvar) / (
                self.num_features
            )
        return Analysis(reconstruction, mean, sample_scores, feature_errors)

    @torch.no_grad()
    def score(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """Per-sample score (B,) and per-feature squared error (B, *input_shape).

        See ``analyse`` for what the score is (for variational models it includes KL).
        """
        result = self.analyse(x)
        return result.sample_scores, result.feature_errors

    @torch.no_grad()
    def sample(self, n: int, generator: torch.Generator | None = None) -> Tensor:
        """Decode n draws from the prior N(0, I); only meaningful for variational models."""
        device = next(self.parameters()).device
        z = torch.randn(n, self.latent_size, generator=generator).to(device)
        return self.decode(z)
