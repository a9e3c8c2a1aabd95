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

from .annotations import ObjectMap, cell_labels
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
    for seq, frames, gt, video in _embedded_sequences(segmenter, ds, seqs, max_frames, times, progress):
        names = [p.stem for p in ds.frame_paths(seq)][: len(frames)]
        # Settings that differ only in the upsampler share one propagation.
        groups: dict[str, list[str]] = {}
        for name, opts in configs.items():
            key = repr(sorted((k, v) for k, v in opts.items() if k != "upsample"))
            groups.setdefault(key, []).append(name)
        for names_in_group in groups.values():
            first = configs[names_in_group[0]]
            t0 = time.perf_counter()
            cfg = _propagation_config({k: v for k, v in first.items() if k != "upsample"})
            scores, lut = first_frame_scores(video.embeddings, gt[0], cfg, stride=video.config.stride)
            t_prop = time.perf_counter() - t0
            for name in names_in_group:
                method = configs[name].get("upsample", DEFAULT_METHOD)
                t0 = time.perf_counter()
                pred = masks_from_scores(scores, lut, gt[0], method, frames, stride=video.config.stride)
                times[f"propagate:{name}"] += t_prop + time.perf_counter() - t0
                results[name][seq] = evaluate_sequence(pred, gt)
                if out_dir is not None and name == next(iter(configs)):
                    with atomic_output_dir(Path(out_dir) / seq) as tmp:
                        for n, m in zip(names, pred):
                            write_palette_png(Path(tmp) / f"{n}.png", m)
    return {"configs": {name: summarize(r) for name, r in results.items()}, "timing": times, "sequences": seqs}


def _embedded_sequences(segmenter: Segmenter, ds: DavisDataset, seqs: list[str], max_frames: int | None,
                        times: dict[str, Any], progress: bool) -> Any:
    """Yield ``(seq, frames, gt, video)`` for each sequence, embedded once; adds the embed time
    and the frame count to ``times``."""
    it = seqs
    if progress:
        from tqdm.auto import tqdm  # noqa: PLC0415

        it = tqdm(seqs, desc="sequences", unit="seq")
    for seq in it:
        frames = ds.frames(seq, max_frames=max_frames)
        gt = ds.annotations(seq, max_frames=max_frames)
        t0 = time.perf_counter()
        video = segmenter.embed(ArraySource(frames), progress=False)
        times["embed"] += time.perf_counter() - t0
        times["frames"] += len(frames)
        yield seq, frames, gt, video


def _propagation_config(opts: dict[str, Any]) -> PropagationConfig:
    """The PropagationConfig of ``propagate`` options (k, online_adaptation, ...) and of any
    other of its fields (adaptation_cap, background_stride, ...)."""
    from .segmenter import _config  # noqa: PLC0415

    named = ("k", "online_adaptation", "recent_frames", "window", "weighting")
    extra = {f.name: opts[f.name] for f in dataclasses.fields(PropagationConfig) if f.name in opts
             and f.name not in named}
    return _config(opts.get("k", 5), opts.get("online_adaptation", True), opts.get("recent_frames"),
                   opts.get("window"), opts.get("weighting"), **extra)


def first_frame_scores(embeddings: Any, mask: np.ndarray, cfg: PropagationConfig,
                       stride: int = 8) -> tuple[dict[int, np.ndarray], np.ndarray]:
    """The semi-supervised protocol's search: ``mask`` uint8 (H, W) on frame 0 of
    ``embeddings`` (T, h, w, d); returns stride-``stride`` scores float32 (C, h, w) of every
    other frame and the column -> object id table (C,)."""
    objects = ObjectMap()
    ref = cell_labels(objects.columns_of(mask), objects.num_labels, stride)
    return dict(propagate_scores(embeddings, 0, ref, objects.num_labels, cfg, xp=np)), objects.lut()


def masks_from_scores(scores: dict[int, np.ndarray], lut: np.ndarray, first_mask: np.ndarray, method: str,
                      frames: Any = None, stride: int = 8) -> np.ndarray:
    """uint8 (T, H, W): ``first_mask`` on frame 0, then each frame's scores upsampled with
    ``method`` (``frames[t]`` uint8 (H, W, 3) guides the edge-aware methods) and mapped to ids."""
    size = first_mask.shape
    if needs_guide(method) and frames is None:
        raise ValueError(f"upsampling method {method!r} needs the frames as a guide")
    out = np.empty((len(scores) + 1, *size), dtype=np.uint8)
    out[0] = first_mask
    for t in range(1, len(out)):
        guide = frames[t] if needs_guide(method) else None
        out[t] = lut[upsample_labels(scores[t], size, method, guide, stride=stride)]
    return out


def evaluate_davis(segmenter: Segmenter, root: str | os.PathLike, *, out_dir: str | os.PathLike | None = None,
                   split: str | None = None, sequences_file: str | None = None, upsample: str = DEFAULT_METHOD,
                   k: int = 5, online_adaptation: bool = True, max_frames: int | None = None, progress: bool = True,
                   propagate_options: dict | None = None) -> dict[str, Any]:
    """One configuration on every sequence (what ``pml-rt eval`` runs)."""
    opts = {"k": k, "online_adaptation": online_adaptation, "upsample": upsample, **(propagate_options or {})}
    return evaluate_configs(segmenter, root, {"pml-rt": opts}, split=split, sequences_file=sequences_file,
                            max_frames=max_frames, out_dir=out_dir, progress=progress)


def spread_frames(n: int, count: int) -> list[int]:
    """``count`` frame indices spread evenly over ``n`` frames, starting at 0 (2 of 50: 0, 25)."""
    if not 1 <= count <= n:
        raise ValueError(f"count must lie in 1..{n}, got {count}")
    return sorted({int(i * n // count) for i in range(count)})


def evaluate_keyframes(segmenter: Segmenter, root: str | os.PathLike, counts: tuple[int, ...] = (1, 2, 3), *,
                       split: str | None = None, max_frames: int | None = None, upsample: str = DEFAULT_METHOD,
                       progress: bool = True) -> dict[str, Any]:
    """J and F when the ground truth of ``count`` frames spread over each sequence is given
    (``EmbeddedVideo.propagate_keyframes``), for each count side by side on one embedding.

    Every count is scored on the same frames: those no count annotates, without the last
    (as the semi-supervised protocol skips it). Report shaped like :func:`evaluate_configs`.
    """
    ds = DavisDataset(root)
    seqs = ds.sequences(split=split)
    names = {c: f"{c} annotated frame{'s' if c > 1 else ''}" for c in counts}
    results: dict[str, dict[str, Any]] = {n: {} for n in names.values()}
    times = {"embed": 0.0, **{f"propagate:{n}": 0.0 for n in names.values()}, "frames": 0}
    for seq, _, gt, video in _embedded_sequences(segmenter, ds, seqs, max_frames, times, progress):
        given = {c: spread_frames(len(gt), c) for c in counts}
        keep = sorted(set(range(len(gt) - 1)) - {f for fs in given.values() for f in fs})
        for c, name in names.items():
            t0 = time.perf_counter()
            pred = video.propagate_keyframes({f: gt[f] for f in given[c]}, upsample=upsample)
            times[f"propagate:{name}"] += time.perf_counter() - t0
            results[name][seq] = evaluate_sequence(pred[keep], gt[keep], skip_first_last=False)
    return {"configs": {n: summarize(r) for n, r in results.items()}, "timing": times, "sequences": seqs}


def save_report(report: dict[str, Any], path: str | os.PathLike, command: str) -> Path:
    """Write ``report`` (as :func:`evaluate_configs` gives it) as JSON to ``path``, atomically:
    every config's summary without its per-object table, plus the ``command`` that made it."""
    import json  # noqa: PLC0415

    slim = {k: v for k, v in report.items() if k != "configs"}
    slim["configs"] = {n: {k: v for k, v in c.items() if k != "per_object"} for n, c in report["configs"].items()}
    slim["command"] = command
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.tmp")
    tmp.write_text(json.dumps(slim, indent=1, default=float))
    os.replace(tmp, out)  # never a half-written report
    return out


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
