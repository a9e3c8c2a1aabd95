"""The pml-rt command: segment writes masks all-or-nothing; errors are one line and exit 2."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from pml_rt.cli import main
from pml_rt.io import read_mask

from .conftest import make_tiny_clip


@pytest.fixture
def clip_dir(tmp_path):
    clip, truth = make_tiny_clip(frames=4, h=64, w=96)
    d = tmp_path / "frames"
    d.mkdir()
    for i, f in enumerate(clip):
        Image.fromarray(f).save(d / f"f{i:03d}.png")
    Image.fromarray(truth[0] * 100).save(tmp_path / "mask.png")  # 0/100/200 grayscale ids
    return d, tmp_path / "mask.png", truth


def test_segment_writes_palette_pngs(clip_dir, tmp_path, capsys):
    d, mask, truth = clip_dir
    out = tmp_path / "out"
    assert main(["-q", "segment", str(d), "--mask", str(mask), "--out", str(out), "--overlay",
                 str(tmp_path / "o.mp4")]) == 0
    files = sorted(p.name for p in out.iterdir())
    assert files == [f"f{i:03d}.png" for i in range(4)]
    m0 = read_mask(out / "f000.png", allow_empty=True)
    assert set(np.unique(m0)) == {0, 100, 200}
    assert Image.open(out / "f001.png").mode == "P"
    assert (tmp_path / "o.mp4").stat().st_size > 0
    assert "wrote 4 masks" in capsys.readouterr().out


def test_segment_from_masks_on_several_frames(clip_dir, tmp_path, capsys):
    d, mask, truth = clip_dir
    later = tmp_path / "later.png"
    Image.fromarray(truth[3] * 100).save(later)
    out = tmp_path / "out"
    assert main(["-q", "segment", str(d), "--mask", str(mask), "--mask-frame", "0", "--mask", str(later),
                 "--mask-frame", "3", "--out", str(out)]) == 0
    got = np.stack([read_mask(out / f"f{i:03d}.png", allow_empty=True) for i in range(4)])
    np.testing.assert_array_equal(got[3], truth[3] * 100)  # each given mask comes back as given
    np.testing.assert_array_equal(got[0], truth[0] * 100)
    assert set(np.unique(got[1:3])) <= {0, 100, 200}
    assert "wrote 4 masks" in capsys.readouterr().out


@pytest.mark.parametrize("extra, words", [
    (["--mask-frame", "0"], "need as many --mask-frame"),  # two masks, one frame
    (["--mask-frame", "1", "--mask-frame", "1"], "repeat"),
    (["--mask-frame", "0", "--mask-frame", "9"], "out of range"),
    (["--mask-frame", "0", "--mask-frame", "2", "--stream"], "--stream"),
])
def test_segment_several_masks_bad_pairs_one_line(clip_dir, tmp_path, capsys, extra, words):
    d, mask, _ = clip_dir
    out = tmp_path / "out"
    code = main(["-q", "segment", str(d), "--mask", str(mask), "--mask", str(mask), "--out", str(out), *extra])
    err = capsys.readouterr().err
    assert code == 2 and words in err and len(err.strip().splitlines()) == 1
    assert not out.exists()
    code = main(["-q", "segment", str(d), "--mask", str(mask), "--mask-frame", "0", "--mask-frame", "1",
                 "--out", str(out)])
    assert code == 2 and "one --mask per frame" in capsys.readouterr().err


def test_segment_bad_mask_one_line_no_output(clip_dir, tmp_path):
    d, _, _ = clip_dir
    bad = tmp_path / "bad.png"
    Image.fromarray(np.zeros((10, 10), np.uint8)).save(bad)
    out = tmp_path / "out"
    r = subprocess.run([sys.executable, "-m", "pml_rt.cli", "-q", "segment", str(d), "--mask", str(bad),
                        "--out", str(out)], capture_output=True, text=True)
    assert r.returncode == 2
    assert len(r.stderr.strip().splitlines()) == 1 and "bad.png" in r.stderr
    assert "Traceback" not in r.stderr
    assert not out.exists()


def test_segment_missing_video(tmp_path):
    r = subprocess.run([sys.executable, "-m", "pml_rt.cli", "segment", str(tmp_path / "nope.mp4"), "--mask",
                        "m.png", "--out", str(tmp_path / "o")], capture_output=True, text=True)
    assert r.returncode == 2 and "nope.mp4" in r.stderr


def test_info_lists_backends(capsys):
    assert main(["info"]) == 0
    out = capsys.readouterr().out
    assert "onnxruntime" in out and "tensorrt" in out and "default model" in out
    assert "ONNX Runtime thread spinning: off" in out


def test_info_reports_a_bad_spin_setting_in_one_line(monkeypatch, capsys):
    monkeypatch.setenv("PML_RT_ORT_SPIN", "maybe")
    code = main(["info"])
    err = capsys.readouterr().err
    assert code != 0 and "PML_RT_ORT_SPIN must be 0 or 1" in err and "Traceback" not in err


def test_eval_on_fake_davis(tmp_path, capsys):
    clip, truth = make_tiny_clip(frames=4, h=64, w=96)
    root = tmp_path / "davis"
    for sub in ("JPEGImages/480p/toy", "Annotations/480p/toy", "ImageSets"):
        (root / sub).mkdir(parents=True)
    for i in range(4):
        Image.fromarray(clip[i]).save(root / "JPEGImages/480p/toy" / f"{i:05d}.png")
        Image.fromarray((truth[i] > 0).astype(np.uint8) * 255).save(root / "Annotations/480p/toy" / f"{i:05d}.png")
    (root / "ImageSets/val.txt").write_text("toy\n")
    assert main(["-q", "eval", "--davis", str(root), "--split", "val", "--out", str(tmp_path / "ev")]) == 0
    out = capsys.readouterr().out
    assert "toy" in out and "mean" in out
    assert len(list((tmp_path / "ev" / "toy").glob("*.png"))) == 4


def test_large_frames_get_an_input_scale_hint(clip_dir, tmp_path, capsys):
    from pml_rt.cli import large_frame_hint

    assert "--input-scale 0.5" in large_frame_hint((1080, 1920), 1.0)
    assert large_frame_hint((1080, 1920), 0.5) is None
    assert large_frame_hint((480, 854), 1.0) is None
    assert large_frame_hint((720, 1280), 1.0) is None
    # the small test clip gets no hint
    d, mask, _ = clip_dir
    assert main(["-q", "segment", str(d), "--mask", str(mask), "--out", str(tmp_path / "o")]) == 0
    assert "--input-scale" not in capsys.readouterr().err
