"""``pml-rt demo``: a self-contained run on a clip built from scikit-image's sample photos.

No data of ours is needed: a disc cut from the ``chelsea`` photo (a cat) glides and grows
over the ``coffee`` photo while the camera pans. The first frame's mask is known by
construction, so the demo segments the clip from it, writes masks and an overlay video,
and prints J against the true masks of every frame.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from ._optional import require


def make_clip(frames: int = 24, size: tuple[int, int] = (240, 320)) -> tuple[np.ndarray, np.ndarray]:
    """Return (frames uint8 (T, H, W, 3), masks uint8 (T, H, W) with the object as id 1)."""
    skdata = require("skimage.data", "the demo clip (pip install 'pml-rt[demo]')")
    hh, ww = size
    background = skdata.coffee()  # (400, 600, 3)
    cat = skdata.chelsea()  # (300, 451, 3)
    patch = cat[40:220, 120:300]  # the cat's face, 180x180
    yy, xx = np.mgrid[:hh, :ww]
    out = np.empty((frames, hh, ww, 3), np.uint8)
    masks = np.zeros((frames, hh, ww), np.uint8)
    for t in range(frames):
        a = t / max(frames - 1, 1)
        by, bx = int(20 + 60 * a), int(30 + 200 * a)  # camera pan over the background
        frame = background[by : by + hh, bx : bx + ww].copy()
        r = 45 + 15 * a  # the disc grows as it comes closer
        cy, cx = hh * (0.45 + 0.1 * np.sin(2 * np.pi * a)), ww * (0.25 + 0.5 * a)
        disc = (yy - cy) ** 2 + (xx - cx) ** 2 <= r * r
        # sample the patch by nearest neighbour, scaled to the disc
        py = np.clip(((yy - cy) / r * 0.5 + 0.5) * (patch.shape[0] - 1), 0, patch.shape[0] - 1).astype(int)
        px = np.clip(((xx - cx) / r * 0.5 + 0.5) * (patch.shape[1] - 1), 0, patch.shape[1] - 1).astype(int)
        frame[disc] = patch[py[disc], px[disc]]
        out[t] = frame
        masks[t] = disc
    return out, masks


def run_demo(out_dir: str | os.PathLike = "pml-rt-demo", frames: int = 24, upsample: str | None = None,
             progress: bool = True) -> Path:
    """Build the clip, segment it from frame 0's mask, write masks/, overlay.mp4, frame0.png."""
    from .io import atomic_output_dir, save_overlay_png, write_overlay_video, write_palette_png
    from .metrics import jaccard
    from .segmenter import Segmenter
    from .upsample import DEFAULT_METHOD

    clip, truth = make_clip(frames)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    seg = Segmenter()
    video = seg.embed(clip, progress=progress)
    masks = video.propagate(truth[0], upsample=upsample or DEFAULT_METHOD, progress=progress)
    with atomic_output_dir(out / "masks") as tmp:
        for name, m in zip(video.frame_names, masks):
            write_palette_png(Path(tmp) / f"{name}.png", m)
    write_overlay_video(out / "overlay.mp4", iter(clip), iter(masks), fps=12)
    save_overlay_png(out / "last_frame.png", clip[-1], masks[-1])
    j = np.asarray(jaccard(masks[1:] > 0, truth[1:] > 0))
    print(f"{seg!r}")
    print(f"segmented {len(clip)} frames of {clip.shape[2]}x{clip.shape[1]}; "
          f"J against the true masks: mean {j.mean():.3f}, min {j.min():.3f}")
    return out
