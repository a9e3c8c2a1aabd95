"""ONNX Runtime with IO binding: inputs and outputs in device buffers the runtime reads and writes in place.

With onnxruntime-gpu's CUDA execution provider, a plain ``session.run`` copies the output back
to the host; binding a CuPy buffer instead keeps the embedding on the device for the kNN, as
the TensorRT and torch backends do. ``device="cpu"`` binds NumPy buffers the same way (the
path the CPU tests exercise).
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np

from .._optional import require
from ..errors import BackendError, InputError
from ..registry import ModelConfig
from .onnxruntime_backend import OnnxRuntimeBackend, gpu_providers


class OnnxRuntimeIOBindingBackend(OnnxRuntimeBackend):
    """ONNX Runtime with bound input/output buffers on ``device`` ("cuda" or "cpu").

    On "cuda" the output (N, d, h, w) float32 is a CuPy array on device ``device_id``;
    providers default to CUDA then CPU (pass ``providers=[...]`` to put the TensorRT
    execution provider first; it builds its own engines when the session starts).
    """

    name = "onnxruntime"

    def __init__(self, cfg: ModelConfig, model_path: str | os.PathLike | None = None,
                 providers: list[Any] | None = None, threads: int | None = None,
                 device: str = "cuda", device_id: int = 0):
        if device not in ("cuda", "cpu"):
            raise InputError(f"device must be 'cuda' or 'cpu', got {device!r}")
        self.device = device
        self.device_id = int(device_id)
        if providers is None:
            providers = ([("CUDAExecutionProvider", {"device_id": self.device_id}), "CPUExecutionProvider"]
                         if device == "cuda" else ["CPUExecutionProvider"])
        super().__init__(cfg, model_path=model_path, providers=providers, threads=threads)
        self._binding: Any = None
        self._xp: Any = np

    def _activate(self) -> None:
        if self.device == "cuda":
            have = gpu_providers()
            if "CUDAExecutionProvider" not in have:
                raise BackendError(
                    "ONNX Runtime on CUDA needs onnxruntime-gpu (this build offers "
                    f"{', '.join(have) or 'only the CPU'}): pip uninstall onnxruntime && pip install onnxruntime-gpu"
                )
            self._xp = require("cupy", "ONNX Runtime with device-resident outputs")
        super()._activate()
        if self.device == "cuda" and "CUDAExecutionProvider" not in self._session.get_providers():
            raise BackendError(f"ONNX Runtime did not enable CUDA for {self.model_path} "
                               f"(providers in use: {self._session.get_providers()})")
        self._binding = self._session.io_binding()

    def _ptr(self, a: Any) -> int:
        return int(a.data.ptr) if self.device == "cuda" else int(a.ctypes.data)

    def _infer(self, image: np.ndarray, time: np.ndarray) -> Any:
        xp = self._xp
        n, _, hh, ww = image.shape
        s = self.cfg.stride
        x = xp.ascontiguousarray(xp.asarray(image, dtype=xp.float32))
        t = xp.ascontiguousarray(xp.asarray(time, dtype=xp.float32))
        out = xp.empty((n, self.cfg.d, -(-hh // s), -(-ww // s)), dtype=xp.float32)
        if self.device == "cuda":
            # ONNX Runtime runs on its own stream: the uploads must have landed before it reads them.
            xp.cuda.get_current_stream().synchronize()
        b = self._binding
        b.clear_binding_inputs()
        b.clear_binding_outputs()
        b.bind_input("image", self.device, self.device_id, np.float32, list(x.shape), self._ptr(x))
        b.bind_input("time", self.device, self.device_id, np.float32, list(t.shape), self._ptr(t))
        b.bind_output("embedding", self.device, self.device_id, np.float32, list(out.shape), self._ptr(out))
        try:
            self._session.run_with_iobinding(b)
        except Exception as exc:  # onnxruntime raises its own exception types
            raise BackendError(f"ONNX Runtime failed on a batch of shape {tuple(image.shape)}: {exc}") from exc
        b.synchronize_outputs()  # the output is complete before anyone reads it
        return out

    def _close(self) -> None:
        self._binding = None
        super()._close()

    def describe(self) -> str:
        return f"{super().describe()} [IO binding on {self.device}:{self.device_id}]"
