"""``python -m training {cache,train,eval,e2e,export}``: thin argparse wrappers (see docs/TRAINING.md)."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path



def _default_root() -> str:
    from pml_rt.davis import default_data_root  # noqa: PLC0415

    return str(default_data_root() / "davis2016-dev")


def _csv(s: str) -> tuple[str, ...]:
    return tuple(x for x in s.split(",") if x)


def _value(v: str):
    for conv in (int, float):
        try:
            return conv(v)
        except ValueError:
            pass
    return {"true": True, "false": False, "on": True, "off": False}.get(v.lower(), v)


def cmd_cache(a: argparse.Namespace) -> None:
    from .features import build_cache  # noqa: PLC0415

    build_cache(a.root, a.cache, a.split, _csv(a.variants), seed=a.seed, progress=not a.quiet, backbone=a.backbone,
                max_frames=a.max_frames)


def cmd_train(a: argparse.Namespace) -> None:
    from pml_rt.davis import DavisDataset  # noqa: PLC0415

    from .sampling import SamplingConfig  # noqa: PLC0415
    from .train import TrainConfig, train  # noqa: PLC0415

    holdout = _csv(a.holdout)
    seqs = _csv(a.sequences) if a.sequences else tuple(s for s in DavisDataset(a.root).sequences(split="train")
                                                         if s not in holdout)
    if set(seqs) & set(DavisDataset(a.root).sequences(split="val")) and not a.allow_val:
        sys.exit("refusing to train on val sequences (pass --allow-val only for the final all-12 model)")
    sampling = SamplingConfig(anchors=a.anchors, balance=not a.no_balance, crop_min=a.crop_min, jitter=a.jitter,
                              p_flip=a.p_flip, p_static=a.p_static, p_paste=a.p_paste, p_mix_variants=a.p_mix)
    cfg = TrainConfig(cache=a.cache, sequences=seqs, holdout=holdout, variants=_csv(a.variants), loss=a.loss,
                      alpha=a.alpha, margin=a.margin, d=a.d, hidden=a.hidden, spatio_temporal=not a.no_spatio_temporal,
                      steps=a.steps, batch=a.batch, lr=a.lr, weight_decay=a.weight_decay, dropout=a.dropout,
                      seed=a.seed, sampling=sampling, eval_every=a.eval_every, ckpt_every=a.ckpt_every,
                      time_limit=a.time_limit * 60, threads=a.threads, backbone=a.backbone)
    Path(a.out).mkdir(parents=True, exist_ok=True)
    (Path(a.out) / "command.txt").write_text("python -m training " + " ".join(sys.argv[1:]) + "\n")
    print(json.dumps(train(cfg, a.out, progress=not a.quiet), indent=1))


def cmd_eval(a: argparse.Namespace) -> None:
    from pml_rt.evaluate import format_table, save_report  # noqa: PLC0415

    from .evaluate import evaluate_heads  # noqa: PLC0415
    from .train import load_head  # noqa: PLC0415

    heads = {}
    if not a.no_untrained:
        heads["untrained"] = None
    for spec in a.ckpt:
        name, _, path = spec.rpartition("=")
        heads[name or Path(path).parent.name] = load_head(path)[0]
    configs = {}
    for spec in a.prop or []:
        name, _, opts = spec.partition(":")
        configs[name] = {k: _value(v) for k, v in (kv.split("=") for kv in opts.split(",") if kv)}
    report = evaluate_heads(heads, a.cache, a.root, configs or None, split=a.split, max_frames=a.max_frames,
                            upsample=a.upsample, progress=not a.quiet, sequences=_csv(a.sequences) or None)
    table = format_table(report)
    print(table)
    if a.json:
        save_report(report, a.json, "python -m training " + " ".join(sys.argv[1:]))


def cmd_e2e(a: argparse.Namespace) -> None:
    """An exported ONNX through the runtime itself (Segmenter + pml_rt.evaluate), as a user runs it."""
    from pml_rt.evaluate import evaluate_configs, format_table  # noqa: PLC0415
    from pml_rt.segmenter import Segmenter  # noqa: PLC0415

    seg = Segmenter(backend="onnxruntime", model_path=a.onnx)
    rep = evaluate_configs(seg, a.root, {Path(a.onnx).stem: {"upsample": a.upsample}}, split=a.split,
                           max_frames=a.max_frames, progress=not a.quiet)
    print(format_table(rep))
    if a.json:
        out = {n: {k: v for k, v in c.items() if k != "per_object"} for n, c in rep["configs"].items()}
        Path(a.json).write_text(json.dumps({"configs": out, "timing": rep["timing"],
                                            "command": "python -m training " + " ".join(sys.argv[1:])}, indent=1))


def cmd_export(a: argparse.Namespace) -> None:
    from .export import export_checkpoint  # noqa: PLC0415

    info = export_checkpoint(a.ckpt, a.out, name=a.name, card=a.card, figures=a.figures)
    print(json.dumps(info, indent=1))


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m training", description=__doc__)
    sub = p.add_subparsers(dest="cmd", required=True)
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--root", default=_default_root(), help="DAVIS-format dataset root")
    common.add_argument("--cache", default="runs/features/mnv2", help="feature cache folder")
    common.add_argument("--quiet", action="store_true", help="no progress bars")

    c = sub.add_parser("cache", parents=[common], help="cache frozen backbone features (ONNX Runtime)")
    c.add_argument("--split", default="train")
    c.add_argument("--variants", default="orig", help="comma list of orig,s075,color")
    c.add_argument("--seed", type=int, default=0)
    c.add_argument("--max-frames", type=int, default=None, help="first N frames of each sequence only")
    c.add_argument("--backbone", default="mobilenet_v2",
                   choices=["mobilenet_v2", "mobilenet_v2_os16", "efficientnet_lite0", "efficientnet_lite1", "efficientnet_lite2"])
    c.set_defaults(fn=cmd_cache)

    t = sub.add_parser("train", parents=[common], help="train a head on cached features (resumes in --out)")
    t.add_argument("--out", required=True)
    t.add_argument("--sequences", default="", help="comma list (default: train split minus --holdout)")
    t.add_argument("--holdout", default="", help="train-split sequences kept out for early stopping")
    t.add_argument("--allow-val", action="store_true")
    t.add_argument("--variants", default="orig,s075,color")
    t.add_argument("--backbone", default="mobilenet_v2", help="the backbone whose features --cache holds")
    t.add_argument("--loss", default="paper", choices=["paper", "triplet", "contrastive"])
    t.add_argument("--alpha", type=float, default=0.3)
    t.add_argument("--margin", type=float, default=1.0)
    t.add_argument("--d", type=int, default=128)
    t.add_argument("--hidden", type=int, default=256)
    t.add_argument("--no-spatio-temporal", action="store_true")
    t.add_argument("--steps", type=int, default=100,
                   help="training steps (default 100: the shipped recipe, chosen on a held-out train fold)")
    t.add_argument("--batch", type=int, default=4)
    t.add_argument("--lr", type=float, default=1e-3)
    t.add_argument("--weight-decay", type=float, default=1e-4)
    t.add_argument("--dropout", type=float, default=0.0)
    t.add_argument("--seed", type=int, default=0)
    t.add_argument("--anchors", type=int, default=256)
    t.add_argument("--no-balance", action="store_true")
    t.add_argument("--crop-min", type=float, default=0.6)
    t.add_argument("--jitter", type=int, default=4)
    t.add_argument("--p-flip", type=float, default=0.5)
    t.add_argument("--p-static", type=float, default=0.2)
    t.add_argument("--p-paste", type=float, default=0.3)
    t.add_argument("--p-mix", type=float, default=0.5)
    t.add_argument("--eval-every", type=int, default=100)
    t.add_argument("--ckpt-every", type=int, default=100)
    t.add_argument("--time-limit", type=float, default=60.0, help="minutes")
    t.add_argument("--threads", type=int, default=1)
    t.set_defaults(fn=cmd_train)

    e = sub.add_parser("eval", parents=[common], help="val J&F of heads vs untrained features, side by side")
    e.add_argument("--ckpt", action="append", default=[], help="NAME=PATH of a checkpoint (repeatable)")
    e.add_argument("--no-untrained", action="store_true")
    e.add_argument("--prop", action="append", help="NAME:key=val,... PropagationConfig overrides (repeatable)")
    e.add_argument("--split", default="val")
    e.add_argument("--sequences", default="", help="comma list of sequences to score instead of --split")
    e.add_argument("--max-frames", type=int, default=None)
    e.add_argument("--upsample", default="bilinear")
    e.add_argument("--json", default=None)
    e.set_defaults(fn=cmd_eval)

    r = sub.add_parser("e2e", parents=[common], help="J&F of an exported ONNX through the runtime (no cache)")
    r.add_argument("--onnx", required=True)
    r.add_argument("--split", default="val")
    r.add_argument("--max-frames", type=int, default=None)
    r.add_argument("--upsample", default="bilinear")
    r.add_argument("--json", default=None)
    r.set_defaults(fn=cmd_e2e)

    x = sub.add_parser("export", help="export backbone + trained head to ONNX, with a model card")
    x.add_argument("--ckpt", required=True)
    x.add_argument("--out", required=True, help="ONNX path")
    x.add_argument("--name", default=None, help="model name for the card")
    x.add_argument("--card", default=None, help="write the model card here (markdown)")
    x.add_argument("--figures", default=None, help="JSON report of `python -m training eval` to quote in the card")
    x.set_defaults(fn=cmd_export)
    return p


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    args.fn(args)


if __name__ == "__main__":
    main()
