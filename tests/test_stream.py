"""Live mode: Segmenter.stream on any iterable, bounded pool, rate report; pml-rt segment --stream."""

from __future__ import annotations

import io
import subprocess
import sys

import numpy as np
import pytest

from pml_rt import InputError
from pml_rt.cli import main
from pml_rt.io import read_mask
from pml_rt.stream import parse_size, read_raw_frames

from .conftest import make_tiny_clip


@pytest.mark.parametrize("options", [{}, {"recent_frames": 0, "online_adaptation": False},
                                     {"upsample": "joint-bilateral", "k": 3}])
def test_stream_equals_propagate_from_the_first_frame(segmenter, options):
    frames, truth = make_tiny_clip(frames=5, h=48, w=64)
    want = segmenter.embed(frames, progress=False).propagate(truth[0], **options)
    got = np.stack(list(segmenter.stream((f for f in frames), truth[0], **options)))
    np.testing.assert_array_equal(got, want)


def test_masks_come_as_frames_arrive(segmenter):
    frames, truth = make_tiny_clip(frames=4, h=32, w=48)
    pulled = []

    def camera():
        for i, f in enumerate(frames):
            pulled.append(i)
            yield f

    live = segmenter.stream(camera(), truth[0])
    assert pulled == []  # nothing runs before the first mask is asked for
    first = next(live)
    assert pulled == [0] and (first == truth[0]).all()
    next(live)
    assert pulled == [0, 1] and live.stats.frames == 2
    assert len(list(live)) == 2 and live.object_ids == [1, 2]


def test_pool_stays_bounded_on_a_long_stream(segmenter):
    frames, truth = make_tiny_clip(frames=4, h=32, w=48)
    many = (frames[i % 4] for i in range(24))
    live = segmenter.stream(many, truth[0], max_pool=30, recent_frames=2)
    masks = list(live)
    assert len(masks) == 24 and all(m.shape == (32, 48) and m.dtype == np.uint8 for m in masks)
    cells = 4 * 6  # the first frame's pool: every object cell, background on a grid; at most all cells
    assert live.stats.max_pool_size <= cells + 30 + 30 // 4


def test_stats_report_the_rate_against_the_input(segmenter):
    from pml_rt.io import open_video

    frames, truth = make_tiny_clip(frames=3, h=32, w=48)
    live = segmenter.stream(open_video(frames, fps=10), truth[0])
    list(live)
    st = live.stats
    assert st.input_fps == 10 and st.frames == 3 and st.rate > 0 and st.busy > 0
    assert "frames/s" in st.summary() and ("keeping up" in st.summary() or "falling behind" in st.summary())
    assert segmenter.stream(iter(frames), truth[0], input_fps=50).stats.input_fps == 50


def test_stream_errors_name_the_frame(segmenter):
    frames, truth = make_tiny_clip(frames=3, h=32, w=48)
    with pytest.raises(InputError, match="no frames"):
        next(segmenter.stream(iter([]), truth[0]))
    with pytest.raises(InputError, match="size"):
        next(segmenter.stream(iter(frames), truth[0][:16]))
    live = segmenter.stream(iter([frames[0], frames[1], frames[2][:16]]), truth[0])
    next(live), next(live)
    with pytest.raises(InputError, match="stream frame 2.*expected \\(32, 48\\)"):
        next(live)
    with pytest.raises(InputError, match="stream frame 0.*uint8"):
        next(segmenter.stream(iter([frames[0].astype(np.float32)]), truth[0]))
    with pytest.raises(InputError, match="max_pool"):
        segmenter.stream(iter(frames), truth[0], max_pool=-1)
    with pytest.raises(InputError, match="input_fps"):
        segmenter.stream(iter(frames), truth[0], input_fps=0)


def test_raw_frames_from_a_pipe():
    frames, _ = make_tiny_clip(frames=3, h=8, w=16)
    data = frames.tobytes()
    got = list(read_raw_frames(io.BytesIO(data), (8, 16)))
    np.testing.assert_array_equal(np.stack(got), frames)
    assert list(read_raw_frames(io.BytesIO(b""), (8, 16))) == []
    it = read_raw_frames(io.BytesIO(data[:-5]), (8, 16), name="stdin")
    assert len([next(it), next(it)]) == 2
    with pytest.raises(InputError, match="stdin ended inside frame 2"):
        next(it)
    assert parse_size("854x480") == (480, 854)
    with pytest.raises(InputError, match="WIDTHxHEIGHT"):
        parse_size("854by480")


def _stdin(monkeypatch, data: bytes) -> None:
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(data)))


def test_cli_stream_from_stdin_writes_masks(segmenter, tmp_path, monkeypatch, capsys):
    from PIL import Image

    frames, truth = make_tiny_clip(frames=4, h=32, w=48)
    Image.fromarray(truth[0]).save(tmp_path / "m.png")
    _stdin(monkeypatch, frames.tobytes())
    assert main(["-q", "segment", "-", "--stream", "48x32", "--backend", "onnxruntime",
                 "--mask", str(tmp_path / "m.png"), "--out", str(tmp_path / "o")]) == 0
    out = capsys.readouterr().out
    assert "wrote 4 masks" in out and "frames/s" in out
    want = segmenter.embed(frames, progress=False).propagate(truth[0])
    got = np.stack([read_mask(tmp_path / "o" / f"{i:05d}.png", allow_empty=True) for i in range(4)])
    np.testing.assert_array_equal(got, want)


def test_cli_stream_errors_are_one_line(tmp_path, monkeypatch, capsys):
    from PIL import Image

    frames, truth = make_tiny_clip(frames=3, h=32, w=48)
    Image.fromarray(truth[0]).save(tmp_path / "m.png")
    base = ["-q", "segment", "-", "--backend", "onnxruntime", "--mask", str(tmp_path / "m.png"),
            "--out", str(tmp_path / "o")]
    cases = [(["--stream", "48x32"], frames.tobytes()[:-7], "ended inside frame 2"),
             (["--stream", "48x32"], b"", "no frames"),
             (["--stream", "64x32"], frames.tobytes(), "size"),  # 3 frames of 48x32 read as 64x32: mask misfits
             (["--stream"], frames.tobytes(), "WIDTHxHEIGHT"),
             ([], frames.tobytes(), "--stream")]
    for extra, data, message in cases:
        _stdin(monkeypatch, data)
        assert main(base + extra) == 2, extra
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and message in err[0], (extra, err)


def test_cli_stream_through_a_real_pipe(tmp_path):
    from PIL import Image

    frames, truth = make_tiny_clip(frames=3, h=32, w=48)
    Image.fromarray(truth[0]).save(tmp_path / "m.png")
    r = subprocess.run([sys.executable, "-m", "pml_rt.cli", "-q", "segment", "-", "--stream", "48x32", "--fps", "25",
                        "--backend", "onnxruntime", "--mask", str(tmp_path / "m.png"), "--out", str(tmp_path / "o")],
                       input=frames.tobytes(), capture_output=True)
    assert r.returncode == 0, r.stderr
    assert sorted(p.name for p in (tmp_path / "o").iterdir()) == ["00000.png", "00001.png", "00002.png"]


def test_cli_stream_from_a_video_file(tmp_path, capsys):
    from PIL import Image

    from .test_cache import write_mp4

    frames, truth = make_tiny_clip(frames=3, h=32, w=48)
    write_mp4(tmp_path / "v.mp4", frames)
    Image.fromarray(truth[0]).save(tmp_path / "m.png")
    assert main(["-q", "segment", str(tmp_path / "v.mp4"), "--stream", "--backend", "onnxruntime",
                 "--mask", str(tmp_path / "m.png"), "--out", str(tmp_path / "o")]) == 0
    assert len(list((tmp_path / "o").iterdir())) == 3 and "input 25 frames/s" in capsys.readouterr().out
