"""Temporal spreading (pml_rt.temporal): the matches between neighbouring frames against a
brute-force window search, and the two passes against a dense loop."""

from __future__ import annotations

import numpy as np
import pytest

from pml_rt.errors import InputError
from pml_rt.temporal import TINY, TemporalLinks, combine, evidence_shares
from pml_rt.xp import to_host


def unit(rng: np.random.Generator, shape: tuple[int, ...]) -> np.ndarray:
    e = rng.standard_normal(shape).astype(np.float32)
    return e / np.linalg.norm(e, axis=-1, keepdims=True)


def dense(m) -> np.ndarray:
    return to_host(m.toarray())


@pytest.mark.parametrize("radius, neighbours", [(1, 1), (2, 3), (4, 4)])
def test_links_hold_the_best_matches_within_the_window(xp, radius, neighbours):
    rng = np.random.default_rng(radius)
    t, h, w, d = 3, 7, 9, 8
    emb = unit(rng, (t, h, w, d))
    links = TemporalLinks.build(xp.asarray(emb), radius=radius, neighbours=neighbours, temperature=0.1)
    assert links.back[0] is None and links.ahead[t - 1] is None
    yy, xx = np.divmod(np.arange(h * w), w)
    near = (np.abs(yy[:, None] - yy[None]) <= radius) & (np.abs(xx[:, None] - xx[None]) <= radius)
    for i in range(t):
        for j, m in ((i - 1, links.back[i]), (i + 1, links.ahead[i])):
            if not 0 <= j < t:
                continue
            a = dense(m)  # (h*w, h*w)
            np.testing.assert_allclose(a.sum(axis=1), 1, atol=1e-5)
            assert not (a[~near] > 0).any()  # nothing outside the window
            sims = np.where(near, emb[i].reshape(-1, d) @ emb[j].reshape(-1, d).T, -np.inf)
            kth = -np.sort(-sims, axis=1)[:, neighbours - 1]
            held = a > 0
            assert (held.sum(axis=1) <= neighbours).all()
            # every match held is among the best `neighbours` (ties aside)
            assert (np.where(held, sims, np.inf).min(axis=1) >= kth - 1e-5).all()
            # the best match of each cell is held, with the largest weight
            best = sims.argmax(axis=1)
            assert held[np.arange(h * w), best].all()
            np.testing.assert_allclose(a.max(axis=1), a[np.arange(h * w), best], atol=1e-6)


def dense_spread(links: TemporalLinks, ev: np.ndarray, alpha: float, seeds: dict, trust=None) -> np.ndarray:
    """The two passes written out with dense matrices, frame by frame: ev (K, T, n); trust
    (T, n) or None, each cell's share of its own evidence (of 1 - alpha)."""
    t, n = ev.shape[1:]
    keep = (1 - alpha) * (np.ones((t, n), np.float32) if trust is None else trust)[:, :, None]  # (T, n, 1)

    def fix(x, i):  # x (n, K)
        if i in seeds:
            cells, values = seeds[i]
            x[cells] = values.T
        return x

    e = ev.transpose(1, 2, 0)  # (T, n, K)
    fwd = [fix(e[0].copy(), 0)]
    for i in range(1, t):
        fwd.append(fix(keep[i] * e[i] + (1 - keep[i]) * (dense(links.back[i]) @ fwd[-1]), i))
    bwd = [fix(e[t - 1].copy(), t - 1)]
    for i in range(t - 2, -1, -1):
        bwd.insert(0, fix(keep[i] * e[i] + (1 - keep[i]) * (dense(links.ahead[i]) @ bwd[0]), i))
    out = np.stack(fwd) + np.stack(bwd) - keep * e
    out *= (1 + alpha) / (2 - keep)  # each cell's shares sum to 1 + alpha again
    return out.transpose(2, 0, 1)


def one_hot(cols: np.ndarray, k: int) -> np.ndarray:
    return (np.asarray(cols)[None] == np.arange(k)[:, None]).astype(np.float32)  # (K, m)


@pytest.mark.parametrize("alpha", [0.0, 0.5, 0.95])
def test_spread_equals_the_passes_written_out(xp, alpha):
    rng = np.random.default_rng(7)
    t, h, w, c = 5, 6, 8, 3
    links = TemporalLinks.build(xp.asarray(unit(rng, (t, h, w, 4))), radius=2, neighbours=3)
    ev = rng.random((c, t, h * w)).astype(np.float32)
    ev /= ev.sum(axis=0, keepdims=True)
    seeds = {1: (np.array([0, 5]), one_hot([2, 1], c)), 4: (np.array([3]), one_hot([0], c))}
    got = to_host(links.spread(xp.asarray(ev), alpha, {f: (xp.asarray(a), xp.asarray(b))
                                                       for f, (a, b) in seeds.items()}))
    want = dense_spread(links, ev, alpha, seeds)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(got.sum(axis=0), 1 + alpha, atol=1e-5)  # each pass keeps the shares summing to 1
    assert (got[:, 1, [0, 5]].argmax(axis=0) == [2, 1]).all() and got[:, 4, 3].argmax() == 0  # seeds hold
    # linear, column by column: the last column is what the others leave
    part = to_host(links.spread(xp.asarray(ev[:2].copy()), alpha, {f: (xp.asarray(a), xp.asarray(b[:2]))
                                                                     for f, (a, b) in seeds.items()}))
    np.testing.assert_allclose(part, got[:2], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(1 + alpha - part.sum(axis=0), got[2], atol=1e-5)
    if alpha == 0:  # nothing carried: each frame's own evidence, seeds aside
        free = np.ones((t, h * w), bool)
        free[1, [0, 5]] = free[4, 3] = False
        np.testing.assert_allclose(got[:, free], ev[:, free], atol=1e-6)


@pytest.mark.parametrize("alpha", [0.0, 0.9])
def test_trust_weighs_each_cells_own_evidence(xp, alpha):
    """With a trust per cell the passes equal the dense loop with per-cell weights, the shares
    still sum to 1 + alpha, a cell of trust 1 is the plain spread's, and a cell of trust 0
    takes nothing from its own evidence."""
    rng = np.random.default_rng(5)
    t, h, w, c = 5, 6, 8, 3
    links = TemporalLinks.build(xp.asarray(unit(rng, (t, h, w, 4))), radius=2, neighbours=3)
    ev = rng.random((c, t, h * w)).astype(np.float32)
    ev /= ev.sum(axis=0, keepdims=True)
    trust = rng.random((t, h * w)).astype(np.float32)
    trust[:, :4] = 0
    seeds = {2: (np.array([7, 9]), one_hot([1, 0], c))}
    dev = {f: (xp.asarray(a), xp.asarray(b)) for f, (a, b) in seeds.items()}
    fwd, bwd = links.passes(xp.asarray(ev), alpha, dev, trust=xp.asarray(trust))
    got = to_host(combine(fwd, bwd, xp.asarray(ev), alpha, xp.asarray(trust)))
    np.testing.assert_allclose(got, dense_spread(links, ev, alpha, seeds, trust), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(got.sum(axis=0), 1 + alpha, atol=1e-5)
    ones = np.ones_like(trust)
    f1, b1 = links.passes(xp.asarray(ev), alpha, dev, trust=xp.asarray(ones))
    np.testing.assert_allclose(to_host(combine(f1, b1, xp.asarray(ev), alpha, xp.asarray(ones))),
                               to_host(links.spread(xp.asarray(ev), alpha, dev)), rtol=1e-5, atol=1e-6)
    # a cell of trust 0 (not on the first frame of a pass) does not see its own evidence
    other = ev.copy()
    other[:, 2, 0] = one_hot([2], c)[:, 0]
    f2, _ = links.passes(xp.asarray(other), alpha, dev, trust=xp.asarray(trust))
    np.testing.assert_allclose(to_host(f2)[:, 2, 0], to_host(fwd)[:, 2, 0], rtol=1e-6, atol=1e-7)
    with pytest.raises(InputError, match="trust must be"):
        links.passes(xp.asarray(ev), alpha, dev, trust=xp.asarray(trust[:, :-1]))


@pytest.mark.parametrize("start, stop", [(0, 3), (2, 5), (1, 4), (2, 3), (0, 6)])
def test_passes_over_a_run_of_frames_continue_the_whole_passes(xp, start, stop):
    """A run of frames with the whole passes' values at its edges gives the whole passes'
    values inside it (what a deferred click relies on)."""
    rng = np.random.default_rng(11)
    t, h, w, k = 6, 5, 7, 2
    links = TemporalLinks.build(xp.asarray(unit(rng, (t, h, w, 4))), radius=2, neighbours=3)
    ev = xp.asarray(rng.random((k, t, h * w)).astype(np.float32) / k)
    seeds = {2: (xp.asarray(np.array([1, 4])), xp.asarray(one_hot([0, 1], k)))}
    fwd, bwd = links.passes(ev, 0.9, seeds)
    before = fwd[:, start - 1] if start > 0 else None
    after = bwd[:, stop] if stop < t else None
    f2, b2 = links.passes(ev[:, start:stop].copy(), 0.9, seeds, start=start, before=before, after=after)
    np.testing.assert_allclose(to_host(f2), to_host(fwd[:, start:stop]), rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(to_host(b2), to_host(bwd[:, start:stop]), rtol=1e-6, atol=1e-6)


def test_spread_carries_a_seed_along_a_moving_object(xp):
    """A patch that moves one cell a frame, seeded on frame 0 only, keeps its label on the
    last frame where the evidence of every frame is undecided; far cells do not take it."""
    rng = np.random.default_rng(3)
    t, h, w, d = 6, 10, 14, 16
    obj, bg = unit(rng, (d,)), unit(rng, (h, w, d))
    emb = np.repeat(bg[None], t, axis=0) + 0.05 * unit(rng, (t, h, w, d))
    for i in range(t):
        emb[i, 4:6, 2 + i:4 + i] = obj + 0.05 * unit(rng, (2, 2, d))
    emb /= np.linalg.norm(emb, axis=-1, keepdims=True)
    links = TemporalLinks.build(xp.asarray(emb), radius=2, neighbours=2, temperature=0.02)
    ev = np.full((1, t, h * w), 0.5, np.float32)  # the object's share: no frame says anything by itself
    patch0 = np.array([4 * w + 2, 4 * w + 3, 5 * w + 2, 5 * w + 3])
    seeds = {i: (np.array([0]), np.zeros((1, 1), np.float32)) for i in range(1, t)}  # a far background cell
    seeds[0] = (np.concatenate([patch0, [0]]), np.array([[1, 1, 1, 1, 0]], np.float32))
    out = to_host(links.spread(xp.asarray(ev), 0.95, {f: (xp.asarray(a), xp.asarray(b))
                                                      for f, (a, b) in seeds.items()}))
    last = out[0, t - 1].reshape(h, w)  # object share, out of 1 + alpha
    assert (last[4:6, 2 + t - 1:4 + t - 1] > 1.95 / 2).all()
    assert last[0, 0] < 1.95 / 2


def test_evidence_shares_softmax_over_columns(xp):
    best = np.array([[0.9, 0.8, -1e9], [0.1, -1e9, -1e9]], np.float32)  # (C=2 columns, n=3 cells)
    sh = to_host(evidence_shares(xp.asarray(best), 0.1))  # (C-1, n): column 1's share
    assert sh.shape == (1, 3)
    np.testing.assert_allclose(sh[0, 0], np.exp(-8) / (1 + np.exp(-8)), rtol=1e-5)
    assert sh[0, 1] == 0  # a column without references gets 0
    assert sh[0, 2] == 0.5  # no references at all: equal shares
    # the softmax over more columns: a third column without references changes nothing
    three = to_host(evidence_shares(xp.asarray(np.concatenate([best, np.full((1, 3), -1e9, np.float32)])), 0.1))
    assert three.shape == (2, 3)
    np.testing.assert_allclose(three[0, :2], sh[0, :2], rtol=1e-5, atol=1e-7)
    assert (three[1, :2] == 0).all()
    np.testing.assert_allclose(three[:, 2], 1 / 3, rtol=1e-6)  # no references at all: equal shares
    rng = np.random.default_rng(0)
    b = rng.uniform(-1, 1, (4, 50)).astype(np.float32)
    e = np.exp(b / 0.05)
    got = to_host(evidence_shares(xp.asarray(b), 0.05))
    np.testing.assert_allclose(got, (e / e.sum(axis=0))[1:], rtol=1e-4, atol=TINY)  # below TINY: 0
    assert not ((got > 0) & (got < TINY)).any()


def test_bad_arguments_are_input_errors():
    emb = np.zeros((2, 3, 3, 4), np.float32)
    with pytest.raises(InputError, match="radius >= 1"):
        TemporalLinks.build(emb, radius=0)
    with pytest.raises(InputError, match=r"\(T, h, w, d\)"):
        TemporalLinks.build(emb[0])
    links = TemporalLinks.build(emb + 1)
    with pytest.raises(InputError, match="alpha"):
        links.spread(np.zeros((1, 2, 9), np.float32), 1.0)
    with pytest.raises(InputError, match="does not fit"):
        links.spread(np.zeros((1, 3, 9), np.float32), 0.5)
    with pytest.raises(InputError, match="before"):
        links.passes(np.zeros((1, 1, 9), np.float32), 0.5, start=1)
