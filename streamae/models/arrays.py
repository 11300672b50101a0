"""A trained network evaluated with numpy alone: scoring on a CPU without torch.

``import torch`` costs a process about 550 MB before any model exists (its CPU and CUDA
kernels register when it loads): more than the daemon's whole memory budget. A trained
autoencoder is a few dense and convolution layers with fixed weights, so a CPU scorer
evaluates them here, with numpy's BLAS, and torch stays in the process that trains.

``ArrayNet`` reads the torch models' ``state_dict`` names and layouts (models/dense.py,
models/conv.py): ``tests/unit/test_arrays.py`` checks that every kind and option gives the
torch model's outputs. Inside, convolutions run channels-last as one matrix product over
the 3**n shifted copies of the input (im2col).
"""

from __future__ import annotations

import itertools
import math
from typing import NamedTuple

import numpy as np

# A log-variance outside this range means a collapsed or exploding posterior; clamping
# keeps exp() finite without changing any sensible value (the torch models use these too).
LOGVAR_MIN, LOGVAR_MAX = -10.0, 10.0


class Analysis(NamedTuple):
    """Everything one deterministic pass gives, in the model's scaled units."""

    reconstruction: np.ndarray  # (B, *input_shape)
    latent: np.ndarray  # (B, latent_size), the posterior mean for variational models
    sample_scores: np.ndarray  # (B,)
    feature_errors: np.ndarray  # (B, *input_shape), squared error per feature


def describe(kind: str, args: dict) -> str:
    """What runs, for events and logs: the kind plus what its options add
    (``conv+denoising``, ``conv1d+variational``); ``kind`` alone rebuilds it."""
    parts = [kind]
    if args.get("variational") and kind != "vae":
        parts.append("variational")
    denoising = args.get("noise_std", 0) > 0 or args.get("mask_probability", 0) > 0
    if denoising and kind != "denoising":
        parts.append("denoising")
    return "+".join(parts)


def silu(h: np.ndarray) -> np.ndarray:
    """x * sigmoid(x), in place (activations are temporaries). Below about -88, exp(-x)
    overflows to inf and x / inf is the right limit, 0: no warning for it."""
    gate = np.negative(h)
    with np.errstate(over="ignore"):
        np.exp(gate, out=gate)
    gate += 1.0
    return np.divide(h, gate, out=h)


class _Linear(NamedTuple):
    weight: np.ndarray  # (in, out): transposed once, so a batch is one matmul
    bias: np.ndarray

    def __call__(self, h: np.ndarray) -> np.ndarray:
        out = h @ self.weight
        out += self.bias
        return out


class _Conv(NamedTuple):
    """A 3-wide convolution, padding 1, over the middle axes of (B, *spatial, C)."""

    weight: np.ndarray  # (3**n * C_in, C_out), rows in the order of the shifted copies
    bias: np.ndarray
    stride: int

    def __call__(self, h: np.ndarray) -> np.ndarray:
        n = h.ndim - 2
        if n == 1 and self.stride == 1:
            return self._along_time(h)
        padded = np.pad(h, [(0, 0)] + [(1, 1)] * n + [(0, 0)])
        sizes = [(s - 1) // self.stride + 1 for s in h.shape[1:-1]]
        shifted = [
            padded[(slice(None),
                    *(slice(o, o + self.stride * (m - 1) + 1, self.stride)
                      for o, m in zip(offsets, sizes, strict=True)),
                    slice(None))]
            for offsets in itertools.product(range(3), repeat=n)
        ]
        out = np.concatenate(shifted, axis=-1) @ self.weight
        out += self.bias
        return out

    def _along_time(self, h: np.ndarray) -> np.ndarray:
        """Windows (B, L, C), stride 1: the three taps written side by side in one buffer
        (one copy, where padding then concatenating made two)."""
        batch, length, channels = h.shape
        taps = np.empty((batch, length, 3, channels), np.float32)
        taps[:, 0, 0] = 0.0
        taps[:, 1:, 0] = h[:, :-1]
        taps[:, :, 1] = h
        taps[:, :-1, 2] = h[:, 1:]
        taps[:, -1, 2] = 0.0
        out = taps.reshape(batch, length, -1) @ self.weight
        out += self.bias
        return out


class _Upsample(NamedTuple):
    """A 2-wide, stride-2 transposed convolution: each input cell becomes a 2**n block."""

    weight: np.ndarray  # (C_in, 2**n * C_out)
    bias: np.ndarray

    def __call__(self, h: np.ndarray) -> np.ndarray:
        batch, *spatial, _ = h.shape
        n, channels = len(spatial), len(self.bias)
        blocks = (h @ self.weight).reshape(batch, *spatial, *([2] * n), channels)
        # (B, s1, .., sn, 2, .., 2, C) -> (B, s1, 2, .., sn, 2, C): cell i, offset k -> 2i+k
        order = [0, *itertools.chain.from_iterable((1 + a, 1 + n + a) for a in range(n)),
                 1 + 2 * n]
        out = blocks.transpose(order).reshape(batch, *(2 * s for s in spatial), channels)
        out += self.bias
        return out


def _max_pool(h: np.ndarray) -> np.ndarray:
    """2x max-pooling over the middle axes of (B, *spatial, C)."""
    batch, *spatial, channels = h.shape
    split = [batch, *itertools.chain.from_iterable((s // 2, 2) for s in spatial), channels]
    return h.reshape(split).max(axis=tuple(2 + 2 * a for a in range(len(spatial))))


def _linear(weights: dict[str, np.ndarray], name: str) -> _Linear:
    return _Linear(np.ascontiguousarray(weights[f"{name}.weight"].T),
                   weights[f"{name}.bias"])


def _conv(weights: dict[str, np.ndarray], name: str, stride: int) -> _Conv:
    w = weights[f"{name}.weight"]  # (C_out, C_in, 3, .., 3)
    n = w.ndim - 2
    rows = w.transpose(*range(2, 2 + n), 1, 0).reshape(-1, w.shape[0])
    return _Conv(np.ascontiguousarray(rows), weights[f"{name}.bias"], stride)


def _upsample(weights: dict[str, np.ndarray], name: str) -> _Upsample:
    w = weights[f"{name}.weight"]  # (C_in, C_out, 2, .., 2)
    n = w.ndim - 2
    columns = w.transpose(0, *range(2, 2 + n), 1).reshape(w.shape[0], -1)
    return _Upsample(np.ascontiguousarray(columns), weights[f"{name}.bias"])


def _indices(weights: dict[str, np.ndarray], prefix: str) -> list[int]:
    """Positions of the weighted layers in a torch ``nn.Sequential`` called ``prefix``."""
    found = {int(k.split(".")[1]) for k in weights if k.startswith(f"{prefix}.")}
    return sorted(found)


def array_net(kind: str, input_shape: tuple[int, ...], args: dict,
              weights: dict[str, np.ndarray]) -> ArrayNet:
    """The numpy network of ``kind`` from its constructor arguments and torch weights;
    ValueError when the weights do not make that network (one probe pass checks them)."""
    network = ConvArrays if kind in ("conv", "conv1d") else DenseArrays
    try:
        built = network(kind, input_shape, args, weights)
        probe = built.analyse(np.zeros((1, *built.input_shape), np.float32))
        if (probe.reconstruction.shape != (1, *built.input_shape)
                or probe.latent.shape != (1, built.latent_size)):
            raise ValueError(f"the pass gives {probe.reconstruction.shape} and a latent "
                             f"{probe.latent.shape}")
    except (KeyError, IndexError, ValueError) as exc:
        raise ValueError(f"weights do not make a {kind} network for input "
                         f"{tuple(input_shape)}: {exc!r}") from exc
    return built


def from_torch(model: object) -> ArrayNet:
    """The arrays of a torch ``AutoEncoder``, copied to the host."""
    weights = {k: v.detach().float().cpu().numpy()
               for k, v in model.state_dict().items()}  # type: ignore[attr-defined]
    return array_net(model.kind, model.input_shape,  # type: ignore[attr-defined]
                     model.constructor_args(), weights)  # type: ignore[attr-defined]


def as_arrays(model: object) -> ArrayNet:
    """``model`` itself when it is numpy already, else the arrays of the torch model."""
    return model if isinstance(model, ArrayNet) else from_torch(model)


class ArrayNet:
    """A trained autoencoder's weights and its deterministic forward pass (float32)."""

    def __init__(self, kind: str, input_shape: tuple[int, ...], args: dict,
                 weights: dict[str, np.ndarray]) -> None:
        self.kind = kind
        self.input_shape = tuple(int(s) for s in input_shape)
        self.args = dict(args)
        self.latent_size = int(args["latent_size"])
        self.variational = bool(args.get("variational")) or kind == "vae"
        self.beta = float(args.get("beta", 1.0))
        self.weights = {k: np.ascontiguousarray(v, dtype=np.float32) for k, v in weights.items()}

    # -- what the rest of streamae reads ---------------------------------------------------

    @property
    def description(self) -> str:
        return describe(self.kind, self.args)

    @property
    def num_features(self) -> int:
        return math.prod(self.input_shape)

    def constructor_args(self) -> dict:
        """Keyword arguments that rebuild the torch model with ``build_model``."""
        return dict(self.args)

    def state_dict(self) -> dict[str, np.ndarray]:
        """The weights under the torch model's names."""
        return self.weights

    # -- the forward pass ------------------------------------------------------------------

    def analyse(self, x: np.ndarray) -> Analysis:
        """As ``AutoEncoder.analyse``: reconstruction from the latent mean, its squared
        error per feature, and their mean plus beta * KL / features when variational."""
        x = np.asarray(x, dtype=np.float32)
        mean, logvar = self.encode_stats(x)
        reconstruction = self.decode(mean)
        errors = np.square(reconstruction - x)
        scores = errors.reshape(len(x), -1).mean(axis=1)
        if logvar is not None:
            kl = 0.5 * np.sum(np.square(mean) + np.exp(logvar) - 1.0 - logvar, axis=1)
            scores = scores + self.beta * kl / self.num_features
        return Analysis(reconstruction, mean, scores.astype(np.float32), errors)

    def encode(self, x: np.ndarray) -> np.ndarray:
        """Latent codes (B, latent): the posterior mean for variational models."""
        return self.encode_stats(np.asarray(x, dtype=np.float32))[0]

    def encode_stats(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        """(B, *input_shape) -> mean (B, latent), clamped logvar or None."""
        head = self.encode_head(x)
        if not self.variational:
            return head, None
        mean, logvar = np.split(head, 2, axis=1)
        return mean, np.clip(logvar, LOGVAR_MIN, LOGVAR_MAX)

    def encode_head(self, x: np.ndarray) -> np.ndarray:
        """(B, *input_shape) -> (B, latent), or (B, 2 * latent) when variational."""
        raise NotImplementedError

    def decode(self, z: np.ndarray) -> np.ndarray:
        """(B, latent) -> (B, *input_shape)."""
        raise NotImplementedError


def _mlp(layers: list[_Linear], h: np.ndarray) -> np.ndarray:
    """Linear layers with SiLU between them (models.dense.mlp)."""
    for i, layer in enumerate(layers):
        h = layer(h)
        if i < len(layers) - 1:
            h = silu(h)
    return h


class DenseArrays(ArrayNet):
    """models/dense.py: any input flattened, an MLP each way."""

    def __init__(self, *args: object) -> None:
        super().__init__(*args)  # type: ignore[arg-type]
        self._encoder = [_linear(self.weights, f"encoder.{i}")
                         for i in _indices(self.weights, "encoder")]
        self._decoder = [_linear(self.weights, f"decoder.{i}")
                         for i in _indices(self.weights, "decoder")]

    def encode_head(self, x: np.ndarray) -> np.ndarray:
        return _mlp(self._encoder, x.reshape(len(x), -1))

    def decode(self, z: np.ndarray) -> np.ndarray:
        return _mlp(self._decoder, z).reshape(-1, *self.input_shape)


class ConvArrays(ArrayNet):
    """models/conv.py: images (C, H, W) or windows (L, D, with D channels over time)."""

    def __init__(self, *args: object) -> None:
        super().__init__(*args)  # type: ignore[arg-type]
        self._pool = self.args.get("downsample", "pool") == "pool"
        stages = [int(c) for c in self.args["hidden_sizes"]]
        stride = 1 if self._pool else 2
        self._convs = [_conv(self.weights, f"encoder.{i}", stride)
                       for i in _indices(self.weights, "encoder")]
        decoder = _indices(self.weights, "decoder")
        self._ups = [_upsample(self.weights, f"decoder.{i}") for i in decoder[:-1]]
        self._last = _conv(self.weights, f"decoder.{decoder[-1]}", 1)
        self._to_latent = _linear(self.weights, "to_latent")
        self._from_latent = _linear(self.weights, "from_latent")
        self._spatial = self.input_shape[1:] if self.kind == "conv" else self.input_shape[:1]
        factor = 2 ** len(stages)
        self._padded = tuple(math.ceil(s / factor) * factor for s in self._spatial)
        self._bottom = (stages[-1], *(p // factor for p in self._padded))

    def _channels_last(self, x: np.ndarray) -> np.ndarray:
        """Images arrive (B, C, H, W); windows (B, L, D) already are."""
        return np.moveaxis(x, 1, -1) if self.kind == "conv" else x

    def encode_head(self, x: np.ndarray) -> np.ndarray:
        pad = [(0, p - s) for s, p in zip(self._spatial, self._padded, strict=True)]
        h = np.pad(self._channels_last(x), [(0, 0), *pad, (0, 0)])
        for conv in self._convs:
            h = silu(conv(h))
            if self._pool:
                h = _max_pool(h)
        # torch flattens (B, C, *bottom): channels first
        return self._to_latent(np.moveaxis(h, -1, 1).reshape(len(h), -1))

    def decode(self, z: np.ndarray) -> np.ndarray:
        h = np.moveaxis(self._from_latent(z).reshape(-1, *self._bottom), 1, -1)
        for up in self._ups:
            h = up(silu(np.ascontiguousarray(h)))
        h = self._last(silu(h))
        h = h[(slice(None), *(slice(0, s) for s in self._spatial), slice(None))]
        return np.ascontiguousarray(np.moveaxis(h, -1, 1) if self.kind == "conv" else h)
