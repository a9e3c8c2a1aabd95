"""Milliseconds per 854x480 frame, stage by stage and end to end, on the CPU or a CUDA GPU.

    python benchmarks/latency.py                         # CPU: ONNX Runtime vs torch eager
    python benchmarks/latency.py --frames 10 --json cpu.json
    python benchmarks/latency.py --device cuda --engine model.plan   # GPU: TensorRT, CuPy kNN

The clip is the first ``--frames`` frames of DAVIS ``--seq`` (default blackswan, 854x480)
from ``$PML_RT_DATA`` or ../shared/data, with its first-frame mask; where the data is absent,
a synthetic clip of ``--size``. Stages: decode (a JPEG folder, and an MP4 made on the fly),
embed, nearest neighbours (propagation from frame 0 with the default PropagationConfig, and
with recent-frame references off), upsample (every method in pml_rt.upsample.METHODS that
imports), write (palette PNG) and end to end (decode -> embed -> kNN -> upsample -> write,
one frame at a time); on the CPU also the whole ``pml-rt segment`` job (``segment_to_folder``:
every frame embedded, then propagated, upsampled and written) with the search overlapped on a
worker thread, as it runs by default, and on the caller's thread. Each figure is the median over the frames after ``--warmup`` warm-up
frames. PyTorch eager runs the same embedder on the same frames, interleaved with the
runtime, so the ratio holds on a busy machine; the paper's 275 ms/frame is printed next to
the result, and the embedder's GFLOPs per frame over the machine's measured float32
matrix-multiply rate gives a floor for the embed step.

CPU: time.perf_counter. GPU: CUDA events recorded on the default stream after a device
synchronise (so host overhead counts), medians after warm-up; decode and write stay on the
host; the end-to-end figure is also given with decode and write on worker threads
(throughput, what a streaming application sees).
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import platform
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any, Callable, Iterator

import numpy as np

if __package__ in (None, ""):  # run as a script: make the repo root importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pml_rt._optional import available, require  # noqa: E402
from pml_rt.annotations import ObjectMap, cell_labels  # noqa: E402
from pml_rt.io import FolderSource, open_video, read_mask, write_palette_png  # noqa: E402
from pml_rt.knn import cpu_kernel  # noqa: E402
from pml_rt.propagate import PropagationConfig, propagate_scores  # noqa: E402
from pml_rt.registry import DEFAULT_MODEL, INPUT_SCALES, get_model_config  # noqa: E402
from pml_rt.segmenter import shrink_frames  # noqa: E402
from pml_rt.upsample import DEFAULT_METHOD, METHODS, check_method, needs_guide, upsample_labels  # noqa: E402

PAPER_MS = 275.0  # Chen et al. 2018, per frame (Sec. 4)
DEFAULT_DATA = Path(os.environ.get("PML_RT_DATA") or Path(__file__).resolve().parents[1].parent / "shared" / "data")
# Targets of the issues: CPU (2 cores): e2e <= 150 ms, embed >= 3x torch eager; GPU (H200): e2e <= 10 ms, >= 5x.
TARGETS = {"cpu": {"e2e_ms": 150.0, "speedup": 3.0}, "cuda": {"e2e_ms": 10.0, "speedup": 5.0}}


# -- timing ---------------------------------------------------------------------------------------

@dataclass
class Stage:
    """Per-frame times (ms) of one stage; ``skip`` leading frames are warm-up and left out."""

    name: str
    ms: list[float] = field(default_factory=list)
    skip: int = 0
    note: str = ""

    @property
    def kept(self) -> list[float]:
        k = self.ms[self.skip:]
        return k if k else self.ms

    @property
    def median(self) -> float:
        return float(np.median(self.kept)) if self.ms else float("nan")

    @property
    def p90(self) -> float:
        return float(np.percentile(self.kept, 90)) if self.ms else float("nan")

    def to_dict(self) -> dict:
        return {"median_ms": round(self.median, 3), "p90_ms": round(self.p90, 3), "frames": len(self.kept),
                "note": self.note}


class Clock:
    """``with clock.measure(stage): ...`` appends the block's milliseconds to ``stage.ms``.

    Host: perf_counter. CUDA: synchronise, record an event, run, record, wait for it.
    """

    def __init__(self, cp: ModuleType | None = None):
        self.cp = cp

    def sync(self) -> None:
        if self.cp is not None:
            self.cp.cuda.Device().synchronize()

    @contextmanager
    def measure(self, stage: Stage) -> Iterator[None]:
        cp = self.cp
        if cp is None:
            t0 = time.perf_counter()
            yield
            stage.ms.append((time.perf_counter() - t0) * 1e3)
            return
        cp.cuda.Device().synchronize()
        start, end = cp.cuda.Event(), cp.cuda.Event()
        start.record()
        yield
        end.record()
        end.synchronize()
        stage.ms.append(float(cp.cuda.get_elapsed_time(start, end)))


# -- the clip -------------------------------------------------------------------------------------

@dataclass
class Clip:
    frames: np.ndarray  # uint8 (T, H, W, 3)
    mask: np.ndarray  # uint8 (H, W) object ids on frame 0
    folder: Path  # JPEG frames (the DAVIS folder, or written here for a synthetic clip)
    names: list[str]
    source: str


def synthetic_clip(n: int, hw: tuple[int, int], folder: Path) -> Clip:
    """A textured background with a disc drifting right; written as JPEGs for the decode stage."""
    pil = require("PIL.Image")
    h, w = hw
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    bg = np.stack([128 + 60 * np.sin(xx / 23 + c) * np.cos(yy / 31 - c) for c in range(3)], -1)
    bg += rng.normal(0, 12, bg.shape)
    frames, names = [], []
    mask0 = None
    for t in range(n):
        cy, cx, r = h * 0.5, w * (0.3 + 0.4 * t / max(n - 1, 1)), h * 0.18
        disc = (yy - cy) ** 2 + (xx - cx) ** 2 < r * r
        f = bg.copy()
        f[disc] = (200, 60, 50)
        f = np.clip(f, 0, 255).astype(np.uint8)
        frames.append(f)
        names.append(f"{t:05d}")
        pil.fromarray(f).save(folder / f"{t:05d}.jpg", quality=90)
        if mask0 is None:
            mask0 = disc.astype(np.uint8)
    return Clip(np.stack(frames), mask0, folder, names, f"synthetic {h}x{w} (no DAVIS data found)")


def load_clip(args: argparse.Namespace, tmp: Path) -> Clip:
    root = Path(args.data) / "davis2016-dev"
    jpg = root / "JPEGImages" / "480p" / args.seq
    ann = root / "Annotations" / "480p" / args.seq
    if jpg.is_dir() and ann.is_dir():
        src = FolderSource(jpg)
        n = min(args.frames, len(src))
        frames = np.stack([src.read(i) for i in range(n)])
        names = src.frame_names[:n]
        mask = read_mask(ann / f"{names[0]}.png", expected_size=src.frame_size)
        return Clip(frames, mask, jpg, names, f"DAVIS-2016 {args.seq} frames 0..{n - 1} from {jpg}")
    folder = tmp / "frames"
    folder.mkdir()
    return synthetic_clip(args.frames, args.size, folder)


def make_mp4(frames: np.ndarray, path: Path, fps: int = 25) -> str:
    """Encode ``frames`` (T, H, W, 3) as H.264 (libx264) where this FFmpeg has it, else MPEG-4; return the codec."""
    av = require("av", "the MP4 decode stage")
    codec = "mpeg4"
    for name in ("libx264", "mpeg4"):
        try:
            av.codec.Codec(name, "w")
            codec = name
            break
        except Exception:  # noqa: BLE001 - an absent encoder raises various errors
            continue
    h, w = frames.shape[1:3]
    container = av.open(str(path), mode="w")
    try:
        stream = container.add_stream(codec, rate=fps)
        stream.width, stream.height = w - w % 2, h - h % 2
        stream.pix_fmt = "yuv420p"
        for f in frames:
            vf = av.VideoFrame.from_ndarray(np.ascontiguousarray(f[: h - h % 2, : w - w % 2]), format="rgb24")
            for packet in stream.encode(vf):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    finally:
        container.close()
    return codec


class LazyEmbeddings:
    """Looks like a (T, h, w, d) float16 array to :func:`propagate_scores`, but decodes and embeds
    frame t when it is read, so propagation becomes a streaming end-to-end pipeline."""

    def __init__(self, read: Callable[[int], np.ndarray], embed: Callable[[np.ndarray, int], Any], shape: tuple):
        self._read, self._embed, self.shape = read, embed, shape

    def __getitem__(self, t: int) -> Any:
        return self._embed(self._read(int(t)), int(t))


# -- the benchmark --------------------------------------------------------------------------------

class Bench:
    def __init__(self, args: argparse.Namespace, clip: Clip, tmp: Path, cp: ModuleType | None):
        self.args, self.clip, self.tmp, self.cp = args, clip, tmp, cp
        self.cfg = get_model_config(args.model)
        self.xp: ModuleType = cp if cp is not None else np
        self.clock = Clock(cp)
        self.stages: list[Stage] = []
        self.info: dict[str, Any] = {}
        t, hh, ww, _ = clip.frames.shape
        s = self.cfg.stride
        self.hw = (hh, ww)
        self.cells = (-(-hh // s), -(-ww // s))
        self.objects = ObjectMap()
        columns = self.objects.columns_of(clip.mask)
        self.num_labels = self.objects.num_labels
        self.ref = cell_labels(columns, self.num_labels, s)
        self.lut = self.objects.lut()
        self.warm = min(args.warmup, max(t - 2, 0))

    def stage(self, name: str, note: str = "", skip: int | None = None) -> Stage:
        st = Stage(name, skip=self.warm if skip is None else skip, note=note)
        self.stages.append(st)
        return st

    def times(self, t: int) -> np.ndarray:
        return np.array([t * self.cfg.time_scale], np.float32)

    # decode and write (host) ----------------------------------------------------------------
    def decode(self) -> None:
        n = len(self.clip.frames)
        src = FolderSource(self.clip.folder)
        st = self.stage("decode JPEG folder", "Pillow, host")
        for i in range(n):
            with Clock().measure(st):
                src.read(i)
        mp4 = self.tmp / "clip.mp4"
        codec = make_mp4(self.clip.frames, mp4)
        st = self.stage(f"decode MP4 ({codec})", "PyAV, host")
        video = open_video(mp4)
        it = iter(video)
        for _ in range(n):
            with Clock().measure(st):
                next(it)

    def write(self, masks: list[np.ndarray]) -> None:
        st = self.stage("write palette PNG", "Pillow, host")
        out = self.tmp / "write"
        out.mkdir(exist_ok=True)
        for i, m in enumerate(masks):
            with Clock().measure(st):
                write_palette_png(out / f"{i:05d}.png", m)

    # embed -------------------------------------------------------------------------------------
    def embed_stage(self, name: str, backend: Any, count: int | None = None, extra_warmup: int = 0,
                    stage: Stage | None = None) -> tuple[Stage, list[Any]]:
        frames = self.clip.frames[: count or len(self.clip.frames)]
        for _ in range(extra_warmup):
            backend.embed(frames[:1], self.times(0))
        st = stage or self.stage(name, backend.describe())
        outs = []
        for t, f in enumerate(frames):
            with self.clock.measure(st):
                outs.append(backend.embed(f[None], self.times(t))[0])
        return st, outs

    def paired_embed(self, runtime: Any, reference: Any, rt_name: str, ref_name: str,
                     count: int) -> tuple[Stage, Stage, list[Any]]:
        """Both backends on each frame in turn (so load changes hit both); the runtime on every frame."""
        a = self.stage(rt_name, runtime.describe())
        b = self.stage(ref_name, reference.describe(), skip=0)  # both are warm already
        a_paired = Stage(rt_name + " (paired frames)", skip=0)
        outs = []
        for t, f in enumerate(self.clip.frames):
            with self.clock.measure(a):
                outs.append(runtime.embed(f[None], self.times(t))[0])
            if t < count:
                a_paired.ms.append(a.ms[-1])
                with self.clock.measure(b):
                    reference.embed(f[None], self.times(t))
        self.info["paired_runtime_median_ms"] = a_paired.median
        return a, b, outs

    # nearest neighbours and upsampling -----------------------------------------------------------
    def nn(self, emb: Any, name: str, cfg: PropagationConfig) -> tuple[Stage, dict[int, Any]]:
        st = self.stage(name, f"recent_frames={cfg.recent_frames}, window={cfg.window}, online_adaptation="
                              f"{cfg.online_adaptation}, cap={cfg.adaptation_cap}, k={cfg.k}, {self.xp.__name__}")
        ref = self.xp.asarray(self.ref)
        it = propagate_scores(emb, 0, ref, self.num_labels, cfg, xp=self.xp)
        scores: dict[int, Any] = {}
        while True:
            try:
                with self.clock.measure(st):
                    t, s = next(it)
            except StopIteration:  # (the call that found the end recorded nothing)
                break
            scores[t] = s
        return st, scores

    def _guide(self, t: int, method: str) -> Any:
        """Frame t on the array module, where ``method`` needs the frame as guide."""
        return self.xp.asarray(self.clip.frames[t]) if needs_guide(method) else None

    def upsample(self, scores: dict[int, Any], methods: list[str]) -> list[np.ndarray]:
        xp = self.xp
        masks: list[np.ndarray] = []
        guides = {t: xp.asarray(self.clip.frames[t]) for t in scores}
        lut = xp.asarray(self.lut)
        for method in methods:
            st = self.stage(f"upsample {method}", xp.__name__)
            try:
                for t, s in scores.items():
                    with self.clock.measure(st):
                        labels = upsample_labels(s, self.hw, method, guides[t] if needs_guide(method) else None,
                                                 stride=self.cfg.stride)
                    if method == DEFAULT_METHOD:
                        masks.append(lut[labels])
            except Exception as exc:  # noqa: BLE001 - an upsampler that cannot run here is reported, not fatal
                self.stages.remove(st)
                self.info.setdefault("notes", []).append(f"upsample {method} on {xp.__name__} failed: "
                                                         f"{type(exc).__name__}: {exc}")
        if DEFAULT_METHOD not in methods:  # the write stage still needs masks
            masks = [lut[upsample_labels(s, self.hw, DEFAULT_METHOD, self._guide(t, DEFAULT_METHOD),
                                         stride=self.cfg.stride)] for t, s in scores.items()]
        return masks

    # end to end -------------------------------------------------------------------------------
    def e2e(self, backend: Any, name: str, pipelined: bool = False, scale: float = 1.0) -> Stage:
        """decode JPEG -> embed -> kNN (default config) -> upsample (default) -> ids -> write PNG."""
        xp, cp = self.xp, self.cp
        src = FolderSource(self.clip.folder)
        n = len(self.clip.frames)
        stride = int(round(self.cfg.stride / scale))  # pixels per cell of the original frame
        cells, ref = self.cells, self.ref
        if scale != 1:
            cells = (-(-self.hw[0] // stride), -(-self.hw[1] // stride))
            ref = cell_labels(self.objects.columns_of(self.clip.mask), self.num_labels, stride)
        shape = (n, *cells, self.cfg.d)
        out = self.tmp / f"e2e-{len(self.stages)}"
        out.mkdir()
        lut = xp.asarray(self.lut)
        to_f16 = lambda e: e.astype(xp.float16)  # noqa: E731 - as EmbeddedVideo stores them
        shrink = (lambda f: shrink_frames(f, scale)) if scale != 1 else (lambda f: f)  # noqa: E731
        st = self.stage(name, backend.describe() + (f", input scale {scale}" if scale != 1 else ""),
                        skip=self.warm if not pipelined else 0)
        if not pipelined:
            emb = LazyEmbeddings(src.read, lambda f, t: to_f16(backend.embed(shrink(f[None]), self.times(t))[0]), shape)
            it = propagate_scores(emb, 0, xp.asarray(ref), self.num_labels, PropagationConfig(), xp=xp)
            for _ in range(n - 1):
                t0 = time.perf_counter()
                t, s = next(it)
                labels = upsample_labels(s, self.hw, DEFAULT_METHOD, self._guide(t, DEFAULT_METHOD),
                                         stride=stride)
                mask = lut[labels]
                write_palette_png(out / f"{self.clip.names[t]}.png", cp.asnumpy(mask) if cp is not None else mask)
                st.ms.append((time.perf_counter() - t0) * 1e3)
            return st
        # Pipelined: decode ahead on one thread, write on others; throughput over the clip.
        with ThreadPoolExecutor(max_workers=2) as readers, ThreadPoolExecutor(max_workers=4) as writers:
            self.clock.sync()
            t0 = time.perf_counter()
            decoded = [readers.submit(src.read, t) for t in range(n)]
            emb = LazyEmbeddings(lambda t: decoded[t].result(),
                                 lambda f, t: to_f16(backend.embed(shrink(f[None]), self.times(t))[0]), shape)
            pending = []
            steps = propagate_scores(emb, 0, xp.asarray(ref), self.num_labels, PropagationConfig(), xp=xp)
            for t, s in itertools.islice(steps, n - 1):  # the forward pass; frame 0 is the reference
                labels = upsample_labels(s, self.hw, DEFAULT_METHOD, self._guide(t, DEFAULT_METHOD),
                                         stride=stride)
                mask = lut[labels]
                host = cp.asnumpy(mask) if cp is not None else mask
                pending.append(writers.submit(write_palette_png, out / f"{self.clip.names[t]}.png", host))
            for p in pending:
                p.result()
            total = (time.perf_counter() - t0) * 1e3
        st.ms = [total / max(n - 1, 1)]
        st.note += f"; {n - 1} frames, throughput"
        return st


    # the product's path -----------------------------------------------------------------------
    def segment_path(self, runs: int) -> None:
        """``segment_to_folder`` (what ``pml-rt segment`` runs) on the clip's JPEGs: embed every
        frame, then propagate, upsample and write; with the search on a worker thread (the
        default, pml_rt.overlap) and without (``PML_RT_OVERLAP=0``), runs alternated. Wall time
        of the whole job over the frames."""
        from pml_rt.pipeline import segment_to_folder  # noqa: PLC0415
        from pml_rt.segmenter import Segmenter  # noqa: PLC0415

        folder = self.tmp / "segment-frames"  # exactly the clip's frames
        folder.mkdir()
        for name in self.clip.names:
            src = self.clip.folder / f"{name}.jpg"
            (folder / src.name).symlink_to(src.resolve())
        note = "whole job / frames: embed all, then propagate + upsample (default) + write PNG"
        stages = {"1": self.stage("segment_to_folder, search overlapped (default)", note, skip=0),
                  "0": self.stage("segment_to_folder, search on the same thread", note, skip=0)}
        old = os.environ.get("PML_RT_OVERLAP")
        with Segmenter(self.args.model) as seg:
            try:
                seg.embed_frames(self.clip.frames[:1], [0])  # start the session outside the timing
                for rep in range(runs):
                    for flag, st in stages.items():
                        os.environ["PML_RT_OVERLAP"] = flag
                        t0 = time.perf_counter()
                        r = segment_to_folder(seg, folder, self.clip.mask, self.tmp / f"segment-{flag}-{rep}",
                                              progress=False, cache=False)
                        st.ms.append((time.perf_counter() - t0) * 1e3 / r.num_frames)
            finally:
                if old is None:
                    os.environ.pop("PML_RT_OVERLAP", None)
                else:
                    os.environ["PML_RT_OVERLAP"] = old
        self.info["segment_overlapped_vs_same_thread"] = stages["0"].median / stages["1"].median


def _methods(requested: str | None) -> list[str]:
    """Upsample methods to time; unknown names stop the run at once. (A method that cannot run
    on this device, say for want of cupyx, is left out of the table with a note.)"""
    want = [m.strip() for m in requested.split(",")] if requested else list(METHODS)
    for m in want:
        check_method(m)
    return want


FLOOR_INNER = 256  # inner size of the product that measures the machine's float32 rate


def flops_and_floor(cfg: Any, hw: tuple[int, int], cells: int, cp: ModuleType | None) -> dict:
    from pml_rt.flops import matmul_gflops, onnx_flops, torch_flops  # noqa: PLC0415

    out: dict[str, Any] = {}
    try:
        if available("onnx")[0]:
            f = onnx_flops(cfg.path, hw)
            out["counted_from"] = "ONNX graph"
        else:
            from pml_rt.network.embedder import Embedder  # noqa: PLC0415

            f = torch_flops(Embedder(cfg, imagenet=False), hw)
            out["counted_from"] = "torch hooks (convolutions only)"
        out["gflops_per_frame"] = round(f.gflops, 3)
    except Exception as exc:  # noqa: BLE001 - optional information
        out["gflops_per_frame"] = None
        out["error"] = f"{type(exc).__name__}: {exc}"
    # The machine's float32 rate on a compute-bound product (inner size 256, as in the
    # embedder's widest 1x1 convolutions), independent of the model's d: the floor is then
    # the embedder's arithmetic at that rate, a lower bound for any runtime.
    rate = matmul_gflops(n=cells, d=FLOOR_INNER, repeats=5)
    out["cpu_matmul_gflops"] = round(rate.gflops, 1)
    out["matmul_shape"] = list(rate.shape)
    if cp is not None:
        out["gpu_matmul_gflops"] = round(matmul_gflops(n=cells, d=FLOOR_INNER, repeats=10, xp=cp).gflops, 1)
    best = out.get("gpu_matmul_gflops") or out["cpu_matmul_gflops"]
    if out.get("gflops_per_frame"):
        out["embed_floor_ms"] = round(out["gflops_per_frame"] / best * 1e3, 3)
    return out


def machine_info(cp: ModuleType | None) -> dict:
    info = {"python": platform.python_version(), "cpu_count": os.cpu_count(), "platform": platform.platform()}
    try:
        info["load_average"] = [round(x, 2) for x in os.getloadavg()]
    except OSError:
        pass
    if cp is not None:
        props = cp.cuda.runtime.getDeviceProperties(0)
        name = props["name"]
        info["gpu"] = name.decode() if isinstance(name, bytes) else str(name)
        info["cuda_runtime"] = cp.cuda.runtime.runtimeGetVersion()
        info["cupy"] = cp.__version__
    return info


# -- runs -----------------------------------------------------------------------------------------

def run_cpu(b: Bench, methods: list[str]) -> None:
    from pml_rt.backends.onnxruntime_backend import OnnxRuntimeBackend  # noqa: PLC0415

    args = b.args
    b.decode()
    torch_ok, why = available("torch")
    with OnnxRuntimeBackend(b.cfg) as ort:
        for t in range(b.warm):  # warm-up: session start, thread pool, allocations
            ort.embed(b.clip.frames[t][None], b.times(t))
        if torch_ok and args.torch_frames > 0:
            from pml_rt.backends.torch_backend import TorchBackend  # noqa: PLC0415

            with TorchBackend(b.cfg) as tb_:
                tb_.embed(b.clip.frames[0][None], b.times(0))  # warm-up
                count = min(args.torch_frames, len(b.clip.frames))
                rt, ref, outs = b.paired_embed(ort, tb_, "embed onnxruntime (CPU)",
                                               "embed torch eager (CPU, same frames)", count)
            b.info["speedup_vs_torch_eager"] = ref.median / b.info["paired_runtime_median_ms"]
        else:
            _, outs = b.embed_stage("embed onnxruntime (CPU)", ort)
            b.info["torch_eager"] = f"not measured: torch {why or 'disabled by --torch-frames 0'}"
        emb = np.stack(outs).astype(np.float16)  # as EmbeddedVideo keeps them
        st_ort, scores = b.nn(emb, "nearest neighbours (default config)", PropagationConfig())
        with cpu_kernel("numpy"):  # the same search in plain NumPy, the array-module code CuPy runs
            st_np, _ = b.nn(emb, "nearest neighbours (default, numpy kernel)", PropagationConfig())
        b.info["knn_onnxruntime_vs_numpy"] = st_np.median / st_ort.median
        b.nn(emb, "nearest neighbours (recent frames off)", PropagationConfig(recent_frames=0))
        masks = b.upsample(scores, methods)
        b.write(masks)
        full = b.e2e(ort, "end to end (decode JPEG -> write PNG)")
        if args.input_scale != 1:
            half = b.e2e(ort, f"end to end, input scale {args.input_scale}", scale=args.input_scale)
            b.info["e2e_full_vs_scaled"] = full.median / half.median
    if args.segment_runs > 0:
        b.segment_path(args.segment_runs)


def run_cuda(b: Bench, methods: list[str], engine: str | None) -> None:
    cp = b.cp
    from pml_rt.backends.torch_backend import TorchBackend  # noqa: PLC0415

    b.decode()
    up = b.stage("upload frame (host -> device)", f"uint8 {b.hw[1]}x{b.hw[0]}x3, pageable")
    for f in b.clip.frames:
        with b.clock.measure(up):
            cp.asarray(f)

    candidates: list[tuple[str, Callable[[], Any]]] = []
    notes = []
    if engine:
        from pml_rt.backends.tensorrt_backend import TensorRTBackend  # noqa: PLC0415

        candidates.append(("embed TensorRT FP16", lambda: TensorRTBackend(b.cfg, engine_path=engine)))
    else:
        notes.append("TensorRT: no engine (pass --engine PATH; build one with export/build_engine.py --engine)")
    from pml_rt.backends.onnxruntime_backend import gpu_providers  # noqa: PLC0415

    if available("onnxruntime")[0] and "CUDAExecutionProvider" in gpu_providers():
        from pml_rt.backends.onnxruntime_gpu import OnnxRuntimeIOBindingBackend  # noqa: PLC0415

        candidates.append(("embed onnxruntime CUDA (IO binding)",
                           lambda: OnnxRuntimeIOBindingBackend(b.cfg, device="cuda")))
    else:
        notes.append("onnxruntime CUDA: onnxruntime-gpu not installed")
    candidates.append(("embed torch FP16 eager (CUDA)", lambda: TorchBackend(b.cfg, device="cuda", half=True)))
    if b.args.compile:
        candidates.append(("embed torch FP16 compiled (CUDA)",
                           lambda: TorchBackend(b.cfg, device="cuda", half=True, compile=True)))
    baseline_name = "embed torch FP32 eager (CUDA)"
    candidates.append((baseline_name, lambda: TorchBackend(b.cfg, device="cuda")))
    b.info["embed_notes"] = notes

    results: dict[str, tuple[Stage, Any, list[Any]]] = {}
    for name, make in candidates:
        try:
            backend = make().activate()
            st, outs = b.embed_stage(name, backend, extra_warmup=10)
            results[name] = (st, backend, outs)
        except Exception as exc:  # noqa: BLE001 - one backend failing must not hide the others
            notes.append(f"{name}: failed: {type(exc).__name__}: {exc}")
    if baseline_name not in results:
        raise SystemExit(f"the torch FP32 baseline failed: {notes[-1]}")
    best_name = min((n for n in results if n != baseline_name), key=lambda n: results[n][0].median,
                    default=baseline_name)
    best_stage, best, outs = results[best_name]
    base_stage, base, _ = results[baseline_name]
    b.info["best_backend"] = best_name
    b.info["speedup_embed_vs_torch_fp32"] = base_stage.median / best_stage.median

    emb = cp.stack(outs).astype(cp.float16)  # stays on the device
    _, scores = b.nn(emb, "nearest neighbours (default config)", PropagationConfig())
    b.nn(emb, "nearest neighbours (recent frames off)", PropagationConfig(recent_frames=0))
    masks = b.upsample(scores, methods)
    down = b.stage("download mask (device -> host)", f"uint8 {b.hw[1]}x{b.hw[0]}")
    host_masks = []
    for m in masks:
        with b.clock.measure(down):
            host_masks.append(cp.asnumpy(m))
    b.write(host_masks)
    e2e_best = b.e2e(best, f"end to end, {best_name[6:]} (sequential)")
    e2e_pipe = b.e2e(best, f"end to end, {best_name[6:]} (decode/write on threads)", pipelined=True)
    e2e_base = b.e2e(base, f"end to end, {baseline_name[6:]} (sequential)")
    b.info["speedup_e2e_vs_torch_fp32"] = e2e_base.median / e2e_best.median
    b.info["e2e_pipelined_ms"] = e2e_pipe.median
    for _, backend, _ in results.values():
        backend.close()


# -- report ---------------------------------------------------------------------------------------

def report(b: Bench, device: str, floor: dict) -> dict:
    n = len(b.clip.frames)
    hh, ww = b.hw
    lines = [f"pml-rt latency: {ww}x{hh}, {b.clip.source}; {n} frames, {b.warm} warm-up; device {device}"]
    mi = b.info.get("machine", {})
    lines.append(f"machine: {mi.get('cpu_count')} CPUs, load {mi.get('load_average')}"
                 + (f", GPU {mi['gpu']}" if "gpu" in mi else ""))
    gf = floor.get("gflops_per_frame")
    rate = floor.get("gpu_matmul_gflops") or floor.get("cpu_matmul_gflops")
    lines.append(f"embedder: {gf} GFLOP/frame ({floor.get('counted_from', floor.get('error'))}); "
                 f"measured float32 matmul {floor.get('matmul_shape')}: {floor.get('cpu_matmul_gflops')} GFLOP/s CPU"
                 + (f", {floor['gpu_matmul_gflops']} GFLOP/s GPU" if "gpu_matmul_gflops" in floor else "")
                 + (f" -> embed floor {floor['embed_floor_ms']:.1f} ms at {rate} GFLOP/s"
                    if "embed_floor_ms" in floor else ""))
    width = max(len(s.name) for s in b.stages) + 2
    lines.append(f"{'stage':<{width}}{'median ms':>10}{'p90 ms':>10}{'frames':>8}  notes")
    for s in b.stages:
        lines.append(f"{s.name:<{width}}{s.median:>10.2f}{s.p90:>10.2f}{len(s.kept):>8}  {s.note}")
    e2e = next(s for s in b.stages if s.name.startswith("end to end"))
    tgt = TARGETS[device]
    verdict = lambda ok: "meets" if ok else "misses"  # noqa: E731
    lines.append(f"end to end {e2e.median:.1f} ms/frame: {PAPER_MS / e2e.median:.2f}x the speed of the paper's "
                 f"{PAPER_MS:.0f} ms/frame; "
                 f"target <= {tgt['e2e_ms']:.0f} ms: {verdict(e2e.median <= tgt['e2e_ms'])}")
    sp = b.info.get("speedup_vs_torch_eager") or b.info.get("speedup_embed_vs_torch_fp32")
    if sp:
        what = "embed vs torch eager (paired frames)" if device == "cpu" else "embed vs torch FP32 eager"
        lines.append(f"{what}: {sp:.2f}x; target >= {tgt['speedup']:.0f}x: {verdict(sp >= tgt['speedup'])}")
    if "speedup_e2e_vs_torch_fp32" in b.info:
        s2 = b.info["speedup_e2e_vs_torch_fp32"]
        lines.append(f"end to end vs the same pipeline with torch FP32 eager: {s2:.2f}x; target >= "
                     f"{tgt['speedup']:.0f}x: {verdict(s2 >= tgt['speedup'])}")
    if "e2e_full_vs_scaled" in b.info:
        scaled = next(s for s in b.stages if s.name.startswith("end to end, input scale"))
        lines.append(f"{scaled.name}: {scaled.median:.1f} ms/frame, {b.info['e2e_full_vs_scaled']:.2f}x faster than "
                     f"full scale (same frames); target <= {tgt['e2e_ms']:.0f} ms: "
                     f"{verdict(scaled.median <= tgt['e2e_ms'])}")
    if "segment_overlapped_vs_same_thread" in b.info:
        seg = next(s for s in b.stages if s.name.startswith("segment_to_folder, search overlapped"))
        lines.append(f"{seg.name}: {seg.median:.1f} ms/frame for the whole job, "
                     f"{b.info['segment_overlapped_vs_same_thread']:.2f}x faster than with the search on the same "
                     f"thread; target <= {tgt['e2e_ms']:.0f} ms: {verdict(seg.median <= tgt['e2e_ms'])}")
    if "knn_onnxruntime_vs_numpy" in b.info:
        lines.append(f"nearest neighbours, ONNX Runtime kernels vs plain NumPy (same frames): "
                     f"{b.info['knn_onnxruntime_vs_numpy']:.2f}x")
    notes = b.info.get("notes", []) + b.info.get("embed_notes", [])
    for note in notes + ([b.info["torch_eager"]] if "torch_eager" in b.info else []):
        lines.append(f"note: {note}")
    print("\n".join(lines))
    return {
        "device": device, "frame_size": [hh, ww], "frames": n, "warmup": b.warm, "clip": b.clip.source,
        "paper_ms": PAPER_MS, "targets": tgt, "flops": floor, "stages": {s.name: s.to_dict() for s in b.stages},
        "end_to_end_ms": e2e.median, "info": {k: v for k, v in b.info.items()},
    }


def build_parser() -> argparse.ArgumentParser:
    from pml_rt.backends.tensorrt_build import parse_hw  # noqa: PLC0415

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", choices=("cpu", "cuda"), default="cpu", help="where to run (default cpu)")
    p.add_argument("--frames", type=int, default=20, help="frames of the clip to time (default 20)")
    p.add_argument("--warmup", type=int, default=2, help="leading frames left out of each median (default 2)")
    p.add_argument("--torch-frames", type=int, default=5,
                   help="CPU: frames embedded by torch eager too, interleaved with ONNX Runtime (default 5; 0: skip)")
    p.add_argument("--seq", default="blackswan", help="DAVIS-2016 sequence (default blackswan)")
    p.add_argument("--data", default=str(DEFAULT_DATA), help="data root holding davis2016-dev (default $PML_RT_DATA "
                                                              "or ../shared/data)")
    p.add_argument("--size", type=lambda s: parse_hw(s, "--size"), default=(480, 854),
                   help="HEIGHTxWIDTH of the synthetic clip used where the data is absent (default 480x854)")
    p.add_argument("--methods", default=None,
                   help=f"upsample methods, comma-separated (default: all of {', '.join(METHODS)})")
    p.add_argument("--model", default=DEFAULT_MODEL, help="registered model (default the packaged one)")
    p.add_argument("--input-scale", type=float, default=0.5, choices=INPUT_SCALES,
                   help="cpu: also time end to end with the network on frames shrunk by this factor "
                        "(Segmenter(input_scale=...)); 1 skips it (default 0.5)")
    p.add_argument("--engine", default=None, help="cuda: TensorRT plan (default: the default-named one, if built)")
    p.add_argument("--compile", action="store_true", help="cuda: also time torch.compile (slow to start)")
    p.add_argument("--segment-runs", type=int, default=2,
                   help="cpu: runs of the whole `pml-rt segment` job on the clip, each with the search overlapped "
                        "and not (default 2; 0: skip)")
    p.add_argument("--json", default=None, help="also write the numbers to this JSON file")
    return p


def cuda_or_exit() -> ModuleType:
    ok, why = available("cupy")
    if not ok:
        raise SystemExit(f"--device cuda needs CuPy with a CUDA device: {why}. Install pml-rt[gpu] on a machine with "
                         "an NVIDIA GPU, or run without --device cuda")
    import cupy as cp  # noqa: PLC0415

    try:
        if cp.cuda.runtime.getDeviceCount() < 1:
            raise RuntimeError("no CUDA device")
    except Exception as exc:  # noqa: BLE001
        raise SystemExit(f"--device cuda: no usable CUDA device ({type(exc).__name__}: {exc})") from None
    return cp


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.frames < 3:
        raise SystemExit("--frames must be at least 3 (frame 0 is the annotated reference)")
    cp = cuda_or_exit() if args.device == "cuda" else None
    engine = args.engine
    if cp is not None and engine is None:
        from pml_rt.backends.tensorrt_build import find_engine  # noqa: PLC0415

        found = find_engine(get_model_config(args.model))
        engine = str(found) if found else None
    methods = _methods(args.methods)
    with tempfile.TemporaryDirectory(prefix="pml-rt-latency-") as tmp:
        clip = load_clip(args, Path(tmp))
        b = Bench(args, clip, Path(tmp), cp)
        b.info["machine"] = machine_info(cp)
        if cp is None:
            run_cpu(b, methods)
        else:
            run_cuda(b, methods, engine)
        floor = flops_and_floor(b.cfg, b.hw, b.cells[0] * b.cells[1], cp)
    result = report(b, args.device, floor)
    if args.json:
        from pml_rt.io import atomic_write_path  # noqa: PLC0415

        with atomic_write_path(args.json) as tmp_json:
            tmp_json.write_text(json.dumps(result, indent=2, default=float) + "\n")
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
