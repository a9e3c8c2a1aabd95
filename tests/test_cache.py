"""The on-disk embedding cache: same numbers as in memory, reuse, resume, rebuild of bad entries."""

from __future__ import annotations

import json
import os
import warnings
from pathlib import Path

import numpy as np
import pytest

from pml_rt import Segmenter
from pml_rt import cache as pcache
from pml_rt.backends.base import Backend

from .conftest import make_tiny_clip


def write_mp4(path: Path, frames: np.ndarray, fps: int = 25) -> Path:
    """A small H.264/MPEG-4 file of uint8 (T, H, W, 3) frames (H, W even)."""
    import av

    with av.open(str(path), mode="w") as c:
        codec = "libx264" if "libx264" in av.codecs_available else "mpeg4"
        st = c.add_stream(codec, rate=fps)
        st.height, st.width = frames.shape[1:3]
        st.pix_fmt = "yuv420p"
        if codec == "libx264":
            st.options = {"crf": "18", "preset": "ultrafast"}
        for f in frames:
            for p in st.encode(av.VideoFrame.from_ndarray(f, format="rgb24")):
                c.mux(p)
        for p in st.encode(None):
            c.mux(p)
    return path


class WrapBackend(Backend):
    """The real backend, counting frames; optionally raising or returning NaN at a frame index."""

    name = "wrapped"

    def __init__(self, inner: Backend, fail_at: int | None = None, exc: BaseException | None = None,
                 nan_at: int | None = None, value: float = float("nan")):
        super().__init__(inner.cfg)
        self.inner, self.fail_at, self.exc, self.nan_at, self.value = inner, fail_at, exc, nan_at, value
        self.frames: list[int] = []

    def _activate(self) -> None:
        self.inner.activate()

    def _infer(self, image: np.ndarray, time: np.ndarray) -> np.ndarray:
        idx = [int(round(float(t) / self.cfg.time_scale)) for t in time]
        if self.fail_at is not None and self.fail_at in idx:
            raise self.exc or KeyboardInterrupt()
        self.frames += idx
        out = np.array(self.inner._infer(image, time))
        if self.nan_at is not None and self.nan_at in idx:
            out[idx.index(self.nan_at), 0, 0, 0] = self.value
        return out


def wrapped(segmenter: Segmenter, **kw) -> Segmenter:
    seg = Segmenter(backend="onnxruntime")
    seg.backend = WrapBackend(segmenter.backend, **kw)
    return seg


@pytest.fixture
def clip():
    return make_tiny_clip(frames=5, h=40, w=56)


def test_cached_embeddings_equal_in_memory_and_are_reused(segmenter, clip, tmp_path):
    frames, truth = clip
    plain = segmenter.embed(frames, progress=False)
    seg = wrapped(segmenter)
    first = seg.embed(frames, progress=False, cache_dir=tmp_path)
    assert isinstance(first.embeddings, np.memmap) and first.embeddings.dtype == np.float16
    np.testing.assert_array_equal(first.embeddings, plain.embeddings)
    assert first.meta["cache_hit"] is False and seg.backend.frames == [0, 1, 2, 3, 4]
    again = seg.embed(frames, progress=False, cache_dir=tmp_path)
    assert again.meta["cache_hit"] is True and seg.backend.frames == [0, 1, 2, 3, 4]  # no new inference
    np.testing.assert_array_equal(again.propagate(truth[0]), plain.propagate(truth[0]))


def test_layout_matches_the_documented_format(segmenter, clip, tmp_path):
    frames, _ = clip
    v = segmenter.embed(frames, progress=False, cache=True, cache_dir=tmp_path)
    entry = Path(v.meta["cache"])
    assert entry.parent.parent == tmp_path and entry.name.endswith("-40x56")
    meta = json.loads((entry / "meta.json").read_text())
    t, h, w, d = 5, 5, 7, segmenter.config.d
    assert meta["format"] == "pml-rt-embeddings" and meta["version"] == 1
    assert (meta["frames"], meta["h"], meta["w"], meta["d"], meta["stride"]) == (t, h, w, d, 8)
    assert meta["dtype"] == "float16" and meta["frames_done"] == t and meta["complete"] is True
    assert meta["model"]["name"] == segmenter.config.name and len(meta["model"]["weights_sha256"]) == 64
    assert (entry / "embeddings.f16").stat().st_size == t * h * w * d * 2  # frames x h x w x d x 2 bytes
    raw = np.fromfile(entry / "embeddings.f16", dtype=np.float16).reshape(t, h, w, d)
    np.testing.assert_array_equal(raw, v.embeddings)
    assert (entry / "frames.b2b").stat().st_size == t * 16


def test_interrupted_embed_resumes_at_the_first_missing_frame(segmenter, clip, tmp_path):
    frames, _ = clip
    plain = segmenter.embed(frames, progress=False)
    seg = wrapped(segmenter, fail_at=3)
    with pytest.raises(KeyboardInterrupt):
        seg.embed(frames, progress=False, cache_dir=tmp_path)
    (entry, meta), = pcache.EmbeddingCache(tmp_path).entries()
    assert meta["frames_done"] == 3 and meta["complete"] is False
    seg.backend.fail_at = None
    v = seg.embed(frames, progress=False, cache_dir=tmp_path)
    assert v.meta["resumed_from"] == 3 and seg.backend.frames == [0, 1, 2, 3, 4]  # 3 and 4 embedded once
    np.testing.assert_array_equal(v.embeddings, plain.embeddings)


def test_resume_from_a_video_file(segmenter, tmp_path):
    frames, _ = make_tiny_clip(frames=6, h=48, w=64)
    path = write_mp4(tmp_path / "clip.mp4", frames)
    plain = segmenter.embed(path, progress=False)
    seg = wrapped(segmenter, fail_at=4)
    with pytest.raises(KeyboardInterrupt):
        seg.embed(path, progress=False, cache_dir=tmp_path / "c")
    seg.backend.fail_at = None
    v = seg.embed(str(path), progress=False, cache_dir=tmp_path / "c")
    assert v.meta["resumed_from"] == 4 and seg.backend.frames == [0, 1, 2, 3, 4, 5]
    np.testing.assert_array_equal(v.embeddings, plain.embeddings)


@pytest.mark.parametrize("damage", ["flip-data", "truncate-data", "garbage-meta", "old-version", "flip-digest",
                                    "frames-done-too-high"])
def test_a_damaged_entry_is_rebuilt_with_a_warning(segmenter, clip, tmp_path, damage):
    frames, _ = clip
    plain = segmenter.embed(frames, progress=False)
    seg = wrapped(segmenter)
    entry = Path(seg.embed(frames, progress=False, cache_dir=tmp_path).meta["cache"])
    seg.backend.frames = []
    data, meta_path = entry / "embeddings.f16", entry / "meta.json"
    meta = json.loads(meta_path.read_text())
    if damage == "flip-data":  # frame 4 is always among the frames checked (the last one done)
        with open(data, "r+b") as f:
            f.seek(4 * 5 * 7 * segmenter.config.d * 2 + 100)
            f.write(b"\x12\x34")
    elif damage == "truncate-data":
        os.truncate(data, data.stat().st_size - 1)
    elif damage == "garbage-meta":
        meta_path.write_bytes(b"\x00{not json")
    elif damage == "old-version":
        meta_path.write_text(json.dumps({**meta, "version": 0}))
    elif damage == "flip-digest":
        with open(entry / "frames.b2b", "r+b") as f:
            f.write(b"\xff" * 16)
    elif damage == "frames-done-too-high":
        meta_path.write_text(json.dumps({**meta, "frames_done": 99}))
    with pytest.warns(UserWarning, match="does not check out"):
        v = seg.embed(frames, progress=False, cache_dir=tmp_path)
    assert seg.backend.frames == [0, 1, 2, 3, 4] and v.meta["cache_hit"] is False
    np.testing.assert_array_equal(v.embeddings, plain.embeddings)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert seg.embed(frames, progress=False, cache_dir=tmp_path).meta["cache_hit"] is True


def test_keyed_by_content_not_by_path(segmenter, tmp_path):
    from PIL import Image

    frames, _ = make_tiny_clip(frames=3, h=32, w=48)
    for folder in ("a", "b"):
        (tmp_path / folder).mkdir()
        for i, f in enumerate(frames):
            Image.fromarray(f).save(tmp_path / folder / f"{i:03d}.png")
    c = tmp_path / "cache"
    assert segmenter.embed(tmp_path / "a", progress=False, cache_dir=c).meta["cache_hit"] is False
    assert segmenter.embed(tmp_path / "b", progress=False, cache_dir=c).meta["cache_hit"] is True
    Image.fromarray(frames[0][::-1].copy()).save(tmp_path / "b" / "001.png")  # other content
    v = segmenter.embed(tmp_path / "b", progress=False, cache_dir=c)
    assert v.meta["cache_hit"] is False and len(pcache.EmbeddingCache(c).entries()) == 2


def test_model_change_gives_another_entry(segmenter, clip, tmp_path):
    frames, _ = clip
    a = segmenter.embed(frames, progress=False, cache_dir=tmp_path).meta["cache"]
    b = wrapped(segmenter).embed(frames, progress=False, cache_dir=tmp_path).meta["cache"]
    assert Path(a).parent != Path(b).parent  # backend name differs, so the model key does


def test_env_var_names_the_default_root(monkeypatch, tmp_path):
    monkeypatch.setenv("PML_RT_CACHE", str(tmp_path / "x"))
    assert pcache.default_cache_root() == tmp_path / "x"
    monkeypatch.delenv("PML_RT_CACHE")
    assert pcache.default_cache_root() == Path.home() / ".cache" / "pml-rt"


def test_large_embeddings_spill_to_a_temporary_file(segmenter, clip, monkeypatch):
    frames, truth = clip
    plain = segmenter.embed(frames, progress=False)
    monkeypatch.setattr(pcache, "SPILL_BYTES", 1000)
    v = segmenter.embed(frames, progress=False)
    assert isinstance(v.embeddings, np.memmap) and v.meta.get("spilled")
    np.testing.assert_array_equal(v.embeddings, plain.embeddings)
    np.testing.assert_array_equal(v.propagate(truth[0]), plain.propagate(truth[0]))


def test_scores_on_disk_give_the_same_masks(segmenter, clip, monkeypatch):
    import pml_rt.segmenter as segmod

    frames, truth = clip
    v = segmenter.embed(frames, progress=False)
    want = v.propagate(truth[2], frame=2)
    monkeypatch.setattr(segmod, "SCORE_SPILL_BYTES", 0)
    np.testing.assert_array_equal(v.propagate(truth[2], frame=2), want)


def test_frame_reader_reads_frames_and_lets_pages_go(tmp_path):
    a = np.arange(6 * 1000, dtype=np.float16).reshape(6, 1000)
    a.tofile(tmp_path / "x.f16")
    mm = np.memmap(tmp_path / "x.f16", dtype=np.float16, mode="r", shape=(6, 1000))
    r = pcache.frames_view(mm)
    assert isinstance(r, pcache.FrameReader) and r.shape == (6, 1000)
    for t in (0, 5, 2, -1):
        np.testing.assert_array_equal(r[t], a[t])
    np.testing.assert_array_equal(mm, a)  # pages come back on the next read
    assert pcache.frames_view(a) is a


def test_cli_segment_uses_and_reuses_the_cache(tmp_path, capsys):
    from PIL import Image

    from pml_rt.cli import main

    frames, truth = make_tiny_clip(frames=3, h=32, w=48)
    d = tmp_path / "frames"
    d.mkdir()
    for i, f in enumerate(frames):
        Image.fromarray(f).save(d / f"{i}.png")
    Image.fromarray(truth[0]).save(tmp_path / "m.png")
    args = ["-q", "segment", str(d), "--backend", "onnxruntime", "--mask", str(tmp_path / "m.png"),
            "--cache-dir", str(tmp_path / "c")]
    assert main(args + ["--out", str(tmp_path / "o1")]) == 0
    (entry, meta), = pcache.EmbeddingCache(tmp_path / "c").entries()
    stamp = (entry / "embeddings.f16").stat().st_mtime_ns
    assert main(args + ["--out", str(tmp_path / "o2")]) == 0
    assert (entry / "embeddings.f16").stat().st_mtime_ns == stamp
    assert sorted(os.listdir(tmp_path / "o1")) == sorted(os.listdir(tmp_path / "o2")) == ["0.png", "1.png", "2.png"]
    assert main(args[:-2] + ["--no-cache", "--out", str(tmp_path / "o3")]) == 0
