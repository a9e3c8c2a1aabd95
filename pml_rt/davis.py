"""Read a DAVIS-format dataset root: sequence lists, frames and ground-truth masks.

Layout (as DAVIS ships it)::

    ROOT/JPEGImages/<resolution>/<seq>/00000.jpg ...
    ROOT/Annotations/<resolution>/<seq>/00000.png ...
    ROOT/ImageSets/{train,val}.txt            (one sequence per line; DAVIS 2016 style here)
    ROOT/ImageSets/2017/{train,val}.txt       (DAVIS 2017 style, also accepted)

Masks come back as uint8 object ids (0 = background): DAVIS 2016's 0/255 grayscale PNGs
become {0, 1}; palette (mode "P") PNGs give their palette indices, which are the object ids.
Images are read with PIL; nothing here depends on the rest of the package's I/O.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
from PIL import Image

from .errors import InputError

__all__ = ["DavisDataset", "default_data_root", "read_davis_mask"]

_FRAME_EXTS = (".jpg", ".jpeg", ".png")
_MASK_EXTS = (".png",)


def default_data_root() -> Path:
    """Folder holding the shared development data: ``$PML_RT_DATA`` if set, else ``<repo>/../shared/data``.

    ``<repo>`` is the folder above the ``pml_rt`` package. The path may not exist (a new
    user's machine has no data); callers check.
    """
    env = os.environ.get("PML_RT_DATA")
    if env:
        return Path(env).expanduser()
    return Path(__file__).resolve().parent.parent.parent / "shared" / "data"


def read_davis_mask(path: str | os.PathLike[str]) -> np.ndarray:
    """Read one DAVIS annotation PNG as an (H, W) uint8 id map (0 = background).

    Palette PNGs give their indices; grayscale PNGs holding only 0 and 255 (DAVIS 2016) give
    {0, 1}; other grayscale PNGs are taken as ids written directly as gray levels.
    """
    path = Path(path)
    try:
        with Image.open(path) as im:
            mode = im.mode
            if mode in ("P", "L"):
                arr = np.array(im)
            elif mode == "1":
                arr = np.array(im).astype(np.uint8)
            elif mode in ("I", "I;16", "I;16B", "I;16L"):
                arr = np.array(im)
                if arr.size and (arr.min() < 0 or arr.max() > 255):
                    raise InputError(f"{path}: 16/32-bit mask holds values outside 0..255; expected object ids 0..255")
                arr = arr.astype(np.uint8)
                mode = "L"
            elif mode in ("RGB", "RGBA", "LA"):
                rgb = np.array(im.convert("RGB"))
                if not ((rgb[..., 0] == rgb[..., 1]).all() and (rgb[..., 1] == rgb[..., 2]).all()):
                    raise InputError(
                        f"{path}: colour ({mode}) mask; expected a palette (mode P) PNG whose "
                        "indices are object ids, or a grayscale one. Re-save it as a palette PNG"
                    )
                arr = rgb[..., 0]
                mode = "L"
            else:
                raise InputError(f"{path}: unsupported mask image mode {mode!r}; expected a palette (P) or grayscale (L) PNG")
    except InputError:
        raise
    except (OSError, ValueError) as exc:
        raise InputError(f"{path}: cannot read the mask ({exc}); expected a PNG") from exc
    arr = np.ascontiguousarray(arr, dtype=np.uint8)
    if mode == "L":
        values = np.unique(arr)
        if np.isin(values, (0, 255)).all():
            arr = (arr > 0).astype(np.uint8)  # DAVIS 2016: 255 = the one object
    return arr


class DavisDataset:
    """A DAVIS-format root (``JPEGImages/``, ``Annotations/``, ``ImageSets/``) at one resolution.

    Raises :class:`~pml_rt.errors.InputError` where the root or the resolution folder is
    missing, naming the path and the ``--davis ROOT`` option that points elsewhere.
    """

    def __init__(self, root: str | os.PathLike[str], resolution: str = "480p") -> None:
        self.root = Path(root).expanduser()
        self.resolution = resolution
        if not self.root.is_dir():
            raise InputError(
                f"DAVIS root {self.root} does not exist; pass --davis ROOT with a folder holding "
                f"JPEGImages/{resolution}/ and Annotations/{resolution}/ "
                "(for example ../shared/data/davis2016-dev)"
            )
        self.images_root = self.root / "JPEGImages" / resolution
        self.annotations_root = self.root / "Annotations" / resolution
        if not self.images_root.is_dir() and not self.annotations_root.is_dir():
            found = sorted(
                {p.name for sub in ("JPEGImages", "Annotations") if (self.root / sub).is_dir() for p in (self.root / sub).iterdir() if p.is_dir()}
            )
            hint = f"; resolutions found: {', '.join(found)}" if found else ""
            raise InputError(
                f"{self.root} has neither JPEGImages/{resolution}/ nor Annotations/{resolution}/; "
                f"pass --davis ROOT with a DAVIS-format folder{hint}"
            )

    def __repr__(self) -> str:
        return f"DavisDataset({str(self.root)!r}, resolution={self.resolution!r})"

    # -- sequence lists ----------------------------------------------------------------------

    def all_sequences(self) -> list[str]:
        """Sorted names of every sequence with a folder under JPEGImages/ or Annotations/."""
        names: set[str] = set()
        for d in (self.images_root, self.annotations_root):
            if d.is_dir():
                names.update(p.name for p in d.iterdir() if p.is_dir() and not p.name.startswith("."))
        return sorted(names)

    def splits(self) -> dict[str, Path]:
        """Split names found under ImageSets/ (``train``, ``val`` ...), each with its file.

        Where a name exists in several places, ``ImageSets/<name>.txt`` wins over
        ``ImageSets/2017/<name>.txt``, then ``ImageSets/2016/<name>.txt``, then the original
        DAVIS 2016 release's ``ImageSets/<resolution>/<name>.txt``.
        """
        out: dict[str, Path] = {}
        sets = self.root / "ImageSets"
        for d in (sets / self.resolution, sets / "2016", sets / "2017", sets):  # later ones win
            if d.is_dir():
                for f in sorted(d.glob("*.txt")):
                    out[f.stem] = f
        return out

    def sequences(self, split: str | None = None, sequences_file: str | os.PathLike[str] | None = None) -> list[str]:
        """Sequence names of a split (``"train"``, ``"val"``), of a text file, or all of them.

        ``sequences_file``: one sequence per line (blank lines and ``#`` comments skipped;
        DAVIS 2016's ``/JPEGImages/480p/<seq>/00000.jpg ...`` lines also work). Every listed
        sequence must exist in this root; an unknown one raises InputError listing the valid ones.
        """
        if split is not None and sequences_file is not None:
            raise InputError("pass either split or sequences_file, not both")
        if split is None and sequences_file is None:
            seqs = self.all_sequences()
            if not seqs:
                raise InputError(f"{self.images_root} and {self.annotations_root} hold no sequence folders")
            return seqs
        if split is not None:
            splits = self.splits()
            if split not in splits:
                valid = ", ".join(sorted(splits)) or "none"
                raise InputError(
                    f"unknown split {split!r} for {self.root}: no ImageSets/{split}.txt or "
                    f"ImageSets/2017/{split}.txt; splits found: {valid} (or pass a sequences file)"
                )
            path = splits[split]
        else:
            path = Path(sequences_file).expanduser()  # type: ignore[arg-type]
            if not path.is_file():
                raise InputError(f"sequences file {path} does not exist; expected a text file with one sequence per line")
        seqs = _parse_sequence_list(path)
        if not seqs:
            raise InputError(f"{path} lists no sequences; expected one sequence name per line")
        for s in seqs:
            self._check(s, source=path)
        return seqs

    # -- per-sequence paths ------------------------------------------------------------------

    def _check(self, seq: str, source: Path | None = None) -> None:
        valid = self.all_sequences()
        if seq not in valid:
            where = f" (listed in {source})" if source is not None else ""
            raise InputError(
                f"unknown sequence {seq!r}{where} in {self.root} at {self.resolution}; "
                f"valid sequences: {', '.join(valid) or 'none'}"
            )

    def frames_dir(self, seq: str) -> Path:
        """Folder of the sequence's frames, ``JPEGImages/<resolution>/<seq>``."""
        self._check(seq)
        d = self.images_root / seq
        if not d.is_dir():
            raise InputError(f"sequence {seq!r} has annotations but no frames: {d} is missing")
        return d

    def frame_paths(self, seq: str) -> list[Path]:
        """Sorted frame files (.jpg/.jpeg/.png) of the sequence."""
        d = self.frames_dir(seq)
        paths = sorted(p for p in d.iterdir() if p.suffix.lower() in _FRAME_EXTS and p.is_file())
        if not paths:
            raise InputError(f"{d} holds no frames; expected {', '.join(_FRAME_EXTS)} files")
        return paths

    def annotation_paths(self, seq: str) -> list[Path]:
        """Sorted annotation PNGs of the sequence (DAVIS test sets may have only the first)."""
        self._check(seq)
        d = self.annotations_root / seq
        paths = sorted(p for p in d.iterdir() if p.suffix.lower() in _MASK_EXTS and p.is_file()) if d.is_dir() else []
        if not paths:
            raise InputError(f"sequence {seq!r} has no annotations: expected PNG files in {d}")
        return paths

    # -- reading -----------------------------------------------------------------------------

    def annotations(self, seq: str, max_frames: int | None = None) -> np.ndarray:
        """Ground-truth id maps, (T, H, W) uint8 (0 = background); first ``max_frames`` only if given."""
        paths = _take(self.annotation_paths(seq), max_frames)
        masks = [read_davis_mask(p) for p in paths]
        _check_same_size(masks, paths, "mask")
        return np.stack(masks)

    def first_mask(self, seq: str) -> np.ndarray:
        """The first annotation (frame 0 in DAVIS), (H, W) uint8 ids: the semi-supervised prompt."""
        return read_davis_mask(self.annotation_paths(seq)[0])

    def frames(self, seq: str, max_frames: int | None = None) -> np.ndarray:
        """RGB frames, (T, H, W, 3) uint8; first ``max_frames`` only if given (quick tests)."""
        paths = _take(self.frame_paths(seq), max_frames)
        imgs = []
        for p in paths:
            try:
                with Image.open(p) as im:
                    imgs.append(np.asarray(im.convert("RGB"), dtype=np.uint8))
            except OSError as exc:
                raise InputError(f"{p}: cannot read the frame ({exc}); expected a JPEG or PNG image") from exc
        _check_same_size(imgs, paths, "frame")
        return np.stack(imgs)


def _parse_sequence_list(path: Path) -> list[str]:
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(f"cannot read sequences file {path}: {exc}") from exc
    seqs: list[str] = []
    for line in text.splitlines():
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        token = line.split()[0]
        if "/" in token:  # DAVIS 2016 style: /JPEGImages/480p/<seq>/00000.jpg
            parts = [p for p in token.split("/") if p]
            token = parts[-2] if len(parts) >= 2 else parts[-1]
        if token not in seqs:
            seqs.append(token)
    return seqs


def _take(paths: list[Path], max_frames: int | None) -> list[Path]:
    if max_frames is None:
        return paths
    if isinstance(max_frames, bool) or not isinstance(max_frames, (int, np.integer)) or max_frames < 1:
        raise InputError(f"max_frames must be a positive integer or None, got {max_frames!r}")
    return paths[: int(max_frames)]


def _check_same_size(arrays: list[np.ndarray], paths: list[Path], what: str) -> None:
    shape = arrays[0].shape[:2]
    for i, (a, p) in enumerate(zip(arrays, paths)):
        if a.shape[:2] != shape:
            raise InputError(
                f"{p}: {what} {i} is {a.shape[1]}x{a.shape[0]} but {paths[0].name} is "
                f"{shape[1]}x{shape[0]}; every {what} of a sequence must have one size"
            )
