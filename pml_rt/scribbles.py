"""Scribbles: polylines rasterised to pixels, and the DAVIS interactive scribble files.

A scribble is a polyline of pixel (x, y) points drawn on one frame with one label. It is
rasterised at full resolution (consecutive points joined by 8-connected lines, as the DAVIS
framework's Bresenham lines are), and an interactive session then labels every embedding
cell the line crosses.

DAVIS interactive files (``<seq>/NNN.json``) hold ``{"scribbles": [per-frame list of
{"path": [[x, y], ...] in 0..1, "object_id", "start_time", "end_time"}], "sequence"}``;
points scale to pixels as the DAVIS framework does, ``x * (W - 1)`` and ``y * (H - 1)``
truncated to integers.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .errors import InputError

__all__ = [
    "DavisScribble",
    "DavisScribbles",
    "polyline_pixels",
    "rasterize_polyline",
    "read_davis_scribbles",
]


def _check_path(path: Any, what: str) -> np.ndarray:
    """``path`` as float64 (M, 2), M >= 1, finite; InputError naming ``what`` otherwise."""
    try:
        p = np.asarray(path, dtype=np.float64)
    except (TypeError, ValueError):
        raise InputError(f"{what}: expected an (M, 2) array of (x, y) points, got {type(path).__name__}") from None
    if p.ndim == 1 and p.shape[0] == 2:
        p = p[None]
    if p.ndim != 2 or p.shape[1] != 2 or p.shape[0] == 0:
        raise InputError(f"{what}: expected an (M, 2) array of (x, y) points with M >= 1, got shape {p.shape}")
    if not np.isfinite(p).all():
        raise InputError(f"{what}: points must be finite numbers")
    return p


def polyline_pixels(path: Any) -> np.ndarray:
    """Integer pixels (K, 2) as (x, y) covered by the polyline through ``path`` (M, 2) (x, y).

    Points are truncated to integer pixels; each segment is drawn as an 8-connected line
    (every pixel step moves at most one pixel in x and in y, both ends included), so a
    single point gives one pixel. Pixels are returned in drawing order, consecutive
    duplicates removed. No bounds check: see :func:`rasterize_polyline`.
    """
    p = np.floor(_check_path(path, "polyline")).astype(np.int64)
    if p.shape[0] == 1:
        return p
    d = np.diff(p, axis=0)
    steps = np.maximum(np.abs(d).max(axis=1), 1)  # samples per segment, start point included
    seg = np.repeat(np.arange(len(d)), steps)
    first = np.repeat(np.cumsum(steps) - steps, steps)
    t = (np.arange(int(steps.sum())) - first) / steps[seg]
    pts = p[seg] + np.rint(d[seg] * t[:, None]).astype(np.int64)
    pts = np.concatenate([pts, p[-1:]])
    keep = np.ones(len(pts), dtype=bool)
    keep[1:] = (pts[1:] != pts[:-1]).any(axis=1)
    return pts[keep]


def rasterize_polyline(path: Any, size: tuple[int, int], width: int = 1) -> np.ndarray:
    """bool (H, W): pixels of the polyline through ``path`` (M, 2) pixel (x, y) points.

    ``width`` > 1 thickens the line by a square brush of that side. Points outside the
    frame raise InputError (a session scribble must lie on its frame).
    """
    hh, ww = int(size[0]), int(size[1])
    px = polyline_pixels(path)
    bad = (px[:, 0] < 0) | (px[:, 0] >= ww) | (px[:, 1] < 0) | (px[:, 1] >= hh)
    if bad.any():
        x, y = px[np.argmax(bad)]
        raise InputError(f"polyline point (x={x}, y={y}) is outside the {ww}x{hh} (width x height) frame")
    out = np.zeros((hh, ww), dtype=bool)
    out[px[:, 1], px[:, 0]] = True
    if width > 1:
        from scipy import ndimage  # noqa: PLC0415

        out = ndimage.binary_dilation(out, np.ones((int(width), int(width)), dtype=bool))
    return out


@dataclass(frozen=True)
class DavisScribble:
    """One DAVIS scribble: ``path`` float64 (M, 2) of (x, y) in 0..1 on ``frame``, ``object_id`` (0 = background)."""

    frame: int
    object_id: int
    path: np.ndarray
    start_time: float | None = None
    end_time: float | None = None

    def pixels(self, frame_size: tuple[int, int]) -> np.ndarray:
        """The path in pixels, float64 (M, 2) (x, y): ``x * (W - 1)``, ``y * (H - 1)`` truncated, as DAVIS does."""
        hh, ww = frame_size
        return np.floor(self.path * np.array([ww - 1, hh - 1], dtype=np.float64))


@dataclass
class DavisScribbles:
    """The scribbles of one DAVIS interactive file, in file order."""

    sequence: str | None
    num_frames: int  # length of the file's per-frame list
    scribbles: list[DavisScribble] = field(default_factory=list)
    source: str = "scribbles"  # file name or a description, for messages

    @property
    def frames(self) -> list[int]:
        """Frames that hold at least one scribble, sorted."""
        return sorted({s.frame for s in self.scribbles})

    @property
    def object_ids(self) -> list[int]:
        return sorted({s.object_id for s in self.scribbles if s.object_id})

    def to_mask(self, frame_size: tuple[int, int], num_frames: int | None = None, default: int = -1) -> np.ndarray:
        """int16 (T, H, W): each scribble's object id along its line, ``default`` elsewhere.

        The DAVIS framework's ``scribbles2mask`` with Bresenham lines; later scribbles win.
        """
        n = self.num_frames if num_frames is None else int(num_frames)
        out = np.full((n, *frame_size), default, dtype=np.int16)
        for s in self.scribbles:
            if s.frame >= n:
                raise InputError(f"{self.source}: scribble on frame {s.frame}, but the video has {n} frames")
            px = polyline_pixels(s.pixels(frame_size))
            out[s.frame, px[:, 1], px[:, 0]] = s.object_id
        return out


def read_davis_scribbles(source: str | os.PathLike[str] | dict) -> DavisScribbles:
    """Read a DAVIS interactive scribble file (path, or the already parsed JSON dict).

    Checks each path is an (M, 2) list of points in 0..1 and each object id an int in
    0..255; errors name the file, the frame and the scribble.
    """
    if isinstance(source, dict):
        data, name = source, "scribbles"
    else:
        name = str(source)
        try:
            data = json.loads(Path(source).read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise InputError(f"{name}: no such scribble file; expected a DAVIS interactive JSON file") from None
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise InputError(f"{name}: cannot read the scribbles ({exc}); expected DAVIS interactive JSON") from None
    if not isinstance(data, dict) or not isinstance(data.get("scribbles"), list):
        raise InputError(f"{name}: expected a JSON object with a 'scribbles' list (one list of scribbles per frame)")
    frames = data["scribbles"]
    out = DavisScribbles(sequence=data.get("sequence"), num_frames=len(frames), source=name)
    for f, per_frame in enumerate(frames):
        if not isinstance(per_frame, list):
            raise InputError(f"{name}: frame {f}: expected a list of scribbles, got {type(per_frame).__name__}")
        for j, s in enumerate(per_frame):
            where = f"{name}: frame {f}, scribble {j}"
            if not isinstance(s, dict) or "path" not in s or "object_id" not in s:
                raise InputError(f"{where}: expected an object with 'path' and 'object_id'")
            obj = s["object_id"]
            if isinstance(obj, bool) or not isinstance(obj, (int, np.integer)) or not 0 <= int(obj) <= 255:
                raise InputError(f"{where}: object_id must be an int in 0..255 (0 = background), got {obj!r}")
            path = _check_path(s["path"], where)
            if (path < 0).any() or (path > 1).any():
                raise InputError(f"{where}: path points must be normalised to 0..1, got values in "
                                 f"[{path.min():.3g}, {path.max():.3g}]")
            out.scribbles.append(DavisScribble(frame=f, object_id=int(obj), path=path,
                                               start_time=s.get("start_time"), end_time=s.get("end_time")))
    return out
