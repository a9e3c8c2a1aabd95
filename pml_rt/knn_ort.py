"""CPU kernels for the nearest-neighbour hot spots, run by ONNX Runtime.

On the CPU, NumPy's ``argpartition``, block maxima and gathers over the (queries x
references) similarity matrix cost more than the matrix product itself (measured in
``docs/RESULTS.md``). ONNX Runtime, already the embedder's runtime, has a multithreaded
``TopK`` that selects the k best of a row in one pass. Three tiny graphs, shipped in
``pml_rt/kernels/`` (no ``onnx`` needed at run time), fuse the product and the selection:

- ``topk``:               sims (N, M)                       -> values, indices (N, k)
- ``matmul_topk``:        queries (N, D) @ refs_t (D, M)    -> values, indices (N, k)
- ``window_topk``:        queries (G, A, D) @ keys (G, M, D)^T + bias (A, M)
                                                            -> values, indices (G, A, k)

All take float32 and return float32 values and int64 indices, unordered within a row (like
:func:`pml_rt.knn.topk`). ``export/build_kernels.py`` rebuilds the files from
:func:`build_graphs`; a test checks the shipped files match it. CuPy arrays never come here:
the array-module code in :mod:`pml_rt.knn` runs on the GPU.
"""

from __future__ import annotations

import os
import threading
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np

from .errors import BackendError
from .ort_options import session_options

KERNELS = ("topk", "matmul_topk", "window_topk")
OPSET = 17

_sessions: dict[str, Any] = {}
_lock = threading.Lock()


def kernel_dir() -> Path:
    return Path(str(resources.files("pml_rt") / "kernels"))


def _session(name: str) -> Any:
    """The ONNX Runtime session of kernel ``name``, created once per process (thread-safe)."""
    sess = _sessions.get(name)
    if sess is not None:
        return sess
    with _lock:
        if name not in _sessions:
            import onnxruntime as ort  # noqa: PLC0415 - a core dependency, imported when first used

            path = kernel_dir() / f"{name}.onnx"
            if not path.is_file():
                raise BackendError(f"kNN kernel {path} is missing from the installed package; reinstall pml-rt "
                                   "or rebuild it with: python export/build_kernels.py")
            opts = session_options(ort)
            _sessions[name] = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
        return _sessions[name]


def _f32(a: Any) -> np.ndarray:
    return np.ascontiguousarray(a, dtype=np.float32)


def _k(k: int) -> np.ndarray:
    return np.array([k], dtype=np.int64)


def topk(sims: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Values float32 (N, k) and indices int64 (N, k) of the k largest entries of each row of
    ``sims`` float32 (N, M); requires 1 <= k <= M."""
    v, i = _session("topk").run(None, {"sims": _f32(sims), "k": _k(k)})
    return v, i


def matmul_topk(queries: np.ndarray, refs_t: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """The k best of ``queries`` (N, D) @ ``refs_t`` (D, M) per row, without keeping the
    (N, M) product: values float32 (N, k), indices int64 (N, k) into the M references."""
    v, i = _session("matmul_topk").run(None, {"queries": _f32(queries), "refs_t": _f32(refs_t), "k": _k(k)})
    return v, i


def window_topk(queries: np.ndarray, keys: np.ndarray, bias: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Batched window search: ``queries`` (G, A, D) @ ``keys`` (G, M, D) transposed + ``bias``
    (A, M), then the k best per (g, a): values float32 (G, A, k), indices int64 (G, A, k).
    Keys come as rows (gathering rows of D contiguous numbers is the cheap copy); ONNX Runtime
    fuses the transpose into the product."""
    v, i = _session("window_topk").run(None, {"queries": _f32(queries), "keys": _f32(keys),
                                              "bias": _f32(bias), "k": _k(k)})
    return v, i


def build_graphs() -> dict[str, bytes]:
    """Serialised ONNX models of the three kernels (needs the ``onnx`` package)."""
    from ._optional import require  # noqa: PLC0415

    onnx = require("onnx", purpose="building the kNN kernels")
    from onnx import TensorProto, helper  # noqa: PLC0415

    f, i64 = TensorProto.FLOAT, TensorProto.INT64

    def vi(name: str, dtype: int, shape: list) -> Any:
        return helper.make_tensor_value_info(name, dtype, shape)

    def topk_node(src: str, axis: int) -> Any:
        return helper.make_node("TopK", [src, "k"], ["values", "indices"], axis=axis, largest=1, sorted=0)

    k_in = vi("k", i64, [1])
    specs = {
        "topk": ([], [vi("sims", f, ["N", "M"]), k_in], ["N", "K"], topk_node("sims", -1)),
        "matmul_topk": ([helper.make_node("MatMul", ["queries", "refs_t"], ["sims"])],
                        [vi("queries", f, ["N", "D"]), vi("refs_t", f, ["D", "M"]), k_in], ["N", "K"],
                        topk_node("sims", -1)),
        "window_topk": ([helper.make_node("Transpose", ["keys"], ["keys_t"], perm=[0, 2, 1]),
                         helper.make_node("MatMul", ["queries", "keys_t"], ["prod"]),
                         helper.make_node("Add", ["prod", "bias"], ["sims"])],
                        [vi("queries", f, ["G", "A", "D"]), vi("keys", f, ["G", "M", "D"]),
                         vi("bias", f, ["A", "M"]), k_in], ["G", "A", "K"], topk_node("sims", -1)),
    }
    out = {}
    for name, (nodes, inputs, out_shape, sel) in specs.items():
        graph = helper.make_graph(nodes + [sel], name, inputs,
                                  [vi("values", f, out_shape), vi("indices", i64, out_shape)])
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)],
                                  producer_name="pml-rt")
        model.ir_version = 8
        onnx.checker.check_model(model)
        out[name] = model.SerializeToString()
    return out


def write_graphs(out_dir: str | os.PathLike | None = None) -> list[Path]:
    """Write the kernels to ``out_dir`` (default: the package's ``kernels/``), atomically."""
    out = Path(out_dir) if out_dir is not None else kernel_dir()
    out.mkdir(parents=True, exist_ok=True)
    paths = []
    for name, data in build_graphs().items():
        path = out / f"{name}.onnx"
        tmp = path.with_name(f".{path.name}.tmp")
        tmp.write_bytes(data)
        os.replace(tmp, path)
        paths.append(path)
    return paths
