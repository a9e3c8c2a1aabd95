"""ONNX Runtime session options shared by every session pml-rt opens (embedder and kNN kernels).

Why one place: the pipeline alternates between several ONNX Runtime sessions and NumPy on
the same few cores. By default ONNX Runtime's worker threads keep spinning for a while after
each run, waiting for more work; on a 2-core machine those spinning threads steal the cores
from the next session or from NumPy. Measured on parkour (20 frames, 854x480, default
propagation): 248 ms per frame of nearest-neighbour search with spinning, 134 ms without.
So spinning is off unless ``PML_RT_ORT_SPIN=1``.
"""

from __future__ import annotations

import os
from typing import Any


def spinning() -> bool:
    """Whether ONNX Runtime worker threads may spin between runs (``PML_RT_ORT_SPIN``, default 0)."""
    value = os.environ.get("PML_RT_ORT_SPIN", "0")
    if value not in ("0", "1"):
        raise ValueError(f"PML_RT_ORT_SPIN must be 0 or 1, got {value!r}")
    return value == "1"


def session_options(ort: Any, threads: int | None = None) -> Any:
    """``ort.SessionOptions`` with full graph optimisation, quiet logs and spinning off.

    threads: intra-op threads; None follows ``OMP_NUM_THREADS`` where set (batch workers set it
    to their CPU share, so co-located workers do not fight), else ONNX Runtime uses every core.
    """
    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    if threads is None:
        env = os.environ.get("OMP_NUM_THREADS", "")
        threads = int(env) if env.isdigit() and int(env) > 0 else None
    if threads:
        opts.intra_op_num_threads = int(threads)
    flag = "1" if spinning() else "0"
    opts.add_session_config_entry("session.intra_op.allow_spinning", flag)
    opts.add_session_config_entry("session.inter_op.allow_spinning", flag)
    return opts
