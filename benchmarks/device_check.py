"""One prepared check of the GPU path, in under 5 minutes on a machine with an NVIDIA GPU.

    python benchmarks/device_check.py                 # writes into a temporary folder
    python benchmarks/device_check.py --out $OUT      # keep the engine, logs and JSON there

Steps, each with its own time limit inside a 290-second budget:

1. environment: GPU, driver, CUDA, CuPy, torch, TensorRT, ONNX Runtime providers; without a
   CUDA device it says so and exits with status 3 at once;
2. where TensorRT is installed: export the packaged embedder to ONNX and build its FP16 engine
   with ``export/build_engine.py --engine`` (default name, in ``<out>/engines``; timing cache
   in ``<out>``), which also checks it against ONNX Runtime;
3. ``pytest -m "gpu or tensorrt"`` (the engine of step 2 is handed to the tests);
4. ``benchmarks/latency.py --device cuda`` on DAVIS blackswan (or a synthetic clip);
5. CPU against GPU: the same clip segmented from its first-frame mask with ONNX Runtime + NumPy
   and with the best GPU embedder + CuPy; the masks must agree at IoU >= 0.99;

and last a short table. Exit status 0 when every step ran and met its target, 1 otherwise.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parents[1]
if __package__ in (None, ""):  # run as a script: make the repo root importable
    sys.path.insert(0, str(REPO))

from pml_rt._optional import available  # noqa: E402

BUDGET_S = 290.0
LIMITS_S = {"engine": 100, "tests": 90, "latency": 60, "agreement": 40}
IOU_TARGET = 0.99
_BUILD_FROM_PACKAGED = (
    "import sys, argparse; from pml_rt.registry import get_model_config; "
    "from pml_rt.backends.tensorrt_build import build_engine_cli; cfg = get_model_config(); "
    "a = argparse.Namespace(engine='', min_shape='240x320', opt_shape='480x854', max_shape='1088x1920', "
    "timing_cache=sys.argv[1], workspace_gb=4.0, check_frames=None); sys.exit(build_engine_cli(a, cfg.path, cfg))"
)


# -- step 1: the environment ------------------------------------------------------------------------

def environment() -> tuple[dict, str | None]:
    """What is installed and which CUDA device is seen; the second item says why there is none."""
    env: dict[str, Any] = {"python": sys.version.split()[0]}
    smi = shutil.which("nvidia-smi")
    if smi:
        try:
            out = subprocess.run([smi, "--query-gpu=name,driver_version,memory.total", "--format=csv,noheader"],
                                 capture_output=True, text=True, timeout=15)
            env["nvidia-smi"] = out.stdout.strip() or out.stderr.strip()
        except (OSError, subprocess.SubprocessError) as exc:
            env["nvidia-smi"] = f"failed: {exc}"
    reasons = []
    ok, why = available("cupy")
    if ok:
        import cupy as cp  # noqa: PLC0415

        env["cupy"] = cp.__version__
        try:
            n = cp.cuda.runtime.getDeviceCount()
            props = cp.cuda.runtime.getDeviceProperties(0)
            name = props["name"].decode() if isinstance(props["name"], bytes) else str(props["name"])
            mem = props["totalGlobalMem"] / 2**30
            env["gpu"] = f"{name} (compute {props['major']}.{props['minor']}, {mem:.0f} GiB)"
            env["cuda_runtime"] = cp.cuda.runtime.runtimeGetVersion()
            env["cuda_devices"] = n
        except Exception as exc:  # noqa: BLE001
            reasons.append(f"CuPy sees no CUDA device ({type(exc).__name__}: {exc})")
    else:
        env["cupy"] = f"absent ({why})"
        reasons.append(f"CuPy is not importable ({why})")
    ok, why = available("torch")
    if ok:
        import torch  # noqa: PLC0415

        env["torch"] = torch.__version__
        env["torch_cuda"] = torch.cuda.is_available()
        if not torch.cuda.is_available():
            reasons.append("torch.cuda.is_available() is False")
    else:
        env["torch"] = f"absent ({why})"
    ok, why = available("tensorrt")
    env["tensorrt"] = __import__("tensorrt").__version__ if ok else f"absent ({why})"
    ok, why = available("onnxruntime")
    if ok:
        import onnxruntime as ort  # noqa: PLC0415

        env["onnxruntime"] = f"{ort.__version__} ({', '.join(ort.get_available_providers())})"
    has_device = "gpu" in env or env.get("torch_cuda") is True
    return env, None if has_device else "; ".join(reasons)


# -- steps 2-4: subprocesses with time limits -------------------------------------------------------

def run_step(name: str, cmd: list[str], limit: float, log: Path,
             env: dict | None = None) -> tuple[int | None, float, str]:
    """Run ``cmd`` with a time limit; tee its output to ``log``; return (status or None on timeout, seconds, tail)."""
    print(f"\n== {name}: {' '.join(cmd)}  (limit {limit:.0f} s)", flush=True)
    t0 = time.perf_counter()
    with open(log, "w") as f:
        try:
            proc = subprocess.run(cmd, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                  timeout=max(limit, 1), env={**os.environ, **(env or {})})
            code, text = proc.returncode, proc.stdout
        except subprocess.TimeoutExpired as exc:
            out = exc.stdout or ""
            code, text = None, out.decode(errors="replace") if isinstance(out, bytes) else out
        f.write(text)
    print(text[-6000:], flush=True)
    return code, time.perf_counter() - t0, text


# -- step 5: CPU against GPU -----------------------------------------------------------------------

def _segment(emb: Any, xp: Any, clip: Any, cfg: Any) -> np.ndarray:
    """Masks uint8 (T, H, W) from embeddings (T, h, w, d) and the clip's first-frame mask, on ``xp``."""
    from pml_rt.annotations import ObjectMap, cell_labels  # noqa: PLC0415
    from pml_rt.propagate import PropagationConfig, propagate_scores  # noqa: PLC0415
    from pml_rt.upsample import upsample_labels  # noqa: PLC0415
    from pml_rt.xp import to_host  # noqa: PLC0415

    objects = ObjectMap()
    columns = objects.columns_of(clip.mask)
    ref = cell_labels(columns, objects.num_labels, cfg.stride)
    lut = xp.asarray(objects.lut())
    hw = clip.frames.shape[1:3]
    out = np.zeros((len(clip.frames), *hw), np.uint8)
    out[0] = clip.mask
    for t, s in propagate_scores(emb, 0, xp.asarray(ref), objects.num_labels, PropagationConfig(), xp=xp):
        out[t] = to_host(lut[upsample_labels(s, hw, "bilinear", None, stride=cfg.stride)])
    return out


def mask_iou(a: np.ndarray, b: np.ndarray, ids: list[int]) -> np.ndarray:
    """Per frame (frame 0 left out), the mean over objects of IoU(a == id, b == id); 1 where both are empty."""
    res = []
    for t in range(1, len(a)):
        per = []
        for i in ids:
            x, y = a[t] == i, b[t] == i
            union = np.logical_or(x, y).sum()
            per.append(1.0 if union == 0 else np.logical_and(x, y).sum() / union)
        res.append(np.mean(per))
    return np.asarray(res)


def agreement(frames: int, engine: str | None) -> dict:
    """Segment one clip on the CPU path and on the GPU path; IoU of the masks, and of CPU embeddings
    labelled on the GPU (which isolates the kNN and upsampler from the embedder's precision)."""
    import cupy as cp  # noqa: PLC0415

    sys.path.insert(0, str(REPO / "benchmarks"))
    import latency  # noqa: PLC0415 - its clip loader

    from pml_rt.backends.onnxruntime_backend import OnnxRuntimeBackend  # noqa: PLC0415
    from pml_rt.backends.tensorrt_build import cell_cosines  # noqa: PLC0415
    from pml_rt.registry import get_model_config  # noqa: PLC0415
    from pml_rt.xp import to_host  # noqa: PLC0415

    cfg = get_model_config()
    args = argparse.Namespace(data=str(latency.DEFAULT_DATA), seq="blackswan", frames=frames, size=(480, 854))
    with tempfile.TemporaryDirectory() as tmp:
        clip = latency.load_clip(args, Path(tmp))
    if engine:
        from pml_rt.backends.tensorrt_backend import TensorRTBackend  # noqa: PLC0415

        gpu, gpu_name = TensorRTBackend(cfg, engine_path=engine), "TensorRT FP16"
    else:
        from pml_rt.backends.torch_backend import TorchBackend  # noqa: PLC0415

        gpu, gpu_name = TorchBackend(cfg, device="cuda"), "torch FP32 (CUDA)"
    times = [np.array([t * cfg.time_scale], np.float32) for t in range(len(clip.frames))]
    with OnnxRuntimeBackend(cfg) as ort, gpu:
        e_cpu = np.stack([ort.embed(f[None], times[t])[0] for t, f in enumerate(clip.frames)]).astype(np.float16)
        e_gpu = cp.stack([gpu.embed(f[None], times[t])[0] for t, f in enumerate(clip.frames)]).astype(cp.float16)
    cos = cell_cosines(e_cpu.astype(np.float32), to_host(e_gpu).astype(np.float32))
    m_cpu = _segment(e_cpu, np, clip, cfg)
    m_gpu = _segment(e_gpu, cp, clip, cfg)
    m_knn = _segment(cp.asarray(e_cpu), cp, clip, cfg)
    ids = [int(i) for i in np.unique(clip.mask) if i != 0]
    full, knn = mask_iou(m_cpu, m_gpu, ids), mask_iou(m_cpu, m_knn, ids)
    return {"clip": clip.source, "frames": len(clip.frames), "gpu_embedder": gpu_name,
            "embedding_cosine_min": float(cos.min()), "embedding_cosine_mean": float(cos.mean()),
            "iou_mean": float(full.mean()), "iou_min": float(full.min()),
            "iou_knn_only_mean": float(knn.mean()), "iou_knn_only_min": float(knn.min()),
            "passed": bool(full.mean() >= IOU_TARGET and knn.min() >= IOU_TARGET)}


# -- the table ----------------------------------------------------------------------------------------

def _pytest_counts(text: str) -> str:
    found = re.findall(r"(\d+) (passed|failed|skipped|errors?|xfailed|xpassed|deselected)", text)
    return ", ".join(f"{n} {w}" for n, w in found) or "no summary line"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default=None, help="folder for the engine, logs and JSON (default: a temporary folder)")
    p.add_argument("--frames", type=int, default=50, help="frames for the latency benchmark (default 50)")
    p.add_argument("--agreement-frames", type=int, default=20, help="frames for the CPU/GPU agreement (default 20)")
    p.add_argument("--agreement-only", action="store_true", help=argparse.SUPPRESS)  # step 5 in a subprocess
    p.add_argument("--engine", default=None, help=argparse.SUPPRESS)
    p.add_argument("--json", default=None, help=argparse.SUPPRESS)
    args = p.parse_args(argv)

    if args.agreement_only:
        res = agreement(args.agreement_frames, args.engine)
        print(json.dumps(res, indent=2))
        if args.json:
            Path(args.json).write_text(json.dumps(res, indent=2))
        return 0 if res["passed"] else 1

    t_start = time.perf_counter()
    deadline = t_start + BUDGET_S
    limit = lambda step: min(LIMITS_S[step], max(deadline - time.perf_counter(), 1))  # noqa: E731
    env, no_device = environment()
    print("== environment")
    for k, v in env.items():
        print(f"  {k}: {v}")
    if no_device:
        print(f"\nno CUDA device here: {no_device}.\nThis check needs an NVIDIA GPU; on a CPU machine run "
              "`python -m pytest` (GPU tests show as skipped) and `python benchmarks/latency.py`.", file=sys.stderr)
        return 3

    out = Path(args.out) if args.out else Path(tempfile.mkdtemp(prefix="pml-rt-device-check-"))
    out.mkdir(parents=True, exist_ok=True)
    rows: list[tuple[str, str, str]] = [("GPU", "ok", f"{env.get('gpu', '?')}; cupy {env.get('cupy')}, "
                                                     f"torch {env.get('torch')}, TensorRT {env.get('tensorrt')}")]
    all_ok = True
    py = sys.executable
    engine_dir = out / "engines"
    sub_env = {"PML_RT_ENGINE_DIR": str(engine_dir)}

    # 2. engine
    engine: str | None = None
    if available("tensorrt")[0]:
        if available("torch")[0]:  # the documented command: export, build, check
            cmd = [py, "export/build_engine.py", "--onnx", str(out / "model.onnx"), "--engine",
                   "--timing-cache", str(out / "timing.cache")]
        else:  # no torch to export with: build from the packaged ONNX file, same builder and check
            cmd = [py, "-c", _BUILD_FROM_PACKAGED, str(out / "timing.cache")]
        code, secs, text = run_step("engine", cmd, limit("engine"), out / "engine.log", sub_env)
        plans = sorted(engine_dir.glob("*.plan"))
        if plans:
            engine = str(plans[0])
        m = re.search(r"build time: ([\d.]+) s", text)
        c = re.search(r"min ([\d.]+) \(needs", text)
        ok = code == 0 and engine is not None
        all_ok &= ok
        rows.append(("TensorRT FP16 engine", "ok" if ok else ("timeout" if code is None else f"exit {code}"),
                     f"build {m.group(1) if m else '?'} s; vs ONNX Runtime min cosine {c.group(1) if c else '?'}; "
                     f"{Path(engine).name if engine else 'no plan'}"))
    else:
        rows.append(("TensorRT FP16 engine", "absent",
                     f"TensorRT not installed ({env['tensorrt']}): not built, not tested"))

    # 3. tests
    test_env = {**sub_env, **({"PML_RT_TEST_ENGINE": engine} if engine else {})}
    code, secs, text = run_step("GPU tests", [py, "-m", "pytest", "-m", "gpu or tensorrt", "-q", "-rs", "tests"],
                                limit("tests"), out / "tests.log", test_env)
    ok = code == 0
    all_ok &= ok
    rows.append(('pytest -m "gpu or tensorrt"', "ok" if ok else ("timeout" if code is None else "FAILED"),
                 f"{_pytest_counts(text)} in {secs:.0f} s"))

    # 4. latency
    lat_json = out / "latency.json"
    cmd = [py, "benchmarks/latency.py", "--device", "cuda", "--frames", str(args.frames), "--json", str(lat_json)]
    if engine:
        cmd += ["--engine", engine]
    code, secs, text = run_step("latency", cmd, limit("latency"), out / "latency.log", sub_env)
    if code == 0 and lat_json.is_file():
        lat = json.loads(lat_json.read_text())
        info, tgt = lat["info"], lat["targets"]
        e2e = lat["end_to_end_ms"]
        pipe = info.get("e2e_pipelined_ms")
        ok_e2e = e2e <= tgt["e2e_ms"] or (pipe is not None and pipe <= tgt["e2e_ms"])
        rows.append((f"end to end, {info.get('best_backend', '?')[6:]}", "ok" if ok_e2e else "misses",
                     f"{e2e:.2f} ms/frame sequential, {pipe if pipe is None else round(pipe, 2)} with decode/write "
                     f"on threads (target <= "
                     f"{tgt['e2e_ms']:.0f}); paper 275 ms"))
        se, s2 = info.get("speedup_embed_vs_torch_fp32", 0), info.get("speedup_e2e_vs_torch_fp32", 0)
        ok_sp = s2 >= tgt["speedup"]
        rows.append(("vs torch FP32 eager (CUDA)", "ok" if ok_sp else "misses",
                     f"embed {se:.1f}x, end to end {s2:.1f}x (target >= {tgt['speedup']:.0f}x)"))
        all_ok &= ok_e2e and ok_sp
    else:
        all_ok = False
        rows.append(("latency benchmark", "timeout" if code is None else f"exit {code}", f"see {out / 'latency.log'}"))

    # 5. agreement
    agr_json = out / "agreement.json"
    if available("cupy")[0]:
        cmd = [py, "benchmarks/device_check.py", "--agreement-only", "--agreement-frames", str(args.agreement_frames),
               "--json", str(agr_json)] + (["--engine", engine] if engine else [])
        code, secs, text = run_step("CPU vs GPU", cmd, limit("agreement"), out / "agreement.log", sub_env)
        if agr_json.is_file():
            a = json.loads(agr_json.read_text())
            rows.append((f"CPU vs GPU masks ({a['gpu_embedder']} + CuPy)", "ok" if a["passed"] else "FAILED",
                         f"IoU mean {a['iou_mean']:.4f}, min {a['iou_min']:.4f}; kNN+upsample alone min "
                         f"{a['iou_knn_only_min']:.4f} (target >= {IOU_TARGET}); {a['frames']} frames"))
            all_ok &= a["passed"]
        else:
            all_ok = False
            rows.append(("CPU vs GPU masks", "timeout" if code is None else f"exit {code}",
                         f"see {out / 'agreement.log'}"))
    else:
        all_ok = False
        rows.append(("CPU vs GPU masks", "not run", "CuPy absent: the device kNN cannot run"))

    total = time.perf_counter() - t_start
    rows.append(("total", "ok" if total <= 300 else "over", f"{total:.0f} s (budget 300 s); files in {out}"))
    (out / "summary.json").write_text(json.dumps({"environment": env, "rows": rows}, indent=2, default=str))
    w0 = max(len(r[0]) for r in rows) + 2
    print("\n== device check summary")
    for name, status, detail in rows:
        print(f"{name:<{w0}}{status:<9}{detail}")
    return 0 if all_ok else 1


if __name__ == "__main__":
    sys.exit(main())
