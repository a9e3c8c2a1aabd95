"""Rebuild the ONNX Runtime kNN kernels shipped in ``pml_rt/kernels/`` (needs ``onnx``).

    python export/build_kernels.py            # writes pml_rt/kernels/{topk,matmul_topk,window_topk}.onnx
    python export/build_kernels.py --out DIR  # somewhere else
"""

from __future__ import annotations

import argparse
import sys

from pml_rt.knn_ort import write_graphs


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default=None, help="output folder (default: the package's kernels/ folder)")
    args = p.parse_args(argv)
    for path in write_graphs(args.out):
        print(f"wrote {path} ({path.stat().st_size} bytes)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
