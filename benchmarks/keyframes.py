"""Semi-supervised J&F when more than one frame's mask is given (``propagate_keyframes``):
the ground truth of 1, 2, 3 ... frames spread over each sequence, side by side on one
embedding, every count scored on the same frames (those no count annotates).

    python benchmarks/keyframes.py                       # val split of ../shared/data/davis2016-dev
    python benchmarks/keyframes.py --counts 1,2,4 --max-frames 30
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make the repo root importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pml_rt.davis import default_data_root  # noqa: E402
from pml_rt.evaluate import evaluate_keyframes, format_table, save_report  # noqa: E402
from pml_rt.segmenter import Segmenter  # noqa: E402
from pml_rt.upsample import DEFAULT_METHOD, METHODS  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--davis", default=str(default_data_root() / "davis2016-dev"), help="DAVIS-format root")
    p.add_argument("--split", default="val", help="split in ImageSets (default val)")
    p.add_argument("--counts", default="1,2,3", help="annotated frames per sequence to compare (default 1,2,3)")
    p.add_argument("--max-frames", type=int, default=None, help="first N frames of each sequence")
    p.add_argument("--upsample", choices=METHODS, default=DEFAULT_METHOD)
    p.add_argument("--model", default=None, help="registered model (default: the packaged default)")
    p.add_argument("--json", default=None, help="save the report as JSON")
    args = p.parse_args(argv)
    try:
        counts = tuple(int(c) for c in args.counts.split(","))
    except ValueError:
        p.error(f"--counts takes comma-separated integers, got {args.counts!r}")
    seg = Segmenter(args.model) if args.model else Segmenter()
    report = evaluate_keyframes(seg, args.davis, counts, split=args.split, max_frames=args.max_frames,
                                upsample=args.upsample)
    print(format_table(report))
    if args.json:
        save_report(report, args.json, "python benchmarks/keyframes.py " + " ".join(sys.argv[1:]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
