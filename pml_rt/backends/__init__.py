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
    """Create the backend ``name`` ("auto", "onnxruntime", "tensorrt" or "torch") for model ``cfg``.

    With "auto", options the chosen backend does not take (``engine_path`` when TensorRT is
    absent, say) are left out and logged; torch on a GPU gets ``device="cuda"``, TensorRT the
    engine found in the default folder.
    """
    if name == "auto":
        name, why = _pick_auto(cfg, kwargs)
        kwargs, dropped = _fit_options(name, _auto_options(name, cfg, kwargs))
        log.info("backend auto -> %s (%s)%s", name, why,
                 f"; options it does not take left out: {', '.join(dropped)}" if dropped else "")
    if name == "onnxruntime":
        if kwargs.get("device") == "cuda" or any("CUDA" in str(p) or "Tensorrt" in str(p)
                                                 for p in kwargs.get("providers") or []):
            from .onnxruntime_gpu import OnnxRuntimeIOBindingBackend  # noqa: PLC0415

            return OnnxRuntimeIOBindingBackend(cfg, **kwargs)
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


def _ort_ok() -> bool:
    return available("onnxruntime")[0]


def _torch_cuda(status: dict) -> bool:
    ok_t, why_t = status["torch"]
    return bool(ok_t and "CUDA" in why_t and _cuda_ok()[0])


def _pick_auto(cfg: ModelConfig, kwargs: dict) -> tuple[str, str]:
    """Fastest present: TensorRT engine on a GPU > torch on CUDA > ONNX Runtime (CPU)."""
    if not _cuda_ok()[0] and _ort_ok():
        # Every GPU path returns CuPy arrays; without a CUDA device seen by CuPy, skip probing
        # torch and TensorRT (importing torch alone costs seconds at start-up).
        return "onnxruntime", "no CUDA device (CuPy); ONNX Runtime runs the packaged model on the CPU"
    status = {n: (ok, why) for n, ok, why in backend_status()}
    if status["tensorrt"][0]:
        if kwargs.get("engine_path"):
            return "tensorrt", "TensorRT and a CUDA device are present and an engine was given"
        from .tensorrt_build import default_engine_dir, find_engine  # noqa: PLC0415

        if find_engine(cfg) is not None:
            return "tensorrt", f"TensorRT and a CUDA device are present and an engine was found in {default_engine_dir()}"
    if _torch_cuda(status):
        return "torch", "a CUDA device is present but no TensorRT engine; torch on CUDA beats the CPU"
    if status["onnxruntime"][0]:
        return "onnxruntime", "no GPU path present; ONNX Runtime runs the packaged model on the CPU"
    if status["torch"][0]:
        return "torch", "onnxruntime is absent; falling back to torch on the CPU"
    raise BackendError("no backend is usable: install onnxruntime (pip install onnxruntime)")


def _auto_options(name: str, cfg: ModelConfig, kwargs: dict) -> dict:
    """The options "auto" adds for the backend it picked (the caller's win)."""
    out = dict(kwargs)
    if name == "torch" and "device" not in out and _torch_cuda({n: (ok, why) for n, ok, why in backend_status()}):
        out["device"] = "cuda"
    if name == "tensorrt" and not out.get("engine_path"):
        from .tensorrt_build import find_engine  # noqa: PLC0415

        out["engine_path"] = find_engine(cfg)
    return out


def _fit_options(name: str, kwargs: dict) -> tuple[dict, list[str]]:
    """Keep the options backend ``name``'s constructor takes; return them and the names left out."""
    import inspect  # noqa: PLC0415

    if name == "onnxruntime":
        from .onnxruntime_gpu import OnnxRuntimeIOBindingBackend as cls  # noqa: PLC0415 - takes the most options
    elif name == "torch":
        from .torch_backend import TorchBackend as cls  # noqa: PLC0415
    else:
        from .tensorrt_backend import TensorRTBackend as cls  # noqa: PLC0415
    params = inspect.signature(cls.__init__).parameters
    keep = {k: v for k, v in kwargs.items() if k in params}
    return keep, sorted(set(kwargs) - set(keep))
