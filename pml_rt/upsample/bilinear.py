"""Bilinear upsampling of stride-8 label scores to full resolution."""

from __future__ import annotations

from typing import Any

from ..xp import get_xp


def _axis_weights(xp: Any, n_out: int, n_in: int, stride: int) -> tuple[Any, Any, Any]:
    # Pixel centre y + 0.5 lies at (y + 0.5) / stride - 0.5 in cell coordinates (cell centres at i).
    src = (xp.arange(n_out, dtype=xp.float32) + 0.5) / stride - 0.5
    src = xp.clip(src, 0, n_in - 1)
    i0 = xp.floor(src).astype(xp.int64)
    i1 = xp.minimum(i0 + 1, n_in - 1)
    return i0, i1, (src - i0).astype(xp.float32)


def bilinear_upsample(scores: Any, out_size: tuple[int, int], stride: int = 8) -> Any:
    """scores float32 (C, h, w) at ``stride`` -> float32 (C, H, W), edges clamped."""
    xp = get_xp(scores)
    hh, ww = out_size
    _, h, w = scores.shape
    y0, y1, wy = _axis_weights(xp, hh, h, stride)
    x0, x1, wx = _axis_weights(xp, ww, w, stride)
    rows = scores[:, y0] * (1 - wy)[None, :, None] + scores[:, y1] * wy[None, :, None]  # (C, H, w)
    return rows[:, :, x0] * (1 - wx) + rows[:, :, x1] * wx
