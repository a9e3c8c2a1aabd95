"""The simplified bilateral grid of Barron and Poole (2016): splat, blur and slice.

Every pixel of the guide frame falls into one grid vertex, picked by its integer cell in
(x / s, y / s, luma / sl, u / sc, v / sc). Only vertices holding at least one pixel exist, so
the grid is stored compactly as a list of vertices; ``splat`` sums pixel values into their
vertex, ``slice`` reads each pixel's value back from its vertex, and ``blur`` adds to
``2 * dims * y`` the values of each vertex's neighbours one step away along every
dimension (the [1, 2, 1] blur of the paper, summed over dimensions as in its reference
code). Written once against an array module: NumPy with SciPy, or CuPy with cupyx.scipy.

The grid may cover a subset of the frame's pixels (the solver uses the band around label
changes). Spatial cells and colour cells present are first numbered densely, so a vertex
key ``spatial * palette_size + colour`` stays small (int32 at 854x480). Vertex ids come from
sorting the keys and a flat key -> vertex table written only where keys exist, and checked
on every other read; measured here, that beats ``unique(..., return_inverse=True)`` by four
times and an argsort with binary searches by a third.
"""

from __future__ import annotations

from dataclasses import dataclass
from types import ModuleType
from typing import Any

from .._optional import require
from ..errors import InputError
from ..xp import get_xp


def sparse_module(xp: ModuleType, purpose: str = "the bilateral solver") -> ModuleType:
    """``scipy.sparse`` for NumPy arrays, ``cupyx.scipy.sparse`` for CuPy arrays; ``purpose``
    names what needs it in the error where it is missing."""
    if xp.__name__ == "numpy":
        return require("scipy.sparse", purpose)
    return require("cupyx.scipy.sparse", f"{purpose} on the GPU")


def yuv_bins(rgb: Any, sigma_luma: float, sigma_chroma: float | None) -> list[Any]:
    """Integer luma/chroma grid coordinates (each (...,) int32) of RGB uint8 pixels (..., 3).

    BT.601 luma and chroma in 0..255 (chroma offset by 128), in fixed point to save time;
    each divided by its sigma and rounded. ``sigma_chroma=None`` gives luma alone (a 3-D grid).
    """
    xp = get_xp(rgb)
    r = rgb[..., 0].astype(xp.int32)
    g = rgb[..., 1].astype(xp.int32)
    b = rgb[..., 2].astype(xp.int32)
    # Scaled by 2**8; luma = (77 R + 150 G + 29 B) / 256.
    out = [_bin(77 * r + 150 * g + 29 * b, sigma_luma)]
    if sigma_chroma is not None:
        out.append(_bin(-43 * r - 85 * g + 128 * b + (128 << 8), sigma_chroma))
        out.append(_bin(128 * r - 107 * g - 21 * b + (128 << 8), sigma_chroma))
    return out


def _bin(fixed: Any, sigma: float) -> Any:
    # fixed is value * 256; round(value / sigma) = floor((fixed + step / 2) / step), step = 256 sigma.
    step = max(int(round(256 * sigma)), 1)
    return (fixed + step // 2) // step


def _dense_ids(xp: ModuleType, keys: Any, size: int) -> tuple[Any, Any]:
    """Number the distinct values of ``keys`` (ints in [0, size)) in increasing order.

    Returns (values present (K,) int32, map (size,) int32 with -1 where absent).
    """
    present = xp.flatnonzero(xp.bincount(keys, minlength=size)).astype(xp.int32)
    lookup = xp.full(size, -1, dtype=xp.int32)
    lookup[present] = xp.arange(present.shape[0], dtype=xp.int32)
    return present, lookup


@dataclass
class BilateralGrid:
    """A bilateral grid built from a frame's pixels; reusable for any number of channels.

    V vertices, N pixels (those the grid was built from, in the order given).
    """

    xp: ModuleType
    idx: Any  # int32 (N,): the vertex of each pixel, for splat and slice
    nvertices: int
    dims: int  # grid dimensions (5 with chroma, 3 without); the blur's centre weight is 2 * dims
    counts: Any  # float32 (V,): pixels per vertex, the splat of ones (the m of the paper)
    vertex_yx: tuple[Any, Any]  # int32 (V,) each: spatial cell (y // s, x // s) of each vertex
    nbr_rows: Any  # int32 (E,): vertex pairs one step apart along one dimension, both ways,
    nbr_cols: Any  # int32 (E,): sorted by row (the CSR layout of the adjacency)
    nbr_indptr: Any  # int32 (V + 1,): CSR row pointers into nbr_rows / nbr_cols

    def weighted_neighbours(self, data: Any) -> Any:
        """The adjacency's sparse (V, V) CSR matrix with ``data`` (E,) as its entries."""
        sp = sparse_module(self.xp)
        return sp.csr_matrix((data, self.nbr_cols, self.nbr_indptr), shape=(self.nvertices, self.nvertices))

    @property
    def neighbours(self) -> Any:
        """Sparse float32 (V, V) 0/1 adjacency (built on each access; cache it if reused)."""
        return self.weighted_neighbours(self.xp.ones(self.nbr_rows.shape[0], dtype=self.xp.float32))

    def splat(self, values: Any) -> Any:
        """Sum pixel values into vertices: (N,) -> (V,) float32."""
        xp = self.xp
        return xp.bincount(self.idx, weights=values, minlength=self.nvertices).astype(xp.float32)

    def slice(self, y: Any) -> Any:
        """Read each pixel's vertex value: (..., V) -> (..., N)."""
        return y[..., self.idx]

    def blur(self, y: Any, neighbours: Any = None) -> Any:
        """[1, 2, 1] blur along every grid dimension, summed: (V,) -> (V,).

        ``neighbours``: the 0/1 adjacency if already built (see :attr:`neighbours`).
        """
        adj = self.neighbours if neighbours is None else neighbours
        return (2 * self.dims) * y + adj @ y


def build_grid(rgb: Any, ys: Any, xs: Any, sigma_spatial: int = 8, sigma_luma: float = 8.0,
               sigma_chroma: float | None = 8.0) -> BilateralGrid:
    """Build the bilateral grid of N pixels: colours ``rgb`` uint8 (N, 3) at rows ``ys``, columns ``xs``.

    Spatial cells are the blocks [s*gy, s*gy + s) x [s*gx, s*gx + s) with s = ``sigma_spatial``
    pixels, so with s = 8 a vertex's block is exactly one stride-8 score cell.
    """
    xp = get_xp(rgb)
    s = int(sigma_spatial)
    if s != sigma_spatial or s < 1:
        raise InputError(f"sigma_spatial must be a positive whole number of pixels, got {sigma_spatial}")
    if sigma_luma <= 0 or (sigma_chroma is not None and sigma_chroma <= 0):
        raise InputError(f"sigma_luma and sigma_chroma must be > 0, got {sigma_luma}, {sigma_chroma}")
    if rgb.shape[0] == 0:
        raise InputError("cannot build a bilateral grid from no pixels")

    # Spatial cells present, numbered densely; a spare row and column keep +-1 steps in range.
    gy = (ys // s).astype(xp.int32)
    gx = (xs // s).astype(xp.int32)
    ny, nx = int(gy.max()) + 2, int(gx.max()) + 2
    cells, cell_map = _dense_ids(xp, gy * nx + gx, ny * nx)
    ncell = int(cells.shape[0])

    # Colour cells present (the palette), numbered densely the same way.
    cbins = yuv_bins(rgb, sigma_luma, sigma_chroma)
    extents = [int(cb.max()) + 2 for cb in cbins]
    ckey = cbins[0]
    for cb, ext in zip(cbins[1:], extents[1:]):
        ckey = ckey * ext + cb
    ncolour = 1
    for ext in extents:
        ncolour *= ext
    palette, pal_map = _dense_ids(xp, ckey, ncolour)
    npal = int(palette.shape[0])

    nkeys = ncell * npal
    kdt = xp.int32 if nkeys < 2**31 - 1 else xp.int64
    key = cell_map[gy * nx + gx].astype(kdt) * npal + pal_map[ckey].astype(kdt)
    skey = xp.sort(key)
    first = xp.ones(skey.shape[0], dtype=bool)
    first[1:] = skey[1:] != skey[:-1]
    uniq = skey[first]
    nv = int(uniq.shape[0])
    # key -> vertex: a flat table written only at the keys present (so only their pages are
    # touched); every read of another key is checked against ``uniq``.
    vmap = xp.empty(nkeys, dtype=xp.int32)
    vmap[uniq] = xp.arange(nv, dtype=xp.int32)
    idx = vmap[key]
    counts = xp.bincount(idx, minlength=nv).astype(xp.float32)

    # Neighbours: one step along y and x (spatial cells), and along each colour axis (palette).
    # Only +1 steps are looked up; the -1 links are their transposes.
    vcell = (uniq // npal).astype(xp.int32)
    vpal = (uniq % npal).astype(xp.int32)
    vyx = cells[vcell]
    vy, vx = vyx // nx, vyx % nx
    rows, cols = [], []

    def link(nkey: Any) -> None:  # nkey < 0: no such neighbour
        ok = nkey >= 0
        j = xp.clip(vmap[xp.where(ok, nkey, 0)], 0, nv - 1)
        ok &= uniq[j] == nkey
        rows.append(xp.flatnonzero(ok).astype(xp.int32))
        cols.append(j[ok])

    for dy, dx in ((1, 0), (0, 1)):
        ncell_id = cell_map[(vy + dy) * nx + vx + dx]  # in range: the spare row and column
        link(xp.where(ncell_id >= 0, ncell_id.astype(kdt) * npal + vpal, -1))
    dense = palette[vpal]
    stride = 1
    for ext in reversed(extents):  # v, u, luma: dense colour key = (l * next + u) * next + v
        # The spare top value per axis keeps dense + stride inside the colour table.
        npal_id = pal_map[dense + stride]
        link(xp.where(npal_id >= 0, vcell.astype(kdt) * npal + npal_id, -1))
        stride *= ext
    # COO -> CSR (a counting sort inside SciPy / cuSPARSE), then back to COO for the row of
    # every stored entry, in CSR order, so the solver can reweight the same structure.
    r = xp.concatenate(rows + cols)
    c = xp.concatenate(cols + rows)
    sp = sparse_module(xp)
    adj = sp.coo_matrix((xp.ones(r.shape[0], dtype=xp.float32), (r, c)), shape=(nv, nv)).tocsr()
    coo = adj.tocoo()
    return BilateralGrid(xp=xp, idx=idx, nvertices=nv, dims=2 + len(cbins), counts=counts,
                         vertex_yx=(vy.astype(xp.int32), vx.astype(xp.int32)),
                         nbr_rows=coo.row.astype(xp.int32), nbr_cols=adj.indices, nbr_indptr=adj.indptr)


def bistochastize(grid: BilateralGrid, iterations: int = 10) -> tuple[Any, Any]:
    """Vertex scalings (n, m) with n * blur(n) = m ~ counts, as Barron and Poole (section 4).

    Makes the normalised blur ``diag(n) B diag(n)`` have the vertex masses as row sums, so the
    smoothness term neither favours nor shrinks any vertex. Returns float32 (V,) each.
    """
    xp = grid.xp
    adj = grid.neighbours
    m = grid.counts
    n = xp.ones_like(m)
    for _ in range(iterations):
        n = xp.sqrt(n * m / grid.blur(n, adj))
    return n, n * grid.blur(n, adj)
