"""PNG, TIFF, BMP and JPEG pictures with Pillow: ``(rows, columns)`` arrays, one volume per multi-page file.

Grey images keep their bit depth (8, 16, 32-bit integer, 32-bit float); colour images become
``(H, W, 3)`` RGB (alpha dropped, palettes expanded). A multi-page TIFF is a volume ``(pages, H, W)``
when every page has one size and mode, and is refused otherwise: never page 1 silently.
Masks keep palette indices (a palette PNG stores class indices) and must be single-channel.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from medseg.core.atomic import atomic_path
from medseg.core.errors import FormatError

#: suffix → output format name (a JPEG's mask is written as PNG: masks must be lossless)
RASTER_SUFFIXES = {".png": "png", ".tif": "tiff", ".tiff": "tiff", ".bmp": "bmp", ".jpg": "png", ".jpeg": "png"}
#: output format name → file suffix written
RASTER_WRITE_SUFFIX = {"png": ".png", "tiff": ".tif", "bmp": ".bmp"}
_PIL_FORMAT = {"png": "PNG", "tiff": "TIFF", "bmp": "BMP"}
_COLOUR = ("RGBA", "P", "CMYK", "YCbCr", "RGBX", "HSV", "LAB", "PA")


def _page(im: object, *, label: bool) -> np.ndarray:
    mode = im.mode  # type: ignore[attr-defined]
    if label and mode in ("P", "PA"):
        return np.asarray(im.convert("P") if mode == "PA" else im)  # type: ignore[attr-defined]
    if mode in _COLOUR:
        im = im.convert("RGB")  # type: ignore[attr-defined]
    elif mode in ("LA", "1"):
        im = im.convert("L")  # type: ignore[attr-defined]
    arr = np.asarray(im)
    return arr.astype(np.uint8) if arr.dtype == bool else arr


def read_raster(path: str | Path, *, label: bool = False) -> tuple[np.ndarray, int]:
    """Read a picture.

    Args:
        path: a PNG, TIFF, BMP or JPEG file.
        label: read a mask: palette indices kept, a colour image refused.

    Returns:
        ``(array, pages)``: ``(H, W)`` or ``(H, W, 3)``; ``(D, H, W[, 3])`` for a multi-page file.

    Raises:
        FormatError: unreadable file; pages of different size or mode; a colour mask.
    """
    from PIL import Image, UnidentifiedImageError

    path = Path(path)
    try:
        with Image.open(path) as im:
            n = int(getattr(im, "n_frames", 1) or 1)
            pages = []
            for i in range(n):
                im.seek(i)
                pages.append(_page(im, label=label))
    except (OSError, UnidentifiedImageError, ValueError, SyntaxError) as e:
        raise FormatError(
            f"cannot read image ({str(e).splitlines()[0] if str(e) else type(e).__name__})", where=path, fix="re-save it as PNG or TIFF"
        ) from None
    if n > 1 and len({(p.shape, p.dtype.str) for p in pages}) > 1:
        raise FormatError(
            f"the {n} pages differ in size or pixel type ({', '.join(sorted({f'{p.shape}' for p in pages}))})",
            where=path,
            fix="save one image per file, or pages of one size as a volume",
        )
    arr = pages[0] if n == 1 else np.stack(pages)
    if label and arr.ndim == (4 if n > 1 else 3):
        if not (arr == arr[..., :1]).all():
            raise FormatError("mask is a colour image", where=path, fix="store class indices in a single-channel (grayscale/palette) PNG")
        arr = arr[..., 0]
    return arr, n


def write_raster(mask: np.ndarray, path: str | Path, fmt: str) -> Path:
    """Write an integer ``(H, W)`` mask (or ``(D, H, W)`` pages for TIFF), atomically.

    8-bit when every value is below 256, else 16-bit (PNG and TIFF only).
    """
    from PIL import Image

    path = Path(path)
    top = int(mask.max(initial=0)) if mask.size else 0
    dtype = np.uint8 if top < 256 else np.uint16
    if dtype == np.uint16 and fmt == "bmp":
        raise FormatError(f"the mask holds values up to {top}, more than a BMP holds", where=path, fix="use --format png or tiff")
    pages = [mask] if mask.ndim == 2 else list(mask)
    if len(pages) > 1 and fmt != "tiff":
        raise FormatError(f"a {fmt.upper()} file holds one 2D picture, the mask has {len(pages)} slices", where=path, fix="use --format tiff or nifti")
    images = [Image.fromarray(np.ascontiguousarray(p, dtype=dtype)) for p in pages]
    with atomic_path(path) as tmp:
        images[0].save(tmp, format=_PIL_FORMAT[fmt], save_all=len(images) > 1, append_images=images[1:])
    return path


def write_overlay(image: np.ndarray, label: np.ndarray, colors: list[tuple[int, int, int]], path: str | Path) -> Path:
    """An overlay PNG of a 2D image (or of the slice with most foreground of a volume) and its mask."""
    from PIL import Image

    from medseg.viz.overlay import best_slice, overlay

    multi = label.ndim == image.ndim + 1
    if image.ndim == 3:
        z = best_slice(label, 0, multi)
        image, label = image[z], (label[:, z] if multi else label[z])
    with atomic_path(path) as tmp:
        Image.fromarray(overlay(image, label, colors)).save(tmp, format="PNG")
    return Path(path)
