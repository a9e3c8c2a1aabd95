"""Session options shared by every ONNX Runtime session of pml-rt (pml_rt.ort_options)."""

from __future__ import annotations

import numpy as np
import pytest

ort = pytest.importorskip("onnxruntime")

from pml_rt import knn_ort  # noqa: E402
from pml_rt.ort_options import session_options  # noqa: E402


def _spin(opts) -> tuple[str, str]:
    return (opts.get_session_config_entry("session.intra_op.allow_spinning"),
            opts.get_session_config_entry("session.inter_op.allow_spinning"))


def test_spinning_is_off_by_default(monkeypatch):
    monkeypatch.delenv("PML_RT_ORT_SPIN", raising=False)
    assert _spin(session_options(ort)) == ("0", "0")


def test_spinning_can_be_turned_back_on(monkeypatch):
    monkeypatch.setenv("PML_RT_ORT_SPIN", "1")
    assert _spin(session_options(ort)) == ("1", "1")


def test_bad_spin_setting_is_refused(monkeypatch):
    monkeypatch.setenv("PML_RT_ORT_SPIN", "yes")
    with pytest.raises(ValueError, match="PML_RT_ORT_SPIN must be 0 or 1"):
        session_options(ort)


@pytest.mark.parametrize("env, arg, expected", [("", None, 0), ("1", None, 1), ("1", 2, 2), ("x", None, 0)])
def test_threads_follow_argument_then_omp_num_threads(monkeypatch, env, arg, expected):
    monkeypatch.setenv("OMP_NUM_THREADS", env)
    assert session_options(ort, arg).intra_op_num_threads == expected


def test_knn_kernel_sessions_use_the_shared_options(monkeypatch):
    seen = []
    real = knn_ort.session_options

    def spy(mod, threads=None):
        opts = real(mod, threads)
        seen.append(_spin(opts))
        return opts

    monkeypatch.setattr(knn_ort, "session_options", spy)
    monkeypatch.setattr(knn_ort, "_sessions", {})
    knn_ort.topk(np.ones((2, 4), dtype=np.float32), 1)
    assert seen == [("0", "0")]
