"""Interactive segmentation quality with simulated users: the paper's click robot (J against
clicks per frame, Figure 7) and a DAVIS-interactive-style scribble robot (J&F per round, AUC);
``--robots propagate`` adds another use of the same clicks (all on the first frame, then
``video.propagate``), and ``propagate2`` the same on the first and the middle frame (then
``propagate_keyframes``); not the paper's protocol, on the same axis.

    python benchmarks/interactive.py                          # val split, first 25 frames, 5 seeds
    python benchmarks/interactive.py --full                   # every frame of every val sequence
    python benchmarks/interactive.py --split train --robots clicks --seeds 1
    python benchmarks/interactive.py --full --robots clicks,propagate --seeds 3   # both uses of clicks
    python benchmarks/interactive.py --synthetic              # several objects, no data needed

davis2016-dev has one object per sequence: the several-object case runs on the synthetic
clip (squares with known embeddings), where J shows that ids, columns and votes hold up.
Writes <out>/interactive.png (the curve), <out>/interactive.md (tables) and
<out>/interactive.json. Embeddings are cached in --cache (default <out>/embeddings).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

if __package__ in (None, ""):  # run as a script: make the repo root importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pml_rt.davis import DavisDataset, default_data_root  # noqa: E402
from pml_rt.robots import (  # noqa: E402
    add_session_switches,
    click_robot,
    click_then_propagate,
    davis_videos,
    format_click_table,
    format_scribble_table,
    plot_click_curves,
    scribble_robot,
    session_switches,
    summarize_click_runs,
    synthetic_video,
)
from pml_rt.segmenter import Segmenter  # noqa: E402
from pml_rt.session import INTERACTIVE_UPSAMPLE  # noqa: E402
from pml_rt.upsample import METHODS  # noqa: E402


def _videos(args: argparse.Namespace):
    if args.synthetic:
        for i in range(3):
            video, gt = synthetic_video(args.synthetic_frames, (240, 320), 3, d=64, seed=100 + i, square=72,
                                        noise=0.3)
            yield f"synthetic-{i}", video, gt
        return
    ds = DavisDataset(args.davis)
    seqs = args.sequences.split(",") if args.sequences else ds.sequences(split=args.split)
    cache = args.cache or str(Path(args.out) / "embeddings")
    segmenter = Segmenter(args.model) if args.model else None
    yield from davis_videos(args.davis, seqs, max_frames=None if args.full else args.max_frames, cache_dir=cache,
                            progress=True, segmenter=segmenter)


def _write(path: Path, text: str) -> None:
    tmp = path.with_name("." + path.name + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def _jsonable(summary: dict) -> dict:
    return {k: (v.tolist() if isinstance(v, np.ndarray) else {str(a): b.tolist() for a, b in v.items()})
            for k, v in summary.items()}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--davis", default=str(default_data_root() / "davis2016-dev"), help="DAVIS-format root")
    p.add_argument("--split", default="val", help="split in ImageSets (default val; tune only on train)")
    p.add_argument("--sequences", default=None, help="comma-separated sequences instead of a split")
    p.add_argument("--max-frames", type=int, default=25, help="first N frames of each sequence (default 25)")
    p.add_argument("--full", action="store_true", help="every frame of every sequence (overrides --max-frames)")
    p.add_argument("--seeds", type=int, default=5, help="click-robot runs per sequence (default 5)")
    p.add_argument("--first-seed", type=int, default=0,
                   help="seed of the first run (default 0): runs use seeds FIRST .. FIRST+SEEDS-1, so a second "
                        "set of seeds checks a choice made on the first")
    p.add_argument("--robots", default="clicks,scribbles",
                   help="comma-separated: clicks (the paper's robot), scribbles, propagate (clicks on the first "
                        "frame, then propagation; not the paper's protocol), propagate2 (the same on the first and "
                        "the middle frame); default clicks,scribbles")
    p.add_argument("--rounds", type=int, default=8, help="scribble-robot rounds (default 8)")
    p.add_argument("--scribbles", default=str(default_data_root() / "davis-scribbles"),
                   help="DAVIS scribble folder: <seq>/001.json starts round 1 where it exists")
    p.add_argument("--k", type=int, default=None, help="neighbours per vote (default: the session's)")
    p.add_argument("--position-weight", type=float, default=None,
                   help="session position_weight (default: the session's)")
    p.add_argument("--time-scale", type=float, default=None, help="session time_scale (default: the session's)")
    p.add_argument("--smoothing", default=None,
                   help="session smoothing box FRAMES,ROWS,COLS (e.g. 3,3,3) or none (default: the session's)")
    add_session_switches(p)  # --temporal, --background-floor, --trust-span
    p.add_argument("--upsample", choices=METHODS, default=INTERACTIVE_UPSAMPLE,
                   help=f"mask upsampling (default {INTERACTIVE_UPSAMPLE}, the session's)")
    p.add_argument("--synthetic", action="store_true", help="three synthetic 3-object clips instead of DAVIS")
    p.add_argument("--synthetic-frames", type=int, default=20)
    p.add_argument("--model", default=None, help="registered model (default: the packaged default)")
    p.add_argument("--out", default="runs/interactive", help="output folder (default runs/interactive)")
    p.add_argument("--cache", default=None, help="embedding cache folder (default <out>/embeddings)")
    args = p.parse_args(argv)
    robots = {r.strip() for r in args.robots.split(",") if r.strip()}
    if not robots or not robots <= {"clicks", "scribbles", "propagate", "propagate2"}:
        p.error(f"--robots takes clicks, scribbles, propagate and/or propagate2, got {args.robots!r}")
    if args.seeds < 1 or args.first_seed < 0:
        p.error(f"--seeds must be >= 1 and --first-seed >= 0, got {args.seeds} and {args.first_seed}")
    run_seeds = range(args.first_seed, args.first_seed + args.seeds)
    opts = {"upsample": args.upsample}
    for key, val in (("k", args.k), ("position_weight", args.position_weight), ("time_scale", args.time_scale)):
        if val is not None:
            opts[key] = val
    if args.smoothing is not None:
        try:
            opts["smoothing"] = None if args.smoothing.lower() == "none" else tuple(
                int(v) for v in args.smoothing.split(","))
        except ValueError:
            p.error(f"--smoothing takes FRAMES,ROWS,COLS or none, got {args.smoothing!r}")
    opts.update(session_switches(args))
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    click_runs, scribble_runs, propagate_runs, propagate2_runs = [], [], [], []
    t_start = time.perf_counter()
    frames = 0
    for seq, video, gt in _videos(args):
        frames += len(gt)
        middle = len(gt) // 2
        # (robot name, function, its frames option, where its runs go, what the progress line calls it)
        for name, robot, extra, runs, label in (
                ("clicks", click_robot, {}, click_runs, ""),
                ("propagate", click_then_propagate, {"frames": 0}, propagate_runs, ", clicks on frame 0 then propagate"),
                ("propagate2", click_then_propagate, {"frames": (0, middle)}, propagate2_runs,
                 f", clicks on frames 0 and {middle} then propagate")):
            if name not in robots:
                continue
            for seed in run_seeds:
                t0 = time.perf_counter()
                run = robot(video, gt, seed=seed, sequence=seq, session_options=opts, **extra)
                runs.append(run)
                print(f"{seq} seed {seed}{label}: J " + " ".join(f"{j:.3f}" for j in run.j)
                      + f"  ({time.perf_counter() - t0:.0f} s, {1000 * np.median(run.click_seconds):.0f} ms/click)",
                      flush=True)
        if "scribbles" in robots:
            initial = Path(args.scribbles) / seq / "001.json"
            run = scribble_robot(video, gt, rounds=args.rounds, sequence=seq, session_options=opts,
                                 initial=initial if initial.is_file() and not args.synthetic else None)
            scribble_runs.append(run)
            print(f"{seq} scribbles ({run.initial}): J&F " + " ".join(f"{v:.3f}" for v in run.jf)
                  + f"  AUC {run.auc:.3f}", flush=True)
    where = "synthetic 3-object clips" if args.synthetic else (
        f"{args.split if not args.sequences else args.sequences} of {args.davis}, "
        + ("all frames" if args.full else f"first {args.max_frames} frames"))
    text = [f"# Interactive benchmark: {where}", "",
            f"session options: {opts}; {frames} frames; {time.perf_counter() - t_start:.0f} s", ""]
    report: dict = {"where": where, "options": opts, "frames": frames,
                    "seeds": list(run_seeds)}
    seeds = f"{args.seeds} seeds" + (f", {run_seeds[0]}..{run_seeds[-1]}" if args.first_seed else "")
    short = "synthetic" if args.synthetic else (args.sequences or args.split) + (
        ", all frames" if args.full else f", first {args.max_frames} frames")
    curves = {}
    if click_runs:
        summary = summarize_click_runs(click_runs)
        objects = sorted({len(r.objects) for r in click_runs})
        text += [f"## Click robot ({seeds}; J on every frame; objects per sequence: {objects})", "",
                 format_click_table(summary), ""]
        curves[f"pml-rt, paper's robot ({short})"] = summary
        report["clicks"] = _jsonable(summary)
        report["click_ms_median"] = 1000 * float(np.median(np.concatenate([r.click_seconds for r in click_runs])))
    for key, runs, what in (("propagate", propagate_runs, "frame 0"),
                            ("propagate2", propagate2_runs, "frame 0 and the middle frame")):
        if runs:
            summary = summarize_click_runs(runs)
            text += [f"## Clicks on {what}, then propagation ({seeds}; not the paper's protocol; "
                     "J on every frame)", "", format_click_table(summary), ""]
            curves[f"clicks on {what}, then propagate"] = summary
            report[key] = _jsonable(summary)
    if curves:
        plot_click_curves(curves, out / "interactive.png",
                          title=f"click robot, {seeds}, mean +- std over seeds")
    if scribble_runs:
        text += [f"## Scribble robot ({args.rounds} rounds; J&F on every frame)", "",
                 format_scribble_table(scribble_runs), ""]
        report["scribbles"] = [{"sequence": r.sequence, "initial": r.initial, "jf": r.jf.tolist(), "j": r.j.tolist(),
                                "f": r.f.tolist(), "auc": r.auc, "frames": r.frames} for r in scribble_runs]
    _write(out / "interactive.md", "\n".join(text))
    _write(out / "interactive.json", json.dumps(report, indent=1))
    print("\n".join(text))
    print(f"wrote {out / 'interactive.md'}" + (f", {out / 'interactive.png'}" if curves else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
