"""Video input: frames from an array, a folder of images or a video file, one at a time.

Every source gives frames as uint8 (H, W, 3) RGB arrays in order and streams them (a long
video is never held in memory whole). Input problems are found as early as is cheap (sizes
and headers when the source is opened) and reported as :class:`InputError` naming the file,
the frame and what was expected.
"""

from __future__ import annotations

import os
import re
import warnings
from collections import OrderedDict
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from .._optional import require
from ..errors import InputError

#: Image suffixes read from a folder of frames (lower case).
IMAGE_EXTENSIONS: tuple[str, ...] = (".jpg", ".jpeg", ".png", ".bmp", ".webp")
#: Video file suffixes read with PyAV (lower case).
VIDEO_EXTENSIONS: tuple[str, ...] = (".mp4", ".m4v", ".mov", ".avi", ".webm", ".mkv")
#: Frame rate given to sources that have none (folders, arrays).
DEFAULT_FPS: float = 25.0


class VideoSource:
    """A sequence of RGB frames: uint8 (H, W, 3) each, all the same size.

    Subclasses give ``__len__``, ``_iter_frames`` and ``_read``. Iterating streams the frames
    in order; ``read(i)`` gets one. ``path`` is the file or folder (None for arrays), used in
    messages. Sources that hold open files free them in ``close()`` (also a context manager).
    """

    path: str | None = None

    def __init__(self, frame_size: tuple[int, int], fps: float) -> None:
        self._frame_size = (int(frame_size[0]), int(frame_size[1]))
        self._fps = float(fps)

    # -- what every source answers -------------------------------------------------------
    def __len__(self) -> int:  # pragma: no cover - abstract
        raise NotImplementedError

    @property
    def frame_size(self) -> tuple[int, int]:
        """(H, W) of every frame."""
        return self._frame_size

    @property
    def fps(self) -> float:
        """Frames per second (the container's rate for video files, else 25.0 unless given)."""
        return self._fps

    @property
    def frame_names(self) -> list[str]:
        """File stems for writing one mask per frame: ``f"{i:05d}"`` unless a folder's stems."""
        return [f"{i:05d}" for i in range(len(self))]

    def __iter__(self) -> Iterator[np.ndarray]:
        """Yield each frame, uint8 (H, W, 3) RGB, in order."""
        return self._iter_frames()

    def read(self, i: int) -> np.ndarray:
        """Return frame ``i`` (negative counts from the end) as uint8 (H, W, 3) RGB."""
        n = len(self)
        if not isinstance(i, (int, np.integer)) or isinstance(i, bool):
            raise InputError(f"frame index must be an int; got {type(i).__name__}")
        j = int(i) + n if i < 0 else int(i)
        if not 0 <= j < n:
            raise InputError(f"frame index {i} is out of range for {self._describe()} "
                             f"with {n} frames; expected 0..{n - 1}")
        return self._read(j)

    def close(self) -> None:
        """Free open files (nothing to do for most sources)."""

    def __enter__(self) -> VideoSource:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        h, w = self.frame_size
        where = f" {self.path!r}" if self.path else ""
        return f"<{type(self).__name__}{where} {len(self)} frames {w}x{h} @ {self.fps:g} fps>"

    # -- for subclasses --------------------------------------------------------------------
    def _iter_frames(self) -> Iterator[np.ndarray]:  # pragma: no cover - abstract
        raise NotImplementedError

    def _read(self, i: int) -> np.ndarray:  # pragma: no cover - abstract
        raise NotImplementedError

    def _describe(self) -> str:
        return f"video '{self.path}'" if self.path else "the frame array"


def _check_frame_array(a: np.ndarray, what: str) -> None:
    """Raise InputError unless ``a`` is uint8 (H, W, 3)."""
    if a.ndim != 3 or a.shape[2] != 3:
        extra = " (grayscale? convert it to RGB first)" if a.ndim == 2 else ""
        raise InputError(
            f"{what} has shape {a.shape}; expected (H, W, 3) RGB with 3 channels{extra}"
        )
    if a.dtype != np.uint8:
        raise InputError(
            f"{what} has dtype {a.dtype}; expected uint8 RGB 0..255 "
            "(for floats in 0..1 use (a * 255).round().astype(np.uint8))"
        )
    if a.shape[0] == 0 or a.shape[1] == 0:
        raise InputError(f"{what} has shape {a.shape}; expected H, W > 0")


class ArraySource(VideoSource):
    """Frames held in memory: a uint8 array (T, H, W, 3) or a list of uint8 (H, W, 3) arrays.

    Frames are yielded as views of the caller's arrays (no copy): do not modify them.
    """

    def __init__(self, frames: np.ndarray | Sequence[np.ndarray], fps: float = DEFAULT_FPS) -> None:
        if isinstance(frames, np.ndarray):
            if frames.ndim == 3:
                hint = (" (one frame? pass frames[None])" if frames.shape[2] == 3
                        else " (grayscale? 3 channels are expected: convert to RGB first)")
                raise InputError(
                    f"the frame array has shape {frames.shape}; expected (T, H, W, 3) RGB{hint}"
                )
            if frames.ndim != 4 or frames.shape[3] != 3:
                raise InputError(
                    f"the frame array has shape {frames.shape}; expected (T, H, W, 3) RGB with "
                    "3 channels"
                )
            if frames.shape[0] == 0:
                raise InputError("the frame array has no frames (T = 0); expected at least one")
            _check_frame_array(frames[0], "the frame array")
            self._frames: Sequence[np.ndarray] | np.ndarray = frames
        else:
            items = list(frames)
            if not items:
                raise InputError("the frame list is empty; expected at least one (H, W, 3) frame")
            arrays = []
            for i, f in enumerate(items):
                a = np.asarray(f)
                _check_frame_array(a, f"frame {i} of the frame list")
                arrays.append(a)
            size0 = arrays[0].shape[:2]
            for i, a in enumerate(arrays):
                if a.shape[:2] != size0:
                    raise InputError(
                        f"frame {i} of the frame list has size (H, W) = {a.shape[:2]}; expected "
                        f"{size0} like frame 0 (all frames must have one size)"
                    )
            self._frames = arrays
        check_fps(fps)
        first = self._frames[0]
        super().__init__((first.shape[0], first.shape[1]), fps)

    def __len__(self) -> int:
        return len(self._frames)

    def _iter_frames(self) -> Iterator[np.ndarray]:
        for i in range(len(self._frames)):
            yield self._frames[i]

    def _read(self, i: int) -> np.ndarray:
        return self._frames[i]


def _natural_key(name: str) -> tuple[list[Any], str]:
    """Sort key putting 'f2.png' before 'f10.png' (digit runs compare as numbers)."""
    parts = re.split(r"(\d+)", name)
    key = [int(p) if k % 2 else p.lower() for k, p in enumerate(parts)]
    return key, name


def check_fps(fps: float, name: str = "fps") -> None:
    """Raise :class:`InputError` unless ``fps`` is a finite positive number."""
    try:
        ok = float(fps) > 0 and np.isfinite(float(fps))
    except (TypeError, ValueError):
        ok = False
    if not ok:
        raise InputError(f"{name} must be a positive number; got {fps!r}")


class FolderSource(VideoSource):
    """Frames stored as image files (JPEG, PNG, BMP, WebP) in one folder, in name order.

    Names sort naturally ('2.png' before '10.png'); hidden files and other suffixes are
    skipped. Image headers are checked when the source is opened, so a file of another size
    is reported before any frame is processed; undecodable data is reported when read.
    Frames are converted to RGB (grayscale and palette images included, alpha dropped); EXIF
    orientation is not applied, so frames keep the pixel grid their masks were drawn on.
    """

    def __init__(self, folder: str | os.PathLike[str], fps: float = DEFAULT_FPS) -> None:
        root = Path(folder)
        self.path = str(root)
        if not root.is_dir():
            raise InputError(f"frame folder '{root}' does not exist or is not a folder")
        files = [p for p in root.iterdir()
                 if p.suffix.lower() in IMAGE_EXTENSIONS and not p.name.startswith(".")
                 and p.is_file()]
        if not files:
            raise InputError(
                f"frame folder '{root}' has no image files; expected frames with suffix "
                f"{', '.join(IMAGE_EXTENSIONS)}"
            )
        files.sort(key=lambda p: _natural_key(p.name))
        stems: dict[str, Path] = {}
        for p in files:
            if p.stem in stems:
                raise InputError(
                    f"frame folder '{root}' has two frames named {p.stem!r} ({stems[p.stem].name} "
                    f"and {p.name}); mask files are named by stem, so keep one"
                )
            stems[p.stem] = p
        self._files = files
        sizes = []
        for i, p in enumerate(files):
            try:
                with Image.open(p) as im:
                    w, h = im.size
            except Exception as exc:  # Pillow raises many types for unreadable files
                raise InputError(f"frame {i} '{p}' cannot be read as an image ({exc})") from exc
            if sizes and (h, w) != sizes[0]:
                raise InputError(
                    f"frame {i} '{p}' has size (H, W) = {(h, w)}; expected {sizes[0]} like the "
                    f"first frame '{files[0].name}' (all frames must have one size)"
                )
            sizes.append((h, w))
        size = sizes[0]
        check_fps(fps)
        super().__init__(size, fps)

    def __len__(self) -> int:
        return len(self._files)

    @property
    def frame_names(self) -> list[str]:
        return [p.stem for p in self._files]

    @property
    def files(self) -> list[Path]:
        """The frame files, in frame order."""
        return list(self._files)

    def _iter_frames(self) -> Iterator[np.ndarray]:
        for i in range(len(self._files)):
            yield self._read(i)

    def _read(self, i: int) -> np.ndarray:
        p = self._files[i]
        try:
            with Image.open(p) as im:
                im.load()
                rgb = im if im.mode == "RGB" else im.convert("RGB")
                arr = np.asarray(rgb, dtype=np.uint8)
        except Exception as exc:  # truncated/corrupt data shows up only on decode
            raise InputError(f"frame {i} '{p}' cannot be decoded ({exc})") from exc
        if arr.shape[:2] != self.frame_size:
            raise InputError(
                f"frame {i} '{p}' has size (H, W) = {arr.shape[:2]}; expected {self.frame_size}"
            )
        return arr


def _av() -> Any:
    return require("av", "reading and writing video files")


class ContainerSource(VideoSource):
    """Frames decoded from a video file (MP4, MOV, AVI, WebM, MKV) with PyAV.

    The first frame is decoded when the source is opened (an unreadable or empty file fails
    at once). The frame count is exact: it is found by decoding the whole stream once (without
    colour conversion), on the first ``len()``, and kept. ``read(i)`` decodes forward from
    the last frame read, or from the start when going back. Rotation metadata is not applied.
    """

    def __init__(self, path: str | os.PathLike[str], fps: float | None = None) -> None:
        self.path = str(path)
        self._av = _av()
        self._count: int | None = None
        self._reader: tuple[Any, Iterator[Any], int] | None = None  # container, frames, next index
        container, stream = self._open()
        try:
            it = self._decode(container, stream)
            try:
                first = next(it)
            except StopIteration:
                raise InputError(
                    f"video '{self.path}' has no decodable frames; expected at least one "
                    "(is the file empty or truncated?)"
                ) from None
            size = (first.height, first.width)
            self._header_frames = int(stream.frames or 0)  # 0 where the container has no count
            rate = stream.average_rate or stream.guessed_rate
            file_fps = float(rate) if rate else DEFAULT_FPS
        finally:
            container.close()
        if fps is not None:
            check_fps(fps)
        super().__init__(size, file_fps if fps is None else fps)

    def _open(self) -> tuple[Any, Any]:
        av = self._av
        try:
            container = av.open(self.path, mode="r", metadata_errors="replace")
        except (av.FFmpegError, OSError) as exc:
            raise InputError(f"video '{self.path}' cannot be opened ({exc})") from exc
        if not container.streams.video:
            container.close()
            raise InputError(f"video '{self.path}' has no video stream")
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"  # frame + slice threads: several times faster decoding
        return container, stream

    def _decode(self, container: Any, stream: Any) -> Iterator[Any]:
        """Yield decoded av.VideoFrame objects; decode errors become InputError with the index."""
        av = self._av
        i = 0
        gen = container.decode(stream)
        while True:
            try:
                frame = next(gen)
            except StopIteration:
                return
            except (av.FFmpegError, OSError, EOFError) as exc:
                raise InputError(
                    f"video '{self.path}': frame {i} cannot be decoded ({exc})"
                ) from exc
            yield frame
            i += 1

    def __len__(self) -> int:
        if self._count is None:
            container, stream = self._open()
            try:
                n = sum(1 for _ in self._decode(container, stream))
            finally:
                container.close()
            self._set_count(n)
        return self._count  # type: ignore[return-value]

    def _set_count(self, n: int) -> None:
        """Keep the decoded frame count; warn where far fewer frames decode than the header says."""
        if self._count is None and self._header_frames - n > max(2, self._header_frames // 100):
            warnings.warn(
                f"video '{self.path}': its header says {self._header_frames} frames but only {n} "
                "decode; the file may be truncated. Using the frames that decode.",
                stacklevel=3,
            )
        self._count = n

    def _to_rgb(self, frame: Any, i: int) -> np.ndarray:
        if (frame.height, frame.width) != self.frame_size:
            raise InputError(
                f"video '{self.path}': frame {i} has size (H, W) = {(frame.height, frame.width)}; "
                f"expected {self.frame_size} like frame 0 (the resolution changes mid-stream)"
            )
        return frame.to_ndarray(format="rgb24")

    def _iter_frames(self) -> Iterator[np.ndarray]:
        container, stream = self._open()
        try:
            n = 0
            for n, frame in enumerate(self._decode(container, stream), start=1):
                yield self._to_rgb(frame, n - 1)
            self._set_count(n)  # a full pass gives the exact count for free
        finally:
            container.close()

    def _read(self, i: int) -> np.ndarray:
        if self._reader is None or self._reader[2] > i:
            self.close()
            container, stream = self._open()
            self._reader = (container, self._decode(container, stream), 0)
        container, frames, nxt = self._reader
        while True:
            frame = next(frames, None)
            if frame is None:  # pragma: no cover - len() said the frame exists
                self.close()
                raise InputError(f"video '{self.path}': frame {i} is missing")
            nxt += 1
            self._reader = (container, frames, nxt)
            if nxt - 1 == i:
                return self._to_rgb(frame, i)

    def close(self) -> None:
        if self._reader is not None:
            self._reader[0].close()
            self._reader = None

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:  # pragma: no cover - interpreter shutdown
            pass


class FrameCache:
    """The frames of a source read again and again (edge-aware upsampling in an interactive
    session), kept decoded up to ``max_bytes`` (least recently used leave first).

    Why: a folder source decodes its JPEG on every ``read`` (about 7 ms at 480p) and a video
    file decodes from the start to go back; a session redraws the same frames after every
    click. ``max_bytes=0`` keeps nothing (every read goes to the source).
    """

    def __init__(self, source: VideoSource, max_bytes: int) -> None:
        if isinstance(max_bytes, bool) or not isinstance(max_bytes, (int, np.integer)) or max_bytes < 0:
            raise InputError(f"max_bytes must be an integer >= 0, got {max_bytes!r}")
        self.source = source
        self.max_bytes = int(max_bytes)
        self.nbytes = 0  # bytes of the frames held now
        self._frames: OrderedDict[int, np.ndarray] = OrderedDict()

    def __len__(self) -> int:
        """Frames held now."""
        return len(self._frames)

    @property
    def fits_all(self) -> bool:
        """Whether every frame of the source fits in ``max_bytes``."""
        h, w = self.source.frame_size
        return len(self.source) * h * w * 3 <= self.max_bytes

    def fill(self) -> int:
        """Read the source once from the start, in order (a video file decodes forward), keeping
        frames until ``max_bytes`` is reached; returns how many frames are held."""
        for i, frame in enumerate(self.source):
            if i in self._frames:
                continue
            if self.nbytes + frame.nbytes > self.max_bytes:
                break
            self._frames[i] = frame
            self.nbytes += frame.nbytes
        return len(self._frames)

    def read(self, i: int) -> np.ndarray:
        """Frame ``i`` uint8 (H, W, 3) RGB, from memory where it was read before (do not modify it)."""
        frame = self._frames.get(i)
        if frame is not None:
            self._frames.move_to_end(i)
            return frame
        frame = self.source.read(i)
        if frame.nbytes <= self.max_bytes:
            self._frames[i] = frame
            self.nbytes += frame.nbytes
            while self.nbytes > self.max_bytes:
                self.nbytes -= self._frames.popitem(last=False)[1].nbytes
        return frame


def open_video(
    source: str | os.PathLike[str] | np.ndarray | Sequence[np.ndarray] | VideoSource,
    fps: float | None = None,
) -> VideoSource:
    """Open frames from a folder of images, a video file, an array or a list of arrays.

    ``source``: a folder of JPEG/PNG/BMP/WebP frames, a video file (.mp4, .mov, .avi, .webm,
    .mkv), a uint8 array (T, H, W, 3), a list of uint8 (H, W, 3) arrays, or a VideoSource
    (returned as is). ``fps`` overrides the frame rate (default: the file's, else 25.0).
    Raises :class:`InputError` for a missing path, an unsupported suffix or unreadable input.
    """
    if isinstance(source, VideoSource):
        return source
    if isinstance(source, (str, os.PathLike)):
        p = Path(source)
        if not p.exists():
            raise InputError(f"video path '{p}' does not exist")
        if p.is_dir():
            return FolderSource(p, fps=DEFAULT_FPS if fps is None else fps)
        suffix = p.suffix.lower()
        if suffix in VIDEO_EXTENSIONS:
            return ContainerSource(p, fps=fps)
        supported = (f"a folder of frames ({', '.join(IMAGE_EXTENSIONS)}) or a video file "
                     f"({', '.join(VIDEO_EXTENSIONS)})")
        if suffix in IMAGE_EXTENSIONS:
            raise InputError(
                f"video path '{p}' is a single image; expected {supported}. Put the frames in a "
                "folder, or pass an array (T, H, W, 3)"
            )
        raise InputError(
            f"video path '{p}' has unsupported suffix {p.suffix!r}; expected {supported}"
        )
    if isinstance(source, np.ndarray) or isinstance(source, (list, tuple)):
        return ArraySource(source, fps=DEFAULT_FPS if fps is None else fps)
    raise InputError(
        f"cannot open a video from {type(source).__name__}; expected a path (folder or video "
        "file), a uint8 array (T, H, W, 3) or a list of (H, W, 3) arrays"
    )
