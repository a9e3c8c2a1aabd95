"""The front door end to end on a tiny clip, with the packaged ONNX model on the CPU."""

from __future__ import annotations

import numpy as np
import pytest

from pml_rt import InputError, Segmenter
from pml_rt.metrics import jaccard

from .conftest import make_tiny_clip


def test_embed_shapes_and_unit_norm(segmenter, tiny_clip):
    clip, _ = tiny_clip
    v = segmenter.embed(clip, progress=False)
    assert v.embeddings.shape == (4, 6, 8, segmenter.config.d) and v.embeddings.dtype == np.float16
    norms = np.linalg.norm(v.embeddings.astype(np.float32), axis=-1)
    np.testing.assert_allclose(norms, 1, atol=2e-3)
    assert v.frame_size == (48, 64) and v.num_frames == 4


@pytest.mark.parametrize("frame", [0, 2, 3])
def test_propagate_two_objects_any_frame(segmenter, frame):
    clip, truth = make_tiny_clip(frames=5, h=64, w=96)
    v = segmenter.embed(clip, progress=False)
    masks = v.propagate(truth[frame], frame=frame)
    assert masks.shape == truth.shape and masks.dtype == np.uint8
    assert (masks[frame] == truth[frame]).all()  # the annotated frame comes back as given
    for obj in (1, 2):
        j = np.asarray(jaccard(masks == obj, truth == obj))
        assert j.mean() > 0.5, (obj, j)


def test_propagate_keeps_user_ids(segmenter):
    clip, truth = make_tiny_clip(frames=3, h=64, w=96)
    user = np.where(truth == 1, 42, np.where(truth == 2, 7, 0)).astype(np.uint8)
    masks = segmenter.embed(clip, progress=False).propagate(user[0])
    assert set(np.unique(masks)) <= {0, 7, 42} and 42 in masks[1] and 7 in masks[1]


def test_propagate_keyframes_one_entry_is_propagate(segmenter):
    clip, truth = make_tiny_clip(frames=5, h=64, w=96)
    v = segmenter.embed(clip, progress=False)
    np.testing.assert_array_equal(v.propagate_keyframes({2: truth[2]}), v.propagate(truth[2], frame=2))


def test_propagate_keyframes_takes_objects_from_every_mask(segmenter):
    clip, truth = make_tiny_clip(frames=6, h=64, w=96)
    v = segmenter.embed(clip, progress=False)
    first = np.where(truth[0] == 1, 1, 0).astype(np.uint8)  # object 1 only
    later = np.where(truth[4] == 2, 9, truth[4]).astype(np.uint8)  # object 2 first named here, as id 9
    masks = v.propagate_keyframes({0: first, np.int64(4): later})
    assert masks.shape == truth.shape and masks.dtype == np.uint8
    assert (masks[0] == first).all() and (masks[4] == later).all()  # annotated frames as given
    assert set(np.unique(masks)) <= {0, 1, 9}
    assert 9 in masks[5] and 9 in masks[3]  # the later object, after and before its mask
    assert np.asarray(jaccard(masks[1:4] == 1, truth[1:4] == 1)).mean() > 0.5


def test_propagate_keyframes_checks_its_input(segmenter, tiny_clip):
    clip, truth = tiny_clip
    v = segmenter.embed(clip, progress=False)
    with pytest.raises(InputError, match="non-empty mapping"):
        v.propagate_keyframes({})
    with pytest.raises(InputError, match="non-empty mapping"):
        v.propagate_keyframes([truth[0]])
    with pytest.raises(InputError, match="out of range"):
        v.propagate_keyframes({0: truth[0], 9: truth[0]})
    with pytest.raises(InputError, match="frame 2"):
        v.propagate_keyframes({0: truth[0], 2: truth[2][:10]})


def test_bad_inputs_name_the_problem(segmenter, tiny_clip):
    clip, truth = tiny_clip
    v = segmenter.embed(clip, progress=False)
    with pytest.raises(InputError, match=r"48.*64|size"):
        v.propagate(np.zeros((10, 10), np.uint8) + 1)
    with pytest.raises(InputError, match="no object pixels"):
        v.propagate(np.zeros((48, 64), np.uint8))
    with pytest.raises(InputError, match="out of range"):
        v.propagate(truth[0], frame=9)
    with pytest.raises(InputError, match="255"):
        v.propagate(np.full((48, 64), 300, np.int32))
    with pytest.raises(InputError, match="upsample"):
        v.propagate(truth[0], upsample="nearest")
    with pytest.raises(ValueError, match="k must be"):
        v.propagate(truth[0], k=0)


def test_unknown_model_and_backend():
    with pytest.raises(ValueError, match="valid models"):
        Segmenter(model="resnet-9000")
    with pytest.raises(ValueError, match="valid: auto"):
        Segmenter(backend="magic")


def test_embed_video_file_equals_array(segmenter, tmp_path):
    """A PNG folder and the same frames as an array give identical embeddings."""
    from PIL import Image

    clip, _ = make_tiny_clip(frames=3)
    for i, f in enumerate(clip):
        Image.fromarray(f).save(tmp_path / f"{i:05d}.png")
    a = segmenter.embed(clip, progress=False).embeddings
    b = segmenter.embed(str(tmp_path), progress=False).embeddings
    np.testing.assert_array_equal(a, b)


@pytest.mark.data
def test_real_sequence_few_frames(segmenter, data_root):
    from pml_rt.davis import DavisDataset

    ds = DavisDataset(data_root / "davis2016-dev")
    frames, gt = ds.frames("blackswan", max_frames=4), ds.annotations("blackswan", max_frames=4)
    masks = segmenter.embed(frames, progress=False).propagate(gt[0])
    j = np.asarray(jaccard(masks[1:], gt[1:]))
    assert j.min() > 0.7, j  # the swan is easy; an untrained embedding still holds it


def test_half_input_scale_gives_coarser_cells_and_full_size_masks(segmenter, tmp_path):
    clip, truth = make_tiny_clip(frames=4, h=96, w=128)
    half = Segmenter(backend="onnxruntime", input_scale=0.5)
    v = half.embed(clip, progress=False)
    assert v.embeddings.shape == (4, 6, 8, v.config.d) and v.config.stride == 16  # cells of 16x16 pixels
    masks = v.propagate(truth[0], upsample="bilinear")
    assert masks.shape == truth.shape and masks.dtype == np.uint8
    for obj in (1, 2):
        assert np.asarray(jaccard(masks[1:] == obj, truth[1:] == obj)).mean() > 0.4
    # Other cells, other embeddings: the cache keeps full and half scale apart.
    assert half.model_identity() != segmenter.model_identity()
    full = segmenter.embed(clip, progress=False)
    assert full.embeddings.shape == (4, 12, 16, full.config.d)


@pytest.mark.parametrize("scale", [0.3, 2.0, 0])
def test_input_scale_must_be_a_listed_one(scale):
    with pytest.raises(ValueError, match="input_scale"):
        Segmenter(backend="onnxruntime", input_scale=scale)
