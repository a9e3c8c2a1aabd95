"""The ``pml-rt`` command: segment, eval, info, demo (and annotate, batch where installed).

Errors the user can fix (bad input, missing library) print one line and exit with status 2;
``--debug`` shows the traceback instead.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path
from typing import Any, Callable

from . import __version__
from .errors import InputError, PmlError
from .upsample import DEFAULT_METHOD, METHODS


def _add_propagation_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--upsample", choices=METHODS, default=DEFAULT_METHOD,
                   help=f"how stride-8 labels reach full resolution (default {DEFAULT_METHOD})")
    p.add_argument("-k", type=int, default=5, help="neighbours per vote (default 5)")
    p.add_argument("--no-online-adaptation", action="store_true", help="do not grow the reference pool")
    p.add_argument("--recent-frames", type=int, default=None,
                   help="earlier frames used as local references (0 turns it off; default: the model's)")
    p.add_argument("--model", default=None, help="registered model name (default: the packaged one)")
    p.add_argument("--backend", default="auto", help="auto, onnxruntime, tensorrt or torch (default auto)")
    _add_input_scale(p, "masks stay full size")


def _add_input_scale(p: argparse.ArgumentParser, note: str) -> None:
    from .registry import INPUT_SCALES

    p.add_argument("--input-scale", type=float, default=1.0, choices=INPUT_SCALES,
                   help=f"run the network on frames shrunk by this factor (0.5: about 4x faster, coarser "
                        f"edges; {note}; default 1)")


def _segmenter(args: argparse.Namespace):
    from .registry import DEFAULT_MODEL
    from .segmenter import Segmenter

    return Segmenter(args.model or DEFAULT_MODEL, backend=args.backend, input_scale=args.input_scale)


def _propagate_options(args: argparse.Namespace) -> dict:
    return {} if args.recent_frames is None else {"recent_frames": args.recent_frames}


def _masks(args: argparse.Namespace) -> tuple[Any, int]:
    """(mask, frame) from one --mask [--mask-frame N]; ({frame: mask}, 0) from several pairs."""
    masks, frames = args.mask, args.mask_frame or []
    if len(masks) == 1:
        if len(frames) > 1:
            raise InputError(f"{len(frames)} --mask-frame values for one --mask; give one --mask per frame")
        return masks[0], (frames[0] if frames else 0)
    if len(frames) != len(masks):
        raise InputError(f"{len(masks)} --mask options need as many --mask-frame values (got {len(frames)}), "
                         "in the same order")
    if len(set(frames)) != len(frames):
        raise InputError(f"--mask-frame values repeat ({', '.join(map(str, frames))}); one mask per frame")
    return dict(zip(frames, masks)), 0


def cmd_segment(args: argparse.Namespace) -> int:
    args.mask, args.mask_frame = _masks(args)
    if args.stream is not None:
        return _segment_stream(args)
    if args.video == "-":
        raise InputError("video '-' (stdin) needs --stream WIDTHxHEIGHT: raw rgb24 frames, as "
                         "ffmpeg -f rawvideo -pix_fmt rgb24 writes them")
    from .pipeline import segment_to_folder

    res = segment_to_folder(_segmenter(args), args.video, args.mask, args.out, mask_frame=args.mask_frame,
                            overlay=args.overlay, upsample=args.upsample, k=args.k,
                            online_adaptation=not args.no_online_adaptation, progress=not args.quiet,
                            propagate_options=_propagate_options(args), cache=not args.no_cache,
                            cache_dir=args.cache_dir)
    total = sum(res.timings.values())
    print(f"wrote {res.num_frames} masks to {res.out_dir}" + (f" and {res.overlay}" if res.overlay else "")
          + f" in {total:.1f} s ({1000 * total / max(res.num_frames, 1):.0f} ms/frame)")
    hint = large_frame_hint(res.frame_size, args.input_scale)
    if hint:
        print(hint, file=sys.stderr)
    return 0


#: Frames above this many pixels get a hint about --input-scale (1.5 x 1280x720).
LARGE_FRAME_PIXELS = 1_382_400


def large_frame_hint(frame_size: tuple[int, int], input_scale: float) -> str | None:
    """A one-line hint for frames much larger than the 854x480 the model was trained on, where
    the search (which grows with the square of the cells) dominates; None otherwise."""
    h, w = frame_size
    if input_scale != 1 or h * w <= LARGE_FRAME_PIXELS:
        return None
    return (f"note: frames of {w}x{h}: --input-scale 0.5 runs the network and the search on a quarter of the "
            "cells (at 1920x1080 here 3.4x faster and a third of the memory, with coarser edges; docs/RESULTS.md)")


def _segment_stream(args: argparse.Namespace) -> int:
    """Live mode: masks written one PNG per frame, atomically, as the frames arrive."""
    from .cache import OutputError, output_error
    from .io import open_video, write_palette_png
    from .stream import parse_size, read_raw_frames

    if args.overlay is not None:
        raise InputError("--overlay is not available with --stream; segment the saved video instead")
    if isinstance(args.mask, dict) or args.mask_frame != 0:
        raise InputError("--mask-frame is not available with --stream; its one --mask belongs to the first frame "
                         "of the stream")
    if args.video == "-":
        if args.stream == "auto":
            raise InputError("reading stdin needs the frame size: --stream WIDTHxHEIGHT (raw rgb24 frames, as "
                             "ffmpeg -f rawvideo -pix_fmt rgb24 writes them)")
        frames = read_raw_frames(sys.stdin.buffer, parse_size(args.stream))
        fps = args.fps
    else:
        source = open_video(args.video)
        if args.stream != "auto" and parse_size(args.stream) != source.frame_size:
            h, w = source.frame_size
            raise InputError(f"video '{args.video}' is {w}x{h}, not --stream {args.stream}")
        frames, fps = iter(source), args.fps or source.fps
    out = Path(args.out)
    if out.exists() and not out.is_dir():
        raise InputError(f"output folder {out} exists and is not a folder")
    live = _segmenter(args).stream(frames, args.mask, upsample=args.upsample, k=args.k,
                                   online_adaptation=not args.no_online_adaptation,
                                   recent_frames=args.recent_frames, input_fps=fps)
    n = 0
    try:
        for n, m in enumerate(live, start=1):
            if n == 1:
                out.mkdir(parents=True, exist_ok=True)
            write_palette_png(out / f"{n - 1:05d}.png", m)
    except OutputError:
        raise
    except OSError as exc:
        raise output_error(f"masks to {out}", exc, "free space or choose another --out") from exc
    print(f"wrote {n} masks to {out} as they came: {live.stats.summary()}")
    return 0


def cmd_eval(args: argparse.Namespace) -> int:
    from .evaluate import evaluate_davis, format_table

    report = evaluate_davis(_segmenter(args), args.davis, out_dir=args.out, split=args.split,
                            sequences_file=args.sequences, upsample=args.upsample, k=args.k,
                            online_adaptation=not args.no_online_adaptation, max_frames=args.max_frames,
                            progress=not args.quiet, propagate_options=_propagate_options(args))
    print(format_table(report))
    return 0


def cmd_info(args: argparse.Namespace) -> int:
    from .backends import backend_status
    from .registry import DEFAULT_MODEL, get_model_config, list_models
    from .xp import array_modules

    cfg = get_model_config(DEFAULT_MODEL)
    print(f"pml-rt {__version__}")
    print(f"default model: {cfg.name} ({cfg.path}, {'present' if cfg.path.is_file() else 'MISSING'})")
    print(f"  {cfg.description}")
    print(f"  stride {cfg.stride}, d {cfg.d}, trained: {cfg.trained}")
    print(f"models: {', '.join(list_models())}")
    print("backends:")
    for name, ok, why in backend_status():
        print(f"  {name:12s} {'yes' if ok else 'no ':3s}  {why}")
    print("array modules:")
    for name, mod, why in array_modules():
        print(f"  {name:12s} {'yes' if mod is not None else 'no ':3s}  {why}")
    from . import knn  # noqa: PLC0415

    print(f"kNN on the CPU: {knn._cpu_kernel} kernels (PML_RT_KNN_KERNEL: one of {', '.join(knn.CPU_KERNELS)}); "
          "CuPy arrays run the array-module code")
    from .ort_options import spinning  # noqa: PLC0415

    print(f"ONNX Runtime thread spinning: {'on' if spinning() else 'off'} (PML_RT_ORT_SPIN=0|1)")
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from .demo import run_demo

    out = run_demo(args.out, frames=args.frames, upsample=args.upsample, progress=not args.quiet)
    print(f"demo written to {out}")
    return 0


def _lazy(module: str, func: str) -> Callable[[argparse.Namespace], int]:
    def run(args: argparse.Namespace) -> int:
        import importlib

        return importlib.import_module(module).__getattribute__(func)(args)

    return run


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="pml-rt", description="Video object segmentation by pixel-wise metric learning.")
    p.add_argument("--version", action="version", version=f"pml-rt {__version__}")
    p.add_argument("--debug", action="store_true", help="show tracebacks")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bars")
    sub = p.add_subparsers(dest="command", required=True)

    s = sub.add_parser("segment", help="segment a video from a mask on one frame (or masks on several)")
    s.add_argument("video", help="video file (MP4, MOV, AVI, WebM, MKV), folder of frames, or - (stdin, "
                   "with --stream WIDTHxHEIGHT)")
    s.add_argument("--mask", required=True, action="append",
                   help="mask PNG (DAVIS palette or 0/255); repeat it, each with its --mask-frame, for masks on "
                        "several frames")
    s.add_argument("--mask-frame", type=int, action="append", default=None,
                   help="frame index the mask belongs to (default 0); one per --mask when there are several")
    s.add_argument("--out", required=True, help="folder for the palette PNG masks, named like the frames")
    s.add_argument("--overlay", default=None, help="also write an overlay preview video (.mp4)")
    s.add_argument("--stream", nargs="?", const="auto", default=None, metavar="WIDTHxHEIGHT",
                   help="live mode: segment frames as they come and write each mask at once (<out>/00000.png, "
                   "...); with video '-', read raw rgb24 frames of this size from stdin (ffmpeg -f rawvideo "
                   "-pix_fmt rgb24 -); see docs/STREAMING.md")
    s.add_argument("--fps", type=float, default=None,
                   help="input frame rate that --stream is measured against (default: the video's, else 25)")
    s.add_argument("--cache-dir", default=None,
                   help="embedding cache folder (default $PML_RT_CACHE or ~/.cache/pml-rt); a rerun on the same "
                   "video reuses the embeddings, an interrupted one resumes")
    s.add_argument("--no-cache", action="store_true", help="do not read or write the embedding cache")
    _add_propagation_options(s)
    s.set_defaults(func=cmd_segment)

    e = sub.add_parser("eval", help="semi-supervised DAVIS evaluation: J, F per sequence and means")
    e.add_argument("--davis", required=True, help="DAVIS-format root (JPEGImages/480p, Annotations/480p, ImageSets)")
    e.add_argument("--sequences", default=None, help="text file with one sequence per line")
    e.add_argument("--split", default=None, help="split name in ImageSets (e.g. val); default all sequences")
    e.add_argument("--out", required=True, help="folder for the masks (one subfolder per sequence)")
    e.add_argument("--max-frames", type=int, default=None, help="only the first N frames of each sequence")
    _add_propagation_options(e)
    e.set_defaults(func=cmd_eval)

    i = sub.add_parser("info", help="version, model and which backends are available (and why not)")
    i.set_defaults(func=cmd_info)

    d = sub.add_parser("demo", help="segment a short clip built from scikit-image photos; write an overlay")
    d.add_argument("--out", default="pml-rt-demo", help="output folder (default ./pml-rt-demo)")
    d.add_argument("--frames", type=int, default=24, help="clip length (default 24)")
    d.add_argument("--upsample", choices=METHODS, default=DEFAULT_METHOD)
    d.set_defaults(func=cmd_demo)

    a = sub.add_parser("annotate", help="browser annotator: click objects, watch masks follow")
    a.add_argument("video", help="video file or folder of frames")
    a.add_argument("--port", type=int, default=8765, help="port (default 8765)")
    a.add_argument("--host", default="127.0.0.1", help="address to listen on (default loopback)")
    a.add_argument("--out", default=None, help="folder for exported masks")
    a.add_argument("--model", default=None,
                   help="registered model name (default: the packaged one; mnv2-os16-d64 embeds about 2x faster)")
    _add_input_scale(a, "clicks are answered faster")
    a.set_defaults(func=_lazy("pml_rt.web.server", "cli_main"))

    b = sub.add_parser("batch", help="segment many videos listed in a manifest, on Ray")
    b.add_argument("manifest", help="CSV or JSON-lines manifest: one video and its annotation per row")
    b.add_argument("--out", required=True, help="output folder (one subfolder per video, and the ledger)")
    b.add_argument("--address", default=None, help="Ray address (ray://host:port or auto); default: start Ray here")
    b.add_argument("--gpus-per-worker", type=float, default=0, help="GPUs per worker (default 0)")
    b.add_argument("--cpus-per-worker", type=float, default=1, help="CPUs per worker (default 1)")
    b.add_argument("--workers", type=int, default=None, help="number of workers (default: as the cluster allows)")
    _add_propagation_options(b)
    b.set_defaults(func=_lazy("pml_rt.batch", "cli_main"))
    return p


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.debug else logging.WARNING, format="%(message)s")
    try:
        return int(args.func(args) or 0)
    except (PmlError, ValueError, OSError) as exc:
        if args.debug:
            raise
        print(f"pml-rt {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"pml-rt {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
