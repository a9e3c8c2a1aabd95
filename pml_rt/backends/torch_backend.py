"""PyTorch backend: the reference implementation (eager, optionally compiled), CPU or CUDA."""

from __future__ import annotations

from typing import Any

import numpy as np

from .._optional import require
from ..registry import ModelConfig
from .base import Backend


class TorchBackend(Backend):
    """Runs :class:`pml_rt.network.embedder.Embedder` in PyTorch.

    ``checkpoint``: a state-dict file of a trained embedder; without it the ImageNet
    backbone with the zero (untrained) head, which is what the untrained packaged ONNX holds.
    On CUDA the output stays on the device and is returned as a CuPy array (zero copy).
    """

    name = "torch"

    def __init__(self, cfg: ModelConfig, device: str = "cpu", checkpoint: str | None = None,
                 compile: bool = False, half: bool = False):
        super().__init__(cfg)
        self.device = device
        self.checkpoint = checkpoint
        self.compile = compile
        self.half = half
        self._model: Any = None

    def _activate(self) -> None:
        torch = require("torch", "the torch backend")
        from ..network.embedder import Embedder  # noqa: PLC0415

        model = Embedder(self.cfg, imagenet=self.checkpoint is None)
        if self.checkpoint:
            state = torch.load(self.checkpoint, map_location="cpu", weights_only=True)
            model.load_state_dict(state.get("model", state))
        model = model.eval().to(self.device)
        if self.half:
            model = model.half()
        self._model = torch.compile(model) if self.compile else model

    def _infer(self, image: np.ndarray, time: np.ndarray) -> Any:
        torch = require("torch")
        dtype = torch.float16 if self.half else torch.float32
        with torch.inference_mode():
            x = torch.from_numpy(image).to(self.device, dtype)
            t = torch.from_numpy(time).to(self.device, dtype)
            out = self._model(x, t).float()
        if out.is_cuda:
            cp = require("cupy", "device-resident embeddings")
            return cp.from_dlpack(out.contiguous())
        return out.numpy()

    def _close(self) -> None:
        self._model = None

    def describe(self) -> str:
        return f"torch ({self.device}{', compiled' if self.compile else ''}{', fp16' if self.half else ''})"
