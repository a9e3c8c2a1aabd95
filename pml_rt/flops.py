"""How much arithmetic the embedder needs per frame, and how fast this machine multiplies matrices.

Together they give a floor for the embed step: ``flops / measured FLOP/s`` is the time it
would take if every operation ran at the speed of a large matrix product, which none of the
depthwise convolutions of a MobileNet does. The benchmarks print both next to the measured
time so a reader can tell how far from the floor the runtime is.

A multiply-add counts as 2 FLOPs. Convolutions and matrix products are counted exactly from
the weight shapes and the output sizes; element-wise operations (normalisation, clipping,
additions) count one FLOP per output element and are reported apart, since they cost memory
traffic more than arithmetic.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np

from ._optional import require
from .errors import InputError

# Element-wise ops counted at one FLOP per output element.
_ELEMENTWISE = {"Add", "Sub", "Mul", "Div", "Sqrt", "Clip", "Relu", "Sigmoid", "Exp", "Pow", "Max", "Min"}


@dataclass
class FlopCount:
    """FLOPs of one forward pass: ``total`` = ``matmul`` (conv/gemm) + ``elementwise``; ``by_op`` per op type."""

    matmul: int = 0
    elementwise: int = 0
    by_op: dict[str, int] = field(default_factory=dict)
    input_shape: tuple[int, ...] = ()

    @property
    def total(self) -> int:
        return self.matmul + self.elementwise

    @property
    def gflops(self) -> float:
        return self.total / 1e9

    def add(self, op: str, n: int, elementwise: bool = False) -> None:
        if elementwise:
            self.elementwise += int(n)
        else:
            self.matmul += int(n)
        self.by_op[op] = self.by_op.get(op, 0) + int(n)


def _dims(value_info: Any) -> list[int | None]:
    return [d.dim_value if d.HasField("dim_value") else None for d in value_info.type.tensor_type.shape.dim]


def onnx_flops(model_path: str | os.PathLike, hw: tuple[int, int], batch: int = 1) -> FlopCount:
    """FLOPs of the ONNX embedder at input (batch, 3, H, W), counted from the graph.

    Fixes the dynamic input sizes, runs ONNX shape inference, then counts every Conv
    (2 * N * Hout * Wout * Cout * Cin/groups * kh * kw, plus the bias), Gemm/MatMul, and
    element-wise op. Needs the ``onnx`` package (``pip install onnx``).
    """
    onnx = require("onnx", "counting the embedder's FLOPs")
    numpy_helper = require("onnx.numpy_helper")
    path = Path(model_path)
    if not path.is_file():
        raise InputError(f"{path}: ONNX model not found")
    model = onnx.load(str(path))
    for inp in model.graph.input:
        dims = inp.type.tensor_type.shape.dim
        want = [batch, 3, int(hw[0]), int(hw[1])] if len(dims) == 4 else [batch] * len(dims)
        for d, v in zip(dims, want):
            d.ClearField("dim_param")
            d.dim_value = v
    inferred = onnx.shape_inference.infer_shapes(model, data_prop=True)
    shapes: dict[str, list[int | None]] = {}
    for vi in list(inferred.graph.value_info) + list(inferred.graph.output) + list(inferred.graph.input):
        shapes[vi.name] = _dims(vi)
    weights = {t.name: tuple(t.dims) for t in inferred.graph.initializer}
    for node in inferred.graph.node:  # weights may also sit in Constant nodes
        if node.op_type == "Constant" and node.attribute:
            for a in node.attribute:
                if a.name == "value":
                    weights[node.output[0]] = tuple(numpy_helper.to_array(a.t).shape)
    out = FlopCount(input_shape=(batch, 3, int(hw[0]), int(hw[1])))
    for node in inferred.graph.node:
        y = shapes.get(node.output[0]) if node.output else None
        if node.op_type == "Conv":
            w = weights.get(node.input[1])
            if w is None or y is None or any(v is None for v in y):
                raise InputError(f"{path}: cannot size Conv {node.name!r} (weight {w}, output {y})")
            n, cout, ho, wo = y[0], y[1], y[2], y[3]
            per_out = int(np.prod(w[1:]))  # Cin/groups * kh * kw
            flops = 2 * n * cout * ho * wo * per_out
            if len(node.input) > 2 and node.input[2]:
                flops += n * cout * ho * wo
            out.add("Conv", flops)
        elif node.op_type in ("Gemm", "MatMul"):
            a = shapes.get(node.input[0])
            if a is None or y is None or any(v is None for v in a + y):
                raise InputError(f"{path}: cannot size {node.op_type} {node.name!r}")
            out.add(node.op_type, 2 * int(np.prod(y)) * int(a[-1]))
        elif node.op_type in _ELEMENTWISE and y is not None and all(v is not None for v in y):
            out.add(node.op_type, int(np.prod(y)), elementwise=True)
        elif node.op_type == "ReduceSum":
            x = shapes.get(node.input[0])
            if x is not None and all(v is not None for v in x):
                out.add("ReduceSum", int(np.prod(x)), elementwise=True)
    return out


def torch_flops(model: Any, hw: tuple[int, int], batch: int = 1) -> FlopCount:
    """FLOPs of a torch embedder's convolutions and linear layers, counted with forward hooks.

    A cross-check of :func:`onnx_flops` (convolutions only; element-wise work is not hooked).
    """
    torch = require("torch", "counting FLOPs with torch hooks")
    out = FlopCount(input_shape=(batch, 3, int(hw[0]), int(hw[1])))

    def conv_hook(mod: Any, _inp: Any, y: Any) -> None:
        n, cout, ho, wo = y.shape
        flops = 2 * n * cout * ho * wo * (mod.in_channels // mod.groups) * int(np.prod(mod.kernel_size))
        if mod.bias is not None:
            flops += n * cout * ho * wo
        out.add("Conv", int(flops))

    def linear_hook(mod: Any, _inp: Any, y: Any) -> None:
        out.add("Gemm", 2 * int(np.prod(y.shape)) * mod.in_features)

    handles = []
    for m in model.modules():
        if isinstance(m, torch.nn.Conv2d):
            handles.append(m.register_forward_hook(conv_hook))
        elif isinstance(m, torch.nn.Linear):
            handles.append(m.register_forward_hook(linear_hook))
    try:
        with torch.inference_mode():
            model.eval()(torch.zeros(batch, 3, int(hw[0]), int(hw[1])), torch.zeros(batch))
    finally:
        for h in handles:
            h.remove()
    return out


@dataclass
class MatmulRate:
    """Measured float32 matrix-multiply speed: ``gflops`` per second, median over ``repeats``."""

    gflops: float
    shape: tuple[int, int, int]  # (n, d, m): (n, d) @ (d, m)
    median_ms: float
    device: str


def matmul_gflops(n: int = 6420, d: int = 128, m: int | None = None, repeats: int = 7,
                  xp: ModuleType | None = None) -> MatmulRate:
    """Time float32 ``(n, d) @ (d, m)`` and return the rate (median of ``repeats`` after one warm-up).

    The default is the kNN's own product at 854x480: 60 x 107 = 6420 cells of d = 128 against
    as many references. ``xp`` = numpy (host clock) or cupy (CUDA events).
    """
    xp = xp or np
    m = n if m is None else m
    rng = np.random.default_rng(0)
    a = xp.asarray(rng.standard_normal((n, d), dtype=np.float32))
    b = xp.asarray(rng.standard_normal((d, m), dtype=np.float32))
    flops = 2.0 * n * d * m
    times: list[float] = []
    on_gpu = xp.__name__ == "cupy"
    a @ b  # warm-up (thread pool start, cuBLAS handle)
    for _ in range(max(1, repeats)):
        if on_gpu:
            start, end = xp.cuda.Event(), xp.cuda.Event()
            start.record()
            a @ b
            end.record()
            end.synchronize()
            times.append(xp.cuda.get_elapsed_time(start, end) / 1e3)
        else:
            t0 = time.perf_counter()
            a @ b
            times.append(time.perf_counter() - t0)
    med = float(np.median(times))
    return MatmulRate(flops / med / 1e9, (n, d, m), med * 1e3, "cuda" if on_gpu else "cpu")
