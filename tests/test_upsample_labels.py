"""Labels straight from scores (``upsample_labels``) equal the argmax of the upsampled scores.

The label paths skip most pixels (those whose cells agree), so they are checked pixel for
pixel against the full float32 upsampling, on random scores with label changes everywhere
and on smooth ones, at odd sizes, several channels and both strides; every array module.
"""

from __future__ import annotations

import numpy as np
import pytest

from pml_rt.upsample import METHODS, upsample_labels, upsample_scores
from pml_rt.upsample.bilateral_solver import bilateral_solver_labels, bilateral_solver_upsample
from pml_rt.upsample.labels import argmax_labels
from pml_rt.xp import to_host


def _scores(rng: np.random.Generator, c: int, h: int, w: int, smooth: bool) -> np.ndarray:
    s = rng.random((c, h, w)).astype(np.float32)
    if smooth:  # blobs: long runs of one label with a few boundaries
        yy, xx = np.mgrid[0:h, 0:w]
        for j in range(c):
            s[j] += 2 * np.sin(yy / 3.0 + j) * np.cos(xx / 4.0 - j)
    return (s / s.sum(axis=0, keepdims=True)).astype(np.float32)


def test_argmax_labels_matches_argmax_with_ties(xp):
    rng = np.random.default_rng(0)
    s = rng.integers(0, 3, size=(5, 7, 9)).astype(np.float32)  # many exact ties
    got = to_host(argmax_labels(xp.asarray(s)))
    assert got.dtype == np.uint8
    np.testing.assert_array_equal(got, s.argmax(axis=0))
    assert to_host(argmax_labels(xp.zeros((1, 3, 4), dtype=xp.float32))).tolist() == [[0] * 4] * 3


def test_argmax_labels_rejects_too_many_channels():
    with pytest.raises(ValueError, match="256"):
        argmax_labels(np.zeros((257, 2, 2), np.float32))


@pytest.mark.parametrize("c,hw,stride,smooth", [(2, (45, 61), 8, False), (2, (45, 61), 8, True),
                                                 (4, (37, 70), 8, True), (3, (64, 33), 16, True),
                                                 (1, (16, 16), 8, False)])
def test_bilinear_labels_equal_upsampled_argmax(xp, c, hw, stride, smooth):
    rng = np.random.default_rng(c * 100 + hw[0])
    h, w = -(-hw[0] // stride), -(-hw[1] // stride)
    s = xp.asarray(_scores(rng, c, h, w, smooth))
    want = to_host(upsample_scores(s, hw, "bilinear", stride=stride)).argmax(axis=0)
    got = to_host(upsample_labels(s, hw, "bilinear", stride=stride))
    assert got.shape == hw and got.dtype == np.uint8
    np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize("method", [m for m in METHODS if m != "bilinear"])
@pytest.mark.parametrize("smooth", [False, True])
def test_edge_aware_labels_equal_upsampled_argmax(xp, method, smooth):
    rng = np.random.default_rng(3 if smooth else 4)
    hw = (41, 59)
    s = xp.asarray(_scores(rng, 3, 6, 8, smooth))
    guide = xp.asarray(rng.integers(0, 256, size=(*hw, 3)).astype(np.uint8))
    want = to_host(upsample_scores(s, hw, method, guide)).argmax(axis=0)
    np.testing.assert_array_equal(to_host(upsample_labels(s, hw, method, guide)), want)


def test_solver_labels_pass_their_parameters():
    rng = np.random.default_rng(5)
    s = _scores(rng, 2, 6, 8, True)
    guide = rng.integers(0, 256, size=(48, 64, 3)).astype(np.uint8)
    for params in ({"band": None}, {"lam": 1.0, "group": 2}):
        want = bilateral_solver_upsample(s, guide, **params).argmax(axis=0)
        np.testing.assert_array_equal(bilateral_solver_labels(s, guide, **params), want)
