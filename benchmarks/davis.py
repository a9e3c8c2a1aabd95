"""J&F on a DAVIS-format root, side by side for several propagation settings on shared embeddings.

    python benchmarks/davis.py                      # val split of ../shared/data/davis2016-dev
    python benchmarks/davis.py --split train --max-frames 30

Settings compared in one run (same embeddings):
  first-frame-nn : plain k=5 nearest neighbours to the first frame, majority vote (the baseline)
  paper          : + online adaptation (the paper's method)
  default        : the package default (online adaptation + recent-frame local references)
  recent-3       : the default with 3 recent frames in a 4-cell window (cheaper)
"""

from __future__ import annotations

import argparse
import json
import sys

from pml_rt.davis import default_data_root
from pml_rt.evaluate import evaluate_configs, format_table
from pml_rt.registry import DEFAULT_MODEL, INPUT_SCALES
from pml_rt.segmenter import Segmenter
from pml_rt.upsample import DEFAULT_METHOD, METHODS

CONFIGS = {
    "first-frame-nn": {"online_adaptation": False, "recent_frames": 0, "weighting": "majority"},
    "paper (+online adapt.)": {"online_adaptation": True, "recent_frames": 0, "weighting": "majority"},
    "default (+recent refs)": {},
    "recent-3 (faster)": {"recent_frames": 3, "window": 4},
}


def _value(text: str) -> int | float | str:
    for cast in (int, float):
        try:
            return cast(text)
        except ValueError:
            pass
    return text


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--davis", default=str(default_data_root() / "davis2016-dev"), help="DAVIS-format root")
    p.add_argument("--split", default="val", help="split in ImageSets (default val)")
    p.add_argument("--max-frames", type=int, default=None, help="first N frames of each sequence")
    p.add_argument("--upsample", choices=METHODS, default=DEFAULT_METHOD)
    p.add_argument("--configs", default=None, help="comma-separated subset of: " + ", ".join(CONFIGS))
    p.add_argument("--compare-upsample", default=None,
                   help="comma-separated upsample methods to score the default config with, side by side")
    p.add_argument("--extra", action="append", default=[], metavar="NAME=KEY:VALUE[,KEY:VALUE]",
                   help="another setting: the default with these PropagationConfig fields changed, e.g. "
                        "cap1024=adaptation_cap:1024 (repeatable)")
    p.add_argument("--input-scale", type=float, default=1.0, choices=INPUT_SCALES,
                   help="Segmenter(input_scale=...): run the network on frames shrunk by this factor (default 1)")
    p.add_argument("--model", default=None, help="registered model (default: the packaged default)")
    p.add_argument("--out", default=None, help="write the default config's masks here")
    p.add_argument("--json", default=None, help="save the report as JSON")
    args = p.parse_args(argv)
    names = args.configs.split(",") if args.configs else list(CONFIGS)
    configs = {n: {**CONFIGS[n], "upsample": args.upsample} for n in names}
    for spec in args.extra:
        name, _, fields = spec.partition("=")
        try:
            opts = {k: _value(v) for k, v in (f.split(":", 1) for f in fields.split(","))}
        except ValueError:
            p.error(f"--extra {spec!r}: expected NAME=KEY:VALUE[,KEY:VALUE]")
        configs[name] = {**CONFIGS["default (+recent refs)"], **opts, "upsample": args.upsample}
    for method in (args.compare_upsample.split(",") if args.compare_upsample else []):
        configs[f"default+{method}"] = {**CONFIGS["default (+recent refs)"], "upsample": method}
    seg = Segmenter(args.model or DEFAULT_MODEL, input_scale=args.input_scale)
    report = evaluate_configs(seg, args.davis, configs, split=args.split, max_frames=args.max_frames,
                              out_dir=args.out)
    print(format_table(report))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(report, f, indent=1, default=float)
    return 0


if __name__ == "__main__":
    sys.exit(main())
