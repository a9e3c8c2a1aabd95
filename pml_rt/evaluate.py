"""The semi-supervised DAVIS protocol: first-frame mask in, every frame segmented, J and F out.

Each sequence is embedded once; several propagation settings can then be scored side by
side on the same embeddings (that is how the benchmarks compare methods in one run).
"""

from __future__ import annotations

import dataclasses
import os
import time
from pathlib import Path
from typing import Any

import numpy as np

from .davis import DavisDataset
from .io import ArraySource, atomic_output_dir, write_palette_png
from .metrics import evaluate_sequence, summarize
from .propagate import PropagationConfig, propagate_scores
from .segmenter import Segmenter
from .upsample import DEFAULT_METHOD, needs_guide, upsample_labels


def evaluate_configs(segmenter: Segmenter, root: str | os.PathLike, configs: dict[str, dict[str, Any]], *,
                     split: str | None = None, sequences_file: str | None = None, max_frames: int | None = None,
                     out_dir: str | os.PathLike | None = None, progress: bool = True) -> dict[str, Any]:
    """Score each named set of ``propagate`` options on every sequence.

    Returns ``{"configs": {name: summary}, "timing": {...}, "sequences": [...]}`` where each
    summary is :func:`pml_rt.metrics.summarize` of that config's results. Masks of the
    first config are written to ``out_dir/<seq>/`` when ``out_dir`` is given.
    """
    ds = DavisDataset(root)
    seqs = ds.sequences(split=split, sequences_file=sequences_file)
    results: dict[str, dict[str, Any]] = {name: {} for name in configs}
    times = {"embed": 0.0, **{f"propagate:{name}": 0.0 for name in configs}, "frames": 0}
    seq_iter = seqs
    if progress:
        from tqdm.auto import tqdm  # noqa: PLC0415

        seq_iter = tqdm(seqs, desc="sequences", unit="seq")
    for seq in seq_iter:
        frames = ds.frames(seq, max_frames=max_frames)
        gt = ds.annotations(seq, max_frames=max_frames)
        names = [p.stem for p in ds.frame_paths(seq)][: len(frames)]
        t0 = time.perf_counter()
        video = segmenter.embed(ArraySource(frames), progress=False)
        times["embed"] += time.perf_counter() - t0
        times["frames"] += len(frames)
        # Settings that differ only in the upsampler share one propagation.
        groups: dict[str, list[str]] = {}
        for name, opts in configs.items():
            key = repr(sorted((k, v) for k, v in opts.items() if k != "upsample"))
            groups.setdefault(key, []).append(name)
        for names_in_group in groups.values():
            first = configs[names_in_group[0]]
            t0 = time.perf_counter()
            scores, lut = _propagate_scores(video, gt[0], {k: v for k, v in first.items() if k != "upsample"})
            t_prop = time.perf_counter() - t0
            for name in names_in_group:
                method = configs[name].get("upsample", DEFAULT_METHOD)
                t0 = time.perf_counter()
                guide = (lambda t: frames[t]) if needs_guide(method) else (lambda t: None)  # noqa: E731
                pred = np.stack([gt[0] if t == 0 else lut[upsample_labels(scores[t], video.frame_size, method,
                                                                         guide(t), stride=video.config.stride)]
                                 for t in range(len(frames))])
                times[f"propagate:{name}"] += t_prop + time.perf_counter() - t0
                results[name][seq] = evaluate_sequence(pred, gt)
                if out_dir is not None and name == next(iter(configs)):
                    with atomic_output_dir(Path(out_dir) / seq) as tmp:
                        for n, m in zip(names, pred):
                            write_palette_png(Path(tmp) / f"{n}.png", m)
    return {"configs": {name: summarize(r) for name, r in results.items()}, "timing": times, "sequences": seqs}


def _propagate_scores(video: Any, mask: np.ndarray, opts: dict[str, Any]) -> tuple[dict[int, np.ndarray], np.ndarray]:
    """Stride-8 scores (C, h, w) of every frame but 0, and the column -> id table."""
    from .segmenter import _config  # noqa: PLC0415

    named = ("k", "online_adaptation", "recent_frames", "window", "weighting")
    # Any other PropagationConfig field (adaptation_cap, background_stride, ...) passes through.
    extra = {f.name: opts[f.name] for f in dataclasses.fields(PropagationConfig) if f.name in opts
             and f.name not in named}
    cfg = _config(opts.get("k", 5), opts.get("online_adaptation", True), opts.get("recent_frames"),
                  opts.get("window"), opts.get("weighting"), **extra)
    _, objects, ref = video.prepare_annotation(mask, 0)
    scores = {t: s for t, s in propagate_scores(video.embeddings, 0, ref, objects.num_labels, cfg, xp=np)}
    return scores, objects.lut()


def evaluate_davis(segmenter: Segmenter, root: str | os.PathLike, *, out_dir: str | os.PathLike | None = None,
                   split: str | None = None, sequences_file: str | None = None, upsample: str = DEFAULT_METHOD,
                   k: int = 5, online_adaptation: bool = True, max_frames: int | None = None, progress: bool = True,
                   propagate_options: dict | None = None) -> dict[str, Any]:
    """One configuration on every sequence (what ``pml-rt eval`` runs)."""
    opts = {"k": k, "online_adaptation": online_adaptation, "upsample": upsample, **(propagate_options or {})}
    return evaluate_configs(segmenter, root, {"pml-rt": opts}, split=split, sequences_file=sequences_file,
                            max_frames=max_frames, out_dir=out_dir, progress=progress)


def format_table(report: dict[str, Any]) -> str:
    """Per-sequence J, F, J&F for each config, then the means (DAVIS per-object averaging)."""
    names = list(report["configs"])
    seqs = report["sequences"]
    lines = []
    head = f"{'sequence':22s}" + "".join(f" | {n[:24]:>24s}" for n in names)
    lines.append(head)
    lines.append(f"{'':22s}" + " | {:>7s} {:>7s} {:>8s}".format("J", "F", "J&F") * len(names))
    for s in seqs:
        row = f"{s:22s}"
        for n in names:
            ps = report["configs"][n]["per_sequence"].get(s, {})
            row += " | {:7.3f} {:7.3f} {:8.3f}".format(ps.get("J-Mean", np.nan), ps.get("F-Mean", np.nan),
                                                      ps.get("J&F-Mean", np.nan))
        lines.append(row)
    row = f"{'mean':22s}"
    for n in names:
        c = report["configs"][n]
        row += " | {:7.3f} {:7.3f} {:8.3f}".format(c["J-Mean"], c["F-Mean"], c["J&F-Mean"])
    lines.append(row)
    t = report["timing"]
    nf = max(t["frames"], 1)
    lines.append(f"embed: {1000 * t['embed'] / nf:.0f} ms/frame; " + "; ".join(
        f"{n}: {1000 * t[f'propagate:{n}'] / nf:.0f} ms/frame" for n in names))
    return "\n".join(lines)
