"""The fast bilateral solver (Barron and Poole, ECCV 2016) for stride-8 label scores.

Finds full-resolution scores x that stay close to the kNN votes where the vote is confident
and are smooth in the bilateral space of the frame (position, luma, chroma), so label
boundaries move onto the frame's edges. In the grid's vertex space the problem is

    A y = b,   A = lam * (diag(m) - diag(n) B diag(n)) + diag(S c),   b = S (c * t)

with S the splat, B the grid blur, (n, m) the bistochastic scalings, c the per-pixel
confidence and t the per-pixel target (the scores of the pixel's stride-8 cell); x = S^T y.
All C label channels share the grid and A and are solved together by a Jacobi-preconditioned
conjugate gradient (C - 1 of them where the scores' rows sum to 1: the last is 1 minus the
rest). Written once against an array module (NumPy + SciPy, or CuPy + cupyx.scipy).

Coarse, then refine: only the cells within ``band`` cells of a label change are solved
(elsewhere every cell in reach has the same label, so those pixels keep their cell's scores),
and with sigma_spatial dividing 8 (the default is 8) every vertex lies inside one score
cell, so the splats of c and c * t are the vertex's pixel count times its cell's values.
Where the band is very large (noisy votes) the grid is built from 2x2 pixel groups to bound
the time (``group``, :data:`POINT_BUDGET`).
"""

from __future__ import annotations

from typing import Any

from ..errors import InputError
from ..xp import get_xp, to_device
from .grid import bistochastize, build_grid
from .labels import argmax_labels

STRIDE = 8  # the embedding's stride: one score cell per 8x8 pixels

# Defaults chosen on the DAVIS-2016 train split (benchmarks/upsample.py; docs/UPSAMPLING.md).
DEFAULT_SIGMA_LUMA = 4.0
DEFAULT_SIGMA_CHROMA = 8.0
DEFAULT_LAM = 16.0
DEFAULT_ITERATIONS = 25
DEFAULT_TOL = 1e-4  # relative residual; 1e-5 moves ~2 pixels of 410k on train frames, for 30% more time
DEFAULT_BAND = 1  # labels differ from a whole-frame solve in ~9 px per train frame (2: ~1), 22% faster
DEFAULT_GROUP = None  # auto: see POINT_BUDGET
# With group=None the grid is built from single pixels while the band holds at most this many,
# else from 2x2 (or 4x4 ...) pixel groups: the solver's time grows with the points splatted,
# so this bounds it where the labels change all over the frame (noisy votes). About 37% of
# an 854x480 frame; DAVIS train frames with the benchmark's scores use 3-18%.
POINT_BUDGET = 150_000


def check_inputs(scores: Any, guide: Any, confidence: Any) -> tuple[Any, Any, Any]:
    """Check shapes and dtypes; return (scores float32 (C, h, w), guide, confidence float32 (h, w)).

    Everything is moved to the scores' array module (frames are usually decoded on the host
    while the scores may live on the GPU). Missing confidence becomes the top vote share.
    """
    xp = get_xp(scores)
    if getattr(scores, "ndim", 0) != 3:
        raise InputError(f"scores must be (C, h, w), got shape {tuple(getattr(scores, 'shape', ()))}")
    guide = to_device(guide, xp)
    if guide.ndim != 3 or guide.shape[2] != 3 or guide.dtype != xp.uint8:
        raise InputError(f"guide frame must be uint8 (H, W, 3) RGB, got {guide.dtype} {tuple(guide.shape)}")
    _, h, w = scores.shape
    hh, ww = guide.shape[:2]
    if (h, w) != (-(-hh // STRIDE), -(-ww // STRIDE)):
        raise InputError(f"scores are {h}x{w} cells but a {hh}x{ww} frame at stride {STRIDE} "
                         f"needs {-(-hh // STRIDE)}x{-(-ww // STRIDE)} cells")
    scores = xp.asarray(scores, dtype=xp.float32)
    if confidence is None:
        confidence = scores.max(axis=0)
    else:
        confidence = to_device(confidence, xp)
        if tuple(confidence.shape) != (h, w):
            raise InputError(f"confidence must be ({h}, {w}) like the scores' cells, got {tuple(confidence.shape)}")
    confidence = xp.clip(xp.asarray(confidence, dtype=xp.float32), 0.0, 1.0)
    return scores, guide, confidence


def nearest_cells(scores: Any, out_size: tuple[int, int]) -> Any:
    """Each pixel takes its own cell's scores: (C, h, w) -> contiguous (C, H, W)."""
    xp = get_xp(scores)
    nc, h, w = scores.shape
    hh, ww = out_size
    full = xp.broadcast_to(scores[:, :, None, :, None], (nc, h, STRIDE, w, STRIDE))
    return xp.ascontiguousarray(full.reshape(nc, h * STRIDE, w * STRIDE)[:, :hh, :ww])


def with_band(scores: Any, out_size: tuple[int, int], refined: tuple[Any, Any] | None) -> Any:
    """Full-resolution scores float32 (C, H, W): each pixel its cell's, but the pixels of a
    band refinement ``refined`` = (flat pixel ids (P,), scores (C, P)), or None for none."""
    out = nearest_cells(scores, out_size)
    if refined is not None:
        pix, vals = refined
        out.reshape(out.shape[0], -1)[:, pix] = vals
    return out


def labels_with_band(scores: Any, out_size: tuple[int, int], refined: tuple[Any, Any] | None) -> Any:
    """``argmax`` over C of :func:`with_band`, uint8 (H, W), without the (C, H, W) scores:
    each pixel its cell's label, the refined pixels their own scores' argmax."""
    out = nearest_cells(argmax_labels(scores)[None], out_size)[0]
    if refined is not None:
        pix, vals = refined
        out.reshape(-1)[pix] = argmax_labels(vals)
    return out


def band_cells(scores: Any, band: int | None) -> Any:
    """Flat ids (K,) int32 of the cells within ``band`` cells of a label change.

    A cell is on a label change when one of its 8 neighbours has another argmax label.
    Elsewhere every cell in reach has the same label, so an edge-aware refinement that
    looks no further than ``band`` cells cannot change it. ``band=None`` gives every cell.
    """
    xp = get_xp(scores)
    _, h, w = scores.shape
    if band is None:
        return xp.arange(h * w, dtype=xp.int32)
    lab = scores.argmax(axis=0)
    p = xp.pad(lab, 1, mode="edge")
    change = xp.zeros((h, w), dtype=bool)
    for dy in (0, 1, 2):
        for dx in (0, 1, 2):
            change |= p[dy:dy + h, dx:dx + w] != lab
    for _ in range(int(band)):  # grow by one cell (8-connected) per step
        p = xp.pad(change, 1)
        grown = change.copy()
        for dy in (0, 1, 2):
            for dx in (0, 1, 2):
                grown |= p[dy:dy + h, dx:dx + w]
        change = grown
    return xp.flatnonzero(change.ravel()).astype(xp.int32)


def cell_pixels(cells: Any, w: int, out_size: tuple[int, int]) -> tuple[Any, Any, Any]:
    """Pixels of cells (K,): rows, columns and an inside-the-frame mask, each (K, 64).

    Rows and columns of pixels past the frame's edge are clamped onto it (so reads stay
    valid); ``inside`` marks the real ones.
    """
    xp = get_xp(cells)
    hh, ww = out_size
    off = xp.arange(STRIDE * STRIDE, dtype=xp.int32)
    ys = ((cells // w) * STRIDE)[:, None] + (off // STRIDE)[None, :]
    xs = ((cells % w) * STRIDE)[:, None] + (off % STRIDE)[None, :]
    inside = (ys < hh) & (xs < ww)
    return xp.minimum(ys, hh - 1), xp.minimum(xs, ww - 1), inside


def _groups(rgb: Any, ys: Any, xs: Any, g: int) -> tuple[Any, Any, Any]:
    """Cells' pixels -> g x g groups: mean colour (K * 64 / g^2, 3) uint8, top-left row and column.

    rgb: (K * 64, 3) in each cell's row-major pixel order; ys, xs: (K, 64).
    """
    xp = get_xp(rgb)
    k, n = ys.shape[0], STRIDE // g
    px = rgb.reshape(k, n, g, n, g, 3).astype(xp.uint16)
    acc = None
    for i in range(g):
        for j in range(g):
            acc = px[:, :, i, :, j] if acc is None else acc + px[:, :, i, :, j]
    mean = ((acc + (g * g) // 2) // (g * g)).astype(xp.uint8).reshape(k * n * n, 3)

    def corner(a: Any) -> Any:
        return a.reshape(k, n, g, n, g)[:, :, 0, :, 0].reshape(k, n * n)

    return mean, corner(ys), corner(xs)


def _ungroup(vals: Any, g: int) -> Any:
    """Group values (C, K, 64 / g^2) -> pixel values (C, K, 64), each group's value repeated."""
    xp = get_xp(vals)
    c, k, _ = vals.shape
    n = STRIDE // g
    full = xp.broadcast_to(vals.reshape(c, k, n, 1, n, 1), (c, k, n, g, n, g))
    return full.reshape(c, k, STRIDE * STRIDE)


def _rowdot(xp: Any, a: Any, b: Any) -> Any:
    # Row-wise dot products of (C, V) arrays, as (C, 1).
    return xp.einsum("ij,ij->i", a, b)[:, None]


def solve_pcg(matvec: Any, b: Any, diag: Any, x0: Any, iterations: int, tol: float = DEFAULT_TOL) -> Any:
    """Jacobi-preconditioned conjugate gradient for all rows of b (C, V) at once.

    ``matvec`` maps (C, V) -> (C, V) with a symmetric positive definite A applied to each
    row; ``diag`` is A's diagonal (V,). Each row has its own step sizes; stops when every
    row's residual is below ``tol`` times its right-hand side, or after ``iterations``.
    Rows (not columns) are the channels because NumPy is several times slower on (V, 2).
    """
    xp = get_xp(b)
    minv = (1.0 / xp.maximum(diag, 1e-8))[None, :]
    x = x0
    r = b - matvec(x)
    z = minv * r
    p = z
    rz = _rowdot(xp, r, z)
    stop = (tol * tol) * xp.maximum(_rowdot(xp, b, b), 1e-30)
    for it in range(iterations):
        ap = matvec(p)
        alpha = rz / xp.maximum(_rowdot(xp, p, ap), 1e-30)
        x = x + alpha * p
        r = r - alpha * ap
        # The convergence check syncs a GPU: do it every few iterations only.
        if it % 5 == 4 and bool((_rowdot(xp, r, r) <= stop).all()):
            break
        z = minv * r
        rz_new = _rowdot(xp, r, z)
        p = z + (rz_new / xp.maximum(rz, 1e-30)) * p
        rz = rz_new
    return x


def bilateral_solver_upsample(scores: Any, guide: Any, confidence: Any = None, *, sigma_spatial: int = 8,
                              sigma_luma: float = DEFAULT_SIGMA_LUMA,
                              sigma_chroma: float | None = DEFAULT_SIGMA_CHROMA,
                              lam: float = DEFAULT_LAM, iterations: int = DEFAULT_ITERATIONS,
                              tol: float = DEFAULT_TOL, band: int | None = DEFAULT_BAND,
                              group: int | None = DEFAULT_GROUP) -> Any:
    """Refine stride-8 scores to full resolution with the fast bilateral solver.

    scores: float32 (C, h, w), vote shares per label column, h = ceil(H / 8), w = ceil(W / 8).
    guide: uint8 (H, W, 3) RGB frame (moved to the scores' device). confidence: float32 (h, w)
    in [0, 1], or None for the top vote share. sigma_spatial (pixels, a whole number),
    sigma_luma and sigma_chroma (0..255 levels; None: luma only) size the grid cells; lam
    weighs smoothness against the votes; iterations and tol (relative residual) stop the
    conjugate gradient. The solve covers the cells within ``band`` cells of a label change
    (None: the whole frame); every other pixel keeps its cell's scores, whose label every
    cell in reach shares (labels match a whole-frame solve but for ~9 pixels per frame).
    ``group`` g splats g x g pixel groups instead of pixels (edges then move in steps of g
    pixels); None picks 1, or more where the band is large (:data:`POINT_BUDGET`). Returns
    float32 (C, H, W) on the scores' device; labels = argmax over C. Rows still sum to ~1
    (the smoothness term leaves constants alone).
    """
    scores, guide, confidence = check_inputs(scores, guide, confidence)
    solved = _solve_band(scores, guide, confidence, sigma_spatial, sigma_luma, sigma_chroma, lam, iterations, tol,
                         band, group)
    return with_band(scores, tuple(guide.shape[:2]), solved)


def bilateral_solver_labels(scores: Any, guide: Any, confidence: Any = None, **params: Any) -> Any:
    """``argmax`` over C of :func:`bilateral_solver_upsample` (same ``params``): uint8 (H, W).

    Why: outside the solved band every pixel keeps its cell's scores, so its label is its
    cell's label; only the band's pixels need their solved scores compared. Saves making
    and reducing the (C, H, W) float32 scores of the whole frame.
    """
    scores, guide, confidence = check_inputs(scores, guide, confidence)
    return labels_with_band(scores, tuple(guide.shape[:2]), _solve_band(scores, guide, confidence, **params))


def _solve_band(scores: Any, guide: Any, confidence: Any, sigma_spatial: int = 8,
                sigma_luma: float = DEFAULT_SIGMA_LUMA, sigma_chroma: float | None = DEFAULT_SIGMA_CHROMA,
                lam: float = DEFAULT_LAM, iterations: int = DEFAULT_ITERATIONS, tol: float = DEFAULT_TOL,
                band: int | None = DEFAULT_BAND, group: int | None = DEFAULT_GROUP) -> tuple[Any, Any] | None:
    """The solve of :func:`bilateral_solver_upsample` on checked inputs: flat pixel ids (P,)
    of the band and their solved scores float32 (C, P), or None where no label changes."""
    if lam < 0 or iterations < 0 or (band is not None and band < 0):
        raise InputError(f"lam, iterations and band must be >= 0, got {lam}, {iterations}, {band}")
    if group is not None and (int(group) != group or group < 1 or STRIDE % group):
        raise InputError(f"group must be None or divide {STRIDE} (1, 2, 4 or 8), got {group}")
    xp = get_xp(scores)
    nc, h, w = scores.shape
    hh, ww = guide.shape[:2]
    cells = band_cells(scores, band)
    if cells.shape[0] == 0:
        return None
    if group is None:
        group = 1
        while group < STRIDE and cells.shape[0] * STRIDE * STRIDE > POINT_BUDGET * group * group:
            group *= 2
    group = int(group)
    # Every cell's 64 pixels; those past the frame's edge are clamped copies of the edge's
    # pixels (they weigh the edge a little more and get the same value back).
    ys, xs, _ = cell_pixels(cells, w, (hh, ww))  # (K, 64) each
    pix = (ys * ww + xs).ravel()
    rgb = xp.take(guide.reshape(-1, 3), pix, axis=0)  # take: 4x faster than rgb[pix] here
    if group > 1:  # splat g x g pixel groups (mean colour) instead of pixels
        rgb, ys, xs = _groups(rgb, ys, xs, group)
    ys, xs = ys.ravel(), xs.ravel()
    s = int(sigma_spatial)
    grid = build_grid(rgb, ys, xs, s, sigma_luma, sigma_chroma)
    n, m = bistochastize(grid, 5)  # 5 sweeps: labels on train frames match 30 exactly

    # Rows sum to 1, so A x = S c (the sum's equation) has the solution 1 (A's smoothness
    # part leaves constants alone): solve C - 1 channels and take the last as 1 - their sum.
    flat_scores = scores.reshape(nc, h * w)
    summed = nc > 1 and bool(xp.abs(flat_scores.sum(axis=0) - 1.0).max() < 1e-3)
    solve_c = nc - 1 if summed else nc
    flat_conf = confidence.ravel()
    if STRIDE % s == 0:  # every vertex lies inside one score cell: splat per vertex
        k = STRIDE // s
        vcell = (grid.vertex_yx[0] // k) * w + grid.vertex_yx[1] // k
        c_v = grid.counts * flat_conf[vcell]
        b = c_v[None, :] * flat_scores[:solve_c, vcell]  # (C', V)
    else:
        pcell = (ys // STRIDE) * w + xs // STRIDE
        c_pix = flat_conf[pcell]
        c_v = grid.splat(c_pix)
        b = xp.stack([grid.splat(c_pix * flat_scores[c][pcell]) for c in range(solve_c)])
    b = xp.ascontiguousarray(b, dtype=xp.float32)

    # A = lam * (diag(m) - diag(n) (2 dims I + N) diag(n)) + diag(c_v), stored as
    # diag(d) - lam * diag(n) N diag(n), N the neighbour adjacency.
    d = (lam * (m - (2 * grid.dims) * n * n) + c_v).astype(xp.float32)
    a_off = grid.weighted_neighbours((-lam * n[grid.nbr_rows] * n[grid.nbr_cols]).astype(xp.float32))

    def matvec(y: Any) -> Any:
        # One sparse product per channel: a (V, C) multi-vector product is slower for small C.
        return d[None, :] * y + xp.stack([a_off @ y[c] for c in range(y.shape[0])])

    x0 = b / xp.maximum(c_v, 1e-6)[None, :]
    y = solve_pcg(matvec, b, d, x0, iterations, tol).astype(xp.float32)
    if summed:
        y = xp.concatenate([y, 1.0 - y.sum(axis=0, keepdims=True)])
    vals = grid.slice(y)  # (C, points)
    if group > 1:
        vals = _ungroup(vals.reshape(nc, cells.shape[0], -1), group).reshape(nc, -1)
    return pix, vals
