"""User annotations -> labelled reference cells.

Users name objects by ids 1..255 (0 = background) and those ids never change; the kNN
works on compact label columns 0..K (column 0 = background). :class:`ObjectMap` is the one
place that translates between the two (after Cutie's ``ObjectManager``). Masks given at full
resolution become per-cell labels at the embedding stride by area vote.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .errors import InputError
from .xp import get_xp


class ObjectMap:
    """Stable user object ids <-> compact label columns (0 = background, 1..K = objects)."""

    def __init__(self, ids: list[int] | None = None):
        self._ids: list[int] = [0]
        for i in ids or []:
            self.add(i)

    def add(self, obj_id: int) -> int:
        """Register ``obj_id`` (1..255) if new; return its column."""
        obj_id = int(obj_id)
        if not 0 <= obj_id <= 255:
            raise InputError(f"object id {obj_id} is outside 0..255; use ids 1..255 for objects, 0 for background")
        if obj_id not in self._ids:
            self._ids.append(obj_id)
        return self._ids.index(obj_id)

    def remove(self, obj_id: int) -> None:
        if obj_id == 0 or obj_id not in self._ids:
            raise InputError(f"object id {obj_id} is not annotated; known ids: {self.object_ids}")
        self._ids.remove(obj_id)

    def column(self, obj_id: int) -> int:
        try:
            return self._ids.index(int(obj_id))
        except ValueError:
            raise InputError(f"object id {obj_id} is not annotated; known ids: {self.object_ids}") from None

    @property
    def object_ids(self) -> list[int]:
        """User ids of the objects (without background), in column order."""
        return self._ids[1:]

    @property
    def num_labels(self) -> int:
        """K + 1: the number of label columns, background included."""
        return len(self._ids)

    def lut(self) -> np.ndarray:
        """uint8 (K+1,): column -> user id, to turn label maps into masks with ``lut[labels]``."""
        return np.asarray(self._ids, dtype=np.uint8)

    def columns_of(self, mask: np.ndarray) -> np.ndarray:
        """Map a mask of user ids (H, W) to columns (H, W) int32, adding unseen ids."""
        for i in np.unique(mask):
            self.add(int(i))
        table = np.zeros(256, dtype=np.int32)
        for col, obj_id in enumerate(self._ids):
            table[obj_id] = col
        return table[mask]

    def copy(self) -> "ObjectMap":
        m = ObjectMap()
        m._ids = list(self._ids)
        return m


def cell_shares(columns: Any, num_labels: int, stride: int = 8) -> Any:
    """Area share of each label in each stride x stride cell.

    columns: int (H, W) label columns. Returns float32 (num_labels, ceil(H/s), ceil(W/s));
    cells cut by the frame's edge count only their pixels inside the frame.
    """
    xp = get_xp(columns)
    hh, ww = columns.shape
    h, w = -(-hh // stride), -(-ww // stride)
    pad = xp.full((h * stride, w * stride), -1, dtype=xp.int32)
    pad[:hh, :ww] = columns
    blocks = pad.reshape(h, stride, w, stride)
    counts = xp.stack([(blocks == c).sum(axis=(1, 3)) for c in range(num_labels)]).astype(xp.float32)
    return counts / xp.maximum(counts.sum(axis=0, keepdims=True), 1)


def cell_labels(columns: Any, num_labels: int, stride: int = 8) -> Any:
    """Majority label column of each cell: int32 (ceil(H/s), ceil(W/s))."""
    xp = get_xp(columns)
    return xp.argmax(cell_shares(columns, num_labels, stride), axis=0).astype(xp.int32)
