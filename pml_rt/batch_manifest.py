"""Batch manifests: one video and its annotation per row, as CSV or JSON lines.

Columns (CSV header names, or JSON keys):

- ``video`` (required): a video file or a folder of frames.
- ``mask`` and ``mask_frame`` (default 0): an object-id mask PNG and the frame it belongs to;
  or ``clicks``: a JSON file ``{"frame": int, "points": [[x, y], ...], "labels": [...]}`` or
  a list of such. Each row has exactly one of ``mask`` and ``clicks``.
- ``id`` (optional): the name of the row's output folder; otherwise derived from the video's
  file or folder name and made unique.

Relative paths are taken relative to the manifest's folder. The driver only parses the
manifest; it never opens the videos (workers read them where they run), so a missing video
fails that row alone, on the worker, and is recorded in the ledger.
"""

from __future__ import annotations

import csv
import io
import json
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .errors import InputError
from .io.video import VIDEO_EXTENSIONS

COLUMNS: tuple[str, ...] = ("video", "mask", "mask_frame", "clicks", "id")
#: Names that cannot be output folders: the ledger lives next to them.
RESERVED_IDS: frozenset[str] = frozenset({"ledger.jsonl"})
_ID_OK = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9._-]*$")
_URL = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://")


@dataclass(frozen=True)
class BatchItem:
    """One manifest row, checked: what a worker needs to segment one video.

    Paths are absolute strings (not Path) so they pass unchanged to workers on other machines.
    """

    id: str  # output folder name under the batch's out dir; unique in the manifest
    video: str  # video file or frame folder, read by the worker
    mask: str | None = None  # mask PNG on frame ``mask_frame`` (exclusive with ``clicks``)
    mask_frame: int = 0
    clicks: str | None = None  # clicks JSON file (exclusive with ``mask``)
    where: str = ""  # "manifest.csv line 3", for messages

    def to_dict(self) -> dict[str, Any]:
        return {"id": self.id, "video": self.video, "mask": self.mask, "mask_frame": self.mask_frame,
                "clicks": self.clicks, "where": self.where}


def read_manifest(path: str | os.PathLike[str]) -> list[BatchItem]:
    """Read a CSV (header row) or JSON-lines manifest; return its rows in order, checked.

    The format follows the suffix (``.csv``; ``.jsonl``, ``.ndjson``, ``.json``), else the first
    character (``{`` means JSON lines). Raises :class:`InputError` naming the file, the line and
    what was expected for any bad row, unknown column or duplicate id.
    """
    p = Path(path)
    if not p.is_file():
        raise InputError(f"manifest '{p}' does not exist or is not a file; expected a CSV or JSON-lines file")
    try:
        text = p.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(f"manifest '{p}' cannot be read as UTF-8 text ({exc})") from exc
    suffix = p.suffix.lower()
    if suffix in (".jsonl", ".ndjson", ".json"):
        json_lines = True
    elif suffix == ".csv":
        json_lines = False
    else:
        json_lines = text.lstrip().startswith("{")
    rows = _json_rows(p, text) if json_lines else _csv_rows(p, text)
    if not rows:
        raise InputError(f"manifest '{p}' has no rows; expected one video and its annotation per row")
    return _check_rows(p, rows)


def _csv_rows(p: Path, text: str) -> list[tuple[int, dict[str, Any]]]:
    reader = csv.DictReader(io.StringIO(text))
    header = [h.strip() for h in (reader.fieldnames or [])]
    if not header:
        raise InputError(f"manifest '{p}' line 1: expected a header row naming columns ({', '.join(COLUMNS)})")
    unknown = [h for h in header if h not in COLUMNS]
    if unknown:
        raise InputError(f"manifest '{p}' line 1: unknown column(s) {', '.join(map(repr, unknown))}; "
                         f"expected some of {', '.join(COLUMNS)}")
    if "video" not in header:
        raise InputError(f"manifest '{p}' line 1: no 'video' column; expected a header like video,mask,mask_frame")
    reader.fieldnames = header
    rows = []
    for rec in reader:
        line = reader.line_num
        if None in rec:
            raise InputError(f"manifest '{p}' line {line}: more fields than the {len(header)} header columns")
        values = {k: (v.strip() if isinstance(v, str) else v) for k, v in rec.items()}
        if not any(values.values()):
            continue  # a blank line
        rows.append((line, {k: v for k, v in values.items() if v not in (None, "")}))
    return rows


def _json_rows(p: Path, text: str) -> list[tuple[int, dict[str, Any]]]:
    rows = []
    for line, raw in enumerate(text.splitlines(), start=1):
        s = raw.strip()
        if not s or s.startswith("#"):
            continue
        try:
            rec = json.loads(s)
        except json.JSONDecodeError as exc:
            raise InputError(f"manifest '{p}' line {line}: not valid JSON ({exc.msg}); expected one "
                             'object per line like {"video": "...", "mask": "..."}') from None
        if not isinstance(rec, dict):
            raise InputError(f"manifest '{p}' line {line}: expected a JSON object, got {type(rec).__name__}")
        unknown = [k for k in rec if k not in COLUMNS]
        if unknown:
            raise InputError(f"manifest '{p}' line {line}: unknown key(s) {', '.join(map(repr, unknown))}; "
                             f"expected some of {', '.join(COLUMNS)}")
        rows.append((line, {k: v for k, v in rec.items() if v is not None and v != ""}))
    return rows


def _path(p: Path, where: str, key: str, value: Any) -> str:
    if not isinstance(value, str):
        raise InputError(f"{where}: '{key}' must be a path string, got {type(value).__name__} {value!r}")
    if _URL.match(value):
        raise InputError(f"{where}: '{key}' is a URL ({value}); expected a file system path (mount object "
                         "stores, e.g. with s3fs or gcsfuse, at the same path on every worker)")
    q = Path(os.path.expanduser(value))
    return str(q if q.is_absolute() else (p.parent / q).absolute())


def _derived_id(video: str) -> str:
    # From the name alone (the driver may not see the file): "clip.mp4" -> "clip", "bear" -> "bear".
    name = Path(video.rstrip("/\\")).name
    stem = Path(name).stem if Path(name).suffix.lower() in VIDEO_EXTENSIONS else name
    clean = re.sub(r"[^A-Za-z0-9._-]+", "_", stem).lstrip(".") or "video"
    return clean if clean not in RESERVED_IDS else f"{clean}_"


def _check_rows(p: Path, rows: list[tuple[int, dict[str, Any]]]) -> list[BatchItem]:
    checked: list[tuple[str, dict[str, Any]]] = []
    explicit: dict[str, str] = {}
    for line, rec in rows:
        where = f"manifest '{p}' line {line}"
        if "video" not in rec:
            raise InputError(f"{where}: no video; expected a 'video' path on every row")
        has_mask, has_clicks = "mask" in rec, "clicks" in rec
        if has_mask == has_clicks:
            got = "both" if has_mask else "neither"
            raise InputError(f"{where}: expected a 'mask' (with 'mask_frame') or a 'clicks' file, got {got}")
        frame = rec.get("mask_frame", 0)
        if has_clicks and "mask_frame" in rec:
            raise InputError(f"{where}: 'mask_frame' goes with 'mask'; a clicks file names its own frames")
        try:
            ok = not isinstance(frame, bool) and float(frame) == int(frame) and int(frame) >= 0
        except (TypeError, ValueError):
            ok = False
        if not ok:
            raise InputError(f"{where}: 'mask_frame' is {frame!r}; expected a frame index 0, 1, 2, ...")
        out = {"video": _path(p, where, "video", rec["video"]), "mask_frame": int(frame),
               "mask": _path(p, where, "mask", rec["mask"]) if has_mask else None,
               "clicks": _path(p, where, "clicks", rec["clicks"]) if has_clicks else None,
               "id": None}
        if "id" in rec:
            vid = str(rec["id"])
            if not _ID_OK.match(vid) or vid in RESERVED_IDS:
                raise InputError(f"{where}: id {vid!r} cannot be a folder name; expected letters, digits, "
                                 "'.', '_' or '-', not starting with '.'" +
                                 (f", and not {vid!r} (reserved)" if vid in RESERVED_IDS else ""))
            if vid in explicit:
                raise InputError(f"{where}: id {vid!r} is used again (first at {explicit[vid]}); ids must be unique")
            explicit[vid] = f"line {line}"
            out["id"] = vid
        checked.append((where, out))
    used = set(explicit)
    items = []
    for where, out in checked:
        vid = out["id"]
        if vid is None:  # derived ids never take an explicit one; later twins get -2, -3, ...
            base = _derived_id(out["video"])
            vid, n = base, 1
            while vid in used:
                n += 1
                vid = f"{base}-{n}"
            used.add(vid)
        items.append(BatchItem(id=vid, video=out["video"], mask=out["mask"], mask_frame=out["mask_frame"],
                               clicks=out["clicks"], where=where))
    return items
