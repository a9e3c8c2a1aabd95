"""TensorRT backend: runs a prebuilt FP16 plan on a CUDA stream; embeddings stay on the device.

Loading checks the plan's sidecar (``<plan>.json``, written by
:func:`pml_rt.backends.tensorrt_build.build_engine`) against the model, the installed
TensorRT and the GPU, and raises :class:`BackendError` with the command that rebuilds it on
any mismatch. This module never builds an engine.

Frames go to the device as uint8 (a quarter of the bytes of float32) and are converted and
laid out as (N, 3, H, W) float32 there; the output (N, d, h, w) float32 is a CuPy array that
the kNN and the upsampler use in place (CuPy frames, from a GPU decoder, skip the upload).
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path
from typing import Any

import numpy as np

from .._optional import require
from ..errors import BackendError, InputError
from ..registry import ModelConfig
from . import tensorrt_build as tb
from .base import Backend, check_batch, check_embedding


class TensorRTBackend(Backend):
    """Runs a TensorRT plan built by ``python export/build_engine.py --onnx model.onnx --engine PATH``.

    engine_path: the plan; None looks for the default-named plan for this model, TensorRT and
    GPU in :func:`pml_rt.backends.tensorrt_build.default_engine_dir`. model_path: an ONNX file
    the plan must have been built from (its sha256 is compared with the sidecar's); a plan found
    by itself must match the packaged model. device: CUDA device index, or "cuda" / "cuda:N".
    """

    name = "tensorrt"

    def __init__(self, cfg: ModelConfig, engine_path: str | os.PathLike | None = None,
                 model_path: str | os.PathLike | None = None, device: int | str = 0):
        super().__init__(cfg)
        self.engine_path = Path(engine_path) if engine_path else None
        self.model_path = Path(model_path) if model_path else None
        self.device = _device_index(device)
        self.meta: tb.EngineMeta | None = None
        self._trt: Any = None
        self._cp: Any = None
        self._runtime: Any = None
        self._engine: Any = None
        self._context: Any = None
        self._stream: Any = None
        self._image: Any = None  # device buffer (N, 3, H, W) float32, reused while the size holds
        self._time: Any = None  # device buffer (N,) float32
        self._profile: tb.ShapeProfile | None = None

    # lifecycle ---------------------------------------------------------------------------
    def _activate(self) -> None:
        trt = require("tensorrt", "the TensorRT backend")
        cp = require("cupy", "the TensorRT backend (device buffers and streams)")
        path = self._resolve_path(trt)
        meta = tb.read_meta(path)
        gpu, _ = tb.cuda_device_info(self.device)
        sha = None
        if self.model_path is not None:
            if not self.model_path.is_file():
                raise BackendError(f"model file {self.model_path} is missing")
            sha = tb.sha256_file(self.model_path)
        elif self.engine_path is None and self.cfg.path.is_file():
            sha = tb.sha256_file(self.cfg.path)  # a plan found by itself must be of the packaged model
        problems = tb.meta_problems(meta, self.cfg, trt.__version__, gpu, sha)
        if problems:
            raise tb.mismatch_error(path, problems)
        if meta.check is not None and not meta.check.get("passed", False):
            warnings.warn(f"TensorRT engine {path} failed its check against ONNX Runtime when it was built "
                          f"(min cosine {meta.check.get('min_cosine')}); its embeddings may be wrong", stacklevel=3)

        with cp.cuda.Device(self.device):
            logger = trt.Logger(trt.Logger.WARNING)
            runtime = trt.Runtime(logger)
            engine = runtime.deserialize_cuda_engine(path.read_bytes())
            if engine is None:
                raise tb.mismatch_error(path, ["TensorRT could not deserialize it (see its messages above)"])
            names = [engine.get_tensor_name(i) for i in range(engine.num_io_tensors)]
            ins = sorted(n for n in names if engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT)
            outs = [n for n in names if engine.get_tensor_mode(n) == trt.TensorIOMode.OUTPUT]
            if ins != sorted([tb.IMAGE, tb.TIME]) or outs != [tb.EMBEDDING]:
                raise tb.mismatch_error(path, [f"engine tensors {ins} -> {outs}, expected "
                                               f"{[tb.IMAGE, tb.TIME]} -> {[tb.EMBEDDING]}"])
            out_shape = tuple(engine.get_tensor_shape(tb.EMBEDDING))
            if len(out_shape) != 4 or out_shape[1] != self.cfg.d:
                raise tb.mismatch_error(path, [f"engine output shape {out_shape}, expected (N, {self.cfg.d}, h, w)"])
            for n in names:
                if trt.nptype(engine.get_tensor_dtype(n)) != np.float32:
                    raise tb.mismatch_error(path, [f"tensor {n!r} is {engine.get_tensor_dtype(n)}, expected FLOAT"])
            context = engine.create_execution_context()
            if context is None:
                raise BackendError(f"TensorRT could not create an execution context for {path} (out of device memory?)")
            # A blocking stream: work queued on the legacy default stream (where CuPy runs unless
            # told otherwise) waits for it and vice versa, so downstream code needs no extra sync.
            stream = cp.cuda.Stream(non_blocking=False)
        lo, _, hi = engine.get_tensor_profile_shape(tb.IMAGE, 0)
        self._profile = tb.ShapeProfile((int(lo[2]), int(lo[3])), (int(lo[2]), int(lo[3])), (int(hi[2]), int(hi[3])),
                                        1, int(hi[0]))
        self._trt, self._cp, self.meta, self.engine_path = trt, cp, meta, path
        self._runtime, self._engine, self._context, self._stream = runtime, engine, context, stream

    def _resolve_path(self, trt: Any) -> Path:
        if self.engine_path is not None:
            if not self.engine_path.is_file():
                raise tb.missing_engine_error(self.engine_path)
            return self.engine_path
        gpu, _ = tb.cuda_device_info(self.device)
        found = tb.default_engine_path(self.cfg, trt.__version__, gpu)
        if not found.is_file():
            raise tb.missing_engine_error(None)
        return found

    def _close(self) -> None:
        if self._stream is not None:
            self._stream.synchronize()
        # Context before engine before runtime: each holds device memory the next one owns.
        self._context = None
        self._engine = None
        self._runtime = None
        self._image = self._time = None
        self._stream = None

    # inference ---------------------------------------------------------------------------
    def embed(self, frames: Any, times: Any) -> Any:
        """frames uint8 (N, H, W, 3) (NumPy or CuPy), times (N,) -> CuPy float32 (N, h, w, d)."""
        self.activate()
        cp = self._cp
        frames, times = _check_batch(frames, times, cp)
        n, h, w, _ = frames.shape
        profile = self._profile
        assert profile is not None  # set by activate()
        if not profile.accepts(n, h, w):
            raise InputError(
                f"frames of {n}x{h}x{w} (N x H x W) lie outside the TensorRT engine's profile "
                f"({profile.describe()}); rebuild it with --min-shape/--max-shape covering {h}x{w}: "
                f"{tb.build_command(self.engine_path)}"
            )
        with cp.cuda.Device(self.device):
            with self._stream:
                if self._image is None or self._image.shape != (n, 3, h, w):
                    self._image = cp.empty((n, 3, h, w), dtype=cp.float32)
                    self._time = cp.empty((n,), dtype=cp.float32)
                src = cp.asarray(frames)  # uint8 upload on self._stream (no copy if already on the device)
                cp.copyto(self._image, src.transpose(0, 3, 1, 2))  # layout and uint8 -> float32 on the device
                self._time.set(times)  # host (N,) float32 -> device, on self._stream
                out = self._run()
                done = self._stream.record()
            cp.cuda.get_current_stream().wait_event(done)  # the caller's stream sees a finished output
            out = out.transpose(0, 2, 3, 1)  # (N, h, w, d): one row per cell for the kNN
            check_embedding(out, self.cfg, (h, w), f"backend {self.name}")
        return out

    def _run(self) -> Any:
        """Execute on the current stream (``self._stream``); return the (N, d, h, w) float32 output."""
        cp, ctx = self._cp, self._context
        if not ctx.set_input_shape(tb.IMAGE, tuple(self._image.shape)):
            raise InputError(f"TensorRT rejected input shape {tuple(self._image.shape)} for {self.engine_path}")
        if not ctx.set_input_shape(tb.TIME, tuple(self._time.shape)):
            raise InputError(f"TensorRT rejected time shape {tuple(self._time.shape)} for {self.engine_path}")
        out = cp.empty(tuple(ctx.get_tensor_shape(tb.EMBEDDING)), dtype=cp.float32)
        ctx.set_tensor_address(tb.IMAGE, self._image.data.ptr)
        ctx.set_tensor_address(tb.TIME, self._time.data.ptr)
        ctx.set_tensor_address(tb.EMBEDDING, out.data.ptr)
        if not ctx.execute_async_v3(self._stream.ptr):
            raise BackendError(f"TensorRT failed to run {self.engine_path} (see its messages above)")
        return out

    def _infer(self, image: np.ndarray, time: np.ndarray) -> Any:
        """The base-class path (float32 (N, 3, H, W) host batch) for callers that use it directly."""
        cp = self._cp
        with cp.cuda.Device(self.device), self._stream:
            self._image = cp.asarray(image)
            self._time = cp.asarray(time)
            out = self._run()
            done = self._stream.record()
        cp.cuda.get_current_stream().wait_event(done)
        return out

    def describe(self) -> str:
        if self.meta is None:
            return f"tensorrt ({self.engine_path or 'engine not loaded'})"
        return (f"tensorrt ({self.engine_path.name if self.engine_path else '?'}, TensorRT {self.meta.trt_version}, "
                f"{self.meta.gpu}, {self.meta.precision})")


def _check_batch(frames: Any, times: Any, cp: Any) -> tuple[Any, np.ndarray]:
    """The checks of :func:`pml_rt.backends.base.prepare_batch`, without converting (the device does)."""
    return check_batch(frames, times)


def _device_index(device: int | str) -> int:
    """0, 1, ... or "cuda" / "cuda:1" (the spelling torch takes) -> the CUDA device index."""
    if isinstance(device, int) and device >= 0:
        return device
    text = str(device)
    if text == "cuda":
        return 0
    if text.startswith("cuda:") and text[5:].isdigit():
        return int(text[5:])
    raise InputError(f"device must be a CUDA device index or 'cuda'/'cuda:N' for the tensorrt backend, got {device!r}")
