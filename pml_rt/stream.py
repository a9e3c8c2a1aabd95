"""Live mode: segment frames as they arrive, with a reference pool of bounded size.

The method needs no later frame to label the current one, so a camera or a pipe can be
segmented forward, one frame at a time: each frame is embedded when it comes and labelled
by :class:`pml_rt.propagate.Tracker` against the first frame's references, a bounded
deque of adapted references and the last few frames (exactly the forward pass of
:func:`pml_rt.propagate.propagate_scores`, so the masks equal ``propagate(mask, frame=0)``
on the same frames). Memory does not grow with the length of the stream.

:func:`read_raw_frames` reads raw rgb24 frames (``ffmpeg -f rawvideo -pix_fmt rgb24``) from
a pipe, as ``pml-rt segment --stream`` does.
"""

from __future__ import annotations

import logging
import os
import queue
import re
import threading
import time
from collections import deque
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import IO, Any

import numpy as np

from .annotations import ObjectMap, cell_labels
from .errors import InputError
from .io import read_mask
from .io.video import check_fps
from .propagate import PropagationConfig, Tracker
from .upsample import needs_guide, upsample_labels
from .xp import get_xp, to_device, to_host

log = logging.getLogger("pml_rt")

#: Input rate assumed where neither the caller nor the source gives one.
DEFAULT_INPUT_FPS = 25.0
#: Seconds between progress lines in the log (INFO), and frames before judging the rate.
REPORT_SECONDS = 10.0
WARMUP_FRAMES = 5


@dataclass
class StreamStats:
    """How a live run keeps up. Times in seconds; rates in frames per second.

    ``busy`` counts only pml-rt's own work per frame (embed, label, upsample), not waiting
    for input or for the consumer; ``rate`` = frames / busy is what this machine can
    sustain, compared with ``input_fps``.
    """

    input_fps: float = DEFAULT_INPUT_FPS
    frames: int = 0
    busy: float = 0.0  # seconds of work over all frames
    wall: float = 0.0  # seconds from the first frame's arrival to the last mask
    frame_times: deque = field(default_factory=lambda: deque(maxlen=256))  # recent per-frame work, s
    pool_size: int = 0  # references in the global pool at the last frame
    max_pool_size: int = 0

    @property
    def rate(self) -> float:
        """Frames per second of work (0 before the first frame)."""
        return self.frames / self.busy if self.busy > 0 else 0.0

    @property
    def median_ms(self) -> float:
        """Median work per frame over the recent frames, in ms."""
        return 1000.0 * float(np.median(self.frame_times)) if self.frame_times else 0.0

    @property
    def keeping_up(self) -> bool:
        """True where the median work per frame fits in one input frame interval."""
        return bool(self.frame_times) and self.median_ms <= 1000.0 / self.input_fps

    def summary(self) -> str:
        """One line: frames, rate against the input rate, and whether it keeps up."""
        verdict = ("keeping up" if self.keeping_up else
                   f"falling behind: {self.median_ms:.0f} ms per frame > {1000.0 / self.input_fps:.0f} ms budget")
        return (f"{self.frames} frames, {self.rate:.1f} frames/s of work "
                f"(input {self.input_fps:g} frames/s: {verdict}); reference pool <= {self.max_pool_size}")


class LiveSegmentation(Iterator[np.ndarray]):
    """Iterator of uint8 (H, W) masks, one per incoming frame; see :meth:`Segmenter.stream`.

    ``stats`` (:class:`StreamStats`) is updated after every frame; ``object_ids`` are the
    ids in the first frame's mask.
    """

    def __init__(self, segmenter: Any, frames: Iterable[np.ndarray], mask: Any, cfg: PropagationConfig, *,
                 upsample: str, input_fps: float | None = None):
        fps = input_fps if input_fps is not None else getattr(frames, "fps", None) or DEFAULT_INPUT_FPS
        check_fps(fps, "input_fps")
        self.segmenter = segmenter
        self.cfg = cfg
        self.upsample = upsample
        self.stats = StreamStats(input_fps=float(fps))
        self.object_ids: list[int] = []
        self._mask = mask
        self._frames = iter(frames)
        self._gen = self._run()
        self._warned = False

    def __iter__(self) -> "LiveSegmentation":
        return self

    def __next__(self) -> np.ndarray:
        return next(self._gen)

    def close(self) -> None:
        """Stop early (closes the frame iterator where it can be closed)."""
        self._gen.close()

    # -- the loop --------------------------------------------------------------------------
    def _embed(self, frame: np.ndarray, t: int) -> Any:
        """float32 (h, w, d), rounded through float16 as stored embeddings are; left where the
        backend put it (a GPU backend's stays on the device, and so do search and upsampling)."""
        e = self.segmenter._embed_batch(frame[None], np.array([t]))[0]
        xp = get_xp(e)
        if not bool(xp.isfinite(e).all()):
            raise InputError(f"stream frame {t}: the model returned NaN or infinity; the model file may be damaged")
        return e.astype(xp.float16).astype(xp.float32)

    def _check(self, frame: Any, t: int, size: tuple[int, int] | None) -> np.ndarray:
        f = np.asarray(frame)
        if f.ndim != 3 or f.shape[2] != 3 or f.dtype != np.uint8:
            raise InputError(f"stream frame {t} is {f.dtype} {f.shape}; expected uint8 (H, W, 3) RGB")
        if f.shape[0] == 0 or f.shape[1] == 0:
            raise InputError(f"stream frame {t} has shape {f.shape}; expected H, W > 0")
        if size is not None and f.shape[:2] != size:
            raise InputError(f"stream frame {t} has size (H, W) = {f.shape[:2]}; expected {size} like frame 0 "
                             "(all frames must have one size)")
        return f

    def _run(self) -> Iterator[np.ndarray]:
        cfg, stats = self.cfg, self.stats
        stride = self.segmenter.video_config.stride
        guide_needed = needs_guide(self.upsample)
        t_start = None
        last_report = time.monotonic()
        try:
            first = next(self._frames)
        except StopIteration:
            raise InputError("the stream gave no frames; expected at least one (the frame the mask "
                             "belongs to)") from None
        t_start = time.monotonic()
        w0 = time.perf_counter()
        first = self._check(first, 0, None)
        size = first.shape[:2]
        is_path = isinstance(self._mask, (str, os.PathLike))
        user_mask = read_mask(self._mask, expected_size=size, name="mask" if is_path else "mask for stream frame 0")
        objects = ObjectMap()
        columns = objects.columns_of(user_mask)
        self.object_ids = list(objects.object_ids)
        c = objects.num_labels
        ref_labels = cell_labels(columns, c, stride)
        lut = objects.lut()
        h, w = ref_labels.shape
        ref_emb = self._embed(first, 0)
        if ref_emb.shape[:2] != (h, w):  # pragma: no cover - a model with another stride
            raise InputError(f"the model gave {ref_emb.shape[:2]} cells for a {size} frame; expected {(h, w)}")
        xp = get_xp(ref_emb)
        ref_labels, lut = to_device(ref_labels, xp), to_device(lut, xp)
        tracker = Tracker(ref_emb, ref_labels, c, cfg)
        self._account(time.perf_counter() - w0, tracker.pool_size, t_start)
        yield user_mask
        t = 0
        while True:
            try:
                frame = next(self._frames)
            except StopIteration:
                break
            t += 1
            w0 = time.perf_counter()
            frame = self._check(frame, t, size)
            q = self._embed(frame, t)
            pool = tracker.pool_size
            s16 = tracker.step(q).astype(xp.float16)
            ids = upsample_labels(s16.astype(xp.float32), size, self.upsample,
                                  to_device(frame, xp) if guide_needed else None, stride=stride)
            out = to_host(lut[ids])
            self._account(time.perf_counter() - w0, pool, t_start)
            now = time.monotonic()
            if now - last_report >= REPORT_SECONDS:
                log.info("live: %s", stats.summary())
                last_report = now
            yield out
        log.info("live: %s", stats.summary())

    def _account(self, seconds: float, pool: int, t_start: float) -> None:
        st = self.stats
        st.frames += 1
        st.busy += seconds
        st.frame_times.append(seconds)
        st.wall = time.monotonic() - t_start
        st.pool_size = pool
        st.max_pool_size = max(st.max_pool_size, pool)
        if not self._warned and st.frames >= WARMUP_FRAMES + 1 and not st.keeping_up:
            self._warned = True
            log.warning("live: %s", st.summary())


# -- raw frames from a pipe -------------------------------------------------------------

def parse_size(text: str) -> tuple[int, int]:
    """``"854x480"`` -> (H, W) = (480, 854); InputError otherwise."""
    m = re.fullmatch(r"\s*(\d+)\s*[xX]\s*(\d+)\s*", str(text))
    if not m or int(m.group(1)) < 1 or int(m.group(2)) < 1:
        raise InputError(f"stream size {text!r} is not WIDTHxHEIGHT; expected for example 854x480")
    return int(m.group(2)), int(m.group(1))


def read_raw_frames(stream: IO[bytes], size: tuple[int, int], prefetch: int = 4,
                    name: str = "stdin") -> Iterator[np.ndarray]:
    """Yield uint8 (H, W, 3) frames from raw rgb24 bytes (H*W*3 per frame, no header).

    A background thread reads up to ``prefetch`` frames ahead, so reading overlaps the
    work. The stream ending inside a frame raises :class:`InputError` after the complete
    frames before it.
    """
    h, w = size
    nbytes = h * w * 3
    q: queue.Queue = queue.Queue(maxsize=max(int(prefetch), 1))
    stop = threading.Event()

    def put(item: Any) -> bool:
        while not stop.is_set():
            try:
                q.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def reader() -> None:
        i = 0
        try:
            while not stop.is_set():
                buf = bytearray()
                while len(buf) < nbytes:
                    chunk = stream.read(nbytes - len(buf))
                    if not chunk:
                        break
                    buf += chunk
                if not buf:
                    put(None)
                    return
                if len(buf) < nbytes:
                    put(InputError(f"{name} ended inside frame {i}: got {len(buf)} of {nbytes} bytes; expected "
                                   f"raw rgb24 frames of {w}x{h} (ffmpeg -f rawvideo -pix_fmt rgb24)"))
                    return
                if not put(np.frombuffer(bytes(buf), dtype=np.uint8).reshape(h, w, 3)):
                    return
                i += 1
        except BaseException as exc:  # noqa: BLE001 - handed to the consumer
            put(exc)

    th = threading.Thread(target=reader, name="pml-rt-raw-reader", daemon=True)
    th.start()
    try:
        while True:
            item = q.get()
            if item is None:
                return
            if isinstance(item, BaseException):
                if isinstance(item, OSError):
                    raise InputError(f"{name} cannot be read ({item})") from item
                raise item
            yield item
    finally:
        stop.set()
