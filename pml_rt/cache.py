"""On-disk embedding cache: float16 memory maps keyed by the video's content and the model.

Embedding is the only expensive step, and it does not depend on the annotations, so its
result is kept on disk and reused by later runs, processes and sessions:

    <root>/<model>-<model key>/<video digest>-<H>x<W>/
        meta.json       what the entry holds and how many frames are done (see docs/STREAMING.md)
        embeddings.f16  raw C-order float16 (T, h, w, d), opened with np.memmap
        frames.b2b      16-byte BLAKE2b digest of each frame's embeddings, (T, 16) raw
        lock            flock()ed by whoever writes the entry

``<root>`` is ``$PML_RT_CACHE`` or ``~/.cache/pml-rt``. Frames are written with ``pwrite``
(no mapping, so a long video does not grow the resident set) and made durable in
checkpoints: data and digests are fsynced, then ``meta.json`` is replaced atomically with the
new ``frames_done``. A run that stops for any reason leaves an entry whose first
``frames_done`` frames are good; the next run resumes at the first missing frame. An entry
that does not match what is expected (format, model, video, shape, sizes, sampled digests)
is discarded with a warning and rebuilt, never trusted.

Also here: :class:`SpillFile` (embeddings too large for memory when no cache is wanted),
:class:`SpillStore` (per-frame arrays kept on disk) and :class:`FrameReader` (reads frames
of a memory map one at a time and lets the pages go, so that the resident set stays flat).
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import errno
import hashlib
import json
import logging
import mmap
import os
import random
import shutil
import tempfile
import threading
import time
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .errors import OutputError

log = logging.getLogger("pml_rt")

#: ``meta.json`` "format" and "version"; a change of layout bumps the version.
FORMAT = "pml-rt-embeddings"
VERSION = 1
#: Environment variable naming the cache root.
ENV_VAR = "PML_RT_CACHE"
#: Embeddings larger than this (bytes) go to an unlinked temporary file, not to memory,
#: when no cache is used.
SPILL_BYTES = 1 << 30
#: Most seconds between checkpoints while embedding: what a killed run can lose.
CHECKPOINT_SECONDS = 1.0
#: Frames whose digests are checked when an entry is opened (first, last done, random ones).
VERIFY_FRAMES = 3

META = "meta.json"
DATA = "embeddings.f16"
DIGESTS = "frames.b2b"
LOCK = "lock"
DIGEST_SIZE = 16  # bytes of BLAKE2b per frame


def default_cache_root() -> Path:
    """``$PML_RT_CACHE`` where set, else ``~/.cache/pml-rt``."""
    env = os.environ.get(ENV_VAR)
    return Path(env).expanduser() if env else Path.home() / ".cache" / "pml-rt"


def output_error(what: str, exc: OSError, fix: str = "") -> OutputError:
    """An :class:`OutputError` carrying ``exc``'s errno, with one line saying what and why."""
    why = exc.strerror or str(exc) or type(exc).__name__
    err = OutputError(exc.errno or errno.EIO, f"cannot write {what}: {why}" + (f"; {fix}" if fix else ""))
    return err


# -- content digests ---------------------------------------------------------------------

_CHUNK = 1 << 20
_memo: dict[tuple, str] = {}
_memo_lock = threading.Lock()


def _stat_key(p: Path) -> tuple:
    st = p.stat()
    return (str(p.resolve()), st.st_size, st.st_mtime_ns, st.st_ino)


def _hash_file(h: Any, p: Path) -> None:
    with open(p, "rb") as f:
        while chunk := f.read(_CHUNK):
            h.update(chunk)


def file_sha256(path: str | os.PathLike[str]) -> str:
    """Hex SHA-256 of a file, streamed; remembered per (path, size, mtime) in this process."""
    p = Path(path)
    key = ("sha256",) + _stat_key(p)
    with _memo_lock:
        if key in _memo:
            return _memo[key]
    h = hashlib.sha256()
    _hash_file(h, p)
    with _memo_lock:
        _memo[key] = h.hexdigest()
    return _memo[key]


def video_digest(source: Any) -> str:
    """A digest of a video's content: ``"blake2b-160:<40 hex>"``.

    Video files: the file's bytes; folders of frames: each frame file's name and bytes, in
    frame order; anything else (arrays, custom sources): every frame's shape and pixels,
    which decodes the source once. Files are streamed, never read whole.
    """
    from .io.video import ContainerSource, FolderSource  # noqa: PLC0415

    if isinstance(source, ContainerSource):
        key: tuple | None = ("video",) + _stat_key(Path(source.path))  # type: ignore[arg-type]
        files = [Path(source.path)]  # type: ignore[arg-type]
    elif isinstance(source, FolderSource):
        files = source.files
        key = ("folder",) + tuple(_stat_key(p) for p in files)
    else:
        key, files = None, []
    if key is not None:
        with _memo_lock:
            if key in _memo:
                return _memo[key]
    h = hashlib.blake2b(digest_size=20)
    if isinstance(source, ContainerSource):
        _hash_file(h, files[0])
    elif isinstance(source, FolderSource):
        for p in files:
            h.update(p.name.encode() + b"\0" + str(p.stat().st_size).encode() + b"\0")
            _hash_file(h, p)
    else:
        for i, frame in enumerate(source):
            a = np.ascontiguousarray(frame)
            h.update(f"{i}:{a.shape}:{a.dtype.str};".encode())
            h.update(a.data)
    digest = "blake2b-160:" + h.hexdigest()
    if key is not None:
        with _memo_lock:
            _memo[key] = digest
    return digest


def model_identity(cfg: Any, backend: Any) -> dict:
    """What makes embeddings differ between runs: model name, backend, weights file and its SHA-256.

    The weights file is the backend's own (``model_path``, ``checkpoint`` or ``engine_path``)
    where it has one, else the packaged ONNX file. ``key`` (16 hex) names the cache folder.
    """
    weights: Path | None = None
    for attr in ("model_path", "checkpoint", "engine_path"):
        p = getattr(backend, attr, None)
        if p and Path(p).is_file():
            weights = Path(p)
            break
    if weights is None and Path(cfg.path).is_file():
        weights = Path(cfg.path)
    ident = {
        "name": cfg.name,
        "backend": getattr(backend, "name", type(backend).__name__),
        "half": bool(getattr(backend, "half", False)),
        "weights": weights.name if weights else None,
        "weights_sha256": file_sha256(weights) if weights else None,
        "d": int(cfg.d),
        "stride": int(cfg.stride),
        "time_scale": float(cfg.time_scale),
    }
    ident["key"] = hashlib.sha256(json.dumps(ident, sort_keys=True).encode()).hexdigest()[:16]
    return ident


# -- pages of memory maps ----------------------------------------------------------------

def release_rows(arr: np.ndarray, start: int, stop: int) -> None:
    """Let the resident pages of rows ``start:stop`` of a file-backed memory map go.

    Pages of a shared file mapping stay in the page cache (nothing is lost, a later read
    faults them back in) but stop counting in this process's resident set. Does nothing for
    arrays that are not an unsliced, shared np.memmap, or where madvise is unavailable.
    """
    mm = getattr(arr, "_mmap", None)
    if (mm is None or not hasattr(mmap, "MADV_DONTNEED") or arr.base is not mm
            or getattr(arr, "mode", "c") == "c" or not arr.flags.c_contiguous or stop <= start):
        return
    row = arr.strides[0]
    in_map = arr.offset % mmap.ALLOCATIONGRANULARITY  # where the data starts in the mapping
    a = in_map + start * row
    b = min(in_map + stop * row, len(mm))
    a -= a % mmap.PAGESIZE
    if b > a:
        with contextlib.suppress(OSError, ValueError):
            mm.madvise(mmap.MADV_DONTNEED, a, b - a)


class FrameReader:
    """A (T, ...) memory map read one frame at a time: ``reader[t]`` is a copy of frame t,
    after which the frame's pages leave the resident set. ``shape``/``dtype`` as the array's.

    For code that walks every frame once (propagation): 8 GB of embeddings then cost a
    few frames of resident memory instead of 8 GB of mapped pages.
    """

    def __init__(self, arr: np.ndarray):
        self.array = arr
        self.shape = arr.shape
        self.dtype = arr.dtype
        self.ndim = arr.ndim

    def __len__(self) -> int:
        return int(self.shape[0])

    def __getitem__(self, t: Any) -> np.ndarray:
        if not isinstance(t, (int, np.integer)):
            return self.array[t]
        out = np.array(self.array[t])
        i = int(t) % self.shape[0]
        release_rows(self.array, i, i + 1)
        return out


def frames_view(arr: Any) -> Any:
    """:class:`FrameReader` over ``arr`` where it is a memory map, else ``arr`` itself."""
    return FrameReader(arr) if isinstance(arr, np.memmap) else arr


# -- files -------------------------------------------------------------------------------

def _pwrite_all(fd: int, data: memoryview | bytes, offset: int) -> None:
    view = memoryview(data).cast("B")
    while view:
        n = os.pwrite(fd, view, offset)
        if n <= 0:  # pragma: no cover - pwrite raises rather than return 0
            raise OSError(errno.EIO, "short write")
        view, offset = view[n:], offset + n


def _pread_all(fd: int, size: int, offset: int) -> bytes:
    out = bytearray()
    while len(out) < size:
        chunk = os.pread(fd, size - len(out), offset + len(out))
        if not chunk:
            break
        out += chunk
    return bytes(out)


def _write_json_atomic(path: Path, obj: dict) -> None:
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}-{threading.get_ident()}")
    try:
        with open(tmp, "w", encoding="utf-8") as f:
            json.dump(obj, f, indent=1, sort_keys=True)
            f.write("\n")
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise


def _now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


@contextlib.contextmanager
def _flock(path: Path) -> Iterator[None]:
    """An exclusive lock on ``path`` (fcntl.flock; none where fcntl is absent)."""
    try:
        import fcntl  # noqa: PLC0415
    except ImportError:  # pragma: no cover - Windows
        yield
        return
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            log.info("waiting for another run that is writing %s", path.parent)
            fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # closing releases the lock


# -- the cache ---------------------------------------------------------------------------

@dataclass
class CacheEntry:
    """One cached video: its folder and what it must hold.

    shape: (T, h, w, d) of the embeddings; frame_size: (H, W); identity: from
    :func:`model_identity`; digest: from :func:`video_digest`; label: the video, for messages.
    """

    path: Path
    shape: tuple[int, int, int, int]
    frame_size: tuple[int, int]
    identity: dict
    digest: str
    label: str = "video"

    @property
    def frame_bytes(self) -> int:
        t, h, w, d = self.shape
        return h * w * d * 2

    @property
    def nbytes(self) -> int:
        return self.shape[0] * self.frame_bytes

    def expected_meta(self, frames_done: int) -> dict:
        t, h, w, d = self.shape
        return {
            "format": FORMAT, "version": VERSION,
            "model": self.identity,
            "video": {"digest": self.digest, "source": self.label, "frames": t,
                      "height": self.frame_size[0], "width": self.frame_size[1]},
            "frames": t, "h": h, "w": w, "d": d, "stride": int(self.identity.get("stride", 8)),
            "dtype": "float16", "order": "C", "shape": [t, h, w, d],
            "data": DATA, "digests": DIGESTS, "digest": f"blake2b-{8 * DIGEST_SIZE} per frame",
            "frames_done": int(frames_done), "complete": int(frames_done) == t,
        }

    # -- reading -------------------------------------------------------------------------
    def read_meta(self) -> dict | None:
        try:
            with open(self.path / META, encoding="utf-8") as f:
                meta = json.load(f)
        except FileNotFoundError:
            return None
        except (OSError, ValueError) as exc:
            return {"_unreadable": f"{META} cannot be read ({exc})"}
        return meta if isinstance(meta, dict) else {"_unreadable": f"{META} is not an object"}

    def problem(self, meta: dict) -> str | None:
        """Why ``meta`` and the files do not make a trustworthy entry; None where they do."""
        if "_unreadable" in meta:
            return str(meta["_unreadable"])
        want = self.expected_meta(0)
        for key in ("format", "version", "model", "shape", "dtype", "order"):
            if meta.get(key) != want[key]:
                return f"{key} is {meta.get(key)!r}, expected {want[key]!r}"
        if (meta.get("video") or {}).get("digest") != self.digest:
            return "the video digest differs"
        done = meta.get("frames_done")
        if not isinstance(done, int) or not 0 <= done <= self.shape[0]:
            return f"frames_done is {done!r}, expected 0..{self.shape[0]}"
        for name, size in ((DATA, self.nbytes), (DIGESTS, self.shape[0] * DIGEST_SIZE)):
            try:
                got = (self.path / name).stat().st_size
            except FileNotFoundError:
                return f"{name} is missing"
            if got != size:
                return f"{name} has {got} bytes, expected {size}"
        return self._verify(done)

    def _verify(self, done: int) -> str | None:
        """Check the digests (and finiteness) of a few frames among the first ``done``."""
        if done == 0:
            return None
        picks = {0, done - 1} | {random.randrange(done) for _ in range(max(VERIFY_FRAMES - 2, 0))}
        fd = os.open(self.path / DATA, os.O_RDONLY)
        dfd = os.open(self.path / DIGESTS, os.O_RDONLY)
        try:
            for t in sorted(picks):
                raw = _pread_all(fd, self.frame_bytes, t * self.frame_bytes)
                want = _pread_all(dfd, DIGEST_SIZE, t * DIGEST_SIZE)
                if hashlib.blake2b(raw, digest_size=DIGEST_SIZE).digest() != want:
                    return f"frame {t}'s embeddings do not match their digest"
                if not np.isfinite(np.frombuffer(raw, dtype=np.float16)).all():
                    return f"frame {t}'s embeddings are not finite"
        finally:
            os.close(fd)
            os.close(dfd)
        return None

    def load(self) -> np.memmap:
        """The complete embeddings: read-only np.memmap float16 (T, h, w, d)."""
        return np.memmap(self.path / DATA, dtype=np.float16, mode="r", shape=self.shape)

    # -- writing -------------------------------------------------------------------------
    @contextlib.contextmanager
    def locked(self) -> Iterator[None]:
        """Hold the entry's lock (creating its folder); raise OutputError where it cannot be made."""
        try:
            self.path.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise output_error(f"the embedding cache folder {self.path}", exc,
                               f"set {ENV_VAR} or --cache-dir to a writable folder, or use --no-cache") from exc
        with _flock(self.path / LOCK):
            yield

    def prepare(self) -> int:
        """Frames already done (T where complete); call with the lock held.

        A missing entry is created empty; one that does not check out is discarded with a
        warning and created anew.
        """
        meta = self.read_meta()
        if meta is not None:
            why = self.problem(meta)
            if why is None:
                return int(meta["frames_done"])
            warnings.warn(f"embedding cache {self.path} for {self.label} does not check out ({why}); "
                          "discarding it and embedding again", stacklevel=4)
        self.discard()
        self._create()
        return 0

    def discard(self) -> None:
        """Remove the entry's files (meta first, so that nothing trusts the rest)."""
        for name in (META, DATA, DIGESTS):
            with contextlib.suppress(FileNotFoundError):
                (self.path / name).unlink()

    def _create(self) -> None:
        try:
            free = shutil.disk_usage(self.path).free
            if free < self.nbytes + (1 << 20):
                raise OutputError(errno.ENOSPC,
                                  f"cannot write the embedding cache {self.path}: {self.label} needs "
                                  f"{self.nbytes / 1e9:.2f} GB but {free / 1e9:.2f} GB are free; free space, "
                                  f"set {ENV_VAR} or --cache-dir elsewhere, or use --no-cache")
            for name, size in ((DATA, self.nbytes), (DIGESTS, self.shape[0] * DIGEST_SIZE)):
                fd = os.open(self.path / name, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o666)
                try:
                    os.ftruncate(fd, size)  # sparse: space is taken as frames arrive
                finally:
                    os.close(fd)
            self.write_meta(0)
        except OutputError:
            self.discard()
            raise
        except OSError as exc:
            self.discard()
            raise output_error(f"the embedding cache {self.path}", exc,
                               f"free space, set {ENV_VAR} or --cache-dir elsewhere, or use --no-cache") from exc

    def write_meta(self, frames_done: int) -> None:
        meta = self.expected_meta(frames_done)
        old = self.read_meta() or {}
        meta["created"] = old.get("created", _now()) if "_unreadable" not in old else _now()
        meta["updated"] = _now()
        _write_json_atomic(self.path / META, meta)

    def writer(self, start: int) -> "CacheWriter":
        return CacheWriter(self, start)


class CacheWriter:
    """Writes frames of one entry from frame ``start`` on, in checkpoints.

    ``write(t0, batch)`` writes float16 (n, h, w, d) frames t0..t0+n-1 (in order, no gaps);
    ``close()`` makes everything written durable and records it in ``meta.json``. Set
    ``poisoned`` where the model's output was bad: the entry is then discarded on close.
    """

    def __init__(self, entry: CacheEntry, start: int):
        self.entry = entry
        self.done = start  # frames written and durable once checkpointed
        self.saved = start  # frames recorded in meta.json
        self.poisoned = False
        self._last = time.monotonic()
        self._fd = os.open(entry.path / DATA, os.O_RDWR)
        self._dfd = os.open(entry.path / DIGESTS, os.O_RDWR)

    def write(self, t0: int, batch: np.ndarray) -> None:
        if t0 != self.done:
            raise ValueError(f"cache writes must be in order: frame {t0} after {self.done}")  # internal misuse
        batch = np.ascontiguousarray(batch, dtype=np.float16)
        fb = self.entry.frame_bytes
        try:
            _pwrite_all(self._fd, batch.data, t0 * fb)
            digests = b"".join(hashlib.blake2b(f.data, digest_size=DIGEST_SIZE).digest() for f in batch)
            _pwrite_all(self._dfd, digests, t0 * DIGEST_SIZE)
        except OSError as exc:
            raise output_error(f"the embedding cache {self.entry.path} (frame {t0})", exc,
                               f"free space, set {ENV_VAR} or --cache-dir elsewhere, or use --no-cache") from exc
        self.done = t0 + batch.shape[0]
        if time.monotonic() - self._last >= CHECKPOINT_SECONDS:
            self.checkpoint()

    def checkpoint(self) -> None:
        """fsync data and digests, then record ``done`` in meta.json (atomically)."""
        if self.done == self.saved:
            return
        try:
            os.fsync(self._fd)
            os.fsync(self._dfd)
            self.entry.write_meta(self.done)
        except OSError as exc:
            raise output_error(f"the embedding cache {self.entry.path}", exc,
                               f"free space, set {ENV_VAR} or --cache-dir elsewhere, or use --no-cache") from exc
        self.saved = self.done
        self._last = time.monotonic()

    def close(self, ok: bool = True) -> None:
        """Checkpoint and close; on failure (``ok`` false) keep what is durable, quietly."""
        try:
            if self.poisoned:
                self.entry.discard()
            elif ok:
                self.checkpoint()
            else:
                try:
                    self.checkpoint()
                except OutputError as exc:  # the first error is the one to report
                    log.warning("%s", exc)
        finally:
            os.close(self._fd)
            os.close(self._dfd)

    def __enter__(self) -> "CacheWriter":
        return self

    def __exit__(self, exc_type: Any, *exc: object) -> None:
        self.close(ok=exc_type is None)


class EmbeddingCache:
    """The cache root: ``entry(...)`` names the folder of one (model, video, frame size)."""

    def __init__(self, root: str | os.PathLike[str] | None = None):
        self.root = Path(root).expanduser() if root is not None else default_cache_root()

    def entry(self, identity: dict, digest: str, shape: tuple[int, int, int, int],
              frame_size: tuple[int, int], label: str = "video") -> CacheEntry:
        h, w = frame_size
        folder = self.root / f"{identity['name']}-{identity['key']}" / f"{digest.split(':')[-1]}-{h}x{w}"
        return CacheEntry(folder, tuple(int(s) for s in shape), (int(h), int(w)), identity, digest,
                          label)  # type: ignore[arg-type]

    def entries(self) -> list[tuple[Path, dict | None]]:
        """Every entry folder under the root and its meta.json (None where unreadable)."""
        out = []
        for meta_path in sorted(self.root.glob(f"*/*/{META}")):
            try:
                meta = json.loads(meta_path.read_text(encoding="utf-8"))
            except (OSError, ValueError):
                meta = None
            out.append((meta_path.parent, meta))
        return out


# -- disk-backed scratch -----------------------------------------------------------------

class SpillFile:
    """Embeddings written to an unlinked temporary file, then read as a np.memmap.

    For videos whose embeddings are too large for memory when no cache is wanted; the
    file disappears when the last memory map of it goes. ``write``/``close`` as CacheWriter.
    """

    def __init__(self, shape: tuple[int, ...], folder: str | os.PathLike[str] | None = None):
        self.shape = tuple(int(s) for s in shape)
        self.frame_bytes = int(np.prod(self.shape[1:])) * 2
        self.folder = str(folder) if folder is not None else tempfile.gettempdir()
        self.poisoned = False
        try:
            self._file = tempfile.TemporaryFile(dir=self.folder, prefix="pml-rt-embeddings-")
            os.ftruncate(self._file.fileno(), self.shape[0] * self.frame_bytes)
        except OSError as exc:
            raise output_error(f"temporary embeddings in {self.folder}", exc,
                               "free space or set TMPDIR to a folder with room") from exc

    def write(self, t0: int, batch: np.ndarray) -> None:
        batch = np.ascontiguousarray(batch, dtype=np.float16)
        try:
            _pwrite_all(self._file.fileno(), batch.data, t0 * self.frame_bytes)
        except OSError as exc:
            raise output_error(f"temporary embeddings in {self.folder}", exc,
                               "free space or set TMPDIR to a folder with room") from exc

    def array(self) -> np.memmap:
        """The embeddings as a read-only np.memmap (the file closes; the mapping keeps it)."""
        arr = np.memmap(self._file, dtype=np.float16, mode="r", shape=self.shape)
        self._file.close()
        return arr

    def close(self, ok: bool = True) -> None:
        if not ok:
            self._file.close()


class SpillStore:
    """Per-frame arrays of one shape and dtype, in memory or (``on_disk``) in a temporary file.

    ``store[t] = a``; ``store.pop(t)`` returns it. On disk, nothing is mapped, so the
    resident set does not grow with the number of frames.
    """

    def __init__(self, n: int, shape: tuple[int, ...], dtype: Any, on_disk: bool,
                 folder: str | os.PathLike[str] | None = None):
        self.shape, self.dtype = tuple(shape), np.dtype(dtype)
        self.row = int(np.prod(self.shape)) * self.dtype.itemsize
        self._mem: dict[int, np.ndarray] | None = None if on_disk else {}
        self._file: Any = None
        if on_disk:
            try:
                self._file = tempfile.TemporaryFile(dir=folder, prefix="pml-rt-scores-")
            except OSError as exc:
                raise output_error("temporary scores", exc, "free space or set TMPDIR") from exc

    def __setitem__(self, t: int, a: np.ndarray) -> None:
        a = np.asarray(a, dtype=self.dtype)
        if self._mem is not None:
            self._mem[t] = a
            return
        try:
            _pwrite_all(self._file.fileno(), np.ascontiguousarray(a).data, t * self.row)
        except OSError as exc:
            raise output_error("temporary scores", exc, "free space or set TMPDIR") from exc

    def pop(self, t: int) -> np.ndarray:
        if self._mem is not None:
            return self._mem.pop(t)
        raw = _pread_all(self._file.fileno(), self.row, t * self.row)
        return np.frombuffer(raw, dtype=self.dtype).reshape(self.shape).copy()

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None
        self._mem = None

    def __del__(self) -> None:
        with contextlib.suppress(Exception):
            self.close()
