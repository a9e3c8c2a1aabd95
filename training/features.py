"""Frozen backbone features of DAVIS frames, cached once as float16 memmaps.

The packaged untrained ONNX model has a zero head, so its output *is* the backbone features
(``Embedder.features``: blocks 6 and 13, each L2-normalised, joined, 128 channels). ONNX
Runtime computes them about 5x faster than torch eager on the CPU, so every frame is run once
(plus a few image-level augmented variants of the train frames) and training reads the cache.

Layout: ``<cache>/<variant>/<seq>.npy`` float16 (T, h, w, C) and ``<seq>.labels.npy`` uint8
(T, h, w) cell labels (majority object id per 8x8 cell of the variant's mask). A sequence is
written to a temporary name and renamed when complete, so an interrupted run resumes at the
first missing sequence.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from pml_rt.annotations import cell_labels
from pml_rt.davis import DavisDataset

STRIDE = 8

# Image-level variants of the train frames. "orig" is the frames as they are; "s075" the frames
# scaled to 0.75 (objects change size; the head sees other cell statistics); "color" a random
# colour jitter per sequence (brightness, contrast, saturation, hue), as a user would expect.
VARIANTS = ("orig", "s075", "color")


@dataclass(frozen=True)
class SequenceFeatures:
    """Cached features of one sequence: feats float16 (T, h, w, C), labels uint8 (T, h, w)."""

    name: str
    feats: np.ndarray
    labels: np.ndarray


def _resize(img: np.ndarray, scale: float, resample: int) -> np.ndarray:
    h, w = img.shape[:2]
    size = (max(8, round(w * scale)), max(8, round(h * scale)))
    return np.asarray(Image.fromarray(img).resize(size, resample))


def _color_jitter(frames: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """One random brightness/contrast/saturation/hue change applied to every frame of a sequence."""
    b, c, s = rng.uniform(0.7, 1.3, size=3)
    hue = rng.uniform(-0.05, 0.05)
    x = frames.astype(np.float32)
    mean = x.mean(axis=(1, 2, 3), keepdims=True)
    x = (x - mean) * c + mean
    x *= b
    gray = x.mean(axis=3, keepdims=True)
    x = gray + (x - gray) * s
    x = np.clip(x, 0, 255)
    if abs(hue) > 1e-3:
        # Hue rotation about the grey axis (a cheap, exact linear map in RGB).
        cos, sin = np.cos(2 * np.pi * hue), np.sin(2 * np.pi * hue)
        k = 1 / 3
        sq = np.sqrt(k)
        m = np.array([[cos + (1 - cos) * k, k * (1 - cos) - sq * sin, k * (1 - cos) + sq * sin],
                      [k * (1 - cos) + sq * sin, cos + k * (1 - cos), k * (1 - cos) - sq * sin],
                      [k * (1 - cos) - sq * sin, k * (1 - cos) + sq * sin, cos + k * (1 - cos)]], np.float32)
        x = np.clip(x @ m.T, 0, 255)
    return x.astype(np.uint8)


def variant_frames(frames: np.ndarray, masks: np.ndarray, variant: str, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Frames uint8 (T, H, W, 3) and masks uint8 (T, H, W) of one image-level variant."""
    if variant == "orig":
        return frames, masks
    if variant == "s075":
        return (np.stack([_resize(f, 0.75, Image.BILINEAR) for f in frames]),
                np.stack([_resize(m, 0.75, Image.NEAREST) for m in masks]))
    if variant == "color":
        return _color_jitter(frames, np.random.default_rng(seed)), masks
    raise ValueError(f"unknown variant {variant!r}; valid: {', '.join(VARIANTS)}")


def mask_cell_labels(masks: np.ndarray) -> np.ndarray:
    """Majority object id of every 8x8 cell: uint8 (T, ceil(H/8), ceil(W/8))."""
    ids = np.unique(masks)
    lut = np.zeros(256, np.int64)
    lut[ids] = np.arange(len(ids))
    out = np.stack([cell_labels(lut[m], len(ids), STRIDE) for m in masks])
    return ids.astype(np.uint8)[out]


def cache_sequence(segmenter, frames: np.ndarray, masks: np.ndarray, path: Path, batch: int = 4,
                   progress: bool = True) -> None:
    """Embed ``frames`` with ``segmenter`` (untrained model = features) into ``path`` (float16)."""
    from tqdm.auto import tqdm  # noqa: PLC0415

    t, hh, ww = frames.shape[:3]
    shape = (t, -(-hh // STRIDE), -(-ww // STRIDE), segmenter.d)
    tmp = path.with_name(f".{path.name}.tmp")
    out = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.float16, shape=shape)
    for i in tqdm(range(0, t, batch), desc=path.stem, unit="batch", disable=not progress, leave=False):
        out[i : i + batch] = segmenter.embed_frames(frames[i : i + batch], np.arange(i, min(i + batch, t)))
    out.flush()
    del out
    np.save(path.with_name(f".{path.stem}.labels.npy"), mask_cell_labels(masks))
    os.replace(path.with_name(f".{path.stem}.labels.npy"), path.with_name(f"{path.stem}.labels.npy"))
    os.replace(tmp, path)


def backbone_config(backbone: str, d: int | None = None, name: str | None = None, trained: bool = False):
    """The :class:`pml_rt.registry.ModelConfig` of a backbone (taps, input normalisation).

    ``d`` None: the backbone's feature width (an untrained head is then the identity)."""
    from pml_rt.registry import ModelConfig  # noqa: PLC0415

    if backbone in ("mobilenet_v2", "mobilenet_v2_os16"):
        taps, mean, std, cin = (6, 13), (0.485, 0.456, 0.406), (0.229, 0.224, 0.225), 128
    else:
        from pml_rt.network import efficientnet  # noqa: PLC0415

        net = efficientnet.DilatedEfficientNetLite(int(backbone[-1]))
        taps, mean, std, cin = net.taps, efficientnet.MEAN, efficientnet.STD, sum(net.out_channels)
    name = name or f"{backbone}-features"
    return ModelConfig(name=name, file=f"{name}.onnx", backbone=backbone, taps=tuple(taps), d=d or cin,
                       mean=mean, std=std, trained=trained)


class OnnxFeatures:
    """Backbone features by ONNX Runtime from an exported untrained embedder (head = identity)."""

    def __init__(self, path: str | os.PathLike, d: int):
        import onnxruntime as ort  # noqa: PLC0415

        self.d = d
        self.sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])

    def embed_frames(self, frames: np.ndarray, indices: np.ndarray) -> np.ndarray:
        img = np.ascontiguousarray(frames.transpose(0, 3, 1, 2), dtype=np.float32)
        t = np.asarray(indices, np.float32) * np.float32(0.01)
        return self.sess.run(None, {"image": img, "time": t})[0].transpose(0, 2, 3, 1)


def feature_runner(backbone: str, cache: str | os.PathLike):
    """What computes the features: the packaged ONNX model for MobileNetV2, else an untrained
    embedder of ``backbone`` exported once to ``<cache>/features.onnx``."""
    if backbone == "mobilenet_v2":
        from pml_rt.segmenter import Segmenter  # noqa: PLC0415

        seg = Segmenter()
        seg.d = seg.config.d
        return seg
    from pml_rt.network.embedder import Embedder  # noqa: PLC0415
    from pml_rt.network.export import export_onnx  # noqa: PLC0415

    cfg = backbone_config(backbone)
    path = Path(cache) / "features.onnx"
    if not path.exists():
        export_onnx(Embedder(cfg, imagenet=True), path)
    return OnnxFeatures(path, cfg.d)


def build_cache(root: str | os.PathLike, cache: str | os.PathLike, split: str, variants: tuple[str, ...] = ("orig",),
                seed: int = 0, max_frames: int | None = None, progress: bool = True,
                backbone: str = "mobilenet_v2") -> list[Path]:
    """Cache features of every sequence of ``split`` for each variant; skip finished ones."""
    ds = DavisDataset(root)
    segmenter = feature_runner(backbone, cache)
    done = []
    for variant in variants:
        for j, seq in enumerate(ds.sequences(split=split)):
            path = Path(cache) / variant / f"{seq}.npy"
            if not path.exists():
                path.parent.mkdir(parents=True, exist_ok=True)
                frames = ds.frames(seq, max_frames=max_frames)
                masks = ds.annotations(seq, max_frames=max_frames)
                f, m = variant_frames(frames, masks, variant, seed * 1000 + j)
                cache_sequence(segmenter, f, m, path, progress=progress)
                print(f"cached {variant}/{seq}: {len(f)} frames", flush=True)
            done.append(path)
    return done


def load_sequence(cache: str | os.PathLike, variant: str, seq: str) -> SequenceFeatures:
    """Memory-map one cached sequence."""
    path = Path(cache) / variant / f"{seq}.npy"
    if not path.exists():
        raise FileNotFoundError(f"{path} is missing; build it with: python -m training cache --split <split>")
    return SequenceFeatures(seq, np.load(path, mmap_mode="r"), np.load(path.with_name(f"{seq}.labels.npy")))
