"""The paper's sampling (Sec. 3.3) on cached feature maps, with feature-level augmentation.

One training example is three frames of one video. 256 anchors come from the first frame;
the positive and negative pools are *all* cells of the two other frames (never the anchor
frame): same object id = positive, any other id (background included) = negative. Masks with
several objects give several ids; nothing here assumes one object.

Variety on top of the paper (six train videos are memorised otherwise), all on cached
features so no backbone runs during training:
- crops: the three frames are cut to one random window size (60-100% per side) at offsets
  that differ a little from frame to frame, and the coordinate inputs are those of the crop,
  so position stops being a shortcut;
- horizontal flips of the whole triple;
- image-level variants (scaled, colour-jittered frames, cached separately) mixed per frame;
- synthetic motion: with ``p_static`` all three frames are one frame under different crops;
- pasting: with ``p_paste`` an object's cells from another sequence are pasted, with a new id
  and a small per-frame shift, into all three frames (a distractor that moves).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

PASTE_ID = 200  # id given to a pasted object (DAVIS ids are small)


@dataclass(frozen=True)
class SamplingConfig:
    anchors: int = 256  # anchors per example (paper: 256)
    balance: bool = True  # half the anchors on objects (split evenly), half on background
    crop_min: float = 0.6  # smallest crop side, as a share of the frame (1.0: no crops)
    jitter: int = 4  # most cells a frame's crop moves relative to the others
    p_flip: float = 0.5
    p_static: float = 0.2  # synthetic motion of a single frame
    p_paste: float = 0.3  # paste an object from another sequence
    p_mix_variants: float = 0.5  # draw each frame's image variant independently
    pool_bg_stride: int = 2  # pools keep every object cell, background cells on this grid (1: all)
    time_scale: float = 0.01  # frame index -> time input, as the runtime feeds it


@dataclass
class Example:
    """One example, as cells: anchors from frame 0, the pool from frames 1 and 2.

    a_feats float32 (A, C), a_yxt float32 (A, 3) (crop-relative cell centre y, x in 0..1 and
    time), a_ids int64 (A,); p_feats (M, C), p_yxt (M, 3), p_ids (M,) likewise for the pool.
    """

    a_feats: np.ndarray
    a_yxt: np.ndarray
    a_ids: np.ndarray
    p_feats: np.ndarray
    p_yxt: np.ndarray
    p_ids: np.ndarray
    frames: tuple[int, int, int]


def choose_frames(num_frames: int, rng: np.random.Generator, static: bool) -> tuple[int, int, int]:
    """Three distinct frames of a video (anchor frame first); one frame thrice when ``static``."""
    if static or num_frames < 3:
        f = int(rng.integers(num_frames))
        return f, f, f
    a, b, c = rng.choice(num_frames, size=3, replace=False)
    return int(a), int(b), int(c)


def choose_anchors(labels: np.ndarray, n: int, rng: np.random.Generator, balance: bool = True) -> np.ndarray:
    """``n`` flat cell indices of the (h, w) label map: uniform, or half on objects (each id an
    equal share) and half on background when ``balance``. Draws with replacement only where a
    class has fewer cells than its share."""
    flat = labels.reshape(-1)
    if not balance:
        return rng.choice(flat.size, size=n, replace=flat.size < n)
    ids = [i for i in np.unique(flat) if i != 0]
    groups = [np.flatnonzero(flat == i) for i in ids]
    bg = np.flatnonzero(flat == 0)
    if not groups or bg.size == 0:
        return rng.choice(flat.size, size=n, replace=flat.size < n)
    n_obj = n // 2
    shares = [n_obj // len(groups) + (1 if j < n_obj % len(groups) else 0) for j in range(len(groups))]
    parts = [rng.choice(g, size=s, replace=g.size < s) for g, s in zip(groups, shares)]
    parts.append(rng.choice(bg, size=n - n_obj, replace=bg.size < n - n_obj))
    return np.concatenate(parts)


def _crop_boxes(shapes: list[tuple[int, int]], cfg: SamplingConfig, rng: np.random.Generator) -> list[tuple[int, int, int, int]]:
    """One window size (hc, wc) for all three frames, and per-frame offsets that differ by at most jitter."""
    hmin = min(h for h, _ in shapes)
    wmin = min(w for _, w in shapes)
    hc = max(4, int(round(hmin * rng.uniform(cfg.crop_min, 1.0))))
    wc = max(4, int(round(wmin * rng.uniform(cfg.crop_min, 1.0))))
    base = rng.uniform(0, 1, size=2)
    boxes = []
    for h, w in shapes:
        y = int(round(base[0] * (h - hc))) + int(rng.integers(-cfg.jitter, cfg.jitter + 1))
        x = int(round(base[1] * (w - wc))) + int(rng.integers(-cfg.jitter, cfg.jitter + 1))
        boxes.append((min(max(y, 0), h - hc), min(max(x, 0), w - wc), hc, wc))
    return boxes


def _paste(feats: list[np.ndarray], labels: list[np.ndarray], donor_f: np.ndarray, donor_l: np.ndarray,
           cfg: SamplingConfig, rng: np.random.Generator) -> None:
    """Paste the donor's object cells into each frame (in place), moved by a small random shift."""
    ys, xs = np.nonzero(donor_l > 0)
    if ys.size == 0 or ys.size > 0.25 * labels[0].size:
        return
    y0, x0 = ys.min(), xs.min()
    ph, pw = ys.max() - y0 + 1, xs.max() - x0 + 1
    h, w = labels[0].shape
    if ph >= h or pw >= w:
        return
    oy, ox = int(rng.integers(0, h - ph + 1)), int(rng.integers(0, w - pw + 1))
    for f, lab in zip(feats, labels):
        dy = int(np.clip(oy + rng.integers(-cfg.jitter, cfg.jitter + 1), 0, h - ph))
        dx = int(np.clip(ox + rng.integers(-cfg.jitter, cfg.jitter + 1), 0, w - pw))
        ty, tx = ys - y0 + dy, xs - x0 + dx
        f[ty, tx] = np.asarray(donor_f[ys, xs], dtype=np.float32)
        lab[ty, tx] = PASTE_ID


def sample_example(videos: list[list], rng: np.random.Generator, cfg: SamplingConfig = SamplingConfig()) -> Example:
    """Draw one example.

    videos: one entry per sequence, each a list of its cached variants (objects with
    ``feats`` (T, h, w, C) and ``labels`` (T, h, w)); the first variant is the original.
    """
    v = int(rng.integers(len(videos)))
    variants = videos[v]
    static = rng.random() < cfg.p_static
    frames = choose_frames(variants[0].labels.shape[0], rng, static)
    if rng.random() < cfg.p_mix_variants:
        chosen = [variants[int(rng.integers(len(variants)))] for _ in range(3)]
    else:
        chosen = [variants[int(rng.integers(len(variants)))]] * 3
    shapes = [c.labels.shape[1:] for c in chosen]
    boxes = _crop_boxes(shapes, cfg, rng)
    feats, labels = [], []
    for c, f, (y, x, hc, wc) in zip(chosen, frames, boxes):
        feats.append(np.asarray(c.feats[f, y : y + hc, x : x + wc], dtype=np.float32))
        labels.append(np.asarray(c.labels[f, y : y + hc, x : x + wc], dtype=np.int64))
    if len(videos) > 1 and rng.random() < cfg.p_paste:
        other = int(rng.integers(len(videos) - 1))
        other += other >= v
        donor = videos[other][int(rng.integers(len(videos[other])))]
        df = int(rng.integers(donor.labels.shape[0]))
        _paste(feats, labels, donor.feats[df], np.asarray(donor.labels[df]), cfg, rng)
    if rng.random() < cfg.p_flip:
        feats = [f[:, ::-1] for f in feats]
        labels = [lab[:, ::-1] for lab in labels]
    hc, wc = labels[0].shape
    times = np.asarray(frames, dtype=np.float32) * np.float32(cfg.time_scale)
    yy, xx = np.meshgrid((np.arange(hc, dtype=np.float32) + 0.5) / hc, (np.arange(wc, dtype=np.float32) + 0.5) / wc,
                         indexing="ij")
    yx = np.stack([yy.ravel(), xx.ravel()], axis=1)

    def cells(i: int, idx: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        f = feats[i].reshape(hc * wc, -1)[idx]
        yxt = np.concatenate([yx[idx], np.full((idx.size, 1), times[i], np.float32)], axis=1)
        return np.ascontiguousarray(f, dtype=np.float32), yxt, labels[i].reshape(-1)[idx].astype(np.int64)

    anchors = choose_anchors(labels[0], cfg.anchors, rng, cfg.balance)
    a = cells(0, anchors)
    grid = np.zeros((hc, wc), bool)
    grid[:: cfg.pool_bg_stride, :: cfg.pool_bg_stride] = True
    pools = [cells(i, np.flatnonzero((labels[i] > 0) | grid)) for i in (1, 2)]
    return Example(*a, *(np.concatenate(x) for x in zip(*pools)), frames)
