"""Exact k-nearest-neighbour labelling by matrix multiplication, written once for NumPy and CuPy.

Embeddings are unit vectors, so the nearest reference is the one with the largest dot
product. Queries are processed in chunks so the (queries x references) similarity matrix
never exceeds ``chunk_bytes``. Candidates from several sources (the global reference pool,
the local window of recent frames) are merged with :func:`merge_topk` before the vote.
"""

from __future__ import annotations

import os
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Iterator

import numpy as np

from .xp import get_xp

NEG = -1e9  # similarity given to invalid candidates; below any real dot product of unit vectors

# How NumPy arrays are searched: "onnxruntime" runs the product and the top-k selection as
# fused ONNX Runtime kernels (pml_rt.knn_ort, several times faster here); "numpy" runs the
# array-module code below, the same code CuPy arrays always run. Both are exact.
CPU_KERNELS = ("onnxruntime", "numpy")
_cpu_kernel = os.environ.get("PML_RT_KNN_KERNEL", "onnxruntime")


def set_cpu_kernel(name: str) -> str:
    """Choose how NumPy arrays are searched (one of :data:`CPU_KERNELS`); return the previous
    choice. Process-wide: meant for benchmarks and tests, not for switching between threads."""
    global _cpu_kernel
    if name not in CPU_KERNELS:
        raise ValueError(f"kNN CPU kernel must be one of {CPU_KERNELS}, got {name!r}")
    old, _cpu_kernel = _cpu_kernel, name
    return old


@contextmanager
def cpu_kernel(name: str) -> Iterator[None]:
    """``with cpu_kernel("numpy"): ...`` runs the block with that kernel, then restores."""
    old = set_cpu_kernel(name)
    try:
        yield
    finally:
        set_cpu_kernel(old)


def _ort(xp: Any) -> bool:
    """True where NumPy arrays go to the ONNX Runtime kernels."""
    if xp is not np:
        return False
    if _cpu_kernel not in CPU_KERNELS:
        raise ValueError(f"PML_RT_KNN_KERNEL must be one of {CPU_KERNELS}, got {_cpu_kernel!r}")
    return _cpu_kernel == "onnxruntime"


@dataclass
class Candidates:
    """The k best references of each query: ``sims`` float32 (N, k), ``labels`` int32 (N, k).

    Invalid candidates (fewer than k references) have similarity ``NEG`` and label -1.
    """

    sims: Any
    labels: Any


def topk(sims: Any, k: int, block: int = 64) -> Any:
    """Indices (N, k) of the k largest entries of each row of ``sims`` (N, M), unordered.

    For long rows a two-stage search is exact and faster than a full partition: the k
    largest entries lie in the k blocks (of ``block`` columns) with the largest maxima, so
    partition the block maxima first, then only those k * block candidates.
    """
    xp = get_xp(sims)
    n, m = sims.shape
    if k >= m:
        return xp.broadcast_to(xp.arange(m), (n, m))
    if _ort(xp):
        from . import knn_ort  # noqa: PLC0415

        return knn_ort.topk(sims, k)[1]
    if m < 8 * k * block:
        return xp.argpartition(-sims, k - 1, axis=1)[:, :k]
    nb = -(-m // block)
    if nb * block != m:
        sims = xp.concatenate([sims, xp.full((n, nb * block - m), NEG, dtype=sims.dtype)], axis=1)
    best_blocks = xp.argpartition(-sims.reshape(n, nb, block).max(axis=2), k - 1, axis=1)[:, :k]
    cols = (best_blocks[:, :, None] * block + xp.arange(block)).reshape(n, k * block)
    inner = xp.argpartition(-xp.take_along_axis(sims, cols, axis=1), k - 1, axis=1)[:, :k]
    return xp.take_along_axis(cols, inner, axis=1)


def global_topk(queries: Any, refs: Any, ref_labels: Any, k: int, chunk_bytes: int = 8 << 20) -> Candidates:
    """k nearest references of each query among all of ``refs``.

    queries: float32 (N, d); refs: float32 (M, d); ref_labels: int (M,).
    Returns :class:`Candidates` of shape (N, k) (padded with invalid ones where M < k).
    """
    xp = get_xp(queries, refs)
    n, m = queries.shape[0], refs.shape[0]
    sims_out = xp.full((n, k), NEG, dtype=xp.float32)
    labels_out = xp.full((n, k), -1, dtype=xp.int32)
    if m == 0 or n == 0:
        return Candidates(sims_out, labels_out)
    kk = min(k, m)
    step = max(1, int(chunk_bytes // (4 * m)))
    ref_t = xp.ascontiguousarray(refs.T, dtype=xp.float32)
    fused = _ort(xp)
    if fused:
        from . import knn_ort  # noqa: PLC0415
    for s in range(0, n, step):
        if fused:
            top_s, idx = knn_ort.matmul_topk(queries[s : s + step], ref_t, kk)
        else:
            sims = queries[s : s + step] @ ref_t
            idx = topk(sims, kk)
            top_s = xp.take_along_axis(sims, idx, axis=1)
        sims_out[s : s + step, :kk] = top_s
        labels_out[s : s + step, :kk] = ref_labels[idx]
    return Candidates(sims_out, labels_out)


def merge_topk(parts: list[Candidates], k: int) -> Candidates:
    """The k best candidates among several candidate sets of the same queries."""
    if len(parts) == 1 and parts[0].sims.shape[1] == k:
        return parts[0]
    xp = get_xp(parts[0].sims)
    sims = xp.concatenate([p.sims for p in parts], axis=1)
    labels = xp.concatenate([p.labels for p in parts], axis=1)
    idx = topk(sims, k)
    return Candidates(xp.take_along_axis(sims, idx, axis=1), xp.take_along_axis(labels, idx, axis=1))


def vote(c: Candidates, num_labels: int, weighting: str = "majority", temperature: float = 0.1) -> tuple[Any, Any]:
    """Label shares per query from its candidates.

    weighting: ``"majority"`` (each of the k counts 1, the paper's vote) or ``"softmax"``
    (weights softmax(sim / temperature), as self-supervised label propagation does).
    Returns ``scores`` float32 (N, num_labels) summing to 1 per row (0 where no valid
    candidate) and ``unanimous`` bool (N,): all k candidates valid and of one label (the
    online-adaptation criterion).
    """
    xp = get_xp(c.sims)
    valid = c.labels >= 0
    if weighting == "majority":
        w = valid.astype(xp.float32)
    elif weighting == "softmax":
        z = xp.where(valid, c.sims / temperature, -xp.inf)
        z = z - z.max(axis=1, keepdims=True)
        w = xp.where(valid, xp.exp(z), 0).astype(xp.float32)
    else:
        raise ValueError(f"weighting must be 'majority' or 'softmax', got {weighting!r}")
    total = w.sum(axis=1, keepdims=True)
    w = w / xp.maximum(total, 1e-12)
    scores = xp.stack([(w * (c.labels == j)).sum(axis=1) for j in range(num_labels)], axis=1).astype(xp.float32)
    unanimous = valid.all(axis=1) & (c.labels == c.labels[:, :1]).all(axis=1)
    return scores, unanimous


def _runs(on: Any, longest: int) -> list[tuple[int, int]]:
    """[start, stop) runs of consecutive True entries of the 1-D bool array ``on``, each cut
    to at most ``longest`` entries."""
    flags = [bool(v) for v in on.tolist()]
    out, start = [], None
    for i, f in enumerate(flags + [False]):
        if f and start is None:
            start = i
        elif not f and start is not None:
            out += [(a, min(a + longest, i)) for a in range(start, i, longest)]
            start = None
    return out


def _window_bias(xp: Any, tile: int, radius: int) -> Any:
    """float32 (tile*tile, L*L), L = tile + 2*radius: 0 where key (ky, kx) of a tile's window
    lies within ``radius`` cells (Chebyshev) of query (qy, qx) of the tile, else ``NEG``."""
    q = xp.arange(tile)
    kk = xp.arange(tile + 2 * radius)
    near = xp.abs(kk[None, :] - radius - q[:, None]) <= radius  # (tile, L)
    inside = (near[:, None, :, None] & near[None, :, None, :]).reshape(tile * tile, -1)
    return xp.where(inside, 0.0, NEG).astype(xp.float32)


class WindowKeys:
    """The last ``frames`` key frames, each cut once into the windows :func:`local_topk` searches.

    Why: a frame stays a key for ``frames`` steps; cutting its (tile + 2*radius)^2 windows
    once when it arrives, into a ring buffer laid out tile by tile, lets every later search
    hand a run of tiles to the kernel as one contiguous view instead of gathering the
    windows of every key frame again at every step.

    ``ring`` float32 (nty, ntx, frames, L, L, d+1), L = tile + 2*radius: key (slot, ky, kx)
    of tile (ty, tx); its last column is 0 for a real cell and ``NEG`` for padding and
    ignored cells (label -1), so the product itself rules them out (queries carry a 1
    there). ``ring_labels`` int32 (nty, ntx, frames, L, L). Slots are reused oldest first;
    the order of keys does not matter to a top-k search. Slots not yet filled stay zero and
    are ruled out by :attr:`bias` (so a new ring costs no pass over its memory). Memory:
    about (L / tile)^2 * frames times one frame's float32 embeddings (6.25 x 7 at radius 6,
    tile 8).
    """

    def __init__(self, hw: tuple[int, int], d: int, frames: int, radius: int, tile: int = 8, xp: Any = np):
        if frames < 1 or radius < 0 or tile < 1:
            raise ValueError(f"need frames >= 1, radius >= 0 and tile >= 1; got {frames}, {radius}, {tile}")
        self.xp, self.hw, self.d, self.frames, self.radius, self.tile = xp, tuple(hw), int(d), frames, radius, tile
        h, w = self.hw
        self.nty, self.ntx = -(-h // tile), -(-w // tile)
        self.side = L = tile + 2 * radius  # cells per side of a tile's window
        self.ring = xp.zeros((self.nty, self.ntx, frames, L, L, d + 1), dtype=xp.float32)
        self.ring_labels = xp.full((self.nty, self.ntx, frames, L, L), -1, dtype=xp.int32)
        self.count = 0  # frames pushed so far
        self.latest_labels: Any = None  # int (h, w) labels of the newest key frame
        # (tile^2, frames*L^2): 0 where key (slot, ky, kx) lies within radius of query (qy, qx)
        self._window_bias = xp.tile(_window_bias(xp, tile, radius), (1, frames))

    @property
    def bias(self) -> Any:
        """float32 (tile^2, frames*L^2) added to the products: ``NEG`` outside each query's
        window and in slots not yet filled, else 0."""
        filled = min(self.count, self.frames)
        if filled == self.frames:
            return self._window_bias
        bias = self._window_bias.copy()
        bias[:, filled * self.side**2 :] = NEG
        return bias

    def push(self, emb: Any, labels: Any) -> None:
        """Add one key frame: ``emb`` (h, w, d) and its ``labels`` int (h, w) (-1 = ignore),
        replacing the oldest once ``frames`` are held."""
        xp, d, r, tile, L = self.xp, self.d, self.radius, self.tile, self.side
        h, w = self.hw
        if tuple(emb.shape) != (h, w, d) or tuple(labels.shape) != (h, w):
            raise ValueError(f"key frame must be ({h}, {w}, {d}) with ({h}, {w}) labels; got "
                             f"{tuple(emb.shape)} and {tuple(labels.shape)}")
        kpad = xp.zeros((self.nty * tile + 2 * r, self.ntx * tile + 2 * r, d + 1), dtype=xp.float32)
        kpad[r : r + h, r : r + w, :d] = emb
        lpad = xp.full(kpad.shape[:2], -1, dtype=xp.int32)
        lpad[r : r + h, r : r + w] = labels
        kpad[..., d] = xp.where(lpad >= 0, 0.0, NEG)
        windows = xp.lib.stride_tricks.sliding_window_view
        slot = self.count % self.frames
        # (nty, ntx, d+1, L, L) views of every tile's window, copied once into the slot
        kw = windows(kpad, (L, L), axis=(0, 1))[::tile, ::tile]
        self.ring[:, :, slot] = kw.transpose(0, 1, 3, 4, 2)
        self.ring_labels[:, :, slot] = windows(lpad, (L, L), axis=(0, 1))[::tile, ::tile]
        self.latest_labels = labels
        self.count += 1

    def search(self, query: Any, k: int, chunk_bytes: int = 16 << 20, active: Any = None) -> Candidates:
        """k nearest keys of each cell of ``query`` float32 (h, w, d) among the key cells within
        ``radius`` of it; ``active``: optional bool (h, w), tiles without an active cell are
        skipped and get no candidates. Returns :class:`Candidates` (h*w, k), row-major cells."""
        xp, d, tile = self.xp, self.d, self.tile
        h, w = self.hw
        nty, ntx = self.nty, self.ntx
        out_s = xp.full((nty, tile, ntx, tile, k), NEG, dtype=xp.float32)
        out_l = xp.full((nty, tile, ntx, tile, k), -1, dtype=xp.int32)

        def result() -> Candidates:
            s_ = out_s.reshape(nty * tile, ntx * tile, k)[:h, :w].reshape(h * w, k)
            l_ = out_l.reshape(nty * tile, ntx * tile, k)[:h, :w].reshape(h * w, k)
            return Candidates(s_, l_)

        if self.count == 0:
            return result()
        if active is None:
            tile_on = xp.ones((nty, ntx), dtype=bool)
        else:
            pad_a = xp.zeros((nty * tile, ntx * tile), dtype=bool)
            pad_a[:h, :w] = active
            tile_on = pad_a.reshape(nty, tile, ntx, tile).any(axis=(1, 3))
        qpad = xp.zeros((nty * tile, ntx * tile, d + 1), dtype=xp.float32)
        qpad[:h, :w, :d] = query
        qpad[..., d] = 1.0
        m = self.frames * self.side**2
        bias = self.bias
        kk = min(k, m)
        group = max(1, int(chunk_bytes // (4 * 3 * tile * tile * m)))  # the kernel's similarity blocks
        fused = _ort(xp)
        if fused:
            from . import knn_ort  # noqa: PLC0415
        on_rows = [int(i) for i in xp.nonzero(tile_on.any(axis=1))[0].tolist()]
        for ty in on_rows:
            band_q = qpad[ty * tile : (ty + 1) * tile].reshape(tile, ntx, tile, d + 1)
            for a, b in _runs(tile_on[ty], group):
                g = b - a
                kw = self.ring[ty, a:b].reshape(g, m, d + 1)  # contiguous: no copy
                lw = self.ring_labels[ty, a:b].reshape(g, 1, m)
                q = xp.ascontiguousarray(band_q[:, a:b].transpose(1, 0, 2, 3)).reshape(g, tile * tile, d + 1)
                if fused:
                    top_s, idx = knn_ort.window_topk(q, kw, bias, kk)  # (g, tile^2, kk)
                else:
                    sims = q @ kw.transpose(0, 2, 1)  # (g, tile^2, frames*L^2)
                    sims += bias
                    idx = topk(sims.reshape(g * tile * tile, -1), kk).reshape(g, tile * tile, kk)
                    top_s = xp.take_along_axis(sims, idx, axis=2)
                top_l = xp.where(top_s > NEG / 2, xp.take_along_axis(lw, idx, axis=2), -1)
                row_s, row_l = out_s[ty], out_l[ty]  # views (tile, ntx, tile, k)
                row_s[:, a:b, :, :kk] = top_s.reshape(g, tile, tile, kk).transpose(1, 0, 2, 3)
                row_l[:, a:b, :, :kk] = top_l.reshape(g, tile, tile, kk).transpose(1, 0, 2, 3)
        return result()


def local_topk(query: Any, keys: Any, key_labels: Any, radius: int, k: int, tile: int = 8,
               chunk_bytes: int = 16 << 20, active: Any = None) -> Candidates:
    """k nearest keys of each query cell among the cells within ``radius`` of it in ``keys``.

    query: float32 (h, w, d), one frame; keys: (P, h, w, d), P earlier frames; key_labels:
    int (P, h, w), their predicted labels (-1 = ignore); active: optional bool (h, w), the
    cells that need a search (tiles without an active cell are skipped and get no
    candidates). The frame is cut into tiles of ``tile`` x ``tile`` cells; tiles of one row
    are matched against the (tile + 2*radius)^2 window of every key frame with one batched
    matrix product, and candidates outside a query's own window get similarity ``NEG``.
    One-off form of :class:`WindowKeys`, which propagation keeps from frame to frame.
    Returns :class:`Candidates` (h*w, k) in row-major cell order.
    """
    xp = get_xp(query, keys)
    h, w, d = query.shape
    p = keys.shape[0]
    store = WindowKeys((h, w), d, max(p, 1), radius, tile, xp)  # no keys: nothing pushed, no candidates
    for j in range(p):
        store.push(keys[j], key_labels[j])
    return store.search(query, k, chunk_bytes, active)
