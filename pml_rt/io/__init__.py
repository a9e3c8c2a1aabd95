"""Input and output: video frames in, masks and overlay pictures out.

- :func:`open_video` gives a :class:`VideoSource` (array, image folder or video file) that
  streams uint8 (H, W, 3) RGB frames; :class:`FrameCache` keeps frames read again and again.
- :func:`read_mask` reads object-id masks (DAVIS palette PNGs, 0/255 PNGs, arrays);
  :func:`write_palette_png` and :func:`write_masks` write DAVIS palette PNGs.
- :func:`overlay`, :func:`save_overlay_png` and :func:`write_overlay_video` draw masks on frames.
- :func:`atomic_output_dir` and :func:`atomic_write_path` put outputs in place only on success.

Importing this package imports numpy and Pillow only; PyAV is imported when a video file
is read or written.
"""

from __future__ import annotations

from .masks import DAVIS_PALETTE, palette_image, read_mask, write_palette_png
from .outputs import atomic_output_dir, atomic_write_path, write_masks
from .overlay import overlay, save_overlay_png, write_overlay_video
from .video import (
    IMAGE_EXTENSIONS,
    VIDEO_EXTENSIONS,
    ArraySource,
    ContainerSource,
    FolderSource,
    FrameCache,
    VideoSource,
    open_video,
)

__all__ = [
    "DAVIS_PALETTE",
    "IMAGE_EXTENSIONS",
    "VIDEO_EXTENSIONS",
    "ArraySource",
    "ContainerSource",
    "FolderSource",
    "FrameCache",
    "VideoSource",
    "atomic_output_dir",
    "atomic_write_path",
    "open_video",
    "overlay",
    "palette_image",
    "read_mask",
    "save_overlay_png",
    "write_masks",
    "write_overlay_video",
    "write_palette_png",
]
