"""The search running ahead on a worker thread (pml_rt.overlap): same masks, errors surface."""

from __future__ import annotations

import threading

import numpy as np
import pytest

from pml_rt.overlap import SearchAhead, overlap_enabled

from .conftest import make_tiny_clip


def _scores(order):
    for t in order:
        yield t, np.full((2, 3, 4), t, np.float32)


def test_frames_can_be_taken_in_any_order():
    store: dict = {}
    store_like = type("S", (), {"__setitem__": lambda s, k, v: store.__setitem__(k, v),
                                "pop": lambda s, k: store.pop(k)})()
    with SearchAhead(lambda: _scores([3, 4, 2, 1, 0]), store_like) as ahead:
        got = [int(ahead.take(t)[0, 0, 0]) for t in range(5)]
    assert got == [0, 1, 2, 3, 4] and not store


def test_errors_surface_on_the_callers_thread():
    def run():
        yield 0, np.zeros((1, 1, 1), np.float32)
        raise ValueError("broken frame 1")

    with SearchAhead(run, {}) as ahead:
        assert ahead.take(0).dtype == np.float16
        with pytest.raises(ValueError, match="broken frame 1"):
            ahead.take(1)


def test_a_missing_frame_is_an_error_not_a_hang():
    with SearchAhead(lambda: _scores([0]), {}) as ahead:
        with pytest.raises(RuntimeError, match="frame 5"):
            ahead.take(5)


def test_stop_ends_the_worker_early():
    started = threading.Event()

    def endless():
        t = 0
        while True:
            started.set()
            yield t, np.zeros((1, 1, 1), np.float32)
            t += 1

    ahead = SearchAhead(endless, {})
    started.wait(5)
    ahead.stop()
    assert not ahead._thread.is_alive()


def test_overlap_switch(monkeypatch):
    monkeypatch.setenv("PML_RT_OVERLAP", "0")
    assert not overlap_enabled()
    monkeypatch.setenv("PML_RT_OVERLAP", "yes")
    with pytest.raises(ValueError, match="PML_RT_OVERLAP"):
        overlap_enabled()


@pytest.mark.parametrize("frame", [0, 3])
def test_same_masks_with_and_without_overlap(segmenter, monkeypatch, frame):
    clip, truth = make_tiny_clip(frames=6, h=64, w=96)
    video = segmenter.embed(clip, progress=False)
    out = {}
    for flag in ("0", "1"):
        monkeypatch.setenv("PML_RT_OVERLAP", flag)
        out[flag] = video.propagate(truth[frame], frame=frame)
        out[flag + "k"] = video.propagate_keyframes({0: truth[0], 5: truth[5]})
    np.testing.assert_array_equal(out["0"], out["1"])
    np.testing.assert_array_equal(out["0k"], out["1k"])
    assert (out["1"] == truth).mean() > 0.9


def test_stopping_early_leaves_no_worker(segmenter, monkeypatch):
    monkeypatch.setenv("PML_RT_OVERLAP", "1")
    clip, truth = make_tiny_clip(frames=6)
    video = segmenter.embed(clip, progress=False)
    it = video.propagate_iter(truth[0])
    next(it)
    next(it)
    it.close()  # the caller stops reading: the search thread is stopped and joined
    assert not [t for t in threading.enumerate() if t.name == "pml-rt-search"]
