"""CPU-testable parts of the GPU deployment path.

Plan names, shape options, engine metadata and the errors for missing or mismatched engines;
the TensorRT build sequence against a stand-in ``tensorrt`` module that records the calls (the
real one needs a GPU: tests/test_gpu.py); ``backend="auto"``'s choice with monkeypatched
availability; the IO-binding ONNX Runtime backend on CPU buffers; the FLOP count; and that
none of these modules imports torch, TensorRT or CuPy when imported.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import types
from pathlib import Path

import numpy as np
import pytest

import pml_rt.backends as backends
from pml_rt.backends import tensorrt_build as tb
from pml_rt.errors import BackendError, InputError
from pml_rt.registry import get_model_config

CFG = get_model_config()
REPO = Path(__file__).resolve().parents[1]


# -- names and shapes --------------------------------------------------------------------------

@pytest.mark.parametrize("model, version, gpu, expected", [
    ("mnv2-os8-untrained", "10.7.0", "NVIDIA H200", "mnv2-os8-untrained_trt10.7.0_nvidia-h200.plan"),
    ("m", "10.0.1.6", "NVIDIA GeForce RTX 4090", "m_trt10.0.1.6_nvidia-geforce-rtx-4090.plan"),
    ("A/B", "10.3", "  Tesla T4 ", "a-b_trt10.3_tesla-t4.plan"),
])
def test_engine_file_name(model, version, gpu, expected):
    assert tb.engine_file_name(model, version, gpu) == expected


def test_default_engine_path_uses_env(monkeypatch, tmp_path):
    monkeypatch.setenv("PML_RT_ENGINE_DIR", str(tmp_path))
    p = tb.default_engine_path(CFG, "10.7.0", "NVIDIA H200")
    assert p.parent == tmp_path and p.name.startswith(CFG.name)
    assert tb.sidecar_path(p).name == p.name + ".json"


@pytest.mark.parametrize("text, hw", [("480x854", (480, 854)), (" 240 X 320 ", (240, 320)),
                                      ("1088×1920", (1088, 1920))])
def test_parse_hw(text, hw):
    assert tb.parse_hw(text) == hw


@pytest.mark.parametrize("text", ["480", "480x", "x854", "480*854", "4x854", "-480x854", "480x854x3", ""])
def test_parse_hw_rejects(text):
    with pytest.raises(InputError, match="--max-shape"):
        tb.parse_hw(text, "--max-shape")


def test_profile_validates_order():
    with pytest.raises(InputError, match="min <= opt <= max"):
        tb.ShapeProfile((480, 854), (240, 320), (1088, 1920)).validate()
    with pytest.raises(InputError, match="batch"):
        tb.ShapeProfile(opt_batch=3, max_batch=2).validate()
    p = tb.ShapeProfile().validate()
    assert p.image_shapes() == ((1, 3, 240, 320), (1, 3, 480, 854), (4, 3, 1088, 1920))
    assert p.time_shapes() == ((1,), (1,), (4,))
    assert p.accepts(1, 480, 854) and p.accepts(4, 240, 320)
    assert not p.accepts(5, 480, 854) and not p.accepts(1, 200, 854) and not p.accepts(1, 480, 2000)
    assert tb.ShapeProfile.from_dict(p.to_dict()) == p


def test_profile_from_build_engine_args():
    sys.path.insert(0, str(REPO / "export"))
    try:
        import build_engine  # export/build_engine.py
    finally:
        sys.path.pop(0)
    args = build_engine.build_parser().parse_args(["--onnx", "m.onnx", "--engine"])
    assert args.engine == ""
    assert tb.ShapeProfile.from_args(args) == tb.ShapeProfile()
    bad = build_engine.build_parser().parse_args(["--onnx", "m.onnx", "--engine", "--min-shape", "600x900"])
    with pytest.raises(InputError, match="--min-shape"):
        tb.ShapeProfile.from_args(bad)


# -- metadata and the errors that name the build command -----------------------------------------

def _meta(**over) -> tb.EngineMeta:
    m = tb.EngineMeta(model=CFG.name, d=CFG.d, stride=CFG.stride, onnx_sha256="ab" * 32, trt_version="10.7.0",
                      gpu="NVIDIA H200", compute_capability="9.0", profile=tb.ShapeProfile().to_dict())
    for k, v in over.items():
        setattr(m, k, v)
    return m


def test_meta_round_trip(tmp_path):
    plan = tmp_path / "e.plan"
    m = _meta(check={"passed": True, "min_cosine": 0.999})
    m.write(plan)
    back = tb.read_meta(plan)
    assert back == m and back.shape_profile == tb.ShapeProfile()
    # unknown keys from a newer writer are ignored
    raw = json.loads(tb.sidecar_path(plan).read_text())
    raw["future_field"] = 1
    tb.sidecar_path(plan).write_text(json.dumps(raw))
    assert tb.read_meta(plan) == m


def test_meta_problems_name_each_mismatch():
    m = _meta()
    assert tb.meta_problems(m, CFG, "10.7.0", "NVIDIA H200", "ab" * 32) == []
    probs = tb.meta_problems(_meta(model="other", d=2 * CFG.d), CFG, "10.8.0", "NVIDIA A100", "cd" * 32)
    text = " | ".join(probs)
    assert len(probs) == 5
    for word in ("other", f"d={2 * CFG.d}", "TensorRT 10.7.0", "NVIDIA A100", "sha256"):
        assert word in text


def test_missing_sidecar_names_build_command(tmp_path):
    plan = tmp_path / "e.plan"
    plan.write_bytes(b"x")
    with pytest.raises(BackendError, match=r"python export/build_engine.py --onnx model.onnx --engine .*e\.plan"):
        tb.read_meta(plan)


def test_corrupt_sidecar(tmp_path):
    plan = tmp_path / "e.plan"
    tb.sidecar_path(plan).write_text("{not json")
    with pytest.raises(BackendError, match="not valid engine metadata"):
        tb.read_meta(plan)


# -- stand-ins for tensorrt and cupy -------------------------------------------------------------

class _Recorder:
    def __init__(self):
        self.calls: list[tuple] = []


def fake_tensorrt(rec: _Recorder, version: str = "10.7.0", fp16: bool = True, build_ok: bool = True):
    """A module with the TensorRT 10 names tensorrt_build uses; records what it is asked."""
    trt = types.ModuleType("tensorrt")
    trt.__version__ = version

    class Logger:
        WARNING = 2

        def __init__(self, severity):
            rec.calls.append(("Logger", severity))

    class _Tensor:
        def __init__(self, name):
            self.name = name

    class _Layer:
        def __init__(self, kind, shape, dtype="float32"):
            self.type, self.num_outputs, self.precision = kind, 1, None
            self._out = types.SimpleNamespace(shape=shape, dtype=dtype)

        def get_output(self, i):
            return self._out

        def set_output_type(self, i, dtype):
            self.output_type = dtype

    class Network:
        num_inputs, num_outputs = 2, 1

        def __init__(self):
            # conv, the L2 norm of one tap (x*x, reduce, +eps, sqrt, divide), an int shape op
            self.layers = [_Layer("CONVOLUTION", (-1, 32, -1, -1)), _Layer("ELEMENTWISE", (-1, 32, -1, -1)),
                           _Layer("REDUCE", (-1, 1, -1, -1)), _Layer("ELEMENTWISE", (-1, 1, -1, -1)),
                           _Layer("UNARY", (-1, 1, -1, -1)), _Layer("ELEMENTWISE", (-1, 32, -1, -1)),
                           _Layer("UNARY", (1,), "int64")]
            rec.layers = self.layers

        @property
        def num_layers(self):
            return len(self.layers)

        def get_layer(self, i):
            return self.layers[i]

        def get_input(self, i):
            return _Tensor(["image", "time"][i])

        def get_output(self, i):
            return _Tensor("embedding")

    class Profile:
        def set_shape(self, name, lo, opt, hi):
            rec.calls.append(("set_shape", name, tuple(lo), tuple(opt), tuple(hi)))

    class Cache:
        def __init__(self, data):
            self.data = bytes(data)

        def serialize(self):
            return self.data + b"+more"

    class Config:
        def __init__(self):
            self.cache = None

        def set_memory_pool_limit(self, pool, size):
            rec.calls.append(("workspace", pool, size))

        def set_flag(self, flag):
            rec.calls.append(("flag", flag))

        def add_optimization_profile(self, p):
            rec.calls.append(("add_profile",))

        def create_timing_cache(self, data):
            rec.calls.append(("create_timing_cache", bytes(data)))
            return Cache(data)

        def set_timing_cache(self, cache, ignore_mismatch):
            rec.calls.append(("set_timing_cache", ignore_mismatch))
            self.cache = cache
            return True

        def get_timing_cache(self):
            return self.cache

    class Builder:
        def __init__(self, logger):
            pass

        def create_network(self, flags):
            rec.calls.append(("create_network", flags))
            return Network()

        def create_builder_config(self):
            return Config()

        def create_optimization_profile(self):
            return Profile()

        def build_serialized_network(self, network, config):
            rec.calls.append(("build",))
            return b"PLAN-BYTES" if build_ok else None

    class OnnxParser:
        num_errors = 0

        def __init__(self, network, logger):
            pass

        def parse_from_file(self, path):
            rec.calls.append(("parse", path))
            return True

    flags = types.SimpleNamespace(PREFER_PRECISION_CONSTRAINTS="PREFER")
    if fp16:
        flags.FP16 = "FP16"
    trt.float32 = "float32"
    trt.LayerType = types.SimpleNamespace(REDUCE="REDUCE", UNARY="UNARY", ELEMENTWISE="ELEMENTWISE")
    trt.Logger, trt.Builder, trt.OnnxParser = Logger, Builder, OnnxParser
    trt.BuilderFlag, trt.MemoryPoolType = flags, types.SimpleNamespace(WORKSPACE="WORKSPACE")
    return trt


@pytest.fixture
def fake_gpu(monkeypatch):
    """A stand-in TensorRT 10.7.0 on an 'NVIDIA H200'; yields the call recorder."""
    rec = _Recorder()
    monkeypatch.setitem(sys.modules, "tensorrt", fake_tensorrt(rec))
    monkeypatch.setitem(sys.modules, "cupy", types.SimpleNamespace(ndarray=type("ndarray", (), {})))
    monkeypatch.setattr(tb, "cuda_device_info", lambda device=0: ("NVIDIA H200", "9.0"))
    return rec


def test_build_engine_sequence(fake_gpu, tmp_path):
    onnx = tmp_path / "m.onnx"
    onnx.write_bytes(b"onnx-bytes")
    cache = tmp_path / "trt.cache"
    cache.write_bytes(b"old")
    plan = tmp_path / "out" / "e.plan"
    prof = tb.ShapeProfile((240, 320), (480, 854), (720, 1280), max_batch=2)
    meta = tb.build_engine(onnx, plan, CFG, prof, timing_cache=cache, workspace_gb=2, log=lambda s: None)
    calls = fake_gpu.calls
    assert ("create_network", 0) in calls  # explicit batch is TensorRT 10's only mode
    assert ("flag", "FP16") in calls and ("flag", "PREFER") in calls
    # the per-cell norm layers (reduce, + eps, sqrt) are pinned to FP32; convs, x*x, divide, int ops are not
    assert [layer.precision for layer in fake_gpu.layers] == [None, None, "float32", "float32", "float32", None, None]
    assert ("workspace", "WORKSPACE", 2 << 30) in calls
    assert ("set_shape", "image", (1, 3, 240, 320), (1, 3, 480, 854), (2, 3, 720, 1280)) in calls
    assert ("set_shape", "time", (1,), (1,), (2,)) in calls
    assert ("create_timing_cache", b"old") in calls and ("set_timing_cache", False) in calls
    names = [c[0] for c in calls]
    assert names.index("add_profile") < names.index("build")
    assert plan.read_bytes() == b"PLAN-BYTES"
    assert cache.read_bytes() == b"old+more"  # rewritten with what the build learnt
    assert meta.trt_version == "10.7.0" and meta.gpu == "NVIDIA H200" and meta.precision == "fp16"
    assert meta.onnx_sha256 == tb.sha256_file(onnx)
    assert tb.read_meta(plan) == meta
    assert not list(plan.parent.glob(".*tmp*"))  # atomic writes leave no temporaries


def test_build_engine_without_cache_and_failed_build(monkeypatch, tmp_path):
    rec = _Recorder()
    monkeypatch.setitem(sys.modules, "tensorrt", fake_tensorrt(rec, build_ok=False))
    monkeypatch.setattr(tb, "cuda_device_info", lambda device=0: ("NVIDIA H200", "9.0"))
    onnx = tmp_path / "m.onnx"
    onnx.write_bytes(b"x")
    with pytest.raises(BackendError, match="failed to build"):
        tb.build_engine(onnx, tmp_path / "e.plan", CFG, log=lambda s: None)
    assert ("create_timing_cache", b"") in rec.calls
    assert not (tmp_path / "e.plan").exists()


def test_build_engine_refuses_tensorrt_without_fp16_flag(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "tensorrt", fake_tensorrt(_Recorder(), version="11.0.0", fp16=False))
    onnx = tmp_path / "m.onnx"
    onnx.write_bytes(b"x")
    with pytest.raises(BackendError, match=r"TensorRT 11.0.0 .*tensorrt>=10,<11"):
        tb.build_engine(onnx, tmp_path / "e.plan", CFG, log=lambda s: None)


def test_build_engine_missing_onnx(fake_gpu, tmp_path):
    with pytest.raises(InputError, match="export it with"):
        tb.build_engine(tmp_path / "none.onnx", tmp_path / "e.plan", CFG)


# -- loading: missing and mismatched engines -----------------------------------------------------

def _backend(**kw):
    from pml_rt.backends.tensorrt_backend import TensorRTBackend

    return TensorRTBackend(CFG, **kw)


def test_load_missing_engine_names_command(fake_gpu, tmp_path):
    path = tmp_path / "absent.plan"
    with pytest.raises(BackendError, match=r"does not exist; build it with: python export/build_engine.py "
                                           r"--onnx model.onnx --engine .*absent\.plan"):
        _backend(engine_path=path).activate()


def test_load_without_engine_path_names_command(fake_gpu, tmp_path, monkeypatch):
    monkeypatch.setenv("PML_RT_ENGINE_DIR", str(tmp_path))
    with pytest.raises(BackendError, match=r"engine_path=.*python export/build_engine.py --onnx model.onnx --engine"):
        _backend().activate()


@pytest.mark.parametrize("change, words", [
    ({"trt_version": "10.3.0"}, "TensorRT 10.3.0, but TensorRT 10.7.0 is installed"),
    ({"gpu": "NVIDIA A100-SXM4-80GB"}, "NVIDIA A100"),
    ({"model": "another-model"}, "another-model"),
    ({"d": 2 * CFG.d}, f"d={2 * CFG.d}"),
])
def test_load_mismatched_engine_says_rebuild(fake_gpu, tmp_path, change, words):
    plan = tmp_path / "e.plan"
    plan.write_bytes(b"PLAN")
    _meta(**change).write(plan)
    with pytest.raises(BackendError) as err:
        _backend(engine_path=plan).activate()
    msg = str(err.value)
    assert words in msg and "Rebuild it with: python export/build_engine.py --onnx model.onnx --engine" in msg


def test_load_engine_of_other_onnx(fake_gpu, tmp_path):
    plan, onnx = tmp_path / "e.plan", tmp_path / "mine.onnx"
    plan.write_bytes(b"PLAN")
    onnx.write_bytes(b"different weights")
    _meta().write(plan)
    with pytest.raises(BackendError, match="sha256"):
        _backend(engine_path=plan, model_path=onnx).activate()


def test_build_engine_cli_without_tensorrt(monkeypatch, tmp_path, capsys):
    monkeypatch.setitem(sys.modules, "tensorrt", None)  # import fails as where it is not installed
    args = argparse.Namespace(engine="", min_shape="240x320", opt_shape="480x854", max_shape="1088x1920",
                              timing_cache=None, workspace_gb=4.0, check_frames=None)
    assert tb.build_engine_cli(args, tmp_path / "m.onnx", CFG) == 2
    err = capsys.readouterr().err
    assert "cannot build a TensorRT engine here" in err and "pip install" in err
    assert tb.preflight() is not None
    assert tb.find_engine(CFG) is None


# -- backend="auto" -------------------------------------------------------------------------------

def _status(monkeypatch, ort=True, trt=False, torch=None, cuda=False):
    """torch: None (absent), "CPU" or "CPU + CUDA"."""
    rows = [("onnxruntime", ort, "CPU" if ort else "missing"),
            ("tensorrt", trt, "tensorrt and CUDA present" if trt else "tensorrt not importable"),
            ("torch", torch is not None, torch or "missing")]
    monkeypatch.setattr(backends, "backend_status", lambda: rows)
    monkeypatch.setattr(backends, "_cuda_ok", lambda: (cuda, "" if cuda else "no CUDA device"))
    monkeypatch.setattr(backends, "_ort_ok", lambda: ort)


@pytest.mark.parametrize("env, kwargs, expected", [
    (dict(ort=True, trt=True, torch="CPU + CUDA", cuda=True), {"engine_path": "e.plan"}, "tensorrt"),
    (dict(ort=True, trt=True, torch="CPU + CUDA", cuda=True), {}, "torch"),
    (dict(ort=True, trt=False, torch="CPU + CUDA", cuda=True), {}, "torch"),
    (dict(ort=True, trt=False, torch="CPU", cuda=False), {}, "onnxruntime"),
    (dict(ort=True, trt=False, torch=None, cuda=False), {"engine_path": "e.plan"}, "onnxruntime"),
    (dict(ort=False, trt=False, torch="CPU", cuda=False), {}, "torch"),
])
def test_pick_auto(monkeypatch, env, kwargs, expected):
    _status(monkeypatch, **env)
    name, why = backends._pick_auto(CFG, kwargs)
    assert name == expected and why


def test_pick_auto_nothing_usable(monkeypatch):
    _status(monkeypatch, ort=False, torch=None)
    with pytest.raises(BackendError, match="pip install onnxruntime"):
        backends._pick_auto(CFG, {})


def test_auto_logs_choice(monkeypatch, caplog):
    _status(monkeypatch, ort=True, torch="CPU")
    with caplog.at_level("INFO", logger="pml_rt"):
        b = backends.create_backend("auto", CFG)
    assert b.name == "onnxruntime" and "backend auto -> onnxruntime" in caplog.text


# What auto does beyond picking: torch device, engine discovery and option filtering.

def test_auto_torch_on_cuda_gets_the_cuda_device(monkeypatch):
    _status(monkeypatch, ort=True, torch="CPU + CUDA", cuda=True)
    b = backends.create_backend("auto", CFG)
    assert b.name == "torch" and b.device == "cuda"


def test_auto_finds_a_default_named_engine(monkeypatch, tmp_path):
    _status(monkeypatch, ort=True, trt=True, torch="CPU + CUDA", cuda=True)
    monkeypatch.setattr(tb, "find_engine", lambda cfg, directory=None: tmp_path / "e.plan")
    assert backends._pick_auto(CFG, {})[0] == "tensorrt"


def test_auto_drops_options_the_chosen_backend_does_not_take(monkeypatch):
    _status(monkeypatch, ort=True, torch=None)
    b = backends.create_backend("auto", CFG, engine_path="e.plan")
    assert b.name == "onnxruntime"


# -- ONNX Runtime with IO binding (CPU buffers here; CUDA ones in tests/test_gpu.py) -------------

def test_iobinding_backend_matches_plain_onnxruntime_on_cpu():
    from pml_rt.backends.onnxruntime_backend import OnnxRuntimeBackend
    from pml_rt.backends.onnxruntime_gpu import OnnxRuntimeIOBindingBackend

    frames = np.random.default_rng(0).integers(0, 256, (2, 40, 72, 3), dtype=np.uint8)
    times = np.array([0.0, 0.01], np.float32)
    with OnnxRuntimeBackend(CFG) as plain, OnnxRuntimeIOBindingBackend(CFG, device="cpu") as bound:
        a = plain.embed(frames, times)
        b = bound.embed(frames, times)
        c = bound.embed(frames[:1, :32, :48], times[:1])  # a new size rebinds
    assert b.shape == (2, 5, 9, CFG.d) and c.shape == (1, 4, 6, CFG.d)
    np.testing.assert_array_equal(a, b)


def test_iobinding_backend_on_cuda_without_onnxruntime_gpu():
    from pml_rt.backends.onnxruntime_backend import gpu_providers
    from pml_rt.backends.onnxruntime_gpu import OnnxRuntimeIOBindingBackend

    if "CUDAExecutionProvider" in gpu_providers():
        pytest.skip("onnxruntime-gpu is installed here; tests/test_gpu.py covers the CUDA path")
    with pytest.raises(BackendError, match="onnxruntime-gpu"):
        OnnxRuntimeIOBindingBackend(CFG, device="cuda").activate()
    with pytest.raises(InputError, match="device"):
        OnnxRuntimeIOBindingBackend(CFG, device="gpu")


# -- FLOPs ------------------------------------------------------------------------------------------

def test_onnx_flops_match_torch_hooks():
    pytest.importorskip("onnx", reason="onnx is not installed (pip install onnx)")
    pytest.importorskip("torch", reason="torch is not installed")
    from pml_rt.flops import onnx_flops, torch_flops
    from pml_rt.network.embedder import Embedder

    f = onnx_flops(CFG.path, (480, 854))
    g = torch_flops(Embedder(CFG, imagenet=False), (480, 854))
    # The ONNX graph has batch norm folded into conv biases, so it counts one extra add per
    # conv output; the multiply-adds agree to well under 2 %.
    assert f.by_op["Conv"] >= g.by_op["Conv"]
    assert f.by_op["Conv"] == pytest.approx(g.by_op["Conv"], rel=0.02)
    assert 1e9 < f.total < 1e11 and f.elementwise < 0.05 * f.total
    # conv cost grows with the number of output cells
    assert onnx_flops(CFG.path, (240, 432)).by_op["Conv"] == pytest.approx(f.by_op["Conv"] / 4, rel=0.05)


def test_matmul_probe():
    from pml_rt.flops import matmul_gflops

    r = matmul_gflops(n=256, d=64, repeats=2)
    assert r.gflops > 0 and r.shape == (256, 64, 256) and r.device == "cpu"


# -- lazy imports ------------------------------------------------------------------------------------

def test_gpu_modules_import_nothing_heavy():
    code = ("import sys, pml_rt, pml_rt.backends, pml_rt.flops, pml_rt.backends.tensorrt_build, "
            "pml_rt.backends.tensorrt_backend, pml_rt.backends.onnxruntime_gpu; "
            "print(sorted(m for m in ('torch', 'tensorrt', 'cupy', 'onnx') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
