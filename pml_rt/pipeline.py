"""Whole jobs built from the pieces: segment one video into a folder of masks.

Used by ``pml-rt segment``, the batch runner and the benchmarks, so they all produce the
same files the same way: masks are written to a temporary folder and moved into place only
when every frame is done; an overlay video likewise.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .io import atomic_output_dir, open_video, write_overlay_video, write_palette_png
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


def segment_to_folder(segmenter: Segmenter, video: Any, mask: Any, out_dir: str | os.PathLike, *,
                      mask_frame: int = 0, overlay: str | os.PathLike | None = None,
                      upsample: str = DEFAULT_METHOD, k: int = 5, online_adaptation: bool = True,
                      progress: bool = True, propagate_options: dict | None = None) -> SegmentResult:
    """Segment ``video`` from ``mask`` on ``mask_frame``; write ``<frame name>.png`` palette masks
    into ``out_dir`` (and an overlay video to ``overlay``), all or nothing."""
    t0 = time.perf_counter()
    source = open_video(video)
    embedded = segmenter.embed(source, progress=progress)
    t1 = time.perf_counter()
    names = embedded.frame_names
    out_dir = Path(out_dir)
    masks: list[np.ndarray] = []
    with atomic_output_dir(out_dir) as tmp:
        for t, m in embedded.propagate_iter(mask, mask_frame, k, online_adaptation, upsample=upsample,
                                            progress=progress, **(propagate_options or {})):
            write_palette_png(Path(tmp) / f"{names[t]}.png", m)
            if overlay is not None:
                masks.append(m)
    t2 = time.perf_counter()
    overlay_path = None
    if overlay is not None:
        overlay_path = write_overlay_video(overlay, iter(source), masks, fps=source.fps)
    t3 = time.perf_counter()
    return SegmentResult(out_dir, embedded.num_frames, embedded.frame_size, overlay_path,
                         {"embed": t1 - t0, "propagate+write": t2 - t1, "overlay": t3 - t2})
