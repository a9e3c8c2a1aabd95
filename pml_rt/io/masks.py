"""Reading and writing object-id masks (DAVIS palette PNGs, 0/255 PNGs, arrays).

A mask is a uint8 array (H, W) of object ids: 0 is background, 1..255 are objects the user
named. DAVIS stores them as indexed ("P") PNGs whose palette indices are the ids; single
object datasets (DAVIS 2016) store 0/255 grayscale PNGs, which read as ids {0, 1}.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from ..errors import InputError
from .outputs import atomic_write_path


def _voc_palette(n: int = 256) -> np.ndarray:
    """The PASCAL VOC colour map (used by DAVIS): bits of the id spread over R, G, B."""
    pal = np.zeros((n, 3), dtype=np.uint8)
    for i in range(n):
        c, r, g, b = i, 0, 0, 0
        for j in range(8):
            r |= ((c >> 0) & 1) << (7 - j)
            g |= ((c >> 1) & 1) << (7 - j)
            b |= ((c >> 2) & 1) << (7 - j)
            c >>= 3
        pal[i] = (r, g, b)
    return pal


#: uint8 (256, 3): colour of each object id in DAVIS palette PNGs (0 black, 1 (128, 0, 0), ...).
DAVIS_PALETTE: np.ndarray = _voc_palette()
DAVIS_PALETTE.flags.writeable = False


def _from_image(im: Image.Image, label: str) -> np.ndarray:
    """Object ids from a PIL image, by its mode (see :func:`read_mask`)."""
    mode = im.mode
    if mode == "P":
        return np.asarray(im, dtype=np.uint8)  # the palette indices are the ids
    if mode == "1":
        return np.asarray(im, dtype=np.uint8)
    if mode in ("L", "LA", "I", "I;16", "I;16B", "I;16L", "I;16N", "F"):
        arr = np.asarray(im.getchannel(0) if mode == "LA" else im)
        return _grey_to_ids(arr)  # range and integer checks follow in _to_ids
    if mode in ("RGB", "RGBA"):
        rgb = np.asarray(im.convert("RGB"), dtype=np.uint8)
        if np.array_equal(rgb[..., 0], rgb[..., 1]) and np.array_equal(rgb[..., 0], rgb[..., 2]):
            return _grey_to_ids(rgb[..., 0])  # grey saved as RGB
        ids = _davis_colours_to_ids(rgb)
        if ids is not None:
            return ids
        raise InputError(
            f"{label} is a colour ({mode}) image whose colours are not DAVIS palette colours, so "
            "object ids are ambiguous; save the mask as an indexed (palette, mode 'P') PNG whose "
            "indices are the ids, or as a grayscale PNG (0 = background, 255 or 1..255 = ids)"
        )
    raise InputError(
        f"{label} has image mode {mode!r}; expected a palette ('P') or grayscale ('L'/'1') PNG"
    )


def _grey_to_ids(arr: np.ndarray) -> np.ndarray:
    """0/255 masks -> {0, 1}; any other set of values is kept as ids (checked later)."""
    values = np.unique(arr)
    if np.all((values == 0) | (values == 255)):
        return (arr != 0).astype(np.uint8)
    return arr


def _davis_colours_to_ids(rgb: np.ndarray) -> np.ndarray | None:
    """Ids of an RGB mask drawn in exactly the DAVIS palette colours, else None."""
    code = (rgb[..., 0].astype(np.int32) << 16) | (rgb[..., 1].astype(np.int32) << 8) | rgb[..., 2]
    pal = DAVIS_PALETTE.astype(np.int32)
    pal_code = (pal[:, 0] << 16) | (pal[:, 1] << 8) | pal[:, 2]  # all 256 codes are distinct
    order = np.argsort(pal_code)
    colours, inverse = np.unique(code, return_inverse=True)
    pos = np.searchsorted(pal_code[order], colours)
    pos = np.minimum(pos, len(order) - 1)
    if not np.all(pal_code[order][pos] == colours):
        return None
    ids_of_colour = order[pos].astype(np.uint8)
    return ids_of_colour[inverse.reshape(code.shape)]


def read_mask(
    source: str | os.PathLike[str] | np.ndarray | Image.Image | Any,
    expected_size: tuple[int, int] | None = None,
    name: str = "mask",
    allow_empty: bool = False,
) -> np.ndarray:
    """Read a mask of object ids; return a new uint8 array (H, W).

    ``source`` is a path to a PNG or other image file, a PIL image, or an array (H, W) of
    integers (bool and integer-valued floats are accepted). Palette ("P") images give their
    indices as ids; grayscale 0/255 images give ids {0, 1}; grayscale images with other values
    keep the values as ids; RGB images are accepted only when grey or drawn in exactly the
    DAVIS palette colours. ``expected_size`` is (H, W), usually the video's frame size.
    ``name`` says what the mask is in messages; file paths are named too. Unless
    ``allow_empty`` (ground truth may be empty), a mask with no pixel of id 1..255 is an error.
    Every problem raises :class:`InputError`.
    """
    label = name
    if isinstance(source, (str, os.PathLike)):
        path = Path(source)
        label = f"{name} '{path}'"
        if not path.exists():
            raise InputError(f"{label} does not exist")
        if path.is_dir():
            raise InputError(f"{label} is a folder; expected an image file (PNG)")
        try:
            with Image.open(path) as im:
                im.load()
                arr = _from_image(im, label)
        except InputError:
            raise
        except Exception as exc:  # Pillow raises many types for unreadable files
            raise InputError(f"{label} cannot be read as an image ({exc})") from exc
    elif isinstance(source, Image.Image):
        arr = _from_image(source, label)
    else:
        try:
            arr = np.asarray(source)
        except Exception as exc:
            raise InputError(f"{label} cannot be turned into an array ({exc})") from exc
    arr = _to_ids(arr, label)
    if expected_size is not None:
        want = (int(expected_size[0]), int(expected_size[1]))
        if arr.shape != want:
            raise InputError(
                f"{label} has size (H, W) = {arr.shape} but the frames are (H, W) = {want}; "
                "expected a mask of the frame size"
            )
    if not allow_empty and not arr.any():
        raise InputError(
            f"{label} has no object pixels; expected at least one pixel with id 1..255"
        )
    return arr


def _to_ids(arr: np.ndarray, label: str) -> np.ndarray:
    """Check an array of ids (ndim, dtype, range) and return it as a new uint8 array."""
    if arr.ndim != 2:
        hint = " (a colour image? pass a (H, W) array of ids)" if arr.ndim == 3 else ""
        raise InputError(f"{label} has shape {arr.shape}; expected a 2-D array (H, W) of ids{hint}")
    if arr.size == 0:
        raise InputError(f"{label} is empty (shape {arr.shape}); expected (H, W) with H, W > 0")
    if arr.dtype == np.bool_:
        return arr.astype(np.uint8)
    if np.issubdtype(arr.dtype, np.floating):
        if not np.all(np.isfinite(arr)) or not np.all(arr == np.round(arr)):
            raise InputError(
                f"{label} has non-integer values (dtype {arr.dtype}); expected integer object "
                "ids 0..255"
            )
    elif not np.issubdtype(arr.dtype, np.integer):
        raise InputError(f"{label} has dtype {arr.dtype}; expected integer object ids 0..255")
    if arr.dtype != np.uint8:
        lo, hi = arr.min(), arr.max()
        if lo < 0 or hi > 255:
            raise InputError(
                f"{label} has ids from {lo:g} to {hi:g}; expected ids 0..255 (0 = background)"
            )
    return np.array(arr, dtype=np.uint8, copy=True, order="C")


def palette_image(mask: np.ndarray) -> Image.Image:
    """Return an indexed (mode "P") PIL image of ``mask`` (uint8 (H, W)) with DAVIS_PALETTE."""
    arr = _to_ids(np.asarray(mask), "mask")
    im = Image.fromarray(arr)  # mode "L"
    im.putpalette(DAVIS_PALETTE.tobytes(), rawmode="RGB")  # turns it into mode "P"
    return im


def write_palette_png(path: str | os.PathLike[str], mask: np.ndarray) -> Path:
    """Write ``mask`` (uint8 (H, W), ids 0..255) as a DAVIS palette PNG, atomically.

    Returns the path written. Readers that take palette indices as ids (DAVIS tools,
    :func:`read_mask`) get the ids back exactly.
    """
    im = palette_image(mask)
    final = Path(path)
    with atomic_write_path(final) as tmp:
        im.save(tmp, format="PNG")
    return final
