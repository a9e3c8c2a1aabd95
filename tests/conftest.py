"""Shared fixtures: array modules as parameters (visible skips), the data root, a tiny clip."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from pml_rt.xp import array_modules


def _xp_params():
    for name, mod, why in array_modules():
        marks = [pytest.mark.gpu] if name == "cupy" else []
        if mod is None:
            marks.append(pytest.mark.skip(reason=f"{name} unavailable: {why}"))
        yield pytest.param(mod, id=name, marks=marks)


@pytest.fixture(autouse=True, scope="session")
def _private_cache(tmp_path_factory):
    """Keep the embedding cache of CLI runs out of ~/.cache during tests."""
    mp = pytest.MonkeyPatch()
    mp.setenv("PML_RT_CACHE", str(tmp_path_factory.mktemp("pml-rt-cache")))
    yield
    mp.undo()


@pytest.fixture(params=list(_xp_params()))
def xp(request):
    """Each array module pml-rt supports (numpy; cupy where a GPU is present, else skipped)."""
    return request.param


@pytest.fixture(scope="session")
def data_root() -> Path:
    """../shared/data (or $PML_RT_DATA); skips the test where it is absent."""
    from pml_rt.davis import default_data_root

    root = default_data_root()
    if not (root / "davis2016-dev").is_dir():
        pytest.skip(f"shared data not found at {root} (set PML_RT_DATA)")
    return root


def make_tiny_clip(frames: int = 4, h: int = 48, w: int = 64, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """A textured clip with two moving objects: frames uint8 (T,H,W,3), masks uint8 (T,H,W), ids 1 and 2."""
    rng = np.random.default_rng(seed)
    base = rng.integers(60, 120, size=(h // 4, w // 4, 3)).astype(np.uint8)
    bg = np.kron(base, np.ones((4, 4, 1), np.uint8))
    clip = np.empty((frames, h, w, 3), np.uint8)
    masks = np.zeros((frames, h, w), np.uint8)
    s1, s2 = max(16, h // 3), max(14, h // 3)
    for t in range(frames):
        f = bg.copy()
        y, x = 4 + t, 4 + 2 * t
        f[y : y + s1, x : x + s1] = (230, 40, 40)
        masks[t, y : y + s1, x : x + s1] = 1
        y2, x2 = h - s2 - 4 - t, w - s2 - 6 - t
        f[y2 : y2 + s2, x2 : x2 + s2] = (40, 60, 230)
        masks[t, y2 : y2 + s2, x2 : x2 + s2] = 2
        clip[t] = f
    return clip, masks


@pytest.fixture
def tiny_clip() -> tuple[np.ndarray, np.ndarray]:
    return make_tiny_clip()


@pytest.fixture(scope="session")
def segmenter():
    from pml_rt import Segmenter

    return Segmenter(backend="onnxruntime")
