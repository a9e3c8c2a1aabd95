"""pml-rt: video object segmentation by pixel-wise metric learning, fast enough to use live.

    from pml_rt import Segmenter
    video = Segmenter().embed("clip.mp4")   # embeddings, computed once
    masks = video.propagate(mask)           # uint8 (T, H, W) object ids

Importing the package loads NumPy only; torch, TensorRT and CuPy load where they are used.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

__all__ = ["Segmenter", "EmbeddedVideo", "PmlError", "InputError", "StateError", "__version__"]

from .errors import InputError, PmlError, StateError

if TYPE_CHECKING:  # pragma: no cover
    from .segmenter import EmbeddedVideo, Segmenter


def __getattr__(name: str) -> Any:
    # Lazy: `import pml_rt` stays light; the runtime loads on first use of Segmenter.
    if name in ("Segmenter", "EmbeddedVideo"):
        from . import segmenter

        return getattr(segmenter, name)
    raise AttributeError(f"module 'pml_rt' has no attribute {name!r}")
