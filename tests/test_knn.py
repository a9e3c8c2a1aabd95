"""kNN on literal point sets, checked against brute force; runs on every array module."""

from __future__ import annotations

import numpy as np
import pytest

from pml_rt.knn import CPU_KERNELS, Candidates, cpu_kernel, global_topk, local_topk, merge_topk, set_cpu_kernel, topk, vote


@pytest.fixture(params=CPU_KERNELS)
def kernel(request, xp):
    """Each way NumPy arrays are searched (CuPy arrays always run the array-module code)."""
    if xp is not np and request.param != "numpy":
        pytest.skip("the ONNX Runtime kernels serve NumPy arrays only")
    with cpu_kernel(request.param):
        yield request.param


def test_global_topk_literal(xp, kernel):
    refs = xp.asarray([[1, 0], [0, 1], [-1, 0], [0.8, 0.6]], dtype=xp.float32)
    labels = xp.asarray([1, 2, 0, 1], dtype=xp.int32)
    q = xp.asarray([[1, 0], [0, 1]], dtype=xp.float32)
    c = global_topk(q, refs, labels, k=2)
    order = xp.argsort(-c.sims, axis=1)
    got = xp.take_along_axis(c.labels, order, axis=1)
    assert got.tolist() == [[1, 1], [2, 1]]


@pytest.mark.parametrize("m,k", [(3, 5), (50, 5), (5000, 5), (5000, 1)])
def test_global_topk_matches_sort(xp, kernel, m, k):
    rng = np.random.default_rng(m + k)
    q = xp.asarray(rng.normal(size=(40, 8)), dtype=xp.float32)
    r = xp.asarray(rng.normal(size=(m, 8)), dtype=xp.float32)
    lab = xp.asarray(rng.integers(0, 3, m), dtype=xp.int32)
    c = global_topk(q, r, lab, k, chunk_bytes=4096)  # force several chunks
    full = np.asarray((q @ r.T).tolist())
    want = -np.sort(-full, axis=1)[:, : min(k, m)]
    got = -np.sort(-np.asarray(c.sims.tolist()), axis=1)[:, : min(k, m)]
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
    if m < k:  # padding is invalid
        assert (np.asarray(c.labels.tolist())[:, m:] == -1).all()


def test_topk_two_stage_equals_partition(xp, kernel):
    rng = np.random.default_rng(1)
    s = xp.asarray(rng.normal(size=(30, 3000)), dtype=xp.float32)
    a = np.sort(np.asarray(topk(s, 5, block=16).tolist()), axis=1)
    b = np.sort(np.argsort(-np.asarray(s.tolist()), axis=1)[:, :5], axis=1)
    assert (a == b).all()


@pytest.mark.parametrize("tile", [3, 4, 8])
def test_local_topk_brute_force(xp, kernel, tile):
    rng = np.random.default_rng(tile)
    h, w, d, p, r, k = 9, 11, 6, 2, 2, 3
    q = rng.normal(size=(h, w, d)).astype(np.float32)
    keys = rng.normal(size=(p, h, w, d)).astype(np.float32)
    lab = rng.integers(-1, 3, size=(p, h, w))
    c = local_topk(xp.asarray(q), xp.asarray(keys), xp.asarray(lab), r, k, tile=tile)
    sims, labels = np.asarray(c.sims.tolist()), np.asarray(c.labels.tolist())
    for y in range(h):
        for x in range(w):
            cand = sorted(
                ((float(q[y, x] @ keys[j, yy, xx]), int(lab[j, yy, xx]))
                 for j in range(p) for yy in range(max(0, y - r), min(h, y + r + 1))
                 for xx in range(max(0, x - r), min(w, x + r + 1)) if lab[j, yy, xx] >= 0),
                key=lambda t: -t[0])[:k]
            got = sorted(zip(sims[y * w + x], labels[y * w + x]), key=lambda t: -t[0])
            np.testing.assert_allclose([s for s, _ in got], [s for s, _ in cand], atol=1e-4)
            assert [lbl for _, lbl in got] == [lbl for _, lbl in cand]


def test_vote_majority_and_unanimous(xp):
    c = Candidates(xp.asarray([[0.9, 0.8, 0.7], [0.9, 0.1, 0.2]], dtype=xp.float32),
                   xp.asarray([[1, 1, 1], [2, 0, 0]], dtype=xp.int32))
    scores, unanimous = vote(c, 3)
    np.testing.assert_allclose(np.asarray(scores.tolist()), [[0, 1, 0], [2 / 3, 0, 1 / 3]], atol=1e-6)
    assert unanimous.tolist() == [True, False]


def test_vote_softmax_prefers_close(xp):
    c = Candidates(xp.asarray([[0.9, 0.5, 0.5]], dtype=xp.float32), xp.asarray([[2, 0, 0]], dtype=xp.int32))
    scores, _ = vote(c, 3, weighting="softmax", temperature=0.1)
    s = np.asarray(scores.tolist())[0]
    assert s[2] > s[0] and abs(s.sum() - 1) < 1e-5


def test_merge_topk_keeps_best(xp):
    a = Candidates(xp.asarray([[0.5, 0.1]], dtype=xp.float32), xp.asarray([[1, 1]], dtype=xp.int32))
    b = Candidates(xp.asarray([[0.9, 0.3]], dtype=xp.float32), xp.asarray([[2, 2]], dtype=xp.int32))
    m = merge_topk([a, b], 2)
    assert sorted(np.asarray(m.sims.tolist())[0].round(3).tolist()) == [0.5, 0.9]


def test_vote_rejects_unknown_weighting():
    c = Candidates(np.zeros((1, 1), np.float32), np.zeros((1, 1), np.int32))
    with pytest.raises(ValueError, match="weighting"):
        vote(c, 2, weighting="median")


def test_kernels_agree_on_a_real_sized_frame():
    """ONNX Runtime and NumPy kernels give the same candidates on a frame-sized problem."""
    rng = np.random.default_rng(7)
    h, w, d, p = 20, 27, 16, 3
    unit = lambda a: (a / np.linalg.norm(a, axis=-1, keepdims=True)).astype(np.float32)  # noqa: E731
    q, keys = unit(rng.normal(size=(h, w, d))), unit(rng.normal(size=(p, h, w, d)))
    lab = rng.integers(-1, 3, size=(p, h, w))
    active = rng.random((h, w)) < 0.3
    refs, rl = unit(rng.normal(size=(700, d))), rng.integers(0, 3, 700).astype(np.int32)
    out = {}
    for name in CPU_KERNELS:
        with cpu_kernel(name):
            loc = local_topk(q, keys, lab, 3, 5, active=active)
            glob = global_topk(q.reshape(-1, d), refs, rl, 5)
        out[name] = [np.sort(a, axis=1) for a in (loc.sims, glob.sims)]
    for a, b in zip(*out.values()):
        np.testing.assert_allclose(a, b, atol=1e-5)


def test_unknown_kernel_is_rejected():
    with pytest.raises(ValueError, match="numpy"):
        set_cpu_kernel("fortran")


def test_shipped_kernels_match_their_builder():
    """pml_rt/kernels/*.onnx are what export/build_kernels.py writes (rebuild if this fails)."""
    pytest.importorskip("onnx", reason="onnx (the export extra) builds the kernels")
    from pml_rt.knn_ort import build_graphs, kernel_dir

    for name, data in build_graphs().items():
        assert (kernel_dir() / f"{name}.onnx").read_bytes() == data, "rebuild with: python export/build_kernels.py"


def test_window_keys_ring_keeps_the_last_frames(xp, kernel):
    """A ring of P key frames, pushed more than P times, searches exactly the last P frames."""
    from pml_rt.knn import WindowKeys

    rng = np.random.default_rng(11)
    h, w, d, p, r, k = 13, 10, 5, 3, 2, 4
    frames = rng.normal(size=(7, h, w, d)).astype(np.float32)
    labels = rng.integers(-1, 3, size=(7, h, w)).astype(np.int32)
    q = xp.asarray(rng.normal(size=(h, w, d)).astype(np.float32))
    ring = WindowKeys((h, w), d, p, r, tile=4, xp=xp)
    assert ring.search(q, k).labels.tolist() == [[-1] * k] * (h * w)  # nothing pushed: no candidates
    for t in range(7):
        ring.push(xp.asarray(frames[t]), xp.asarray(labels[t]))
        lo = max(0, t + 1 - p)
        want = local_topk(q, xp.asarray(frames[lo : t + 1]), xp.asarray(labels[lo : t + 1]), r, k, tile=4)
        got = ring.search(q, k)
        for a, b in ((got.sims, want.sims), (got.labels, want.labels)):
            np.testing.assert_allclose(np.sort(np.asarray(a.tolist()), axis=1), np.sort(np.asarray(b.tolist()), axis=1),
                                       atol=1e-5)
    assert ring.latest_labels.tolist() == labels[-1].tolist()
    with pytest.raises(ValueError, match="key frame"):
        ring.push(xp.asarray(frames[0][:-1]), xp.asarray(labels[0][:-1]))
