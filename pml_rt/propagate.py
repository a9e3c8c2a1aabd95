"""Label propagation through a video by nearest neighbours in embedding space.

Given reference cells with known labels (from the user's mask), every other frame's cells
take the vote of their k nearest references (paper, Sec. 3.2). Two ways of following the
object's changing appearance, each optional and measured in ``docs/RESULTS.md``:

- online adaptation (the paper's): cells whose k neighbours all agree join a bounded pool
  of extra references;
- recent-frame references: the predictions of the last few frames, searched only within a
  window around each cell, as self-supervised label propagation does.

Cost: the global search far from the object runs coarse to fine (``far_stride``), and frames
larger than 854x480 keep references at its density (``pool_cells``); both chosen on the train
split (docs/RESULTS.md). Propagation runs forward from the annotated frame to the end, then
backward to the start.
Written against an array module: embeddings may be NumPy or CuPy arrays.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from typing import Any, Iterator

from .knn import NEG, Candidates, WindowKeys, global_topk, merge_topk, vote
from .xp import get_xp, to_device


@dataclass(frozen=True)
class PropagationConfig:
    """Settings of :func:`propagate_scores`; defaults chosen on the train split."""

    k: int = 5  # neighbours per vote (paper: 5 for masks, 1 for clicks)
    online_adaptation: bool = True  # add unanimous cells to the reference pool
    adaptation_cap: int = 1024  # most adapted references kept (oldest leave first)
    background_stride: int = 2  # keep every n-th annotated background cell per axis (objects: all, see pool_cells)
    # Larger frames keep references at the density of a frame of this many cells (854x480 at
    # stride 8): background and objects on a grid of floor(sqrt(cells / pool_cells)) more (0: off)
    pool_cells: int = 6420
    recent_frames: int = 7  # earlier frames whose predictions serve as local references (0: off)
    window: int = 6  # radius, in cells, of the local search in recent frames
    local_everywhere: bool = False  # search recent frames at every cell, not only where it can matter
    far_stride: int = 2  # cells beyond ``window`` of the latest object: global search coarse to fine (1: off)
    weighting: str = "softmax"  # "majority" (paper) or "softmax" of similarities
    temperature: float = 0.1  # of the softmax weighting

    def validate(self) -> None:
        if self.k < 1:
            raise ValueError(f"k must be at least 1, got {self.k}")
        if self.background_stride < 1 or self.adaptation_cap < 0 or self.pool_cells < 0:
            raise ValueError("background_stride must be >= 1, adaptation_cap and pool_cells >= 0")
        if self.far_stride < 1:
            raise ValueError(f"far_stride must be >= 1, got {self.far_stride}")
        if self.recent_frames < 0 or self.window < 0:
            raise ValueError("recent_frames and window must be >= 0")
        if self.weighting not in ("majority", "softmax"):
            raise ValueError(f"weighting must be 'majority' or 'softmax', got {self.weighting!r}")
        if self.temperature <= 0:
            raise ValueError("temperature must be > 0")


def _frame(emb: Any, t: int, xp: Any) -> Any:
    return xp.asarray(emb[t], dtype=xp.float32)


def _grid(xp: Any, shape: tuple[int, int], stride: int) -> Any:
    """bool (h, w): True on every ``stride``-th cell per axis, from (0, 0)."""
    g = xp.zeros(shape, dtype=bool)
    g[::stride, ::stride] = True
    return g


def _dilate(mask: Any, radius: int) -> Any:
    """Binary dilation of a (h, w) bool map by a (2r+1)^2 square, by shifted ORs."""
    xp = get_xp(mask)
    h, w = mask.shape
    pad = xp.zeros((h + 2 * radius, w + 2 * radius), dtype=bool)
    pad[radius : radius + h, radius : radius + w] = mask
    rows = xp.zeros((h, w + 2 * radius), dtype=bool)
    for dy in range(2 * radius + 1):
        rows |= pad[dy : dy + h]
    out = xp.zeros((h, w), dtype=bool)
    for dx in range(2 * radius + 1):
        out |= rows[:, dx : dx + w]
    return out


def label_frame(query: Any, refs: Any, ref_labels: Any, recent: WindowKeys | None, num_labels: int,
                cfg: PropagationConfig) -> tuple[Any, Any]:
    """Scores (h*w, C) and unanimity (h*w,) of one frame's cells.

    query: float32 (h, w, d); refs/ref_labels: the global pool (M, d)/(M,); recent: the
    earlier frames with their predictions (:class:`pml_rt.knn.WindowKeys`, searched within
    ``cfg.window``), or None. Unless ``cfg.local_everywhere``, the local search runs only
    where it can change the answer: cells whose global neighbours disagree, or that lie
    within the window of an object in the latest frame. Elsewhere the global neighbours,
    unanimous, decide.
    """
    h, w, d = query.shape
    searched = recent is not None and recent.count > 0
    near = None  # cells within the window of an object in the latest frame
    if searched and not cfg.local_everywhere:
        near = _dilate(recent.latest_labels > 0, cfg.window)
    glob = global_candidates(query, refs, ref_labels, cfg.k, near, cfg.far_stride)
    parts: list[Candidates] = [glob]
    if searched:
        active = None
        if near is not None:
            agree = (glob.labels == glob.labels[:, :1]).all(axis=1) & (glob.labels[:, 0] == 0)
            active = ~agree.reshape(h, w) | near
        parts.append(recent.search(query, cfg.k, active=active))
    cands = merge_topk(parts, cfg.k)
    return vote(cands, num_labels, cfg.weighting, cfg.temperature)


def global_candidates(query: Any, refs: Any, ref_labels: Any, k: int, near: Any = None, stride: int = 1) -> Candidates:
    """Global k nearest references (h*w, k) of every cell of ``query`` float32 (h, w, d).

    With ``near`` (bool (h, w): cells within reach of the object) and ``stride`` > 1, cells
    elsewhere are searched coarse to fine: first only every ``stride``-th cell per axis; a
    coarse cell whose neighbours are not all background gets the cells of its own and the
    next coarse blocks searched too; every other cell takes its coarse cell's candidates
    (all background). Far from the object that is what a full search finds, at a fraction
    of the cost; ``near=None`` or ``stride=1`` searches every cell.
    """
    xp = get_xp(query)
    h, w, d = query.shape
    flat = query.reshape(h * w, d)
    if near is None or stride <= 1:
        return global_topk(flat, refs, ref_labels, k)
    sims = xp.full((h * w, k), NEG, dtype=xp.float32)
    labels = xp.full((h * w, k), -1, dtype=xp.int32)

    def search(cells: Any) -> None:
        idx = xp.flatnonzero(cells.reshape(-1))
        if idx.shape[0]:
            c = global_topk(flat[idx], refs, ref_labels, k)
            sims[idx], labels[idx] = c.sims, c.labels

    grid = _grid(xp, (h, w), stride)
    first = near | grid
    search(first)
    # Coarse cells with any non-background neighbour: search their block and the blocks around it.
    doubt = (labels != 0).any(axis=1).reshape(h, w) & grid
    ys = xp.arange(h) // stride * stride  # each cell's coarse cell
    xs = xp.arange(w) // stride * stride
    # a cell whose coarse cell lies within one coarse step of a doubtful one
    blocks = xp.take(xp.take(_dilate(doubt, stride), ys, axis=0), xs, axis=1)
    second = blocks & ~first
    search(second)
    rest = xp.flatnonzero((~(first | second)).reshape(-1))
    if rest.shape[0]:  # each takes its coarse cell's candidates
        rep = ys[rest // w] * w + xs[rest % w]
        sims[rest], labels[rest] = sims[rep], labels[rep]
    return Candidates(sims, labels)


def reference_pool(ref_emb: Any, ref_labels: Any, background_stride: int = 1, object_stride: int = 1,
                   small_object: int = 256) -> tuple[Any, Any]:
    """Reference rows (M, d) and labels (M,) from an annotated frame's cells.

    Object cells are kept on a grid of ``object_stride`` per axis (1: every one; an object
    of at most ``small_object`` cells keeps them all), background cells on a grid of
    ``background_stride`` (the background is large and repetitive, and the search cost
    grows with M).
    """
    xp = get_xp(ref_emb)
    h, w = ref_labels.shape
    objects = ref_labels > 0
    keep = ~objects & _grid(xp, (h, w), background_stride)
    if object_stride > 1:
        on_grid = _grid(xp, (h, w), object_stride)
        for j in [int(v) for v in xp.unique(ref_labels[objects]).tolist()]:
            cells = ref_labels == j
            keep |= cells & on_grid if int(cells.sum()) > small_object else cells
    else:
        keep |= objects
    idx = xp.nonzero(keep.reshape(-1))[0]
    return ref_emb.reshape(h * w, -1)[idx], ref_labels.reshape(-1)[idx].astype(xp.int32)


def density_stride(cells: int, pool_cells: int) -> int:
    """Grid step per axis that keeps a frame of ``cells`` cells at the reference density of
    a frame of ``pool_cells`` (0: 1, every cell): ``floor(sqrt(cells / pool_cells))``."""
    if pool_cells <= 0 or cells <= pool_cells:
        return 1
    return max(1, int((cells / pool_cells) ** 0.5))


class Tracker:
    """Labels one frame after another from an annotated frame, keeping the reference state.

    Holds the annotated frame's reference cells, the bounded pool of adapted references
    (online adaptation) and the last ``cfg.recent_frames`` frames with their predictions.
    Used by :func:`propagate_scores` (each direction from the annotated frame) and by live
    streams, which see each frame once.
    """

    def __init__(self, ref_emb: Any, ref_labels: Any, num_labels: int, cfg: PropagationConfig):
        xp = get_xp(ref_emb)
        self.xp, self.cfg, self.num_labels = xp, cfg, num_labels
        self.shape = tuple(ref_labels.shape)  # (h, w) cells
        thin = density_stride(int(ref_labels.size), cfg.pool_cells)  # 1 up to ~4x the cells of 854x480
        self.base_refs, self.base_labels = reference_pool(ref_emb, ref_labels, cfg.background_stride * thin, thin)
        self.adapted: deque[tuple[Any, Any]] = deque()  # (refs (m, d), labels (m,)), oldest first
        self.n_adapted = 0  # rows in ``adapted``, kept <= cfg.adaptation_cap
        self.recent: WindowKeys | None = None  # the last cfg.recent_frames frames with their predictions
        if cfg.recent_frames:
            self.recent = WindowKeys(self.shape, int(ref_emb.shape[-1]), cfg.recent_frames, cfg.window, xp=xp)
            self.recent.push(ref_emb, ref_labels.astype(xp.int32))

    @property
    def pool_size(self) -> int:
        """References searched globally: annotated cells plus adapted ones."""
        return int(self.base_refs.shape[0]) + self.n_adapted

    def step(self, q: Any) -> Any:
        """Scores float32 (C, h, w) of frame embedding ``q`` float32 (h, w, d); updates the state."""
        xp, cfg = self.xp, self.cfg
        h, w = self.shape
        if self.adapted:
            refs = xp.concatenate([self.base_refs] + [a for a, _ in self.adapted])
            labels = xp.concatenate([self.base_labels] + [b for _, b in self.adapted])
        else:
            refs, labels = self.base_refs, self.base_labels
        scores, unanimous = label_frame(q, refs, labels, self.recent, self.num_labels, cfg)
        pred = xp.argmax(scores, axis=1).astype(xp.int32)
        if cfg.online_adaptation and cfg.adaptation_cap:
            sel = xp.nonzero(unanimous)[0]
            step = -(-int(sel.shape[0]) // max(cfg.adaptation_cap // 4, 1))
            sel = sel[:: max(step, 1)]  # at most a quarter of the cap per frame, spread evenly
            if sel.shape[0]:
                self.adapted.append((q.reshape(h * w, -1)[sel], pred[sel]))
                self.n_adapted += int(sel.shape[0])
                while self.n_adapted > cfg.adaptation_cap and self.adapted:
                    self.n_adapted -= int(self.adapted.popleft()[1].shape[0])
        if self.recent is not None:
            self.recent.push(q, pred.reshape(h, w))
        return scores.T.reshape(self.num_labels, h, w)


def _pass(emb: Any, frames: range, ref_frame: int, ref_labels: Any, num_labels: int,
          cfg: PropagationConfig, xp: Any) -> Iterator[tuple[int, Any]]:
    tracker = Tracker(_frame(emb, ref_frame, xp), ref_labels, num_labels, cfg)
    for t in frames:
        yield t, tracker.step(_frame(emb, t, xp))


def propagate_scores(emb: Any, ref_frame: int, ref_labels: Any, num_labels: int,
                     cfg: PropagationConfig = PropagationConfig(), xp: Any = None) -> Iterator[tuple[int, Any]]:
    """Yield ``(t, scores)`` for every frame but ``ref_frame``: forward first, then backward.

    emb: (T, h, w, d) embeddings (any dtype; a NumPy array, memory map or CuPy array);
    ref_labels: int (h, w) label columns of the annotated frame; scores: float32 (C, h, w)
    vote shares, C = num_labels.
    """
    cfg.validate()
    xp = xp or get_xp(emb, ref_labels)
    ref_labels = to_device(ref_labels, xp)
    n = emb.shape[0]
    yield from _pass(emb, range(ref_frame + 1, n), ref_frame, ref_labels, num_labels, cfg, xp)
    yield from _pass(emb, range(ref_frame - 1, -1, -1), ref_frame, ref_labels, num_labels, cfg, xp)


def keyframe_scores(emb: Any, keyframes: dict[int, Any], num_labels: int,
                    cfg: PropagationConfig = PropagationConfig(), xp: Any = None) -> Iterator[tuple[int, Any]]:
    """Yield ``(t, scores)`` for every frame that is not a keyframe, from labels on several frames.

    keyframes: {frame: int (h, w) label columns}. Each keyframe propagates as in
    :func:`propagate_scores`, forward up to the next keyframe and backward down to the
    previous one. Frames before the first keyframe or after the last get that one pass; a
    frame t between keyframes a < t < b blends the two passes' vote shares,
    ``(b - t) / (b - a) * forward_from_a + (t - a) / (b - a) * backward_from_b``, so a
    correction on a later frame takes over gradually. With one keyframe this is
    :func:`propagate_scores`. Keeps one stretch's forward scores (float16) until its backward
    pass arrives; frames between keyframes cost two searches.
    """
    cfg.validate()
    if not keyframes:
        raise ValueError("keyframes must hold at least one {frame: labels} entry")
    xp = xp or get_xp(emb)
    n = emb.shape[0]
    keys = sorted(int(f) for f in keyframes)
    labels = {f: to_device(keyframes[f], xp) for f in keys}
    # after the last keyframe and before the first: one pass each (forward first, as propagate_scores)
    yield from _pass(emb, range(keys[-1] + 1, n), keys[-1], labels[keys[-1]], num_labels, cfg, xp)
    yield from _pass(emb, range(keys[0] - 1, -1, -1), keys[0], labels[keys[0]], num_labels, cfg, xp)
    for a, b in zip(keys[:-1], keys[1:]):
        if b - a < 2:
            continue
        forward = {t: s.astype(xp.float16) for t, s in _pass(emb, range(a + 1, b), a, labels[a], num_labels, cfg, xp)}
        for t, back in _pass(emb, range(b - 1, a, -1), b, labels[b], num_labels, cfg, xp):
            w = (b - t) / (b - a)
            yield t, (w * forward.pop(t).astype(xp.float32) + (1 - w) * back).astype(xp.float32)
