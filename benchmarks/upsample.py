"""Compare the upsamplers of stride-8 label scores on DAVIS frames: J, F and ms/frame.

Every method runs on the same inputs, frame by frame in turn, so the timing ratios hold even
on a busy machine. Scores come from the ground truth by :func:`scores_from_mask` (the mask
displaced by a smooth random field, stride-8 area shares, blurred, noised and quantised to
k = 5 votes, to look like kNN votes); to measure real kNN scores instead, call
:func:`compare_upsamplers` with them. OpenCV-contrib's fast bilateral solver joins the table
where ``cv2.ximgproc`` is built with Eigen (the PyPI wheels are not).

    python benchmarks/upsample.py --split train --frames 4 --displace 4
    python benchmarks/upsample.py --split val --frames 4 --methods bilinear,bilateral-solver
"""

from __future__ import annotations

import argparse
import os
import sys
import time
import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

if __package__ in (None, ""):  # run as a script: make the repo root importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pml_rt._optional import available, require  # noqa: E402
from pml_rt.errors import InputError  # noqa: E402
from pml_rt.upsample.bilateral_solver import STRIDE, bilateral_solver_upsample  # noqa: E402
from pml_rt.upsample.bilinear import bilinear_upsample  # noqa: E402
from pml_rt.upsample.joint_bilateral import joint_bilateral_upsample  # noqa: E402

# $PML_RT_DATA/davis2016-dev, else ../shared/data/davis2016-dev next to the repo.
_DATA = os.environ.get("PML_RT_DATA") or Path(__file__).resolve().parents[1].parent / "shared" / "data"
DEFAULT_ROOT = Path(_DATA) / "davis2016-dev"

# name -> fn(scores (C, h, w) float32, guide (H, W, 3) uint8 RGB) -> labels (H, W) int
Method = Callable[[np.ndarray, np.ndarray], np.ndarray]


@dataclass
class Frame:
    """One DAVIS frame: ``rgb`` uint8 (H, W, 3), ``gt`` bool (H, W) object mask."""

    sequence: str
    index: int
    rgb: np.ndarray
    gt: np.ndarray


def load_frames(root: str | Path, split: str, frames_per_sequence: int) -> list[Frame]:
    """``frames_per_sequence`` frames of each sequence of ``ImageSets/<split>.txt``, evenly spaced.

    The first and last frames are left out, as DAVIS scoring does.
    """
    pil = require("PIL.Image", "reading DAVIS frames")
    root = Path(root)
    listing = root / "ImageSets" / f"{split}.txt"
    if not listing.is_file():
        raise InputError(f"{listing} not found; pass --davis ROOT holding ImageSets/{split}.txt")
    frames = []
    for seq in listing.read_text().split():
        masks = sorted((root / "Annotations" / "480p" / seq).glob("*.png"))
        if len(masks) < 3:
            raise InputError(f"{root / 'Annotations' / '480p' / seq}: expected at least 3 masks, found {len(masks)}")
        picks = np.linspace(1, len(masks) - 2, frames_per_sequence).round().astype(int)
        for i in sorted(set(picks.tolist())):
            jpg = root / "JPEGImages" / "480p" / seq / (masks[i].stem + ".jpg")
            with pil.open(jpg) as im:
                rgb = np.asarray(im.convert("RGB"))
            with pil.open(masks[i]) as im:
                gt = np.asarray(im) > 0
            frames.append(Frame(seq, i, rgb, gt))
    return frames


def area_shares(mask: np.ndarray, stride: int = STRIDE) -> np.ndarray:
    """Share of object pixels in each stride x stride cell: float32 (ceil(H/s), ceil(W/s)).

    Cells cut by the frame's edge count only their pixels inside the frame.
    """
    hh, ww = mask.shape
    h, w = -(-hh // stride), -(-ww // stride)
    pad = np.zeros((h * stride, w * stride), np.float32)
    inside = np.zeros_like(pad)
    pad[:hh, :ww] = mask
    inside[:hh, :ww] = 1
    return (pad.reshape(h, stride, w, stride).sum((1, 3))
            / inside.reshape(h, stride, w, stride).sum((1, 3))).astype(np.float32)


def scores_from_mask(mask: np.ndarray, seed: int, *, displace: float = 4.0, blur: float = 0.7,
                     noise: float = 0.15, k: int = 5) -> np.ndarray:
    """Stride-8 kNN-like vote shares from a ground-truth mask: float32 (2, h, w), rows sum to 1.

    Exactly, with ``rng = numpy.random.default_rng(seed)``: (1) the mask is warped by a smooth
    random displacement field (two (h, w) fields of standard normal draws, Gaussian-blurred by
    2 cells, scaled to a standard deviation of ``displace`` pixels, bilinearly upsampled; the
    mask is resampled at p + d(p), nearest) since kNN votes put boundaries a few pixels off the
    frame's edges where the stride-8 embedding of a cell mixes both sides; (2) the object's
    area share of each 8x8 cell; (3) a Gaussian blur of ``blur`` cells (nearest-edge padding),
    since votes bleed across boundaries; (4) plus Gaussian noise of standard deviation
    ``noise``; (5) clipped to [0, 1] and rounded to whole votes of ``k`` neighbours
    (share = round(s * k) / k). Column 0 is background, column 1 the object.
    """
    ndimage = require("scipy.ndimage", "making benchmark scores")
    rng = np.random.default_rng(seed)
    hh, ww = mask.shape
    h, w = -(-hh // STRIDE), -(-ww // STRIDE)
    if displace > 0:
        field = []
        for _ in range(2):
            d = ndimage.gaussian_filter(rng.normal(size=(h, w)), 2.0, mode="wrap")
            d *= displace / max(float(d.std()), 1e-12)
            field.append(bilinear_upsample(d[None].astype(np.float32), (hh, ww))[0])
        yy, xx = np.mgrid[0:hh, 0:ww].astype(np.float32)
        mask = ndimage.map_coordinates(mask.astype(np.uint8), [yy + field[0], xx + field[1]],
                                       order=0, mode="nearest") > 0
    share = area_shares(mask)
    if blur > 0:
        share = ndimage.gaussian_filter(share, blur, mode="nearest")
    share = share + rng.normal(0.0, noise, share.shape)
    share = np.round(np.clip(share, 0.0, 1.0) * k) / k
    return np.stack([1.0 - share, share]).astype(np.float32)


def frame_seed(frame: Frame) -> int:
    """A seed fixed by the sequence name and frame index, the same on every machine."""
    return zlib.crc32(f"{frame.sequence}/{frame.index}".encode())


# -- metrics ----------------------------------------------------------------------------------

def _boundary(seg: np.ndarray) -> np.ndarray:
    # DAVIS seg2bmap for same-size output: a pixel is on the boundary where it differs from its
    # right, lower or lower-right neighbour.
    e = np.zeros_like(seg)
    s = np.zeros_like(seg)
    se = np.zeros_like(seg)
    e[:, :-1] = seg[:, 1:]
    s[:-1, :] = seg[1:, :]
    se[:-1, :-1] = seg[1:, 1:]
    b = (seg ^ e) | (seg ^ s) | (seg ^ se)
    b[-1, :] = seg[-1, :] ^ e[-1, :]
    b[:, -1] = seg[:, -1] ^ s[:, -1]
    b[-1, -1] = False
    return b


def local_jaccard(pred: np.ndarray, gt: np.ndarray) -> float:
    """Region IoU; 1 where both masks are empty (DAVIS J)."""
    union = np.logical_or(pred, gt).sum()
    return 1.0 if union == 0 else float(np.logical_and(pred, gt).sum() / union)


def local_f_measure(pred: np.ndarray, gt: np.ndarray, bound_th: float = 0.008) -> float:
    """DAVIS boundary F: boundary pixels match within ceil(bound_th * diagonal) pixels."""
    ndimage = require("scipy.ndimage", "the boundary F-measure")
    radius = int(np.ceil(bound_th * np.hypot(*pred.shape)))
    fb, gb = _boundary(pred.astype(bool)), _boundary(gt.astype(bool))
    nf, ng = int(fb.sum()), int(gb.sum())
    if nf == 0 and ng == 0:
        return 1.0
    if nf == 0 or ng == 0:
        return 0.0
    # A disk dilation of radius r is "Euclidean distance to the boundary <= r".
    f_dil = ndimage.distance_transform_edt(~fb) <= radius
    g_dil = ndimage.distance_transform_edt(~gb) <= radius
    precision = (fb & g_dil).sum() / nf
    recall = (gb & f_dil).sum() / ng
    return 0.0 if precision + recall == 0 else float(2 * precision * recall / (precision + recall))


Metric = Callable[[np.ndarray, np.ndarray], float]


def metric_functions() -> tuple[Metric, Metric, str]:
    """(jaccard, f_measure, source): pml_rt.metrics where it exists, else the local DAVIS ones."""
    try:
        from pml_rt import metrics  # noqa: PLC0415 - written by someone else, may be absent

        return metrics.jaccard, metrics.f_measure, "pml_rt.metrics"
    except (ImportError, AttributeError):
        return local_jaccard, local_f_measure, "local DAVIS definitions"


# -- methods ----------------------------------------------------------------------------------

def opencv_fbs_upsample(scores: np.ndarray, guide: np.ndarray, confidence: np.ndarray | None = None, *,
                        sigma_spatial: float = 8, sigma_luma: float = 8, sigma_chroma: float = 8,
                        lam: float = 128.0, iterations: int = 25) -> np.ndarray:
    """OpenCV-contrib's ``ximgproc.fastBilateralSolverFilter`` on the same inputs: float32 (C, H, W).

    Its target is the bilinear upsampling of the scores and its confidence the bilinear
    upsampling of the top vote share (it has no notion of cells); up to 4 channels per call.
    """
    cv2 = require("cv2", "the OpenCV fast bilateral solver")
    hh, ww = guide.shape[:2]
    if confidence is None:
        confidence = scores.max(axis=0)
    target = bilinear_upsample(scores, (hh, ww))
    conf = np.ascontiguousarray(bilinear_upsample(confidence[None], (hh, ww))[0], dtype=np.float32)
    bgr = np.ascontiguousarray(guide[..., ::-1])
    out = []
    for c0 in range(0, scores.shape[0], 4):
        src = np.ascontiguousarray(np.moveaxis(target[c0:c0 + 4], 0, -1), dtype=np.float32)
        res = cv2.ximgproc.fastBilateralSolverFilter(bgr, src, conf, sigma_spatial=sigma_spatial,
                                                     sigma_luma=sigma_luma, sigma_chroma=sigma_chroma,
                                                     lambda_=lam, num_iter=iterations, max_tol=1e-5)
        out.append(res.reshape(hh, ww, -1))
    return np.moveaxis(np.concatenate(out, axis=-1), -1, 0)


def opencv_fbs_status() -> tuple[bool, str]:
    """Whether OpenCV's fast bilateral solver runs here, else why not.

    The pip wheels of opencv-contrib-python(-headless) ship ``cv2.ximgproc`` built without
    Eigen, where the solver raises "not implemented"; a tiny call tells the two apart.
    """
    ok, why = available("cv2.ximgproc")
    if not ok:
        return False, why
    cv2 = require("cv2")
    try:
        cv2.ximgproc.fastBilateralSolverFilter(np.zeros((8, 8, 3), np.uint8), np.zeros((8, 8), np.float32),
                                               np.ones((8, 8), np.float32))
    except cv2.error as exc:
        return False, f"cv2 {cv2.__version__}: " + str(exc).strip().splitlines()[-1]
    return True, ""


def default_methods() -> dict[str, Method]:
    """The upsamplers to compare, each giving labels (H, W); OpenCV's where its solver runs."""
    methods: dict[str, Method] = {
        "bilinear": lambda s, g: bilinear_upsample(s, g.shape[:2]).argmax(0),
        "joint-bilateral": lambda s, g: joint_bilateral_upsample(s, g).argmax(0),
        "bilateral-solver": lambda s, g: bilateral_solver_upsample(s, g).argmax(0),
    }
    if opencv_fbs_status()[0]:
        methods["opencv-fbs"] = lambda s, g: opencv_fbs_upsample(s, g).argmax(0)
    return methods


@dataclass
class Row:
    """One method's figures over all frames; ratios are against the first method (bilinear)."""

    method: str
    j: float
    f: float
    ms: float  # median wall-clock ms per frame
    cpu_ms: float  # median CPU ms per frame (this process): less swayed by others' jobs
    j_ratio: float = 1.0
    f_ratio: float = 1.0
    ms_ratio: float = 1.0


def compare_upsamplers(frames: Sequence[np.ndarray], scores_list: Sequence[np.ndarray],
                       gts: Sequence[np.ndarray], methods: dict[str, Method],
                       object_label: int = 1) -> list[Row]:
    """Mean J, mean F and median wall and CPU ms/frame of each method, run on every frame in turn.

    frames: uint8 (H, W, 3) RGB; scores_list: float32 (C, h, w) stride-8 scores; gts: bool
    (H, W) masks of label column ``object_label``. Each method's first call is a warm-up
    outside the timing. Ratios are against the first method.
    """
    if not (len(frames) == len(scores_list) == len(gts)) or not frames:
        raise InputError(f"need as many frames, scores and masks (got {len(frames)}, {len(scores_list)}, {len(gts)})")
    jaccard, f_measure, _ = metric_functions()
    for fn in methods.values():
        fn(scores_list[0], frames[0])
    per: dict[str, dict[str, list[float]]] = {m: {"j": [], "f": [], "ms": [], "cpu": []} for m in methods}
    for rgb, sc, gt in zip(frames, scores_list, gts):
        for name, fn in methods.items():
            t0, c0 = time.perf_counter(), time.process_time()
            labels = fn(sc, rgb)
            per[name]["ms"].append(1e3 * (time.perf_counter() - t0))
            per[name]["cpu"].append(1e3 * (time.process_time() - c0))
            pred = np.asarray(labels) == object_label
            per[name]["j"].append(jaccard(pred, gt))
            per[name]["f"].append(f_measure(pred, gt))
    rows = [Row(m, float(np.mean(v["j"])), float(np.mean(v["f"])), float(np.median(v["ms"])),
                float(np.median(v["cpu"]))) for m, v in per.items()]
    base = rows[0]
    for r in rows:
        r.j_ratio, r.f_ratio, r.ms_ratio = r.j / base.j, r.f / base.f, r.ms / base.ms
    return rows


def format_table(rows: Sequence[Row]) -> str:
    """Plain-text table of :func:`compare_upsamplers` rows; dJ and dF are points (x100) over the first row."""
    base = rows[0]
    lines = [f"{'method':<18} {'J':>7} {'F':>7} {'dJ':>6} {'dF':>6} {'ms/frame':>9} {'cpu ms':>7} "
             f"{'J/bil':>6} {'F/bil':>6} {'ms/bil':>7}"]
    for r in rows:
        lines.append(f"{r.method:<18} {r.j:7.4f} {r.f:7.4f} {100 * (r.j - base.j):+6.2f} {100 * (r.f - base.f):+6.2f} "
                     f"{r.ms:9.1f} {r.cpu_ms:7.1f} {r.j_ratio:6.3f} {r.f_ratio:6.3f} {r.ms_ratio:7.2f}")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--davis", default=str(DEFAULT_ROOT), help="DAVIS root (default: %(default)s)")
    ap.add_argument("--split", default="val", choices=("train", "val"))
    ap.add_argument("--frames", type=int, default=3, help="frames per sequence (default: %(default)s)")
    ap.add_argument("--displace", type=float, default=4.0,
                    help="std of the boundary displacement of the synthetic scores, pixels (default: %(default)s)")
    ap.add_argument("--methods", default="", help="comma-separated subset of: bilinear, joint-bilateral, "
                    "bilateral-solver, opencv-fbs (default: all available; bilinear always first)")
    args = ap.parse_args(argv)
    if args.frames < 1:
        ap.error("--frames must be >= 1")
    methods = default_methods()
    if args.methods:
        wanted = ["bilinear"] + [m for m in args.methods.split(",") if m and m != "bilinear"]
        unknown = [m for m in wanted if m not in methods]
        if unknown:
            ap.error(f"unknown or unavailable methods {unknown}; available: {', '.join(methods)}")
        methods = {m: methods[m] for m in wanted}
    frames = load_frames(args.davis, args.split, args.frames)
    scores = [scores_from_mask(f.gt, frame_seed(f), displace=args.displace) for f in frames]
    rows = compare_upsamplers([f.rgb for f in frames], scores, [f.gt for f in frames], methods)
    _, _, source = metric_functions()
    print(f"{len(frames)} frames of {args.split} ({args.davis}), {frames[0].rgb.shape[1]}x{frames[0].rgb.shape[0]}; "
          f"scores from ground truth (scores_from_mask, displace={args.displace:g} px); metrics: {source}")
    if "opencv-fbs" not in methods and not args.methods:
        print(f"opencv-fbs skipped: {opencv_fbs_status()[1]}")
    print(format_table(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
