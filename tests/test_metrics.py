"""DAVIS J / F / statistics on hand-computed cases, and against a literal toolkit transcription."""

from __future__ import annotations

import math
import os
from pathlib import Path

import numpy as np
import pytest
from scipy import ndimage

from pml_rt.errors import InputError
from pml_rt.metrics import (
    boundary_radius,
    db_statistics,
    evaluate_sequence,
    f_measure,
    jaccard,
    seg2bmap,
    summarize,
)
from pml_rt.xp import array_modules


def square(h: int, w: int, top: int, left: int, size: int = 4) -> np.ndarray:
    m = np.zeros((h, w), bool)
    m[top : top + size, left : left + size] = True
    return m


# -- reference: the davis2017-evaluation f_measure, transcribed line by line -------------------
# (cv2.dilate with skimage's disk == scipy binary_dilation with the same disk and a 0 border)


def _ref_disk(r: float) -> np.ndarray:
    ax = np.arange(-r, r + 1)
    x, y = np.meshgrid(ax, ax)
    return (x**2 + y**2) <= r**2


def _ref_seg2bmap(seg: np.ndarray) -> np.ndarray:
    seg = seg.astype(bool)
    e = np.zeros_like(seg)
    s = np.zeros_like(seg)
    se = np.zeros_like(seg)
    e[:, :-1] = seg[:, 1:]
    s[:-1, :] = seg[1:, :]
    se[:-1, :-1] = seg[1:, 1:]
    b = seg ^ e | seg ^ s | seg ^ se
    b[-1, :] = seg[-1, :] ^ e[-1, :]
    b[:, -1] = seg[:, -1] ^ s[:, -1]
    b[-1, -1] = 0
    return b


def _ref_f(fg: np.ndarray, gt: np.ndarray, bound_th: float = 0.008) -> float:
    bound_pix = bound_th if bound_th >= 1 else np.ceil(bound_th * np.linalg.norm(fg.shape))
    fb = _ref_seg2bmap(fg)
    gb = _ref_seg2bmap(gt)
    d = _ref_disk(bound_pix)
    fg_dil = ndimage.binary_dilation(fb, d)
    gt_dil = ndimage.binary_dilation(gb, d)
    gt_match = gb * fg_dil
    fg_match = fb * gt_dil
    n_fg, n_gt = np.sum(fb), np.sum(gb)
    if n_fg == 0 and n_gt > 0:
        precision, recall = 1, 0
    elif n_fg > 0 and n_gt == 0:
        precision, recall = 0, 1
    elif n_fg == 0 and n_gt == 0:
        precision, recall = 1, 1
    else:
        precision = np.sum(fg_match) / float(n_fg)
        recall = np.sum(gt_match) / float(n_gt)
    return 0.0 if precision + recall == 0 else 2 * precision * recall / (precision + recall)


def _blobs(rng: np.random.Generator, t: int, h: int, w: int) -> np.ndarray:
    """Random smooth-ish masks, some touching the border, some empty or full."""
    noise = ndimage.uniform_filter(rng.random((t, h, w)), size=(1, 5, 5))
    masks = noise > rng.uniform(0.4, 0.6, size=(t, 1, 1))
    masks[0] = False
    if t > 1:
        masks[1] = True
    return masks


# -- J --------------------------------------------------------------------------------------


def test_identical_masks_score_one() -> None:
    a = square(16, 16, 5, 6)
    assert jaccard(a, a) == 1.0
    assert f_measure(a, a) == 1.0


def test_disjoint_masks() -> None:
    a = square(20, 20, 1, 1)
    b = square(20, 20, 12, 12)
    assert jaccard(a, b) == 0.0
    assert f_measure(a, b) == 0.0  # boundaries 7+ pixels apart, tolerance 1 at 20x20


def test_both_empty_score_one() -> None:
    z = np.zeros((10, 12), bool)
    assert jaccard(z, z) == 1.0
    assert f_measure(z, z) == 1.0


def test_only_one_empty_scores_zero() -> None:
    z = np.zeros((10, 12), bool)
    a = square(10, 12, 3, 3)
    for p, g in ((a, z), (z, a)):
        assert jaccard(p, g) == 0.0
        assert f_measure(p, g) == 0.0


def test_shifted_square_iou_by_hand() -> None:
    a = square(12, 12, 4, 4)
    # one column right: overlap 4x3 = 12, union 16 + 16 - 12 = 20
    assert jaccard(a, square(12, 12, 4, 5)) == pytest.approx(12 / 20)
    # one down and one right: overlap 3x3 = 9, union 32 - 9 = 23
    assert jaccard(a, square(12, 12, 5, 5)) == pytest.approx(9 / 23)


def test_jaccard_treats_nonzero_as_foreground() -> None:
    a = square(8, 8, 2, 2).astype(np.uint8) * 255
    assert jaccard(a, a > 0) == 1.0


# -- F --------------------------------------------------------------------------------------


def test_boundary_radius_by_hand() -> None:
    assert boundary_radius(20, 20) == 1.0  # 0.008 * 28.28 = 0.23 -> 1
    assert boundary_radius(100, 100) == 2.0  # 0.008 * 141.4 = 1.13 -> 2
    assert boundary_radius(480, 854) == 8.0  # 0.008 * 979.6 = 7.84 -> 8 (as the data README says)
    assert boundary_radius(480, 854, bound_th=3) == 3.0  # >= 1 means pixels


def test_seg2bmap_square_by_hand() -> None:
    # A 4x4 square at rows/cols 5..8: its boundary is the perimeter of rows/cols 4..8 (the
    # inside's last row/column plus the outside row/column just above/left of it).
    b = seg2bmap(square(12, 12, 5, 5))
    expect = np.zeros((12, 12), bool)
    expect[4:9, 4:9] = True
    expect[5:8, 5:8] = False
    np.testing.assert_array_equal(b, expect)
    assert b.sum() == 16


def test_seg2bmap_edge_rules() -> None:
    full = np.ones((5, 6), bool)
    assert not seg2bmap(full).any()  # the toolkit's last row/column rules: no boundary at all
    m = np.zeros((5, 6), bool)
    m[:, 3:] = True  # touches the right and bottom edges
    b = seg2bmap(m)
    assert b[:, 2].all() and b[:4, 2].sum() == 4  # left of the edge on every row
    assert not b[:, 3:].any()


def test_shift_within_tolerance_is_perfect() -> None:
    # 20x20: tolerance 1 pixel; 100x100: tolerance 2 pixels (see test_boundary_radius_by_hand).
    a = square(20, 20, 5, 5)
    assert f_measure(a, square(20, 20, 5, 6)) == 1.0
    # Shifted one down and one right: only P's top-left corner (4, 4) is sqrt(2) > 1 from the
    # shifted perimeter (and symmetrically its bottom-right corner): P = R = 15/16.
    assert f_measure(a, square(20, 20, 6, 6)) == pytest.approx(15 / 16)
    b = square(100, 100, 40, 40, size=10)
    assert f_measure(b, square(100, 100, 40, 42, size=10)) == 1.0


def test_shift_beyond_tolerance_by_hand() -> None:
    # 20x20, tolerance 1. Square rows/cols 5..8 has boundary = perimeter P of [4..8]x[4..8];
    # shifted 2 columns right: perimeter Q of [4..8]x[6..10]. Within distance 1 of Q are P's
    # top and bottom rows except their leftmost pixel (2 x 4 = 8), plus (5, 8) and (7, 8) of
    # P's right column (1 below/above Q's corners (4, 8), (8, 8)): 10 of P's 16 pixels. P's left
    # column and (6, 8) are 2 away. By symmetry recall is 10/16 too, so F = 0.625.
    a = square(20, 20, 5, 5)
    assert f_measure(a, square(20, 20, 5, 7)) == pytest.approx(10 / 16)
    # At 100x100 the tolerance is 2, so the same 2-pixel shift matches everywhere.
    assert f_measure(square(100, 100, 5, 5), square(100, 100, 5, 7)) == 1.0


@pytest.mark.parametrize("shape", [(24, 32), (37, 23), (60, 90), (1, 9), (9, 1)])
def test_f_matches_toolkit_transcription(shape: tuple[int, int]) -> None:
    rng = np.random.default_rng(sum(shape))
    p = _blobs(rng, 6, *shape)
    g = _blobs(rng, 6, *shape)
    g[2] = False  # one-empty case
    got = f_measure(p, g)
    ref = [_ref_f(p[i], g[i]) for i in range(len(p))]
    np.testing.assert_allclose(got, ref, rtol=0, atol=1e-12)
    got3 = f_measure(p, g, bound_th=3)
    ref3 = [_ref_f(p[i], g[i], bound_th=3) for i in range(len(p))]
    np.testing.assert_allclose(got3, ref3, rtol=0, atol=1e-12)


def test_vectorised_equals_per_frame_loop() -> None:
    rng = np.random.default_rng(0)
    p = _blobs(rng, 7, 30, 40)
    g = _blobs(rng, 7, 30, 40)
    j = jaccard(p, g)
    f = f_measure(p, g)
    assert j.shape == (7,) and f.shape == (7,)
    assert j.dtype == np.float64 and f.dtype == np.float64
    np.testing.assert_allclose(j, [jaccard(p[i], g[i]) for i in range(7)], rtol=0, atol=0)
    np.testing.assert_allclose(f, [f_measure(p[i], g[i]) for i in range(7)], rtol=0, atol=0)
    assert isinstance(jaccard(p[0], g[0]), float) and isinstance(f_measure(p[3], g[3]), float)


def _data_root() -> Path:
    env = os.environ.get("PML_RT_DATA")
    return Path(env) if env else Path(__file__).resolve().parents[2] / "shared" / "data"


def test_f_matches_toolkit_on_a_real_480p_mask() -> None:
    ann = _data_root() / "davis2016-dev" / "Annotations" / "480p" / "blackswan"
    if not ann.is_dir():
        pytest.skip(f"DAVIS dev data absent at {ann}")
    from PIL import Image

    g = np.array(Image.open(ann / "00010.png")) > 0
    p = np.roll(ndimage.binary_erosion(g, iterations=3), (4, -9), axis=(0, 1))
    assert f_measure(p, g) == pytest.approx(_ref_f(p, g), abs=1e-12)
    assert 0.0 < f_measure(p, g) < 1.0


@pytest.mark.parametrize("fn", [jaccard, f_measure])
def test_bad_shapes_raise_input_error(fn) -> None:
    with pytest.raises(InputError, match="shape"):
        fn(np.zeros((4, 4)), np.zeros((4, 5)))
    with pytest.raises(ValueError):
        fn(np.zeros(4), np.zeros(4))


# -- statistics -----------------------------------------------------------------------------


def test_decay_by_hand() -> None:
    # DAVIS bins 8 frames at round(linspace(1, 8, 5)) - 1 = [0, 2, 4, 5, 7], each bin taking
    # its right edge too: bin 0 = frames 0..2 = [1, 1, 0], bin 3 = frames 5..7 = [0, 0, 0].
    s = db_statistics(np.array([1, 1, 0, 0, 0, 0, 0, 0], float))
    assert s["decay"] == pytest.approx(2 / 3)
    assert s["mean"] == pytest.approx(0.25)
    # 12 frames: edges [0, 3, 6, 8, 11]; bin 0 = frames 0..3, bin 3 = frames 8..11.
    s = db_statistics(np.array([1, 1, 1, 0] + [0.5] * 4 + [0, 0, 0.2, 0.2]))
    assert s["decay"] == pytest.approx(3 / 4 - 0.1)
    assert db_statistics(np.ones(5))["decay"] == 0.0
    assert db_statistics(np.array([0.3]))["decay"] == 0.0


def test_recall_by_hand() -> None:
    s = db_statistics(np.array([0.2, 0.6, 0.5, 0.9]))  # 0.5 itself does not count
    assert s["recall"] == pytest.approx(0.5)
    assert s["mean"] == pytest.approx(0.55)


def test_statistics_ignore_nan_in_mean() -> None:
    s = db_statistics(np.array([1.0, np.nan, 0.0]))
    assert s["mean"] == pytest.approx(0.5)
    assert all(math.isnan(v) for v in db_statistics(np.array([])).values())


def test_summarize_by_hand() -> None:
    results = {
        "seqA": {
            1: {"J": np.array([1.0, 0.5]), "F": np.array([0.8, 0.6])},
            2: {"J": np.array([0.0, 0.4]), "F": np.array([0.2, 0.2])},
        },
        "seqB": {1: {"J": np.array([0.6, 0.6, 0.9]), "F": np.array([1.0, 1.0, 1.0])}},
    }
    s = summarize(results)
    # per-object means: J 0.75, 0.2, 0.7; F 0.7, 0.2, 1.0
    assert s["J-Mean"] == pytest.approx((0.75 + 0.2 + 0.7) / 3)
    assert s["F-Mean"] == pytest.approx((0.7 + 0.2 + 1.0) / 3)
    assert s["J&F-Mean"] == pytest.approx(((0.75 + 0.2 + 0.7) / 3 + (0.7 + 0.2 + 1.0) / 3) / 2)
    # recall per object: J 1/2, 0, 1; F 1, 0, 1
    assert s["J-Recall"] == pytest.approx(0.5)
    assert s["F-Recall"] == pytest.approx(2 / 3)
    # decay: 2 frames -> bins [0], [1]; 3 frames -> bins [0, 1], [2]
    assert s["J-Decay"] == pytest.approx((0.5 - 0.4 + (0.6 - 0.9)) / 3)
    assert s["F-Decay"] == pytest.approx((0.2 + 0.0 + 0.0) / 3)
    assert s["per_object"]["seqA_2"] == pytest.approx({"J-Mean": 0.2, "F-Mean": 0.2})
    assert s["per_sequence"]["seqA"] == pytest.approx({"J-Mean": 0.475, "F-Mean": 0.45, "J&F-Mean": 0.4625})
    assert s["per_sequence"]["seqB"] == pytest.approx({"J-Mean": 0.7, "F-Mean": 1.0, "J&F-Mean": 0.85})
    assert s["n_objects"] == 3


def test_summarize_rejects_empty() -> None:
    with pytest.raises(InputError):
        summarize({})
    with pytest.raises(InputError):
        summarize({"a": {1: {"J": np.ones(3)}}})


# -- evaluate_sequence ----------------------------------------------------------------------


def _two_object_video() -> tuple[np.ndarray, np.ndarray]:
    gt = np.zeros((5, 20, 20), np.uint8)
    gt[:, 2:6, 2:6] = 1
    gt[:, 10:14, 10:14] = 3
    pred = gt.copy()
    pred[2, 2:6, 2:6] = 0
    pred[2, 2:6, 3:7] = 1  # object 1 shifted one column on frame 2
    pred[3, 10:14, 10:14] = 0  # object 3 lost on frame 3
    return pred, gt


def test_evaluate_sequence_skips_first_last() -> None:
    pred, gt = _two_object_video()
    res = evaluate_sequence(pred, gt)
    assert sorted(res) == [1, 3]
    np.testing.assert_allclose(res[1]["J"], [1.0, 12 / 20, 1.0])
    np.testing.assert_allclose(res[1]["F"], [1.0, 1.0, 1.0])  # 1-pixel shift, tolerance 1
    np.testing.assert_allclose(res[3]["J"], [1.0, 1.0, 0.0])
    np.testing.assert_allclose(res[3]["F"], [1.0, 1.0, 0.0])
    full = evaluate_sequence(pred, gt, skip_first_last=False)
    assert full[1]["J"].shape == (5,)
    np.testing.assert_allclose(full[1]["J"][1:-1], res[1]["J"])


def test_evaluate_sequence_objects_and_errors() -> None:
    pred, gt = _two_object_video()
    res = evaluate_sequence(pred, gt, objects=[3, 7])
    assert list(res) == [3, 7]
    np.testing.assert_allclose(res[7]["J"], [1.0, 1.0, 1.0])  # absent in both: empty vs empty
    with pytest.raises(InputError, match="skip_first_last"):
        evaluate_sequence(pred[:2], gt[:2])
    with pytest.raises(InputError):
        evaluate_sequence(pred, gt[:4])
    with pytest.raises(InputError):
        evaluate_sequence(pred.astype(float), gt)
    with pytest.raises(InputError):
        evaluate_sequence(pred, gt, objects=[0])


@pytest.mark.parametrize("name,xp,reason", array_modules())
def test_accepts_any_array_module(name: str, xp, reason: str) -> None:
    # Scoring runs on the host; device arrays are copied over once and give the same figures.
    if xp is None:
        pytest.skip(f"{name} unavailable: {reason}")
    rng = np.random.default_rng(1)
    p = _blobs(rng, 4, 20, 24)
    g = _blobs(rng, 4, 20, 24)
    np.testing.assert_array_equal(jaccard(xp.asarray(p), xp.asarray(g)), jaccard(p, g))
    np.testing.assert_array_equal(f_measure(xp.asarray(p), xp.asarray(g)), f_measure(p, g))
    res = evaluate_sequence(xp.asarray(p.astype(np.uint8)), xp.asarray(g.astype(np.uint8)))
    np.testing.assert_array_equal(res[1]["J"], jaccard(p[1:-1], g[1:-1]))
