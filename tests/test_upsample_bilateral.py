"""Edge-aware upsamplers (bilateral solver, joint bilateral) on tiny generated frames.

Fixture: a 64x48 frame (two flat colours, a sharp-edged disc whose edge does not fall on
the 8-pixel cell grid), stride-8 scores from the true mask by area averaging. Every test runs
once per array module; CuPy skips visibly where it is absent.
"""

from __future__ import annotations

import numpy as np
import pytest

from pml_rt.errors import InputError
from pml_rt.upsample.bilateral_solver import band_cells, bilateral_solver_upsample
from pml_rt.upsample.bilinear import bilinear_upsample
from pml_rt.upsample.grid import bistochastize, build_grid
from pml_rt.upsample.joint_bilateral import joint_bilateral_upsample
from pml_rt.xp import array_modules, to_host

H, W = 48, 64
BG, FG, FG2 = (40, 90, 160), (200, 60, 50), (90, 200, 80)

MODULES = [pytest.param(name, xp, reason, id=name, marks=[pytest.mark.gpu] if name == "cupy" else [])
           for name, xp, reason in array_modules()]
UPSAMPLERS = {
    "bilateral-solver": bilateral_solver_upsample,
    "joint-bilateral": joint_bilateral_upsample,
}


def _need(name: str, xp, reason: str):
    if xp is None:
        pytest.skip(f"{name} unavailable: {reason}")
    return xp


def disc(h: int, w: int, cy: float, cx: float, r: float) -> np.ndarray:
    yy, xx = np.mgrid[0:h, 0:w]
    return (yy + 0.5 - cy) ** 2 + (xx + 0.5 - cx) ** 2 <= r * r


def area_scores(labels: np.ndarray, num: int) -> np.ndarray:
    """Share of each label in each 8x8 cell (partial cells count their pixels): (num, h, w)."""
    hh, ww = labels.shape
    h, w = -(-hh // 8), -(-ww // 8)
    pad = np.full((h * 8, w * 8), -1)
    pad[:hh, :ww] = labels
    counts = np.stack([(pad == c).reshape(h, 8, w, 8).sum((1, 3)) for c in range(num)]).astype(np.float32)
    return counts / counts.sum(0, keepdims=True)


def frame(labels: np.ndarray, colours: list[tuple[int, int, int]], seed: int = 0) -> np.ndarray:
    """RGB uint8 frame painting label c with colours[c], plus a little deterministic noise."""
    rgb = np.asarray(colours, np.int32)[labels]
    rgb += np.random.default_rng(seed).integers(-6, 7, rgb.shape)
    return np.clip(rgb, 0, 255).astype(np.uint8)


@pytest.fixture(scope="module")
def one_disc() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(guide uint8 (48, 64, 3), scores float32 (2, 6, 8), true labels (48, 64))."""
    labels = disc(H, W, 21.0, 29.0, 13.0).astype(np.int64)
    return frame(labels, [BG, FG]), area_scores(labels, 2), labels


def edge_band(labels: np.ndarray, width: int = 4) -> np.ndarray:
    """Pixels within ``width`` pixels of a label change."""
    from scipy import ndimage

    change = np.zeros(labels.shape, bool)
    change[:, 1:] |= labels[:, 1:] != labels[:, :-1]
    change[1:, :] |= labels[1:, :] != labels[:-1, :]
    return ndimage.binary_dilation(change, iterations=width)


def band_scores(pred: np.ndarray, truth: np.ndarray, band: np.ndarray) -> tuple[float, float]:
    """(object IoU, pixel accuracy) of the predicted labels restricted to the edge band."""
    p, t = pred[band] > 0, truth[band] > 0
    return float((p & t).sum() / (p | t).sum()), float((pred[band] == truth[band]).mean())


@pytest.mark.parametrize("method", list(UPSAMPLERS))
@pytest.mark.parametrize("name,xp,reason", MODULES)
def test_sharper_than_bilinear_at_the_edge(one_disc, method, name, xp, reason) -> None:
    xp = _need(name, xp, reason)
    guide, scores, truth = one_disc
    band = edge_band(truth)
    bil = to_host(bilinear_upsample(xp.asarray(scores), (H, W))).argmax(0)
    out = to_host(UPSAMPLERS[method](xp.asarray(scores), xp.asarray(guide))).argmax(0)
    iou_b, acc_b = band_scores(bil, truth, band)
    iou, acc = band_scores(out, truth, band)
    assert iou > iou_b + 0.02 and acc > acc_b + 0.02, (method, iou, iou_b, acc, acc_b)
    assert acc > 0.97  # the disc's edge is a clean colour edge: nearly every pixel right


@pytest.mark.parametrize("method", list(UPSAMPLERS))
@pytest.mark.parametrize("name,xp,reason", MODULES)
def test_shape_dtype_device_and_rows(one_disc, method, name, xp, reason) -> None:
    xp = _need(name, xp, reason)
    guide, scores, _ = one_disc
    out = UPSAMPLERS[method](xp.asarray(scores), xp.asarray(guide))
    assert isinstance(out, xp.ndarray)
    assert out.shape == (2, H, W) and out.dtype == xp.float32
    host = to_host(out)
    assert host.min() > -1e-3 and host.max() < 1 + 1e-3
    np.testing.assert_allclose(host.sum(0), 1.0, atol=1e-3)


@pytest.mark.parametrize("method", list(UPSAMPLERS))
@pytest.mark.parametrize("name,xp,reason", MODULES)
def test_constant_scores_stay_constant(one_disc, method, name, xp, reason) -> None:
    xp = _need(name, xp, reason)
    guide = one_disc[0]
    scores = np.empty((3, 6, 8), np.float32)
    scores[:] = np.array([0.2, 0.5, 0.3], np.float32)[:, None, None]
    out = to_host(UPSAMPLERS[method](xp.asarray(scores), xp.asarray(guide)))
    np.testing.assert_allclose(out, np.broadcast_to(scores[:, :1, :1], out.shape), atol=1e-4)
    # The same holds where the solve covers the whole frame (no band shortcut).
    if method == "bilateral-solver":
        out = to_host(bilateral_solver_upsample(xp.asarray(scores), xp.asarray(guide), band=None))
        np.testing.assert_allclose(out, np.broadcast_to(scores[:, :1, :1], out.shape), atol=1e-4)


@pytest.mark.parametrize("method", list(UPSAMPLERS))
@pytest.mark.parametrize("name,xp,reason", MODULES)
def test_several_objects_at_once(method, name, xp, reason) -> None:
    # Two objects and background (C = 3) on a frame whose size is not a multiple of 8.
    xp = _need(name, xp, reason)
    hh, ww = 45, 61
    labels = np.zeros((hh, ww), np.int64)
    labels[disc(hh, ww, 15.0, 17.0, 10.5)] = 1
    labels[disc(hh, ww, 27.0, 44.0, 11.5)] = 2
    guide, scores = frame(labels, [BG, FG, FG2], seed=1), area_scores(labels, 3)
    out = to_host(UPSAMPLERS[method](xp.asarray(scores), xp.asarray(guide)))
    assert out.shape == (3, hh, ww) and out.dtype == np.float32
    assert out.min() > -1e-3
    np.testing.assert_allclose(out.sum(0), 1.0, atol=1e-3)
    bil = to_host(bilinear_upsample(xp.asarray(scores), (hh, ww))).argmax(0)
    pred = out.argmax(0)
    band = edge_band(labels)
    for obj in (1, 2):
        iou = ((pred == obj) & (labels == obj)).sum() / ((pred == obj) | (labels == obj)).sum()
        iou_b = ((bil == obj) & (labels == obj)).sum() / ((bil == obj) | (labels == obj)).sum()
        assert iou > iou_b, (obj, iou, iou_b)
    assert (pred[band] == labels[band]).mean() > (bil[band] == labels[band]).mean()


@pytest.mark.parametrize("name,xp,reason", MODULES)
def test_solver_band_matches_whole_frame(one_disc, name, xp, reason) -> None:
    # Solving only near label changes must not change any label.
    xp = _need(name, xp, reason)
    guide, scores, _ = one_disc
    banded = to_host(bilateral_solver_upsample(xp.asarray(scores), xp.asarray(guide)))
    whole = to_host(bilateral_solver_upsample(xp.asarray(scores), xp.asarray(guide), band=None))
    assert (banded.argmax(0) != whole.argmax(0)).sum() <= 2


@pytest.mark.parametrize("name,xp,reason", MODULES)
def test_solver_pixel_groups(one_disc, monkeypatch, name, xp, reason) -> None:
    # 2x2 groups (picked automatically when the band is large) snap to the edge to within the
    # group: every wrong pixel shares a group with the true edge. The frame is cropped to
    # 45x61 so the groups past its edge are clamped.
    xp = _need(name, xp, reason)
    from pml_rt.upsample import bilateral_solver as bsm

    guide, scores, truth = one_disc
    guide, truth = guide[:45, :61], truth[:45, :61]
    g2 = to_host(bilateral_solver_upsample(xp.asarray(scores), xp.asarray(guide), group=2))
    assert g2.shape == (2, 45, 61)
    np.testing.assert_allclose(g2.sum(0), 1.0, atol=1e-3)
    wrong = g2.argmax(0) != truth
    assert wrong.any() and not (wrong & ~edge_band(truth, 2)).any()
    monkeypatch.setattr(bsm, "POINT_BUDGET", len(band_cells(scores, bsm.DEFAULT_BAND)) * 64 // 2)  # auto: 2x2
    auto = to_host(bilateral_solver_upsample(xp.asarray(scores), xp.asarray(guide)))
    np.testing.assert_allclose(auto, g2, atol=1e-5)
    with pytest.raises(InputError, match="group"):
        bilateral_solver_upsample(xp.asarray(scores), xp.asarray(guide), group=3)


@pytest.mark.parametrize("name,xp,reason", MODULES)
def test_confidence_is_used(one_disc, name, xp, reason) -> None:
    # With no confidence in the cells cut by the edge, the edge comes from the frame alone.
    xp = _need(name, xp, reason)
    guide, scores, truth = one_disc
    conf = scores.max(0).copy()
    conf[(scores > 0.02).all(0)] = 0.0
    out = to_host(bilateral_solver_upsample(xp.asarray(scores), xp.asarray(guide), xp.asarray(conf))).argmax(0)
    assert (out == truth).mean() > 0.98


@pytest.mark.parametrize("name,xp,reason", MODULES)
def test_grid_neighbours_splat_and_bistochastic(name, xp, reason) -> None:
    xp = _need(name, xp, reason)
    rng = np.random.default_rng(3)
    hh, ww = 12, 10
    rgb = rng.integers(0, 256, (hh * ww, 3)).astype(np.uint8)
    rgb[::2] = rgb[1::2]  # pairs of equal colours, so vertices hold several pixels
    ys, xs = np.divmod(np.arange(hh * ww), ww)
    grid = build_grid(xp.asarray(rgb), xp.asarray(ys), xp.asarray(xs), 4, 32.0, 32.0)
    idx = to_host(grid.idx)
    # Brute force: vertex coordinates from any of their pixels, neighbours one step apart.
    from pml_rt.upsample.grid import yuv_bins

    coords = np.stack([ys // 4, xs // 4] + [to_host(b) for b in yuv_bins(xp.asarray(rgb), 32.0, 32.0)], 1)
    vcoord = np.zeros((grid.nvertices, 5), np.int64)
    vcoord[idx] = coords
    assert len({tuple(c) for c in vcoord}) == grid.nvertices  # one vertex per distinct cell
    assert all((coords[idx == v] == vcoord[v]).all() for v in range(grid.nvertices))
    dist = np.abs(vcoord[:, None, :] - vcoord[None, :, :]).sum(-1)
    adj = to_host(grid.neighbours.toarray())
    np.testing.assert_array_equal(adj, (dist == 1).astype(np.float32))
    # Splat and slice are adjoint: <S x, y> == <x, S^T y>.
    x = rng.random(hh * ww).astype(np.float32)
    y = rng.random(grid.nvertices).astype(np.float32)
    lhs = float(to_host(grid.splat(xp.asarray(x))) @ y)
    rhs = float(x @ to_host(grid.slice(xp.asarray(y))))
    assert abs(lhs - rhs) < 1e-3 * abs(lhs)
    np.testing.assert_array_equal(to_host(grid.counts), np.bincount(idx, minlength=grid.nvertices))
    n, m = bistochastize(grid, iterations=50)
    np.testing.assert_allclose(to_host(m), to_host(grid.counts), rtol=1e-3)


def test_no_label_change_keeps_the_cells() -> None:
    guide = frame(np.zeros((H, W), np.int64), [BG])
    scores = np.zeros((2, 6, 8), np.float32)
    scores[0] = 0.8
    scores[1] = 0.2
    scores[0, 2, 3], scores[1, 2, 3] = 0.6, 0.4
    for fn in UPSAMPLERS.values():
        out = fn(scores, guide)
        assert (out.argmax(0) == 0).all()
        assert len(band_cells(scores, 2)) == 0


@pytest.mark.parametrize("method", list(UPSAMPLERS))
def test_bad_inputs_raise_input_error(one_disc, method) -> None:
    guide, scores, _ = one_disc
    fn = UPSAMPLERS[method]
    with pytest.raises(InputError, match="cells"):
        fn(scores[:, :5], guide)  # 5 rows of cells for 48 rows of pixels
    with pytest.raises(InputError, match="uint8"):
        fn(scores, guide.astype(np.float32))
    with pytest.raises(InputError, match=r"\(C, h, w\)"):
        fn(scores[0], guide)
    with pytest.raises(InputError, match="confidence"):
        fn(scores, guide, np.ones((5, 8), np.float32))
    with pytest.raises(InputError):
        fn(scores, guide, sigma_luma=0)


def _benchmark_module():
    # benchmarks/ is not a package; load the script by path.
    import importlib.util
    import sys
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "benchmarks" / "upsample.py"
    spec = importlib.util.spec_from_file_location("pml_rt_bench_upsample", path)
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod  # dataclasses look their module up while the script runs
    spec.loader.exec_module(mod)
    return mod


def test_benchmark_scores_and_table(one_disc) -> None:
    bench = _benchmark_module()
    guide, _, truth = one_disc
    gt = truth > 0
    s1 = bench.scores_from_mask(gt, seed=7)
    s2 = bench.scores_from_mask(gt, seed=7)
    np.testing.assert_array_equal(s1, s2)  # deterministic for a seed
    assert s1.shape == (2, 6, 8) and s1.dtype == np.float32
    np.testing.assert_allclose(s1.sum(0), 1.0, atol=1e-6)
    np.testing.assert_allclose(s1 * 5, np.round(s1 * 5), atol=1e-5)  # whole votes of k = 5
    clean = bench.scores_from_mask(gt, seed=7, displace=0, blur=0, noise=0, k=64)
    np.testing.assert_allclose(clean[1], area_scores(truth, 2)[1], atol=1 / 128)
    methods = {"bilinear": lambda s, g: bilinear_upsample(s, g.shape[:2]).argmax(0),
               "bilateral-solver": lambda s, g: bilateral_solver_upsample(s, g).argmax(0)}
    rows = bench.compare_upsamplers([guide, guide], [clean, s1], [gt, gt], methods)
    assert [r.method for r in rows] == ["bilinear", "bilateral-solver"]
    assert rows[0].j_ratio == 1.0 and 0 < rows[1].j <= 1 and 0 < rows[1].f <= 1
    assert "bilateral-solver" in bench.format_table(rows)
    # The local F follows DAVIS: identical masks score 1, a mask against nothing 0.
    assert bench.local_f_measure(gt, gt) == 1.0 and bench.local_f_measure(gt, np.zeros_like(gt)) == 0.0


@pytest.mark.parametrize("method", list(UPSAMPLERS))
def test_coarser_cells_go_through_the_8_pixel_grid(method) -> None:
    """Scores of 16-pixel cells (Segmenter(input_scale=0.5)) reach full size through the
    edge-aware methods and stay sharper at the edge than bilinear from the same cells."""
    from pml_rt.upsample import upsample_labels

    hh, ww = 96, 128
    labels = disc(hh, ww, 45.0, 61.0, 27.0).astype(np.int64)
    guide = frame(labels, [BG, FG])
    pad = np.zeros((hh, ww), np.float32)
    pad[labels == 1] = 1
    fg = pad.reshape(hh // 16, 16, ww // 16, 16).mean((1, 3))
    scores = np.stack([1 - fg, fg]).astype(np.float32)  # (2, 6, 8): 16-pixel cells
    edge = upsample_labels(scores, (hh, ww), method, guide, stride=16)
    flat = upsample_labels(scores, (hh, ww), "bilinear", stride=16)
    assert edge.shape == (hh, ww) and edge.dtype == np.uint8
    band = edge_band(labels)
    assert band_scores(edge, labels, band)[1] > band_scores(flat, labels, band)[1]
    with pytest.raises(InputError, match="multiple of 8"):
        upsample_labels(scores, (hh, ww), method, guide, stride=12)
