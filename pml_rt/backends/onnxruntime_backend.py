"""ONNX Runtime backend: the CPU default, with the packaged model."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from .._optional import require
from ..errors import BackendError
from ..ort_options import session_options
from ..registry import ModelConfig
from .base import Backend


class OnnxRuntimeBackend(Backend):
    """Runs the ONNX embedder with ONNX Runtime.

    ``providers`` defaults to the CPU; where onnxruntime-gpu is installed, pass
    ``["CUDAExecutionProvider", "CPUExecutionProvider"]`` (see :func:`gpu_providers`).
    """

    name = "onnxruntime"

    def __init__(self, cfg: ModelConfig, model_path: str | os.PathLike | None = None,
                 providers: list[str] | None = None, threads: int | None = None):
        super().__init__(cfg)
        self.model_path = Path(model_path) if model_path else cfg.path
        self.providers = providers or ["CPUExecutionProvider"]
        self.threads = threads
        self._session: Any = None

    def _activate(self) -> None:
        ort = require("onnxruntime", "the ONNX Runtime backend")
        if not self.model_path.is_file():
            raise BackendError(
                f"model file {self.model_path} is missing; rebuild it with: "
                f"python export/build_engine.py --onnx {self.model_path}"
            )
        opts = session_options(ort, self.threads or None)
        try:
            self._session = ort.InferenceSession(str(self.model_path), opts, providers=self.providers)
        except Exception as exc:  # onnxruntime raises its own exception types
            raise BackendError(f"ONNX Runtime cannot load {self.model_path}: {exc}") from exc

    def _infer(self, image: np.ndarray, time: np.ndarray) -> np.ndarray:
        return self._session.run(["embedding"], {"image": image, "time": time})[0]

    def _close(self) -> None:
        self._session = None

    def describe(self) -> str:
        prov = self._session.get_providers() if self._session is not None else self.providers
        return f"onnxruntime ({', '.join(prov)}) on {self.model_path.name}"


def gpu_providers() -> list[str]:
    """The GPU execution providers this onnxruntime build offers (empty on a CPU-only build)."""
    ort = require("onnxruntime")
    have = ort.get_available_providers()
    return [p for p in ("TensorrtExecutionProvider", "CUDAExecutionProvider") if p in have]
