"""DAVIS benchmark figures: region J, boundary F and their Mean / Recall / Decay.

Written to give the same numbers as the DAVIS toolkits (``davis2017-evaluation``'s
``metrics.py`` / ``utils.py`` / ``evaluation.py``, which keep DAVIS 2016's definitions):

- J: intersection over union of two binary masks; 1 where both are empty.
- F: boundary F-measure. Boundaries are DAVIS's ``seg2bmap`` (a pixel is a boundary pixel when it
  differs from its right, bottom or bottom-right neighbour, with the toolkit's special cases on
  the last row and column); a boundary pixel matches when the other boundary lies within
  ``bound_pix = ceil(bound_th * image diagonal)`` pixels (a disk dilation; 8 at 854x480).
  F = 1 where both boundaries are empty, 0 where only one is.
- Mean, Recall (share of frames scoring above 0.5) and Decay (mean of the first quarter of frames
  minus mean of the last, with the toolkit's ``linspace`` binning).
- Semi-supervised scoring skips the first and last frame; statistics are averaged per object
  over all sequences; J&F = (J-Mean + F-Mean) / 2.

Masks are computed on the host with NumPy/SciPy (CuPy inputs are copied over once): this is
evaluation, not the runtime's hot path. Frames are handled together as (T, H, W) arrays.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np
from scipy import ndimage

from .errors import InputError
from .xp import to_host

__all__ = [
    "jaccard",
    "f_measure",
    "seg2bmap",
    "boundary_radius",
    "db_statistics",
    "evaluate_sequence",
    "summarize",
]


def _pair(pred: Any, gt: Any, fn: str) -> tuple[np.ndarray, np.ndarray]:
    """Return ``pred`` and ``gt`` as host bool arrays of one shape, (H, W) or (T, H, W)."""
    p = to_host(pred)
    g = to_host(gt)
    if p.shape != g.shape:
        raise InputError(
            f"{fn}: prediction has shape {p.shape} but ground truth has {g.shape}; "
            "expected two masks of the same (H, W) or (T, H, W) shape"
        )
    if p.ndim not in (2, 3):
        raise InputError(f"{fn}: expected (H, W) or (T, H, W) masks, got shape {p.shape}")
    if min(p.shape[-2:], default=0) < 1:
        raise InputError(f"{fn}: masks have an empty side, shape {p.shape}")
    # Any nonzero value is foreground, as the toolkit's astype(bool) does.
    return p.astype(bool, copy=False), g.astype(bool, copy=False)


def jaccard(pred: Any, gt: Any) -> float | np.ndarray:
    """Region similarity J (IoU) of binary masks; 1 where both masks are empty.

    ``pred``, ``gt``: (H, W) or (T, H, W), any dtype (nonzero = foreground).
    Returns a float for (H, W) input, a (T,) float64 array for (T, H, W).
    """
    p, g = _pair(pred, gt, "jaccard")
    inter = np.count_nonzero(p & g, axis=(-2, -1))
    union = np.count_nonzero(p | g, axis=(-2, -1))
    j = np.where(union == 0, 1.0, inter / np.maximum(union, 1))
    return float(j) if p.ndim == 2 else j.astype(np.float64)


def seg2bmap(seg: Any) -> np.ndarray:
    """DAVIS ``seg2bmap``: 1-pixel-wide boundary map of binary mask(s), (..., H, W) bool.

    A pixel is on the boundary where it differs from its right (e), bottom (s) or
    bottom-right (se) neighbour, pixels past the edge counting as background; the last row
    compares only with its right neighbour, the last column only with its bottom neighbour,
    and the bottom-right pixel is never a boundary (exactly the toolkit's special cases).
    """
    s0 = to_host(seg).astype(bool, copy=False)
    e = np.zeros_like(s0)
    s = np.zeros_like(s0)
    se = np.zeros_like(s0)
    e[..., :, :-1] = s0[..., :, 1:]
    s[..., :-1, :] = s0[..., 1:, :]
    se[..., :-1, :-1] = s0[..., 1:, 1:]
    b = (s0 ^ e) | (s0 ^ s) | (s0 ^ se)
    b[..., -1, :] = s0[..., -1, :] ^ e[..., -1, :]
    b[..., :, -1] = s0[..., :, -1] ^ s[..., :, -1]
    b[..., -1, -1] = False
    return b


def boundary_radius(height: int, width: int, bound_th: float = 0.008) -> float:
    """Matching tolerance in pixels: ``bound_th`` itself if >= 1, else ceil(bound_th * diagonal).

    Computed as the toolkit does (``np.ceil(bound_th * np.linalg.norm(shape))``): 8 at 854x480.
    """
    if not bound_th > 0:
        raise InputError(f"bound_th must be > 0 (a fraction of the diagonal, or pixels if >= 1), got {bound_th}")
    if bound_th >= 1:
        return float(bound_th)
    return float(np.ceil(bound_th * np.linalg.norm((height, width))))


def _dilate_disk(b: np.ndarray, radius: float) -> np.ndarray:
    """Binary dilation of (..., H, W) bool by the disk {dx^2 + dy^2 <= radius^2}, per frame.

    Same result as ``cv2.dilate(b, skimage.morphology.disk(radius))`` in the toolkit, done as
    one 1-D running maximum per row offset (the disk's half-width at that offset) so the cost
    is O(pixels x radius) for all frames at once rather than O(pixels x disk area).
    """
    r = int(math.floor(radius))
    r2 = radius * radius
    out = np.zeros_like(b)
    u = b.view(np.uint8)
    h = b.shape[-2]
    for dy in range(0, r + 1):
        w = math.isqrt(int(math.floor(r2 - dy * dy)))  # largest w with w^2 + dy^2 <= r^2
        row = ndimage.maximum_filter1d(u, 2 * w + 1, axis=-1, mode="constant", cval=0).view(bool)
        if dy == 0:
            out |= row
        elif dy < h:
            out[..., dy:, :] |= row[..., :-dy, :]
            out[..., :-dy, :] |= row[..., dy:, :]
    return out


def f_measure(pred: Any, gt: Any, bound_th: float = 0.008) -> float | np.ndarray:
    """Boundary F-measure of binary masks as DAVIS computes it.

    ``pred``, ``gt``: (H, W) or (T, H, W), any dtype (nonzero = foreground). ``bound_th``: the
    tolerance as a fraction of the image diagonal (or pixels where >= 1).
    Returns a float for (H, W) input, a (T,) float64 array for (T, H, W).
    Precision = share of predicted boundary pixels within the tolerance of the true boundary,
    recall the converse; with no predicted boundary precision is 1, with no true boundary
    recall is 1, so F is 1 where both are empty and 0 where only one is.
    """
    p, g = _pair(pred, gt, "f_measure")
    radius = boundary_radius(p.shape[-2], p.shape[-1], bound_th)
    pb = seg2bmap(p)
    gb = seg2bmap(g)
    n_p = np.count_nonzero(pb, axis=(-2, -1))
    n_g = np.count_nonzero(gb, axis=(-2, -1))
    # Dilate only inside the box holding every boundary pixel of every frame: matches are
    # counted at boundary pixels, and the dilation there depends only on boundary pixels,
    # so the crop changes nothing and saves most of the work on small objects.
    occupied = (pb | gb).reshape(-1, *pb.shape[-2:]).any(axis=0)
    rows = np.flatnonzero(occupied.any(axis=1))
    cols = np.flatnonzero(occupied.any(axis=0))
    if rows.size:
        box = (Ellipsis, slice(rows[0], rows[-1] + 1), slice(cols[0], cols[-1] + 1))
        pb, gb = np.ascontiguousarray(pb[box]), np.ascontiguousarray(gb[box])
    p_match = np.count_nonzero(pb & _dilate_disk(gb, radius), axis=(-2, -1))
    g_match = np.count_nonzero(gb & _dilate_disk(pb, radius), axis=(-2, -1))
    # An empty boundary gives precision (or recall) 1; the other side then matches nothing
    # (dilating an empty map gives nothing), so only-one-empty yields (1, 0) or (0, 1): F = 0.
    precision = np.where(n_p == 0, 1.0, p_match / np.maximum(n_p, 1))
    recall = np.where(n_g == 0, 1.0, g_match / np.maximum(n_g, 1))
    denom = precision + recall
    f = np.where(denom == 0, 0.0, 2 * precision * recall / np.where(denom == 0, 1.0, denom))
    return float(f) if p.ndim == 2 else f.astype(np.float64)


def db_statistics(per_frame: Any) -> dict[str, float]:
    """Mean, Recall and Decay of one object's per-frame scores, (T,) floats.

    As the toolkit's ``db_statistics``: NaNs are left out of the mean; recall is the share of
    frames scoring above 0.5; decay splits the frames into 4 bins at
    ``round(linspace(1, T, 5)) - 1`` (each bin includes its right edge, so neighbouring bins
    share a frame) and returns mean(bin 0) - mean(bin 3). Returns NaN for no frames.
    """
    v = np.asarray(to_host(per_frame), dtype=np.float64)
    if v.ndim != 1:
        raise InputError(f"db_statistics: expected a (T,) array of per-frame scores, got shape {v.shape}")
    n = v.shape[0]
    if n == 0:
        return {"mean": float("nan"), "recall": float("nan"), "decay": float("nan")}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", category=RuntimeWarning)
        mean = float(np.nanmean(v))
        recall = float(np.nanmean(v > 0.5))
        ids = (np.round(np.linspace(1, n, 5) + 1e-10) - 1).astype(np.int64)
        bins = [v[ids[i] : ids[i + 1] + 1] for i in range(4)]
        decay = float(np.nanmean(bins[0]) - np.nanmean(bins[3]))
    return {"mean": mean, "recall": recall, "decay": decay}


def evaluate_sequence(
    pred: Any,
    gt: Any,
    objects: Iterable[int] | None = None,
    skip_first_last: bool = True,
    bound_th: float = 0.008,
) -> dict[int, dict[str, np.ndarray]]:
    """Per-object, per-frame J and F of one sequence.

    ``pred``, ``gt``: (T, H, W) integer object-id maps (0 = background), e.g. uint8.
    ``objects``: ids to score; default every nonzero id present in ``gt`` on any frame.
    ``skip_first_last``: drop frame 0 (the given annotation) and the last frame, as the
    semi-supervised protocol does. Returns ``{obj_id: {"J": (T',) float64, "F": (T',) float64}}``.
    """
    p = to_host(pred)
    g = to_host(gt)
    if p.shape != g.shape or g.ndim != 3:
        raise InputError(
            f"evaluate_sequence: expected prediction and ground truth as (T, H, W) id maps of one "
            f"shape, got {p.shape} and {g.shape}"
        )
    for name, a in (("prediction", p), ("ground truth", g)):
        if not (np.issubdtype(a.dtype, np.integer) or a.dtype == bool):
            raise InputError(f"evaluate_sequence: {name} must hold integer object ids, got dtype {a.dtype}")
    if objects is None:
        ids = [int(i) for i in np.unique(g) if i != 0]
    else:
        ids = [int(i) for i in objects]
        bad = [i for i in ids if i <= 0]
        if bad:
            raise InputError(f"evaluate_sequence: object ids must be >= 1 (0 is background), got {bad}")
    if skip_first_last:
        if g.shape[0] < 3:
            raise InputError(
                f"evaluate_sequence: {g.shape[0]} frame(s) leave none once the first and last are "
                "skipped; pass skip_first_last=False to score every frame"
            )
        p, g = p[1:-1], g[1:-1]
    out: dict[int, dict[str, np.ndarray]] = {}
    for i in ids:
        pm = p == i
        gm = g == i
        out[i] = {"J": jaccard(pm, gm), "F": f_measure(pm, gm, bound_th=bound_th)}
    return out


def summarize(results: Mapping[str, Mapping[Any, Mapping[str, Any]]]) -> dict[str, Any]:
    """DAVIS summary of per-frame results ``{seq: {obj_id: {"J": (T,), "F": (T,)}}}``.

    Returns ``{"J&F-Mean", "J-Mean", "J-Recall", "J-Decay", "F-Mean", "F-Recall", "F-Decay"}``
    as floats, each the mean over all objects of all sequences of that object's statistic (as
    the toolkit averages), plus
    ``"per_object": {"<seq>_<obj>": {"J-Mean", "F-Mean"}}`` (the toolkit's per-"sequence" table),
    ``"per_sequence": {seq: {"J-Mean", "F-Mean", "J&F-Mean"}}`` (means over that sequence's
    objects) and ``"n_objects"``.
    """
    stats: dict[str, list[float]] = {k: [] for k in ("J-M", "J-R", "J-D", "F-M", "F-R", "F-D")}
    per_object: dict[str, dict[str, float]] = {}
    per_sequence: dict[str, dict[str, float]] = {}
    for seq, objs in results.items():
        if not objs:
            raise InputError(f"summarize: sequence {seq!r} has no objects")
        seq_j: list[float] = []
        seq_f: list[float] = []
        for obj, res in objs.items():
            missing = [k for k in ("J", "F") if k not in res]
            if missing:
                raise InputError(f"summarize: sequence {seq!r} object {obj!r} lacks {missing}; expected keys 'J' and 'F'")
            js = db_statistics(res["J"])
            fs = db_statistics(res["F"])
            for m, key in (("mean", "M"), ("recall", "R"), ("decay", "D")):
                stats[f"J-{key}"].append(js[m])
                stats[f"F-{key}"].append(fs[m])
            per_object[f"{seq}_{obj}"] = {"J-Mean": js["mean"], "F-Mean": fs["mean"]}
            seq_j.append(js["mean"])
            seq_f.append(fs["mean"])
        jm, fm = float(np.mean(seq_j)), float(np.mean(seq_f))
        per_sequence[str(seq)] = {"J-Mean": jm, "F-Mean": fm, "J&F-Mean": (jm + fm) / 2}
    if not per_object:
        raise InputError("summarize: no sequences given")
    m = {k: float(np.mean(v)) for k, v in stats.items()}
    return {
        "J&F-Mean": (m["J-M"] + m["F-M"]) / 2,
        "J-Mean": m["J-M"],
        "J-Recall": m["J-R"],
        "J-Decay": m["J-D"],
        "F-Mean": m["F-M"],
        "F-Recall": m["F-R"],
        "F-Decay": m["F-D"],
        "per_object": per_object,
        "per_sequence": per_sequence,
        "n_objects": len(per_object),
    }
