"""Temporal spreading: carry the interactive session's evidence along matches between frames.

Why: with a few clicks the nearest-reference rule labels each frame on its own, and a frame
far from every click is labelled from references that may look little like it. Neighbouring
frames are nearly the same picture, so each cell's best matches in the frame before and the
frame after (within a small window, found once per video from the embeddings, which never
depend on the user's input) tell where its label should come from. A forward and a
backward pass along these matches spread each frame's evidence through the video, the way
the semi-supervised path's recent-frame references carry a mask; annotated cells hold their
own label throughout (they seed the passes, as in a random walk with fixed seeds).

    links = TemporalLinks.build(embeddings)        # (T, h, w, d) -> sparse matches, once
    shares = links.spread(evidence, alpha, seeds)  # (K, T, h*w) float32 -> (K, T, h*w)

Each pass is one sparse product per frame and label column, ``(h*w, h*w) @ (h*w,)`` with
``neighbours`` entries a row, so a pass over 100 frames of 480p costs a few milliseconds. Written once
against an array module (NumPy + SciPy, or CuPy + cupyx.scipy).
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Any

from .errors import InputError
from .knn import NEG, WindowKeys
from .upsample.grid import sparse_module
from .xp import get_xp

__all__ = ["TemporalLinks", "combine", "evidence_shares"]


@dataclass
class TemporalLinks:
    """Sparse matches of every cell to the frame before (``back[t]``) and after (``ahead[t]``).

    ``back[t]``: sparse float32 (h*w, h*w), row i holds cell i of frame t's ``neighbours``
    best matches in frame t - 1 within ``radius`` cells, weighted by a softmax of their
    similarity at ``temperature`` (rows sum to 1); ``back[0]`` is None. ``ahead[t]`` the same
    towards frame t + 1 (``ahead[T-1]`` None).
    """

    back: list[Any]
    ahead: list[Any]
    radius: int
    neighbours: int
    temperature: float

    @classmethod
    def build(cls, embeddings: Any, radius: int = 4, neighbours: int = 4, temperature: float = 0.05,
              progress: Any = None) -> TemporalLinks:
        """Match every frame of ``embeddings`` (T, h, w, d) float (NumPy or CuPy) to its neighbours.

        Each frame is cut into search windows once (``pml_rt.knn.WindowKeys``) and searched by
        the frames before and after it: two small searches a frame. ``progress``: an
        optional callable taking the number of frames done, for a progress bar.
        """
        if embeddings.ndim != 4:
            raise InputError(f"embeddings must be (T, h, w, d), got shape {tuple(embeddings.shape)}")
        if radius < 1 or neighbours < 1 or not temperature > 0:
            raise InputError(f"need radius >= 1, neighbours >= 1 and temperature > 0; got {radius}, "
                             f"{neighbours}, {temperature}")
        xp = get_xp(embeddings)
        sparse = sparse_module(xp, "the session's temporal spreading")
        t, h, w, d = embeddings.shape
        n = h * w
        ids = xp.arange(n, dtype=xp.int32).reshape(h, w)  # a key's "label" is its cell index
        indptr = xp.arange(0, n * neighbours + 1, neighbours, dtype=xp.int32)

        def matrix(cand: Any) -> Any:
            sims, cells = cand.sims, cand.labels
            ok = (cells >= 0) & (sims > NEG / 2)
            wts = xp.where(ok, xp.exp((sims - sims.max(axis=1, keepdims=True)) / temperature), 0).astype(xp.float32)
            _flush(wts)  # the best candidate has weight 1 here, so always counts
            wts /= wts.sum(axis=1, keepdims=True)
            return sparse.csr_matrix((wts.ravel(), xp.maximum(cells, 0).ravel(), indptr), shape=(n, n))

        def frame(i: int) -> Any:
            return xp.asarray(embeddings[i], dtype=xp.float32) if 0 <= i < t else None

        back: list[Any] = [None] * t
        ahead: list[Any] = [None] * t
        keys = WindowKeys((h, w), d, 1, radius, xp=xp)  # one slot, overwritten by each push
        prev, cur = None, frame(0)
        for j in range(t):  # frame j as the keys of its two neighbours: cut into windows once
            nxt = frame(j + 1)
            keys.push(cur, ids)
            if nxt is not None:
                back[j + 1] = matrix(keys.search(nxt, neighbours))
            if prev is not None:
                ahead[j - 1] = matrix(keys.search(prev, neighbours))
            prev, cur = cur, nxt
            if progress is not None:
                progress(j + 1)
        return cls(back, ahead, int(radius), int(neighbours), float(temperature))

    @property
    def num_frames(self) -> int:
        return len(self.back)

    def spread(self, evidence: Any, alpha: float, seeds: dict[int, tuple[Any, Any]] | None = None) -> Any:
        """Spread per-frame ``evidence`` float32 (K, T, n), K label columns, through the video.

        Forward: ``F[t] = (1 - alpha) E[t] + alpha * back[t] @ F[t-1]``; backward the same with
        ``ahead``; the result is ``F + B - (1 - alpha) E`` (each frame's own evidence once).
        Linear and column by column, so where shares sum to 1 over all C columns a caller may
        pass C - 1 of them and get the last as ``1 + alpha`` minus the others.
        ``seeds``: {frame: (cells int (m,), values float32 (K, m))}, cells whose shares are
        given: set in both passes, so they keep them and pass them on. Returns float32
        (K, T, n); alpha in [0, 1), 0 gives back the evidence (seeds set).
        """
        fwd, bwd = self.passes(evidence, alpha, seeds)
        return combine(fwd, bwd, evidence, alpha)

    def passes(self, evidence: Any, alpha: float, seeds: dict[int, tuple[Any, Any]] | None = None,
               start: int = 0, before: Any = None, after: Any = None, trust: Any = None) -> tuple[Any, Any]:
        """The forward and backward passes of :meth:`spread`, each float32 (K, T', n), over the
        frames ``start .. start + T' - 1`` of ``evidence`` (K, T', n) only: ``before`` (K, n) is
        the forward pass at frame ``start - 1`` and ``after`` (K, n) the backward pass at the
        frame after the last (None where the run starts or ends the video). Seeds are keyed by
        video frame. A run of frames costs its share of a whole pass. ``trust``: optional float32
        (T', n) in [0, 1], how much of its own evidence each cell keeps: cell i of frame t takes
        ``(1 - alpha) * trust`` of its evidence and the rest from its matches (None: 1 everywhere).
        """
        xp = get_xp(evidence)
        _, t, n = evidence.shape
        stop = start + t
        if start < 0 or stop > self.num_frames or t < 1:
            raise InputError(f"evidence of frames {start}..{stop - 1} does not fit the links' "
                             f"{self.num_frames} frames")
        if (before is None) != (start == 0) or (after is None) != (stop == self.num_frames):
            raise InputError("pass `before` exactly where the run starts after frame 0 and `after` exactly where "
                             "it ends before the last frame")
        if not 0 <= alpha < 1:
            raise InputError(f"alpha must be in [0, 1), got {alpha!r}")
        if trust is not None and tuple(trust.shape) != (t, n):
            raise InputError(f"trust must be ({t}, {n}), one weight per cell of the evidence's frames; "
                             f"got {tuple(trust.shape)}")
        seeds = seeds or {}
        a = xp.float32(alpha)
        keep = None if trust is None else _own_share(trust, alpha)  # (T', n)
        own = evidence * (xp.float32(1 - alpha) if keep is None else keep[None])
        carry = None if keep is None else xp.float32(1) - keep  # (T', n) share taken from the matches

        def run(col: int, forward: bool, acc: Any) -> Any:
            """One pass over column ``col`` into ``acc`` (T', n)."""
            links = self.back if forward else self.ahead
            edge = before if forward else after
            prev = None if edge is None else edge[col]
            for j in (range(t) if forward else range(t - 1, -1, -1)):
                row, i = acc[j], start + j
                if prev is None:
                    row[...] = evidence[col, j]
                else:
                    row[...] = links[i] @ prev
                    row *= a if carry is None else carry[j]
                    row += own[col, j]
                if i in seeds:
                    cells, values = seeds[i]
                    row[cells] = values[col]
                _flush(row)
                prev = row
            return acc

        fwd = xp.empty_like(evidence)
        bwd = xp.empty_like(evidence)
        # The backward pass of each column runs on a worker thread beside the forward pass
        # (SciPy's sparse product releases the GIL: about 1.5x on 2 cores); CuPy queues both.
        pool = _worker() if xp.__name__ == "numpy" and t > 1 else None
        for col in range(evidence.shape[0]):
            job = pool.submit(run, col, False, bwd[col]) if pool is not None else None
            run(col, True, fwd[col])
            if job is not None:
                job.result()
            else:
                run(col, False, bwd[col])
        return fwd, bwd


def combine(fwd: Any, bwd: Any, evidence: Any, alpha: float, trust: Any = None) -> Any:
    """``fwd + bwd - (1 - alpha) * evidence``: the spread shares (they sum to 1 + alpha where the
    evidence sums to 1 over all columns), float32, same shape. With the ``trust`` (T', n) of
    :meth:`TemporalLinks.passes` the evidence counted twice is ``(1 - alpha) * trust``, and each
    cell's shares are rescaled so that they still sum to 1 + alpha."""
    xp = get_xp(fwd)
    out = fwd + bwd
    if trust is None:
        out -= evidence * xp.float32(1 - alpha)
        return out
    keep = _own_share(trust, alpha)
    out -= evidence * keep[None]
    out *= (xp.float32(1 + alpha) / (xp.float32(2) - keep))[None]
    return out


def _own_share(trust: Any, alpha: float) -> Any:
    """float32 (T', n): each cell's share of its own evidence, ``(1 - alpha) * trust``."""
    xp = get_xp(trust)
    return xp.asarray(trust, dtype=xp.float32) * xp.float32(1 - alpha)


EXP_LIMIT = 80.0  # exp(80) = 5.5e34 and exp(-80) = 1.8e-35: normal float32 numbers
#: Shares, match weights and pass values below TINY are set to 0: a share that small decides
#: nothing, and products of such numbers fall into float32's denormal range (below 1.2e-38),
#: where x86 arithmetic is tens of times slower (a pass took 47 instead of 9 ms).
TINY = 1e-15

_POOL: Any = None
_POOL_LOCK = threading.Lock()


def _worker() -> Any:
    """One shared worker thread for the backward passes (created on first use)."""
    global _POOL
    with _POOL_LOCK:
        if _POOL is None:
            from concurrent.futures import ThreadPoolExecutor  # noqa: PLC0415

            _POOL = ThreadPoolExecutor(max_workers=1, thread_name_prefix="pml-rt-temporal")
        return _POOL


def evidence_shares(best: Any, temperature: float) -> Any:
    """float32 (C - 1, n) shares of columns 1..C-1 from each column's best similarity ``best``
    float32 (C, n): a softmax over the C columns at ``temperature`` (column 0's share is 1
    minus the others). A column without references (similarity ``NEG``) gets 0; a cell
    where no column has one gets equal shares."""
    xp = get_xp(best)
    # Exponents are kept within +-EXP_LIMIT: beyond it a share is 0 or 1 to float32 anyway, and
    # exp() there returns denormal numbers, on which x86 arithmetic is slow (one click in
    # thirty took 36 instead of 2 ms); columns without references are set to 0 exactly.
    if best.shape[0] == 2:  # one object: a logistic of the difference
        z = best[0] - best[1]
        z *= xp.float32(1 / temperature)
        xp.clip(z, -EXP_LIMIT, EXP_LIMIT, out=z)
        xp.exp(z, out=z)
        z += xp.float32(1)
        xp.reciprocal(z, out=z)
        z[(best[1] <= NEG / 2) & (best[0] > NEG / 2)] = 0
        _flush(z)
        return z[None]
    z = best * xp.float32(1 / temperature)
    z -= z.max(axis=0)
    xp.maximum(z, -EXP_LIMIT, out=z)
    xp.exp(z, out=z)
    none = best <= NEG / 2
    z[none & ~none.all(axis=0)] = 0
    total = z.sum(axis=0)
    z = z[1:]
    z /= total
    _flush(z)
    return z


def _flush(a: Any) -> None:
    """Set entries below ``TINY`` to 0 in place: products of them would be denormal numbers."""
    xp = get_xp(a)
    xp.copyto(a, xp.float32(0), where=a < TINY)
