"""The front door: :class:`Segmenter` holds the model; :class:`EmbeddedVideo` one video's embeddings.

    seg = Segmenter()                  # packaged model, backend="auto"
    video = seg.embed("clip.mp4")      # computed once
    masks = video.propagate(mask)      # uint8 (T, H, W) of object ids

The network never sees annotations, so every later call (another mask, clicks, a session)
reuses ``video.embeddings`` and costs only nearest-neighbour searches.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import threading
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable, Iterable, Iterator, Mapping

import numpy as np

from .annotations import ObjectMap, cell_labels
from .backends import create_backend
from .backends.base import Backend
from .errors import InputError
from .io import VideoSource, open_video, read_mask
from .overlap import SearchAhead, overlap_enabled
from .propagate import PropagationConfig, keyframe_scores, propagate_scores
from .registry import DEFAULT_MODEL, INPUT_SCALES, ModelConfig, get_model_config
from .upsample import DEFAULT_METHOD, check_method, needs_guide, upsample_labels
from .xp import get_xp, to_device, to_host

if TYPE_CHECKING:  # pragma: no cover
    from .stream import LiveSegmentation

log = logging.getLogger("pml_rt")

#: Stride-8 scores of all frames (float16) above this many bytes are kept on disk while
#: propagating (5000 frames of 854x480 with 2 labels take 128 MB and stay in memory).
SCORE_SPILL_BYTES = 256 << 20

def shrink_frames(frames: np.ndarray, scale: float) -> np.ndarray:
    """uint8 (N, H, W, 3) -> uint8 (N, ceil(H*scale), ceil(W*scale), 3), area-averaged
    (Pillow's reducing resize), so the network sees (ceil(H/s), ceil(W/s)) cells of side s = stride/scale."""
    from PIL import Image  # noqa: PLC0415

    n, hh, ww = frames.shape[:3]
    size = (int(np.ceil(ww * scale)), int(np.ceil(hh * scale)))
    return np.stack([np.asarray(Image.fromarray(f).resize(size, Image.BILINEAR, reducing_gap=2.0)) for f in frames])


#: A GPU backend's embeddings up to this many bytes (float16) also stay on the device, so
#: propagation and upsampling run there without copying them back (4 GiB: about 2,400
#: frames of 854x480). Longer videos propagate from the host copy.
DEVICE_EMBED_BYTES = 4 << 30


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

    input_scale: one of :data:`INPUT_SCALES`. Below 1, frames are shrunk by that factor before
    the network (a 854x480 frame runs as 427x240 at 0.5), so each embedding covers a
    (stride / input_scale)-pixel cell of the original frame: the network and the search
    cost about 4x and 10x less, and masks come out at full resolution, coarser at the edges
    (measured in docs/RESULTS.md).
    """

    def __init__(self, model: str = DEFAULT_MODEL, backend: str = "auto", *, input_scale: float = 1.0,
                 **backend_options: Any):
        if input_scale not in INPUT_SCALES:
            raise InputError(f"input_scale must be one of {INPUT_SCALES}, got {input_scale!r}")
        self.config: ModelConfig = get_model_config(model)
        self.input_scale = float(input_scale)
        # What the embeddings of a video mean: the model's config with the stride seen from the
        # original frame (8 at full scale, 16 at 0.5).
        self.video_config: ModelConfig = dataclasses.replace(self.config,
                                                             stride=int(round(self.config.stride / input_scale)))
        self.backend: Backend = create_backend(backend, self.config, **backend_options)
        self._lock = threading.Lock()  # guards lazy set-up shared by threads (backend activation)
        self._identity: tuple[Backend, dict] | None = None  # model_identity() of that backend, computed once

    def __repr__(self) -> str:
        scale = f", input_scale={self.input_scale}" if self.input_scale != 1 else ""
        return f"Segmenter(model={self.config.name!r}, backend={self.backend.describe()!r}{scale})"

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
        return to_host(self._embed_batch(frames, np.asarray(indices)))

    def _embed_batch(self, frames: np.ndarray, indices: np.ndarray) -> Any:
        """As :meth:`embed_frames`, but left where the backend put it (NumPy, or CuPy on a GPU)."""
        with self._lock:
            self.backend.activate()
        if self.input_scale != 1:
            frames = shrink_frames(frames, self.input_scale)
        return self.backend.embed(frames, self.frame_times(np.asarray(indices)))

    def embed(self, video: Any, *, progress: bool = True, batch_size: int = 1, cache: bool | None = None,
              cache_dir: str | os.PathLike | None = None, on_device: bool | None = None) -> "EmbeddedVideo":
        """Embed every frame of ``video`` once.

        video: a path to a video file (MP4, MOV, AVI, WebM, MKV) or a folder of frames, a
        uint8 array (T, H, W, 3), or a :class:`pml_rt.io.VideoSource`. Frames are decoded and
        embedded one batch at a time (never all held); the embeddings are float16 (T, h, w, d).

        cache: keep the embeddings in the on-disk cache (:mod:`pml_rt.cache`, format in
        docs/STREAMING.md) under ``cache_dir`` (default ``$PML_RT_CACHE`` or
        ``~/.cache/pml-rt``), keyed by the video's content and the model: a later call on
        the same content reuses them, and an interrupted one resumes at the first missing
        frame. None (the default) caches only where ``cache_dir`` is given. Cached
        embeddings are a read-only ``np.memmap``. Without a cache they are held in memory,
        except that above :data:`pml_rt.cache.SPILL_BYTES` they go to an unlinked temporary
        file (a memmap too).

        on_device: where the backend returns device (CuPy) arrays, also keep the embeddings
        on the device as ``EmbeddedVideo.device_embeddings``, so :meth:`EmbeddedVideo.propagate`
        searches and upsamples there. None (default): when they fit in
        :data:`DEVICE_EMBED_BYTES`. A CPU backend makes no device copy.
        """
        from . import cache as _cache  # noqa: PLC0415

        source = video if isinstance(video, VideoSource) else open_video(video)
        n = len(source)
        if n == 0:
            raise InputError(f"{source.path or 'video'}: no frames; expected at least one")
        hh, ww = source.frame_size
        s = self.video_config.stride
        shape = (n, -(-hh // s), -(-ww // s), self.config.d)
        label = f"video '{source.path}'" if source.path else "the frame array"
        use_cache = cache if cache is not None else cache_dir is not None
        want_device = on_device if on_device is not None else int(np.prod(shape)) * 2 <= DEVICE_EMBED_BYTES
        device = _DeviceCopy(shape) if want_device else None
        if use_cache:
            entry = _cache.EmbeddingCache(cache_dir).entry(self.model_identity(), _cache.video_digest(source),
                                                           shape, (hh, ww), label)
            with entry.locked():
                start = entry.prepare()
                if start < n:
                    if start:
                        log.info("resuming %s at frame %d of %d (cache %s)", label, start, n, entry.path)
                    with entry.writer(start) as writer:
                        self._embed_into(source, n, start, _Tee(writer, device), batch_size, progress)
            emb = entry.load()
            if device is not None and start > 0:  # frames 0..start-1 came from the cache
                device.fill_from(emb, 0, start)
            meta = {"cache": str(entry.path), "cache_hit": start == n, "resumed_from": start}
        elif int(np.prod(shape)) * 2 > _cache.SPILL_BYTES:
            spill = _cache.SpillFile(shape, None)
            try:
                self._embed_into(source, n, 0, _Tee(spill, device), batch_size, progress)
            except BaseException:
                spill.close(ok=False)
                raise
            emb = spill.array()
            meta = {"cache": None, "spilled": True}
        else:
            emb = np.empty(shape, dtype=np.float16)
            self._embed_into(source, n, 0, _Tee(_ArrayWriter(emb), device), batch_size, progress)
            meta = {}
        dev = device.array if device is not None else None
        meta["on_device"] = dev is not None
        return EmbeddedVideo(source=source, embeddings=emb, config=self.video_config, meta=meta,
                             device_embeddings=dev)

    def _embed_into(self, source: VideoSource, n: int, start: int, writer: Any, batch_size: int,
                    progress: bool) -> None:
        """Decode frames start..n-1 one batch at a time, embed them and hand them to ``writer``."""
        if not isinstance(batch_size, (int, np.integer)) or batch_size < 1:
            raise InputError(f"batch_size must be an integer >= 1, got {batch_size!r}")
        size = tuple(source.frame_size)
        name = source.path or "video"
        frames: Any = iter(source) if start == 0 else (source.read(i) for i in range(start, n))
        batch: list[np.ndarray] = []
        pos = start
        try:
            for i, frame in enumerate(_progress(frames, n - start, "embed", progress), start=start):
                if i >= n:
                    raise InputError(f"{name}: expected {n} frames, got more")
                f = np.asarray(frame)
                if f.shape != (*size, 3) or f.dtype != np.uint8:
                    raise InputError(f"{name}: frame {i} is {f.dtype} {f.shape}; expected uint8 {(*size, 3)} "
                                     "like frame 0")
                batch.append(f)
                if len(batch) == batch_size or i == n - 1:
                    idx = np.arange(pos, pos + len(batch))
                    try:
                        out = self._embed_batch(np.stack(batch), idx)
                    except InputError:
                        writer.poisoned = True  # the model's output was bad: keep nothing it made
                        raise
                    if not bool(get_xp(out).isfinite(out).all()):
                        writer.poisoned = True
                        raise InputError(f"{name}: frames {pos}..{pos + len(batch) - 1}: the model returned NaN "
                                         "or infinity; the model file may be damaged")
                    writer.write(pos, out)
                    pos += len(batch)
                    batch = []
        finally:
            if start:
                source.close()  # read() keeps a decoder open
        if pos != n:
            raise InputError(f"{name}: expected {n} frames, decoded {pos}")

    def model_identity(self) -> dict:
        """What keys this model's embeddings in the cache (see :func:`pml_rt.cache.model_identity`)."""
        with self._lock:
            if self._identity is None or self._identity[0] is not self.backend:
                from .cache import model_identity  # noqa: PLC0415

                ident = model_identity(self.config, self.backend)
                if self.input_scale != 1:  # other cells, other embeddings (full scale keeps its old keys)
                    ident["input_scale"] = self.input_scale
                self._identity = (self.backend, ident)
            return dict(self._identity[1])

    def stream(self, frames: Iterable[np.ndarray], mask: Any, *, k: int = 5, online_adaptation: bool = True,
               upsample: str = DEFAULT_METHOD, recent_frames: int | None = None, window: int | None = None,
               weighting: str | None = None, max_pool: int | None = None,
               input_fps: float | None = None) -> "LiveSegmentation":
        """Segment frames as they arrive (a camera, a pipe): yields uint8 (H, W) masks, one per frame.

        frames: any iterable of uint8 (H, W, 3) RGB frames, all one size; ``mask`` (ids, or a
        mask file) belongs to the first frame, which is yielded as given. Each frame is
        embedded when it arrives and labelled forward from the frames before it, with a
        reference pool of bounded size: the first frame's cells, at most ``max_pool``
        adapted cells (default: the propagation's cap) and the last ``recent_frames`` frames.
        The returned iterator's ``stats`` (:class:`pml_rt.stream.StreamStats`) give the rate
        reached against ``input_fps`` (default: the source's fps, else 25). Other options as
        :meth:`EmbeddedVideo.propagate`; with the same options, the masks equal
        ``propagate(mask, frame=0)`` on the same frames.
        """
        from .stream import LiveSegmentation  # noqa: PLC0415

        pool = {}
        if max_pool is not None:
            if not isinstance(max_pool, (int, np.integer)) or max_pool < 0:
                raise InputError(f"max_pool must be an integer >= 0, got {max_pool!r}")
            pool = {"adaptation_cap": int(max_pool)}
        cfg = _config(k, online_adaptation, recent_frames, window, weighting, **pool)
        check_method(upsample)
        return LiveSegmentation(self, frames, mask, cfg, upsample=upsample, input_fps=input_fps)


class _DeviceCopy:
    """The device copy of a video's embeddings: CuPy float16 (T, h, w, d), allocated when the
    first device batch arrives (a CPU backend's batches leave ``array`` None)."""

    def __init__(self, shape: tuple[int, ...]):
        self.shape = shape
        self.array: Any = None

    def write(self, t0: int, batch: Any) -> None:
        xp = get_xp(batch)
        if xp is np:
            return
        if self.array is None:
            self.array = xp.empty(self.shape, dtype=xp.float16)
        self.array[t0 : t0 + batch.shape[0]] = batch  # float32 -> float16 on the device

    def fill_from(self, host: np.ndarray, t0: int, t1: int) -> None:
        if self.array is not None:
            self.array[t0:t1] = to_device(np.asarray(host[t0:t1]), get_xp(self.array))


class _Tee:
    """Hands each batch to the host writer (as NumPy) and to the device copy (as it came)."""

    def __init__(self, writer: Any, device: _DeviceCopy | None):
        self.writer, self.device = writer, device

    @property
    def poisoned(self) -> bool:
        return self.writer.poisoned

    @poisoned.setter
    def poisoned(self, value: bool) -> None:
        self.writer.poisoned = value

    def write(self, t0: int, batch: Any) -> None:
        if self.device is not None:
            self.device.write(t0, batch)
        self.writer.write(t0, to_host(batch))


class _ArrayWriter:
    """Writes batches into an in-memory array (the uncached path)."""

    poisoned = False

    def __init__(self, out: np.ndarray):
        self.out = out

    def write(self, t0: int, batch: np.ndarray) -> None:
        self.out[t0 : t0 + batch.shape[0]] = batch


@dataclass
class EmbeddedVideo:
    """One video's embeddings and where its frames come from.

    embeddings: float16 (T, h, w, d), one unit vector per stride-8 cell of every frame.
    """

    source: VideoSource  # to read frames again (edge-aware upsampling, overlays)
    embeddings: np.ndarray  # (T, h, w, d) float16, on the host (memory, memmap or cache)
    config: ModelConfig
    meta: dict = field(default_factory=dict)  # free-form: cache key, timings
    # The same embeddings on the GPU (CuPy float16) where a GPU backend made them and they fit;
    # propagation then searches and upsamples on the device. None on the CPU.
    device_embeddings: Any = None

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
        # read_mask adds a file's path to the name itself
        name = "mask" if isinstance(mask, (str, os.PathLike)) else f"mask for frame {frame}"
        try:
            return read_mask(mask, expected_size=self.frame_size, name=name)
        except InputError as exc:
            video = self.source.path
            if video and str(video) not in str(exc):  # say which video the mask was checked against
                raise InputError(f"{exc} (video '{video}')") from None
            raise

    def session(self, **options: Any) -> Any:
        """An interactive session on this video (clicks, scribbles, masks on any frame).

        See :class:`pml_rt.session.Session`; nothing re-runs the network.
        """
        from .session import Session  # noqa: PLC0415

        return Session(self, **options)

    def prepare_annotation(self, mask: Any, frame: int) -> tuple[np.ndarray, ObjectMap, np.ndarray]:
        """Check ``mask`` for ``frame``; return it (uint8 (H, W)), its :class:`ObjectMap` and
        the label column of every cell of that frame (int32 (h, w)), what propagation starts from."""
        user_mask = self.load_mask(mask, frame)
        objects = ObjectMap()
        columns = objects.columns_of(user_mask)
        return user_mask, objects, cell_labels(columns, objects.num_labels, self.config.stride)

    def propagate_iter(self, mask: Any, frame: int = 0, k: int = 5, online_adaptation: bool = True, *,
                       upsample: str = DEFAULT_METHOD, recent_frames: int | None = None, window: int | None = None,
                       weighting: str | None = None, progress: bool = False,
                       ) -> Iterator[tuple[int, np.ndarray]]:
        """Yield ``(t, mask uint8 (H, W))`` for every frame in order 0..T-1. See :meth:`propagate`."""
        frame = self.check_frame(frame)
        check_method(upsample)
        cfg = _config(k, online_adaptation, recent_frames, window, weighting)
        user_mask, objects, ref = self.prepare_annotation(mask, frame)
        yield from self._masks_from(lambda emb, xp: propagate_scores(emb, frame, ref, objects.num_labels, cfg, xp=xp),
                                    {frame: user_mask}, objects, upsample, progress)

    def propagate_keyframes_iter(self, masks: Mapping[int, Any], k: int = 5, online_adaptation: bool = True, *,
                                 upsample: str = DEFAULT_METHOD, recent_frames: int | None = None,
                                 window: int | None = None, weighting: str | None = None,
                                 progress: bool = False) -> Iterator[tuple[int, np.ndarray]]:
        """Yield ``(t, mask uint8 (H, W))`` for every frame in order 0..T-1. See :meth:`propagate_keyframes`."""
        if not isinstance(masks, Mapping) or not masks:
            raise InputError("masks must be a non-empty mapping {frame index: mask}")
        check_method(upsample)
        cfg = _config(k, online_adaptation, recent_frames, window, weighting)
        user = {self.check_frame(f): self.load_mask(m, int(f)) for f, m in masks.items()}
        objects = ObjectMap()
        for f in sorted(user):
            objects.columns_of(user[f])  # every id of every mask, before any label map is made
        refs = {f: cell_labels(objects.columns_of(m), objects.num_labels, self.config.stride) for f, m in user.items()}
        yield from self._masks_from(lambda emb, xp: keyframe_scores(emb, refs, objects.num_labels, cfg, xp=xp),
                                    user, objects, upsample, progress)

    def propagate_keyframes(self, masks: Mapping[int, Any], k: int = 5, online_adaptation: bool = True, *,
                            upsample: str = DEFAULT_METHOD, recent_frames: int | None = None,
                            window: int | None = None, weighting: str | None = None,
                            progress: bool = False) -> np.ndarray:
        """Segment every frame from masks on several frames: ``masks`` = {frame: mask}.

        Each mask propagates as in :meth:`propagate`, forward up to the next annotated frame
        and backward down to the previous one; a frame between two annotated frames blends
        the two, weighted by how near each is (:func:`pml_rt.propagate.keyframe_scores`), so a
        mask drawn to correct a later frame takes over gradually. Object ids may differ
        between the masks (an object may appear on a later one only). Annotated frames are
        returned as given; with one entry this equals ``propagate(mask, frame)``. Frames
        between two annotated frames cost two searches. Returns uint8 (T, H, W).
        """
        out = np.empty((self.num_frames, *self.frame_size), dtype=np.uint8)
        for t, m in self.propagate_keyframes_iter(masks, k, online_adaptation, upsample=upsample,
                                                  recent_frames=recent_frames, window=window, weighting=weighting,
                                                  progress=progress):
            out[t] = m
        return out

    def _masks_from(self, search: Callable[[Any, Any], Iterator[tuple[int, Any]]], given: dict[int, np.ndarray],
                    objects: ObjectMap, upsample: str, progress: bool) -> Iterator[tuple[int, np.ndarray]]:
        """Run ``search(embeddings, xp)`` (yields ``(t, scores (C, h, w))`` for every frame not
        in ``given``), then yield every frame's mask in order 0..T-1: ``given`` ones as they are,
        the others upsampled from their scores."""
        # Labels at stride 8 are cheap to keep for every frame (on disk where they would
        # take more than SCORE_SPILL_BYTES); upsampling then streams the frames in order, so a
        # video file is decoded once more, front to back. A memory-mapped video is read one
        # frame at a time and its pages let go, so the resident set stays flat.
        from .cache import SpillStore, frames_view  # noqa: PLC0415

        n, h, w = (int(x) for x in self.embeddings.shape[:3])
        c = objects.num_labels
        on_device = self.device_embeddings is not None
        emb = self.device_embeddings if on_device else frames_view(self.embeddings)
        xp = get_xp(emb)
        # Device scores stay on the device (5000 frames x 2 labels: 128 MB); host ones may spill.
        scores: Any = _DeviceScores() if on_device else SpillStore(
            n, (c, h, w), np.float16, on_disk=n * c * h * w * 2 > SCORE_SPILL_BYTES)
        searches = lambda: _progress(search(emb, xp), self.num_frames - len(given), "propagate", progress)  # noqa: E731
        ahead = None
        try:
            if on_device or not overlap_enabled():
                for t, s in searches():
                    scores[t] = s.astype(xp.float16)
            else:  # the search runs ahead on a worker thread while this one upsamples (pml_rt.overlap)
                ahead = SearchAhead(searches, scores)
            lut = to_device(objects.lut(), xp)
            frames = iter(self.source) if needs_guide(upsample) else None
            for t in range(self.num_frames):
                guide = next(frames) if frames is not None else None
                if t in given:
                    yield t, given[t]
                    continue
                s16 = ahead.take(t) if ahead is not None else scores.pop(t)
                labels = upsample_labels(s16.astype(xp.float32), self.frame_size, upsample,
                                         None if guide is None else to_device(guide, xp), stride=self.config.stride)
                yield t, to_host(lut[labels])  # the one copy to the host: the finished mask
        finally:
            if ahead is not None:
                ahead.stop()
            scores.close()

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


class _DeviceScores(dict):
    """Per-frame device score arrays, with the :class:`pml_rt.cache.SpillStore` interface."""

    def close(self) -> None:
        self.clear()


def _config(k: int, online_adaptation: bool, recent_frames: int | None, window: int | None,
            weighting: str | None, **fields: Any) -> PropagationConfig:
    """The default :class:`PropagationConfig` with the caller's overrides (None keeps a default);
    ``fields``: any other of its fields (adaptation_cap, background_stride, ...)."""
    base = PropagationConfig()
    cfg = dataclasses.replace(
        base,
        k=int(k),
        online_adaptation=bool(online_adaptation),
        recent_frames=base.recent_frames if recent_frames is None else int(recent_frames),
        window=base.window if window is None else int(window),
        weighting=weighting or base.weighting,
        **fields,
    )
    try:
        cfg.validate()
    except ValueError as exc:
        raise InputError(str(exc)) from None
    return cfg

