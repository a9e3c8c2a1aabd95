"""Whole jobs built from the pieces: segment one video into a folder of masks.

Used by ``pml-rt segment``, the batch runner and the benchmarks, so they all produce the
same files the same way: masks are written to a temporary folder as they come and moved into
place only when every frame is done; an overlay video, encoded in the same pass, likewise.
"""

from __future__ import annotations

import os
import secrets
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .errors import InputError
from .io import atomic_output_dir, open_video, read_mask, write_overlay_video, write_palette_png
from .io.overlay import OVERLAY_VIDEO_EXTENSIONS
from .segmenter import Segmenter
from .upsample import DEFAULT_METHOD


@dataclass
class SegmentResult:
    """What :func:`segment_to_folder` did: paths written and time per stage (seconds)."""

    out_dir: Path
    num_frames: int
    frame_size: tuple[int, int]
    overlay: Path | None = None
    timings: dict[str, float] = field(default_factory=dict)
    cache: Path | None = None  # the embedding cache entry used, where one was


def segment_to_folder(segmenter: Segmenter, video: Any, mask: Any, out_dir: str | os.PathLike, *,
                      mask_frame: int = 0, overlay: str | os.PathLike | None = None,
                      upsample: str = DEFAULT_METHOD, k: int = 5, online_adaptation: bool = True,
                      progress: bool = True, propagate_options: dict | None = None,
                      cache: bool | None = None, cache_dir: str | os.PathLike | None = None) -> SegmentResult:
    """Segment ``video`` from ``mask`` on ``mask_frame``; write ``<frame name>.png`` palette masks
    into ``out_dir`` (and an overlay video to ``overlay``), all or nothing. ``mask`` may also be
    a mapping {frame: mask} of masks on several frames (``EmbeddedVideo.propagate_keyframes``;
    ``mask_frame`` then stays 0).

    Streams: each mask is written to the temporary folder as soon as it is made, and the
    overlay is encoded in the same pass, so no step holds every frame or mask. ``cache`` and
    ``cache_dir`` go to :meth:`Segmenter.embed`. A write that fails (a full disk, no
    permission) raises :class:`pml_rt.cache.OutputError` and leaves earlier outputs as they were.
    """
    from .cache import OutputError, output_error  # noqa: PLC0415

    t0 = time.perf_counter()
    source = open_video(video)
    # Cheap checks first, so that bad input costs no embedding (and no cache entry).
    several = isinstance(mask, Mapping)
    if several and (mask_frame != 0 or not mask):
        raise InputError("masks on several frames come as a non-empty {frame: mask} mapping, without mask_frame")
    n = len(source)
    for f, m in (mask.items() if several else [(mask_frame, mask)]):
        named = isinstance(m, (str, os.PathLike))
        if not isinstance(f, (int, np.integer)) or not 0 <= int(f) < n:
            raise InputError(f"mask frame {f!r} is out of range; this video has frames 0..{n - 1}")
        read_mask(m, expected_size=source.frame_size, name="mask" if named else f"mask for frame {f}")
    if overlay is not None and Path(overlay).suffix.lower() not in OVERLAY_VIDEO_EXTENSIONS:
        raise InputError(f"overlay video '{overlay}' has suffix {Path(overlay).suffix!r}; expected one of "
                         f"{', '.join(OVERLAY_VIDEO_EXTENSIONS)}")
    embedded = segmenter.embed(source, progress=progress, cache=cache, cache_dir=cache_dir)
    t1 = time.perf_counter()
    names = embedded.frame_names
    out_dir = Path(out_dir)
    overlay_final = Path(overlay) if overlay is not None else None
    overlay_tmp = None
    if overlay_final is not None:  # written next to its final name, moved there after the masks
        overlay_tmp = overlay_final.parent / f".{overlay_final.name}.tmp-{secrets.token_hex(4)}{overlay_final.suffix}"
    mask_seconds = [0.0]

    def write_each(tmp: Path) -> Iterator[np.ndarray]:
        opts = {"upsample": upsample, "progress": progress, **(propagate_options or {})}
        it = (embedded.propagate_keyframes_iter(mask, k, online_adaptation, **opts) if several
              else embedded.propagate_iter(mask, mask_frame, k, online_adaptation, **opts))
        while True:
            w0 = time.perf_counter()
            item = next(it, None)
            if item is None:
                return
            t, m = item
            write_palette_png(tmp / f"{names[t]}.png", m)
            mask_seconds[0] += time.perf_counter() - w0
            yield m

    try:
        with atomic_output_dir(out_dir) as tmp:
            if overlay_tmp is None:
                for _ in write_each(Path(tmp)):
                    pass
            else:
                write_overlay_video(overlay_tmp, iter(source), write_each(Path(tmp)), fps=source.fps)
        if overlay_tmp is not None:
            os.replace(overlay_tmp, overlay_final)  # type: ignore[arg-type]
    except OutputError:
        raise
    except OSError as exc:
        raise output_error(f"masks to {out_dir}" + (f" or the overlay {overlay_final}" if overlay_final else ""),
                           exc, "free space or choose another --out") from exc
    finally:
        if overlay_tmp is not None and overlay_tmp.exists():
            overlay_tmp.unlink()
    t2 = time.perf_counter()
    return SegmentResult(out_dir, embedded.num_frames, embedded.frame_size, overlay_final,
                         {"embed": t1 - t0, "propagate+write": mask_seconds[0],
                          "overlay": (t2 - t1) - mask_seconds[0]},
                         cache=Path(embedded.meta["cache"]) if embedded.meta.get("cache") else None)
