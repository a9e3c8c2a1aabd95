"""Propagation on hand-made embeddings: labels follow identity, forward and backward."""

from __future__ import annotations

import numpy as np
import pytest

from pml_rt.annotations import ObjectMap, cell_labels, cell_shares
from pml_rt.errors import InputError
from pml_rt.propagate import PropagationConfig, keyframe_scores, propagate_scores, reference_pool


def _embeddings(xp, labels: np.ndarray, noise: float = 0.05, seed: int = 0):
    """Unit embeddings whose direction encodes each cell's true label (T, h, w, d)."""
    rng = np.random.default_rng(seed)
    d = 8
    centres = np.eye(d, dtype=np.float32)[:3]
    e = centres[labels] + noise * rng.normal(size=labels.shape + (d,)).astype(np.float32)
    e /= np.linalg.norm(e, axis=-1, keepdims=True)
    return xp.asarray(e.astype(np.float16))


def _moving_labels(t: int = 6, h: int = 10, w: int = 12) -> np.ndarray:
    lab = np.zeros((t, h, w), np.int64)
    for i in range(t):
        lab[i, 2:5, 1 + i : 4 + i] = 1
        lab[i, 6:9, 8 - i // 2 : 11 - i // 2] = 2
    return lab


@pytest.mark.parametrize("cfg", [
    PropagationConfig(online_adaptation=False, recent_frames=0, weighting="majority"),
    PropagationConfig(),
    PropagationConfig(k=1, background_stride=1, recent_frames=2, window=2),
], ids=["first-frame", "default", "k1-recent2"])
@pytest.mark.parametrize("ref_frame", [0, 3, 5])
def test_propagation_recovers_labels(xp, cfg, ref_frame):
    truth = _moving_labels()
    emb = _embeddings(xp, truth)
    seen = []
    for t, scores in propagate_scores(emb, ref_frame, xp.asarray(truth[ref_frame].astype(np.int32)), 3, cfg, xp=xp):
        assert scores.shape == (3, 10, 12)
        seen.append(t)
        pred = np.asarray(xp.argmax(scores, axis=0).tolist())
        assert (pred == truth[t]).mean() > 0.97
    # forward from the annotated frame, then backward
    assert seen == list(range(ref_frame + 1, 6)) + list(range(ref_frame - 1, -1, -1))


def test_reference_pool_keeps_objects_thins_background(xp):
    lab = np.zeros((6, 6), np.int32)
    lab[1:3, 1:3] = 1
    e = xp.asarray(np.random.default_rng(0).normal(size=(6, 6, 4)).astype(np.float32))
    refs, labels = reference_pool(e, xp.asarray(lab), background_stride=2)
    labels = np.asarray(labels.tolist())
    assert (labels == 1).sum() == 4  # every object cell
    assert (labels == 0).sum() == 9 - 1  # 3x3 grid of background, minus the one that is an object cell
    assert refs.shape == (12, 4)


def test_cell_shares_and_labels(xp):
    m = np.zeros((10, 12), np.int32)
    m[:8, :4] = 1  # fills cell (0, 0) only half: 8 x 4 of 8 x 8 pixels
    m[:, 8:] = 2  # the right-hand cell (w = 2 cells; cut at 12 px: 4 of its 8 columns exist)
    shares = cell_shares(xp.asarray(m), 3, stride=8)
    assert shares.shape == (3, 2, 2)
    s = np.asarray(shares.tolist())
    np.testing.assert_allclose(s[:, 0, 0], [0.5, 0.5, 0])
    np.testing.assert_allclose(s[:, 0, 1], [0, 0, 1])  # only its 4 in-frame columns count
    np.testing.assert_allclose(s.sum(axis=0), 1)
    assert np.asarray(cell_labels(xp.asarray(m), 3, 8).tolist())[:, 1].tolist() == [2, 2]


def test_object_map_keeps_user_ids():
    om = ObjectMap()
    cols = om.columns_of(np.array([[0, 7], [3, 7]], np.uint8))
    assert om.object_ids == [3, 7]
    assert om.lut()[cols].tolist() == [[0, 7], [3, 7]]
    om.add(200)
    assert om.column(200) == 3 and om.num_labels == 4
    with pytest.raises(InputError, match="outside 0..255"):
        om.add(256)
    with pytest.raises(InputError, match="not annotated"):
        om.column(9)


def test_config_validation():
    with pytest.raises(ValueError, match="k must be"):
        PropagationConfig(k=0).validate()
    with pytest.raises(ValueError, match="weighting"):
        PropagationConfig(weighting="x").validate()


def test_the_evaluation_protocol_segments_from_the_first_mask():
    """pml_rt.evaluate's shared steps (used by `pml-rt eval` and `python -m training eval`):
    first-frame mask in, every frame's ids out at full resolution."""
    from pml_rt.evaluate import first_frame_scores, masks_from_scores

    truth = _moving_labels()
    ids = np.array([0, 3, 7], np.uint8)[truth]  # object ids need not be 1..K
    full = np.kron(ids, np.ones((8, 8), np.uint8))  # (T, 80, 96) pixels, stride 8
    scores, lut = first_frame_scores(_embeddings(np, truth), full[0], PropagationConfig())
    assert sorted(scores) == list(range(1, len(truth))) and lut.tolist() == [0, 3, 7]
    pred = masks_from_scores(scores, lut, full[0], "bilinear")
    assert pred.shape == full.shape and pred.dtype == np.uint8
    assert (pred == full).mean() > 0.97  # bilinear only blurs the corners of the squares
    with pytest.raises(ValueError, match="guide"):
        masks_from_scores(scores, lut, full[0], "bilateral-solver")


def _host(xp, a) -> np.ndarray:
    return np.asarray(a.tolist(), dtype=np.float32)


def test_one_keyframe_is_plain_propagation(xp):
    truth = _moving_labels()
    emb = _embeddings(xp, truth)
    ref = xp.asarray(truth[2].astype(np.int32))
    plain = {t: _host(xp, s) for t, s in propagate_scores(emb, 2, ref, 3, xp=xp)}
    keyed = {t: _host(xp, s) for t, s in keyframe_scores(emb, {2: ref}, 3, xp=xp)}
    assert sorted(keyed) == sorted(plain) == [0, 1, 3, 4, 5]
    for t in plain:
        np.testing.assert_array_equal(keyed[t], plain[t])


def test_frames_between_keyframes_blend_both_passes_by_distance(xp):
    truth = _moving_labels(t=8)
    emb = _embeddings(xp, truth, noise=0.3)
    a, b = 1, 6
    refs = {a: xp.asarray(truth[a].astype(np.int32)), b: xp.asarray(truth[b].astype(np.int32))}
    from_a = {t: _host(xp, s) for t, s in propagate_scores(emb, a, refs[a], 3, xp=xp)}  # its forward part
    from_b = {t: _host(xp, s) for t, s in propagate_scores(emb, b, refs[b], 3, xp=xp)}  # its backward part
    got = {t: _host(xp, s) for t, s in keyframe_scores(emb, refs, 3, xp=xp)}
    assert sorted(got) == [0, 2, 3, 4, 5, 7]  # every frame but the keyframes, once
    np.testing.assert_array_equal(got[0], from_a[0])  # before the first keyframe: its backward pass
    np.testing.assert_array_equal(got[7], from_b[7])  # after the last: its forward pass
    for t in range(a + 1, b):
        w = (b - t) / (b - a)
        fwd = from_a[t].astype(np.float16).astype(np.float32)  # kept as float16 until the blend
        np.testing.assert_allclose(got[t], w * fwd + (1 - w) * from_b[t], atol=1e-6)
    with pytest.raises(ValueError):
        list(keyframe_scores(emb, {}, 3, xp=xp))


def test_spread_frames_start_at_zero_and_stay_distinct():
    from pml_rt.evaluate import spread_frames

    assert spread_frames(50, 1) == [0]
    assert spread_frames(50, 2) == [0, 25]
    assert spread_frames(10, 3) == [0, 3, 6]
    assert spread_frames(3, 3) == [0, 1, 2]
    for bad in (0, 4):
        with pytest.raises(ValueError):
            spread_frames(3, bad)


def test_keyframe_evaluation_scores_every_count_on_the_same_frames(segmenter, tmp_path, monkeypatch):
    """evaluate_keyframes on a tiny DAVIS-format root: the frames scored exclude every
    count's annotated frames and the last one."""
    from PIL import Image

    import pml_rt.evaluate as ev

    from .conftest import make_tiny_clip

    clip, truth = make_tiny_clip(frames=7, h=48, w=64)
    root = tmp_path / "davis"
    for sub in ("JPEGImages/480p/toy", "Annotations/480p/toy", "ImageSets/2016"):
        (root / sub).mkdir(parents=True)
    for t in range(len(clip)):
        Image.fromarray(clip[t]).save(root / "JPEGImages/480p/toy" / f"{t:05d}.jpg", quality=95)
        Image.fromarray(truth[t]).save(root / "Annotations/480p/toy" / f"{t:05d}.png")
    (root / "ImageSets/2016/val.txt").write_text("toy\n")
    scored = []
    real = ev.evaluate_sequence

    def spy(pred, gt, **kw):
        scored.append(gt.copy())
        return real(pred, gt, **kw)

    monkeypatch.setattr(ev, "evaluate_sequence", spy)
    report = ev.evaluate_keyframes(segmenter, root, (1, 2, 3), split="val", progress=False)
    assert list(report["configs"]) == ["1 annotated frame", "2 annotated frames", "3 annotated frames"]
    # 7 frames: the counts annotate {0}, {0, 3}, {0, 2, 4}; the last (6) is skipped: 1 and 5 are scored
    assert len(scored) == 3
    for gt in scored:
        np.testing.assert_array_equal(gt, truth[[1, 5]])
    assert all(0 <= c["J&F-Mean"] <= 1 for c in report["configs"].values())


@pytest.mark.parametrize("stride", [2, 3])
def test_coarse_far_search_finds_what_the_full_search_finds(xp, stride, monkeypatch):
    """Far from the latest object, cells are searched on a coarse grid first; an object blob
    there (one that reappears, say) still gets the full search around it, so every cell's
    label matches the full search, with fewer cells searched. (A blob must cover a coarse
    cell to be seen: one of stride x stride cells always does.)"""
    import pml_rt.propagate as prop
    from pml_rt.knn import global_topk, vote

    h, w = 24, 30
    lab = np.zeros((h, w), np.int64)
    lab[3:8, 4:9] = 1  # the object, near
    lab[17 : 17 + stride, 22 : 22 + stride] = 2  # a small blob of another object, far away
    q = _embeddings(xp, lab[None], noise=0.3, seed=3)[0].astype(xp.float32)
    ref_lab = np.zeros((h, w), np.int32)
    ref_lab[2:7, 3:8], ref_lab[10:12, 10:12] = 1, 2
    refs, ref_labels = reference_pool(_embeddings(xp, ref_lab[None], noise=0.3, seed=4)[0].astype(xp.float32),
                                      xp.asarray(ref_lab), background_stride=2)
    near = np.zeros((h, w), bool)
    near[0:12, 0:13] = True
    searched = []
    monkeypatch.setattr(prop, "global_topk", lambda qq, *a: searched.append(qq.shape[0]) or global_topk(qq, *a))
    got = prop.global_candidates(q, refs, ref_labels, 5, xp.asarray(near), stride)
    want = global_topk(q.reshape(h * w, -1), refs, ref_labels, 5)
    labels = [np.asarray(vote(c, 3)[0].argmax(axis=1).tolist()) for c in (got, want)]
    np.testing.assert_array_equal(labels[0], labels[1])
    assert (labels[0].reshape(h, w)[17 : 17 + stride, 22 : 22 + stride] == 2).mean() > 0.5  # the far blob is found
    assert sum(searched) < h * w  # and fewer cells were searched
    np.testing.assert_array_equal(np.asarray(prop.global_candidates(q, refs, ref_labels, 5, None, stride).sims.tolist()),
                                  np.asarray(want.sims.tolist()))  # no near map: the full search


def test_far_stride_changes_little_in_propagation(xp):
    truth = _moving_labels(t=8, h=20, w=24)
    emb = _embeddings(xp, truth, noise=0.2)
    ref = xp.asarray(truth[0].astype(np.int32))
    out = {}
    for s in (1, 2):
        cfg = PropagationConfig(far_stride=s, window=2)
        out[s] = np.stack([np.asarray(xp.argmax(sc, axis=0).tolist())
                           for _, sc in propagate_scores(emb, 0, ref, 3, cfg, xp=xp)])
    assert (out[1] == truth[1:]).mean() > 0.97
    assert (out[2] != out[1]).mean() < 0.01
    with pytest.raises(ValueError, match="far_stride"):
        PropagationConfig(far_stride=0).validate()


def test_reference_pool_thins_large_objects_keeps_small_ones(xp):
    lab = np.zeros((12, 12), np.int32)
    lab[0:8, 0:8] = 1  # 64 cells: thinned on the object grid
    lab[10:12, 10:12] = 2  # 4 cells: kept whole
    e = xp.asarray(np.random.default_rng(1).normal(size=(12, 12, 4)).astype(np.float32))
    _, labels = reference_pool(e, xp.asarray(lab), background_stride=4, object_stride=2, small_object=10)
    labels = np.asarray(labels.tolist())
    assert (labels == 1).sum() == 16  # rows and columns 0, 2, 4, 6
    assert (labels == 2).sum() == 4
    bg_grid = np.zeros((12, 12), bool)
    bg_grid[::4, ::4] = True
    assert (labels == 0).sum() == (bg_grid & (lab == 0)).sum()


def test_density_stride():
    from pml_rt.propagate import density_stride

    assert [density_stride(c, 6420) for c in (100, 6420, 14400, 32400, 129600)] == [1, 1, 1, 2, 4]
    assert density_stride(10**6, 0) == 1


def test_large_frames_keep_references_at_the_480p_density(xp):
    """A frame of 4x the cells of 854x480 searches about a quarter of the references and
    labels a moving object as the full pool does."""
    truth = np.zeros((4, 120, 216), np.int64)
    for t in range(4):
        truth[t, 30:70, 40 + 3 * t : 100 + 3 * t] = 1
    emb = _embeddings(xp, truth, noise=0.1)
    ref = xp.asarray(truth[0].astype(np.int32))
    out = {}
    for pc in (0, 6420):
        cfg = PropagationConfig(pool_cells=pc)
        out[pc] = np.stack([np.asarray(xp.argmax(s, axis=0).tolist())
                            for _, s in propagate_scores(emb, 0, ref, 2, cfg, xp=xp)])
    assert (out[6420] == truth[1:]).mean() > 0.99
    assert (out[6420] != out[0]).mean() < 0.005
    from pml_rt.propagate import Tracker

    sizes = [Tracker(emb[0].astype(xp.float32), ref, 2, PropagationConfig(pool_cells=pc)).pool_size for pc in (0, 6420)]
    assert sizes[1] < 0.3 * sizes[0]
