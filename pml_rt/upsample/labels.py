"""Labels from scores: argmax over the label channels, as uint8."""

from __future__ import annotations

from typing import Any

from ..xp import get_xp


def argmax_labels(scores: Any) -> Any:
    """uint8 (...) index of the largest of ``scores`` (C, ...) along axis 0; the earlier
    channel wins a tie, as ``argmax`` does.

    Why not ``argmax(axis=0)``: NumPy reduces along a leading axis element by element,
    several times slower here than C whole-array comparisons (3 ms against 0.6 ms for
    2 x 480 x 854). At most 256 channels.
    """
    xp = get_xp(scores)
    c = int(scores.shape[0])
    if c > 256:
        raise ValueError(f"at most 256 label channels fit uint8 labels, got {c}")
    lab = xp.zeros(scores.shape[1:], dtype=xp.uint8)
    best = scores[0]
    for j in range(1, c):
        better = scores[j] > best
        lab[better] = j
        best = xp.maximum(best, scores[j])
    return lab
