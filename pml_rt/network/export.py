"""Export an :class:`Embedder` to ONNX with dynamic batch, height and width."""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import torch

from .embedder import Embedder

INPUT_NAMES = ("image", "time")
OUTPUT_NAME = "embedding"


def export_onnx(model: Embedder, path: str | os.PathLike, opset: int = 17, sample_hw: tuple[int, int] = (240, 432)) -> Path:
    """Write ``model`` as ONNX to ``path`` (atomically) and return the path.

    Inputs: ``image`` float32 (N, 3, H, W) RGB 0..255 and ``time`` float32 (N,);
    output ``embedding`` float32 (N, d, ceil(H/8), ceil(W/8)). N, H and W are dynamic.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    model = model.eval()
    image = torch.rand(1, 3, *sample_hw) * 255
    time = torch.zeros(1)
    tmp = path.with_name(f".{path.name}.tmp")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            model,
            (image, time),
            str(tmp),
            input_names=list(INPUT_NAMES),
            output_names=[OUTPUT_NAME],
            dynamic_axes={"image": {0: "N", 2: "H", 3: "W"}, "time": {0: "N"}, OUTPUT_NAME: {0: "N", 2: "h", 3: "w"}},
            opset_version=opset,
            do_constant_folding=True,
            dynamo=False,
        )
    os.replace(tmp, path)
    return path
