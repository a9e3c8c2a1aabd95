"""Bilinear upsampling of stride-8 label scores to full resolution."""

from __future__ import annotations

from typing import Any

from ..xp import get_xp
from .labels import argmax_labels


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


def bilinear_labels(scores: Any, out_size: tuple[int, int], stride: int = 8) -> Any:
    """``argmax`` over C of :func:`bilinear_upsample`: uint8 (H, W), interpolating few pixels.

    Why: a pixel is a convex combination of its four cells' scores, so where those four
    cells share one argmax label the pixel takes it too; only pixels between cells of
    different labels (a few percent of a frame) are interpolated, with the very float32
    steps of :func:`bilinear_upsample`. scores: float32 (C, h, w) at ``stride``.
    """
    xp = get_xp(scores)
    hh, ww = out_size
    _, h, w = scores.shape
    lab = argmax_labels(scores)  # (h, w)
    y0, y1, wy = _axis_weights(xp, hh, h, stride)
    x0, x1, wx = _axis_weights(xp, ww, w, stride)
    # same[i, j]: cell (i, j) has the label of (i + 1, j), (i, j + 1) and (i + 1, j + 1), clamped
    # at the last row and column as y1 and x1 are.
    p = xp.pad(lab, ((0, 1), (0, 1)), mode="edge")
    same = (p[1:, :-1] == lab) & (p[:-1, 1:] == lab) & (p[1:, 1:] == lab)
    out = xp.take(lab[y0], x0, axis=1)  # (H, W), C-ordered (``lab[y0][:, x0]`` need not be)
    mixed = xp.flatnonzero(~xp.take(same[y0], x0, axis=1))
    if mixed.shape[0]:
        yy, xx = mixed // ww, mixed % ww
        a0, a1, b0, b1, fy, fx = y0[yy], y1[yy], x0[xx], x1[xx], wy[yy], wx[xx]
        r0 = scores[:, a0, b0] * (1 - fy) + scores[:, a1, b0] * fy  # (C, n)
        r1 = scores[:, a0, b1] * (1 - fy) + scores[:, a1, b1] * fy
        out.reshape(-1)[mixed] = argmax_labels(r0 * (1 - fx) + r1 * fx)
    return out
