"""Building FP16 TensorRT engines from the ONNX embedder, and the metadata that loading checks.

Build, save, load and run are separate steps (as in Polygraphy): this module builds and saves
a plan file with a small JSON sidecar next to it (``<plan>.json``: model, ONNX sha256,
TensorRT version, GPU, shapes, build time, the check against ONNX Runtime);
:mod:`pml_rt.backends.tensorrt_backend` loads a plan and refuses one whose sidecar does not
match the model, the installed TensorRT or the GPU, with the command that rebuilds it. The
runtime never builds an engine.

    python export/build_engine.py --onnx model.onnx --engine            # default name and folder
    python export/build_engine.py --onnx model.onnx --engine my.plan --timing-cache trt.cache

Written against the TensorRT 10 Python API (explicit batch is the default; FP16 by
``BuilderFlag.FP16``). TensorRT 11 removed that flag in favour of strongly typed networks;
building there raises a :class:`BackendError` saying so. Nothing here imports TensorRT or
CuPy at module level.
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
import hashlib
import json
import os
import re
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np

from .._optional import require
from ..errors import BackendError, InputError, MissingDependencyError
from ..registry import ModelConfig

# Tensor names of the exported embedder (pml_rt.network.export; not imported: it needs torch).
IMAGE, TIME, EMBEDDING = "image", "time", "embedding"
ENGINE_SUFFIX = ".plan"
SIDECAR_VERSION = 1

# FP16 engine against FP32 ONNX Runtime, per stride-8 cell (embeddings are unit vectors).
# FP16 rounds to 11 significant bits (relative error ~5e-4 per operation); after ~40 layers
# the embedding of a cell moves by a few 1e-3, i.e. cosine 1 - (few 1e-3)^2 / 2 > 0.9999.
# The limits leave an order of magnitude of room and still catch a broken build (a wrong
# input layout or a layer overflowing FP16 gives cosines far below 0.9).
CHECK_MIN_COSINE = 0.99  # every cell of every checked frame
CHECK_MEAN_COSINE = 0.999  # mean over all cells of all checked frames
CHECK_FRAMES = 5


def build_command(engine_path: str | os.PathLike | None = None, onnx_path: str = "model.onnx") -> str:
    """The shell command that builds an engine (quoted in every error about a missing one)."""
    tail = f" {engine_path}" if engine_path else ""
    return f"python export/build_engine.py --onnx {onnx_path} --engine{tail}"


# -- shapes ------------------------------------------------------------------------------------

_HW = re.compile(r"^\s*(\d+)\s*[xX×]\s*(\d+)\s*$")


def parse_hw(text: str, option: str = "--opt-shape") -> tuple[int, int]:
    """``"480x854"`` -> ``(480, 854)``: HEIGHTxWIDTH in pixels, both >= 8."""
    m = _HW.match(str(text))
    if not m:
        raise InputError(f"{option} must be HEIGHTxWIDTH in pixels, for example 480x854; got {text!r}")
    h, w = int(m.group(1)), int(m.group(2))
    if h < 8 or w < 8:
        raise InputError(f"{option} {text!r}: height and width must be at least 8 pixels (one stride-8 cell)")
    return h, w


@dataclass(frozen=True)
class ShapeProfile:
    """The input sizes an engine accepts: frames (N, 3, H, W) with min <= (N, H, W) <= max.

    TensorRT tunes its kernels for ``opt``; any size between ``min`` and ``max`` runs.
    """

    min_hw: tuple[int, int] = (240, 320)
    opt_hw: tuple[int, int] = (480, 854)
    max_hw: tuple[int, int] = (1088, 1920)
    opt_batch: int = 1
    max_batch: int = 4  # Segmenter.embed(batch_size=...) may send a few frames at once

    def validate(self) -> "ShapeProfile":
        names = ("--min-shape", "--opt-shape", "--max-shape")
        for name, hw in zip(names, (self.min_hw, self.opt_hw, self.max_hw)):
            if len(hw) != 2 or min(hw) < 8:
                raise InputError(f"{name} must be two sizes >= 8 pixels, got {hw}")
        for axis, label in ((0, "height"), (1, "width")):
            lo, mid, hi = self.min_hw[axis], self.opt_hw[axis], self.max_hw[axis]
            if not lo <= mid <= hi:
                raise InputError(
                    f"shape profile {label}s must satisfy min <= opt <= max; got {lo} (--min-shape), "
                    f"{mid} (--opt-shape), {hi} (--max-shape)"
                )
        if not 1 <= self.opt_batch <= self.max_batch:
            raise InputError(f"batch sizes must satisfy 1 <= opt <= max; got {self.opt_batch}, {self.max_batch}")
        return self

    def image_shapes(self) -> tuple[tuple[int, ...], tuple[int, ...], tuple[int, ...]]:
        """(min, opt, max) shapes of the ``image`` input, (N, 3, H, W)."""
        return ((1, 3, *self.min_hw), (self.opt_batch, 3, *self.opt_hw), (self.max_batch, 3, *self.max_hw))

    def time_shapes(self) -> tuple[tuple[int], tuple[int], tuple[int]]:
        """(min, opt, max) shapes of the ``time`` input, (N,)."""
        return ((1,), (self.opt_batch,), (self.max_batch,))

    def accepts(self, n: int, h: int, w: int) -> bool:
        return (1 <= n <= self.max_batch and self.min_hw[0] <= h <= self.max_hw[0]
                and self.min_hw[1] <= w <= self.max_hw[1])

    def describe(self) -> str:
        f = lambda hw: f"{hw[0]}x{hw[1]}"  # noqa: E731
        return f"min {f(self.min_hw)}, opt {f(self.opt_hw)}, max {f(self.max_hw)}, batch 1..{self.max_batch}"

    def to_dict(self) -> dict:
        return {"min_hw": list(self.min_hw), "opt_hw": list(self.opt_hw), "max_hw": list(self.max_hw),
                "opt_batch": self.opt_batch, "max_batch": self.max_batch}

    @classmethod
    def from_dict(cls, d: dict) -> "ShapeProfile":
        return cls(tuple(d["min_hw"]), tuple(d["opt_hw"]), tuple(d["max_hw"]),  # type: ignore[arg-type]
                   int(d.get("opt_batch", 1)), int(d.get("max_batch", 1)))

    @classmethod
    def from_args(cls, args: Any) -> "ShapeProfile":
        """From the ``--min-shape/--opt-shape/--max-shape`` options of export/build_engine.py."""
        return cls(parse_hw(args.min_shape, "--min-shape"), parse_hw(args.opt_shape, "--opt-shape"),
                   parse_hw(args.max_shape, "--max-shape"),
                   max_batch=int(getattr(args, "max_batch", None) or cls.max_batch)).validate()


# -- names and metadata ------------------------------------------------------------------------

def slug(text: str) -> str:
    """Lower-case file-name form: ``"NVIDIA H200"`` -> ``"nvidia-h200"``."""
    return re.sub(r"[^a-z0-9.]+", "-", str(text).lower()).strip("-.") or "unknown"


def engine_file_name(model: str, trt_version: str, gpu: str) -> str:
    """``<model>_trt<version>_<gpu>.plan``: a plan only runs on the TensorRT and GPU it was built for."""
    return f"{slug(model)}_trt{slug(trt_version)}_{slug(gpu)}{ENGINE_SUFFIX}"


def default_engine_dir() -> Path:
    """Where engines go by default: ``$PML_RT_ENGINE_DIR``, else ``$XDG_CACHE_HOME/pml-rt/engines``
    (``~/.cache/pml-rt/engines``). ``backend="auto"`` looks here too."""
    env = os.environ.get("PML_RT_ENGINE_DIR")
    if env:
        return Path(env).expanduser()
    cache = os.environ.get("XDG_CACHE_HOME") or str(Path("~/.cache").expanduser())
    return Path(cache) / "pml-rt" / "engines"


def default_engine_path(cfg: ModelConfig, trt_version: str, gpu: str,
                        directory: str | os.PathLike | None = None) -> Path:
    return Path(directory or default_engine_dir()) / engine_file_name(cfg.name, trt_version, gpu)


def sidecar_path(engine_path: str | os.PathLike) -> Path:
    """The metadata file next to a plan: ``x.plan`` -> ``x.plan.json``."""
    p = Path(engine_path)
    return p.with_name(p.name + ".json")


def sha256_file(path: str | os.PathLike) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


@dataclass
class EngineMeta:
    """What a plan was built from and for; stored as ``<plan>.json`` and checked on load."""

    model: str
    d: int
    stride: int
    onnx_sha256: str
    trt_version: str
    gpu: str
    compute_capability: str
    profile: dict
    precision: str = "fp16"
    inputs: list = field(default_factory=lambda: [IMAGE, TIME])
    outputs: list = field(default_factory=lambda: [EMBEDDING])
    onnx_path: str = ""
    built: str = ""  # ISO 8601, UTC
    build_seconds: float = 0.0
    pml_rt_version: str = ""
    check: dict | None = None  # result of the comparison with ONNX Runtime
    sidecar_version: int = SIDECAR_VERSION

    @property
    def shape_profile(self) -> ShapeProfile:
        return ShapeProfile.from_dict(self.profile)

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self), indent=2, sort_keys=True)

    @classmethod
    def from_json(cls, text: str, where: str = "engine metadata") -> "EngineMeta":
        try:
            raw = json.loads(text)
            known = {f.name for f in dataclasses.fields(cls)}
            return cls(**{k: v for k, v in raw.items() if k in known})
        except (ValueError, TypeError) as exc:
            raise BackendError(f"{where} is not valid engine metadata ({exc})") from exc

    def write(self, engine_path: str | os.PathLike) -> Path:
        from ..io import atomic_write_path  # noqa: PLC0415

        target = sidecar_path(engine_path)
        with atomic_write_path(target) as tmp:
            tmp.write_text(self.to_json() + "\n")
        return target


def read_meta(engine_path: str | os.PathLike) -> EngineMeta:
    """The sidecar of ``engine_path``; :class:`BackendError` naming the build command if absent."""
    p = Path(engine_path)
    side = sidecar_path(p)
    if not side.is_file():
        raise BackendError(
            f"TensorRT engine {p} has no metadata file {side.name} next to it, so it cannot be checked "
            f"against this model, TensorRT and GPU; rebuild it with: {build_command(p)}"
        )
    return EngineMeta.from_json(side.read_text(), str(side))


def meta_problems(meta: EngineMeta, cfg: ModelConfig, trt_version: str | None = None, gpu: str | None = None,
                  onnx_sha256: str | None = None) -> list[str]:
    """Why a plan cannot serve ``cfg`` here (empty list: it can). Checks the ones given."""
    problems = []
    if meta.model != cfg.name:
        problems.append(f"built for model {meta.model!r}, not {cfg.name!r}")
    if int(meta.d) != cfg.d or int(meta.stride) != cfg.stride:
        problems.append(f"embedding d={meta.d}, stride={meta.stride}; the model needs d={cfg.d}, stride={cfg.stride}")
    if list(meta.inputs) != [IMAGE, TIME] or list(meta.outputs) != [EMBEDDING]:
        problems.append(f"tensors {meta.inputs} -> {meta.outputs}; expected {[IMAGE, TIME]} -> {[EMBEDDING]}")
    if trt_version is not None and meta.trt_version != trt_version:
        problems.append(f"built with TensorRT {meta.trt_version}, but TensorRT {trt_version} is installed "
                        "(plans are not portable across TensorRT versions)")
    if gpu is not None and meta.gpu != gpu:
        problems.append(f"built on GPU {meta.gpu!r}, this is {gpu!r} (plans are tuned per GPU)")
    if onnx_sha256 is not None and meta.onnx_sha256 != onnx_sha256:
        problems.append(f"built from an ONNX file with sha256 {meta.onnx_sha256[:12]}..., not the given model "
                        f"({onnx_sha256[:12]}...)")
    return problems


def mismatch_error(engine_path: str | os.PathLike, problems: list[str]) -> BackendError:
    return BackendError(
        f"TensorRT engine {engine_path} does not fit: {'; '.join(problems)}. Rebuild it with: "
        f"{build_command(engine_path)}"
    )


def missing_engine_error(engine_path: str | os.PathLike | None) -> BackendError:
    if engine_path is None:
        return BackendError(
            "the tensorrt backend needs a built engine: pass engine_path=PATH (Segmenter(backend='tensorrt', "
            f"engine_path=...)), or build one into {default_engine_dir()} where it is found by itself, with: "
            f"{build_command()}"
        )
    return BackendError(f"TensorRT engine {engine_path} does not exist; build it with: {build_command(engine_path)}")


# -- the device --------------------------------------------------------------------------------

def cuda_device_info(device: int = 0) -> tuple[str, str]:
    """(GPU name, compute capability "9.0") of CUDA device ``device``, via CuPy or torch.

    Raises :class:`BackendError` where neither finds a device.
    """
    reasons = []
    try:
        cp = require("cupy")
        props = cp.cuda.runtime.getDeviceProperties(device)
        name = props["name"]
        name = name.decode() if isinstance(name, bytes) else str(name)
        return name, f"{props['major']}.{props['minor']}"
    except Exception as exc:  # noqa: BLE001 - absent library and absent device alike
        reasons.append(f"cupy: {type(exc).__name__}: {exc}")
    try:
        torch = require("torch")
        if torch.cuda.is_available():
            major, minor = torch.cuda.get_device_capability(device)
            return torch.cuda.get_device_name(device), f"{major}.{minor}"
        reasons.append("torch: torch.cuda.is_available() is False")
    except Exception as exc:  # noqa: BLE001
        reasons.append(f"torch: {type(exc).__name__}: {exc}")
    raise BackendError(f"no CUDA device found ({'; '.join(reasons)}); TensorRT engines need an NVIDIA GPU")


def preflight() -> str | None:
    """Why an engine cannot be built here (TensorRT or a GPU absent), or None. Cheap; for scripts
    that want to fail before a long export."""
    try:
        trt = require("tensorrt", "building a TensorRT engine")
    except MissingDependencyError as exc:
        return str(exc)
    if not hasattr(trt.BuilderFlag, "FP16"):
        return _no_fp16_message(trt.__version__)
    try:
        cuda_device_info()
    except BackendError as exc:
        return str(exc)
    return None


def _no_fp16_message(version: str) -> str:
    return (f"TensorRT {version} has no BuilderFlag.FP16 (TensorRT 11 builds only strongly typed networks); "
            "this builder targets TensorRT 10: pip install 'tensorrt>=10,<11'")


def find_engine(cfg: ModelConfig, directory: str | os.PathLike | None = None) -> Path | None:
    """The default-named plan for ``cfg`` on this TensorRT and GPU, if one was built (else None).

    Used by ``backend="auto"``; never raises (imports TensorRT and CuPy only to read their versions).
    """
    try:
        trt = require("tensorrt")
        gpu, _ = cuda_device_info()
        p = default_engine_path(cfg, trt.__version__, gpu, directory)
    except Exception:  # noqa: BLE001
        return None
    return p if p.is_file() and sidecar_path(p).is_file() else None


# -- building ----------------------------------------------------------------------------------

def keep_norms_in_fp32(trt: Any, network: Any) -> int:
    """Pin the per-cell L2-norm layers (sum of squares, + eps, sqrt) to FP32; return how many.

    A sum of squares over ~100 channels of unnormalised backbone features can pass FP16's
    largest value (65504) although each feature fits easily; those layers output one channel
    per cell (N, 1, h, w), so pinning them costs next to nothing. Reductions, unary and
    element-wise layers with a float (N, 1, h, w) output are pinned.
    """
    kinds = {trt.LayerType.REDUCE, trt.LayerType.UNARY, trt.LayerType.ELEMENTWISE}
    pinned = 0
    for i in range(network.num_layers):
        layer = network.get_layer(i)
        if layer.type not in kinds or layer.num_outputs != 1:
            continue
        out = layer.get_output(0)
        shape = tuple(out.shape)
        if out.dtype == trt.float32 and len(shape) == 4 and shape[1] == 1:
            layer.precision = trt.float32
            layer.set_output_type(0, trt.float32)
            pinned += 1
    return pinned


def _atomic_bytes(path: Path, data: Any) -> None:
    from ..io import atomic_write_path  # noqa: PLC0415

    with atomic_write_path(path) as tmp:
        with open(tmp, "wb") as f:
            f.write(memoryview(data))


def build_engine(onnx_path: str | os.PathLike, engine_path: str | os.PathLike, cfg: ModelConfig,
                 profile: ShapeProfile = ShapeProfile(), *, timing_cache: str | os.PathLike | None = None,
                 workspace_gb: float = 4.0, log: Callable[[str], None] = print) -> EngineMeta:
    """Build an FP16 engine from ``onnx_path``, save it (atomically) with its sidecar; return the metadata.

    ``timing_cache``: a file read before the build (if it exists) and rewritten after, so a
    second build of the same layers on the same GPU skips most kernel timing.
    """
    trt = require("tensorrt", "building a TensorRT engine")
    onnx_path, engine_path = Path(onnx_path), Path(engine_path)
    if not onnx_path.is_file():
        raise InputError(f"ONNX model {onnx_path} not found; export it with: "
                         f"python export/build_engine.py --onnx {onnx_path}")
    if not hasattr(trt.BuilderFlag, "FP16"):
        raise BackendError(_no_fp16_message(trt.__version__))
    profile.validate()
    if workspace_gb <= 0:
        raise InputError(f"--workspace-gb must be > 0, got {workspace_gb}")
    gpu, cc = cuda_device_info()
    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    network = builder.create_network(0)  # TensorRT 10: every network has an explicit batch
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(onnx_path)):
        errors = [str(parser.get_error(i)) for i in range(parser.num_errors)]
        raise BackendError(f"TensorRT cannot parse {onnx_path}: {'; '.join(errors) or 'no message'}")
    inputs = [network.get_input(i).name for i in range(network.num_inputs)]
    outputs = [network.get_output(i).name for i in range(network.num_outputs)]
    if sorted(inputs) != sorted([IMAGE, TIME]) or outputs != [EMBEDDING]:
        raise BackendError(f"{onnx_path} has tensors {inputs} -> {outputs}; expected {[IMAGE, TIME]} -> {[EMBEDDING]}")

    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, int(workspace_gb * (1 << 30)))
    config.set_flag(trt.BuilderFlag.FP16)  # FP16 kernels where faster; I/O tensors stay FP32
    pinned = keep_norms_in_fp32(trt, network)
    if pinned:
        config.set_flag(trt.BuilderFlag.PREFER_PRECISION_CONSTRAINTS)
    opt_profile = builder.create_optimization_profile()
    opt_profile.set_shape(IMAGE, *profile.image_shapes())
    opt_profile.set_shape(TIME, *profile.time_shapes())
    config.add_optimization_profile(opt_profile)
    cache_path = Path(timing_cache) if timing_cache else None
    cache_bytes = cache_path.read_bytes() if cache_path is not None and cache_path.is_file() else b""
    cache = config.create_timing_cache(cache_bytes)
    config.set_timing_cache(cache, False)  # False: refuse a cache from another TensorRT/GPU
    log(f"building FP16 TensorRT {trt.__version__} engine on {gpu} ({profile.describe()}; "
        f"{pinned} normalisation layers kept in FP32)"
        + (f", timing cache {cache_path} ({len(cache_bytes)} bytes)" if cache_path else ""))

    t0 = time.perf_counter()
    plan = builder.build_serialized_network(network, config)
    seconds = time.perf_counter() - t0
    if plan is None:
        raise BackendError(f"TensorRT failed to build an engine from {onnx_path}; see its messages above")
    _atomic_bytes(engine_path, plan)
    if cache_path is not None:
        updated = config.get_timing_cache() or cache
        _atomic_bytes(cache_path, updated.serialize())

    from .. import __version__  # noqa: PLC0415

    meta = EngineMeta(
        model=cfg.name, d=cfg.d, stride=cfg.stride, onnx_sha256=sha256_file(onnx_path),
        trt_version=trt.__version__, gpu=gpu, compute_capability=cc, profile=profile.to_dict(),
        onnx_path=str(onnx_path.resolve()), built=_dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        build_seconds=round(seconds, 2), pml_rt_version=__version__,
    )
    meta.write(engine_path)
    return meta


# -- checking against ONNX Runtime -------------------------------------------------------------

def load_check_frames(folder: str | os.PathLike, count: int = CHECK_FRAMES) -> list[np.ndarray]:
    """``count`` evenly spaced frames (uint8 (H, W, 3)) of an image folder."""
    from ..io import FolderSource  # noqa: PLC0415

    src = FolderSource(folder)
    idx = np.unique(np.linspace(0, len(src) - 1, min(count, len(src))).round().astype(int))
    return [src.read(int(i)) for i in idx]


def default_check_folder() -> Path | None:
    """DAVIS blackswan frames from ``$PML_RT_DATA`` (or ../shared/data next to a source checkout), if present."""
    roots = [os.environ.get("PML_RT_DATA"), str(Path(__file__).resolve().parents[3] / "shared" / "data")]
    for r in roots:
        if r:
            p = Path(r) / "davis2016-dev" / "JPEGImages" / "480p" / "blackswan"
            if p.is_dir():
                return p
    return None


def synthetic_frames(hw: tuple[int, int], count: int = 2, seed: int = 0) -> list[np.ndarray]:
    """Smooth colour fields with a few shapes: stand-ins where no real frames are at hand."""
    rng = np.random.default_rng(seed)
    h, w = hw
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    frames = []
    for i in range(count):
        base = np.stack([128 + 100 * np.sin(xx / (37 + 9 * c) + yy / (53 + 7 * c) + i + c) for c in range(3)], -1)
        for _ in range(4):
            cy, cx, r = rng.uniform(0, h), rng.uniform(0, w), rng.uniform(h / 10, h / 4)
            base[(yy - cy) ** 2 + (xx - cx) ** 2 < r * r] = rng.uniform(0, 255, 3)
        frames.append(np.clip(base + rng.normal(0, 4, base.shape), 0, 255).astype(np.uint8))
    return frames


def cell_cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Cosine similarity of corresponding cells of two embeddings (..., d): float64 (...)."""
    a = np.asarray(a, np.float64)
    b = np.asarray(b, np.float64)
    num = (a * b).sum(-1)
    den = np.sqrt((a * a).sum(-1) * (b * b).sum(-1))
    return num / np.maximum(den, 1e-12)


def compare_backends(reference: Any, candidate: Any, frames: list[np.ndarray], time_scale: float) -> dict:
    """Embed ``frames`` with two backends and compare per cell: cosine min/mean and max |difference|."""
    from ..xp import to_host  # noqa: PLC0415

    cos_all, max_abs = [], 0.0
    for i, f in enumerate(frames):
        t = np.array([i * time_scale], np.float32)
        a = to_host(reference.embed(f[None], t))
        b = to_host(candidate.embed(f[None], t))
        cos_all.append(cell_cosines(a, b).ravel())
        max_abs = max(max_abs, float(np.abs(a.astype(np.float64) - b).max()))
    cos = np.concatenate(cos_all)
    return {"frames": len(frames), "cells": int(cos.size), "min_cosine": float(cos.min()),
            "mean_cosine": float(cos.mean()), "max_abs_diff": max_abs}


def check_engine(engine_path: str | os.PathLike, onnx_path: str | os.PathLike, cfg: ModelConfig,
                 frames: list[np.ndarray]) -> dict:
    """Compare the engine with ONNX Runtime (CPU, FP32) on ``frames``; the dict says ``passed`` and why."""
    from .onnxruntime_backend import OnnxRuntimeBackend  # noqa: PLC0415
    from .tensorrt_backend import TensorRTBackend  # noqa: PLC0415

    with OnnxRuntimeBackend(cfg, model_path=onnx_path) as ref, TensorRTBackend(cfg, engine_path=engine_path) as trt_b:
        res = compare_backends(ref, trt_b, frames, cfg.time_scale)
    res["tolerance"] = {"min_cosine": CHECK_MIN_COSINE, "mean_cosine": CHECK_MEAN_COSINE}
    res["passed"] = bool(res["min_cosine"] >= CHECK_MIN_COSINE and res["mean_cosine"] >= CHECK_MEAN_COSINE)
    return res


def build_engine_cli(args: Any, onnx_path: str | os.PathLike, cfg: ModelConfig) -> int:
    """The ``--engine`` part of export/build_engine.py: build, save, check, print. Returns an exit code.

    0: built and the check passed; 1: built but the check failed; 2: could not build here.
    """
    why = preflight()
    if why:
        print(f"error: cannot build a TensorRT engine here: {why}", file=sys.stderr)
        return 2
    trt = require("tensorrt")
    try:
        profile = ShapeProfile.from_args(args)
        gpu, _ = cuda_device_info()
        engine_path = Path(args.engine) if args.engine else default_engine_path(cfg, trt.__version__, gpu)
        meta = build_engine(onnx_path, engine_path, cfg, profile, timing_cache=args.timing_cache,
                            workspace_gb=float(args.workspace_gb))
    except (InputError, BackendError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    size_mb = engine_path.stat().st_size / 1e6
    print(f"built {engine_path} ({size_mb:.1f} MB) in {meta.build_seconds:.1f} s; metadata {sidecar_path(engine_path)}")

    folder = Path(args.check_frames) if getattr(args, "check_frames", None) else default_check_folder()
    if folder is not None:
        frames = load_check_frames(folder)
        source = f"{len(frames)} real frames from {folder}"
    else:
        frames = synthetic_frames(profile.opt_hw)
        source = "2 synthetic frames (no --check-frames and no DAVIS data found)"
    n, (h, w) = 1, frames[0].shape[:2]
    if not profile.accepts(n, h, w):
        print(f"error: check frames are {h}x{w}, outside the engine's profile ({profile.describe()}); "
              "pass --check-frames with frames inside it", file=sys.stderr)
        return 1
    res = check_engine(engine_path, onnx_path, cfg, frames)
    res["source"] = source
    meta.check = res
    meta.write(engine_path)
    verdict = "PASSED" if res["passed"] else "FAILED"
    print(f"check against ONNX Runtime (CPU, FP32) on {source}: {verdict}\n"
          f"  per-cell cosine: min {res['min_cosine']:.5f} (needs >= {CHECK_MIN_COSINE}), "
          f"mean {res['mean_cosine']:.6f} (needs >= {CHECK_MEAN_COSINE}); max |diff| {res['max_abs_diff']:.4f}")
    print(f"build time: {meta.build_seconds:.1f} s")
    return 0 if res["passed"] else 1
