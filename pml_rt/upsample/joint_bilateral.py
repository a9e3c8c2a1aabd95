"""Joint bilateral upsampling (Kopf et al., 2007) of stride-8 label scores.

Each full-resolution pixel p takes a weighted mean of the scores of the stride-8 cells q
around it (the (2r + 1)^2 cells centred on its own):

    x_p = sum_q w_pq s_q / sum_q w_pq,
    w_pq = c_q exp(-|p - q|^2 / 2 ss^2 - min(|g_p - g_q|^2 / 2, cap))

with c_q the cell's confidence, |p - q| the distance to the cell centre in pixels, g the
frame's (luma / sl, u / sc, v / sc) and g_q the mean of g over the cell. Cells whose mean
colour matches the pixel dominate, so boundaries follow the frame's edges. The colour term
is capped so a pixel unlike every cell near it falls back to a spatial (bilinear-like) mean
instead of dividing by zero. Cheaper than the bilateral solver: a fixed number of taps,
no grid, no iterations; but it only looks one cell away.

Only cells within r cells of a label change are filtered, each as a row of its 64 pixels,
so every tap is one gather per cell broadcast over its pixels. Written once against an
array module.
"""

from __future__ import annotations

from typing import Any

from ..errors import InputError
from ..xp import get_xp
from .bilateral_solver import STRIDE, band_cells, cell_pixels, check_inputs, nearest_cells

COLOUR_CAP = 20.0  # cap on the colour exponent: weight >= e^-20 times the spatial weight


def guide_features(rgb: Any, sigma_luma: float, sigma_chroma: float | None) -> list[Any]:
    """BT.601 (luma / sigma_luma, u / sigma_chroma, v / sigma_chroma) of RGB (..., 3), each float32 (...).

    Works on uint8 pixels or float cell means alike (the transform is linear, so the mean of
    the features is the features of the mean). ``sigma_chroma=None`` gives luma alone.
    """
    xp = get_xp(rgb)
    r, g, b = (rgb[..., i].astype(xp.float32) for i in range(3))
    out = [(0.299 * r + 0.587 * g + 0.114 * b) * (1.0 / sigma_luma)]
    if sigma_chroma is not None:
        k = 1.0 / sigma_chroma
        out.append((-0.169 * r - 0.331 * g + 0.5 * b) * k)
        out.append((0.5 * r - 0.419 * g - 0.081 * b) * k)
    return [o.astype(xp.float32) for o in out]


def cell_means(guide: Any, h: int, w: int) -> Any:
    """Mean RGB of each stride-8 cell over its pixels inside the frame: float32 (h, w, 3)."""
    xp = get_xp(guide)
    hh, ww = guide.shape[:2]
    sums = xp.zeros((h, w, 3), dtype=xp.float32)
    h0, w0 = hh // STRIDE, ww // STRIDE  # whole cells
    whole = guide[:h0 * STRIDE, :w0 * STRIDE].reshape(h0, STRIDE, w0, STRIDE, 3)
    sums[:h0, :w0] = whole.sum(axis=(1, 3), dtype=xp.float32)
    ns = xp.full((h, w), float(STRIDE * STRIDE), dtype=xp.float32)
    if w0 < w:  # a partial column of cells on the right
        part = guide[:, w0 * STRIDE:].astype(xp.float32)
        pad = xp.zeros((h * STRIDE, part.shape[1], 3), dtype=xp.float32)
        pad[:hh] = part
        sums[:, w0] = pad.reshape(h, STRIDE, -1, 3).sum(axis=(1, 2))
        ns[:, w0] = STRIDE * part.shape[1]
    if h0 < h:  # a partial row of cells at the bottom
        part = guide[h0 * STRIDE:].astype(xp.float32)
        pad = xp.zeros((part.shape[0], w * STRIDE, 3), dtype=xp.float32)
        pad[:, :ww] = part
        sums[h0] = pad.reshape(-1, w, STRIDE, 3).sum(axis=(0, 2))
        ns[h0] = part.shape[0] * STRIDE
        if w0 < w:
            ns[h0, w0] = part.shape[0] * (ww - w0 * STRIDE)
    return sums / ns[..., None]


def joint_bilateral_upsample(scores: Any, guide: Any, confidence: Any = None, *, sigma_spatial: float = 8.0,
                             sigma_luma: float = 8.0, sigma_chroma: float | None = 8.0,
                             radius: int = 1) -> Any:
    """Upsample stride-8 scores to full resolution with the joint bilateral filter.

    scores: float32 (C, h, w), h = ceil(H / 8), w = ceil(W / 8); guide: uint8 (H, W, 3) RGB;
    confidence: float32 (h, w) in [0, 1] or None for the top vote share. sigma_spatial in
    pixels, sigma_luma and sigma_chroma in 0..255 levels (None: luma only), radius in cells.
    Only cells within ``radius`` cells of a label change are filtered; elsewhere every cell
    in reach has the same label (a weighted mean of score vectors sharing an argmax keeps
    it), so those pixels keep their cell's scores. Returns float32 (C, H, W) scores on the
    scores' device (rows sum to 1 where the inputs' do); labels = argmax over C.
    """
    scores, confidence = check_inputs(scores, guide, confidence)
    if sigma_spatial <= 0 or sigma_luma <= 0 or (sigma_chroma is not None and sigma_chroma <= 0):
        raise InputError(f"sigmas must be > 0, got {sigma_spatial}, {sigma_luma}, {sigma_chroma}")
    if int(radius) != radius or radius < 0:
        raise InputError(f"radius must be a whole number of cells >= 0, got {radius}")
    xp = get_xp(scores)
    nc, h, w = scores.shape
    hh, ww = guide.shape[:2]
    r = int(radius)
    out = nearest_cells(scores, (hh, ww))
    cells = band_cells(scores, r)
    if cells.shape[0] == 0:
        return out
    ys, xs, inside = cell_pixels(cells, w, (hh, ww))  # (K, 64) each
    feats = guide_features(guide[ys, xs], sigma_luma, sigma_chroma)  # (K, 64) each
    means = guide_features(cell_means(guide, h, w), sigma_luma, sigma_chroma)  # (h, w) each
    means = [m.ravel() for m in means]
    conf = xp.maximum(confidence, 1e-6).ravel()  # > 0, so the own cell's weight is never 0
    flat_scores = scores.reshape(nc, h * w)
    ci, cj = cells // w, cells % w

    # Pixel offsets inside a cell from its centre (3.5), as (64,) for rows and columns.
    off = xp.arange(STRIDE * STRIDE, dtype=xp.int32)
    oy = (off // STRIDE).astype(xp.float32) - (STRIDE - 1) / 2.0
    ox = (off % STRIDE).astype(xp.float32) - (STRIDE - 1) / 2.0
    inv2s2 = 1.0 / (2.0 * float(sigma_spatial) ** 2)
    acc_w = xp.zeros(ys.shape, dtype=xp.float32)
    acc = xp.zeros((nc,) + ys.shape, dtype=xp.float32)
    for dy in range(-r, r + 1):
        for dx in range(-r, r + 1):
            ni, nj = ci + dy, cj + dx
            ok = (ni >= 0) & (ni < h) & (nj >= 0) & (nj < w)
            q = xp.where(ok, ni * w + nj, 0)
            d2 = None
            for f, m in zip(feats, means):
                diff = f - m[q][:, None]
                d2 = diff * diff if d2 is None else d2 + diff * diff
            spatial = ((oy - STRIDE * dy) ** 2 + (ox - STRIDE * dx) ** 2) * inv2s2  # (64,)
            wt = xp.exp(-(xp.minimum(d2 * 0.5, COLOUR_CAP) + spatial[None, :]))
            wt *= xp.where(ok, conf[q], 0.0)[:, None]
            acc_w += wt
            acc += wt[None] * flat_scores[:, q][:, :, None]
    res = acc / acc_w[None]
    pix = (ys * ww + xs)[inside]
    out.reshape(nc, hh * ww)[:, pix] = res[:, inside]
    return out
