"""Tests of ``pml-rt batch``: manifests, the ledger, and runs on a local Ray (2 CPUs) with tiny videos.

Ray starts once for the module (about 10 s); each run starts its workers (a few seconds).
Tests that need Ray skip, saying so, where it is not installed.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from pml_rt._optional import available
from pml_rt.batch_ledger import LEDGER_NAME, Ledger, hash_video, temp_name
from pml_rt.batch_manifest import BatchItem, read_manifest
from pml_rt.batch_worker import CRASH_ONCE_ENV, BatchWorker, read_clicks
from pml_rt.errors import InputError, MissingDependencyError, StateError
from pml_rt.io import read_mask, write_palette_png

HAVE_RAY, WHY_NO_RAY = available("ray")
needs_ray = pytest.mark.skipif(not HAVE_RAY, reason=f"ray is not installed ({WHY_NO_RAY}); pip install 'pml-rt[ray]'")
HAVE_SESSION, WHY_NO_SESSION = available("pml_rt.session")

H, W, T = 48, 64, 4


def _make_video(folder: Path, seed: int, frames: int = T) -> Path:
    """A frame folder: a textured background and a red square moving right 2 px per frame."""
    folder.mkdir(parents=True)
    y, x = np.mgrid[0:H, 0:W]
    for t in range(frames):
        f = np.empty((H, W, 3), dtype=np.uint8)
        f[..., 0] = (x * 3 + 7 * seed) % 256
        f[..., 1] = (y * 4 + 11 * seed) % 256
        f[..., 2] = 90
        f[12:30, 10 + 2 * t:28 + 2 * t] = (230, 30, 30)
        Image.fromarray(f).save(folder / f"{t:05d}.png")
    return folder


def _make_mask(path: Path, frame: int = 0) -> Path:
    m = np.zeros((H, W), dtype=np.uint8)
    m[12:30, 10 + 2 * frame:28 + 2 * frame] = 1
    m[36:44, 40:56] = 2
    write_palette_png(path, m)
    return path


@pytest.fixture()
def dataset(tmp_path: Path) -> tuple[Path, list[tuple[str, Path, Path, int]]]:
    """Three tiny videos with masks (one on frame 1) and a CSV manifest listing them."""
    rows = []
    for i, frame in enumerate((0, 0, 1)):
        v = _make_video(tmp_path / "data" / f"clip{i}", seed=i)
        m = _make_mask(tmp_path / "data" / f"clip{i}_mask.png", frame)
        rows.append((f"clip{i}", v, m, frame))
    manifest = tmp_path / "data" / "manifest.csv"
    manifest.write_text("video,mask,mask_frame\n" + "".join(f"{v.name},{m.name},{f}\n" for _, v, m, f in rows))
    return manifest, rows


@pytest.fixture(scope="module")
def ray_local():
    """One local Ray for the module: 2 CPUs like this machine, no dashboard."""
    if not HAVE_RAY:
        pytest.skip(f"ray is not installed ({WHY_NO_RAY}); pip install 'pml-rt[ray]'")
    import ray

    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, logging_level="WARNING")
    yield ray
    ray.shutdown()


def _masks(folder: Path) -> dict[str, np.ndarray]:
    return {p.name: read_mask(p, allow_empty=True) for p in sorted(folder.glob("*.png"))}


def _ledger(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / LEDGER_NAME).read_text().splitlines() if line.strip()]


# --- manifests (no Ray) ----------------------------------------------------------------------

def test_manifest_csv_and_jsonl_give_the_same_items(tmp_path: Path) -> None:
    (tmp_path / "a.csv").write_text("id,video,mask,mask_frame\n,v/bear,m.png,2\nx1,/abs/clip.mp4,m.png,\n"
                                    "\n,other/bear/,m2.png,0\n")
    (tmp_path / "a.jsonl").write_text('{"video": "v/bear", "mask": "m.png", "mask_frame": 2}\n'
                                      '{"id": "x1", "video": "/abs/clip.mp4", "mask": "m.png"}\n# note\n'
                                      '{"video": "other/bear/", "mask": "m2.png", "mask_frame": 0}\n')
    a = read_manifest(tmp_path / "a.csv")
    b = read_manifest(tmp_path / "a.jsonl")
    assert [(i.id, i.video, i.mask, i.mask_frame) for i in a] == [(i.id, i.video, i.mask, i.mask_frame) for i in b]
    assert [i.id for i in a] == ["bear", "x1", "bear-2"]  # derived ids made unique
    assert a[0].video == str(tmp_path / "v" / "bear") and a[1].video == "/abs/clip.mp4"
    assert a[0].mask_frame == 2 and a[1].mask_frame == 0


def test_manifest_clicks_rows_and_derived_ids_avoid_explicit_ones(tmp_path: Path) -> None:
    (tmp_path / "m.jsonl").write_text('{"video": "clip.mp4", "clicks": "c.json"}\n'
                                      '{"id": "clip", "video": "b.mp4", "mask": "m.png"}\n')
    items = read_manifest(tmp_path / "m.jsonl")
    assert [i.id for i in items] == ["clip-2", "clip"]
    assert items[0].clicks == str(tmp_path / "c.json") and items[0].mask is None


@pytest.mark.parametrize("text, expected", [
    ("video,mask\n", "no rows"),
    ("video,mask,frame\nv,m.png,0\n", "line 1: unknown column(s) 'frame'"),
    ("mask\nm.png\n", "line 1: no 'video' column"),
    ("video,mask,mask_frame\nv,m.png,0\nw,,\n", "line 3: expected a 'mask' (with 'mask_frame') or a 'clicks' file, got neither"),
    ("video,mask,clicks\nv,m.png,c.json\n", "line 2: expected a 'mask' (with 'mask_frame') or a 'clicks' file, got both"),
    ("video,mask,mask_frame\nv,m.png,-1\n", "line 2: 'mask_frame' is '-1'"),
    ("video,mask,mask_frame\nv,m.png,first\n", "line 2: 'mask_frame' is 'first'"),
    ("id,video,mask\na,v,m.png\na,w,m.png\n", "line 3: id 'a' is used again (first at line 2)"),
    ("id,video,mask\n../up,v,m.png\n", "line 2: id '../up' cannot be a folder name"),
    ("id,video,mask\nledger.jsonl,v,m.png\n", "reserved"),
    ("video,mask\ns3://bucket/v.mp4,m.png\n", "line 2: 'video' is a URL"),
    ("video,mask\nv,m.png,extra\n", "line 2: more fields"),
])
def test_manifest_errors_name_file_line_and_expectation(tmp_path: Path, text: str, expected: str) -> None:
    p = tmp_path / "bad.csv"
    p.write_text(text)
    with pytest.raises(InputError, match="bad.csv") as err:
        read_manifest(p)
    assert expected in str(err.value)


def test_manifest_jsonl_errors(tmp_path: Path) -> None:
    p = tmp_path / "bad.jsonl"
    p.write_text('{"video": "v", "mask": "m.png"}\n{"video": "v2", "mask": }\n')
    with pytest.raises(InputError, match=r"bad.jsonl' line 2: not valid JSON"):
        read_manifest(p)
    p.write_text('{"video": "v", "mask": "m.png", "mask_frame": 1.5}\n')
    with pytest.raises(InputError, match="line 1: 'mask_frame' is 1.5"):
        read_manifest(p)
    with pytest.raises(InputError, match="does not exist"):
        read_manifest(tmp_path / "absent.csv")


# --- ledger and hashing (no Ray) -------------------------------------------------------------

def test_hash_video_follows_content_not_path_or_side_files(tmp_path: Path) -> None:
    a = _make_video(tmp_path / "a", seed=0)
    b = _make_video(tmp_path / "b", seed=0)
    h = hash_video(a)
    assert hash_video(b) == h  # same frames elsewhere: same hash
    (a / "notes.txt").write_text("not a frame")
    (a / ".thumb.png").write_bytes(b"x")
    assert hash_video(a) == h
    _make_mask(a / "00003.png")  # a frame's content changes
    assert hash_video(a) != h
    with pytest.raises(InputError, match="does not exist"):
        hash_video(tmp_path / "absent.mp4")


def test_ledger_is_locked_survives_torn_lines_and_cleans_temporaries(tmp_path: Path) -> None:
    out = tmp_path / "out"
    with Ledger(out) as led:
        led.append({"id": "a", "status": "done", "key": "k1"})
        with pytest.raises(StateError, match="another pml-rt batch"):
            Ledger(out).open()
    with open(out / LEDGER_NAME, "a") as f:
        f.write('{"id": "b", "status": "do')  # a driver killed mid-write
    staging = temp_name(out / "a", "staging")
    staging.mkdir()
    (out / "a").mkdir()
    with pytest.warns(UserWarning, match="1 unreadable line"):
        led = Ledger(out)
        led.open()
    assert not staging.exists()
    assert led.done_key("a") == "k1" and led.last("b") is None
    led.append({"id": "b", "status": "failed", "key": None, "error": "x"})
    led.close()
    lines = (out / LEDGER_NAME).read_text().splitlines()
    assert lines[1] == '{"id": "b", "status": "do'  # the torn line is ended, so the next row parses
    assert [json.loads(line)["id"] for line in (lines[0], lines[2])] == ["a", "b"]
    (out / "a").rmdir()
    with pytest.warns(UserWarning), Ledger(out) as led:
        assert led.done_key("a") is None  # output deleted by hand: redo


def test_read_clicks_checks_entries(tmp_path: Path) -> None:
    p = tmp_path / "c.json"
    p.write_text(json.dumps({"frame": 0, "points": [[3, 4]], "labels": [1]}))
    assert read_clicks(str(p)) == [{"frame": 0, "points": [[3, 4]], "labels": [1]}]
    p.write_text(json.dumps([{"frame": 0, "points": [[3, 4]], "labels": []}]))
    with pytest.raises(InputError, match="entry 0: expected"):
        read_clicks(str(p))


def test_without_ray_the_command_says_how_to_install(tmp_path: Path, monkeypatch, capsys) -> None:
    from pml_rt import batch, cli

    monkeypatch.setitem(sys.modules, "ray", None)  # import ray -> ImportError
    with pytest.raises(MissingDependencyError, match=r"pip install 'pml-rt\[ray\]'"):
        batch.run_batch([], tmp_path / "out")
    assert cli.main(["batch", str(tmp_path / "m.csv"), "--out", str(tmp_path / "out")]) == 2
    assert "pip install 'pml-rt[ray]'" in capsys.readouterr().err


# --- runs on Ray ---------------------------------------------------------------------------------

@needs_ray
def test_batch_equals_segment_and_rerun_does_nothing(ray_local, dataset, tmp_path: Path) -> None:
    from pml_rt.batch import run_batch
    from pml_rt.cli import main

    manifest, rows = dataset
    out = tmp_path / "out"
    report = run_batch(manifest, out, workers=2, progress=False)
    assert (report.done, report.failed, report.skipped, report.exit_code) == (3, 0, 0, 0)
    assert report.frames == 3 * T
    for vid, video, mask, frame in rows:  # the same files as `pml-rt segment` on each video alone
        alone = tmp_path / "alone" / vid
        assert main(["-q", "segment", str(video), "--mask", str(mask), "--mask-frame", str(frame),
                     "--out", str(alone)]) == 0
        got, want = _masks(out / vid), _masks(alone)
        assert list(got) == list(want) and len(got) == T
        for name in want:
            np.testing.assert_array_equal(got[name], want[name], err_msg=f"{vid}/{name}")
    assert sorted(p.name for p in out.iterdir()) == [".ledger.lock", "clip0", "clip1", "clip2", LEDGER_NAME]

    ledger_before = (out / LEDGER_NAME).read_bytes()
    mtimes = {p: p.stat().st_mtime_ns for p in out.rglob("*.png")}
    again = run_batch(manifest, out, workers=2, progress=False)
    assert (again.done, again.failed, again.skipped, again.frames) == (0, 0, 3, 0)
    assert (out / LEDGER_NAME).read_bytes() == ledger_before  # nothing appended
    assert {p: p.stat().st_mtime_ns for p in out.rglob("*.png")} == mtimes  # nothing rewritten

    # A changed mask redoes that video only; its old folder is swapped out whole.
    (out / "clip1" / "stale.png").write_bytes(b"from an older run")
    m = read_mask(rows[1][2])
    m[0:4, 0:4] = 3
    write_palette_png(rows[1][2], m)
    third = run_batch(manifest, out, workers=1, progress=False)
    assert [(r["id"], r["status"]) for r in third.rows] == [("clip0", "skipped"), ("clip1", "done"),
                                                            ("clip2", "skipped")]
    assert not (out / "clip1" / "stale.png").exists()
    assert 3 in np.unique(_masks(out / "clip1")["00000.png"])


@needs_ray
def test_failures_are_recorded_and_redone_once_fixed(ray_local, dataset, tmp_path: Path, capsys) -> None:
    from pml_rt.cli import main

    manifest, rows = dataset
    data = manifest.parent
    (data / "broken.mp4").write_bytes(b"not a video")
    write_palette_png(data / "small_mask.png", np.ones((8, 8), dtype=np.uint8))
    manifest.write_text(manifest.read_text() + "broken.mp4,clip0_mask.png,0\nclip1,small_mask.png,0\n"
                        "clip2,missing_mask.png,0\n")
    out = tmp_path / "out"
    assert main(["-q", "batch", str(manifest), "--out", str(out), "--workers", "2"]) == 1
    printed = capsys.readouterr().out
    assert "done          3" in printed and "failed        3" in printed and "frames/s overall" in printed
    failed = {r["id"]: r["error"] for r in _ledger(out) if r["status"] == "failed"}
    assert set(failed) == {"broken", "clip1-2", "clip2-2"}
    assert "broken.mp4' cannot be opened" in failed["broken"]
    assert "(H, W) = (8, 8)" in failed["clip1-2"]
    assert "missing_mask.png' does not exist" in failed["clip2-2"]
    assert all("\n" not in e for e in failed.values())
    assert not (out / "broken").exists() and not (out / "clip1-2").exists()  # nothing half written

    _make_mask(data / "missing_mask.png", frame=0)  # fix one: a rerun redoes the failed only
    assert main(["-q", "batch", str(manifest), "--out", str(out)]) == 1
    printed = capsys.readouterr().out
    assert "done          1" in printed and "failed        2" in printed and "skipped       3" in printed
    assert len(_masks(out / "clip2-2")) == T


@needs_ray
def test_killed_worker_is_restarted_and_its_video_retried(ray_local, dataset, tmp_path: Path,
                                                         monkeypatch) -> None:
    from pml_rt.batch import run_batch

    manifest, rows = dataset
    hooks = tmp_path / "crash"
    hooks.mkdir()
    (hooks / "clip0").write_text("2")  # the worker dies on clip0's first 2 attempts: past max_retries=1
    (hooks / "clip1").touch()  # ... and on clip1's first attempt only: retried, then done
    monkeypatch.setenv(CRASH_ONCE_ENV, str(hooks))
    out = tmp_path / "out"
    report = run_batch(manifest, out, workers=1, progress=False, max_retries=1)
    assert list(hooks.iterdir()) == []  # every crash happened
    assert [(r["id"], r["status"]) for r in report.rows] == [("clip0", "failed"), ("clip1", "done"),
                                                            ("clip2", "done")]
    assert report.rows[0]["error"].startswith("worker process died 2 time(s) on this video")
    assert report.exit_code == 1
    assert report.rows[1]["worker"] == report.rows[2]["worker"]  # the restarted process went on
    assert [r["status"] for r in _ledger(out)] == ["failed", "done", "done"]  # one row per video
    assert len(_masks(out / "clip1")) == T
    assert not (out / "clip0").exists()
    assert not [p for p in out.iterdir() if p.name.startswith(".") and p.name != ".ledger.lock"]


@needs_ray
def test_workers_that_cannot_start_stop_the_batch_with_the_cause(ray_local, dataset, tmp_path: Path) -> None:
    from pml_rt.batch import BatchOptions, run_batch
    from pml_rt.errors import BackendError

    manifest, rows = dataset
    with pytest.raises(BackendError, match="no batch worker could start: .*unknown backend 'bogus'"):
        run_batch(manifest, tmp_path / "out", workers=1, progress=False, options=BatchOptions(backend="bogus"))
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == [".ledger.lock", LEDGER_NAME]
    assert (tmp_path / "out" / LEDGER_NAME).read_text() == ""


@needs_ray
@pytest.mark.skipif(not HAVE_SESSION, reason=f"pml_rt.session is not there yet ({WHY_NO_SESSION})")
def test_clicks_rows_equal_the_session_api(ray_local, tmp_path: Path) -> None:
    from pml_rt.batch import BatchOptions, run_batch
    from pml_rt.segmenter import Segmenter

    video = _make_video(tmp_path / "v", seed=3)
    clicks = {"frame": 0, "points": [[18, 20], [50, 6]], "labels": [1, 0]}  # the square; background
    (tmp_path / "c.json").write_text(json.dumps([clicks]))
    (tmp_path / "m.jsonl").write_text(json.dumps({"video": "v", "clicks": "c.json"}) + "\n")
    report = run_batch(tmp_path / "m.jsonl", tmp_path / "out", workers=1, progress=False)
    assert report.done == 1, report.rows
    session = Segmenter().embed(video, progress=False).session(upsample=BatchOptions().upsample)
    session.add_clicks(0, clicks["points"], clicks["labels"])
    want = np.asarray(session.masks())
    got = _masks(tmp_path / "out" / "v")
    np.testing.assert_array_equal(np.stack(list(got.values())), want)
    assert set(np.unique(want)) == {0, 1}


def test_worker_in_process_skips_by_key(dataset, tmp_path: Path) -> None:
    """The worker class without Ray: the key decides skipping; a bad row returns a failed row."""
    manifest, rows = dataset
    items = read_manifest(manifest)
    opts = {"model": "mnv2-os8-untrained", "backend": "auto", "upsample": "bilinear", "k": 5,
            "online_adaptation": True, "recent_frames": None}
    w = BatchWorker(str(tmp_path / "out"), opts, threads=1, has_gpu=False)
    row = w.process(items[0])
    assert row["status"] == "done" and row["frames"] == T
    assert w.process(items[0], done_key=row["key"])["status"] == "skipped"
    assert w.process(items[0], done_key="other")["status"] == "done"
    bad = BatchItem(id="bad", video=str(tmp_path / "nope"), mask=items[0].mask)
    failed = w.process(bad)
    assert failed["status"] == "failed" and "nope' does not exist" in failed["error"]
    assert os.listdir(tmp_path / "out") == ["clip0"]
