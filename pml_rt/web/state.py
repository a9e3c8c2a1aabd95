"""One user's annotation state: the video, its embeddings, the session, objects, undo, export.

:class:`Annotator` is what the web routes call; it knows nothing of HTTP, so it can be
driven (and tested) from Python. Every method that takes user input checks it and raises
:class:`~pml_rt.errors.InputError` (bad input) or :class:`~pml_rt.errors.StateError`
(wrong moment: still embedding, nothing to undo). One lock serialises the session: the
annotator serves one user.

Masks travel to the page as palette PNGs whose index 0 is transparent, so the browser draws
them straight over the frame in the DAVIS colours; a click's answer is the clicked frame's
mask only, and other frames are asked for when they are shown.
"""

from __future__ import annotations

import io
import logging
import threading
import time
import zipfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from ..errors import InputError, StateError
from ..io import DAVIS_PALETTE, VideoSource, atomic_write_path, open_video, write_masks, write_overlay_video
from ..io.masks import read_mask

log = logging.getLogger("pml_rt.web")

#: Most points in one click request and in one scribble: a page never sends more, and the
#: bound keeps one request's work small.
MAX_CLICK_POINTS = 1000
MAX_SCRIBBLE_POINTS = 20000
#: Most frames in one filmstrip request.
MAX_THUMBNAILS = 32
#: Longest object name kept (characters).
MAX_NAME_LENGTH = 64
#: Frame JPEGs kept in memory (bytes); frames past it are encoded again when asked for.
JPEG_CACHE_BYTES = 256 * 2**20
#: Files the export writes and the page may download, with their media types.
DOWNLOADS: dict[str, str] = {"masks.zip": "application/zip", "overlay.mp4": "video/mp4"}

_STATUSES = ("loading", "embedding", "matching", "ready", "error")


def colour_hex(obj_id: int) -> str:
    """The DAVIS palette colour of ``obj_id`` as ``#rrggbb`` (the colour its masks are drawn in)."""
    r, g, b = (int(c) for c in DAVIS_PALETTE[int(obj_id)])
    return f"#{r:02x}{g:02x}{b:02x}"


def encode_mask_png(mask: np.ndarray) -> bytes:
    """uint8 (H, W) ids -> palette PNG bytes, DAVIS colours, index 0 fully transparent.

    compress_level 1: the masks are mostly flat runs, so it is nearly as small as the default
    and several times faster to write (about 5 ms at 854x480).
    """
    im = Image.fromarray(np.ascontiguousarray(mask, dtype=np.uint8))
    top = int(mask.max()) + 1 if mask.size else 1
    im.putpalette(DAVIS_PALETTE[:top].tobytes(), rawmode="RGB")
    buf = io.BytesIO()
    im.save(buf, format="PNG", transparency=0, compress_level=1)
    return buf.getvalue()


def encode_jpeg(frame: np.ndarray, quality: int = 90) -> bytes:
    """uint8 (H, W, 3) RGB -> JPEG bytes."""
    buf = io.BytesIO()
    Image.fromarray(frame).save(buf, format="JPEG", quality=quality)
    return buf.getvalue()


def clean_name(name: Any) -> str:
    """An object name as kept: a string, control characters dropped, trimmed, 1..64 chars."""
    if not isinstance(name, str):
        raise InputError(f"object name must be a string; got {type(name).__name__}")
    text = "".join(ch for ch in name if ch.isprintable()).strip()
    if not text:
        raise InputError("object name is empty; expected 1 to 64 printable characters")
    if len(text) > MAX_NAME_LENGTH:
        raise InputError(f"object name has {len(text)} characters; expected at most {MAX_NAME_LENGTH}")
    return text


class _Cancelled(Exception):
    """Raised inside the embedding pass when the annotator is closed."""


class _ProgressSource(VideoSource):
    """Wraps a source so that the embedder's pass over it reports progress and keeps JPEGs.

    ``read`` is serialised: a video file's reader keeps a decoder position, and frame
    requests arrive on several server threads.
    """

    def __init__(self, inner: VideoSource, on_frame: Callable[[int, np.ndarray], None]) -> None:
        super().__init__(inner.frame_size, inner.fps)
        self.inner = inner
        self.path = inner.path
        self._on_frame = on_frame
        self._read_lock = threading.Lock()
        self.cancel = threading.Event()  # set by Annotator.close: the embedding pass stops at the next frame

    def __len__(self) -> int:
        return len(self.inner)

    @property
    def frame_names(self) -> list[str]:
        return self.inner.frame_names

    def _iter_frames(self) -> Iterator[np.ndarray]:
        for i, frame in enumerate(self.inner):
            if self.cancel.is_set():
                raise _Cancelled("the annotator was closed while embedding")
            self._on_frame(i, frame)
            yield frame

    def _read(self, i: int) -> np.ndarray:
        with self._read_lock:
            return self.inner.read(i)

    def close(self) -> None:
        self.inner.close()


@dataclass
class WebObject:
    """An object the user named: its id (1..255, the value in exported masks) and label."""

    id: int
    name: str

    def to_json(self) -> dict:
        return {"id": self.id, "name": self.name, "colour": colour_hex(self.id)}


@dataclass
class _Snapshot:
    """What one undo step restores besides the session's own state."""

    objects: list[WebObject]  # the object list before the step (names, ids)
    annotations: list[dict]  # markers shown on frames before the step
    annotated: frozenset[int]  # ids the session knew before the step
    has_background: bool  # whether the session held a background reference before the step
    session_steps: int  # session calls the step made (undo calls session.undo() as often)
    propagated: Any = None  # the propagated view before the step (None: the session's own masks)
    propagated_from: list[int] | None = None


@dataclass
class MaskResult:
    """One frame's mask after a change: PNG bytes and the version they belong to."""

    frame: int
    version: int
    png: bytes
    timings: dict[str, float] = field(default_factory=dict)  # seconds per stage, for Server-Timing


def _without_object(annotations: list[dict], obj_id: int) -> list[dict]:
    """The markers left once ``obj_id`` is deleted (its clicks and scribbles go)."""
    out = []
    for a in annotations:
        if a["kind"] == "click":
            keep = [(p, v) for p, v in zip(a["points"], a["labels"]) if v != obj_id]
            if keep:
                out.append({**a, "points": [p for p, _ in keep], "labels": [v for _, v in keep]})
        elif a["kind"] == "scribble" and a["labels"] == [obj_id]:
            continue
        else:
            out.append(a)
    return out


class Annotator:
    """One video, annotated by one user through the page.

    video: a path (video file or folder of frames), a uint8 array (T, H, W, 3) or a
    :class:`~pml_rt.io.VideoSource`. out_dir: where exports go. segmenter: a
    :class:`~pml_rt.segmenter.Segmenter` to embed with (default: the packaged model, loaded
    in the background). session_factory: ``EmbeddedVideo -> session`` (default
    ``video.session()``). auto_background: while no background is marked, the first object
    annotation also marks the frame's four corner pixels as background (shown as background
    clicks; undone with it), because the nearest-neighbour labelling needs references of at
    least two labels and a first click should already show a mask (the paper's first
    interaction is one object and one background click, too). Call :meth:`start` to embed
    in a background thread.
    """

    def __init__(self, video: Any, out_dir: str | Path, *, segmenter: Any = None,
                 session_factory: Callable[[Any], Any] | None = None, auto_background: bool = True,
                 jpeg_quality: int = 90) -> None:
        inner = video if isinstance(video, VideoSource) else open_video(video)
        self.source = _ProgressSource(inner, self._on_frame)
        self.out_dir = Path(out_dir)
        self.name = Path(inner.path).stem if inner.path else "video"
        self.num_frames = len(inner)
        self.frame_size: tuple[int, int] = tuple(inner.frame_size)  # type: ignore[assignment]
        self._segmenter = segmenter
        self._session_factory = session_factory or self._default_session
        self.auto_background = bool(auto_background)
        self._jpeg_quality = int(jpeg_quality)

        self._lock = threading.Lock()  # the session, objects, history, mask cache
        self._export_lock = threading.Lock()  # one export at a time
        self._jpeg_lock = threading.Lock()
        self._jpegs: dict[int, bytes] = {}
        self._jpeg_bytes = 0
        self._thread: threading.Thread | None = None

        self.status = "loading"
        self.error: str | None = None
        self.done = 0  # frames embedded
        self.matched = 0  # frames matched to their neighbours (the default session reports them)
        self.embed_seconds: float | None = None
        self.video: Any = None  # EmbeddedVideo once ready
        self.session: Any = None

        self.objects: list[WebObject] = [WebObject(1, "object 1")]
        self.annotations: list[dict] = []  # {"frame", "kind", "points", "labels"} markers
        self._annotated: set[int] = set()  # ids the session holds annotations for
        self._has_background = False  # whether the session holds a background reference
        self._history: list[_Snapshot] = []
        self.version = 0  # bumps whenever the masks may change
        self._mask_cache: dict[int, bytes] = {}  # frame -> PNG, for self.version only
        self._empty_png: bytes | None = None
        self._thumbs: tuple[tuple, int, bytes] | None = None  # ((version, frames), stride, PNG)
        self.settle_seconds: float | None = None  # how long the last annotation's other frames took
        # "Propagate": the annotated frames and the one on screen, as shown, carried through the
        # video by the semi-supervised path. Its masks replace the session's on every frame
        # until the next change of annotations.
        self._propagated: np.ndarray | None = None  # uint8 (T, H, W)
        self.propagated_from: list[int] | None = None  # the frames it started from
        self.propagating = False
        self.propagate_seconds: float | None = None

    # -- background embedding -----------------------------------------------------------
    def start(self) -> "Annotator":
        """Load the model and embed the video in a daemon thread; return at once."""
        if self._thread is None:
            self._thread = threading.Thread(target=self._prepare, name="pml-rt-embed", daemon=True)
            self._thread.start()
        return self

    def wait_ready(self, timeout: float | None = None) -> bool:
        """Block until embedding ends (ready or error); True when ready."""
        if self._thread is not None:
            self._thread.join(timeout)
        return self.status == "ready"

    def _default_session(self, video: Any) -> Any:
        """``video.session()``, reporting its frame matching to the page (``matched``)."""
        return video.session(progress=self._on_matched)

    def _on_matched(self, done: int) -> None:
        if self.source.cancel.is_set():
            raise _Cancelled("the annotator was closed while matching frames")
        self.matched = done

    def _on_frame(self, i: int, frame: np.ndarray) -> None:
        if self.status == "embedding":
            self.done = max(self.done, i)
        with self._jpeg_lock:
            cached = i in self._jpegs or self._jpeg_bytes > JPEG_CACHE_BYTES
        if not cached:
            self._keep_jpeg(i, encode_jpeg(frame, self._jpeg_quality))

    def _keep_jpeg(self, i: int, data: bytes) -> None:
        with self._jpeg_lock:
            if i not in self._jpegs and self._jpeg_bytes + len(data) <= JPEG_CACHE_BYTES:
                self._jpegs[i] = data
                self._jpeg_bytes += len(data)

    def _prepare(self) -> None:
        try:
            segmenter = self._segmenter
            if segmenter is None:
                from ..segmenter import Segmenter  # noqa: PLC0415 - loads the runtime

                segmenter = Segmenter()
            self.status = "embedding"
            t0 = time.perf_counter()
            video = segmenter.embed(self.source, progress=False)
            self.embed_seconds = time.perf_counter() - t0
            self.status = "matching"  # the session matches neighbouring frames (about 30 ms a 480p frame)
            session = self._session_factory(video)
            # First uses import code lazily (NumPy's np.unique pulls in numpy.ma, Pillow its PNG
            # writer): pay for it now, not on the user's first click.
            np.unique(np.zeros(2, np.uint8))
            encode_mask_png(np.zeros((8, 8), np.uint8))
            with self._lock:
                self.video, self.session = video, session
                self.done = self.num_frames
                self.status = "ready"
            log.info("embedded %d frames in %.1f s", self.num_frames, self.embed_seconds)
        except _Cancelled:
            self.error = "stopped"
            self.status = "error"
        except Exception as exc:  # noqa: BLE001 - shown in the page instead of killing the server
            log.exception("preparing the video failed")
            self.error = f"{type(exc).__name__}: {exc}"
            self.status = "error"

    def _require_ready(self) -> None:
        if self.status == "error":
            raise StateError(f"the video could not be prepared: {self.error}")
        if self.status != "ready":
            raise StateError(f"the video is still being embedded ({self.done}/{self.num_frames} frames); "
                             "wait until the progress bar is full")

    # -- reading -------------------------------------------------------------------------
    def check_frame(self, frame: Any) -> int:
        """``frame`` as an int in 0..T-1, else InputError."""
        if isinstance(frame, bool) or not isinstance(frame, (int, np.integer)):
            raise InputError(f"frame must be an integer; got {frame!r}")
        if not 0 <= int(frame) < self.num_frames:
            raise InputError(f"frame {frame} is out of range; this video has frames 0..{self.num_frames - 1}")
        return int(frame)

    def frame_jpeg(self, frame: int) -> bytes:
        """Frame ``frame`` as JPEG bytes (kept from the embedding pass where possible)."""
        frame = self.check_frame(frame)
        with self._jpeg_lock:
            data = self._jpegs.get(frame)
        if data is None:
            data = encode_jpeg(self.source.read(frame), self._jpeg_quality)
            self._keep_jpeg(frame, data)
        return data

    def state(self) -> dict:
        """Everything the page shows besides pixels, as JSON-ready values."""
        h, w = self.frame_size
        with self._lock:
            return {
                "status": self.status,
                "error": self.error,
                "progress": {"done": self.done, "total": self.num_frames, "matched": self.matched},
                "video": {"name": self.name, "num_frames": self.num_frames, "height": h, "width": w,
                          "fps": self.source.fps},
                "objects": [o.to_json() for o in self.objects],
                "annotations": list(self.annotations),
                "version": self.version,
                "can_undo": bool(self._history),
                "has_background": self._has_background,
                "auto_background": self.auto_background,
                "embed_seconds": self.embed_seconds,
                "settle_seconds": self.settle_seconds,
                "propagated_from": self.propagated_from,
                "propagating": self.propagating,
                "propagate_seconds": self.propagate_seconds,
            }

    def mask_png(self, frame: int) -> MaskResult:
        """The current mask of ``frame`` as a transparent-background palette PNG."""
        frame = self.check_frame(frame)
        with self._lock:
            self._require_ready()
            return self._mask_result(frame, {})

    def thumbnails(self, n: int) -> tuple[list[int], int, int, bytes]:
        """Masks of ``n`` frames spread evenly over the video, one label per stride-8 cell, side
        by side: (frames, cell size in pixels, version, palette PNG (h, w * len(frames))).

        Cheap (the session keeps every cell's label), so the page can redraw a filmstrip of
        the whole video after every click, as the paper's Figure 1 shows.
        """
        if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or not 1 <= n <= MAX_THUMBNAILS:
            raise InputError(f"n must be an integer in 1..{MAX_THUMBNAILS}; got {n!r}")
        frames = sorted({int(round(f)) for f in np.linspace(0, self.num_frames - 1, int(n))})
        with self._lock:
            self._require_ready()
            key = (self.version, tuple(frames))
            if self._thumbs is not None and self._thumbs[0] == key:
                return frames, self._thumbs[1], self.version, self._thumbs[2]
            stride = int(getattr(getattr(self.video, "config", None), "stride", 8))
            cells = self._cells(frames, stride)
            png = encode_mask_png(np.concatenate(list(cells), axis=1))
            self._thumbs = (key, stride, png)
            return frames, stride, self.version, png

    def _cells(self, frames: list[int], stride: int) -> np.ndarray:
        """uint8 (len(frames), h, w) labels of the cells of ``frames``; called with the lock held."""
        h, w = (-(-n // stride) for n in self.frame_size)
        if not self._annotated:
            return np.zeros((len(frames), h, w), np.uint8)
        # pml_rt.session.Session has it; a propagated view is read at the cell centres below
        get = None if self._propagated is not None else getattr(self.session, "cell_labels", None)
        if get is not None:
            try:
                cells = np.asarray(get())
            except StateError:
                return np.zeros((len(frames), h, w), np.uint8)
            if cells.shape == (self.num_frames, h, w):
                return cells[frames].astype(np.uint8, copy=False)
        # any other session: the full mask at each cell's centre pixel
        hh, ww = self.frame_size
        ys = np.minimum(np.arange(h) * stride + stride // 2, hh - 1)
        xs = np.minimum(np.arange(w) * stride + stride // 2, ww - 1)
        return np.stack([self._session_mask(t)[np.ix_(ys, xs)] for t in frames])

    def _mask_result(self, frame: int, timings: dict[str, float]) -> MaskResult:
        """Called with the lock held."""
        png = self._mask_cache.get(frame)
        if png is None:
            if not self._annotated:  # nothing annotated: the session has no masks to give
                if self._empty_png is None:
                    self._empty_png = encode_mask_png(np.zeros(self.frame_size, np.uint8))
                png = self._empty_png
            else:
                t0 = time.perf_counter()
                mask = self._session_mask(frame)
                t1 = time.perf_counter()
                png = encode_mask_png(mask)
                timings["mask"] = t1 - t0
                timings["png"] = time.perf_counter() - t1
            self._mask_cache[frame] = png
        return MaskResult(frame, self.version, png, timings)

    def _session_mask(self, frame: int) -> np.ndarray:
        if self._propagated is not None:
            return self._propagated[frame]
        try:
            mask = np.asarray(self.session.mask(frame))
        except StateError:  # e.g. only background clicks so far
            return np.zeros(self.frame_size, np.uint8)
        if mask.shape != self.frame_size:
            raise StateError(f"the session gave a mask of shape {mask.shape} for frame {frame}; "
                             f"expected {self.frame_size}")
        return mask.astype(np.uint8, copy=False)

    # -- annotating ----------------------------------------------------------------------
    def _object_ids(self) -> set[int]:
        return {o.id for o in self.objects}

    def _check_label(self, label: Any, what: str) -> int:
        if isinstance(label, bool) or not isinstance(label, (int, np.integer)):
            raise InputError(f"{what} must be an integer object id; got {label!r}")
        label = int(label)
        if label != 0 and label not in self._object_ids():
            known = ", ".join(str(i) for i in sorted(self._object_ids())) or "none"
            raise InputError(f"{what} {label} is not an object; use 0 for background or one of: {known}")
        return label

    def _check_points(self, points: Any, what: str, max_points: int) -> np.ndarray:
        try:
            arr = np.asarray(points, dtype=np.float64)
        except (TypeError, ValueError, OverflowError):
            raise InputError(f"{what} must be a list of [x, y] pixel pairs") from None
        if arr.ndim != 2 or arr.shape[1] != 2 or not 1 <= arr.shape[0] <= max_points:
            raise InputError(f"{what} must be a list of 1 to {max_points} [x, y] pairs; got shape {arr.shape}")
        if not np.all(np.isfinite(arr)):
            raise InputError(f"{what} has a non-finite coordinate")
        h, w = self.frame_size
        xy = np.floor(arr).astype(np.int64)
        bad = (xy[:, 0] < 0) | (xy[:, 0] >= w) | (xy[:, 1] < 0) | (xy[:, 1] >= h)
        if bad.any():
            x, y = arr[np.argmax(bad)]
            raise InputError(f"{what} has point ({x:g}, {y:g}) outside the frame; expected 0 <= x < {w}, "
                             f"0 <= y < {h}")
        return xy

    def _snapshot(self, session_steps: int) -> _Snapshot:
        return _Snapshot([WebObject(o.id, o.name) for o in self.objects], list(self.annotations),
                         frozenset(self._annotated), self._has_background, session_steps,
                         self._propagated, self.propagated_from)

    def _defer(self) -> dict[str, bool]:
        """``defer=True`` where the session can bring the annotated frame up to date first
        (:class:`pml_rt.session.Session` can; a custom session_factory's may not)."""
        return {"defer": True} if callable(getattr(self.session, "settle", None)) else {}

    def settle(self) -> float | None:
        """Bring every frame up to date after an annotation (the server runs this right after
        sending the annotated frame's mask); returns the seconds it took, None if nothing was
        left. Any read of another frame would do it first anyway; this only does it early."""
        with self._lock:
            if self.session is None or not getattr(self.session, "pending", False):
                return None
            t0 = time.perf_counter()
            self.session.settle()
            self.settle_seconds = time.perf_counter() - t0
            return self.settle_seconds

    def _changed(self) -> None:
        """The annotations changed: the session's masks are shown again (a propagated view ends)."""
        self._propagated, self.propagated_from = None, None
        self._bump()

    def _bump(self) -> None:
        self.version += 1
        self._mask_cache.clear()

    def _background_seeds(self, labels: np.ndarray) -> np.ndarray | None:
        """The frame's four corner pixels (int64 (4, 2) x, y) where they are to be marked
        background with an annotation of ``labels`` (see ``auto_background``): only while no
        background is known and the annotation brings none; else None."""
        if not self.auto_background or self._has_background or np.any(labels == 0):
            return None
        h, w = self.frame_size
        return np.array([[0, 0], [w - 1, 0], [0, h - 1], [w - 1, h - 1]], dtype=np.int64)

    def _record(self, frame: int, kind: str, points: np.ndarray, labels: np.ndarray) -> None:
        """Keep the marker of an annotation the session accepted."""
        ids = [int(v) for v in labels]
        self._annotated.update(v for v in ids if v)
        self._has_background = self._has_background or 0 in ids
        self.annotations.append({"frame": frame, "kind": kind, "points": np.asarray(points).tolist(),
                                 "labels": ids})

    def add_clicks(self, frame: int, points: Any, labels: Any) -> MaskResult:
        """Points (N, 2) pixel (x, y) with labels (N,) (object ids, 0 = background) on ``frame``."""
        frame = self.check_frame(frame)
        xy = self._check_points(points, "points", MAX_CLICK_POINTS)
        if not isinstance(labels, (list, tuple, np.ndarray)) or len(labels) != len(xy):
            raise InputError(f"labels must be a list of {len(xy)} object ids, one per point")
        t_wait = time.perf_counter()
        with self._lock:
            waited = time.perf_counter() - t_wait
            self._require_ready()
            ids = np.asarray([self._check_label(v, "label") for v in labels], dtype=np.int64)
            seeds = self._background_seeds(ids)
            if seeds is not None:  # one call, so one undo; the user's points come last and win their cells
                xy = np.concatenate([seeds, xy])
                ids = np.concatenate([np.zeros(len(seeds), np.int64), ids])
            snap = self._snapshot(1)
            t0 = time.perf_counter()
            self.session.add_clicks(frame, xy, ids, **self._defer())
            timings = {"wait": waited, "session": time.perf_counter() - t0}
            self._history.append(snap)
            self._record(frame, "click", xy, ids)
            self._changed()
            return self._mask_result(frame, timings)

    def add_scribble(self, frame: int, path: Any, label: Any) -> MaskResult:
        """A polyline (M, 2) pixel (x, y) drawn on ``frame`` for object ``label`` (0 = background)."""
        frame = self.check_frame(frame)
        xy = self._check_points(path, "path", MAX_SCRIBBLE_POINTS)
        t_wait = time.perf_counter()
        with self._lock:
            waited = time.perf_counter() - t_wait
            self._require_ready()
            label = self._check_label(label, "label")
            seeds = self._background_seeds(np.array([label]))
            snap = self._snapshot(1 if seeds is None else 2)
            t0 = time.perf_counter()
            if seeds is not None:
                self.session.add_clicks(frame, seeds, np.zeros(len(seeds), np.int64))
            try:
                self.session.add_scribble(frame, xy, label, **self._defer())
            except Exception:
                if seeds is not None:
                    self.session.undo()
                raise
            timings = {"wait": waited, "session": time.perf_counter() - t0}
            self._history.append(snap)
            if seeds is not None:
                self._record(frame, "click", seeds, np.zeros(len(seeds), np.int64))
            self._record(frame, "scribble", xy, np.array([label]))
            self._changed()
            return self._mask_result(frame, timings)

    def add_mask(self, frame: int, mask: Any) -> MaskResult:
        """A whole mask (H, W) of ids (array, PIL image or PNG path) for ``frame``.

        Ids not yet in the object list become new objects.
        """
        frame = self.check_frame(frame)
        arr = read_mask(mask, expected_size=self.frame_size, name=f"mask for frame {frame}")
        t_wait = time.perf_counter()
        with self._lock:
            waited = time.perf_counter() - t_wait
            self._require_ready()
            snap = self._snapshot(1)
            t0 = time.perf_counter()
            self.session.add_mask(frame, arr, **self._defer())
            timings = {"wait": waited, "session": time.perf_counter() - t0}
            self._history.append(snap)
            present = [int(i) for i in np.unique(arr) if i]
            known = self._object_ids()
            for i in present:
                if i not in known:
                    self.objects.append(WebObject(i, f"object {i}"))
            self.objects.sort(key=lambda o: o.id)
            self._annotated.update(present)
            self._has_background = self._has_background or bool((arr == 0).any())
            self.annotations.append({"frame": frame, "kind": "mask", "points": [], "labels": present})
            self._changed()
            return self._mask_result(frame, timings)

    def add_object(self, name: Any = None) -> WebObject:
        """A new object with the lowest free id (1..255)."""
        with self._lock:
            used = self._object_ids()
            free = next((i for i in range(1, 256) if i not in used), None)
            if free is None:
                raise InputError("all 255 object ids are in use; delete an object first")
            obj = WebObject(free, f"object {free}" if name is None else clean_name(name))
            self._history.append(self._snapshot(0))
            self.objects.append(obj)
            self.objects.sort(key=lambda o: o.id)
            return obj

    def _find(self, obj_id: Any) -> WebObject:
        if isinstance(obj_id, bool) or not isinstance(obj_id, (int, np.integer)):
            raise InputError(f"object id must be an integer; got {obj_id!r}")
        for o in self.objects:
            if o.id == int(obj_id):
                return o
        known = ", ".join(str(o.id) for o in self.objects) or "none"
        raise InputError(f"there is no object {obj_id}; objects: {known}")

    def rename_object(self, obj_id: Any, name: Any) -> WebObject:
        with self._lock:
            obj = self._find(obj_id)
            text = clean_name(name)
            self._history.append(self._snapshot(0))
            obj.name = text
            return obj

    def delete_object(self, obj_id: Any) -> None:
        """Drop the object and its annotations from every frame (undo brings them back)."""
        with self._lock:
            obj = self._find(obj_id)
            in_session = obj.id in self._annotated
            if in_session:
                self._require_ready()
            snap = self._snapshot(1 if in_session else 0)
            if in_session:
                self.session.remove_object(obj.id)
            self._history.append(snap)
            self.objects = [o for o in self.objects if o.id != obj.id]
            if in_session:
                self._annotated.discard(obj.id)
                self.annotations = _without_object(self.annotations, obj.id)
                self._changed()

    def undo(self) -> None:
        """Take back the last change (annotation, object added, renamed or deleted)."""
        with self._lock:
            if not self._history:
                raise StateError("nothing to undo")
            snap = self._history[-1]
            if snap.session_steps:
                self._require_ready()
                for _ in range(snap.session_steps):
                    self.session.undo()
            changed = bool(snap.session_steps) or snap.propagated is not self._propagated
            self._history.pop()
            self.objects = snap.objects
            self.annotations = snap.annotations
            self._annotated = set(snap.annotated)
            self._has_background = snap.has_background
            self._propagated, self.propagated_from = snap.propagated, snap.propagated_from
            if changed:
                self._bump()

    # -- propagate -----------------------------------------------------------------------
    def propagate(self, frame: Any) -> dict:
        """Carry the masks shown on ``frame`` and on every annotated frame through the video
        with the semi-supervised path (``EmbeddedVideo.propagate_keyframes``: each frame
        propagates to its neighbours, blended between two); annotated frames showing no object
        are left out. The result is shown on every frame, and exported, until the next
        annotation change; undo takes it back. Seconds per frame of the video, so it runs
        without holding the lock: the page keeps answering, and an annotation made meanwhile
        wins (this then raises StateError: press Propagate again).
        """
        frame = self.check_frame(frame)
        with self._lock:
            self._require_ready()
            if self.propagating:
                raise StateError("a propagation is already running; wait for it to finish")
            if not self._annotated:
                raise StateError("nothing to propagate yet: click on an object first")
            starts = sorted({frame} | {int(a["frame"]) for a in self.annotations})
            masks = {f: np.array(m) for f in starts if (m := self._session_mask(f)).any()}
            if frame not in masks:
                raise StateError(f"frame {frame + 1} shows no object; click on one there before propagating it")
            version = self.version
            video = self.video
            self.propagating = True
        try:
            t0 = time.perf_counter()
            out = np.asarray(video.propagate_keyframes(masks), dtype=np.uint8)
            seconds = time.perf_counter() - t0
        finally:
            with self._lock:
                self.propagating = False
        if out.shape != (self.num_frames, *self.frame_size):
            raise StateError(f"propagation gave masks of shape {out.shape}; expected "
                             f"{(self.num_frames, *self.frame_size)}")
        with self._lock:
            if self.version != version:
                raise StateError("the masks changed while propagating; press Propagate again")
            self._history.append(self._snapshot(0))
            self._propagated, self.propagated_from = out, sorted(masks)
            self.propagate_seconds = seconds
            self._bump()
            return {"frames": sorted(masks), "seconds": seconds, "version": self.version}

    # -- export --------------------------------------------------------------------------
    def export(self, overlay: bool = False, alpha: float = 0.5) -> dict:
        """Write every frame's mask as DAVIS palette PNGs under ``out_dir/masks``, zip them
        into ``out_dir/masks.zip`` and, if ``overlay``, write ``out_dir/overlay.mp4``.

        Returns the file names written (keys of :data:`DOWNLOADS`) and the folder.
        """
        if not isinstance(overlay, bool):
            raise InputError(f"overlay must be true or false; got {overlay!r}")
        if isinstance(alpha, bool) or not isinstance(alpha, (int, float)) or not 0 <= alpha <= 1:
            raise InputError(f"alpha must be a number in 0..1; got {alpha!r}")
        with self._lock:
            self._require_ready()
            if not self._annotated:
                raise StateError("nothing to export yet: click on an object first")
            shown = self._propagated if self._propagated is not None else self.session.masks()
            masks = np.asarray(shown, dtype=np.uint8)
            names = list(self.source.frame_names)
        if masks.shape != (self.num_frames, *self.frame_size):
            raise StateError(f"the session gave masks of shape {masks.shape}; expected "
                             f"{(self.num_frames, *self.frame_size)}")
        with self._export_lock:
            t0 = time.perf_counter()
            folder = self.out_dir / "masks"
            write_masks(folder, masks, names, progress=False)
            with atomic_write_path(self.out_dir / "masks.zip") as tmp:
                # PNGs are compressed already: store them.
                with zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_STORED) as zf:
                    for name in names:
                        zf.write(folder / f"{name}.png", arcname=f"{self.name}/{name}.png")
            files = ["masks.zip"]
            if overlay:
                write_overlay_video(self.out_dir / "overlay.mp4", iter(self.source), iter(masks),
                                    fps=self.source.fps, alpha=float(alpha))
                files.append("overlay.mp4")
            seconds = time.perf_counter() - t0
        return {"folder": str(self.out_dir.resolve()), "files": files, "num_frames": int(masks.shape[0]),
                "seconds": seconds}

    def download_path(self, name: str) -> Path:
        """The exported file ``name`` (one of :data:`DOWNLOADS`), checked to lie in ``out_dir``."""
        if name not in DOWNLOADS:
            raise InputError(f"unknown download {name!r}; expected one of {', '.join(DOWNLOADS)}")
        base = self.out_dir.resolve()
        path = (base / name).resolve()
        if path.parent != base or not path.is_file():
            raise FileNotFoundError(f"{name} has not been exported yet; press Export first")
        return path

    def close(self, timeout: float = 60.0) -> None:
        """Stop embedding or matching (at the next frame) and free the video's files."""
        self.source.cancel.set()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout)
        self.source.close()
