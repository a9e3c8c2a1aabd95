"""The click and scribble robots on synthetic clips (several objects, known embeddings)."""

from __future__ import annotations

import numpy as np
import pytest

from pml_rt.errors import InputError
from pml_rt.robots import (
    ClickRun,
    add_session_switches,
    click_robot,
    click_then_propagate,
    davis_videos,
    format_latency,
    measure_latency,
    number_or_none,
    robot_clicks,
    scribble_robot,
    session_switches,
    skeleton_path,
    summarize_click_runs,
    synthetic_video,
)


@pytest.fixture(scope="module")
def clip():
    return synthetic_video(6, (64, 96), 3, seed=3, square=24, noise=0.3)


def test_click_robot_follows_the_protocol(clip):
    video, gt = clip
    grid = (0.05, 0.5, 1.0, 2.0)
    # The plain kNN rule: on this 8 x 12-cell clip of 6 frames the objects are 3 cells wide,
    # as wide as the session's smoothing box, and few frames carry the temporal spreading (both
    # are measured on DAVIS instead).
    plain = {"smoothing": None, "temporal": None}
    run = click_robot(video, gt, seed=1, clicks_per_frame=grid, sequence="synth", session_options=plain)
    assert isinstance(run, ClickRun) and run.objects == [1, 2, 3]
    # at least one click per object and one on the background come first
    assert run.clicks.tolist() == [4, 4, 6, 12]
    assert len(run.click_seconds) == 12 or run.exhausted
    assert run.j.shape == (4,) and np.all((run.j >= 0) & (run.j <= 1))
    assert run.j[-1] >= run.j[0] and run.j[-1] > 0.6
    again = click_robot(video, gt, seed=1, clicks_per_frame=grid, sequence="synth", session_options=plain)
    assert np.array_equal(again.j, run.j)  # a seed fixes the run


def test_click_robot_stops_when_nothing_is_wrong():
    video, _ = synthetic_video(2, (32, 32), 1, seed=0, square=16)
    gt = np.ones((2, 32, 32), np.uint8)  # all object: one click gets everything right
    run = click_robot(video, gt, clicks_per_frame=(0.5, 5.0))
    assert run.exhausted and run.clicks.tolist() == [1, 10] and run.j.tolist() == [1.0, 1.0]
    assert len(run.click_seconds) == 1


def test_summary_over_seeds_and_sequences(clip):
    video, gt = clip
    runs = [click_robot(video, gt, seed=s, clicks_per_frame=(0.5, 1.0), sequence=q) for s in (0, 1) for q in "ab"]
    out = summarize_click_runs(runs)
    assert out["j_mean"].shape == (2,) and out["j_std"].shape == (2,)
    assert set(out["per_seed"]) == {0, 1} and set(out["per_sequence"]) == {"a", "b"}
    with pytest.raises(InputError):
        summarize_click_runs([])


def test_click_robot_checks_the_ground_truth(clip):
    video, gt = clip
    with pytest.raises(InputError, match="expected \\(6, 64, 96\\)"):
        click_robot(video, gt[:2])
    with pytest.raises(InputError, match="no object"):
        click_robot(video, np.zeros_like(gt))


def _record_clicked_frames(video, monkeypatch) -> list[int]:
    """The frame of every add_clicks call made on the sessions of ``video`` from now on."""
    clicked: list[int] = []
    real_session = video.session

    def session(**kw):
        s = real_session(**kw)
        add = s.add_clicks

        def add_clicks(frame, points, labels, **k):
            clicked.append(frame)
            return add(frame, points, labels, **k)

        s.add_clicks = add_clicks
        return s

    monkeypatch.setattr(video, "session", session)
    return clicked


def test_click_then_propagate_clicks_one_frame_and_scores_every_frame(clip, monkeypatch):
    video, gt = clip
    grid = (0.5, 1.0, 2.0)
    frames_clicked = _record_clicked_frames(video, monkeypatch)
    propagated = []
    real_propagate = video.propagate

    def propagate(mask, frame=0, **kw):
        propagated.append(frame)
        return real_propagate(mask, frame=frame, **kw)

    real_keyframes = video.propagate_keyframes

    def propagate_keyframes(masks, **kw):
        if len(masks) == 1:  # what a one-frame propagation is
            (f, m), = masks.items()
            return propagate(m, frame=f, **kw)
        propagated.append(tuple(sorted(masks)))
        return real_keyframes(masks, **kw)

    monkeypatch.setattr(video, "propagate", propagate)
    monkeypatch.setattr(video, "propagate_keyframes", propagate_keyframes)
    run = click_then_propagate(video, gt, seed=2, frames=3, clicks_per_frame=grid, sequence="synth",
                               session_options={"smoothing": None})
    assert set(frames_clicked) == {3}  # every click on the one frame
    assert run.clicks.tolist() == [4, 6, 12] and run.objects == [1, 2, 3]
    assert set(propagated) == {3} and 1 <= len(propagated) <= 3  # one propagation per recorded point
    assert np.all((run.j >= 0) & (run.j <= 1)) and run.j[-1] > 0.5
    again = click_then_propagate(video, gt, seed=2, frames=3, clicks_per_frame=grid, sequence="synth",
                                 session_options={"smoothing": None})
    assert np.array_equal(again.j, run.j)


def test_click_then_propagate_scores_the_propagated_masks_against_the_truth():
    video, gt = synthetic_video(3, (32, 32), 1, seed=0, square=16)
    full = np.ones((3, 32, 32), np.uint8)  # all object: the first click makes the frame perfect
    run = click_then_propagate(video, full, clicks_per_frame=(1.0, 4.0))
    assert run.exhausted and run.j.tolist() == [1.0, 1.0]
    with pytest.raises(InputError, match="no object on frame 1"):
        click_then_propagate(video, np.zeros_like(gt), frames=1)
    with pytest.raises(InputError, match="out of range"):
        click_then_propagate(video, gt, frames=7)


def test_click_then_propagate_on_two_frames(clip, monkeypatch):
    video, gt = clip
    clicked = _record_clicked_frames(video, monkeypatch)
    run = click_then_propagate(video, gt, seed=0, frames=(5, 0), clicks_per_frame=(1.0, 2.0), sequence="synth",
                               session_options={"smoothing": None})
    assert set(clicked) == {0, 5} and clicked[:4] == [0, 0, 0, 0]  # first each object and the background, per frame
    assert run.clicks.tolist() == [8, 12] and len(clicked) == 12 or run.exhausted
    assert np.all((run.j >= 0) & (run.j <= 1))


def test_skeleton_path_runs_inside_the_region():
    region = np.zeros((40, 60), bool)
    region[10:30, 5:55] = True
    path = skeleton_path(region)
    assert path.shape[1] == 2 and len(path) > 20
    assert region[path[:, 1], path[:, 0]].all()
    assert np.ptp(path[:, 0]) > 25  # along the long side
    steps = np.abs(np.diff(path, axis=0)).max(axis=1)
    assert (steps == 1).all()  # an ordered, connected line
    assert skeleton_path(np.zeros((5, 5), bool)) is None
    dot = np.zeros((5, 5), bool)
    dot[2, 3] = True
    assert skeleton_path(dot).tolist() == [[3, 2]]


def test_scribble_robot_improves_over_rounds(clip):
    video, gt = clip
    run = scribble_robot(video, gt, rounds=4, sequence="synth")
    assert run.jf.shape == (4,) and run.initial == "robot"
    # round 1 scribbles only the objects (nothing is predicted yet), so the background
    # comes with round 2: J&F must rise clearly from there
    assert run.jf[-1] > run.jf[0] + 0.1
    assert 0 <= run.auc <= 1
    assert all(0 <= f < 6 for f in run.frames) and run.scribbles[0] == 3  # round 1: one per object
    np.testing.assert_allclose(run.jf, (run.j + run.f) / 2)


def test_scribble_robot_starts_from_a_davis_file(clip):
    video, gt = clip
    ys, xs = np.nonzero(gt[2] == 1)
    h, w = gt.shape[1:]
    initial = {"sequence": "synth", "scribbles": [[], [], [
        {"path": [[xs.min() / (w - 1), ys.mean() / (h - 1)], [xs.max() / (w - 1), ys.mean() / (h - 1)]],
         "object_id": 1}]]}
    run = scribble_robot(video, gt, rounds=2, initial=initial)
    assert run.initial == "davis" and run.frames[0] == 2 and run.scribbles[0] == 1


def test_latency_replays_the_robot_clicks(clip):
    video, gt = clip
    clicks = robot_clicks(video, gt, 8, seed=2)
    assert len(clicks) == 8 and [c[3] for c in clicks[:4]] == [1, 2, 3, 0]
    rep = measure_latency(video, clicks, warmup=5)
    assert rep.to_labels.shape == rep.to_mask.shape == rep.to_masks.shape == (3,)
    assert rep.to_mask_first.shape == rep.settle.shape == (3,)
    assert rep.update.shape == (9,) and rep.memory_floor > 0 and rep.recompute > 0
    table = format_latency(rep, {"to_masks": 1.0})
    assert "click -> masks(), full res" in table and "then settle(): every other frame" in table
    with pytest.raises(InputError, match="warmup"):
        measure_latency(video, clicks, warmup=8)


@pytest.mark.data
def test_davis_videos_embed_once_then_read_the_cache(data_root, segmenter, tmp_path):
    root = data_root / "davis2016-dev"
    (seq, video, gt), = davis_videos(root, ["blackswan"], max_frames=2, cache_dir=tmp_path, segmenter=segmenter)
    assert seq == "blackswan" and gt.shape == (2, 480, 854) and video.embeddings.shape[:3] == (2, 60, 107)
    cached = list(tmp_path.glob("*-blackswan-2.npy"))
    assert len(cached) == 1
    (_, again, _), = davis_videos(root, ["blackswan"], max_frames=2, cache_dir=tmp_path)
    assert np.array_equal(again.embeddings, video.embeddings)


def test_number_or_none_reads_benchmark_session_options():
    import argparse

    assert number_or_none("none") is None and number_or_none("NONE") is None
    assert number_or_none("0.9") == 0.9 and number_or_none("-0.1") == -0.1
    with pytest.raises(argparse.ArgumentTypeError, match="expected a number or none, got 'x'"):
        number_or_none("x")


def test_session_switches_pass_on_only_what_the_command_line_gave():
    import argparse

    p = argparse.ArgumentParser()
    add_session_switches(p)
    assert session_switches(p.parse_args([])) == {}  # the session's own defaults
    assert session_switches(p.parse_args(["--temporal", "none", "--background-floor", "0.1"])) == \
        {"temporal": None, "background_floor": 0.1}
    assert session_switches(p.parse_args(["--trust-span", "none"])) == {"trust_span": None}
    assert session_switches(p.parse_args(["--trust-span", "0.5", "--temporal", "0.8"])) == \
        {"temporal": 0.8, "trust_span": 0.5}
