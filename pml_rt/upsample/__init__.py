"""Stride-8 label scores -> full-resolution labels.

Methods: ``"bilinear"`` (fast, blurs boundaries), ``"joint-bilateral"`` and
``"bilateral-solver"`` (edge-aware, guided by the frame; see docs/UPSAMPLING.md).
"""

from __future__ import annotations

from typing import Any, Callable

from ..errors import InputError
from .bilinear import bilinear_labels, bilinear_upsample

METHODS = ("bilinear", "bilateral-solver", "joint-bilateral")
# Measured best (docs/RESULTS.md): on the val split the solver adds 3.2 points of F and 1.6 of J
# over bilinear at about 20 ms per 854x480 frame on the CPU.
DEFAULT_METHOD = "bilateral-solver"
EDGE_STRIDE = 8  # cell side (pixels) the bilateral solver and joint bilateral filter work on


def needs_guide(method: str) -> bool:
    """Whether ``method`` needs the full-resolution frame."""
    check_method(method)
    return method != "bilinear"


def check_method(method: str) -> str:
    if method not in METHODS:
        raise InputError(f"unknown upsample method {method!r}; valid: {', '.join(METHODS)}")
    return method


def _on_edge_grid(scores: Any, out_size: tuple[int, int], method: str, guide: Any, confidence: Any,
                  stride: int) -> tuple[Any, Any]:
    """Check the guide of an edge-aware ``method``; return (scores, confidence) on its 8-pixel cells."""
    if guide is None:
        raise InputError(f"upsample method {method!r} needs the frame as guide")
    if tuple(guide.shape[:2]) != tuple(out_size):
        raise InputError(f"guide frame is {tuple(guide.shape[:2])}, expected {tuple(out_size)}")
    if stride != EDGE_STRIDE:
        # The edge-aware methods work on cells of 8 pixels. Coarser cells (a Segmenter with
        # input_scale 0.5 gives 16) are first resampled bilinearly onto the 8-pixel grid.
        if stride % EDGE_STRIDE:
            raise InputError(f"upsample method {method!r} needs a stride that is a multiple of {EDGE_STRIDE}, "
                             f"got {stride}")
        fine = (-(-out_size[0] // EDGE_STRIDE), -(-out_size[1] // EDGE_STRIDE))
        scores = bilinear_upsample(scores, fine, stride // EDGE_STRIDE)
        if confidence is not None:
            confidence = bilinear_upsample(confidence[None], fine, stride // EDGE_STRIDE)[0]
    return scores, confidence


def _edge_functions(method: str) -> tuple[Callable[..., Any], Callable[..., Any]]:
    """(scores function, labels function) of an edge-aware method, each ``f(scores, guide, confidence)``."""
    if method == "bilateral-solver":
        from .bilateral_solver import bilateral_solver_labels, bilateral_solver_upsample  # noqa: PLC0415

        return bilateral_solver_upsample, bilateral_solver_labels
    from .joint_bilateral import joint_bilateral_labels, joint_bilateral_upsample  # noqa: PLC0415

    return joint_bilateral_upsample, joint_bilateral_labels


def _upsample(scores: Any, out_size: tuple[int, int], method: str, guide: Any, confidence: Any, stride: int,
              labels: bool) -> Any:
    check_method(method)
    if method == "bilinear":
        return (bilinear_labels if labels else bilinear_upsample)(scores, out_size, stride)
    scores, confidence = _on_edge_grid(scores, out_size, method, guide, confidence, stride)
    return _edge_functions(method)[int(labels)](scores, guide, confidence)


def upsample_scores(scores: Any, out_size: tuple[int, int], method: str = "bilinear", guide: Any = None,
                    confidence: Any = None, stride: int = 8) -> Any:
    """scores float32 (C, h, w) -> float32 (C, H, W) with ``method``; ``guide`` uint8 (H, W, 3)."""
    return _upsample(scores, out_size, method, guide, confidence, stride, labels=False)


def upsample_labels(scores: Any, out_size: tuple[int, int], method: str = "bilinear", guide: Any = None,
                    confidence: Any = None, stride: int = 8) -> Any:
    """Label columns (H, W) uint8: argmax over C of :func:`upsample_scores`, the same labels.

    Every method makes the labels without the full-resolution scores (only pixels near a
    label change are computed; see the ``*_labels`` functions).
    """
    return _upsample(scores, out_size, method, guide, confidence, stride, labels=True)
