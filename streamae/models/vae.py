"""The dense variational autoencoder.

It is the dense network with a gaussian latent: the encoder emits a mean and a
log-variance, training samples z by reparameterisation and adds ``beta * KL``. Scoring is
deterministic: reconstruction error decoded from the posterior mean plus the KL term
(see ``AutoEncoder.analyse``). The shared maths (``reparameterise``, ``gaussian_kl``)
lives in base.py because the variational conv models use it too.
"""

from __future__ import annotations

from dataclasses import replace

from streamae.models.base import gaussian_kl, reparameterise
from streamae.models.dense import DenseAutoEncoder, DenseConfig

__all__ = ["DenseVAE", "gaussian_kl", "reparameterise"]


class DenseVAE(DenseAutoEncoder):
    """Dense VAE: m -> hidden... -> (mean, logvar) -> z -> ...hidden -> m."""

    def __init__(self, config: DenseConfig) -> None:
        super().__init__(replace(config, variational=True), kind="vae")
