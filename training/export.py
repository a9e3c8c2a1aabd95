"""Export a trained head with its backbone (the full :class:`Embedder`) to ONNX, with a model card.

The head was trained on cached features of the packaged backbone, so the exported graph is
the packaged backbone (ImageNet MobileNetV2, dilated to stride 8) followed by the trained
head. The export is checked against the cached path: ONNX Runtime on a random frame must
match the backbone ONNX model + the head in torch to 1e-3.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np
import torch


def build_embedder(ckpt: str | os.PathLike, name: str = "trained", imagenet: bool = True) -> tuple[Any, Any]:
    """(Embedder with the checkpoint's head, its TrainConfig)."""
    from pml_rt.network.embedder import Embedder  # noqa: PLC0415

    from .features import backbone_config  # noqa: PLC0415
    from .train import load_head  # noqa: PLC0415

    head, cfg = load_head(ckpt)
    mcfg = backbone_config(cfg.backbone, d=cfg.d, name=name, trained=True)
    model = Embedder(mcfg, imagenet=imagenet, spatio_temporal=cfg.spatio_temporal, hidden=cfg.hidden)
    model.head.load_state_dict(head.state_dict())
    return model.eval(), cfg


def check_onnx(path: str | os.PathLike, model: Any, hw: tuple[int, int] = (64, 96), seed: int = 0) -> float:
    """Largest absolute difference between ONNX Runtime and torch on a random frame."""
    import onnxruntime as ort  # noqa: PLC0415

    rng = np.random.default_rng(seed)
    img = (rng.random((1, 3, *hw)) * 255).astype(np.float32)
    t = np.array([0.37], np.float32)
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    got = sess.run(None, {"image": img, "time": t})[0]
    with torch.no_grad():
        ref = model(torch.from_numpy(img), torch.from_numpy(t)).numpy()
    return float(np.abs(got - ref).max())


CARD = """# Model card: `{name}`

File: `pml_rt/models/{file}` ({size:.1f} MB, ONNX opset 17, float32). Inputs and outputs as
`mnv2-os8-untrained` (see MODEL_CARD.md): `image` float32 (N, 3, H, W) RGB 0..255, `time`
float32 (N,) = frame index x 0.01, `embedding` float32 (N, {d}, ceil(H/8), ceil(W/8)), unit length.

## What it is
{backbone_text} followed by a **trained**
spatio-temporal head: two 1x1 convolutions (hidden {hidden}) over [features, cell y, cell x,
frame time]{st}, added as a residual to the features{proj}, then L2-normalised (d = {d}).

## How it was trained
- Data: DAVIS 2016 train split of `../shared/data/davis2016-dev` ({seqs}); the val split was
  used for measuring only. Early stopping / recipe choices inside the train split
  (held-out train sequences of this run: {holdout}).
- Backbone features cached once with ONNX Runtime for the original frames and image-level
  variants ({variants}); training runs only the head.
- Loss: {loss} (alpha {alpha}); the paper's sampling: three frames of one video, {anchors}
  anchors from one frame, positive/negative pools from the two other frames (objects all cells,
  background on a stride-{bgs} grid). Feature-level augmentation: crops (min side {crop_min}),
  per-frame jitter {jitter} cells, flips p={p_flip}, single-frame synthetic motion p={p_static},
  objects pasted from other sequences p={p_paste}.
- Optimiser: AdamW lr {lr}, weight decay {wd}, cosine schedule, {steps} steps of {batch}
  triples, seed {seed}, step taken: {step}.
- Command: `{command}`

## Measured figures
{figures}
"""


BACKBONE_TEXT = {
    "mobilenet_v2": "The packaged backbone (MobileNetV2, ImageNet weights, dilated to output stride 8, blocks 6\n"
                    "and 13 L2-normalised and joined: 128 channels, frozen)",
    "mobilenet_v2_os16": "MobileNetV2 (ImageNet weights, frozen; blocks 7-13 at their native stride 16, not\n"
                         "dilated; block 13 upsampled bilinearly to block 6's stride-8 grid; both L2-normalised\n"
                         "and joined: 128 channels at stride 8)",
}


def export_checkpoint(ckpt: str | os.PathLike, out: str | os.PathLike, name: str | None = None,
                      card: str | os.PathLike | None = None, figures: str | os.PathLike | None = None,
                      imagenet: bool = True) -> dict:
    """Export ``ckpt`` to ONNX at ``out``; check it; write a model card if ``card`` is given."""
    from pml_rt.network.export import export_onnx  # noqa: PLC0415

    out = Path(out)
    name = name or out.stem
    model, cfg = build_embedder(ckpt, name, imagenet=imagenet)
    export_onnx(model, out)
    diff = check_onnx(out, model)
    if diff > 1e-3:
        raise RuntimeError(f"{out}: ONNX Runtime differs from torch by {diff:.2e} (> 1e-3)")
    size = out.stat().st_size / 1e6
    info = {"onnx": str(out), "size_mb": round(size, 2), "max_abs_diff_vs_torch": diff, "d": cfg.d}
    if card:
        state = torch.load(ckpt, map_location="cpu", weights_only=False)
        fig = "Not measured."
        if figures:
            rep = json.loads(Path(figures).read_text())
            rows = ["| model | J&F | J | F |", "|---|---|---|---|"]
            for n, c in rep["configs"].items():
                rows.append(f"| {n} | {c['J&F-Mean']:.3f} | {c['J-Mean']:.3f} | {c['F-Mean']:.3f} |")
            fig = (f"DAVIS 2016 {rep.get('split', 'val')} split, {rep.get('max_frames') or 'all'} frames per sequence, "
                   f"upsample {rep.get('upsample')}, propagation defaults; command: `{rep.get('command')}`\n\n" + "\n".join(rows))
        run_dir = Path(ckpt).parent
        command = "python -m training train " + (run_dir / "config.json").as_posix()
        if (run_dir / "command.txt").exists():
            command = (run_dir / "command.txt").read_text().strip()
        s = cfg.sampling
        text = CARD.format(backbone_text=BACKBONE_TEXT.get(cfg.backbone, f"The {cfg.backbone} backbone (frozen)"),
                           name=name, file=out.name, size=size, d=cfg.d, hidden=cfg.hidden,
                           st="" if cfg.spatio_temporal else " (coordinate and time inputs switched off)",
                           proj="" if cfg.d == 128 else f" (projected to {cfg.d} by a 1x1 convolution)",
                           seqs=", ".join(cfg.sequences), holdout=", ".join(cfg.holdout) or "none",
                           variants=", ".join(cfg.variants), loss=cfg.loss, alpha=cfg.alpha, anchors=s.anchors,
                           bgs=s.pool_bg_stride, crop_min=s.crop_min, jitter=s.jitter, p_flip=s.p_flip,
                           p_static=s.p_static, p_paste=s.p_paste, lr=cfg.lr, wd=cfg.weight_decay, steps=cfg.steps,
                           batch=cfg.batch, seed=cfg.seed, step=state["step"], command=command, figures=fig)
        Path(card).write_text(text)
        info["card"] = str(card)
    return info
