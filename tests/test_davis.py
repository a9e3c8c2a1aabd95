"""Reading DAVIS-format roots: a tiny fake root built per test, plus the shared dev data if present."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from pml_rt.davis import DavisDataset, default_data_root, read_davis_mask
from pml_rt.errors import InputError

H, W = 24, 32
PALETTE = [0, 0, 0, 128, 0, 0, 0, 128, 0] + [0] * (256 * 3 - 9)  # DAVIS-like: 0 black, 1 red, 2 green


def _palette_png(ids: np.ndarray, path: Path) -> None:
    im = Image.fromarray(ids.astype(np.uint8), mode="P")
    im.putpalette(PALETTE)
    im.save(path)


def _alpha_ids(t: int) -> np.ndarray:
    ids = np.zeros((H, W), np.uint8)
    ids[2:10, 3 + t : 11 + t] = 1
    ids[14:20, 20:28] = 2
    return ids


def _beta_mask(t: int) -> np.ndarray:
    m = np.zeros((H, W), np.uint8)
    m[5 + t : 15 + t, 6:16] = 255
    return m


def _colour(seq: str, t: int) -> tuple[int, int, int]:
    return (40 + 60 * t, 200 if seq == "alpha" else 90, 120)


@pytest.fixture
def root(tmp_path: Path) -> Path:
    """Two sequences of 3 frames 32x24: alpha (palette, ids 0/1/2), beta (grayscale 0/255)."""
    r = tmp_path / "davis"
    for seq in ("alpha", "beta"):
        (r / "JPEGImages" / "480p" / seq).mkdir(parents=True)
        (r / "Annotations" / "480p" / seq).mkdir(parents=True)
        for t in range(3):
            frame = np.zeros((H, W, 3), np.uint8) + np.array(_colour(seq, t), np.uint8)
            Image.fromarray(frame).save(r / "JPEGImages" / "480p" / seq / f"{t:05d}.jpg", quality=95)
            ann = r / "Annotations" / "480p" / seq / f"{t:05d}.png"
            if seq == "alpha":
                _palette_png(_alpha_ids(t), ann)
            else:
                Image.fromarray(_beta_mask(t), mode="L").save(ann)
    (r / "ImageSets").mkdir()
    (r / "ImageSets" / "train.txt").write_text("alpha\n")
    (r / "ImageSets" / "val.txt").write_text("beta\n")
    return r


# -- sequence lists -------------------------------------------------------------------------


def test_sequences_all_and_splits(root: Path) -> None:
    ds = DavisDataset(root)
    assert ds.sequences() == ["alpha", "beta"]
    assert ds.sequences("train") == ["alpha"]
    assert ds.sequences(split="val") == ["beta"]
    assert set(ds.splits()) == {"train", "val"}


def test_sequences_file(root: Path, tmp_path: Path) -> None:
    f = tmp_path / "mine.txt"
    f.write_text("# my pick\nbeta\n\n  alpha  \nbeta\n")
    assert DavisDataset(root).sequences(sequences_file=f) == ["beta", "alpha"]
    # the original DAVIS 2016 release's "frame-path annotation-path" lines
    f.write_text("/JPEGImages/480p/alpha/00000.jpg /Annotations/480p/alpha/00000.png\n"
                 "/JPEGImages/480p/alpha/00001.jpg /Annotations/480p/alpha/00001.png\n")
    assert DavisDataset(root).sequences(sequences_file=str(f)) == ["alpha"]


def test_unknown_sequence_lists_valid_ones(root: Path, tmp_path: Path) -> None:
    f = tmp_path / "bad.txt"
    f.write_text("alpha\ngamma\n")
    ds = DavisDataset(root)
    with pytest.raises(InputError, match="gamma.*alpha, beta"):
        ds.sequences(sequences_file=f)
    with pytest.raises(InputError, match="alpha, beta"):
        ds.frames_dir("gamma")
    with pytest.raises(InputError, match="alpha, beta"):
        ds.annotations("gamma")
    (root / "ImageSets" / "val.txt").write_text("beta\nzeta\n")
    with pytest.raises(InputError, match="zeta"):
        ds.sequences("val")


def test_split_and_file_errors(root: Path, tmp_path: Path) -> None:
    ds = DavisDataset(root)
    with pytest.raises(InputError, match="train, val"):
        ds.sequences("test-dev")
    with pytest.raises(InputError, match="not both"):
        ds.sequences("train", sequences_file=tmp_path / "x.txt")
    with pytest.raises(InputError, match="does not exist"):
        ds.sequences(sequences_file=tmp_path / "missing.txt")
    empty = tmp_path / "empty.txt"
    empty.write_text("\n# nothing\n")
    with pytest.raises(InputError, match="no sequences"):
        ds.sequences(sequences_file=empty)


def test_davis2017_imagesets(root: Path) -> None:
    (root / "ImageSets" / "train.txt").unlink()
    (root / "ImageSets" / "val.txt").unlink()
    (root / "ImageSets" / "2017").mkdir()
    (root / "ImageSets" / "2017" / "val.txt").write_text("beta\nalpha\n")
    (root / "ImageSets" / "2016").mkdir()
    (root / "ImageSets" / "2016" / "val.txt").write_text("beta\n")
    assert DavisDataset(root).sequences("val") == ["beta", "alpha"]  # 2017 wins over 2016


def test_missing_root_names_path_and_option(tmp_path: Path) -> None:
    missing = tmp_path / "nowhere"
    with pytest.raises(InputError, match="--davis ROOT") as err:
        DavisDataset(missing)
    assert str(missing) in str(err.value)
    assert isinstance(err.value, ValueError)


def test_wrong_resolution_lists_found_ones(root: Path) -> None:
    with pytest.raises(InputError, match="resolutions found: 480p"):
        DavisDataset(root, resolution="1080p")


# -- paths and reading ----------------------------------------------------------------------


def test_frames_dir_and_paths(root: Path) -> None:
    ds = DavisDataset(root)
    assert ds.frames_dir("beta") == root / "JPEGImages" / "480p" / "beta"
    paths = ds.frame_paths("beta")
    assert [p.name for p in paths] == ["00000.jpg", "00001.jpg", "00002.jpg"]
    assert [p.name for p in ds.annotation_paths("beta")] == ["00000.png", "00001.png", "00002.png"]


def test_frames(root: Path) -> None:
    ds = DavisDataset(root)
    fr = ds.frames("alpha")
    assert fr.shape == (3, H, W, 3) and fr.dtype == np.uint8
    for t in range(3):  # flat colours survive JPEG within a few levels
        np.testing.assert_allclose(fr[t].reshape(-1, 3).mean(0), _colour("alpha", t), atol=3)
    two = ds.frames("alpha", max_frames=2)
    assert two.shape == (2, H, W, 3)
    np.testing.assert_array_equal(two, fr[:2])
    with pytest.raises(InputError, match="max_frames"):
        ds.frames("alpha", max_frames=0)


def test_palette_annotations_give_indices(root: Path) -> None:
    ds = DavisDataset(root)
    ann = ds.annotations("alpha")
    assert ann.shape == (3, H, W) and ann.dtype == np.uint8
    for t in range(3):
        np.testing.assert_array_equal(ann[t], _alpha_ids(t))
    assert ds.annotations("alpha", max_frames=1).shape == (1, H, W)


def test_grayscale_0_255_annotations_give_0_1(root: Path) -> None:
    ds = DavisDataset(root)
    ann = ds.annotations("beta")
    assert ann.dtype == np.uint8 and set(np.unique(ann)) == {0, 1}
    for t in range(3):
        np.testing.assert_array_equal(ann[t], _beta_mask(t) // 255)


def test_first_mask(root: Path) -> None:
    ds = DavisDataset(root)
    for seq in ("alpha", "beta"):
        m = ds.first_mask(seq)
        assert m.shape == (H, W) and m.dtype == np.uint8
        np.testing.assert_array_equal(m, ds.annotations(seq)[0])


def test_mixed_sizes_name_the_file(root: Path) -> None:
    bad = root / "JPEGImages" / "480p" / "beta" / "00001.jpg"
    Image.fromarray(np.zeros((H + 2, W, 3), np.uint8)).save(bad)
    with pytest.raises(InputError, match="00001.jpg"):
        DavisDataset(root).frames("beta")


def test_mask_modes(tmp_path: Path) -> None:
    ids = np.array([[0, 1], [2, 3]], np.uint8)
    Image.fromarray(ids, mode="L").save(tmp_path / "ids.png")  # ids written as gray levels
    np.testing.assert_array_equal(read_davis_mask(tmp_path / "ids.png"), ids)
    grey_rgb = np.stack([np.where(ids > 0, 255, 0)] * 3, -1).astype(np.uint8)  # 0/255 saved as RGB
    Image.fromarray(grey_rgb, mode="RGB").save(tmp_path / "grey_rgb.png")
    np.testing.assert_array_equal(read_davis_mask(tmp_path / "grey_rgb.png"), ids > 0)
    colour = np.zeros((2, 2, 3), np.uint8)
    colour[0, 1] = (128, 0, 0)
    Image.fromarray(colour, mode="RGB").save(tmp_path / "colour.png")
    with pytest.raises(InputError, match="palette"):
        read_davis_mask(tmp_path / "colour.png")
    (tmp_path / "junk.png").write_bytes(b"not a png")
    with pytest.raises(InputError, match="junk.png"):
        read_davis_mask(tmp_path / "junk.png")


def test_annotations_only_sequence(root: Path) -> None:
    (root / "Annotations" / "480p" / "gamma").mkdir()
    _palette_png(_alpha_ids(0), root / "Annotations" / "480p" / "gamma" / "00000.png")
    ds = DavisDataset(root)
    assert "gamma" in ds.sequences()
    assert ds.first_mask("gamma").shape == (H, W)
    with pytest.raises(InputError, match="no frames"):
        ds.frames("gamma")


# -- default root and the real data ---------------------------------------------------------


def test_default_data_root(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("PML_RT_DATA", str(tmp_path))
    assert default_data_root() == tmp_path
    monkeypatch.delenv("PML_RT_DATA")
    repo = Path(__file__).resolve().parents[1]
    assert default_data_root() == repo.parent / "shared" / "data"


def _real_root() -> Path:
    env = os.environ.get("PML_RT_DATA")
    base = Path(env) if env else Path(__file__).resolve().parents[2] / "shared" / "data"
    return base / "davis2016-dev"


def test_real_davis2016_dev_root() -> None:
    root = _real_root()
    if not root.is_dir():
        pytest.skip(f"DAVIS dev data absent at {root}")
    ds = DavisDataset(root)
    train, val = ds.sequences("train"), ds.sequences("val")
    assert len(train) == 6 and len(val) == 6 and not set(train) & set(val)
    assert "blackswan" in val
    m = ds.first_mask("blackswan")
    assert m.shape == (480, 854) and m.dtype == np.uint8
    assert set(np.unique(m)) == {0, 1}
    fr = ds.frames("blackswan", max_frames=2)
    assert fr.shape == (2, 480, 854, 3) and fr.dtype == np.uint8
