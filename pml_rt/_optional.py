"""Lazy imports of optional heavy libraries, with the fix in the error message.

``import pml_rt`` must not import torch, tensorrt or cupy: they are slow to import and
often absent. Code that needs one calls :func:`require` at the point of use.
"""

from __future__ import annotations

import importlib
from types import ModuleType

from .errors import MissingDependencyError

# module name -> the pip command that provides it
_INSTALL_HINTS: dict[str, str] = {
    "torch": "pip install 'pml-rt[export]'  (CPU wheel: pip install torch==2.13.0)",
    "onnx": "pip install 'pml-rt[export]'",
    "onnxruntime": "pip install onnxruntime",
    "tensorrt": "pip install 'pml-rt[tensorrt]'  (needs an NVIDIA GPU and driver)",
    "cupy": "pip install 'pml-rt[gpu]'  (for example cupy-cuda12x)",
    "cupyx": "pip install 'pml-rt[gpu]'  (for example cupy-cuda12x)",
    "scipy": "pip install scipy",
    "av": "pip install av",
    "ray": "pip install 'pml-rt[ray]'",
    "matplotlib": "pip install matplotlib",
    "starlette": "pip install 'pml-rt[web]'",
    "uvicorn": "pip install 'pml-rt[web]'",
    "skimage": "pip install scikit-image",
    "cv2": "pip install opencv-contrib-python-headless",
}


def require(name: str, purpose: str = "") -> ModuleType:
    """Import and return module ``name``; raise :class:`MissingDependencyError` with the fix.

    ``purpose`` is a few words on what needs it ("the TensorRT backend"), used in the message.
    """
    try:
        return importlib.import_module(name)
    except ImportError as exc:  # pragma: no cover - exercised where the library is absent
        top = name.split(".")[0]
        hint = _INSTALL_HINTS.get(top, f"pip install {top}")
        what = f" for {purpose}" if purpose else ""
        raise MissingDependencyError(
            f"{name} is needed{what} but cannot be imported ({exc}). Install it with: {hint}"
        ) from exc


def available(name: str) -> tuple[bool, str]:
    """Return ``(True, "")`` if ``name`` imports, else ``(False, reason)``. Never raises."""
    try:
        importlib.import_module(name)
        return True, ""
    except Exception as exc:  # noqa: BLE001 - any import failure means "not available"
        return False, f"{type(exc).__name__}: {exc}"
