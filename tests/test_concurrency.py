"""One Segmenter used from several threads gives the same results as used alone."""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

from pml_rt import Segmenter
from pml_rt import cache as pcache

from .conftest import make_tiny_clip
from .test_cache import WrapBackend

THREADS = 4


def job(seg: Segmenter, seed: int, cache_dir=None) -> dict:
    """Embed a clip of its own, propagate from two frames, click, stream: everything a user might."""
    frames, truth = make_tiny_clip(frames=4, h=32, w=48, seed=seed)
    v = seg.embed(frames, progress=False, cache_dir=cache_dir)
    out = {"emb": np.array(v.embeddings), "prop0": v.propagate(truth[0]),
           "prop3": v.propagate(truth[3], frame=3, recent_frames=0),
           "stream": np.stack(list(seg.stream(iter(frames), truth[0])))}
    try:
        session = v.session()
    except ImportError:  # pragma: no cover - session.py absent in this tree
        return out
    session.add_clicks(1, [[10, 10], [40, 28]], [1, 0])
    out["clicks"] = session.masks()
    return out


def same(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for k in a:
        np.testing.assert_array_equal(a[k], b[k], err_msg=k)


@pytest.mark.parametrize("cached", [False, True], ids=["memory", "cache"])
def test_threads_give_the_results_of_one_thread(segmenter, tmp_path, cached):
    cache_dir = tmp_path if cached else None
    alone = [job(segmenter, s, cache_dir) for s in range(THREADS)]
    with ThreadPoolExecutor(THREADS) as pool:
        together = list(pool.map(lambda s: job(segmenter, s, cache_dir), range(THREADS)))
    for a, b in zip(alone, together):
        same(a, b)


def test_threads_share_one_embedded_video(segmenter, tmp_path):
    frames, truth = make_tiny_clip(frames=5, h=32, w=48)
    v = segmenter.embed(frames, progress=False, cache_dir=tmp_path)  # a read-only memory map
    tasks = [(f, k) for f in range(5) for k in (1, 5)]
    alone = [v.propagate(truth[f], frame=f, k=k) for f, k in tasks]
    with ThreadPoolExecutor(THREADS) as pool:
        together = list(pool.map(lambda fk: v.propagate(truth[fk[0]], frame=fk[0], k=fk[1]), tasks))
    for a, b in zip(alone, together):
        np.testing.assert_array_equal(a, b)


def test_threads_embedding_one_video_into_one_cache(segmenter, tmp_path):
    frames, _ = make_tiny_clip(frames=6, h=32, w=48, seed=3)
    want = segmenter.embed(frames, progress=False).embeddings
    seg = Segmenter(backend="onnxruntime")
    seg.backend = WrapBackend(segmenter.backend)
    with ThreadPoolExecutor(THREADS) as pool:
        got = list(pool.map(lambda _: seg.embed(frames, progress=False, cache_dir=tmp_path), range(THREADS)))
    for v in got:
        np.testing.assert_array_equal(v.embeddings, want)
    assert sorted(seg.backend.frames) == list(range(6))  # each frame embedded once, by whoever held the lock
    (entry, meta), = pcache.EmbeddingCache(tmp_path).entries()
    assert meta["complete"] is True


def test_backend_is_set_up_once_under_a_race(segmenter):
    class Counting(WrapBackend):
        activations = 0

        def _activate(self) -> None:
            type(self).activations += 1
            time.sleep(0.05)  # widen the window in which a second thread could start a set-up too
            super()._activate()

    seg = Segmenter(backend="onnxruntime")
    seg.backend = Counting(segmenter.backend)
    frames, _ = make_tiny_clip(frames=2, h=32, w=48)
    with ThreadPoolExecutor(THREADS) as pool:
        list(pool.map(lambda i: seg.embed_frames(frames, [0, 1]), range(THREADS * 2)))
    assert Counting.activations == 1
