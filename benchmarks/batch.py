"""Batch throughput: one local Ray worker against two, on the same generated videos, in one run.

Both configurations run in the same process on one Ray instance, one after the other and
alternating order when repeated, so the ratio holds on a busy machine better than two
separate runs would; the load average and the CPU time the workers got are printed next to
it. Each worker gets ``--cpus-per-worker`` CPUs and as many ONNX Runtime / BLAS threads.

"cores the workers got" is the workers' CPU time per second of wall time. Where it does not
grow with the workers, the machine had no more to give: Linux's autogroup scheduler shares
the CPUs between sessions, and Ray's workers are all in the session of the command that
started Ray, so on a machine busy with other sessions two workers get the same share as one.

    python benchmarks/batch.py                        # 8 videos of 12 frames 320x240
    python benchmarks/batch.py --videos 8 --frames 20 --repeats 2
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
from pathlib import Path

import numpy as np

if __package__ in (None, ""):  # run as a script: make the repo root importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pml_rt._optional import require  # noqa: E402
from pml_rt.batch import BatchReport, run_batch  # noqa: E402
from pml_rt.batch_manifest import read_manifest  # noqa: E402
from pml_rt.io import write_palette_png  # noqa: E402


def make_videos(root: Path, videos: int, frames: int, size: tuple[int, int]) -> Path:
    """Write ``videos`` PNG frame folders (a textured background, a moving square) with masks and a CSV manifest."""
    from PIL import Image  # noqa: PLC0415

    h, w = size
    y, x = np.mgrid[0:h, 0:w]
    lines = ["video,mask,mask_frame"]
    for v in range(videos):
        folder = root / f"video{v:02d}"
        folder.mkdir(parents=True)
        y0, x0, side = h // 4, w // 5 + 3 * v, max(8, h // 3)
        for t in range(frames):
            f = np.empty((h, w, 3), dtype=np.uint8)
            f[..., 0] = (x * 2 + 9 * v + 3 * t) % 256
            f[..., 1] = (y * 3 + 5 * v) % 256
            f[..., 2] = (x + y) % 128
            f[y0:y0 + side, x0 + 2 * t:x0 + 2 * t + side] = (230, 40, 30)
            Image.fromarray(f).save(folder / f"{t:05d}.png")
        m = np.zeros((h, w), dtype=np.uint8)
        m[y0:y0 + side, x0:x0 + side] = 1
        write_palette_png(root / f"video{v:02d}_mask.png", m)
        lines.append(f"{folder.name},{folder.name}_mask.png,0")
    manifest = root / "manifest.csv"
    manifest.write_text("\n".join(lines) + "\n")
    return manifest


def time_batch(manifest: Path | list, out: Path, workers: int, cpus_per_worker: float) -> BatchReport:
    report = run_batch(manifest, out, workers=workers, cpus_per_worker=cpus_per_worker, progress=False)
    if report.done != len(report.rows):
        raise RuntimeError(f"benchmark batch did not finish every video:\n{report.format_table()}")
    return report


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--videos", type=int, default=8, help="number of generated videos (default 8)")
    p.add_argument("--frames", type=int, default=12, help="frames per video (default 12)")
    p.add_argument("--size", default="240x320", help="frame size HxW (default 240x320)")
    p.add_argument("--cpus-per-worker", type=float, default=1, help="CPUs (and threads) per worker (default 1)")
    p.add_argument("--repeats", type=int, default=1, help="runs of each configuration, order alternating")
    p.add_argument("--keep", default=None, help="folder to keep the videos and outputs in (default: a temp folder)")
    args = p.parse_args(argv)
    h, w = (int(s) for s in args.size.lower().split("x"))
    ray = require("ray", "the batch benchmark")
    cpus = os.cpu_count() or 1
    with tempfile.TemporaryDirectory(prefix="pml-rt-batch-bench-") as tmp:
        root = Path(args.keep) if args.keep else Path(tmp)
        manifest = make_videos(root / "data", args.videos, args.frames, (h, w))
        print(f"{args.videos} videos x {args.frames} frames {w}x{h}; Ray on {cpus} CPUs; "
              f"{args.cpus_per_worker:g} CPU(s) per worker; "
              f"load average {os.getloadavg()[0]:.1f}")
        ray.init(num_cpus=cpus, include_dashboard=False, log_to_driver=False, logging_level="WARNING")
        try:
            time_batch(read_manifest(manifest)[:1], root / "warmup", 1, args.cpus_per_worker)  # imports, caches
            times: dict[int, list[float]] = {1: [], 2: []}
            cores: dict[int, list[float]] = {1: [], 2: []}
            for r in range(args.repeats):
                for n in ((1, 2) if r % 2 == 0 else (2, 1)):
                    rep = time_batch(manifest, root / f"out-{n}w-{r}", n, args.cpus_per_worker)
                    times[n].append(rep.seconds)
                    cores[n].append(rep.cpu_seconds / rep.seconds)
                    print(f"  {n} worker(s): {rep.seconds:6.1f} s  {rep.fps:5.1f} frames/s  "
                          f"{rep.cpu_seconds / rep.frames * 1000:4.0f} CPU ms/frame  "
                          f"{cores[n][-1]:.2f} cores busy  ({rep.done} videos, {rep.frames} frames)")
        finally:
            ray.shutdown()
    one, two = statistics.median(times[1]), statistics.median(times[2])
    print(f"median wall: 1 worker {one:.1f} s, 2 workers {two:.1f} s; speed-up x{one / two:.2f} "
          f"(target x1.6); load average now {os.getloadavg()[0]:.1f}")
    # On a shared machine the workers get what other processes leave: the CPU time they got
    # per second of wall time says whether a shortfall is the batch's or the machine's.
    print(f"cores the workers got: 1 worker {statistics.median(cores[1]):.2f}, 2 workers "
          f"{statistics.median(cores[2]):.2f} (x{statistics.median(cores[2]) / statistics.median(cores[1]):.2f})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
