"""Joint bilateral upsampling (Kopf et al., 2007) of stride-8 label scores.

Each full-resolution pixel p takes a weighted mean of the scores of the stride-8 cells q
whose centres are nearest to it (2r x 2r of them; r = 1 gives bilinear's 2x2):

    x_p = sum_q w_pq s_q / sum_q w_pq,
    w_pq = c_q exp(-|p - q|^2 / 2 ss^2 - min(|g_p - g_q|^2 / 2, cap))

with c_q the cell's confidence, |p - q| the distance to the cell centre in pixels, g the
frame's (luma / sl, u / sc, v / sc) and g_q the mean of g over the cell. Cells whose mean
colour matches the pixel dominate, so boundaries follow the frame's edges. The colour term
is capped so a pixel unlike every cell near it falls back to a spatial (bilinear-like) mean
instead of dividing by zero. Cheaper than the bilateral solver: a fixed number of taps, no
grid, no iterations; but it only looks at the cells next to the pixel.

Only cells within r - 1 cells of a label change are filtered (exactly: elsewhere all taps
share the cell's label), and each tap is read per cell quadrant and broadcast over its
pixels. Written once against an array module.
"""

from __future__ import annotations

from typing import Any

from ..errors import InputError
from ..xp import get_xp
from .bilateral_solver import STRIDE, band_cells, cell_pixels, check_inputs, labels_with_band, with_band

COLOUR_CAP = 20.0  # cap on the colour exponent: weight >= e^-20 times the spatial weight
# Defaults chosen on the DAVIS-2016 train split (benchmarks/upsample.py; docs/UPSAMPLING.md).
DEFAULT_SIGMA_SPATIAL = 4.0
DEFAULT_SIGMA_LUMA = 16.0
DEFAULT_SIGMA_CHROMA = 8.0


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


def cell_means(guide: Any, cells: Any, w: int) -> Any:
    """Mean RGB of cells (K,) over their pixels inside the frame: float32 (K, 3)."""
    xp = get_xp(guide)
    hh, ww = guide.shape[:2]
    ys, xs, inside = cell_pixels(cells, w, (hh, ww))
    px = xp.take(guide.reshape(-1, 3), ys * ww + xs, axis=0).astype(xp.float32)  # (K, 64, 3)
    weight = inside.astype(xp.float32)
    return xp.einsum("kpc,kp->kc", px, weight) / weight.sum(axis=1)[:, None]


def joint_bilateral_upsample(scores: Any, guide: Any, confidence: Any = None, *,
                             sigma_spatial: float = DEFAULT_SIGMA_SPATIAL,
                             sigma_luma: float = DEFAULT_SIGMA_LUMA,
                             sigma_chroma: float | None = DEFAULT_SIGMA_CHROMA, radius: int = 1) -> Any:
    """Upsample stride-8 scores to full resolution with the joint bilateral filter.

    scores: float32 (C, h, w), h = ceil(H / 8), w = ceil(W / 8); guide: uint8 (H, W, 3) RGB;
    confidence: float32 (h, w) in [0, 1] or None for the top vote share. sigma_spatial in
    pixels, sigma_luma and sigma_chroma in 0..255 levels (None: luma only). Each pixel reads
    the 2r x 2r cells whose centres are nearest to it (r = ``radius``; 1 is bilinear's 2x2).
    Only cells within r - 1 cells of a label change are filtered; elsewhere every cell in
    reach has the same label (a weighted mean of score vectors sharing an argmax keeps it), so
    those pixels keep their cell's scores. Returns float32 (C, H, W) scores on the scores'
    device (rows sum to 1 where the inputs' do); labels = argmax over C.
    """
    scores, guide, confidence = check_inputs(scores, guide, confidence)
    filtered = _filter_band(scores, guide, confidence, sigma_spatial, sigma_luma, sigma_chroma, radius)
    return with_band(scores, tuple(guide.shape[:2]), filtered)


def joint_bilateral_labels(scores: Any, guide: Any, confidence: Any = None, *,
                           sigma_spatial: float = DEFAULT_SIGMA_SPATIAL, sigma_luma: float = DEFAULT_SIGMA_LUMA,
                           sigma_chroma: float | None = DEFAULT_SIGMA_CHROMA, radius: int = 1) -> Any:
    """``argmax`` over C of :func:`joint_bilateral_upsample` (same parameters): uint8 (H, W).

    Why: outside the filtered band every pixel keeps its cell's label, so only the band's
    pixels need their filtered scores compared; the (C, H, W) float32 scores of the whole
    frame are never made (an interactive session redraws every frame a click changed).
    """
    scores, guide, confidence = check_inputs(scores, guide, confidence)
    filtered = _filter_band(scores, guide, confidence, sigma_spatial, sigma_luma, sigma_chroma, radius)
    return labels_with_band(scores, tuple(guide.shape[:2]), filtered)


def _filter_band(scores: Any, guide: Any, confidence: Any, sigma_spatial: float, sigma_luma: float,
                 sigma_chroma: float | None, radius: int) -> tuple[Any, Any] | None:
    """The filtered pixels near label changes: flat pixel ids (P,) and their scores float32 (C, P),
    or None where the frame has no label change (every pixel keeps its cell's scores)."""
    if sigma_spatial <= 0 or sigma_luma <= 0 or (sigma_chroma is not None and sigma_chroma <= 0):
        raise InputError(f"sigmas must be > 0, got {sigma_spatial}, {sigma_luma}, {sigma_chroma}")
    if int(radius) != radius or radius < 1:
        raise InputError(f"radius must be a whole number of cells >= 1, got {radius}")
    xp = get_xp(scores)
    nc, h, w = scores.shape
    hh, ww = guide.shape[:2]
    r = int(radius)
    # A cell whose taps (all within r cells) share its label keeps it: that holds unless a
    # label change (a cell with a differing 8-neighbour) lies within r - 1 cells.
    cells = band_cells(scores, r - 1)
    if cells.shape[0] == 0:
        return None
    ys, xs, inside = cell_pixels(cells, w, (hh, ww))  # (K, 64) each
    feats = guide_features(xp.take(guide.reshape(-1, 3), ys * ww + xs, axis=0), sigma_luma, sigma_chroma)
    # Cell colours are needed out to r cells beyond the filtered ones.
    reach = band_cells(scores, 2 * r - 1)
    rgb_means = xp.zeros((h * w, 3), dtype=xp.float32)
    rgb_means[reach] = cell_means(guide, reach, w)
    means = guide_features(rgb_means, sigma_luma, sigma_chroma)  # (h * w,) each
    conf = xp.maximum(confidence, 1e-6).ravel()  # > 0, so some weight is never 0
    flat_scores = scores.reshape(nc, h * w)

    # A pixel's taps depend only on its cell and on which quadrant of the cell it lies in:
    # the cells whose centres are nearest are i0 - r + 1 .. i0 + r with i0 = ci - 1 + qy
    # (bilinear's two for r = 1). So pixels are viewed as (K, qy, iy, qx, ix) = (K, 2, 4, 2, 4),
    # every tap reads (K, 2, 2) cell values and broadcasts them over the quadrants' pixels.
    k = cells.shape[0]
    half = STRIDE // 2
    shape5 = (k, 2, half, 2, half)
    # Features scaled by 1/sqrt(2), so a squared difference is already the colour exponent.
    root_half = float(0.5 ** 0.5)
    feats = [f.reshape(shape5) * root_half for f in feats]
    means = [m * root_half for m in means]
    ci = (cells // w)[:, None, None] + xp.arange(-1, 1, dtype=xp.int32)[None, :, None]  # (K, 2, 1)
    cj = (cells % w)[:, None, None] + xp.arange(-1, 1, dtype=xp.int32)[None, None, :]  # (K, 1, 2)
    # Distance, in cells, from a pixel at offset o (0..7) in its cell to tap t of its quadrant.
    o = (xp.arange(STRIDE, dtype=xp.float32) + 0.5) / STRIDE - 0.5
    quad = (xp.arange(STRIDE) >= half).astype(xp.float32)
    inv2s2 = float(STRIDE) ** 2 / (2.0 * float(sigma_spatial) ** 2)
    acc_w = xp.zeros(shape5, dtype=xp.float32)
    acc = xp.zeros((nc,) + shape5, dtype=xp.float32)
    d2 = xp.empty(shape5, dtype=xp.float32)  # scratch, reused by every tap
    diff = xp.empty(shape5, dtype=xp.float32)
    for a in range(1 - r, r + 1):
        dy2 = ((o - (quad - 1 + a)) ** 2 * inv2s2).reshape(2, half)
        for b in range(1 - r, r + 1):
            dx2 = ((o - (quad - 1 + b)) ** 2 * inv2s2).reshape(2, half)
            spatial = xp.exp(-(dy2[:, :, None, None] + dx2[None, None, :, :]))  # (2, 4, 2, 4)
            qi, qj = ci + a, cj + b
            ok = (qi >= 0) & (qi < h) & (qj >= 0) & (qj < w)  # (K, 2, 2)
            q = xp.where(ok, qi * w + qj, 0)
            for j, (f, m) in enumerate(zip(feats, means)):
                xp.subtract(f, m[q][:, :, None, :, None], out=diff)
                if j == 0:
                    xp.multiply(diff, diff, out=d2)
                else:
                    diff *= diff
                    d2 += diff
            xp.minimum(d2, COLOUR_CAP, out=d2)
            xp.negative(d2, out=d2)
            wt = xp.exp(d2, out=d2)
            wt *= spatial[None]
            wt *= xp.where(ok, conf[q], 0.0).astype(xp.float32)[:, :, None, :, None]
            acc_w += wt
            for c in range(nc):
                xp.multiply(wt, flat_scores[c, q][:, :, None, :, None], out=diff)
                acc[c] += diff
    res = (acc / acc_w[None]).reshape(nc, k, STRIDE * STRIDE)
    return (ys * ww + xs)[inside], res[:, inside]
