"""A torch model on a device behind ``ArrayNet``'s numpy interface: GPUs and images.

The scorer calls ``analyse``, ``encode`` and ``decode`` with scaled numpy arrays either
way; this copy of the model lives on its device in eval mode, so the retrainer can go on
with its own.
"""

from __future__ import annotations

import copy

import numpy as np
import torch

from streamae.models import to_torch
from streamae.models.arrays import Analysis, ArrayNet
from streamae.models.base import AutoEncoder


class DeviceNet:
    """Scaled numpy in, numpy out; torch and the device stay inside."""

    def __init__(self, model: AutoEncoder | ArrayNet, device: str) -> None:
        source = to_torch(model) if isinstance(model, ArrayNet) else copy.deepcopy(model)
        self.model = source.to(device).eval()
        self.device = device

    def _tensor(self, x: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32)).to(self.device)

    def analyse(self, x: np.ndarray) -> Analysis:
        with torch.inference_mode():
            result = self.model.analyse(self._tensor(x))
        return Analysis(*(t.float().cpu().numpy() for t in result))

    def encode(self, x: np.ndarray) -> np.ndarray:
        with torch.inference_mode():
            return self.model.encode(self._tensor(x)).float().cpu().numpy()

    def decode(self, z: np.ndarray) -> np.ndarray:
        with torch.inference_mode():
            return self.model.decode(self._tensor(z)).float().cpu().numpy()
