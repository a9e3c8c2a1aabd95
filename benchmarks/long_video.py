"""Peak resident memory and cache size on a long video; the rate of live mode.

    python benchmarks/long_video.py                       # 60 and 200 frames of 854x480, live 30 frames
    python benchmarks/long_video.py --frames 5000         # the issue's target (hours on 2 CPU cores)
    python benchmarks/long_video.py --frames 300 --no-release   # show what letting pages go saves

A synthetic 854x480 MP4 (textured background, two moving textured objects) is written
frame by frame; each run segments it with ``segment_to_folder`` (ONNX Runtime, CPU) in a
child process, so that the child's peak resident set (VmHWM, and ru_maxrss) belongs to that
run alone. A sampling thread in the child also records the peaks of its anonymous and
file-backed resident memory (RssAnon, RssFile). Each length runs with an empty cache (embed +
propagate + write); the longest runs again with the cache filled (propagate + write only).

With two or more lengths, the peak is fitted as a + b * frames and extrapolated to 5000
frames; the fit, not a run, is then what the 5000-frame figure rests on, and it says so.
Live mode streams ``--live-frames`` frames at each ``--live-size`` through
``Segmenter.stream`` and reports its rate against a 25 frames/s input.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve()
FIELDS = ("VmHWM", "VmRSS", "RssAnon", "RssFile")


def status_kb() -> dict[str, int]:
    """VmHWM, VmRSS, RssAnon, RssFile of this process, in kB (Linux /proc)."""
    out = {}
    with open("/proc/self/status") as f:
        for line in f:
            key = line.split(":")[0]
            if key in FIELDS:
                out[key] = int(line.split()[1])
    return out


class Sampler(threading.Thread):
    """Peaks of RssAnon and RssFile, sampled every ``period`` seconds."""

    def __init__(self, period: float = 0.05):
        super().__init__(daemon=True)
        self.period, self.peak, self.stop = period, {"RssAnon": 0, "RssFile": 0}, threading.Event()

    def run(self) -> None:
        while not self.stop.is_set():
            s = status_kb()
            for k in self.peak:
                self.peak[k] = max(self.peak[k], s.get(k, 0))
            time.sleep(self.period)


# -- the synthetic video -------------------------------------------------------------------

def scene(t: int, h: int, w: int, bg: np.ndarray, tex: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Frame t: uint8 (h, w, 3) and its ids (h, w): a disc (1) and a box (2) moving over ``bg``."""
    frame, ids = bg.copy(), np.zeros((h, w), np.uint8)
    yy, xx = np.ogrid[:h, :w]
    cx, cy, r = w * (0.25 + 0.5 * (0.5 + 0.5 * np.sin(t / 40))), h * 0.45, h // 6
    disc = (xx - cx) ** 2 + (yy - cy) ** 2 <= r * r
    frame[disc] = tex[:h, :w][disc] // 2 + np.array([120, 20, 20], np.uint8)
    ids[disc] = 1
    bx, by, s = int(w * (0.7 - 0.4 * (0.5 + 0.5 * np.cos(t / 55)))), int(h * 0.62), h // 5
    frame[by:by + s, bx:bx + s] = tex[:s, :s] // 2 + np.array([20, 40, 120], np.uint8)
    ids[by:by + s, bx:bx + s] = 2
    return frame, ids


def make_video(path: Path, frames: int, h: int, w: int) -> np.ndarray:
    """Write the clip to ``path`` one frame at a time; return frame 0's ids."""
    import av

    rng = np.random.default_rng(0)
    bg = np.kron(rng.integers(40, 140, (h // 8 + 1, w // 8 + 1, 3)).astype(np.uint8), np.ones((8, 8, 1), np.uint8))
    bg = bg[:h, :w].copy()
    tex = np.kron(rng.integers(0, 255, (h // 4 + 1, w // 4 + 1, 3)).astype(np.uint8), np.ones((4, 4, 1), np.uint8))
    first = None
    with av.open(str(path), mode="w") as c:
        codec = "libx264" if "libx264" in av.codecs_available else "mpeg4"
        st = c.add_stream(codec, rate=25)
        st.height, st.width, st.pix_fmt = h, w, "yuv420p"
        if codec == "libx264":
            st.options = {"crf": "20", "preset": "ultrafast"}
        for t in range(frames):
            f, ids = scene(t, h, w, bg, tex)
            first = ids if first is None else first
            for p in st.encode(av.VideoFrame.from_ndarray(f, format="rgb24")):
                c.mux(p)
        for p in st.encode(None):
            c.mux(p)
    return first  # type: ignore[return-value]


# -- children ------------------------------------------------------------------------------

def child_segment(args: argparse.Namespace) -> None:
    from pml_rt import Segmenter
    from pml_rt import cache as pcache
    from pml_rt.pipeline import segment_to_folder

    if args.no_release:
        pcache.release_rows = lambda *a, **k: None  # type: ignore[assignment]
    sampler = Sampler()
    sampler.start()
    seg = Segmenter(args.model, backend="onnxruntime")
    t0 = time.perf_counter()
    res = segment_to_folder(seg, args.video, args.mask, args.out, cache_dir=args.cache_dir, progress=False)
    wall = time.perf_counter() - t0
    sampler.stop.set()
    sampler.join()
    s = status_kb()
    print(json.dumps({"frames": res.num_frames, "wall": wall, "timings": res.timings,
                      "VmHWM_kB": s["VmHWM"], "ru_maxrss_kB": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss,
                      "peak_RssAnon_kB": sampler.peak["RssAnon"], "peak_RssFile_kB": sampler.peak["RssFile"],
                      "cache": str(res.cache) if res.cache else None}))


def child_live(args: argparse.Namespace) -> None:
    from pml_rt import Segmenter
    from pml_rt.io import open_video

    seg = Segmenter(args.model, backend="onnxruntime")
    src = open_video(args.video)
    live = seg.stream(iter(src), args.mask, input_fps=25.0)
    t0 = time.perf_counter()
    n = sum(1 for _ in live)
    wall = time.perf_counter() - t0
    st = live.stats
    print(json.dumps({"frames": n, "wall": wall, "rate": st.rate, "median_ms": st.median_ms,
                      "keeping_up": st.keeping_up, "summary": st.summary(), "VmHWM_kB": status_kb()["VmHWM"]}))


def run_child(*argv: str) -> dict:
    r = subprocess.run([sys.executable, str(HERE), *argv], capture_output=True, text=True)
    if r.returncode != 0:
        sys.exit(f"child {' '.join(argv[:2])} failed:\n{r.stderr}")
    return json.loads(r.stdout.strip().splitlines()[-1])


# -- the parent ----------------------------------------------------------------------------

def parse_size(text: str) -> tuple[int, int]:
    """"854x480" -> (480, 854); H.264 in yuv420p wants even sides."""
    w, h = (int(v) for v in text.lower().split("x"))
    if h % 2 or w % 2:
        sys.exit(f"size {text}: width and height must be even")
    return h, w


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--frames", type=int, nargs="*", default=[60, 200],
                   help="video lengths (default 60 200; none: live mode only)")
    p.add_argument("--size", default="854x480", help="WIDTHxHEIGHT (default 854x480)")
    p.add_argument("--live-frames", type=int, default=30, help="frames streamed in live mode (0: skip)")
    p.add_argument("--live-size", nargs="+", default=["854x480", "426x240"], help="sizes for live mode (even)")
    p.add_argument("--no-release", action="store_true", help="do not let memory-mapped pages go (for comparison)")
    p.add_argument("--workdir", default=None, help="keep the videos, masks and cache here (default: a temp dir)")
    p.add_argument("--json", default=None, help="write the numbers here")
    p.add_argument("--model", default=None, help="registered model (default: the packaged default)")
    p.add_argument("--cold-only", action="store_true",
                   help="skip the second (warm cache) run of the longest video (halves a 5,000-frame run)")
    sub = p.add_subparsers(dest="child")
    for name in ("segment", "live"):
        c = sub.add_parser(name)
        c.add_argument("video")
        c.add_argument("mask")
        c.add_argument("--out")
        c.add_argument("--cache-dir")
        c.add_argument("--no-release", action="store_true")
        c.add_argument("--model", required=True)
    args = p.parse_args()
    if args.child == "segment":
        return child_segment(args)
    if args.child == "live":
        return child_live(args)

    from PIL import Image

    from pml_rt.registry import DEFAULT_MODEL, get_model_config

    cfg = get_model_config(args.model or DEFAULT_MODEL)  # an unknown name stops here, listing the valid ones
    model = ["--model", cfg.name]  # what the children run
    d, stride = cfg.d, cfg.stride
    h, w = parse_size(args.size)
    work = Path(args.workdir) if args.workdir else Path(tempfile.mkdtemp(prefix="pml-rt-long-"))
    work.mkdir(parents=True, exist_ok=True)
    report: dict = {"size": [h, w], "model": cfg.name, "runs": [], "live": []}
    print(f"long video: {w}x{h}, lengths {args.frames}, model {cfg.name}, work folder {work}")
    for n in args.frames:
        video = work / f"long-{n}.mp4"
        mask = work / f"mask-{n}.png"
        t0 = time.perf_counter()
        Image.fromarray(make_video(video, n, h, w)).save(mask)
        print(f"  {n} frames: video written in {time.perf_counter() - t0:.1f} s ({video.stat().st_size / 1e6:.1f} MB)")
        phases = ("cold cache", "warm cache") if n == max(args.frames) and not args.cold_only else ("cold cache",)
        for phase in phases:
            extra = ["--no-release"] if args.no_release else []
            r = run_child("segment", str(video), str(mask), "--out", str(work / f"masks-{n}"),
                          "--cache-dir", str(work / "cache"), *extra, *model)
            data = Path(r["cache"]) / "embeddings.f16"
            hh, ww = -(-h // stride), -(-w // stride)
            formula = n * hh * ww * d * 2
            r.update(phase=phase, cache_bytes=data.stat().st_size, formula_bytes=formula, no_release=args.no_release)
            report["runs"].append(r)
            t = r["timings"]
            print(f"  {n} frames, {phase}: peak RSS {r['VmHWM_kB'] / 1024:.0f} MB (VmHWM; ru_maxrss "
                  f"{r['ru_maxrss_kB'] / 1024:.0f} MB; anon peak {r['peak_RssAnon_kB'] / 1024:.0f} MB, file-backed "
                  f"peak {r['peak_RssFile_kB'] / 1024:.0f} MB); embed {t['embed']:.0f} s, propagate+write "
                  f"{t['propagate+write']:.0f} s ({1000 * r['wall'] / n:.0f} ms/frame end to end)")
        print(f"  cache: {data.stat().st_size / 1e6:.1f} MB on disk; frames x ceil(H/{stride}) x ceil(W/{stride}) "
              f"x d x 2 = {n} x {hh} x {ww} x {d} x 2 = {formula / 1e6:.1f} MB ({cfg.name})")
    cold = [r for r in report["runs"] if r["phase"] == "cold cache"]
    if len(cold) >= 2:
        x = np.array([r["frames"] for r in cold], float)
        y = np.array([r["VmHWM_kB"] / 1024 for r in cold], float)
        b, a = np.polyfit(x, y, 1)
        est = a + b * 5000
        report["fit"] = {"MB_at_0": a, "MB_per_frame": b, "MB_at_5000": est}
        print(f"  peak RSS fit over {x.astype(int).tolist()} frames: {a:.0f} MB + {b * 1000:.1f} kB/frame -> "
              f"{est:.0f} MB at 5000 frames (extrapolated, not run); cache at 5000 frames: "
              f"{5000 * hh * ww * d * 2 / 1e9:.2f} GB")
    for size in (args.live_size if args.live_frames else []):
        lh, lw = parse_size(size)
        video, mask = work / f"live-{lw}x{lh}.mp4", work / f"live-mask-{lw}x{lh}.png"
        Image.fromarray(make_video(video, args.live_frames, lh, lw)).save(mask)
        r = run_child("live", str(video), str(mask), *model)
        r["size"] = [lh, lw]
        report["live"].append(r)
        print(f"  live {lw}x{lh}: {r['summary']}; peak RSS {r['VmHWM_kB'] / 1024:.0f} MB")
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
