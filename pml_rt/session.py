"""Interactive segmentation: clicks, scribbles and masks on any frame, answered in milliseconds.

    video = Segmenter().embed("clip.mp4")
    session = video.session()                      # k = 1, as the paper does for clicks
    session.add_clicks(0, [[120, 80], [10, 10]], [1, 0])
    session.add_scribble(30, [[50, 60], [90, 64]], 2)
    mask = session.mask(30)                        # uint8 (H, W) object ids
    masks = session.masks()                        # uint8 (T, H, W)
    session.undo(); session.remove_object(2)

Every annotated stride-8 cell becomes a reference; every cell of every frame takes the label
of its nearest reference(s) in embedding space (paper, Sec. 3.2). Embeddings do not depend
on the annotations, so nothing re-runs the network, and the search is incremental: for each
label column the session keeps, for every cell of the video, its best similarities to that
column's references and which references they were. A new click therefore costs one
matrix-vector product over the video's cells, (T*h*w, d) @ (d,), and a merge; undo and
replaced references recompute only the cells whose best reference went away. The state is
always exactly the kNN labelling of the active references (``recompute()`` checks this).
That labelling is then spread along each cell's matches in the neighbouring frames
(``temporal``, :mod:`pml_rt.temporal`: a forward and a backward pass, one sparse product per
frame), so that a click also counts where the video carries its cell.

Rules worth knowing:
- a click at pixel (x, y) labels cell (y // 8, x // 8); a scribble labels every cell its
  rasterised line crosses; a mask labels all object cells and the background cells on a
  ``background_stride`` grid (as ``propagate`` does) and replaces earlier references on
  its frame;
- a new label on a cell that already holds a reference of another label replaces it (the
  newest annotation of a cell wins; undo restores the old one);
- a cell takes an object's label only where it is more similar than ``background_floor``
  (0.05) to one of that object's references, so a first object click alone does not label
  the whole video that object; with the floor off (None) and references of a single label
  only, every cell gets that label;
- what a cell shows is smoothed: the label holding two thirds of its 3 x 3 x 3 box of
  cells, else its own (``smoothing``; annotated cells always show their own);
- ``mask()``/``masks()`` upsample the labels the cells show (edge-aware by default, guided by
  the frames, which the session keeps decoded up to ``GUIDE_CACHE_BYTES``);
- ``defer=True`` on a verb updates the annotated frame now and the rest at ``settle()``
  (with temporal spreading the frame's labels are provisional until then: the search of the
  frames more than ``TEMPORAL_DEFER_FRAMES`` away is put off, and the spread still uses
  their old evidence).

Array work goes through ``xp`` (NumPy here, CuPy with ``xp="cupy"``); reference
bookkeeping (a few hundred rows) stays on the host.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .annotations import ObjectMap, cell_labels
from .errors import InputError, StateError
from .io import FrameCache, read_mask
from .knn import NEG, Candidates, topk, vote
from .scribbles import polyline_pixels
from .temporal import TemporalLinks, combine, evidence_shares
from .upsample import check_method, needs_guide, upsample_labels
from .upsample.labels import argmax_labels
from .xp import get_xp, to_device, to_host

__all__ = ["Annotation", "Session", "Update", "bilinear_onehot_labels"]

_EMPTY = np.zeros(0, dtype=np.int64)


@dataclass(frozen=True)
class Update:
    """What one session call changed: the same shape for every verb.

    ``frames``: frames whose full-resolution masks may have changed (redraw these; where
    k = 1, exactly the frames with a cell that changed label); ``cells``: how many stride-8
    cells of the video changed label.
    """

    frames: tuple[int, ...]
    cells: int


@dataclass
class Annotation:
    """One user action that added references (undo pops it whole)."""

    kind: str  # "clicks", "scribble" or "mask"
    frame: int
    cells: np.ndarray  # int64 (n,) cells of the frame it labelled, row-major y * w + x
    labels: np.ndarray  # uint8 (n,) user object ids of those cells (0 = background)
    refs: np.ndarray = field(default_factory=lambda: _EMPTY)  # ids of the references it added
    replaced: np.ndarray = field(default_factory=lambda: _EMPTY)  # older references it switched off
    new_objects: tuple[int, ...] = ()  # object ids it introduced (undo forgets them)


@dataclass
class _Removal:
    """A ``remove_object`` call, kept so that undo can bring the object back."""

    obj_id: int
    ids_before: list[int]  # object ids in column order before, so columns come back in place
    refs: np.ndarray  # the object's references it switched off


@dataclass
class _Pending:
    """The rest of the video's update for the last annotation made with ``defer=True``."""

    frame: int  # the annotated frame, up to date
    refs: np.ndarray  # references the annotation added
    replaced: np.ndarray  # references it switched off
    span: tuple[int, int]  # frames t0..t1-1 searched already (the frame and its smoothing neighbours)


#: Upsampling of what the cells show: the joint bilateral filter (edges follow the frame's,
#: about 5 ms a 480p frame) scored 0.016 J above bilinear (about 1 ms) over the click robot's
#: curve on the train split, six seeds (docs/INTERACTIVE.md); ``upsample="bilinear"`` is the fastest.
INTERACTIVE_UPSAMPLE = "joint-bilateral"

#: Decoded frames a session keeps for edge-aware upsampling (least recently used leave
#: first): 100 frames of 480p take 123 MB.
GUIDE_CACHE_BYTES = 256 << 20

#: Threads that draw the frames of ``masks()`` with an edge-aware method on the CPU (the
#: filter's array loops run without the GIL): 1.45x faster on this project's 2-core machine.
MASK_THREADS = min(2, os.cpu_count() or 1)
MASK_CHUNK = 16  # frames read and drawn together by masks()

#: Each cell shows the nearest-neighbour label that holds at least SWITCH_SHARE of the box of
#: cells (frames, rows, columns) around it, else its own: single wrong cells and one-frame
#: flickers go, while an object of 2 x 2 cells (16 px) keeps its cells; annotated cells
#: always show their own label. Chosen with the click
#: robot on the train split (docs/INTERACTIVE.md); ``smoothing=None`` turns it off.
SMOOTHING = (3, 3, 3)
SWITCH_SHARE = 2 / 3

#: Temporal spreading (``pml_rt.temporal``): each cell's label evidence is carried along its
#: best matches in the frames before and after, ``TEMPORAL`` of it from the neighbours and the
#: rest its own; ``temporal=None`` turns it off. Chosen with the click robot on the train split
#: (docs/INTERACTIVE.md), with the softmax temperature of the evidence and the matches'
#: window (radius in cells), count and temperature below.
TEMPORAL = 0.9
TEMPORAL_EVIDENCE_TEMPERATURE = 0.05
TEMPORAL_LINKS = {"radius": 4, "neighbours": 4, "temperature": 0.05}
#: How far a cell trusts its own evidence in the spreading: a cell whose best similarity (to a
#: reference, or the background floor) lies ``s`` above the floor keeps ``min(1, s / TRUST_SPAN)``
#: of its ``1 - TEMPORAL`` share of its own evidence and takes the rest from its matches. Why:
#: with few clicks most cells are like no reference, and their evidence (a softmax of nearly
#: equal small similarities) says little; their neighbours in time, traced back to a click, say
#: more. ``trust_span=None`` gives every cell its full share. Chosen on the train split
#: (docs/INTERACTIVE.md): larger spans helped the click robot more (up to 2) but cost the
#: scribble robot more; 0.5 helped clicks on both seed sets and left scribbles where they were.
TRUST_SPAN: float | None = 0.5
#: With temporal spreading, ``defer=True`` searches the annotated frame and this many frames on
#: either side at once (a frame's evidence reaches 10 frames away with at least 0.9^10 = 0.35
#: of its weight, more where cells trust their own evidence less), then spreads: the annotated
#: frame's labels are provisional until ``settle()``.
TEMPORAL_DEFER_FRAMES = 10

#: Similarity (of unit-length embeddings, less the position penalty) a cell needs to some
#: object's reference to take that object's label: as if every cell also had a background
#: reference this similar. Few clicks leave most of the background far from every
#: background reference; without a floor such cells go to whichever object is least unlike
#: them. Chosen with the click robot on the train split (docs/INTERACTIVE.md).
BACKGROUND_FLOOR = 0.05

#: Position prior for models whose embeddings carry no position (the untrained packaged
#: model): chosen with the click robot on the train split (docs/INTERACTIVE.md).
UNTRAINED_POSITION_WEIGHT = 3.0
UNTRAINED_TIME_SCALE = 0.0


def _position_defaults(config: Any, weight: float | None, scale: float | None) -> tuple[float, float]:
    extra = getattr(config, "extra", None) or {}
    trained = bool(getattr(config, "trained", False))
    if weight is None:
        weight = extra.get("position_weight", 0.0 if trained else UNTRAINED_POSITION_WEIGHT)
    if scale is None:
        scale = extra.get("time_scale", 0.0 if trained else UNTRAINED_TIME_SCALE)
    try:
        return float(weight), float(scale)
    except (TypeError, ValueError):
        raise InputError(f"position_weight and time_scale must be numbers, got {weight!r}, {scale!r}") from None


def _check_similarity(value: Any, name: str, example: float, positive: bool = False) -> float | None:
    """``value`` as a float, or None; anything else but a finite number (> 0 where ``positive``)
    is an InputError naming the option ``name``."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float, np.floating, np.integer)) \
            or not np.isfinite(value) or (positive and value <= 0):
        what = "a similarity > 0" if positive else "a finite similarity"
        raise InputError(f"{name} must be None or {what}, e.g. {example}; got {value!r}")
    return float(value)


def _check_smoothing(smoothing: Any) -> tuple[int, int, int] | None:
    if smoothing is None:
        return None
    try:
        box = tuple(int(v) for v in smoothing)
        ok = len(box) == 3 and all(v >= 1 and v % 2 == 1 and v == n for v, n in zip(box, smoothing))
    except (TypeError, ValueError):
        ok = False
    if not ok:
        raise InputError(f"smoothing must be None or three odd sizes (frames, rows, columns), e.g. (3, 3, 3); "
                         f"got {smoothing!r}")
    if np.prod(box) > 255:
        raise InputError(f"smoothing box {box} holds {np.prod(box)} cells; at most 255 (counts are uint8)")
    return None if box == (1, 1, 1) else box  # type: ignore[return-value]


def _resolve_xp(xp: Any) -> Any:
    if xp is None or xp == "numpy":
        return np
    if isinstance(xp, str):
        if xp != "cupy":
            raise InputError(f"xp must be 'numpy', 'cupy' or an array module, got {xp!r}")
        from ._optional import require  # noqa: PLC0415

        return require("cupy", "an interactive session on the GPU")
    return xp


def _axis_weights(n_out: int, n_in: int, stride: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The bilinear weights of :func:`pml_rt.upsample.bilinear.bilinear_upsample`, on the host.

    Pixel centre y + 0.5 lies at (y + 0.5) / stride - 0.5 in cell coordinates, clamped to the
    edge cells. Returns i0, i1 int64 (n_out,) and the weight of i1, float32 (n_out,).
    """
    src = (np.arange(n_out, dtype=np.float32) + 0.5) / stride - 0.5
    src = np.clip(src, 0, n_in - 1)
    i0 = np.floor(src).astype(np.int64)
    i1 = np.minimum(i0 + 1, n_in - 1)
    return i0, i1, (src - i0).astype(np.float32)


def _periodic(i0: np.ndarray, i1: np.ndarray, wts: np.ndarray, stride: int) -> tuple[int, int, int]:
    """(start, stop, first cell) of the run of outputs whose bilinear weights repeat exactly
    with period ``stride`` and whose right cell is the left one + 1 (stop == start if none)."""
    n_out = len(wts)
    pos = np.flatnonzero(wts > 0)
    if not len(pos) or pos[0] + stride > n_out:
        return 0, 0, 0
    start = int(pos[0])
    pat, c0 = wts[start:start + stride], int(i0[start])
    stop = start
    for j in range((n_out - start) // stride):
        sl = slice(start + j * stride, start + (j + 1) * stride)
        if not (np.array_equal(wts[sl], pat) and (i0[sl] == c0 + j).all() and (i1[sl] == c0 + j + 1).all()):
            break
        stop = sl.stop
    return start, stop, c0


class _Bilinear:
    """Bilinear upsampling of one-hot labels (h, w) -> (H, W), exact and fast.

    Inside the frame every output pixel of an 8 x 8 block sits between the same four cells,
    with the same weights in every block, so its label depends only on those four cells'
    labels: each block is a lookup in a table of label patches (one per combination of
    four labels), built with the very float32 steps of ``bilinear_upsample``. The strips at
    the edges (clamped weights) are interpolated directly.
    """

    max_table_labels = 12  # above this many labels (a 1.3 MB table), interpolate every channel instead

    def __init__(self, cells: tuple[int, int], out_size: tuple[int, int], stride: int, xp: Any):
        (self.h, self.w), (self.hh, self.ww), self.stride, self.xp = cells, out_size, stride, xp
        y0, y1, wy = _axis_weights(self.hh, self.h, stride)
        x0, x1, wx = _axis_weights(self.ww, self.w, stride)
        self.host = (y0, y1, wy, x0, x1, wx)
        self.y_run = _periodic(y0, y1, wy, stride)
        self.x_run = _periodic(x0, x1, wx, stride)
        self.dev = tuple(to_device(a, xp) for a in self.host)
        self._tables: dict[tuple[int, ...], Any] = {}

    def _table(self, columns: tuple[int, ...]) -> Any:
        """uint8 (C**4, s, s): label of each pixel of a block whose corners (top-left,
        bottom-left, top-right, bottom-right) have columns (a, b, c, d), at index a*C^3+b*C^2+c*C+d."""
        tab = self._tables.get(columns)
        if tab is not None:
            return tab
        s, n = self.stride, len(columns)
        ys, xs = self.y_run[0], self.x_run[0]
        wy = self.host[2][ys:ys + s][:, None]  # (s, 1)
        wx = self.host[5][xs:xs + s][None, :]  # (1, s)
        q = np.arange(n ** 4)
        corner = [(q // n ** (3 - i)) % n for i in range(4)]  # column of each corner, (Q,)
        best_v = np.full((len(q), s, s), -1.0, dtype=np.float32)
        best = np.zeros((len(q), s, s), dtype=np.uint8)
        for c in range(n):  # channel order: an earlier channel keeps exact ties, as argmax does
            f = [(k == c).astype(np.float32)[:, None, None] for k in corner]
            r0 = f[0] * (1 - wy) + f[1] * wy  # (Q, s, 1): left column of cells, per pixel row
            r1 = f[2] * (1 - wy) + f[3] * wy
            v = r0 * (1 - wx) + r1 * wx
            better = v > best_v
            best[better] = columns[c]
            best_v = np.where(better, v, best_v)
        tab = self._tables[columns] = to_device(best, self.xp)
        return tab

    def _direct(self, cols: Any, rows: Any, xcols: Any, n: int) -> Any:
        """Labels (len(rows), len(xcols)) of pixels rows x xcols by interpolating every channel."""
        xp = self.xp
        y0, y1, wy, x0, x1, wx = self.dev
        wyr = wy[rows][:, None]
        best_v = best = None
        for c in range(n):
            f = (cols == c).astype(xp.float32)
            r = f[y0[rows]] * (1 - wyr) + f[y1[rows]] * wyr
            wxc = wx[xcols]
            v = r[:, x0[xcols]] * (1 - wxc) + r[:, x1[xcols]] * wxc
            if best_v is None:
                best_v, best = v, xp.zeros(v.shape, dtype=xp.int64)
                continue
            better = v > best_v
            best[better] = c
            best_v = xp.maximum(best_v, v)
        return best

    def labels(self, ids: Any, columns: list[int]) -> Any:
        """uint8 (H, W) ids from cell ids (h, w); ``columns``: the ids in score-channel order."""
        xp = self.xp
        present = set(int(i) for i in to_host(xp.unique(ids)))
        if len(present) == 1:
            return xp.full((self.hh, self.ww), present.pop(), dtype=xp.uint8)
        columns = tuple(columns)
        n = len(columns)
        col_of = np.zeros(256, dtype=np.int64)
        col_of[list(columns)] = np.arange(n)
        cols = to_device(col_of, xp)[ids]
        lut = to_device(np.asarray(columns, dtype=np.uint8), xp)
        (ys, ye, cy), (xs, xe, cx), s = self.y_run, self.x_run, self.stride
        if n > self.max_table_labels or ye == ys or xe == xs:
            full = self._direct(cols, xp.arange(self.hh), xp.arange(self.ww), n)
            return lut[full]
        out = xp.empty((self.hh, self.ww), dtype=xp.uint8)
        ny, nx = (ye - ys) // s, (xe - xs) // s
        a = cols[cy:cy + ny, cx:cx + nx]
        b = cols[cy + 1:cy + ny + 1, cx:cx + nx]
        c = cols[cy:cy + ny, cx + 1:cx + nx + 1]
        d = cols[cy + 1:cy + ny + 1, cx + 1:cx + nx + 1]
        q = ((a * n + b) * n + c) * n + d
        tab = self._table(columns)
        if s == 8:  # a block row of 8 uint8 is one uint64: the transpose moves 8x fewer items
            blocks = tab.view(xp.uint64).reshape(-1, s)[q]  # (ny, nx, s)
            out[ys:ye, xs:xe] = xp.ascontiguousarray(blocks.transpose(0, 2, 1)).view(xp.uint8).reshape(ny * s, nx * s)
        else:
            out[ys:ye, xs:xe] = tab[q].transpose(0, 2, 1, 3).reshape(ny * s, nx * s)
        edge_rows = xp.asarray(list(range(0, ys)) + list(range(ye, self.hh)), dtype=xp.int64)
        if edge_rows.shape[0]:  # top and bottom strips, full width
            out[edge_rows] = lut[self._direct(cols, edge_rows, xp.arange(self.ww), n)]
        edge_cols = xp.asarray(list(range(0, xs)) + list(range(xe, self.ww)), dtype=xp.int64)
        if edge_cols.shape[0]:  # left and right strips
            out[ys:ye, edge_cols] = lut[self._direct(cols, xp.arange(ys, ye), edge_cols, n)]
        return out


def bilinear_onehot_labels(labels: Any, columns: list[int], out_size: tuple[int, int], stride: int = 8) -> Any:
    """Full-resolution labels of one-hot scores, bilinearly upsampled: uint8 (H, W).

    labels: uint8 (h, w) ids; columns: the ids in score-channel order (ties go to the
    earlier channel, as ``argmax`` does). Gives exactly the labels of
    ``upsample_labels(one_hot(labels), out_size, "bilinear")`` (see :class:`_Bilinear`).
    """
    return _Bilinear(tuple(labels.shape), out_size, stride, get_xp(labels)).labels(labels, columns)


def _match_frames(emb: Any, progress: Any) -> TemporalLinks:
    """The session's :class:`TemporalLinks` of ``emb`` (T, h, w, d), reporting progress as asked
    (``True``: a tqdm bar; a callable: called with the frames done; ``False``: nothing)."""
    if callable(progress):
        return TemporalLinks.build(emb, **TEMPORAL_LINKS, progress=progress)
    if not progress:
        return TemporalLinks.build(emb, **TEMPORAL_LINKS)
    from tqdm.auto import tqdm  # noqa: PLC0415

    with tqdm(total=int(emb.shape[0]), desc="match frames", unit="frame", leave=False) as bar:
        return TemporalLinks.build(emb, **TEMPORAL_LINKS, progress=lambda done: bar.update(done - bar.n))


class Session:
    """Interactive kNN segmentation of one embedded video (see the module docstring).

    video: a :class:`pml_rt.segmenter.EmbeddedVideo`. k: neighbours per vote (1, as the
    paper for clicks; larger k votes by ``weighting``, and is slower: every frame's vote
    shares move with each click). background_stride: keep every n-th background cell of a
    mask per axis. upsample: one of :data:`pml_rt.upsample.METHODS` for ``mask``/``masks``
    (default ``"bilinear"``, fast enough for every click; ``"bilateral-solver"``, the
    package's default elsewhere, follows edges but takes tens of ms a frame).
    position_weight, time_scale: a penalty on the distance between a cell and a reference
    (see :meth:`_nearest`; 0 turns it off). None takes the model's
    ``config.extra["position_weight"]`` / ``["time_scale"]`` where set, else (3, 0) for an
    untrained model, whose embeddings carry no position (chosen with the click robot on the
    train split, docs/INTERACTIVE.md), and (0, 0) for a trained one, whose spatio-temporal
    head encodes position itself. smoothing: the (frames, rows, columns) box of the shown
    labels' two-thirds rule, or None. temporal: share of each cell's label evidence carried
    from its matches in the frames before and after (:mod:`pml_rt.temporal`; default
    :data:`TEMPORAL`, None turns it off); the matches are found once, here (about 30 ms a
    480p frame), and every click then spreads the evidence through the whole video; with
    ``defer=True`` the annotated frame's labels are provisional until ``settle()``.
    background_floor: the similarity a cell needs to one of an object's references to take
    its label, as one more background reference of every cell (default
    :data:`BACKGROUND_FLOOR`, for the packaged trained models' unit-length embeddings; None
    turns it off). trust_span: with temporal spreading, the similarity above the floor at
    which a cell keeps its full share of its own evidence; cells less like every reference
    take more from their matches (default :data:`TRUST_SPAN`, None: every cell keeps its
    full share). xp: ``"numpy"`` (default) or ``"cupy"``. progress: ``True`` shows a progress bar while the
    frames are matched (seconds for a few hundred frames), or a callable taking the number
    of frames matched so far (an interface's own display); ``False`` (default) shows nothing.
    """

    def __init__(self, video: Any, k: int = 1, *, background_stride: int = 2, upsample: str = INTERACTIVE_UPSAMPLE,
                 weighting: str = "majority", temperature: float = 0.1, position_weight: float | None = None,
                 time_scale: float | None = None, smoothing: tuple[int, int, int] | None = SMOOTHING,
                 temporal: float | None = TEMPORAL, background_floor: float | None = BACKGROUND_FLOOR,
                 trust_span: float | None = TRUST_SPAN, xp: Any = None, progress: Any = False):
        if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
            raise InputError(f"k must be an integer >= 1, got {k!r}")
        if isinstance(background_stride, bool) or not isinstance(background_stride, (int, np.integer)) \
                or background_stride < 1:
            raise InputError(f"background_stride must be an integer >= 1, got {background_stride!r}")
        if weighting not in ("majority", "softmax"):
            raise InputError(f"weighting must be 'majority' or 'softmax', got {weighting!r}")
        check_method(upsample)
        smoothing = _check_smoothing(smoothing)
        if not (isinstance(progress, bool) or callable(progress)):
            raise InputError(f"progress must be True, False or a callable taking the frames done; got {progress!r}")
        if temporal is not None and (isinstance(temporal, bool) or not isinstance(temporal, (int, float))
                                     or not 0 <= temporal < 1):
            raise InputError(f"temporal must be None or a share in [0, 1), e.g. {TEMPORAL}; got {temporal!r}")
        position_weight, time_scale = _position_defaults(video.config, position_weight, time_scale)
        background_floor = _check_similarity(background_floor, "background_floor", 0.1)
        trust_span = _check_similarity(trust_span, "trust_span", 0.5, positive=True)
        if not np.isfinite(position_weight) or position_weight < 0 or not np.isfinite(time_scale) or time_scale < 0:
            raise InputError(f"position_weight and time_scale must be finite and >= 0, got {position_weight!r}, "
                             f"{time_scale!r}")
        self.video = video  # embeddings and frames; never re-run through the network
        self.k = int(k)  # neighbours per vote
        self.background_stride = int(background_stride)  # mask background cells kept per axis
        self.upsample = upsample  # how stride-8 labels become full-resolution masks
        self.weighting = weighting  # vote weighting where k > 1
        self.temperature = float(temperature)  # of the softmax weighting
        self.smoothing = smoothing  # (frames, rows, cols) box of the label majority, or None
        self.temporal = None if not temporal else float(temporal)  # evidence share from neighbouring frames
        # Similarity a cell needs to an object's reference to take its label (None: off).
        self.background_floor = background_floor
        # Similarity above the floor at which a cell keeps its full share of its own evidence in
        # the spreading (None: every cell does).
        self.trust_span = trust_span
        dev = getattr(video, "device_embeddings", None)  # a GPU backend's copy, if it kept one
        if xp is None and dev is not None:
            xp = get_xp(dev)
        self.xp = _resolve_xp(xp)  # NumPy or CuPy for everything per cell
        emb = dev if dev is not None and get_xp(dev) is self.xp else video.embeddings
        self.shape = tuple(int(s) for s in emb.shape[:3])  # (T, h, w) cells
        self.stride = int(video.config.stride)  # pixels per cell side
        self.frame_size = tuple(int(s) for s in video.frame_size)  # (H, W) pixels
        t, h, w = self.shape
        self.position_weight = float(position_weight)  # similarity lost per unit of distance^2 / 2
        self.time_scale = float(time_scale)  # position units per 100 frames along time
        # float32 (T*h*w, d) once: every click reads all of it, so no per-click conversion.
        self.emb = self.xp.ascontiguousarray(to_device(emb, self.xp).reshape(t * h * w, -1), dtype=self.xp.float32)
        self._pos = self._axes()  # cell centres along x, y and t, for the position penalty
        self.objects = ObjectMap()  # user ids <-> columns; column 0 is the background
        self.history: list[Annotation | _Removal] = []  # undo pops the last entry
        # References: cells of the video with a user label. Host arrays, appended to, never
        # reordered, so an id stays valid for undo; ``ref_active`` says which count.
        self.ref_cell = np.zeros(0, dtype=np.int64)  # flat cell index t*h*w + y*w + x
        self.ref_obj = np.zeros(0, dtype=np.uint8)  # user object id
        self.ref_active = np.zeros(0, dtype=bool)
        # Per column, per cell: the k best similarities to that column's active references
        # and their ids (-1 none). The kNN over all references only ever needs these.
        self._best = self.xp.full((1, t * h * w, self.k), NEG, dtype=self.xp.float32)
        self._src = self.xp.full((1, t * h * w, self.k), -1, dtype=self.xp.int32)
        self._labels = self.xp.zeros(t * h * w, dtype=self.xp.uint8)  # user id of every cell's nearest reference(s)
        # What the user sees: the majority of ``_labels`` over the smoothing box (the same
        # array as ``_labels`` where smoothing is off).
        self._shown = self._labels if smoothing is None else self.xp.zeros(t * h * w, dtype=self.xp.uint8)
        self._masks: dict[int, np.ndarray] = {}  # full-resolution masks, dropped when their frame changes
        # Bilinear weights of the exact k = 1 shortcut: built now (milliseconds), not on the first click.
        self._geometry = _Bilinear((h, w), self.frame_size, self.stride, self.xp) \
            if self.upsample == "bilinear" and self.k == 1 else None
        # The frames that guide edge-aware upsampling, kept decoded: every click redraws most frames.
        # Read now, in one forward pass, where they all fit: a video file decodes from its start
        # to go back, so a first click on a late frame would wait for every frame before it.
        self._guides = FrameCache(video.source, GUIDE_CACHE_BYTES) if needs_guide(self.upsample) else None
        if self._guides is not None and self._guides.fits_all:
            self._guides.fill()
        self._pending: _Pending | None = None  # the other frames of a deferred annotation
        # Matches of every cell to the frames before and after (once: they depend only on the
        # embeddings), and the objects' spread shares float32 (C-1, T*h*w) behind the labels.
        self._links = None if self.temporal is None else _match_frames(self.emb.reshape(t, h, w, -1), progress)
        self._spread: Any = None
        # The two passes behind ``_spread``, float32 (C-1, T, h*w) each: a deferred annotation
        # respreads its own run of frames from their values at the run's edges.
        self._passes: tuple[Any, Any] | None = None
        self._partial = False  # only a deferred run of frames was respread since the last full spread

    # -- public state --------------------------------------------------------------------
    def __repr__(self) -> str:
        t, h, w = self.shape
        return (f"Session({t} frames, {h}x{w} cells, objects={self.objects.object_ids}, "
                f"references={self.num_references}, k={self.k})")

    @property
    def object_ids(self) -> list[int]:
        """User ids of the objects annotated so far, in column order."""
        return self.objects.object_ids

    @property
    def annotations(self) -> list[Annotation]:
        """The annotations in the order they were made (undone ones excluded)."""
        return [a for a in self.history if isinstance(a, Annotation)]

    @property
    def num_references(self) -> int:
        return int(self.ref_active.sum())

    @property
    def can_undo(self) -> bool:
        return bool(self.history)

    # -- verbs ---------------------------------------------------------------------------
    def add_clicks(self, frame: int, points: Any, labels: Any, *, defer: bool = False) -> Update:
        """Clicks on ``frame``: points (N, 2) pixel (x, y), labels (N,) object ids (0 = background).

        One annotation (undo takes all N back). Where two points fall in one cell the last wins.
        defer: bring only ``frame`` up to date now and leave the other frames to :meth:`settle`
        (which any later call that needs them runs first): an interface shows the clicked
        frame after a search over one frame's cells instead of the whole video's.
        """
        frame = self.video.check_frame(frame)
        pts = self._check_points(frame, points)
        ids = self._check_labels(labels, len(pts), f"frame {frame}: labels")
        s, (_, _, w) = self.stride, self.shape
        cells = (pts[:, 1] // s) * w + pts[:, 0] // s
        return self._annotate("clicks", frame, cells, ids, defer)

    def add_scribble(self, frame: int, path: Any, label: int, *, defer: bool = False) -> Update:
        """A polyline (M, 2) pixel (x, y) on ``frame`` with one ``label``; labels every cell it
        crosses. defer: as in :meth:`add_clicks`."""
        frame = self.video.check_frame(frame)
        pts = self._check_points(frame, path, what="scribble point")
        ids = self._check_labels([label], 1, f"frame {frame}: scribble label")
        px = polyline_pixels(pts)
        s, (_, _, w) = self.stride, self.shape
        cells = np.unique((px[:, 1] // s) * w + px[:, 0] // s)
        return self._annotate("scribble", frame, cells, np.full(len(cells), ids[0], dtype=np.uint8), defer)

    def add_mask(self, frame: int, mask: Any, *, defer: bool = False) -> Update:
        """A full mask of ``frame``: (H, W) object ids (array or PNG path), as in ``propagate``.

        Each cell takes its majority id; object cells all become references, background cells
        on a ``background_stride`` grid. Replaces the frame's earlier references. An
        all-background mask is allowed (it says the frame holds no object). defer: as in
        :meth:`add_clicks`.
        """
        frame = self.video.check_frame(frame)
        # An all-background mask is a real annotation here ("no object on this frame").
        m = read_mask(mask, expected_size=self.frame_size, allow_empty=True,
                      name=str(mask) if isinstance(mask, (str, os.PathLike)) else f"mask for frame {frame}")
        local = ObjectMap()
        cols = cell_labels(local.columns_of(m), local.num_labels, self.stride)
        ids = local.lut()[cols]  # (h, w) majority id of each cell
        keep = ids > 0
        keep[:: self.background_stride, :: self.background_stride] = True
        cells = np.flatnonzero(keep)
        return self._annotate("mask", frame, cells, ids.reshape(-1)[cells], defer)

    def add_davis_scribbles(self, source: Any) -> Update:
        """Add every scribble of a DAVIS interactive file (path, dict or DavisScribbles), one annotation each."""
        from .scribbles import DavisScribbles, read_davis_scribbles  # noqa: PLC0415

        data = source if isinstance(source, DavisScribbles) else read_davis_scribbles(source)
        extra = [s.frame for s in data.scribbles if s.frame >= self.shape[0]]
        if extra:
            raise InputError(f"{data.source}: scribble on frame {extra[0]}, but the video has {self.shape[0]} "
                             f"frames; is it the file of sequence {data.sequence!r}?")
        frames: set[int] = set()
        cells = 0
        for s in data.scribbles:
            up = self.add_scribble(s.frame, s.pixels(self.frame_size), s.object_id)
            frames.update(up.frames)
            cells += up.cells
        return Update(tuple(sorted(frames)), cells)

    def remove_object(self, obj_id: int) -> Update:
        """Forget object ``obj_id`` on every frame (its cells take their next-nearest label)."""
        if isinstance(obj_id, bool) or not isinstance(obj_id, (int, np.integer)) or int(obj_id) == 0 \
                or int(obj_id) not in self.objects.object_ids:
            raise InputError(f"object id {obj_id!r} is not annotated; known ids: {self.objects.object_ids}")
        obj_id = int(obj_id)
        self.settle()
        refs = np.flatnonzero(self.ref_active & (self.ref_obj == obj_id))
        self.history.append(_Removal(obj_id, list(self.objects.object_ids), refs))
        self.ref_active[refs] = False
        self._drop_column(self.objects.column(obj_id))
        self.objects.remove(obj_id)
        return self._relabel(None)

    def undo(self) -> Update:
        """Take back the last ``add_*`` or ``remove_object`` call."""
        if not self.history:
            raise StateError("nothing to undo: no annotation has been added yet")
        self.settle()
        last = self.history.pop()
        if isinstance(last, _Removal):
            self.objects = ObjectMap(last.ids_before)
            col = self.objects.column(last.obj_id)
            self._insert_column(col)
            self.ref_active[last.refs] = True
            self._search(last.refs, col_filter=col)
            return self._relabel(None)
        changed = [self._deactivate(last.refs)]
        self.ref_active[last.replaced] = True
        changed.append(self._search(last.replaced))
        if last.new_objects:
            for obj in last.new_objects:
                self._drop_column(self.objects.column(obj))
                self.objects.remove(obj)
            return self._relabel(None)
        return self._relabel(self._union(changed), self._frames_of(last.refs, last.replaced))

    # -- results -------------------------------------------------------------------------
    def cell_labels(self) -> np.ndarray:
        """uint8 (T, h, w): the object id of every stride-8 cell of every frame (host array)."""
        self._require_refs()
        self.settle()
        return to_host(self._shown).reshape(self.shape)

    def mask(self, frame: int) -> np.ndarray:
        """uint8 (H, W) object ids of one frame at full resolution."""
        frame = self.video.check_frame(frame)
        self._require_refs()
        self._settle_unless(frame)
        m = self._masks.get(frame)
        if m is None:
            m = self._masks[frame] = self._upsample(frame)
        return m.copy()

    def masks(self) -> np.ndarray:
        """uint8 (T, H, W) object ids of every frame at full resolution."""
        self._require_refs()
        self.settle()
        t = self.shape[0]
        todo = [i for i in range(t) if i not in self._masks]
        threads = min(MASK_THREADS, len(todo)) if self._guides is not None and self.xp is np else 1
        pool = None
        if threads > 1:  # the edge-aware filter's NumPy loops let go of the GIL
            from concurrent.futures import ThreadPoolExecutor  # noqa: PLC0415

            pool = ThreadPoolExecutor(threads)
        try:
            for a in range(0, len(todo), MASK_CHUNK):  # a few frames at a time: a long video's are not all held
                part = todo[a:a + MASK_CHUNK]
                # In order, on this thread: a video file's frames not held are decoded forward.
                guides = [self._guides.read(i) if self._guides is not None else None for i in part]
                drawn = pool.map(self._upsample, part, guides) if pool is not None else map(self._upsample, part, guides)
                self._masks.update(zip(part, drawn))
        finally:
            if pool is not None:
                pool.shutdown()
        out = np.empty((t, *self.frame_size), dtype=np.uint8)
        for i in range(t):
            out[i] = self._masks[i]
        return out

    def propagate(self, frame: int | None = None, **options: Any) -> np.ndarray:
        """uint8 (T, H, W): this session's masks carried through the video.

        ``frame`` given: the mask the user sees on it, propagated by the semi-supervised path
        (``video.propagate``: k = 5 votes, online adaptation, recent-frame references).
        ``frame`` None: every annotated frame that shows an object, as shown
        (``video.propagate_keyframes``). ``options`` go to that call (``k``, ``upsample``,
        ...). Once a frame looks right, this carries it through the video the way a full mask
        is (docs/INTERACTIVE.md, "Few clicks, then propagate", measures it against the clicks'
        own labels). It runs through every frame (about 0.15-0.2 s each on 2 CPU cores at
        480p) and leaves the session as it was: the masks are returned, not stored.
        """
        if frame is not None:
            frame = self.video.check_frame(frame)
            mask = self.mask(frame)
            if not mask.any():
                raise StateError(f"frame {frame} shows no object yet; click on an object there before propagating it")
            return self.video.propagate(mask, frame=frame, **options)
        self._require_refs()
        shown = {f: m for f in sorted({a.frame for a in self.annotations}) if (m := self.mask(f)).any()}
        if not shown:
            raise StateError("no annotated frame shows an object yet; click on an object before propagating")
        return self.video.propagate_keyframes(shown, **options)

    def scores(self, frame: int) -> np.ndarray:
        """float32 (C, h, w) vote shares of one frame's cells, columns as ``object_columns``
        (with smoothing: each label's share of the cell's smoothing box)."""
        frame = self.video.check_frame(frame)
        self._require_refs()
        self._settle_unless(frame)
        return to_host(self._frame_scores(frame))

    @property
    def object_columns(self) -> list[int]:
        """User id of each score column: [0, object ids...]."""
        return [0, *self.objects.object_ids]

    @property
    def pending(self) -> bool:
        """True while a ``defer=True`` annotation has left frames other than its own stale."""
        return self._pending is not None

    def settle(self) -> Update:
        """Bring every frame up to date after a ``defer=True`` annotation; returns what changed
        on the other frames (nothing to do: an empty Update). Calls that read or change other
        frames run it first, so calling it is only a way to choose when the work is done."""
        p = self._pending
        if p is None:
            return Update((), 0)
        self._pending = None
        spans = [r for r in ((0, p.span[0]), (p.span[1], self.shape[0])) if r[0] < r[1]]
        return self._relabel(self._union(self._swap_references(p.refs, p.replaced, spans)))

    def _settle_unless(self, frame: int) -> None:
        if self._pending is not None and self._pending.frame != frame:
            self.settle()

    def recompute(self) -> Update:
        """Rebuild the search state from the active references from scratch (a check, and the
        baseline that the incremental updates are measured against)."""
        self._pending = None  # rebuilt below for every frame
        n = self.emb.shape[0]
        c = self.objects.num_labels
        self._best = self.xp.full((c, n, self.k), NEG, dtype=self.xp.float32)
        self._src = self.xp.full((c, n, self.k), -1, dtype=self.xp.int32)
        self._search(np.flatnonzero(self.ref_active))
        return self._relabel(None)

    # -- input checks --------------------------------------------------------------------
    def _check_points(self, frame: int, points: Any, what: str = "point") -> np.ndarray:
        """int64 (N, 2) pixel (x, y) inside the frame; InputError naming the frame and the point."""
        try:
            p = np.asarray(points, dtype=np.float64)
        except (TypeError, ValueError):
            raise InputError(f"frame {frame}: expected points as an (N, 2) array of pixel (x, y), "
                             f"got {type(points).__name__}") from None
        if p.ndim == 1 and p.shape[0] == 2:
            p = p[None]
        if p.ndim != 2 or p.shape[1] != 2 or p.shape[0] == 0:
            raise InputError(f"frame {frame}: expected an (N, 2) array of pixel (x, y) with N >= 1, "
                             f"got shape {p.shape}")
        hh, ww = self.frame_size
        bad = ~np.isfinite(p).all(axis=1) | (p[:, 0] < 0) | (p[:, 0] >= ww) | (p[:, 1] < 0) | (p[:, 1] >= hh)
        if bad.any():
            i = int(np.argmax(bad))
            raise InputError(f"frame {frame}: {what} {i} (x={p[i, 0]:g}, y={p[i, 1]:g}) is outside the frame of "
                             f"size {ww}x{hh} (width x height); expected 0 <= x < {ww} and 0 <= y < {hh}")
        return np.floor(p).astype(np.int64)

    @staticmethod
    def _check_labels(labels: Any, n: int, what: str) -> np.ndarray:
        """uint8 (n,) ids from ints 0..255 (a single int is repeated n times)."""
        a = np.asarray(labels)
        if a.ndim == 0:
            a = np.full(n, a)
        if a.ndim != 1 or a.shape[0] != n:
            raise InputError(f"{what}: expected {n} object ids, one per point, got shape {a.shape}")
        if a.dtype == bool or not (np.issubdtype(a.dtype, np.integer) or np.issubdtype(a.dtype, np.floating)):
            raise InputError(f"{what}: object ids must be integers 0..255 (0 = background), got dtype {a.dtype}")
        if np.issubdtype(a.dtype, np.floating) and not np.all(a == np.round(a)):
            raise InputError(f"{what}: object ids must be integers 0..255, got {a[a != np.round(a)][0]!r}")
        if a.size and (a.min() < 0 or a.max() > 255):
            bad = a[(a < 0) | (a > 255)][0]
            raise InputError(f"{what}: object id {bad} is outside 0..255 (0 = background, 1..255 objects)")
        return a.astype(np.uint8)

    def _require_refs(self) -> None:
        if not self.ref_active.any():
            raise StateError("no annotation yet: add clicks, a scribble or a mask (add_clicks, add_scribble, "
                             "add_mask) before asking for labels or masks")

    # -- the incremental search ----------------------------------------------------------
    def _annotate(self, kind: str, frame: int, cells: np.ndarray, ids: np.ndarray, defer: bool = False) -> Update:
        self.settle()
        t, h, w = self.shape
        cells = np.asarray(cells, dtype=np.int64)
        # Last label wins where one call labels a cell twice.
        rev_cells, first = np.unique(cells[::-1], return_index=True)
        ids = ids[::-1][first]
        cells = rev_cells
        gcells = frame * h * w + cells
        new_objects = tuple(int(i) for i in np.unique(ids) if i and int(i) not in self.objects.object_ids)
        for obj in new_objects:
            self._insert_column(self.objects.add(obj))
        active = np.flatnonzero(self.ref_active)
        if kind == "mask":  # a mask is the whole truth of its frame
            on_frame = active[self.ref_cell[active] // (h * w) == frame]
            same = np.zeros(len(cells), dtype=bool)
            replaced = on_frame
        else:
            hit = active[np.isin(self.ref_cell[active], gcells)]
            pos = np.searchsorted(gcells, self.ref_cell[hit])
            same_label = self.ref_obj[hit] == ids[pos]
            replaced = hit[~same_label]
            same = np.isin(gcells, self.ref_cell[hit[same_label]])  # already a reference with this label
        new = np.arange(len(self.ref_cell), len(self.ref_cell) + int((~same).sum()))
        self.ref_cell = np.concatenate([self.ref_cell, gcells[~same]])
        self.ref_obj = np.concatenate([self.ref_obj, ids[~same]])
        # Off until the replaced ones are gone, so no cell counts a new reference twice.
        self.ref_active = np.concatenate([self.ref_active, np.zeros(len(new), dtype=bool)])
        self.history.append(Annotation(kind, frame, cells, ids, new, replaced, new_objects))
        rt = 0 if self.smoothing is None else self.smoothing[0] // 2
        if self._links is not None:  # the spread carries a frame's new evidence to its neighbours
            rt = max(rt, TEMPORAL_DEFER_FRAMES)
        span = (max(0, frame - rt), min(t, frame + rt + 1)) if defer else None
        changed = self._swap_references(new, replaced, [span])
        if defer and span != (0, t):
            self._pending = _Pending(frame, new, replaced, span)
        return self._relabel(self._union(changed), self._frames_of(new, replaced),
                             span if self._pending is not None else None)

    def _swap_references(self, new: np.ndarray, replaced: np.ndarray, spans: list[Any]) -> list[Any]:
        """Switch ``replaced`` off and ``new`` on over each span of frames ((t0, t1); None:
        all), in that order: cells that relied on a replaced reference are recomputed without
        the new ones, then the new ones are merged. Returns the changed cells of each step."""
        self.ref_active[new] = False
        changed = [self._deactivate(replaced, span) for span in spans]
        self.ref_active[new] = True
        return changed + [self._search(new, frames=span) for span in spans]

    def _insert_column(self, col: int) -> None:
        n = self.emb.shape[0]
        xp = self.xp
        if self._passes is not None and col >= 1:  # a new object has no evidence anywhere yet
            self._passes = tuple(xp.concatenate([p[:col - 1], xp.zeros_like(p[:1]), p[col - 1:]])
                                 for p in self._passes)  # type: ignore[assignment]
            self._spread = xp.concatenate([self._spread[:col - 1], xp.zeros_like(self._spread[:1]),
                                           self._spread[col - 1:]])
        self._best = xp.concatenate([self._best[:col], xp.full((1, n, self.k), NEG, dtype=xp.float32),
                                     self._best[col:]])
        self._src = xp.concatenate([self._src[:col], xp.full((1, n, self.k), -1, dtype=xp.int32), self._src[col:]])

    def _drop_column(self, col: int) -> None:
        keep = [i for i in range(self._best.shape[0]) if i != col]
        self._best = self._best[keep]
        self._src = self._src[keep]

    def _frame_cells(self, t0: int, t1: int) -> slice:
        """The flat cell indices of frames t0..t1-1: a slice of the (T*h*w,) per-cell arrays."""
        hw = self.shape[1] * self.shape[2]
        return slice(t0 * hw, t1 * hw)

    def _axes(self) -> tuple[Any, Any, Any]:
        """Cell positions along x (w,), y (h,) and time (T,), float32: (x, y) the cell centre in
        units of the frame's longer side, time ``time_scale * t / 100``."""
        xp = self.xp
        t, h, w = self.shape
        side = float(max(self.frame_size))
        return ((xp.arange(w, dtype=xp.float32) + 0.5) * (self.stride / side),
                (xp.arange(h, dtype=xp.float32) + 0.5) * (self.stride / side),
                xp.arange(t, dtype=xp.float32) * xp.float32(self.time_scale / 100.0))

    def _penalty(self, rows: Any, cells: Any) -> Any:
        """float32 (n, m): a^2 |p - p'|^2 / 2 between cells ``rows`` (n,) (None: every cell, in
        order; a pair (t0, t1): every cell of frames t0..t1-1, in order) and reference cells
        ``cells`` (m,), a = ``position_weight``.

        Built from one spatial map (h*w, m) and one temporal table (T, m), both small, so any
        rows cost a gather and an add, not a recomputation of their coordinates.
        """
        xp = self.xp
        t, h, w = self.shape
        px, py, pz = self._pos
        half = xp.float32(self.position_weight ** 2 / 2)
        rt, rest = cells // (h * w), cells % (h * w)
        sp = ((px[None, :, None] - px[rest % w][None, None, :]) ** 2
              + (py[:, None, None] - py[rest // w][None, None, :]) ** 2).reshape(h * w, -1) * half  # (h*w, m)
        tm = (pz[:, None] - pz[rt][None, :]) ** 2 * half  # (T, m)
        if rows is None or isinstance(rows, tuple):
            t0, t1 = (0, t) if rows is None else rows
            return (sp[None] + tm[t0:t1, None, :]).reshape((t1 - t0) * h * w, -1)
        return sp[rows % (h * w)] + tm[rows // (h * w)]

    def _nearest(self, rows: Any, ref_ids: np.ndarray, chunk_bytes: int = 16 << 20) -> tuple[Any, Any]:
        """Best min(k, M) scores (n, k) and reference ids (n, k) of cells ``rows`` among
        references ``ref_ids``; padded with NEG / -1 where M < k. rows: None (every cell), a
        pair (t0, t1) (every cell of frames t0..t1-1) or an index array (n,).

        score = e.e' - position_weight^2 |p - p'|^2 / 2: the embedding similarity less a
        penalty on the distance, computed apart so the embeddings stay (N, d) and aligned.
        """
        xp = self.xp
        hw = self.shape[1] * self.shape[2]
        if rows is None:
            rows = (0, self.shape[0])
        span = isinstance(rows, tuple)
        n = (rows[1] - rows[0]) * hw if span else int(rows.shape[0])
        cells = to_device(self.ref_cell[ref_ids], xp)
        refs = self.emb[cells]  # (m, d)
        ids = to_device(ref_ids.astype(np.int32), xp)
        m, k = len(ref_ids), self.k
        if m == 1 and k == 1 and span:  # one click: a matrix-vector product over the frames
            s = self.emb[self._frame_cells(*rows)] @ refs[0]
            if self.position_weight:
                s -= self._penalty(rows, cells)[:, 0]
            return s[:, None], xp.broadcast_to(ids, (n, 1))
        sims_out = xp.full((n, k), NEG, dtype=xp.float32)
        src_out = xp.full((n, k), -1, dtype=xp.int32)
        kk = min(k, m)
        step = max(1, int(chunk_bytes // (4 * m)))
        if span:  # whole frames per chunk, so the penalty is a broadcast, not a gather
            step = max(1, step // hw) * hw
        ref_t = xp.ascontiguousarray(refs.T)
        for a in range(0, n, step):
            b = min(n, a + step)
            if span:
                where: Any = (rows[0] + a // hw, rows[0] + b // hw)
                q = self.emb[self._frame_cells(*where)]
            else:
                q = self.emb[rows[a:b]]
                where = rows[a:b]
            sims = q @ ref_t
            if self.position_weight:
                sims -= self._penalty(where, cells)
            if kk == 1:
                idx = xp.argmax(sims, axis=1)[:, None]
            else:
                idx = topk(sims, kk)
            sims_out[a:b, :kk] = xp.take_along_axis(sims, idx, axis=1)
            src_out[a:b, :kk] = ids[idx]
        return sims_out, src_out

    def _merge(self, col: int, rows: Any, sims: Any, src: Any) -> Any:
        """Merge candidates (n, k) into column ``col`` at ``rows`` (as in :meth:`_nearest`);
        return the changed rows (cell indices)."""
        xp = self.xp
        if rows is None:
            rows = (0, self.shape[0])
        if isinstance(rows, tuple):
            where = self._frame_cells(*rows)
            old_s, old_i = self._best[col, where], self._src[col, where]
            pick = lambda idx: idx + where.start  # noqa: E731
        else:
            old_s, old_i = self._best[col, rows], self._src[col, rows]
            pick = lambda idx: rows[idx]  # noqa: E731
        if self.k == 1:
            better = sims[:, 0] > old_s[:, 0]
            idx = xp.nonzero(better)[0]
            sel = pick(idx)
            self._best[col, sel, 0] = sims[idx, 0]
            self._src[col, sel, 0] = src[idx, 0]
            return sel
        cand_s = xp.concatenate([old_s, sims], axis=1)
        cand_i = xp.concatenate([old_i, src.astype(xp.int32)], axis=1)
        top = topk(cand_s, self.k)
        new_i = xp.take_along_axis(cand_i, top, axis=1)
        idx = xp.nonzero((xp.sort(new_i, axis=1) != xp.sort(old_i, axis=1)).any(axis=1))[0]
        sel = pick(idx)
        self._best[col, sel] = xp.take_along_axis(cand_s, top, axis=1)[idx]
        self._src[col, sel] = new_i[idx]
        return sel

    def _search(self, ref_ids: np.ndarray, col_filter: int | None = None, frames: tuple[int, int] | None = None) -> Any:
        """Merge active references ``ref_ids`` into their columns over every cell (of frames
        t0..t1-1 where ``frames`` = (t0, t1)); return changed cells."""
        changed = []
        for obj in np.unique(self.ref_obj[ref_ids]):
            col = self.objects.column(int(obj))
            if col_filter is not None and col != col_filter:
                continue
            mine = ref_ids[self.ref_obj[ref_ids] == obj]
            sims, src = self._nearest(frames, mine)
            changed.append(self._merge(col, frames, sims, src))
        return self._union(changed)

    def _deactivate(self, ref_ids: np.ndarray, frames: tuple[int, int] | None = None) -> Any:
        """Switch references off; recompute only the cells that relied on them (among frames
        t0..t1-1 where ``frames`` = (t0, t1)); return those cells."""
        xp = self.xp
        if len(ref_ids) == 0:
            return xp.zeros(0, dtype=xp.int64)
        self.ref_active[ref_ids] = False
        dead = np.zeros(len(self.ref_cell) + 1, dtype=bool)  # index -1 (no reference) is never dead
        dead[ref_ids] = True
        dead_x = to_device(dead, xp)
        changed = []
        for obj in np.unique(self.ref_obj[ref_ids]):
            if int(obj) not in (0, *self.objects.object_ids):
                continue  # its column is gone already
            col = self.objects.column(int(obj))
            if frames is None:
                rows = xp.nonzero(dead_x[self._src[col]].any(axis=1))[0]
            else:
                where = self._frame_cells(*frames)
                rows = xp.nonzero(dead_x[self._src[col, where]].any(axis=1))[0] + where.start
            if rows.shape[0] == 0:
                continue
            self._best[col, rows] = NEG
            self._src[col, rows] = -1
            alive = np.flatnonzero(self.ref_active & (self.ref_obj == obj))
            if len(alive):
                sims, src = self._nearest(rows, alive)
                self._merge(col, rows, sims, src)
            changed.append(rows)
        return self._union(changed)

    def _union(self, parts: list[Any]) -> Any:
        xp = self.xp
        parts = [p for p in parts if p is not None and p.shape[0]]
        if not parts:
            return xp.zeros(0, dtype=xp.int64)
        if len(parts) == 1:
            return parts[0]
        # A mark per cell rather than unique(): O(cells), and NumPy's hash-based unique takes
        # ~0.2 s on a 100-frame video's 642,000 cells (the first click of a session has two parts).
        seen = xp.zeros(self._best.shape[1], dtype=bool)
        for p in parts:
            seen[p] = True
        return xp.nonzero(seen)[0]

    def _vote(self, best: Any) -> Any:
        """Vote shares float32 (n, C) from per-column candidates ``best`` (C, n, k): the k best
        over all columns vote, as :func:`pml_rt.knn.vote` does."""
        xp = self.xp
        c, n, k = best.shape
        sims = best.transpose(1, 0, 2).reshape(n, c * k)
        cols = xp.broadcast_to(xp.repeat(xp.arange(c, dtype=xp.int32), k), sims.shape)
        top = topk(sims, k)
        s = xp.take_along_axis(sims, top, axis=1)
        lab = xp.where(s > NEG / 2, xp.take_along_axis(cols, top, axis=1), -1)
        scores, _ = vote(Candidates(s, lab), c, self.weighting, self.temperature)
        return scores

    def _candidates(self, rows: Any) -> Any:
        """Per-column candidates float32 (C, n, k) of cells ``rows`` (None = all), the
        background floor counted as one more background reference of every cell: it takes
        the place of the background's least similar candidate where it is more similar."""
        xp = self.xp
        best = self._best if rows is None else self._best[:, rows]
        if self.background_floor is None:
            return best
        best = best.copy()
        floor = xp.float32(self.background_floor)
        if self.k == 1:
            xp.maximum(best[0, :, 0], floor, out=best[0, :, 0])
            return best
        bg = best[0]  # (n, k), unordered
        cells = xp.arange(bg.shape[0])
        worst = xp.argmin(bg, axis=1)
        bg[cells, worst] = xp.maximum(bg[cells, worst], floor)
        return best

    def _vote_labels(self, rows: Any) -> Any:
        """Column of the winning label of cells ``rows`` (None = all): int (n,)."""
        xp = self.xp
        best = self._candidates(rows)  # (C, n, k)
        if self.k == 1:
            return xp.argmax(best[:, :, 0], axis=0)
        return xp.argmax(self._vote(best), axis=1)

    def _spread_columns(self, span: tuple[int, int] | None = None) -> tuple[tuple[int, int], Any]:
        """Frames (t0, t1) respread and the column of the winning label of their cells after
        temporal spreading, uint8 ((t1 - t0) * h * w,): every frame, or those of ``span`` (a
        deferred annotation: they are respread from the last passes' values at their edges,
        where there are last passes with these columns).

        Evidence: a softmax over columns of each column's best similarity (its nearest
        reference); annotated cells are seeds holding their own column. Columns 1..C-1 are
        spread into ``_spread`` (C-1, T*h*w); the background's share is what they leave of
        1 + temporal.
        """
        xp = self.xp
        t, h, w = self.shape
        c = self._best.shape[0]
        if span is not None and self._passes is None and c > 1:  # nothing spread yet: no evidence from outside
            zero = xp.zeros((c - 1, t, h * w), dtype=xp.float32)
            self._passes, self._spread = (zero, zero.copy()), xp.zeros((c - 1, t * h * w), dtype=xp.float32)
        if span is not None and self._passes is not None and self._passes[0].shape[0] != c - 1:
            span = None  # the columns changed under the passes: spread every frame
        t0, t1 = span if span is not None else (0, t)
        where = self._frame_cells(t0, t1)
        if c == 1:  # background references only: nothing to spread
            self._spread, self._passes, self._partial = xp.zeros((0, t * h * w), dtype=xp.float32), None, False
            return (0, t), xp.zeros(t * h * w, dtype=xp.uint8)
        cand = self._candidates(where)
        best = cand[:, :, 0] if self.k == 1 else cand.max(axis=2)  # top-k is unordered
        ev = evidence_shares(best, TEMPORAL_EVIDENCE_TEMPERATURE).reshape(c - 1, t1 - t0, h * w)
        trust = None
        if self.trust_span is not None:
            low = xp.float32(self.background_floor or 0.0)
            trust = xp.clip((best.max(axis=0) - low) / xp.float32(self.trust_span), 0, 1).reshape(t1 - t0, h * w)
        active = np.flatnonzero(self.ref_active)
        cells = self.ref_cell[active]
        cols = self.objects.columns_of(self.ref_obj[active])  # every active reference's id is registered
        seeds = {}
        for f in np.unique(cells // (h * w)).tolist():
            if not t0 <= f < t1:
                continue
            on = cells // (h * w) == f
            values = (cols[on][None] == np.arange(1, c)[:, None]).astype(np.float32)  # (C-1, m) one-hot
            seeds[int(f)] = (to_device(cells[on] % (h * w), xp), to_device(values, xp))
        links = self._links  # type: ignore[union-attr]
        if span is None:
            fwd, bwd = links.passes(ev, self.temporal, seeds, trust=trust)  # type: ignore[union-attr]
            self._passes = (fwd, bwd)
        else:
            old_f, old_b = self._passes  # type: ignore[misc]
            fwd, bwd = links.passes(ev, self.temporal, seeds, start=t0,  # type: ignore[union-attr]
                                    before=old_f[:, t0 - 1] if t0 > 0 else None,
                                    after=old_b[:, t1] if t1 < t else None, trust=trust)
            old_f[:, t0:t1], old_b[:, t0:t1] = fwd, bwd
        shares = combine(fwd, bwd, ev, self.temporal, trust).reshape(c - 1, -1)  # type: ignore[arg-type]
        if span is None:
            self._spread = shares
        else:
            self._spread[:, where] = shares
        self._partial = span is not None
        total = xp.float32(1 + self.temporal)  # type: ignore[operator]
        if c == 2:  # the object against the background's share, total - object
            return (t0, t1), (shares[0] > total / 2).astype(xp.uint8)
        return (t0, t1), argmax_labels(xp.concatenate([(total - shares.sum(axis=0))[None], shares]))

    def _frames_of(self, *ref_ids: np.ndarray) -> np.ndarray:
        """Frames holding the references ``ref_ids`` (host int64)."""
        h, w = self.shape[1:]
        return np.unique(np.concatenate([self.ref_cell[r] // (h * w) for r in ref_ids]))

    def _relabel(self, rows: Any, ref_frames: np.ndarray | None = None, span: tuple[int, int] | None = None) -> Update:
        """Recompute labels of ``rows`` (None = every cell), then what is shown (the smoothing
        majority) on the frames they reach and around ``ref_frames`` (frames whose references
        changed: an annotated cell shows its own label); drop the masks of frames that changed.
        ``span`` (t0, t1): a deferred annotation's frames; with temporal spreading only they
        are respread (provisionally, until ``settle``)."""
        xp = self.xp
        t, h, w = self.shape
        lut = to_device(self.objects.lut(), xp)
        if self._links is not None:  # the spread moves labels anywhere: compare every respread cell
            if rows is not None and rows.shape[0] == 0 and (ref_frames is None or not len(ref_frames)) \
                    and not self._partial:
                return Update((), 0)
            span, cols = self._spread_columns(span)
            where = self._frame_cells(*span)
            new = lut[cols]
            changed = xp.nonzero(new != self._labels[where])[0]
            self._labels[changed + where.start] = new[changed]
            changed = changed + where.start
            if rows is not None:  # only the frames whose labels moved need their smoothing redone
                rows = changed
        elif rows is None:
            new = lut[self._vote_labels(None)]
            changed = xp.nonzero(new != self._labels)[0]
            self._labels[:] = new
        else:
            if rows.shape[0] == 0 and (self.smoothing is None or ref_frames is None or not len(ref_frames)):
                return Update((), 0)
            new = lut[self._vote_labels(rows)]
            diff = new != self._labels[rows]
            changed = rows[diff]
            self._labels[changed] = new[diff]
        if self.smoothing is not None:
            touched_frames = None if rows is None else np.union1d(
                to_host(xp.unique(changed // (h * w))), np.asarray(ref_frames if ref_frames is not None else [], np.int64))
            changed = self._reshow(touched_frames)
        # Masks follow the shown labels where k = 1, unless they are upsampled from the spread
        # shares, which move everywhere; where k > 1 the vote shares move where the winner does not.
        if self.k == 1 and (self._links is None or self.smoothing is not None or self._geometry is not None):
            touched = changed
        elif self._links is not None:
            touched = None
        else:
            touched = None if rows is None else rows
        if touched is None:
            frames = tuple(range(t))
        else:
            frames = tuple(int(f) for f in to_host(xp.nonzero(xp.bincount(touched // (h * w), minlength=t))[0]))
            if self.k > 1 and self.smoothing is not None:  # shares of a box move with any of its frames
                r = self.smoothing[0] // 2
                frames = tuple(sorted({g for f in frames for g in range(max(0, f - r), min(t, f + r + 1))}))
        for f in frames:
            self._masks.pop(f, None)
        return Update(frames, int(changed.shape[0]))

    def _reshow(self, frames: np.ndarray | None) -> Any:
        """Recompute the shown labels of every frame within the smoothing box of ``frames``
        (None: all); return the cells whose shown label changed."""
        xp = self.xp
        t, h, w = self.shape
        r = self.smoothing[0] // 2  # type: ignore[index]
        if frames is None:
            runs = [(0, t)]
        else:
            mark = np.zeros(t + 1, dtype=bool)
            for f in frames:
                mark[max(0, int(f) - r):min(t, int(f) + r + 1)] = True
            edges = np.flatnonzero(np.diff(np.concatenate([[False], mark])))  # starts and ends of runs
            runs = list(zip(edges[::2].tolist(), edges[1::2].tolist()))
        changed = []
        for a, b in runs:
            new = self._box_majority(a, b).reshape(-1)
            where = self._frame_cells(a, b)
            old = self._shown[where]
            diff = xp.nonzero(new != old)[0]
            old[diff] = new[diff]
            changed.append(diff + where.start)
        return self._union(changed)

    def _box_counts(self, a: int, b: int) -> Any:
        """uint8 (C, b - a, h, w): how many cells of each cell's smoothing box hold each label
        column, frames a..b-1 (edges repeat the border cells)."""
        xp = self.xp
        t, h, w = self.shape
        rt, ry, rx = (n // 2 for n in self.smoothing)  # type: ignore[union-attr]
        lo, hi = max(0, a - rt), min(t, b + rt)
        raw = self._labels[self._frame_cells(lo, hi)].reshape(hi - lo, h, w)
        pad = ((rt - (a - lo), rt - (hi - b)), (ry, ry), (rx, rx))
        cols = to_device(np.asarray(self.object_columns, dtype=np.uint8), xp)
        out = (xp.pad(raw, pad, mode="edge")[None] == cols[:, None, None, None]).astype(xp.uint8)
        for axis, rad in ((1, rt), (2, ry), (3, rx)):  # a box sum, one axis at a time (views, no copies)
            n = out.shape[axis] - 2 * rad
            part = [slice(None)] * 4
            part[axis] = slice(0, n)
            acc = out[tuple(part)].copy()
            for i in range(1, 2 * rad + 1):
                part[axis] = slice(i, i + n)
                acc += out[tuple(part)]
            out = acc
        return out

    def _box_majority(self, a: int, b: int) -> Any:
        """uint8 (b - a, h, w) user ids: the label holding at least ``SWITCH_SHARE`` of each
        cell's box (there is at most one), else the cell's own."""
        xp = self.xp
        t, h, w = self.shape
        counts = self._box_counts(a, b)
        where = self._frame_cells(a, b)
        own = self._labels[where].reshape(b - a, h, w)
        need = int(np.ceil(SWITCH_SHARE * np.prod(self.smoothing) - 1e-6))
        out = own.copy()
        for c, obj in enumerate(self.object_columns):  # at most one label reaches two thirds
            out[counts[c] >= need] = obj
        out = out.reshape(-1)
        # An annotated cell shows its own label: a user's click is never smoothed away.
        cells = self.ref_cell[self.ref_active] - where.start
        cells = to_device(cells[(cells >= 0) & (cells < where.stop - where.start)], xp)
        out[cells] = own.reshape(-1)[cells]
        return out.reshape(b - a, h, w)

    # -- full resolution -----------------------------------------------------------------
    def _frame_scores(self, frame: int) -> Any:
        """float32 (C, h, w) vote shares of one frame (one-hot where k = 1)."""
        xp = self.xp
        _, h, w = self.shape
        rows = self._frame_cells(frame, frame + 1)
        c = self.objects.num_labels
        if self.smoothing is not None:  # the label shares of each cell's box
            return self._box_counts(frame, frame + 1)[:, 0].astype(xp.float32) / float(np.prod(self.smoothing))
        if self._links is not None:  # the spread shares (they sum to 1 + temporal)
            objects = self._spread[:, rows] / xp.float32(1 + self.temporal)  # type: ignore[operator]
            return xp.concatenate([1 - objects.sum(axis=0)[None], objects]).reshape(c, h, w)
        if self.k == 1:
            col = xp.argmax(self._candidates(rows)[:, :, 0], axis=0)
            return (col[None] == xp.arange(c)[:, None]).astype(xp.float32).reshape(c, h, w)
        return self._vote(self._candidates(rows)).T.reshape(c, h, w)

    def _upsample(self, frame: int, guide: np.ndarray | None = None) -> np.ndarray:
        """uint8 (H, W) ids of ``frame`` at full resolution; ``guide``: the frame, where read already."""
        xp = self.xp
        t, h, w = self.shape
        shown = self._shown[self._frame_cells(frame, frame + 1)].reshape(h, w)  # the cells' ids, as shown
        if self._geometry is not None:  # bilinear with k = 1: the exact shortcut, built at start
            return to_host(self._geometry.labels(shown, self.object_columns))
        if self._guides is not None:
            guide = to_device(np.asarray(self._guides.read(frame) if guide is None else guide), xp)
        # One-hot of the shown labels (not the vote shares, whose argmax may differ where the
        # smoothing kept a small object): full resolution refines what the cells show.
        ids = to_device(np.asarray(self.object_columns, dtype=np.uint8), xp)
        onehot = (shown[None] == ids[:, None, None]).astype(xp.float32)
        cols = upsample_labels(onehot, self.frame_size, self.upsample, guide, stride=self.stride)
        lut = self.objects.lut()
        if np.array_equal(lut, np.arange(len(lut))):  # ids 1..K in order: columns are the ids
            return to_host(cols)
        return to_host(xp.take(to_device(lut, xp), cols))
