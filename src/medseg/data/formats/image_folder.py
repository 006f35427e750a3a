"""2D image folders: PNG/TIFF/JPEG/BMP images + lossless masks matched by file name.

Layout::

    path/
      images/  a.png  b.tif  c.jpg        grayscale, 16-bit or RGB
      masks/   a.png  b.png  c.png        class index per pixel (0/255 binary masks map to 0/1, recorded
                                          in dataset.json as mask_values [0, 255])

A mask matches the image of the same stem (``mask_suffix`` strips e.g. ``_mask``). Masks must be
lossless (PNG, TIFF, BMP): a JPEG mask is refused, since compression invents label values.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np

from medseg.core.case import Case
from medseg.data.formats.common import default_classes, parse_names
from medseg.data.formats.registry import FORMATS, FormatError, Imported
from medseg.data.store import DatasetInfo, make_classes
from medseg.io import read_array, read_label
from medseg.io.labels import ValueConvention

IMAGE_SUFFIXES = {".png", ".tif", ".tiff", ".jpg", ".jpeg", ".bmp"}
MASK_SUFFIXES = {".png", ".tif", ".tiff", ".bmp"}


def _read(path: Path) -> np.ndarray:
    """A 2D picture, ``(H, W)`` or ``(H, W, 3)``; a multi-page file is refused (this format is 2D)."""
    arr, _, src = read_array(path)
    if len(src.shape) != 2:
        raise FormatError(
            f"the file holds {src.shape[0]} pages (a volume)", where=path, fix="split the pages into one file each, or import volumes with the nifti format"
        )
    return arr


def _read_mask(path: Path, stored: ValueConvention | None = None) -> np.ndarray:
    """Class indices ``(H, W)``; 0/255 (and 16-bit 0/65535) binary masks become 0/1."""
    lab, _, src = read_label(path)
    if len(src.shape) != 2:
        raise FormatError(f"the mask holds {src.shape[0]} pages (a volume)", where=path, fix="save one 2D mask per image")
    if stored is not None:
        stored.add(src.values, lab)
    return lab


@FORMATS.register("images", help="2D image folders (PNG/TIFF/JPEG, grayscale or RGB) + lossless mask folder matched by name")
def read_image_folder(
    path: Path,
    *,
    images_dir: str = "images",
    masks_dir: str = "masks",
    mask_suffix: str = "",
    classes: str | list[str] | None = None,
    grayscale: bool = False,
    spacing: float = 1.0,
    name: str = "",
) -> Imported:
    """Read an image folder and its mask folder.

    Args:
        path: the folder holding ``images_dir`` and ``masks_dir``.
        images_dir: sub-folder of images.
        masks_dir: sub-folder of masks (missing: unlabelled cases).
        mask_suffix: suffix of mask stems, e.g. ``_mask`` for ``a_mask.png``.
        classes: class names, background first (default: background, class_1, …).
        grayscale: convert RGB images to one channel.
        spacing: pixel size in mm.
        name: data set name (default: the folder's name).
    """
    path = Path(path)
    img_dir, mask_dir = path / images_dir, path / masks_dir
    if not img_dir.is_dir():
        raise FormatError(f"no {images_dir}/ folder", where=path, fix=f"put the images in {img_dir} or pass --option images_dir=NAME")
    images = {p.stem: p for p in sorted(img_dir.iterdir()) if p.suffix.lower() in IMAGE_SUFFIXES}
    masks: dict[str, Path] = {}
    if mask_dir.is_dir():
        for p in sorted(mask_dir.iterdir()):
            if p.name.startswith("."):
                continue
            stem = p.stem[: -len(mask_suffix)] if mask_suffix and p.stem.endswith(mask_suffix) else p.stem
            if p.suffix.lower() in (".jpg", ".jpeg"):
                raise FormatError("mask is a JPEG (lossy compression changes label values)", where=p, fix="save masks as PNG or TIFF")
            if p.suffix.lower() not in MASK_SUFFIXES:
                continue
            if stem not in images:
                raise FormatError("mask matches no image", where=p, fix=f"give {img_dir}/{stem}.png or remove the mask")
            masks[stem] = p
    if not images:
        raise FormatError("no images found", where=img_dir, fix="PNG, TIFF, JPEG or BMP files are read")
    first = _read(next(iter(images.values())))
    n_chan = 1 if first.ndim == 2 or grayscale else 3
    max_label, top_mask = 0, mask_dir
    stored = ValueConvention()
    for p in masks.values():
        top = int(_read_mask(p, stored).max(initial=0))
        if top > max_label:
            max_label, top_mask = top, p
    names = default_classes(max_label + 1, parse_names(classes), where=top_mask)
    info = DatasetInfo(
        name=name or path.name,
        description=f"Imported from image folders {images_dir}/ + {masks_dir}/",
        dims=2,
        modalities=["image"] if n_chan == 1 else ["red", "green", "blue"],
        classes=make_classes(names),
        source={"format": "images", "path": str(path), "spacing": spacing},
        mask_values=stored.values,
    )

    def cases() -> Iterator[Case]:
        for stem, p in images.items():
            arr = _read(p)
            if arr.ndim == 3:
                arr = arr[..., :3]
                if grayscale:
                    arr = arr.astype(np.float32) @ np.array([0.299, 0.587, 0.114], dtype=np.float32)
            if (arr.ndim == 2) != (n_chan == 1):
                raise FormatError(
                    f"image is {'grayscale' if arr.ndim == 2 else 'RGB'} but the first image is {'grayscale' if n_chan == 1 else 'RGB'}",
                    where=p,
                    fix="convert all images alike, or pass --option grayscale=true",
                )
            img = arr[None] if arr.ndim == 2 else np.moveaxis(arr, -1, 0)
            lab = None
            if stem in masks:
                lab = _read_mask(masks[stem])
                if lab.shape != img.shape[1:]:
                    raise FormatError(f"mask is {lab.shape} but the image is {img.shape[1:]}", where=masks[stem], fix="masks must have the image's size")
            yield Case.from_spacing(img.astype(np.float32), lab, spacing=(spacing, spacing), case_id=stem, meta={"source": str(p)})

    return Imported(info=info, cases=cases())


FORMATS.alias("image_folder", "images")  # the name the README and tutorials use
