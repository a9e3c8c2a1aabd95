"""Inference backends behind one small interface, chosen by name or automatically.

``create_backend("auto", cfg)`` picks the fastest backend present and logs which and why.
Each backend module imports its heavy library only when the backend is activated.
"""

from __future__ import annotations

import logging
from typing import Any

from .._optional import available
from ..errors import BackendError, InputError
from ..registry import ModelConfig
from .base import Backend

log = logging.getLogger("pml_rt")

BACKENDS = ("onnxruntime", "tensorrt", "torch")


def _cuda_ok() -> tuple[bool, str]:
    ok, why = available("cupy")
    if not ok:
        return False, f"cupy not importable ({why})"
    try:
        import cupy  # noqa: PLC0415

        n = cupy.cuda.runtime.getDeviceCount()
        return (n > 0, "" if n > 0 else "no CUDA device")
    except Exception as exc:  # noqa: BLE001
        return False, f"no CUDA device ({type(exc).__name__}: {exc})"


def backend_status() -> list[tuple[str, bool, str]]:
    """``(name, usable, why)`` for each backend; never raises. Used by ``pml-rt info``."""
    rows: list[tuple[str, bool, str]] = []
    ok, why = available("onnxruntime")
    if ok:
        from .onnxruntime_backend import gpu_providers  # noqa: PLC0415

        gp = gpu_providers()
        why = "CPU" + (f" + {', '.join(gp)}" if gp else " only (install onnxruntime-gpu for CUDA/TensorRT providers)")
    rows.append(("onnxruntime", ok, why))
    ok_trt, why_trt = available("tensorrt")
    cuda, why_cuda = _cuda_ok()
    rows.append(("tensorrt", ok_trt and cuda, "tensorrt and CUDA present" if ok_trt and cuda else
                 (f"tensorrt not importable ({why_trt})" if not ok_trt else why_cuda)))
    ok_t, why_t = available("torch")
    if ok_t:
        import torch  # noqa: PLC0415

        why_t = "CPU" + (" + CUDA" if torch.cuda.is_available() else "")
    rows.append(("torch", ok_t, why_t))
    return rows


def create_backend(name: str, cfg: ModelConfig, **kwargs: Any) -> Backend:
    """Create the backend ``name`` ("auto", "onnxruntime", "tensorrt" or "torch") for model ``cfg``."""
    if name == "auto":
        name, why = _pick_auto(cfg, kwargs)
        log.info("backend auto -> %s (%s)", name, why)
    if name == "onnxruntime":
        from .onnxruntime_backend import OnnxRuntimeBackend  # noqa: PLC0415

        return OnnxRuntimeBackend(cfg, **kwargs)
    if name == "torch":
        from .torch_backend import TorchBackend  # noqa: PLC0415

        return TorchBackend(cfg, **kwargs)
    if name == "tensorrt":
        try:
            from .tensorrt_backend import TensorRTBackend  # noqa: PLC0415
        except ImportError as exc:
            raise BackendError(f"the tensorrt backend is not available in this build: {exc}") from exc
        return TensorRTBackend(cfg, **kwargs)
    raise InputError(f"unknown backend {name!r}; valid: auto, {', '.join(BACKENDS)}")


def _pick_auto(cfg: ModelConfig, kwargs: dict) -> tuple[str, str]:
    """Fastest present: TensorRT engine on a GPU > torch on CUDA > ONNX Runtime (CPU)."""
    status = {n: (ok, why) for n, ok, why in backend_status()}
    if status["tensorrt"][0] and kwargs.get("engine_path"):
        return "tensorrt", "TensorRT and a CUDA device are present and an engine was given"
    ok_t, why_t = status["torch"]
    if ok_t and "CUDA" in why_t and _cuda_ok()[0]:
        return "torch", "a CUDA device is present but no TensorRT engine; torch on CUDA beats the CPU"
    if status["onnxruntime"][0]:
        return "onnxruntime", "no GPU path present; ONNX Runtime runs the packaged model on the CPU"
    if ok_t:
        return "torch", "onnxruntime is absent; falling back to torch on the CPU"
    raise BackendError("no backend is usable: install onnxruntime (pip install onnxruntime)")
