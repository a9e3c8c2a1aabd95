"""The small protocol every inference backend follows (after Polygraphy's runners).

A backend turns a batch of frames into embeddings. It is created cheaply, does its heavy
set-up in :meth:`Backend.activate` (called once, lazily), and frees what it holds in
:meth:`Backend.close`. Input checks happen once in :func:`prepare_batch`, before any backend
runs, so every backend sees the same clean arrays.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ..errors import InputError
from ..registry import ModelConfig


def check_batch(frames: Any, times: Any) -> tuple[Any, np.ndarray]:
    """Check a batch without converting it: frames uint8 (N, H, W, 3) (NumPy or CuPy; one
    frame (H, W, 3) is taken as N = 1) and times -> float32 NumPy (N,)."""
    from ..xp import get_xp, to_host  # noqa: PLC0415

    frames = get_xp(frames).asarray(frames)
    if frames.ndim == 3:
        frames = frames[None]
    if frames.ndim != 4 or frames.shape[-1] != 3:
        raise InputError(f"frames must be (N, H, W, 3) RGB, got shape {tuple(frames.shape)}")
    if frames.dtype != np.uint8:
        raise InputError(f"frames must be uint8 0..255, got dtype {frames.dtype}")
    times = np.asarray(to_host(times), dtype=np.float32).reshape(-1)
    if times.shape[0] != frames.shape[0]:
        raise InputError(f"got {frames.shape[0]} frames but {times.shape[0]} times")
    return frames, times


def prepare_batch(frames: np.ndarray, times: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Check and convert a batch: uint8 (N, H, W, 3) -> float32 (N, 3, H, W); times -> float32 (N,)."""
    frames, times = check_batch(np.asarray(frames), times)
    image = np.ascontiguousarray(frames.transpose(0, 3, 1, 2), dtype=np.float32)
    return image, times


def check_embedding(out: Any, cfg: ModelConfig, hw: tuple[int, int], where: str) -> None:
    """Raise if the model returned an unexpected shape or non-finite values (a broken model file)."""
    from ..xp import get_xp  # noqa: PLC0415

    xp = get_xp(out)
    h, w = -(-hw[0] // cfg.stride), -(-hw[1] // cfg.stride)
    if out.ndim != 4 or tuple(out.shape[1:]) != (h, w, cfg.d):
        raise InputError(f"{where}: model returned shape {tuple(out.shape)}, expected (N, {h}, {w}, {cfg.d})")
    if not bool(xp.isfinite(out).all()):
        raise InputError(f"{where}: model returned NaN or infinity; the model file may be damaged")


class Backend:
    """Base class: ``embed(frames uint8 (N,H,W,3), times (N,)) -> float32 (N, h, w, d)``.

    Subclasses implement :meth:`_activate` and :meth:`_infer` (which gets the prepared
    float32 (N, 3, H, W) batch and returns (N, d, h, w)). Output arrays live on the backend's
    device: NumPy for CPU backends, CuPy for GPU backends.
    """

    name = "base"

    def __init__(self, cfg: ModelConfig):
        self.cfg = cfg
        self._active = False

    # lifecycle -------------------------------------------------------------------------
    def activate(self) -> "Backend":
        if not self._active:
            self._activate()
            self._active = True
        return self

    def close(self) -> None:
        if self._active:
            self._close()
            self._active = False

    def __enter__(self) -> "Backend":
        return self.activate()

    def __exit__(self, *exc: object) -> None:
        self.close()

    # inference -------------------------------------------------------------------------
    def embed(self, frames: np.ndarray, times: np.ndarray) -> Any:
        image, t = prepare_batch(frames, times)
        self.activate()
        out = self._infer(image, t)
        out = out.transpose(0, 2, 3, 1)  # (N, h, w, d): one row per cell for the kNN
        check_embedding(out, self.cfg, image.shape[2:], f"backend {self.name}")
        return out

    def describe(self) -> str:
        return self.name

    # to implement ----------------------------------------------------------------------
    def _activate(self) -> None:  # pragma: no cover - abstract
        raise NotImplementedError

    def _infer(self, image: np.ndarray, time: np.ndarray) -> Any:  # pragma: no cover - abstract
        raise NotImplementedError

    def _close(self) -> None:
        pass
