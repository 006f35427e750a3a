"""NumPy stacks: ``*images.npy`` / ``*labels.npy`` per split, one 2D case per slice.

Layout::

    path/
      train_images.npy   N×H×W or N×C×H×W
      train_labels.npy   N×H×W integer class indices
      val_images.npy   val_labels.npy
      test_images.npy  test_labels.npy

The prefix before ``images.npy`` names the split (``train``, ``val``/``valid``/``validation``,
``test``), alone or at the end of a longer name (``task2_2D_4classtrainimages.npy``); the given
splits are kept as-is. A single unprefixed pair gets a patient-grouped split.
Arrays are memory-mapped, so only one slice is in memory at a time.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np

from medseg.core.case import Case
from medseg.data.formats.common import default_classes, parse_names
from medseg.data.formats.registry import FORMATS, FormatError, Imported
from medseg.data.store import DatasetInfo, make_classes
from medseg.io.labels import as_label

SPLIT_NAMES = {"train": "train", "training": "train", "tr": "train", "val": "val", "valid": "val", "validation": "val", "test": "test", "ts": "test", "": ""}


def split_of(prefix: str) -> str | None:
    """The split named by a file prefix: ``train_``, ``val``…, or a name ending in one (``task2_2D_4classtrain``)."""
    if prefix in SPLIT_NAMES:
        return SPLIT_NAMES[prefix]
    for word in sorted((w for w in SPLIT_NAMES if len(w) > 2), key=len, reverse=True):
        if prefix.endswith(word):
            return SPLIT_NAMES[word]
    return None


def _load(path: Path) -> np.ndarray:
    try:
        return np.load(path, mmap_mode="r", allow_pickle=False)
    except Exception as e:
        raise FormatError(f"cannot read .npy ({e})", where=path, fix="save it with numpy.save") from None


@FORMATS.register("numpy", help="NumPy stacks *images.npy / *labels.npy per split (N×H×W or N×C×H×W); splits kept")
def read_numpy(
    path: Path,
    classes: str | list[str] | None = None,
    modalities: str | list[str] | None = None,
    spacing: float = 1.0,
    name: str = "",
) -> Imported:
    """Read NumPy image/label stacks.

    Args:
        path: the folder holding the ``.npy`` files.
        classes: class names, background first (default: background, class_1, … up to the largest label).
        modalities: channel names (default ``image`` or ``channel_i``).
        spacing: pixel size in mm (NumPy files carry none).
        name: data set name (default: the folder's name).
    """
    path = Path(path)
    if not path.is_dir():
        raise FormatError("expected a folder of *images.npy / *labels.npy files", where=path, fix="give the folder")
    pairs: dict[str, tuple[Path, Path]] = {}
    for img in sorted(path.glob("*images.npy")):
        prefix = img.name[: -len("images.npy")].rstrip("_-. ").lower()
        split = split_of(prefix)
        if split is None:
            raise FormatError(
                f"cannot tell the split from the prefix {prefix!r}", where=img, fix="name files train_/val_/test_images.npy (or <name>train/val/testimages.npy)"
            )
        if split in pairs:
            raise FormatError(f"two {split} image stacks", where=img, fix=f"keep one, beside {pairs[split][0].name}")
        lab = img.with_name(img.name[: -len("images.npy")] + "labels.npy")
        if not lab.is_file():
            raise FormatError("no matching labels file", where=lab, fix="give a *labels.npy beside every *images.npy")
        pairs[split] = (img, lab)
    if not pairs:
        raise FormatError("no *images.npy files", where=path, fix="name them train_images.npy, train_labels.npy, …")
    if "" in pairs and len(pairs) > 1:
        raise FormatError("mixes unprefixed images.npy with per-split files", where=path, fix="keep one scheme")
    n_chan: int | None = None
    max_label = 0
    counts: dict[str, int] = {}
    for split, (img_p, lab_p) in pairs.items():
        img, lab = _load(img_p), _load(lab_p)
        if img.ndim not in (3, 4):
            raise FormatError(f"images have shape {img.shape}, expected N×H×W or N×C×H×W", where=img_p, fix="reshape the stack")
        if lab.ndim == 4 and lab.shape[1] == 1:
            lab = lab[:, 0]
        if lab.ndim != 3:
            raise FormatError(f"labels have shape {lab.shape}, expected N×H×W", where=lab_p, fix="store class indices, one slice per row")
        if img.shape[0] != lab.shape[0]:
            raise FormatError(
                f"{img.shape[0]} images but {lab.shape[0]} labels", where=lab_p, fix=f"the two stacks must have the same length (see {img_p.name})"
            )
        if img.shape[-2:] != lab.shape[-2:]:
            raise FormatError(f"image slices are {img.shape[-2:]} but label slices {lab.shape[-2:]}", where=lab_p, fix="store labels on the image grid")
        c = 1 if img.ndim == 3 else img.shape[1]
        if n_chan is not None and c != n_chan:
            raise FormatError(f"{c} channels here but {n_chan} in another split", where=img_p, fix="use the same channels in every split")
        n_chan = c
        if lab.size:
            max_label = max(max_label, int(as_label(np.asarray(lab.max()), lab_p)))
            if lab.dtype.kind == "f" or int(lab.min()) < 0:
                as_label(np.asarray(lab), lab_p)
        counts[split] = int(img.shape[0])
    assert n_chan is not None
    names = default_classes(max_label + 1, parse_names(classes), where=path)
    mods = parse_names(modalities) or (["image"] if n_chan == 1 else [f"channel_{i}" for i in range(n_chan)])
    if len(mods) != n_chan:
        raise FormatError(f"{len(mods)} modality names for {n_chan} channels", where="--option modalities", fix=f"give {n_chan} names")
    info = DatasetInfo(
        name=name or path.name,
        description="Imported from NumPy stacks",
        dims=2,
        modalities=mods,
        classes=make_classes(names),
        source={"format": "numpy", "path": str(path), "spacing": spacing},
    )
    splits = None
    if "" not in pairs:
        total = sum(counts.values())
        splits = {
            "seed": None,
            "ratios": [counts.get(s, 0) / total for s in ("train", "val", "test")],
            "given": True,
            **{s: [f"{s}_{i:05d}" for i in range(counts.get(s, 0))] for s in ("train", "val", "test")},
        }

    def cases() -> Iterator[Case]:
        for split, (img_p, lab_p) in pairs.items():
            img, lab = _load(img_p), _load(lab_p)
            if lab.ndim == 4:
                lab = lab[:, 0]
            prefix = split or "case"
            for i in range(img.shape[0]):
                im = np.asarray(img[i], dtype=np.float32)
                if im.ndim == 2:
                    im = im[None]
                cid = f"{prefix}_{i:05d}"
                yield Case.from_spacing(im, as_label(np.asarray(lab[i]), lab_p), spacing=(spacing, spacing), case_id=cid, meta={"source": f"{img_p}[{i}]"})

    return Imported(info=info, cases=cases(), splits=splits)
