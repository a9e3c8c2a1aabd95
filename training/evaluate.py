"""Val-split J&F of trained heads against the untrained features, side by side in one run.

Embeddings of a val frame = the trained head applied to its cached backbone features (time
input = frame index * 0.01, as the runtime feeds it); ``None`` stands for the untrained
model (head zero: the features themselves). Each is then propagated by the package's own
:func:`pml_rt.propagate.propagate_scores` from the first frame's mask, upsampled with
:func:`pml_rt.upsample.upsample_labels` and scored by :mod:`pml_rt.metrics`, exactly as
``pml-rt eval`` does, except that the backbone is not run again.
"""

from __future__ import annotations

import dataclasses
import os
import time
from typing import Any

import numpy as np
import torch

from pml_rt.davis import DavisDataset
from pml_rt.evaluate import first_frame_scores, masks_from_scores
from pml_rt.metrics import evaluate_sequence, summarize
from pml_rt.propagate import PropagationConfig

from .features import load_sequence


@torch.no_grad()
def embed_cached(head: torch.nn.Module | None, feats: np.ndarray, time_scale: float = 0.01, batch: int = 16) -> np.ndarray:
    """float16 (T, h, w, d) unit embeddings of cached features (T, h, w, C); ``head`` None = features."""
    t = feats.shape[0]
    if head is None:
        x = np.asarray(feats, dtype=np.float32)
        x /= np.sqrt((x * x).sum(-1, keepdims=True)) + 1e-12
        return x.astype(np.float16)
    outs = []
    for i in range(0, t, batch):
        f = torch.from_numpy(np.asarray(feats[i : i + batch], dtype=np.float32)).permute(0, 3, 1, 2)
        times = torch.arange(i, min(i + batch, t), dtype=torch.float32) * time_scale
        outs.append(head(f, times).permute(0, 2, 3, 1).numpy().astype(np.float16))
    return np.concatenate(outs)


def evaluate_heads(heads: dict[str, torch.nn.Module | None], cache: str | os.PathLike, root: str | os.PathLike,
                   configs: dict[str, dict[str, Any]] | None = None, split: str = "val", max_frames: int | None = None,
                   upsample: str = "bilinear", progress: bool = True,
                   sequences: tuple[str, ...] | None = None) -> dict[str, Any]:
    """J&F of every (head, propagation config) pair on ``split``; report shaped as
    :func:`pml_rt.evaluate.evaluate_configs` gives it (so ``format_table`` prints it).

    configs: name -> :class:`PropagationConfig` field overrides (default: one, the defaults).
    Result names are ``<head>`` when there is one config, else ``<head>/<config>``.
    sequences: score these (e.g. held-out train sequences) instead of ``split``.
    """
    configs = configs or {"default": {}}
    ds = DavisDataset(root)
    seqs = list(sequences) if sequences else ds.sequences(split=split)
    names = {(h, c): (h if len(configs) == 1 else f"{h}/{c}") for h in heads for c in configs}
    results: dict[str, dict] = {n: {} for n in names.values()}
    timing: dict[str, float] = {"embed": 0.0, "frames": 0, **{f"propagate:{n}": 0.0 for n in names.values()}}
    it = seqs
    if progress:
        from tqdm.auto import tqdm  # noqa: PLC0415

        it = tqdm(seqs, desc="sequences", unit="seq")
    for seq in it:
        gt = ds.annotations(seq, max_frames=max_frames)
        cached = load_sequence(cache, "orig", seq)
        n = len(gt)
        feats = cached.feats[:n]
        timing["frames"] += n
        for h, head in heads.items():
            t0 = time.perf_counter()
            emb = embed_cached(head, feats)
            timing["embed"] += time.perf_counter() - t0
            for c, opts in configs.items():
                cfg = dataclasses.replace(PropagationConfig(), **opts)
                t0 = time.perf_counter()
                scores, lut = first_frame_scores(emb, gt[0], cfg)
                pred = masks_from_scores(scores, lut, gt[0], upsample)
                timing[f"propagate:{names[(h, c)]}"] += time.perf_counter() - t0
                results[names[(h, c)]][seq] = evaluate_sequence(pred, gt)
    return {"configs": {n: summarize(r) for n, r in results.items()}, "timing": timing, "sequences": seqs,
            "max_frames": max_frames, "split": split, "upsample": upsample, "propagation": configs}
