"""The batch ledger: which videos are finished, under which inputs and model, and input hashes.

The ledger is ``<out>/ledger.jsonl``: one JSON object per finished attempt (status ``done`` or
``failed``), appended by the driver only (workers return their results to it), each line
written with one ``write`` and flushed to disk. The last row of a video id wins. A row's
``key`` is a hash of the video's content, its annotation file's content, the mask frame, the
propagation options, the pml-rt version and the model (name and file hash), so a rerun skips
a video only when nothing that shapes its masks changed.

One driver at a time holds ``<out>/.ledger.lock``; a second run on the same folder is refused.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import time
import warnings
from pathlib import Path
from typing import Any

from .errors import InputError, StateError
from .io.video import IMAGE_EXTENSIONS

LEDGER_NAME = "ledger.jsonl"
LOCK_NAME = ".ledger.lock"
_CHUNK = 1 << 20
# Hidden work folders of a batch in <out>: staging copies and replaced outputs being removed.
_TEMP = re.compile(r"^\.+.*\.(staging|trash)-[0-9a-f]{8}(\.tmp-[0-9a-f]{8})?$")


def temp_name(final: Path, kind: str) -> Path:
    """A fresh hidden sibling of ``final``: ``.<name>.<kind>-<8 hex>`` (kind: staging, trash)."""
    return final.parent / f".{final.name}.{kind}-{os.urandom(4).hex()}"


def _hash_into(h: Any, path: Path) -> None:
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            h.update(chunk)


def hash_file(path: str | os.PathLike[str]) -> str:
    """SHA-256 hex digest of a file's content, read in 1 MiB chunks."""
    h = hashlib.sha256()
    _hash_into(h, Path(path))
    return h.hexdigest()


def hash_video(path: str | os.PathLike[str]) -> str:
    """SHA-256 of a video's content: a file's bytes, or a frame folder's frame names and bytes.

    For a folder only the files a :class:`pml_rt.io.FolderSource` reads count (image
    suffixes, not hidden), in name order, so notes or thumbnails next to the frames do not.
    Raises :class:`InputError` where the path is missing or unreadable.
    """
    p = Path(path)
    try:
        if p.is_dir():
            h = hashlib.sha256(b"folder\0")
            files = sorted(q for q in p.iterdir() if q.suffix.lower() in IMAGE_EXTENSIONS
                           and not q.name.startswith(".") and q.is_file())
            if not files:
                raise InputError(f"frame folder '{p}' has no image files; expected frames with suffix "
                                 f"{', '.join(IMAGE_EXTENSIONS)}")
            for q in files:
                h.update(q.name.encode() + b"\0" + str(q.stat().st_size).encode() + b"\0")
                _hash_into(h, q)
            return h.hexdigest()
        if not p.exists():
            raise InputError(f"video path '{p}' does not exist")
        return hash_file(p)
    except OSError as exc:
        raise InputError(f"video path '{p}' cannot be read ({exc})") from exc


def _hash_annotation(path: str, what: str) -> str:
    p = Path(path)
    if not p.is_file():
        raise InputError(f"{what} '{p}' does not exist or is not a file")
    try:
        return hash_file(p)
    except OSError as exc:
        raise InputError(f"{what} '{p}' cannot be read ({exc})") from exc


def input_key(item: Any, options: dict[str, Any], model: dict[str, Any]) -> str:
    """The ledger key of one video: SHA-256 over its inputs' content, the options and the model.

    item: a :class:`pml_rt.batch_manifest.BatchItem`. Paths are not part of the key (content
    is), so moving a dataset to another mount does not redo it.
    """
    parts: dict[str, Any] = {"video": hash_video(item.video), "options": options, "model": model}
    if item.mask is not None:
        parts["mask"] = _hash_annotation(item.mask, "mask")
        parts["mask_frame"] = int(item.mask_frame)
    else:
        parts["clicks"] = _hash_annotation(item.clicks, "clicks file")
    blob = json.dumps(parts, sort_keys=True, separators=(",", ":")).encode()
    return hashlib.sha256(blob).hexdigest()


class Ledger:
    """The ledger of one output folder, held (locked) by one driver between open and close.

    ``last(id)`` is the latest row of a video; ``append(row)`` adds one durably. Use as a
    context manager.
    """

    def __init__(self, out_dir: str | os.PathLike[str]):
        self.out_dir = Path(out_dir)
        self.path = self.out_dir / LEDGER_NAME
        self._rows: dict[str, dict[str, Any]] = {}
        self._lock_fd: int | None = None
        self._fd: int | None = None

    def __enter__(self) -> "Ledger":
        self.open()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def open(self) -> None:
        """Create the folder, take the lock, read the rows, remove leftovers of killed runs."""
        if self.out_dir.exists() and not self.out_dir.is_dir():
            raise InputError(f"output folder '{self.out_dir}' exists and is not a folder")
        self.out_dir.mkdir(parents=True, exist_ok=True)
        self._lock()
        self._read()
        self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        if self.path.stat().st_size and not self.path.read_bytes().endswith(b"\n"):
            os.write(self._fd, b"\n")  # end a line torn by a crash, so the next row parses
        self.clean_temporaries()

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
        if self._lock_fd is not None:
            os.close(self._lock_fd)  # closing releases the flock
            self._lock_fd = None

    def _lock(self) -> None:
        fd = os.open(self.out_dir / LOCK_NAME, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            import fcntl  # noqa: PLC0415 - POSIX only; elsewhere runs are not locked

            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except ImportError:  # pragma: no cover - Windows
            pass
        except OSError:
            os.close(fd)
            raise StateError(f"another pml-rt batch is writing to '{self.out_dir}' (it holds "
                             f"{self.out_dir / LOCK_NAME}); wait for it to finish or use another --out") from None
        self._lock_fd = fd

    def _read(self) -> None:
        self._rows = {}
        if not self.path.exists():
            return
        bad = 0
        with open(self.path, encoding="utf-8", errors="replace") as f:
            for line in f:
                if not line.strip():
                    continue
                try:
                    row = json.loads(line)
                    self._rows[str(row["id"])] = row
                except (json.JSONDecodeError, KeyError, TypeError):
                    bad += 1
        if bad:
            warnings.warn(f"{self.path}: skipped {bad} unreadable line(s) (a run killed while writing?); "
                          "those videos are redone", stacklevel=3)

    def last(self, video_id: str) -> dict[str, Any] | None:
        """The latest row for ``video_id``, or None."""
        return self._rows.get(video_id)

    def done_key(self, video_id: str) -> str | None:
        """The key of a finished video whose output folder is still there, else None (redo it)."""
        row = self._rows.get(video_id)
        if row is None or row.get("status") != "done" or not (self.out_dir / video_id).is_dir():
            return None
        return row.get("key")

    def append(self, row: dict[str, Any]) -> None:
        """Add ``row`` (must have ``id`` and ``status``) as one line, written and synced at once."""
        if self._fd is None:
            raise StateError("the ledger is not open; use it as a context manager")
        row = {"time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), **row}
        data = (json.dumps(row, sort_keys=True) + "\n").encode()
        os.write(self._fd, data)  # O_APPEND: one write is one whole line
        os.fsync(self._fd)
        self._rows[str(row["id"])] = row

    def clean_temporaries(self) -> list[Path]:
        """Remove staging and trash folders that killed workers left in the output folder."""
        removed = []
        for p in self.out_dir.iterdir():
            if _TEMP.match(p.name):
                shutil.rmtree(p, ignore_errors=True) if p.is_dir() else p.unlink(missing_ok=True)
                removed.append(p)
        return removed
