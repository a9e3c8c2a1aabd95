"""Atomic writes of output files and folders, and writing mask sequences.

A run that fails or is interrupted half way must not leave a half-written mask folder or a
truncated video where a good one was: everything is written under a temporary name in the
same folder (so the final move is a same-filesystem rename) and moved into place on success.
"""

from __future__ import annotations

import os
import secrets
import shutil
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import numpy as np

from ..errors import InputError


def _temp_sibling(final: Path, suffix: str = "") -> Path:
    """A fresh hidden name next to ``final`` (same folder, so os.replace is a rename)."""
    return final.parent / f".{final.name}.tmp-{secrets.token_hex(4)}{suffix}"


@contextmanager
def atomic_write_path(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; move it onto ``path`` when the block succeeds.

    The temporary name keeps ``path``'s suffix, so writers that pick a format from the
    extension (PyAV, Pillow) still work. The file does not exist yet: the writer creates it
    (with the usual permissions, unlike ``mkstemp``'s 0600). On an exception the temporary
    file is removed and ``path`` is left as it was.
    """
    final = Path(path)
    if final.is_dir():
        raise InputError(f"cannot write file {final}: a folder of that name exists")
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = _temp_sibling(final, final.suffix)
    try:
        yield tmp
        if not tmp.exists():
            raise InputError(f"nothing was written for {final} (temporary file {tmp} missing)")
        os.replace(tmp, final)
    except BaseException:
        try:
            tmp.unlink()
        except FileNotFoundError:
            pass
        raise


def _merge_into(src: Path, dst: Path) -> None:
    """Move every entry of folder ``src`` into folder ``dst``, replacing same-named files."""
    for entry in sorted(src.iterdir()):
        target = dst / entry.name
        if entry.is_dir() and not entry.is_symlink() and target.is_dir():
            _merge_into(entry, target)
            entry.rmdir()
        else:
            os.replace(entry, target)


@contextmanager
def atomic_output_dir(final_dir: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary folder next to ``final_dir``; move its contents there on success.

    The temporary folder is hidden (``.<name>.tmp-XXXXXXXX``) in ``final_dir``'s parent. On
    success: where ``final_dir`` is absent the folder is renamed into place in one step;
    otherwise each written file replaces its namesake with ``os.replace`` and other files
    already in ``final_dir`` are kept. On an exception the temporary folder is removed and
    ``final_dir`` is left untouched.
    """
    final = Path(final_dir)
    if final.exists() and not final.is_dir():
        raise InputError(f"output folder {final} exists and is not a folder")
    final.parent.mkdir(parents=True, exist_ok=True)
    while True:
        tmp = _temp_sibling(final)
        try:
            tmp.mkdir()  # mode 0777 minus umask, like any folder the user makes
            break
        except FileExistsError:  # pragma: no cover - 32 random bits collided
            continue
    try:
        yield tmp
        moved = False
        if not final.exists():
            try:
                os.rename(tmp, final)
                moved = True
            except OSError:  # created meanwhile: fall back to merging
                moved = False
        if not moved:
            final.mkdir(exist_ok=True)
            _merge_into(tmp, final)
            tmp.rmdir()
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def _check_frame_names(frame_names: Sequence[str]) -> list[str]:
    names = [str(n) for n in frame_names]
    seen: set[str] = set()
    for i, n in enumerate(names):
        if not n or n in (".", "..") or "/" in n or "\\" in n or n.startswith("."):
            raise InputError(
                f"frame name {n!r} (frame {i}) cannot be used as a file name; expected a plain "
                "stem such as '00000'"
            )
        if n in seen:
            raise InputError(f"frame name {n!r} appears twice (frame {i}); names must be unique")
        seen.add(n)
    return names


def write_masks(
    out_dir: str | os.PathLike[str],
    masks: np.ndarray | Iterable[np.ndarray],
    frame_names: Sequence[str],
    progress: bool = True,
) -> list[Path]:
    """Write one DAVIS palette PNG ``<out_dir>/<name>.png`` per frame; return the final paths.

    ``masks`` is a uint8 array (T, H, W) of object ids or an iterable (a generator is fine)
    of (H, W) integer arrays with ids 0..255. The files appear in ``out_dir`` only when all
    of them were written (see :func:`atomic_output_dir`); a mask count that differs from
    ``len(frame_names)`` is an :class:`InputError` and leaves ``out_dir`` untouched. The
    progress bar (tqdm, on stderr) shows only where ``progress`` is true and stderr is a tty.
    """
    from tqdm import tqdm

    from .masks import palette_image, read_mask  # masks imports this module: import late

    names = _check_frame_names(frame_names)
    if isinstance(masks, np.ndarray) and masks.ndim != 3:
        raise InputError(
            f"masks must be an array (T, H, W) or an iterable of (H, W) arrays; got an array "
            f"of shape {masks.shape}"
        )
    final = Path(out_dir)
    written: list[Path] = []
    with atomic_output_dir(final) as tmp:
        count = 0
        bar = tqdm(total=len(names), desc=f"writing masks to {final.name}", unit="frame",
                   disable=None if progress else True, leave=False)
        try:
            for i, m in enumerate(masks):
                if i >= len(names):
                    raise InputError(
                        f"got more masks than frame names ({len(names)}); pass one name per mask"
                    )
                arr = read_mask(m, name=f"mask for frame {i} ({names[i]!r})", allow_empty=True)
                palette_image(arr).save(tmp / f"{names[i]}.png", format="PNG")
                written.append(final / f"{names[i]}.png")
                count += 1
                bar.update(1)
        finally:
            bar.close()
        if count != len(names):
            raise InputError(
                f"got {count} masks for {len(names)} frame names; pass one mask per frame"
            )
    return written
