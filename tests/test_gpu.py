"""The GPU path against the CPU path: same results, on the device.

Every test here is always collected and carries the ``gpu`` marker (TensorRT ones also
``tensorrt``); where CUDA, CuPy, torch-with-CUDA or TensorRT is absent it is skipped with the
reason, so a CPU-only run lists them as skipped rather than hiding them. Run just these with
``pytest -m "gpu or tensorrt"`` (benchmarks/device_check.py does).

Tolerances: kNN, propagation and upsampling run the same float32 arithmetic on both devices,
only summed in another order, so they agree to 1e-5 (labels exactly, but for cells whose two
best scores tie within that). Torch on CUDA uses TF32 convolutions by default (10-bit
mantissa), TensorRT FP16 (11-bit): embeddings are compared by per-cell cosine similarity.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np
import pytest

from pml_rt.backends import tensorrt_build as tb
from pml_rt.errors import BackendError, InputError
from pml_rt.knn import global_topk, local_topk, vote
from pml_rt.propagate import PropagationConfig, propagate_scores
from pml_rt.registry import get_model_config
from pml_rt.upsample import METHODS, upsample_labels, upsample_scores
from pml_rt.xp import array_modules, to_host

pytestmark = pytest.mark.gpu
CFG = get_model_config()


# -- fixtures that skip with the reason -----------------------------------------------------------

@pytest.fixture(scope="module")
def cp():
    """CuPy with a usable CUDA device."""
    for name, mod, why in array_modules():
        if name == "cupy":
            if mod is None:
                pytest.skip(f"CuPy with a CUDA device is absent ({why})")
            return mod
    pytest.skip("pml_rt.xp.array_modules() lists no cupy")


@pytest.fixture(scope="module")
def torch_cuda():
    torch = pytest.importorskip("torch", reason="torch is not installed")
    if not torch.cuda.is_available():
        pytest.skip("torch has no CUDA device (torch.cuda.is_available() is False)")
    return torch


@pytest.fixture(scope="module")
def trt(cp):
    return pytest.importorskip("tensorrt", reason="TensorRT is not installed (pip install 'pml-rt[tensorrt]')")


def _frame(hw: tuple[int, int] = (240, 320)) -> np.ndarray:
    """A real DAVIS frame cropped to ``hw`` where the data is present, else a synthetic one."""
    folder = tb.default_check_folder()
    if folder is not None:
        f = tb.load_check_frames(folder, 1)[0]
        if f.shape[0] >= hw[0] and f.shape[1] >= hw[1]:
            return np.ascontiguousarray(f[: hw[0], : hw[1]])
    return tb.synthetic_frames(hw, 1)[0]


def _unit(x: np.ndarray) -> np.ndarray:
    return (x / np.linalg.norm(x, axis=-1, keepdims=True)).astype(np.float32)


def _clip_embeddings(t: int = 5, h: int = 12, w: int = 16, d: int = 128, seed: int = 0):
    """Embeddings (T, h, w, d) of a clip with two objects drifting right, and frame 0's labels (h, w)."""
    rng = np.random.default_rng(seed)
    protos = _unit(rng.standard_normal((3, d)))
    labels = np.zeros((t, h, w), np.int32)
    for i in range(t):
        labels[i, 2:6, 2 + i : 6 + i] = 1
        labels[i, 7:11, 8 + i // 2 : 13 + i // 2] = 2
    emb = _unit(protos[labels] + 0.5 * rng.standard_normal((t, h, w, d)).astype(np.float32) / np.sqrt(d))
    return emb.astype(np.float16), labels[0]


# -- embedders: torch on CUDA against ONNX Runtime on the CPU -------------------------------------

def test_torch_cuda_matches_onnxruntime_cpu(torch_cuda, cp):
    from pml_rt.backends.onnxruntime_backend import OnnxRuntimeBackend
    from pml_rt.backends.torch_backend import TorchBackend

    frame = _frame()
    with OnnxRuntimeBackend(CFG) as ref, TorchBackend(CFG, device="cuda") as gpu:
        out = gpu.embed(frame[None], np.zeros(1, np.float32))
        assert isinstance(out, cp.ndarray), "torch on CUDA must hand back a device array"
        res = tb.compare_backends(ref, gpu, [frame, frame[::-1].copy()], CFG.time_scale)
    assert res["min_cosine"] >= 0.999 and res["mean_cosine"] >= 0.9999, res


def test_onnxruntime_iobinding_on_cuda(cp):
    from pml_rt.backends.onnxruntime_backend import OnnxRuntimeBackend, gpu_providers
    from pml_rt.backends.onnxruntime_gpu import OnnxRuntimeIOBindingBackend

    if "CUDAExecutionProvider" not in gpu_providers():
        pytest.skip("onnxruntime-gpu (CUDAExecutionProvider) is not installed")
    frame = _frame()
    with OnnxRuntimeBackend(CFG) as ref, OnnxRuntimeIOBindingBackend(CFG, device="cuda") as gpu:
        assert isinstance(gpu.embed(frame[None], np.zeros(1, np.float32)), cp.ndarray)
        res = tb.compare_backends(ref, gpu, [frame], CFG.time_scale)
    assert res["min_cosine"] >= 0.999 and res["mean_cosine"] >= 0.9999, res


# -- kNN, propagation and upsampling: CuPy against NumPy -----------------------------------------

def _sorted_cands(c):
    s, lab = to_host(c.sims), to_host(c.labels)
    order = np.argsort(-s, axis=1, kind="stable")
    return np.take_along_axis(s, order, 1), np.take_along_axis(lab, order, 1)


@pytest.mark.parametrize("m", [40, 3000])  # 3000 takes topk's two-stage (block maxima) path
def test_global_topk_cupy_matches_numpy(cp, m):
    rng = np.random.default_rng(1)
    q, r = _unit(rng.standard_normal((500, 128))), _unit(rng.standard_normal((m, 128)))
    lab = rng.integers(0, 3, m).astype(np.int32)
    a = _sorted_cands(global_topk(q, r, lab, 5))
    b = _sorted_cands(global_topk(cp.asarray(q), cp.asarray(r), cp.asarray(lab), 5))
    np.testing.assert_allclose(b[0], a[0], atol=1e-5)
    np.testing.assert_array_equal(b[1], a[1])


def test_local_topk_and_vote_cupy_match_numpy(cp):
    rng = np.random.default_rng(2)
    q = _unit(rng.standard_normal((10, 13, 64)))
    keys = _unit(rng.standard_normal((3, 10, 13, 64)))
    klab = rng.integers(-1, 3, (3, 10, 13)).astype(np.int32)
    ca = local_topk(q, keys, klab, radius=2, k=5)
    cb = local_topk(cp.asarray(q), cp.asarray(keys), cp.asarray(klab), radius=2, k=5)
    a, b = _sorted_cands(ca), _sorted_cands(cb)
    np.testing.assert_allclose(b[0], a[0], atol=1e-5)
    np.testing.assert_array_equal(b[1], a[1])
    for weighting in ("majority", "softmax"):
        sa, ua = vote(ca, 3, weighting)
        sb, ub = vote(cb, 3, weighting)
        assert isinstance(sb, cp.ndarray)
        np.testing.assert_allclose(to_host(sb), sa, atol=1e-5)
        np.testing.assert_array_equal(to_host(ub), ua)


@pytest.mark.parametrize("recent", [7, 0])
def test_propagate_cupy_matches_numpy(cp, recent):
    emb, ref = _clip_embeddings()
    cfg = PropagationConfig(recent_frames=recent)
    host = list(propagate_scores(emb, 0, ref, 3, cfg, xp=np))
    dev = list(propagate_scores(cp.asarray(emb), 0, cp.asarray(ref), 3, cfg, xp=cp))
    assert [t for t, _ in dev] == [t for t, _ in host]
    for (_, a), (_, b) in zip(host, dev):
        assert isinstance(b, cp.ndarray)
        np.testing.assert_allclose(to_host(b), a, atol=1e-5)


@pytest.mark.parametrize("method", METHODS)
def test_upsample_cupy_matches_numpy(cp, method):
    rng = np.random.default_rng(3)
    hh, ww = 96, 136  # 12 x 17 cells, the last column cut by the frame's edge
    raw = rng.random((3, 12, 17)).astype(np.float32) ** 4
    scores = raw / raw.sum(0, keepdims=True)
    guide = _frame((hh, ww))
    a = upsample_scores(scores, (hh, ww), method, guide)
    b = upsample_scores(cp.asarray(scores), (hh, ww), method, cp.asarray(guide))
    assert isinstance(b, cp.ndarray)
    # bilinear and joint-bilateral: fixed arithmetic; the solver iterates in float32 (PCG).
    np.testing.assert_allclose(to_host(b), a, atol=1e-5 if method != "bilateral-solver" else 1e-3)
    la = upsample_labels(scores, (hh, ww), method, guide)
    lb = to_host(upsample_labels(cp.asarray(scores), (hh, ww), method, cp.asarray(guide)))
    assert (la == lb).mean() >= 0.999


def test_video_on_device_propagates_like_the_host(torch_cuda, cp):
    """A GPU backend keeps the embeddings on the device; propagate() searches and upsamples
    there and gives the masks the host path gives from the same embeddings."""
    from pml_rt import Segmenter

    frames = np.stack([np.roll(_frame((96, 128)), 3 * i, axis=1) for i in range(4)])  # a slow pan
    mask = np.zeros((96, 128), np.uint8)
    mask[30:70, 40:90] = 1
    seg = Segmenter(backend="torch", device="cuda")
    video = seg.embed(frames, progress=False)
    assert video.meta["on_device"] and isinstance(video.device_embeddings, cp.ndarray)
    np.testing.assert_allclose(to_host(video.device_embeddings).astype(np.float32),
                               video.embeddings.astype(np.float32), atol=1e-3)
    dev = video.propagate(mask, upsample="bilinear")
    video.device_embeddings = None  # the same embeddings, searched on the host
    host = video.propagate(mask, upsample="bilinear")
    assert isinstance(dev, np.ndarray) and dev.dtype == np.uint8
    assert (dev == host).mean() >= 0.999


def test_live_stream_on_device_matches_host(torch_cuda, cp):
    """Live mode with a GPU backend searches on the device and yields the host path's masks."""
    from pml_rt import Segmenter

    frames = [np.roll(_frame((96, 128)), 3 * i, axis=1) for i in range(4)]
    mask = np.zeros((96, 128), np.uint8)
    mask[30:70, 40:90] = 1
    dev = list(Segmenter(backend="torch", device="cuda").stream(frames, mask, upsample="bilinear"))
    host = list(Segmenter(backend="onnxruntime").stream(frames, mask, upsample="bilinear"))
    assert all(isinstance(m, np.ndarray) for m in dev)
    for a, b in zip(dev, host):  # TF32 convolutions on the GPU: allow a few boundary pixels
        assert (a == b).mean() >= 0.99


# -- TensorRT ---------------------------------------------------------------------------------------

TEST_PROFILE = tb.ShapeProfile((240, 320), (240, 320), (256, 352), opt_batch=1, max_batch=2)


@pytest.fixture(scope="module")
def engine(trt, tmp_path_factory) -> Path:
    """An engine of the packaged model: ``$PML_RT_TEST_ENGINE`` (device_check.py builds one), or a
    small one built here (profile 240x320..256x352, batch 1..2)."""
    given = os.environ.get("PML_RT_TEST_ENGINE")
    if given and Path(given).is_file():
        return Path(given)
    d = tmp_path_factory.mktemp("engine")
    plan = d / "test.plan"
    tb.build_engine(CFG.path, plan, CFG, TEST_PROFILE, timing_cache=os.environ.get("PML_RT_TIMING_CACHE"),
                    workspace_gb=2.0, log=lambda s: None)
    return plan


@pytest.mark.tensorrt
def test_tensorrt_matches_onnxruntime(engine, cp):
    from pml_rt.backends.tensorrt_backend import TensorRTBackend

    res = tb.check_engine(engine, CFG.path, CFG, [_frame(), _frame()[:, ::-1].copy()])
    assert res["passed"], res
    with TensorRTBackend(CFG, engine_path=engine) as b:
        out = b.embed(np.stack([_frame(), _frame()]), np.array([0.0, 0.01], np.float32))
        assert isinstance(out, cp.ndarray) and out.shape == (2, 30, 40, CFG.d)
        dev = b.embed(cp.asarray(_frame())[None], np.zeros(1, np.float32))  # frames already on the device
        np.testing.assert_allclose(to_host(dev)[0], to_host(out)[0], atol=1e-6)
        assert "tensorrt" in b.describe()


@pytest.mark.tensorrt
def test_tensorrt_rejects_sizes_outside_profile(engine, cp):
    from pml_rt.backends.tensorrt_backend import TensorRTBackend

    with TensorRTBackend(CFG, engine_path=engine) as b:
        with pytest.raises(InputError, match="--min-shape/--max-shape"):
            b.embed(np.zeros((1, 64, 64, 3), np.uint8), np.zeros(1))


@pytest.mark.tensorrt
def test_tensorrt_rejects_mismatched_sidecar(engine, cp, tmp_path):
    from pml_rt.backends.tensorrt_backend import TensorRTBackend

    plan = tmp_path / "copy.plan"
    shutil.copy(engine, plan)
    meta = tb.read_meta(engine)
    meta.trt_version = "0.0.0"
    meta.write(plan)
    with pytest.raises(BackendError, match="Rebuild it with"):
        TensorRTBackend(CFG, engine_path=plan).activate()
