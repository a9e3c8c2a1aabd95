"""Array-module helpers: the same code runs on NumPy (CPU) and CuPy (GPU).

Array code takes arrays and asks :func:`get_xp` for their module instead of importing
numpy directly, the way ``cupy.get_array_module`` is meant to be used. Crossing between
host and device happens only in :func:`to_host` and :func:`to_device`.
"""

from __future__ import annotations

import sys
from types import ModuleType
from typing import Any

import numpy as np


def get_xp(*arrays: Any) -> ModuleType:
    """Return ``cupy`` if any argument is a CuPy array, else ``numpy``.

    CuPy is only consulted when it is already imported, so this never imports it.
    """
    cp = sys.modules.get("cupy")
    if cp is not None:
        for a in arrays:
            if isinstance(a, cp.ndarray):
                return cp
    return np


def to_host(a: Any) -> np.ndarray:
    """Return ``a`` as a NumPy array (copies from the device where it is a CuPy array)."""
    cp = sys.modules.get("cupy")
    if cp is not None and isinstance(a, cp.ndarray):
        return cp.asnumpy(a)
    return np.asarray(a)


def to_device(a: Any, xp: ModuleType) -> Any:
    """Return ``a`` as an array of module ``xp`` (numpy or cupy)."""
    if xp is np:
        return to_host(a)
    return xp.asarray(a)


def array_modules() -> list[tuple[str, ModuleType | None, str]]:
    """List ``(name, module or None, reason)`` for every array module pml-rt supports.

    Used by tests (to parametrise and to skip visibly) and by ``pml-rt info``.
    """
    out: list[tuple[str, ModuleType | None, str]] = [("numpy", np, "")]
    try:
        import cupy  # noqa: PLC0415 - optional, imported only here

        cupy.zeros(1)  # fails without a usable device
        out.append(("cupy", cupy, ""))
    except Exception as exc:  # noqa: BLE001
        out.append(("cupy", None, f"{type(exc).__name__}: {exc}"))
    return out
