"""The front door: :class:`Segmenter` holds the model; :class:`EmbeddedVideo` one video's embeddings.

    seg = Segmenter()                  # packaged model, backend="auto"
    video = seg.embed("clip.mp4")      # computed once
    masks = video.propagate(mask)      # uint8 (T, H, W) of object ids

The network never sees annotations, so every later call (another mask, clicks, a session)
reuses ``video.embeddings`` and costs only nearest-neighbour searches.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from typing import Any, Iterator

import numpy as np

from .annotations import ObjectMap, cell_labels
from .backends import create_backend
from .backends.base import Backend
from .errors import InputError
from .io import VideoSource, open_video, read_mask
from .propagate import PropagationConfig, propagate_scores
from .registry import DEFAULT_MODEL, ModelConfig, get_model_config
from .upsample import DEFAULT_METHOD, check_method, needs_guide, upsample_labels

log = logging.getLogger("pml_rt")


def _progress(iterable: Any, total: int, desc: str, enabled: bool) -> Any:
    if not enabled:
        return iterable
    from tqdm.auto import tqdm  # noqa: PLC0415

    return tqdm(iterable, total=total, desc=desc, unit="frame", leave=False)


class Segmenter:
    """Loads an embedder once and embeds any number of videos with it.

    model: a name from :func:`pml_rt.registry.list_models`; backend: ``"auto"``,
    ``"onnxruntime"``, ``"tensorrt"`` or ``"torch"``; ``backend_options`` go to the backend
    (for example ``model_path=`` for ONNX Runtime, ``engine_path=`` for TensorRT).
    """

    def __init__(self, model: str = DEFAULT_MODEL, backend: str = "auto", **backend_options: Any):
        self.config: ModelConfig = get_model_config(model)
        self.backend: Backend = create_backend(backend, self.config, **backend_options)

    def __repr__(self) -> str:
        return f"Segmenter(model={self.config.name!r}, backend={self.backend.describe()!r})"

    def close(self) -> None:
        """Free the backend's resources (device memory, sessions)."""
        self.backend.close()

    def __enter__(self) -> "Segmenter":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def frame_times(self, indices: np.ndarray) -> np.ndarray:
        """Time input of frames ``indices``: float32, ``index * config.time_scale``."""
        return np.asarray(indices, dtype=np.float32) * np.float32(self.config.time_scale)

    def embed_frames(self, frames: np.ndarray, indices: np.ndarray | list[int]) -> np.ndarray:
        """Embeddings of frames uint8 (N, H, W, 3) with frame indices (N,): float32 (N, h, w, d)."""
        out = self.backend.embed(frames, self.frame_times(np.asarray(indices)))
        from .xp import to_host  # noqa: PLC0415

        return to_host(out)

    def embed(self, video: Any, *, progress: bool = True, batch_size: int = 1) -> "EmbeddedVideo":
        """Embed every frame of ``video`` once.

        video: a path to a video file (MP4, MOV, AVI, WebM, MKV) or a folder of frames, a
        uint8 array (T, H, W, 3), or a :class:`pml_rt.io.VideoSource`. Frames are decoded and
        embedded one batch at a time; the embeddings are kept as float16 (T, h, w, d).
        """
        source = video if isinstance(video, VideoSource) else open_video(video)
        n = len(source)
        hh, ww = source.frame_size
        s = self.config.stride
        emb = np.empty((n, -(-hh // s), -(-ww // s), self.config.d), dtype=np.float16)
        batch: list[np.ndarray] = []
        start = 0
        for i, frame in enumerate(_progress(source, n, "embed", progress)):
            batch.append(frame)
            if len(batch) == batch_size or i == n - 1:
                idx = np.arange(start, start + len(batch))
                emb[start : start + len(batch)] = self.embed_frames(np.stack(batch), idx)
                start += len(batch)
                batch = []
        if start != n:
            raise InputError(f"{source.path or 'video'}: expected {n} frames, decoded {start}")
        return EmbeddedVideo(source=source, embeddings=emb, config=self.config)


@dataclass
class EmbeddedVideo:
    """One video's embeddings and where its frames come from.

    embeddings: float16 (T, h, w, d), one unit vector per stride-8 cell of every frame.
    """

    source: VideoSource  # to read frames again (edge-aware upsampling, overlays)
    embeddings: np.ndarray  # (T, h, w, d) float16
    config: ModelConfig
    meta: dict = field(default_factory=dict)  # free-form: cache key, timings

    @property
    def num_frames(self) -> int:
        return int(self.embeddings.shape[0])

    @property
    def frame_size(self) -> tuple[int, int]:
        """(H, W) of the input frames."""
        return tuple(self.source.frame_size)  # type: ignore[return-value]

    @property
    def frame_names(self) -> list[str]:
        return list(self.source.frame_names)

    def check_frame(self, frame: int) -> int:
        if not isinstance(frame, (int, np.integer)) or not 0 <= int(frame) < self.num_frames:
            raise InputError(f"frame index {frame!r} is out of range; this video has frames 0..{self.num_frames - 1}")
        return int(frame)

    def load_mask(self, mask: Any, frame: int = 0) -> np.ndarray:
        """A mask (path or array of ids) checked against this video's frame size: uint8 (H, W)."""
        name = str(mask) if isinstance(mask, (str, os.PathLike)) else f"mask for frame {frame}"
        return read_mask(mask, expected_size=self.frame_size, name=name)

    def session(self, **options: Any) -> Any:
        """An interactive session on this video (clicks, scribbles, masks on any frame).

        See :class:`pml_rt.session.Session`; nothing re-runs the network.
        """
        from .session import Session  # noqa: PLC0415

        return Session(self, **options)

    def propagate_iter(self, mask: Any, frame: int = 0, k: int = 5, online_adaptation: bool = True, *,
                       upsample: str = DEFAULT_METHOD, recent_frames: int | None = None, window: int | None = None,
                       weighting: str | None = None, progress: bool = False,
                       ) -> Iterator[tuple[int, np.ndarray]]:
        """Yield ``(t, mask uint8 (H, W))`` for every frame in order 0..T-1. See :meth:`propagate`."""
        frame = self.check_frame(frame)
        check_method(upsample)
        user_mask = self.load_mask(mask, frame)
        objects = ObjectMap()
        columns = objects.columns_of(user_mask)
        cfg = _config(k, online_adaptation, recent_frames, window, weighting)
        ref = cell_labels(columns, objects.num_labels, self.config.stride)
        # Labels at stride 8 are cheap to keep for every frame; upsampling then streams the
        # frames in order, so a video file is decoded once more, front to back.
        scores: dict[int, np.ndarray] = {}
        it = propagate_scores(self.embeddings, frame, ref, objects.num_labels, cfg, xp=np)
        for t, s in _progress(it, self.num_frames - 1, "propagate", progress):
            scores[t] = s.astype(np.float16)
        lut = objects.lut()
        frames = iter(self.source) if needs_guide(upsample) else None
        for t in range(self.num_frames):
            guide = next(frames) if frames is not None else None
            if t == frame:
                yield t, user_mask
                continue
            labels = upsample_labels(scores.pop(t).astype(np.float32), self.frame_size, upsample, guide,
                                     stride=self.config.stride)
            yield t, lut[labels]

    def propagate(self, mask: Any, frame: int = 0, k: int = 5, online_adaptation: bool = True, *,
                  upsample: str = DEFAULT_METHOD, recent_frames: int | None = None, window: int | None = None,
                  weighting: str | None = None, progress: bool = False) -> np.ndarray:
        """Segment every frame from one annotated frame.

        mask: (H, W) ints (0 background, 1..255 objects) or a mask file, on frame ``frame``;
        propagates forward and backward from it. k: neighbours per vote. online_adaptation:
        add unanimous cells to the reference pool. recent_frames/window: earlier predictions
        searched locally (0 turns it off; None keeps the default). upsample: one of
        :data:`pml_rt.upsample.METHODS`. Returns uint8 (T, H, W) of object ids; the
        annotated frame is returned as given.
        """
        out = np.empty((self.num_frames, *self.frame_size), dtype=np.uint8)
        for t, m in self.propagate_iter(mask, frame, k, online_adaptation, upsample=upsample,
                                        recent_frames=recent_frames, window=window, weighting=weighting,
                                        progress=progress):
            out[t] = m
        return out


def _config(k: int, online_adaptation: bool, recent_frames: int | None, window: int | None,
            weighting: str | None) -> PropagationConfig:
    base = PropagationConfig()
    cfg = PropagationConfig(
        k=int(k),
        online_adaptation=bool(online_adaptation),
        adaptation_cap=base.adaptation_cap,
        background_stride=base.background_stride,
        recent_frames=base.recent_frames if recent_frames is None else int(recent_frames),
        window=base.window if window is None else int(window),
        weighting=weighting or base.weighting,
        temperature=base.temperature,
    )
    try:
        cfg.validate()
    except ValueError as exc:
        raise InputError(str(exc)) from None
    return cfg

