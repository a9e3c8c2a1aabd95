"""PyTorch backend: the reference implementation (eager, optionally compiled), CPU or CUDA."""

from __future__ import annotations

from typing import Any

import numpy as np

from .._optional import require
from ..registry import ModelConfig
from .base import Backend


class TorchBackend(Backend):
    """Runs :class:`pml_rt.network.embedder.Embedder` in PyTorch.

    ``checkpoint``: a state-dict file of a whole embedder. Without it: the ImageNet backbone
    and, for a trained packaged model, the head weights read from its ONNX file (the one
    source of the shipped weights); for the untrained model the zero head it holds.
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
        model = packaged_embedder(self.cfg, self.checkpoint).to(self.device)
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


def packaged_embedder(cfg: ModelConfig, checkpoint: str | None = None) -> Any:
    """The torch :class:`~pml_rt.network.embedder.Embedder` of registered model ``cfg``, in eval
    mode: ImageNet backbone plus, for a trained model, the head weights from its packaged ONNX
    file; or every weight from ``checkpoint`` (a state-dict file) where given."""
    torch = require("torch", "the PyTorch embedder")
    from ..network.embedder import Embedder  # noqa: PLC0415

    model = Embedder(cfg, imagenet=checkpoint is None, spatio_temporal=bool(cfg.extra.get("spatio_temporal", True)),
                     hidden=int(cfg.extra.get("hidden", 256)))
    if checkpoint:
        state = torch.load(checkpoint, map_location="cpu", weights_only=True)
        model.load_state_dict(state.get("model", state))
    elif cfg.trained:
        model.head.load_state_dict(head_weights_from_onnx(cfg.path, torch))
    return model.eval()


def head_weights_from_onnx(path: Any, torch: Any) -> dict:
    """The embedding head's state dict (``conv1.*``, ``conv2.*``, ``proj.*`` where present) from
    the initializers ``head.*`` of a packaged ONNX file (needs the ``onnx`` package)."""
    onnx = require("onnx", "reading a trained head into the torch backend")
    from onnx import numpy_helper  # noqa: PLC0415

    from ..errors import BackendError  # noqa: PLC0415

    model = onnx.load(str(path))
    state = {init.name[len("head."):]: torch.from_numpy(numpy_helper.to_array(init).copy())
             for init in model.graph.initializer if init.name.startswith("head.")}
    if not state:
        raise BackendError(f"{path} has no head.* weights; rebuild it with python -m training export")
    return state
