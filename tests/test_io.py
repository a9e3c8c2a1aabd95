"""Tests of pml_rt.io on tiny generated fixtures (plus one read of the shared DAVIS data)."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from pml_rt.errors import InputError
from pml_rt.io import (
    DAVIS_PALETTE,
    ArraySource,
    ContainerSource,
    FolderSource,
    FrameCache,
    atomic_output_dir,
    atomic_write_path,
    open_video,
    overlay,
    read_mask,
    save_overlay_png,
    write_masks,
    write_overlay_video,
    write_palette_png,
)

REPO = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("PML_RT_DATA", REPO.parent / "shared" / "data"))


def _frames(t: int = 3, h: int = 48, w: int = 64) -> np.ndarray:
    """Smooth synthetic RGB frames (T, H, W, 3) uint8: gradients that move a little per frame."""
    y, x = np.mgrid[0:h, 0:w]
    out = np.empty((t, h, w, 3), dtype=np.uint8)
    for i in range(t):
        out[i, ..., 0] = (x * 255 // max(w - 1, 1) + 10 * i) % 256
        out[i, ..., 1] = y * 255 // max(h - 1, 1)
        out[i, ..., 2] = (60 + 20 * i) % 256
    return out


def _write_mp4(path: Path, frames: np.ndarray, fps: int = 25, faststart: bool = False) -> None:
    import av

    options = {"movflags": "faststart"} if faststart else {}  # faststart: index before data
    with av.open(str(path), mode="w", options=options) as c:
        s = c.add_stream("libx264" if "libx264" in av.codecs_available else "mpeg4", rate=fps)
        s.height, s.width = frames.shape[1:3]
        s.pix_fmt = "yuv420p"
        for f in frames:
            for p in s.encode(av.VideoFrame.from_ndarray(f, format="rgb24")):
                c.mux(p)
        for p in s.encode(None):
            c.mux(p)


# --- video sources ------------------------------------------------------------------------


def test_folder_png_roundtrip_and_natural_order(tmp_path: Path) -> None:
    frames = _frames(3)
    for name, i in [("f2", 1), ("f10", 2), ("f1", 0)]:  # natural order: f1, f2, f10
        Image.fromarray(frames[i]).save(tmp_path / f"{name}.png")
    (tmp_path / "notes.txt").write_text("not a frame")
    src = open_video(tmp_path)
    assert isinstance(src, FolderSource)
    assert len(src) == 3 and src.frame_size == (48, 64) and src.fps == 25.0
    assert src.frame_names == ["f1", "f2", "f10"]
    got = list(src)
    for i in range(3):
        assert got[i].dtype == np.uint8 and got[i].shape == (48, 64, 3)
        np.testing.assert_array_equal(got[i], frames[i])  # PNG is lossless
    np.testing.assert_array_equal(src.read(2), frames[2])
    np.testing.assert_array_equal(src.read(-1), frames[2])
    with pytest.raises(InputError, match="out of range"):
        src.read(3)


def test_folder_jpeg_and_grayscale_become_rgb(tmp_path: Path) -> None:
    frames = _frames(2)
    Image.fromarray(frames[0]).save(tmp_path / "00000.jpg", quality=95)
    Image.fromarray(frames[1][..., 1]).save(tmp_path / "00001.png")  # mode "L"
    src = open_video(str(tmp_path))
    a, b = list(src)
    assert a.shape == b.shape == (48, 64, 3)
    assert np.abs(a.astype(int) - frames[0]).mean() < 4  # JPEG is lossy
    assert np.array_equal(b[..., 0], frames[1][..., 1]) and np.array_equal(b[..., 0], b[..., 2])


def test_folder_mixed_sizes_names_file_and_frame(tmp_path: Path) -> None:
    Image.fromarray(_frames(1)[0]).save(tmp_path / "00000.png")
    Image.fromarray(_frames(1)[0]).save(tmp_path / "00001.png")
    Image.fromarray(_frames(1, 40, 64)[0]).save(tmp_path / "00002.png")
    with pytest.raises(InputError) as ei:
        open_video(tmp_path)
    msg = str(ei.value)
    assert "00002.png" in msg and "frame 2" in msg and "(48, 64)" in msg and "(40, 64)" in msg


@pytest.mark.parametrize("suffix", [".png", ".jpg"])
def test_folder_corrupt_file_names_file(tmp_path: Path, suffix: str) -> None:
    Image.fromarray(_frames(1)[0]).save(tmp_path / f"00000{suffix}")
    # garbage is caught when the headers are checked on opening
    (tmp_path / f"00001{suffix}").write_bytes(b"\x00garbage" * 10)
    with pytest.raises(InputError) as ei:
        open_video(tmp_path)
    assert f"00001{suffix}" in str(ei.value) and "frame 1" in str(ei.value)
    # truncated data is caught on opening or, where the header survives, on decoding
    Image.fromarray(_frames(1)[0]).save(tmp_path / f"00001{suffix}")
    data = (tmp_path / f"00001{suffix}").read_bytes()
    (tmp_path / f"00001{suffix}").write_bytes(data[: len(data) * 3 // 4])
    with pytest.raises(InputError) as ei:
        list(open_video(tmp_path))
    assert f"00001{suffix}" in str(ei.value) and "frame 1" in str(ei.value)


def test_folder_empty_and_missing_path(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="no image files"):
        open_video(tmp_path)
    missing = tmp_path / "nope"
    with pytest.raises(InputError, match="does not exist") as ei:
        open_video(missing)
    assert str(missing) in str(ei.value)


def test_unknown_suffix_lists_supported(tmp_path: Path) -> None:
    p = tmp_path / "clip.xyz"
    p.write_bytes(b"x")
    with pytest.raises(InputError) as ei:
        open_video(p)
    assert ".mp4" in str(ei.value) and ".png" in str(ei.value) and "clip.xyz" in str(ei.value)


def test_array_sources() -> None:
    frames = _frames(4)
    src = open_video(frames)
    assert isinstance(src, ArraySource)
    assert len(src) == 4 and src.frame_size == (48, 64) and src.fps == 25.0
    assert src.frame_names == ["00000", "00001", "00002", "00003"]
    np.testing.assert_array_equal(np.stack(list(src)), frames)
    lst = open_video(list(frames), fps=10)
    assert len(lst) == 4 and lst.fps == 10.0
    np.testing.assert_array_equal(lst.read(1), frames[1])


class _CountingSource(ArraySource):
    """An array source that counts the frames it is asked for."""

    def __init__(self, frames: np.ndarray) -> None:
        super().__init__(frames)
        self.reads: list[int] = []

    def _read(self, i: int) -> np.ndarray:
        self.reads.append(i)
        return super()._read(i)


def test_frame_cache_keeps_recent_frames_up_to_its_bytes() -> None:
    frames = _frames(4)  # 48 x 64 x 3 = 9216 bytes each
    src = _CountingSource(frames)
    cache = FrameCache(src, 2 * frames[0].nbytes)
    for i in (0, 1, 0, 1):
        np.testing.assert_array_equal(cache.read(i), frames[i])
    assert src.reads == [0, 1] and len(cache) == 2 and cache.nbytes == 2 * frames[0].nbytes
    cache.read(2)  # 1 was read after 0, so 0 leaves
    cache.read(1)
    cache.read(0)
    assert src.reads == [0, 1, 2, 0] and len(cache) == 2
    none = FrameCache(src, 0)  # keeps nothing: every read goes to the source
    none.read(3)
    none.read(3)
    assert src.reads[-2:] == [3, 3] and len(none) == 0 and none.nbytes == 0
    part = FrameCache(src, 3 * frames[0].nbytes)
    assert not part.fits_all and FrameCache(src, 4 * frames[0].nbytes).fits_all
    part.read(1)
    assert part.fill() == 3 and sorted(part._frames) == [0, 1, 2]  # in order, until it is full
    np.testing.assert_array_equal(part.read(2), frames[2])
    for bad in (-1, 1.5, True, "1"):
        with pytest.raises(InputError, match="max_bytes"):
            FrameCache(src, bad)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "bad, match",
    [
        (np.zeros((2, 8, 8), np.uint8), "3 channels"),
        (np.zeros((2, 8, 8, 4), np.uint8), "3 channels"),
        (np.zeros((2, 8, 8, 3), np.float32), "uint8"),
        (np.zeros((0, 8, 8, 3), np.uint8), "no frames"),
        ([], "empty"),
        ([np.zeros((8, 8, 3), np.uint8), np.zeros((8, 6, 3), np.uint8)], "frame 1"),
    ],
)
def test_array_source_errors(bad: object, match: str) -> None:
    with pytest.raises(InputError, match=match):
        open_video(bad)  # type: ignore[arg-type]


def test_mp4_roundtrip(tmp_path: Path) -> None:
    frames = _frames(8)
    p = tmp_path / "clip.mp4"
    _write_mp4(p, frames)
    src = open_video(p)
    assert isinstance(src, ContainerSource)
    assert src.frame_size == (48, 64)
    assert len(src) == 8 and src.frame_names[-1] == "00007"
    assert src.fps == pytest.approx(25.0)
    got = list(src)
    assert len(got) == 8 and got[0].dtype == np.uint8 and got[0].shape == (48, 64, 3)
    for g, f in zip(got, frames):
        assert np.abs(g.astype(int) - f).mean() < 8  # lossy codec + yuv420p
    np.testing.assert_array_equal(src.read(5), got[5])
    np.testing.assert_array_equal(src.read(2), got[2])  # going back reopens
    np.testing.assert_array_equal(src.read(3), got[3])  # going forward continues
    src.close()


def test_truncated_and_bogus_mp4(tmp_path: Path) -> None:
    p = tmp_path / "cut.mp4"
    _write_mp4(p, _frames(8))
    p.write_bytes(p.read_bytes()[:200])
    with pytest.raises(InputError) as ei:
        open_video(p)
    assert "cut.mp4" in str(ei.value)
    # index first, data cut: the frames that remain decode, with a warning
    f = tmp_path / "faststart.mp4"
    _write_mp4(f, _frames(30), faststart=True)
    f.write_bytes(f.read_bytes()[: f.stat().st_size * 6 // 10])
    src = open_video(f)
    with pytest.warns(UserWarning, match="truncated"):
        n = len(src)
    assert 0 < n < 30 and len(list(src)) == n
    q = tmp_path / "bogus.webm"
    q.write_bytes(b"")
    with pytest.raises(InputError, match="bogus.webm"):
        open_video(q)


# --- masks --------------------------------------------------------------------------------


def test_palette_roundtrip_keeps_ids(tmp_path: Path) -> None:
    mask = (np.arange(6 * 8).reshape(6, 8) % 6).astype(np.uint8)
    p = write_palette_png(tmp_path / "m.png", mask)
    with Image.open(p) as im:
        assert im.mode == "P"
        assert list(im.getpalette()[:9]) == [0, 0, 0, 128, 0, 0, 0, 128, 0]
    got = read_mask(p)
    np.testing.assert_array_equal(got, mask)
    assert set(np.unique(got)) == set(range(6))
    assert [p.name for p in tmp_path.iterdir()] == ["m.png"]  # no temp file left


def test_davis_palette_values() -> None:
    assert DAVIS_PALETTE.shape == (256, 3) and DAVIS_PALETTE.dtype == np.uint8
    first = [[0, 0, 0], [128, 0, 0], [0, 128, 0], [128, 128, 0], [0, 0, 128]]
    assert DAVIS_PALETTE[:5].tolist() == first
    assert len({tuple(c) for c in DAVIS_PALETTE.tolist()}) == 256


def test_grayscale_masks(tmp_path: Path) -> None:
    m = np.zeros((6, 8), np.uint8)
    m[2:4, 3:6] = 255
    Image.fromarray(m).save(tmp_path / "bin.png")
    got = read_mask(tmp_path / "bin.png")
    assert set(np.unique(got)) == {0, 1} and got.sum() == 6
    m[0, 0] = 7
    m[5, 7] = 3
    Image.fromarray(m).save(tmp_path / "ids.png")
    assert set(np.unique(read_mask(tmp_path / "ids.png"))) == {0, 3, 7, 255}
    Image.fromarray(m > 0).save(tmp_path / "one.png")  # mode "1"
    assert set(np.unique(read_mask(tmp_path / "one.png"))) == {0, 1}


def test_rgb_masks(tmp_path: Path) -> None:
    ids = np.zeros((6, 8), np.uint8)
    ids[1:3, 1:3] = 1
    ids[4:, 4:] = 2
    Image.fromarray(DAVIS_PALETTE[ids]).save(tmp_path / "davis_rgb.png")
    np.testing.assert_array_equal(read_mask(tmp_path / "davis_rgb.png"), ids)
    odd = np.zeros((6, 8, 3), np.uint8)
    odd[1:3, 1:3] = (255, 0, 0)
    Image.fromarray(odd).save(tmp_path / "odd.png")
    with pytest.raises(InputError, match="palette") as ei:
        read_mask(tmp_path / "odd.png")
    assert "odd.png" in str(ei.value)


def test_mask_errors(tmp_path: Path) -> None:
    m = np.zeros((6, 8), np.uint8)
    m[1, 1] = 1
    write_palette_png(tmp_path / "m.png", m)
    with pytest.raises(InputError) as ei:
        read_mask(tmp_path / "m.png", expected_size=(48, 64))
    msg = str(ei.value)
    assert "(6, 8)" in msg and "(48, 64)" in msg and "m.png" in msg
    empty_msg = "no object pixels; expected at least one pixel with id 1..255"
    with pytest.raises(InputError, match=empty_msg):
        read_mask(np.zeros((4, 4), np.uint8))
    assert read_mask(np.zeros((4, 4), np.uint8), allow_empty=True).sum() == 0
    with pytest.raises(InputError, match="0..255"):
        read_mask(np.array([[0, 300]]))
    with pytest.raises(InputError, match="0..255"):
        read_mask(np.array([[0, -1]]))
    with pytest.raises(InputError, match="non-integer"):
        read_mask(np.array([[0.0, 1.5]]))
    with pytest.raises(InputError, match="2-D"):
        read_mask(np.ones((2, 4, 4), np.uint8))
    with pytest.raises(InputError, match="does not exist"):
        read_mask(tmp_path / "absent.png")
    (tmp_path / "bad.png").write_bytes(b"not a png")
    with pytest.raises(InputError, match="bad.png"):
        read_mask(tmp_path / "bad.png")
    got = read_mask(np.array([[0.0, 2.0]]), name="first")
    assert got.dtype == np.uint8 and got.tolist() == [[0, 2]]


def test_read_osvos_palette_png() -> None:
    folder = DATA / "davis2017-osvos-predictions" / "bmx-trees"
    if not folder.is_dir():
        pytest.skip(f"shared data absent ({folder}); set PML_RT_DATA to run this test")
    mask = read_mask(folder / "00010.png", expected_size=(480, 854))
    assert mask.dtype == np.uint8 and mask.shape == (480, 854)
    ids = set(np.unique(mask).tolist())
    assert 0 in ids and ids <= set(range(6)) and len(ids) >= 2


# --- outputs ------------------------------------------------------------------------------


def test_write_masks_and_atomic_dir(tmp_path: Path) -> None:
    out = tmp_path / "out"
    masks = np.zeros((3, 6, 8), np.uint8)
    masks[:, 2, 2] = [1, 2, 3]
    paths = write_masks(out, masks, ["a", "b", "c"], progress=False)
    assert [p.name for p in paths] == ["a.png", "b.png", "c.png"]
    assert read_mask(out / "c.png")[2, 2] == 3
    before = {p.name: p.read_bytes() for p in out.iterdir()}

    # a failure half way leaves the earlier output exactly as it was, and no temp folder
    def failing():
        yield masks[0] * 0 + 5
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        write_masks(out, failing(), ["a", "b", "c"], progress=False)
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]

    with pytest.raises(InputError, match="2 masks for 3"):
        write_masks(out, iter(masks[:2]), ["a", "b", "c"], progress=False)
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before

    # a later success replaces same-named files and keeps the others
    (out / "keep.txt").write_text("mine")
    write_masks(out, masks[:1] + 4, ["a"], progress=False)
    assert read_mask(out / "a.png")[0, 0] == 4
    assert (out / "keep.txt").read_text() == "mine"
    assert (out / "b.png").read_bytes() == before["b.png"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]


def test_atomic_output_dir_exception_leaves_nothing(tmp_path: Path) -> None:
    final = tmp_path / "fresh"
    with pytest.raises(KeyError):
        with atomic_output_dir(final) as tmp:
            (tmp / "x.png").write_bytes(b"1")
            assert tmp.parent == tmp_path and tmp.name.startswith(".fresh.tmp-")
            raise KeyError("stop")
    assert list(tmp_path.iterdir()) == []
    with atomic_output_dir(final) as tmp:
        (tmp / "x.png").write_bytes(b"1")
    assert [p.name for p in final.iterdir()] == ["x.png"]


def test_atomic_write_path(tmp_path: Path) -> None:
    final = tmp_path / "v.mp4"
    final.write_bytes(b"old")
    with pytest.raises(ValueError):
        with atomic_write_path(final) as tmp:
            assert tmp.suffix == ".mp4" and tmp.parent == tmp_path
            tmp.write_bytes(b"half")
            raise ValueError("stop")
    assert final.read_bytes() == b"old" and len(list(tmp_path.iterdir())) == 1
    with atomic_write_path(final) as tmp:
        tmp.write_bytes(b"new")
    assert final.read_bytes() == b"new" and len(list(tmp_path.iterdir())) == 1


# --- overlay ------------------------------------------------------------------------------


def test_overlay_colours_and_contour() -> None:
    frame = np.full((10, 12, 3), 200, np.uint8)
    mask = np.zeros((10, 12), np.uint8)
    mask[2:8, 2:8] = 1
    out = overlay(frame, mask, alpha=0.5, contour=1)
    assert out.dtype == np.uint8 and out.shape == frame.shape
    np.testing.assert_array_equal(out[0, 0], [200, 200, 200])  # background untouched
    np.testing.assert_array_equal(out[4, 4], [164, 100, 100])  # 0.5*200 + 0.5*(128, 0, 0)
    np.testing.assert_array_equal(out[2, 4], [64, 0, 0])  # contour: half the colour
    out2 = overlay(frame, mask, alpha=0.5, contour=2)
    np.testing.assert_array_equal(out2[3, 4], [64, 0, 0])
    np.testing.assert_array_equal(overlay(frame, mask, alpha=0.0, contour=0), frame)
    with pytest.raises(InputError, match=r"\(10, 12\)"):
        overlay(frame, mask[:9])


def test_overlay_video_and_png(tmp_path: Path) -> None:
    frames = _frames(5, 47, 63)  # odd sizes get padded
    masks = np.zeros((5, 47, 63), np.uint8)
    masks[:, 10:30, 10:40] = 1
    p = write_overlay_video(tmp_path / "o.mp4", iter(frames), iter(masks), fps=10)
    assert [q.name for q in tmp_path.iterdir()] == ["o.mp4"]
    src = open_video(p)
    assert len(src) == 5 and src.frame_size == (48, 64) and src.fps == pytest.approx(10.0)
    with pytest.raises(InputError, match="more masks"):
        write_overlay_video(tmp_path / "o2.mp4", frames[:2], masks, fps=10)
    with pytest.raises(InputError, match="suffix"):
        write_overlay_video(tmp_path / "o.gif", frames, masks)
    assert [q.name for q in tmp_path.iterdir()] == ["o.mp4"]
    png = save_overlay_png(tmp_path / "o.png", frames[0], masks[0])
    with Image.open(png) as im:
        assert im.mode == "RGB" and im.size == (63, 47)
