"""Export the embedder to ONNX and, optionally, build an FP16 TensorRT engine from it.

    python export/build_engine.py --onnx model.onnx               # any machine (needs torch)
    python export/build_engine.py --onnx model.onnx --engine      # + TensorRT plan (needs a GPU)

Thin wrapper over :mod:`pml_rt.network.export` and :mod:`pml_rt.backends.tensorrt_build`.
"""

from __future__ import annotations

import argparse
import sys
import time


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default=None, help="registered model name (default: the packaged default)")
    p.add_argument("--checkpoint", default=None,
                   help="embedder state dict (.pt); default: the registered model's weights (ImageNet backbone, and a "
                        "trained model's head from its packaged ONNX)")
    p.add_argument("--onnx", required=True, help="where to write the ONNX model (dynamic N, H, W)")
    p.add_argument("--opset", type=int, default=17, help="ONNX opset (default 17)")
    p.add_argument("--engine", nargs="?", const="", default=None,
                   help="also build an FP16 TensorRT engine; optional path (default: named after model, "
                        "TensorRT version and GPU)")
    p.add_argument("--min-shape", default="240x320", help="smallest HxW the engine accepts (default 240x320)")
    p.add_argument("--opt-shape", default="480x854", help="HxW the engine is tuned for (default 480x854)")
    p.add_argument("--max-shape", default="1088x1920", help="largest HxW the engine accepts (default 1088x1920)")
    p.add_argument("--timing-cache", default=None, help="TensorRT timing cache file, read and updated")
    p.add_argument("--workspace-gb", type=float, default=4.0, help="TensorRT builder workspace (GiB)")
    p.add_argument("--max-batch", type=int, default=4, help="largest batch the engine accepts (default 4)")
    p.add_argument("--check-frames", default=None,
                   help="folder of real frames to compare the engine against ONNX Runtime on")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from pml_rt.backends.torch_backend import packaged_embedder
    from pml_rt.network.export import export_onnx
    from pml_rt.registry import DEFAULT_MODEL, get_model_config

    cfg = get_model_config(args.model or DEFAULT_MODEL)
    if args.engine is not None:
        from pml_rt.backends.tensorrt_build import preflight

        why = preflight()
        if why:
            print(f"cannot build a TensorRT engine here: {why}", file=sys.stderr)
            return 2
    t0 = time.perf_counter()
    model = packaged_embedder(cfg, args.checkpoint)  # a trained model's head comes from its packaged ONNX
    path = export_onnx(model, args.onnx, opset=args.opset)
    print(f"wrote {path} ({path.stat().st_size / 1e6:.1f} MB) in {time.perf_counter() - t0:.1f} s")
    if args.engine is not None:
        from pml_rt.backends.tensorrt_build import build_engine_cli

        return build_engine_cli(args, path, cfg)
    return 0


if __name__ == "__main__":
    sys.exit(main())
