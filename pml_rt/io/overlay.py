"""Pictures of masks over frames: blended DAVIS colours with a darker outline per object.

For looking at results (PNG stills and MP4 videos), not for scoring them.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from .._optional import require
from ..errors import InputError, MissingDependencyError
from .masks import DAVIS_PALETTE, read_mask
from .outputs import atomic_write_path
from .video import check_fps

#: Suffixes :func:`write_overlay_video` writes (H.264 or MPEG-4 Part 2 video).
OVERLAY_VIDEO_EXTENSIONS: tuple[str, ...] = (".mp4", ".mov", ".mkv")


def _contour(mask: np.ndarray, width: int) -> np.ndarray:
    """bool (H, W): object pixels within ``width`` px (4-neighbour steps along rows or
    columns) of a pixel with another id; the image border does not count as a boundary."""
    edge = np.zeros(mask.shape, dtype=bool)
    for d in range(1, width + 1):
        if d < mask.shape[0]:
            diff = mask[d:, :] != mask[:-d, :]
            edge[d:, :] |= diff
            edge[:-d, :] |= diff
        if d < mask.shape[1]:
            diff = mask[:, d:] != mask[:, :-d]
            edge[:, d:] |= diff
            edge[:, :-d] |= diff
    return edge & (mask != 0)


def overlay(
    frame: np.ndarray, mask: np.ndarray, alpha: float = 0.5, contour: int = 2
) -> np.ndarray:
    """Return a new uint8 (H, W, 3) picture of ``mask`` (ids, (H, W)) over ``frame`` (uint8 RGB).

    Each object is blended with its DAVIS_PALETTE colour at ``alpha`` (0 = frame only,
    1 = flat colour); a ``contour``-pixel line (0 for none) of the colour at half brightness
    marks where it meets another id, so touching objects stay apart.
    """
    frame = np.asarray(frame)
    if frame.ndim != 3 or frame.shape[2] != 3 or frame.dtype != np.uint8:
        raise InputError(
            f"overlay frame has shape {frame.shape} and dtype {frame.dtype}; expected uint8 "
            "(H, W, 3) RGB"
        )
    ids = read_mask(mask, expected_size=frame.shape[:2], name="overlay mask", allow_empty=True)
    a = float(alpha)
    if not 0.0 <= a <= 1.0:
        raise InputError(f"alpha must be in 0..1; got {alpha!r}")
    if int(contour) < 0:
        raise InputError(f"contour must be a width in pixels >= 0; got {contour!r}")
    colour = DAVIS_PALETTE[ids].astype(np.float32)  # (H, W, 3)
    obj = (ids != 0)[..., None]
    blended = frame.astype(np.float32) * (1.0 - a) + colour * a
    out = np.where(obj, blended, frame.astype(np.float32))
    if contour:
        edge = _contour(ids, int(contour))[..., None]
        out = np.where(edge, colour * 0.5, out)
    return np.clip(np.rint(out), 0, 255).astype(np.uint8)


def save_overlay_png(
    path: str | os.PathLike[str], frame: np.ndarray, mask: np.ndarray, alpha: float = 0.5
) -> Path:
    """Write ``overlay(frame, mask, alpha)`` as an RGB PNG, atomically; return the path."""
    pic = overlay(frame, mask, alpha)
    final = Path(path)
    with atomic_write_path(final) as tmp:
        Image.fromarray(pic).save(tmp, format="PNG")
    return final


def _pick_codec(av: Any) -> str:
    """libx264 where this FFmpeg build has it, else the always-present mpeg4 encoder."""
    for name in ("libx264", "mpeg4"):
        try:
            av.codec.Codec(name, "w")
            return name
        except Exception:  # noqa: BLE001 - an absent encoder raises various errors
            continue
    raise MissingDependencyError(  # pragma: no cover - PyAV wheels ship mpeg4
        "this FFmpeg build has neither the libx264 nor the mpeg4 encoder; install the PyAV "
        "wheel (pip install av), which bundles them"
    )


def _even(rgb: np.ndarray) -> np.ndarray:
    """Pad one edge row/column where H or W is odd (yuv420p needs even sizes)."""
    h, w = rgb.shape[:2]
    if h % 2 == 0 and w % 2 == 0:
        return rgb
    return np.pad(rgb, ((0, h % 2), (0, w % 2), (0, 0)), mode="edge")


def write_overlay_video(
    path: str | os.PathLike[str],
    frames: Iterable[np.ndarray],
    masks: Iterable[np.ndarray],
    fps: float = 25.0,
    alpha: float = 0.5,
) -> Path:
    """Write an MP4 (or .mov/.mkv) of masks over frames, atomically; return the path.

    ``frames``: uint8 (H, W, 3) RGB, ``masks``: (H, W) ids, both iterables of the same length
    (a VideoSource and a generator of masks are fine; nothing is held whole). H.264 (libx264,
    yuv420p, crf 20) where available, else MPEG-4 Part 2. Odd sizes gain one edge row or
    column. Mismatched counts or sizes raise :class:`InputError` and leave ``path`` untouched.
    """
    final = Path(path)
    if final.suffix.lower() not in OVERLAY_VIDEO_EXTENSIONS:
        raise InputError(
            f"overlay video '{final}' has suffix {final.suffix!r}; expected one of "
            f"{', '.join(OVERLAY_VIDEO_EXTENSIONS)}"
        )
    check_fps(fps)
    av = require("av", "writing overlay videos")
    codec = _pick_codec(av)
    rate = Fraction(float(fps)).limit_denominator(1001)
    with atomic_write_path(final) as tmp:
        container = av.open(str(tmp), mode="w")
        try:
            stream = None
            size: tuple[int, int] | None = None
            n = 0
            mask_it = iter(masks)
            for i, frame in enumerate(frames):
                try:
                    m = next(mask_it)
                except StopIteration:
                    raise InputError(
                        f"overlay video '{final}': only {i} masks for more frames; expected one "
                        "mask per frame"
                    ) from None
                f = np.asarray(frame)
                if size is None:
                    size = f.shape[:2]
                elif f.shape[:2] != size:
                    raise InputError(
                        f"overlay video '{final}': frame {i} has size (H, W) = {f.shape[:2]}; "
                        f"expected {size} like frame 0"
                    )
                pic = _even(overlay(f, m, alpha))
                if stream is None:
                    stream = container.add_stream(codec, rate=rate)
                    stream.height, stream.width = pic.shape[:2]
                    stream.pix_fmt = "yuv420p"
                    if codec == "libx264":
                        stream.options = {"crf": "20", "preset": "veryfast"}
                    else:  # mpeg4's default 200 kb/s is blocky; aim for ~0.15 bit per pixel
                        pixels_per_s = pic.shape[0] * pic.shape[1] * float(fps)
                        stream.bit_rate = int(max(1e6, pixels_per_s * 0.15))
                vf = av.VideoFrame.from_ndarray(pic, format="rgb24")
                for packet in stream.encode(vf):
                    container.mux(packet)
                n += 1
            if n == 0:
                raise InputError(f"overlay video '{final}': no frames given; expected at least one")
            if next(mask_it, None) is not None:
                raise InputError(
                    f"overlay video '{final}': more masks than the {n} frames; expected one mask "
                    "per frame"
                )
            assert stream is not None
            for packet in stream.encode(None):  # flush delayed frames
                container.mux(packet)
        finally:
            container.close()
    return final
