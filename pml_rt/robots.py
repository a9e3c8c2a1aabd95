"""Simulated users for measuring interactive segmentation: the paper's click robot and a
DAVIS-interactive-style scribble robot.

Click robot (paper, Sec. 4.3): one random pixel of each object and one random background
pixel first, then, click after click, a pixel drawn uniformly from all wrongly labelled
pixels of the video, labelled from the ground truth. Quality is J against clicks per frame
(total clicks / frames), scored on every frame (no frame is given in the interactive
setting, so none is skipped).

Scribble robot (after the DAVIS interactive framework's robot): each round finds the
worst frame (lowest J, ties to the larger error) and, for every label, the largest
connected region of pixels that should carry that label but do not; it draws a scribble
along the longest path of that region's skeleton. Unlike DAVIS's robot it also scribbles
the background (label 0): a nearest-neighbour labeller has no other way to learn it.
J&F is scored on every frame after each round; the area under the J&F-per-round curve
summarises a run.

Both take an embedded video and its ground truth (T, H, W) of object ids, and only talk
to the video through ``video.session(...)``.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .errors import InputError
from .metrics import f_measure, jaccard

__all__ = [
    "CLICKS_PER_FRAME",
    "ClickRun",
    "LatencyReport",
    "ScribbleRun",
    "click_robot",
    "click_then_propagate",
    "davis_videos",
    "format_click_table",
    "format_latency",
    "format_scribble_table",
    "measure_latency",
    "plot_click_curves",
    "robot_clicks",
    "scribble_robot",
    "skeleton_path",
    "summarize_click_runs",
    "synthetic_video",
]

#: Clicks per frame at which the click robot records J (the paper's Figure 7 spans 0.05..2).
CLICKS_PER_FRAME: tuple[float, ...] = (0.05, 0.1, 0.15, 0.2, 0.3, 0.4, 0.55, 0.75, 1.0, 1.25, 1.5, 2.0)

#: The low click rates :func:`click_then_propagate` records by default (each point costs one
#: propagation through the whole video).
FEW_CLICKS_PER_FRAME: tuple[float, ...] = (0.05, 0.1, 0.15, 0.2, 0.3, 0.55)


def _check_gt(video: Any, gt: Any) -> np.ndarray:
    g = np.asarray(gt)
    if g.ndim != 3 or g.shape[0] != video.num_frames or tuple(g.shape[1:]) != tuple(video.frame_size):
        raise InputError(f"ground truth has shape {g.shape}; expected ({video.num_frames}, "
                         f"{video.frame_size[0]}, {video.frame_size[1]}) object ids, one mask per frame")
    if not np.issubdtype(g.dtype, np.integer):
        raise InputError(f"ground truth must hold integer object ids, got dtype {g.dtype}")
    return g.astype(np.uint8, copy=False)


class _Scoreboard:
    """Per-frame predictions and J counts, refreshed only on the frames a click changed."""

    def __init__(self, session: Any, gt: np.ndarray, ids: list[int]):
        self.session, self.gt, self.ids = session, gt, ids
        t = gt.shape[0]
        self.pred = np.zeros_like(gt)
        self.wrong = np.zeros(t, dtype=np.int64)
        self.inter = np.zeros((t, len(ids)), dtype=np.int64)
        self.union = np.zeros((t, len(ids)), dtype=np.int64)
        self.gt_area = np.stack([(gt == i).sum(axis=(1, 2)) for i in ids], axis=1)

    def refresh(self, frames: Any) -> None:
        for t in frames:
            p = self.pred[t] = self.session.mask(t)
            g = self.gt[t]
            self.wrong[t] = np.count_nonzero(p != g)
            for j, i in enumerate(self.ids):
                pm = p == i
                inter = np.count_nonzero(pm & (g == i))
                self.inter[t, j] = inter
                self.union[t, j] = np.count_nonzero(pm) + self.gt_area[t, j] - inter

    def j(self) -> float:
        """Mean over objects of the mean over frames of J (1 where both masks are empty)."""
        jt = np.where(self.union == 0, 1.0, self.inter / np.maximum(self.union, 1))
        return float(jt.mean(axis=0).mean())

    def random_wrong_pixel(self, rng: np.random.Generator) -> tuple[int, int, int] | None:
        total = int(self.wrong.sum())
        if total == 0:
            return None
        t = int(rng.choice(len(self.wrong), p=self.wrong / total))
        flat = np.flatnonzero(self.pred[t] != self.gt[t])
        y, x = np.divmod(int(flat[rng.integers(len(flat))]), self.gt.shape[2])
        return t, int(x), int(y)


@dataclass
class ClickRun:
    """One click-robot run on one sequence: J at each recorded number of clicks."""

    sequence: str
    seed: int
    num_frames: int
    objects: list[int]
    clicks_per_frame: np.ndarray  # float64 (P,), the requested grid
    clicks: np.ndarray  # int64 (P,), clicks made at each grid point
    j: np.ndarray  # float64 (P,), mean J over objects and frames
    click_seconds: list[float] = field(default_factory=list)  # session time of every click
    exhausted: bool = False  # no wrong pixel was left before the last grid point


def click_robot(video: Any, gt: Any, *, seed: int = 0, clicks_per_frame: tuple[float, ...] = CLICKS_PER_FRAME,
                sequence: str = "", session_options: dict | None = None) -> ClickRun:
    """The paper's click robot on one video with ground truth ``gt`` uint8 (T, H, W).

    First one random pixel of each object (drawn over every frame) and one random background
    pixel, then each click at a random wrong pixel, labelled from ``gt``. J is recorded after
    ``max(K + 1, round(c * T))`` clicks for every ``c`` in ``clicks_per_frame`` (K objects;
    without any background pixel the first background click is left out).
    """
    g = _check_gt(video, gt)
    ids = [int(i) for i in np.unique(g) if i]
    if not ids:
        raise InputError(f"{sequence or 'ground truth'}: no object in any frame; the click robot needs one")
    rng = np.random.default_rng(seed)
    session = video.session(**(session_options or {}))
    t_count = g.shape[0]
    grid = np.asarray(clicks_per_frame, dtype=np.float64)
    board = _Scoreboard(session, g, ids)
    seconds: list[float] = []

    def click(t: int, x: int, y: int, label: int) -> Any:
        t0 = time.perf_counter()
        up = session.add_clicks(t, [[x, y]], [label])
        seconds.append(time.perf_counter() - t0)
        return up

    first = [i for i in [*ids, 0] if i or (g == 0).any()]
    targets = np.maximum(len(first), np.rint(grid * t_count).astype(np.int64))
    for label in first:  # the robot's first clicks: each object, then the background
        flat = np.flatnonzero(g == label)
        t, rest = np.divmod(int(flat[rng.integers(len(flat))]), g.shape[1] * g.shape[2])
        y, x = np.divmod(rest, g.shape[2])
        click(int(t), int(x), int(y), label)
    board.refresh(range(t_count))
    n = len(first)
    record = {n: board.j()}
    exhausted = False
    wanted = set(targets.tolist())
    while n < targets.max():
        pick = board.random_wrong_pixel(rng)
        if pick is None:
            exhausted = True
            break
        t, x, y = pick
        up = click(t, x, y, int(g[t, y, x]))
        board.refresh(up.frames)
        n += 1
        if n in wanted:
            record[n] = board.j()
    last = record[max(record)]
    j = np.array([record.get(int(c), last) for c in targets])
    return ClickRun(sequence, seed, t_count, ids, grid, targets, j, seconds, exhausted)


def _video_j(pred: np.ndarray, gt: np.ndarray, ids: list[int]) -> float:
    """Mean over objects of the mean over frames of J (1 where both masks are empty), as
    the click robot scores."""
    return float(np.mean([np.mean(jaccard(pred == i, gt == i)) for i in ids]))


def click_then_propagate(video: Any, gt: Any, *, seed: int = 0, frames: int | tuple[int, ...] = 0,
                         clicks_per_frame: tuple[float, ...] = FEW_CLICKS_PER_FRAME, sequence: str = "",
                         session_options: dict | None = None, propagate_options: dict | None = None) -> ClickRun:
    """Another way to spend the same clicks: all of them on one frame (or a few), then propagation.

    Not the paper's protocol (that is :func:`click_robot`): the robot clicks only on
    ``frames``, first, on each of them, one random pixel of each object there and one of the
    background, then at random wrong pixels of those frames (drawn from all of them
    together), labelled from ``gt``. After ``max(first clicks, round(c * T))`` clicks for each
    ``c`` in ``clicks_per_frame`` the session's masks of the clicked frames are propagated
    together (``session.propagate()``: the semi-supervised path from every annotated frame;
    one frame: ``video.propagate``) and J is scored on every frame, the clicked ones included.
    Clicks per frame count all clicks over all frames, so the curve sits on the click robot's
    axis. Where the frames have no wrong pixel left, later points repeat the last J
    (``exhausted``).
    """
    g = _check_gt(video, gt)
    frames = tuple(sorted({video.check_frame(f) for f in ((frames,) if np.isscalar(frames) else frames)}))
    if not frames:
        raise InputError("frames must name at least one frame to click on")
    ids = sorted({int(i) for f in frames for i in np.unique(g[f]) if i})
    if not ids:
        raise InputError(f"{sequence or 'ground truth'}: no object on frame{'s' if len(frames) > 1 else ''} "
                         f"{', '.join(map(str, frames))}; clicking there then propagating needs one")
    rng = np.random.default_rng(seed)
    session = video.session(**(session_options or {}))
    gf = g[list(frames)]  # (F, H, W), the clicked frames' truth
    t_count = g.shape[0]
    grid = np.asarray(clicks_per_frame, dtype=np.float64)
    first = [(j, i) for j in range(len(frames)) for i in [*np.unique(gf[j][gf[j] > 0]).tolist(), 0]
             if i or (gf[j] == 0).any()]
    targets = np.maximum(len(first), np.rint(grid * t_count).astype(np.int64))
    seconds: list[float] = []

    def click(j: int, x: int, y: int, label: int) -> None:
        t0 = time.perf_counter()
        session.add_clicks(frames[j], [[x, y]], [label])
        seconds.append(time.perf_counter() - t0)

    def shown() -> np.ndarray:
        return np.stack([session.mask(f) for f in frames])

    def score() -> float:
        if not shown().any():  # nothing to propagate: every frame predicts background
            return _video_j(np.zeros_like(g), g, ids)
        return _video_j(session.propagate(**(propagate_options or {})), g, ids)

    for j, label in first:
        y, x = np.divmod(int(np.flatnonzero(gf[j] == label)[rng.integers(np.count_nonzero(gf[j] == label))]),
                         gf.shape[2])
        click(j, int(x), int(y), int(label))
    n = len(first)
    record = {}
    exhausted = False
    for want in sorted(set(targets.tolist())):
        while n < want:
            wrong = np.flatnonzero(shown() != gf)
            if not len(wrong):
                exhausted = True
                break
            j, rest = np.divmod(int(wrong[rng.integers(len(wrong))]), gf.shape[1] * gf.shape[2])
            y, x = np.divmod(rest, gf.shape[2])
            click(int(j), int(x), int(y), int(gf[j, y, x]))
            n += 1
        record[want] = score()  # on exhaustion: the perfect frames, propagated, for this and every later point
        if exhausted:
            break
    last = record[max(record)]
    j_curve = np.array([record.get(int(c), last) for c in targets])
    return ClickRun(sequence, seed, t_count, ids, grid, targets, j_curve, seconds, exhausted)


def summarize_click_runs(runs: list[ClickRun]) -> dict[str, Any]:
    """Mean over sequences for each seed, then mean and standard deviation over seeds.

    Returns ``{"clicks_per_frame": (P,), "j_mean": (P,), "j_std": (P,), "per_seed": {seed: (P,)},
    "per_sequence": {seq: (P,) mean over seeds}}``.
    """
    if not runs:
        raise InputError("no click-robot runs to summarise")
    grid = runs[0].clicks_per_frame
    seeds = sorted({r.seed for r in runs})
    seqs = sorted({r.sequence for r in runs})
    per_seed = {s: np.mean([r.j for r in runs if r.seed == s], axis=0) for s in seeds}
    per_seq = {q: np.mean([r.j for r in runs if r.sequence == q], axis=0) for q in seqs}
    stack = np.stack([per_seed[s] for s in seeds])
    return {"clicks_per_frame": grid, "j_mean": stack.mean(axis=0), "j_std": stack.std(axis=0),
            "per_seed": per_seed, "per_sequence": per_seq}


# -- scribbles ---------------------------------------------------------------------------

def skeleton_path(region: np.ndarray, erode: float = 0.075, max_erode: int = 8) -> np.ndarray | None:
    """A scribble along region ``region`` (H, W) bool: pixel (x, y) points (M, 2) int64, or None.

    The region is eroded by ``erode * sqrt(area)`` pixels (at most ``max_erode``; less where
    that would empty it) so the line keeps off the boundary, skeletonised, and the longest
    shortest path through the skeleton's largest piece is returned, in order.
    """
    from scipy import ndimage, sparse  # noqa: PLC0415
    from scipy.sparse import csgraph  # noqa: PLC0415

    from ._optional import require  # noqa: PLC0415

    morphology = require("skimage.morphology", "the scribble robot's skeletons")
    area = int(region.sum())
    if area == 0:
        return None
    r = int(min(max_erode, erode * np.sqrt(area)))
    core = region
    while r >= 1:
        core = ndimage.binary_erosion(region, iterations=r)
        if core.any():
            break
        r -= 1
    if r < 1:
        core = region
    skel = morphology.skeletonize(core)
    ys, xs = np.nonzero(skel)
    if len(ys) == 0:
        ys, xs = np.nonzero(core)
    n = len(ys)
    if n == 1:
        return np.array([[xs[0], ys[0]]], dtype=np.int64)
    index = -np.ones(skel.shape, dtype=np.int64)
    index[ys, xs] = np.arange(n)
    rows, cols, weights = [], [], []
    for dy, dx in ((0, 1), (1, -1), (1, 0), (1, 1)):  # each 8-neighbour pair once
        y2, x2 = ys + dy, xs + dx
        ok = (y2 >= 0) & (y2 < skel.shape[0]) & (x2 >= 0) & (x2 < skel.shape[1])
        ok[ok] = index[y2[ok], x2[ok]] >= 0
        rows.append(np.arange(n)[ok])
        cols.append(index[y2[ok], x2[ok]])
        weights.append(np.full(int(ok.sum()), np.hypot(dy, dx)))
    graph = sparse.coo_matrix((np.concatenate(weights), (np.concatenate(rows), np.concatenate(cols))),
                              shape=(n, n)).tocsr()
    _, comp = csgraph.connected_components(graph, directed=False)
    main = np.flatnonzero(comp == np.bincount(comp).argmax())
    start = main[0]
    d = csgraph.dijkstra(graph, directed=False, indices=start)
    u = int(main[np.argmax(d[main])])
    d, pred = csgraph.dijkstra(graph, directed=False, indices=u, return_predecessors=True)
    v = int(main[np.argmax(d[main])])
    path = [v]
    while path[-1] != u:
        path.append(int(pred[path[-1]]))
    return np.stack([xs[path], ys[path]], axis=1).astype(np.int64)


def _largest_component(mask: np.ndarray) -> np.ndarray:
    from scipy import ndimage  # noqa: PLC0415

    lab, n = ndimage.label(mask, structure=np.ones((3, 3), dtype=bool))
    if n <= 1:
        return mask
    sizes = np.bincount(lab.ravel())
    sizes[0] = 0
    return lab == sizes.argmax()


def _scores(pred: np.ndarray, gt: np.ndarray, ids: list[int]) -> tuple[np.ndarray, np.ndarray]:
    """J and F (K, T) of every object on every frame."""
    j = np.stack([jaccard(pred == i, gt == i) for i in ids])
    f = np.stack([f_measure(pred == i, gt == i) for i in ids])
    return j, f


@dataclass
class ScribbleRun:
    """One scribble-robot run: J, F and J&F after each round (means over objects and frames)."""

    sequence: str
    objects: list[int]
    j: np.ndarray  # float64 (R,)
    f: np.ndarray  # float64 (R,)
    jf: np.ndarray  # float64 (R,)
    frames: list[int]  # frame scribbled in each round
    scribbles: list[int]  # scribbles added in each round
    auc: float  # area under J&F over rounds, x scaled to 0..1
    initial: str  # "davis" (the sequence's DAVIS scribble file) or "robot"
    round_seconds: list[float] = field(default_factory=list)  # session time per round


def _robot_scribbles(pred: np.ndarray, gt: np.ndarray, ids: list[int], jt: np.ndarray,
                     min_area: int) -> tuple[int, list[tuple[np.ndarray, int]]]:
    """The worst frame and the scribbles (path (M, 2) (x, y), label) the robot draws there."""
    err_area = (pred != gt).sum(axis=(1, 2))
    worst = int(np.lexsort((-err_area, jt))[0])  # lowest J, then the largest error
    out = []
    for label in [*ids, 0]:
        err = (gt[worst] == label) & (pred[worst] != label)
        if err.sum() < min_area:
            continue
        path = skeleton_path(_largest_component(err))
        if path is not None:
            out.append((path, label))
    return worst, out


def scribble_robot(video: Any, gt: Any, *, rounds: int = 8, initial: Any = None, sequence: str = "",
                   session_options: dict | None = None, min_area: int = 16) -> ScribbleRun:
    """DAVIS-interactive-style evaluation with up to ``rounds`` rounds of scribbles.

    initial: a DAVIS scribble file (path, dict or DavisScribbles) for round 1; without one
    the robot draws round 1 too, against an empty prediction. After each round J and F
    are scored on every frame; ``auc`` is the trapezoid area under J&F over rounds 1..R
    with the round axis scaled to 0..1.
    """
    g = _check_gt(video, gt)
    ids = [int(i) for i in np.unique(g) if i]
    if not ids:
        raise InputError(f"{sequence or 'ground truth'}: no object in any frame; the scribble robot needs one")
    if rounds < 1:
        raise InputError(f"rounds must be >= 1, got {rounds}")
    session = video.session(**(session_options or {}))
    pred = np.zeros_like(g)
    js, fs, frames, counts, secs = [], [], [], [], []
    for r in range(rounds):
        t0 = time.perf_counter()
        if r == 0 and initial is not None:
            from .scribbles import DavisScribbles, read_davis_scribbles  # noqa: PLC0415

            data = initial if isinstance(initial, DavisScribbles) else read_davis_scribbles(initial)
            session.add_davis_scribbles(data)
            frames.append(data.frames[0] if data.frames else -1)
            counts.append(len(data.scribbles))
        else:
            jt = np.stack([jaccard(pred == i, g == i) for i in ids]).mean(axis=0)
            worst, scribbles = _robot_scribbles(pred, g, ids, jt, min_area)
            if not scribbles:  # nothing left to correct: the scores stay
                js.append(js[-1])
                fs.append(fs[-1])
                frames.append(worst)
                counts.append(0)
                secs.append(0.0)
                continue
            for path, label in scribbles:
                session.add_scribble(worst, path, label)
            frames.append(worst)
            counts.append(len(scribbles))
        pred = session.masks()
        secs.append(time.perf_counter() - t0)
        j, f = _scores(pred, g, ids)
        js.append(float(j.mean(axis=1).mean()))
        fs.append(float(f.mean(axis=1).mean()))
    j_arr, f_arr = np.asarray(js), np.asarray(fs)
    jf = (j_arr + f_arr) / 2
    auc = float(np.trapezoid(jf, dx=1.0 / (len(jf) - 1))) if len(jf) > 1 else float(jf[0])
    return ScribbleRun(sequence, ids, j_arr, f_arr, jf, frames, counts, auc,
                       "davis" if initial is not None else "robot", secs)


# -- a synthetic video with known embeddings ---------------------------------------------

def synthetic_video(num_frames: int = 4, size: tuple[int, int] = (48, 64), num_objects: int = 2, *, d: int = 16,
                    noise: float = 0.15, seed: int = 0, square: int = 16) -> tuple[Any, np.ndarray]:
    """A small clip of coloured squares moving over a textured background, with hand-made
    embeddings: (EmbeddedVideo, ground truth uint8 (T, H, W) with ids 1..K).

    Each cell's embedding mixes one random unit vector per label by the labels' area shares
    in the cell, plus Gaussian noise of norm about ``noise``, normalised: objects are separable
    but boundary cells are ambiguous, as with a real embedder. Its config sets the
    session's position prior off (``extra["position_weight"] = 0``). Used by tests and by
    the interactive benchmark's ``--synthetic`` mode (several objects, no data needed).
    """
    from .annotations import cell_shares  # noqa: PLC0415
    from .io import ArraySource  # noqa: PLC0415
    from .registry import get_model_config  # noqa: PLC0415
    from .segmenter import EmbeddedVideo  # noqa: PLC0415

    import dataclasses  # noqa: PLC0415

    rng = np.random.default_rng(seed)
    # These embeddings separate the labels by construction, as a trained model's would: the
    # session's position prior (meant for the untrained model) stays off by default.
    cfg = get_model_config()
    cfg = dataclasses.replace(cfg, extra={**cfg.extra, "position_weight": 0.0, "time_scale": 0.0})
    s = cfg.stride
    hh, ww = size
    if square >= min(hh, ww):
        raise InputError(f"square side {square} does not fit a {ww}x{hh} frame")
    frames = np.empty((num_frames, hh, ww, 3), dtype=np.uint8)
    gt = np.zeros((num_frames, hh, ww), dtype=np.uint8)
    colours = rng.integers(60, 255, size=(num_objects, 3))
    start = rng.uniform(0, 1, size=(num_objects, 2)) * [hh - square, ww - square]
    speed = rng.uniform(-2, 2, size=(num_objects, 2))
    for t in range(num_frames):
        frames[t] = rng.integers(0, 50, size=(hh, ww, 3))
        for k in range(num_objects):
            y, x = np.clip(start[k] + speed[k] * t, 0, [hh - square, ww - square]).astype(int)
            frames[t, y:y + square, x:x + square] = colours[k]
            gt[t, y:y + square, x:x + square] = k + 1
    base = rng.normal(size=(num_objects + 1, d))
    base /= np.linalg.norm(base, axis=1, keepdims=True)
    h, w = -(-hh // s), -(-ww // s)
    emb = np.empty((num_frames, h, w, d), dtype=np.float32)
    for t in range(num_frames):
        shares = cell_shares(gt[t].astype(np.int32), num_objects + 1, s)  # (K+1, h, w)
        e = np.tensordot(shares, base, axes=(0, 0)) + rng.normal(scale=noise / np.sqrt(d), size=(h, w, d))
        emb[t] = e / np.linalg.norm(e, axis=-1, keepdims=True)
    video = EmbeddedVideo(source=ArraySource(frames), embeddings=emb.astype(np.float16), config=cfg,
                          meta={"synthetic": True, "seed": seed})
    return video, gt


# -- DAVIS sequences, benchmark reports ----------------------------------------------------

def davis_videos(root: Any, sequences: list[str], *, max_frames: int | None = None, cache_dir: Any = None,
                 segmenter: Any = None, progress: bool = False) -> Any:
    """Yield ``(sequence, EmbeddedVideo, ground truth uint8 (T, H, W))`` for DAVIS sequences.

    Embeddings are computed with ``segmenter`` (default ``Segmenter()``) or read from
    ``cache_dir/<model>-<seq>-<T>.npy`` where an earlier run saved them (they never depend
    on annotations, so a cache is safe as long as the model is the same).
    """
    import os  # noqa: PLC0415
    from pathlib import Path  # noqa: PLC0415

    from .davis import DavisDataset  # noqa: PLC0415
    from .io import ArraySource  # noqa: PLC0415
    from .registry import DEFAULT_MODEL, get_model_config  # noqa: PLC0415
    from .segmenter import EmbeddedVideo, Segmenter  # noqa: PLC0415

    ds = DavisDataset(root)
    for seq in sequences:
        frames = ds.frames(seq, max_frames=max_frames)
        gt = ds.annotations(seq, max_frames=max_frames)
        model = segmenter.config.name if segmenter is not None else DEFAULT_MODEL
        path = Path(cache_dir) / f"{model}-{seq}-{len(frames)}.npy" if cache_dir is not None else None
        if path is not None and path.is_file():
            cfg = segmenter.config if segmenter is not None else get_model_config(model)
            video = EmbeddedVideo(source=ArraySource(frames), embeddings=np.load(path), config=cfg)
        else:
            segmenter = segmenter or Segmenter()
            video = segmenter.embed(ArraySource(frames), progress=progress)
            if path is not None:
                path.parent.mkdir(parents=True, exist_ok=True)
                tmp = path.with_name(path.name + ".tmp.npy")
                np.save(tmp, video.embeddings)
                os.replace(tmp, path)
        yield seq, video, gt


def plot_click_curves(curves: dict[str, dict[str, Any]], path: Any, title: str = "") -> None:
    """A PNG like the paper's Figure 7: mean J (band: +- one std over seeds) against clicks
    per frame, one line per entry of ``curves`` ({label: summarize_click_runs(...)}), with the
    paper's single-object figures marked. Written atomically."""
    import os  # noqa: PLC0415
    from pathlib import Path  # noqa: PLC0415

    from ._optional import require  # noqa: PLC0415

    mpl = require("matplotlib", "the click-robot plot")
    mpl.use("Agg")
    plt = require("matplotlib.pyplot", "the click-robot plot")
    fig, ax = plt.subplots(figsize=(6, 4.2), dpi=120)
    for label, c in curves.items():
        x, m, s = c["clicks_per_frame"], c["j_mean"], c["j_std"]
        ax.plot(x, m, marker="o", ms=3, label=label)
        ax.fill_between(x, m - s, m + s, alpha=0.2)
    ax.plot([0.15, 0.55, 2.0], [0.755, 0.80, 0.83], "k*", ms=9, label="paper (DAVIS 2016 val)")
    ax.set_xscale("log")
    ax.set_xlabel("clicks per frame")
    ax.set_ylabel("J (mean over frames, objects, sequences)")
    ax.set_ylim(0, 1)
    ax.grid(True, which="both", alpha=0.3)
    ax.set_title(title or "click robot")
    ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name("." + path.name + ".tmp.png")
    fig.savefig(tmp)
    plt.close(fig)
    os.replace(tmp, path)


def format_click_table(summary: dict[str, Any]) -> str:
    """Markdown table: clicks per frame, mean J, std over seeds, and J per sequence."""
    seqs = list(summary["per_sequence"])
    head = "| clicks/frame | J mean | J std | " + " | ".join(seqs) + " |"
    lines = [head, "|" + "---|" * (3 + len(seqs))]
    for i, c in enumerate(summary["clicks_per_frame"]):
        row = f"| {c:g} | {summary['j_mean'][i]:.3f} | {summary['j_std'][i]:.3f} | "
        row += " | ".join(f"{summary['per_sequence'][q][i]:.3f}" for q in seqs) + " |"
        lines.append(row)
    return "\n".join(lines)


def format_scribble_table(runs: list[ScribbleRun]) -> str:
    """Markdown table: J&F per round for each sequence, the mean, and the AUC."""
    if not runs:
        return "(no scribble runs)"
    r = len(runs[0].jf)
    lines = ["| sequence | start | " + " | ".join(f"r{i + 1}" for i in range(r)) + " | AUC |",
             "|" + "---|" * (r + 3)]
    for run in runs:
        lines.append(f"| {run.sequence} | {run.initial} | " + " | ".join(f"{v:.3f}" for v in run.jf)
                     + f" | {run.auc:.3f} |")
    mean = np.mean([run.jf for run in runs], axis=0)
    lines.append("| **mean** | | " + " | ".join(f"{v:.3f}" for v in mean)
                 + f" | {np.mean([run.auc for run in runs]):.3f} |")
    return "\n".join(lines)


def number_or_none(text: str) -> float | None:
    """A session option given on a benchmark's command line (``--temporal``,
    ``--background-floor``): a number or ``none`` (the session checks the range); for
    argparse's ``type=``."""
    import argparse  # noqa: PLC0415

    if text.lower() == "none":
        return None
    try:
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number or none, got {text!r}") from None


def add_session_switches(parser: Any) -> None:
    """``--temporal``, ``--background-floor`` and ``--trust-span`` of the interactive benchmarks: session
    options that ``none`` turns off, left out of :func:`session_switches` unless given."""
    import argparse  # noqa: PLC0415

    parser.add_argument("--temporal", type=number_or_none, default=argparse.SUPPRESS,
                        help="session temporal share in [0, 1) or none (default: the session's)")
    parser.add_argument("--background-floor", type=number_or_none, default=argparse.SUPPRESS,
                        help="session background_floor, a similarity, or none (default: the session's)")
    parser.add_argument("--trust-span", type=number_or_none, default=argparse.SUPPRESS,
                        help="session trust_span, a similarity > 0, or none (default: the session's)")


def session_switches(args: Any) -> dict:
    """The session options of :func:`add_session_switches` given on the command line, even as none."""
    return {key: getattr(args, key) for key in ("temporal", "background_floor", "trust_span") if key in args}


# -- response time -------------------------------------------------------------------------

def robot_clicks(video: Any, gt: Any, count: int, *, seed: int = 0, session_options: dict | None = None
                 ) -> list[tuple[int, int, int, int]]:
    """The click robot's first ``count`` clicks on ``video``: (frame, x, y, label) each."""
    g = _check_gt(video, gt)
    ids = [int(i) for i in np.unique(g) if i]
    rng = np.random.default_rng(seed)
    session = video.session(**(session_options or {}))
    board = _Scoreboard(session, g, ids or [1])
    out: list[tuple[int, int, int, int]] = []
    for label in [i for i in [*ids, 0] if (g == i).any()][:count]:
        flat = np.flatnonzero(g == label)
        t, rest = np.divmod(int(flat[rng.integers(len(flat))]), g.shape[1] * g.shape[2])
        y, x = np.divmod(rest, g.shape[2])
        out.append((int(t), int(x), int(y), label))
        session.add_clicks(int(t), [[int(x), int(y)]], [label])
    board.refresh(range(g.shape[0]))
    while len(out) < count:
        pick = board.random_wrong_pixel(rng)
        if pick is None:
            break
        t, x, y = pick
        out.append((t, x, y, int(g[t, y, x])))
        board.refresh(session.add_clicks(t, [[x, y]], [int(g[t, y, x])]).frames)
    return out


@dataclass
class LatencyReport:
    """Seconds per measured click for each path from a click to what the user sees."""

    num_frames: int
    cells: tuple[int, int, int]  # (T, h, w)
    frame_size: tuple[int, int]
    update: np.ndarray  # add_clicks alone (the incremental kNN), (3n,): every pass
    to_labels: np.ndarray  # add_clicks + cell_labels(): every frame's labels at embedding resolution
    to_mask: np.ndarray  # add_clicks + mask(frame) of the clicked frame, full resolution
    to_masks: np.ndarray  # add_clicks + masks(): every frame at full resolution
    frames_changed: np.ndarray  # frames whose masks changed per click, (n,)
    memory_floor: float  # one matrix-vector product over the float32 embeddings: the least an exact click costs
    recompute: float  # rebuilding the search from scratch with the same references
    session_start: float  # Session(...) itself (float32 copy of the embeddings)
    to_mask_first: np.ndarray = field(default_factory=lambda: np.zeros(0))  # add_clicks(defer=True) + mask(frame)
    settle: np.ndarray = field(default_factory=lambda: np.zeros(0))  # then settle(): the other frames


def measure_latency(video: Any, clicks: list[tuple[int, int, int, int]], *, warmup: int = 20,
                    session_options: dict | None = None) -> LatencyReport:
    """Replay ``clicks`` three times on fresh sessions and time the clicks after ``warmup``.

    Pass 1 times click -> ``cell_labels()``, pass 2 click -> ``mask(frame)``, pass 3
    click -> ``masks()`` (as an interface would call them; each pass fills its caches as a
    user's screen would), pass 4 ``add_clicks(defer=True)`` -> ``mask(frame)`` and then, apart,
    ``settle()`` (the clicked frame first, the others after it, as the annotator does).
    Timings are wall-clock, taken side by side with a floor (one matrix-vector product over
    the embeddings, which reads them all once: the least an exact kNN update can cost) so
    that a busy machine shows as a ratio.
    """
    import time as _time  # noqa: PLC0415

    if len(clicks) <= warmup:
        raise InputError(f"need more than warmup={warmup} clicks, got {len(clicks)}")
    opts = session_options or {}
    measured = clicks[warmup:]
    out: dict[str, list[float]] = {"update": [], "to_labels": [], "to_mask": [], "to_masks": [],
                                   "to_mask_first": [], "settle": []}
    changed: list[int] = []
    floor: list[float] = []
    starts: list[float] = []
    recompute = float("nan")
    for mode in ("to_labels", "to_mask", "to_masks", "to_mask_first"):
        t0 = _time.perf_counter()
        s = video.session(**opts)
        starts.append(_time.perf_counter() - t0)
        for t, x, y, label in clicks[:warmup]:
            s.add_clicks(t, [[x, y]], [label])
        s.masks()
        for t, x, y, label in measured:
            t0 = _time.perf_counter()
            s.emb @ s.emb[0]
            floor.append(_time.perf_counter() - t0)
            t0 = _time.perf_counter()
            up = s.add_clicks(t, [[x, y]], [label], defer=mode == "to_mask_first")
            t1 = _time.perf_counter()
            if mode == "to_labels":
                s.cell_labels()
            elif mode == "to_masks":
                s.masks()
            else:
                s.mask(t)
            t2 = _time.perf_counter()
            out[mode].append(t2 - t0)
            if mode == "to_mask_first":  # the other frames, once the clicked one is shown
                s.settle()
                out["settle"].append(_time.perf_counter() - t2)
            else:
                out["update"].append(t1 - t0)
            if mode == "to_masks":
                changed.append(len(up.frames))
        if mode == "to_masks":
            t0 = _time.perf_counter()
            s.recompute()
            recompute = _time.perf_counter() - t0
    return LatencyReport(video.num_frames, tuple(int(v) for v in video.embeddings.shape[:3]),
                         tuple(int(v) for v in video.frame_size), np.asarray(out["update"]),
                         np.asarray(out["to_labels"]), np.asarray(out["to_mask"]), np.asarray(out["to_masks"]),
                         np.asarray(changed), float(np.median(floor)), recompute, float(np.median(starts)),
                         np.asarray(out["to_mask_first"]), np.asarray(out["settle"]))


def format_latency(rep: LatencyReport, targets: dict[str, float] | None = None) -> str:
    """Markdown table of median / 90th percentile / max milliseconds per path, against targets (s)."""
    targets = targets or {}
    lines = [f"{rep.num_frames} frames of {rep.frame_size[1]}x{rep.frame_size[0]}, "
             f"{rep.cells[0] * rep.cells[1] * rep.cells[2]} cells; {len(rep.to_labels)} clicks measured per path",
             "", "| path | median ms | p90 ms | max ms | target ms | median / floor |",
             "|---|---|---|---|---|---|"]
    for name, arr in (("click -> kNN update", rep.update), ("click -> labels, all frames (stride 8)", rep.to_labels),
                      ("click -> mask(frame), full res", rep.to_mask), ("click -> masks(), full res", rep.to_masks),
                      ("click (defer=True) -> mask(frame), full res", rep.to_mask_first),
                      ("then settle(): every other frame", rep.settle)):
        if not len(arr):
            continue
        key = {"click -> labels, all frames (stride 8)": "to_labels", "click -> mask(frame), full res": "to_mask",
               "click -> masks(), full res": "to_masks"}.get(name)
        tgt = f"{1000 * targets[key]:.0f}" if key in targets else ""
        med = float(np.median(arr))
        lines.append(f"| {name} | {1000 * med:.1f} | {1000 * np.percentile(arr, 90):.1f} | "
                     f"{1000 * arr.max():.1f} | {tgt} | {med / rep.memory_floor:.2f} |")
    lines += ["", f"floor (one matrix-vector product over the float32 embeddings, timed in the same loop): "
              f"{1000 * rep.memory_floor:.1f} ms; "
              f"from-scratch recompute of the same state: {1000 * rep.recompute:.0f} ms; "
              f"Session() start: {1000 * rep.session_start:.0f} ms; frames redrawn per click: median "
              f"{np.median(rep.frames_changed):.0f} of {rep.num_frames}"]
    return "\n".join(lines)
