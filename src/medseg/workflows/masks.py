"""Folders of mask files (NIfTI, NRRD, MHA, PNG) matched by case name, for scoring predictions made by any tool."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from medseg.core.errors import ConfigError, DatasetError

MASK_SUFFIXES = (".nii.gz", ".nii", ".nrrd", ".nhdr", ".mha", ".mhd", ".png")


GRID_ATOL_MM = 1e-3


def case_name(path: Path) -> str | None:
    """The case name of a mask file (its name less a known suffix), or None for other files."""
    low = path.name.lower()
    for suf in MASK_SUFFIXES:
        if low.endswith(suf):
            return path.name[: -len(suf)]
    return None


def list_masks(folder: Path, role: str) -> dict[str, Path]:
    if not folder.is_dir():
        raise DatasetError(f"{role} folder not found", where=folder, fix=f"give an existing folder of {role} masks")
    found: dict[str, Path] = {}
    for p in sorted(folder.iterdir()):
        name = case_name(p) if p.is_file() else None
        if name is None:
            continue
        if name in found:
            raise DatasetError(f"two {role} files for case {name!r} ({found[name].name}, {p.name})", where=folder, fix="keep one file per case")
        found[name] = p
    if not found:
        raise DatasetError(f"no {role} masks ({', '.join(MASK_SUFFIXES)})", where=folder, fix="point to a folder of mask files")
    return found


def read_mask(path: str | Path) -> tuple[np.ndarray, np.ndarray]:
    """Read a label mask with SimpleITK: (integer array in ITK's array order, affine).

    The affine maps an array index (in the returned axis order) to LPS millimetres, so two files
    can be compared for grid equality whatever their formats. PNG masks that hold only 0 and 255
    are read as binary (255 → 1).
    """
    import SimpleITK as sitk

    path = Path(path)
    try:
        img = sitk.ReadImage(str(path))
    except RuntimeError as e:
        raise DatasetError(f"unreadable mask ({str(e).strip().splitlines()[-1][:120]})", where=path, fix="give a NIfTI, NRRD, MHA or PNG label file") from None
    if img.GetNumberOfComponentsPerPixel() != 1:
        raise DatasetError(
            f"mask has {img.GetNumberOfComponentsPerPixel()} channels per pixel (colour image?)",
            where=path,
            fix="save the mask as a single-channel label image",
        )
    arr = sitk.GetArrayFromImage(img)
    if arr.dtype.kind == "f":
        if not np.all(np.isfinite(arr)) or not np.all(arr == np.round(arr)):
            raise DatasetError("mask holds non-integer values", where=path, fix="save class indices (0, 1, 2, ...), not probabilities")
    elif arr.dtype.kind not in "iub":
        raise DatasetError(f"mask has unsupported pixel type {arr.dtype}", where=path, fix="save an integer label image")
    arr = arr.astype(np.int32)
    if arr.min(initial=0) < 0:
        raise DatasetError("mask holds negative labels", where=path, fix="save class indices 0, 1, 2, ...")
    if path.name.lower().endswith(".png") and set(np.unique(arr).tolist()) <= {0, 255}:
        arr = (arr > 0).astype(np.int32)
    n = img.GetDimension()
    spacing = np.array(img.GetSpacing())[::-1]
    direction = np.array(img.GetDirection()).reshape(n, n)[::-1, ::-1]
    origin = np.array(img.GetOrigin())[::-1]
    affine = np.eye(n + 1)
    affine[:n, :n] = direction * spacing[None, :]
    affine[:n, n] = origin
    return arr, affine


def parse_labels(items: Sequence[str] | None) -> dict[int, str] | None:
    """``["1", "2=tumour"]`` or ``["1,2=tumour"]`` → ``{1: "1", 2: "tumour"}``; None = every value found."""
    if not items:
        return None
    out: dict[int, str] = {}
    for item in items:
        for part in str(item).split(","):
            part = part.strip()
            if not part:
                continue
            value, _, name = part.partition("=")
            try:
                v = int(value)
            except ValueError:
                raise ConfigError(
                    f"label {part!r} is not an integer value (optionally VALUE=NAME)",
                    where="--labels",
                    fix="write e.g. --labels 1,2 or --labels 1=liver,2=tumour",
                ) from None
            if v <= 0:
                raise ConfigError(f"label {v} is the background or negative", where="--labels", fix="list foreground values only (1, 2, ...)")
            out[v] = name.strip() or str(v)
    if len(set(out.values())) != len(out):
        raise ConfigError("two labels share a name", where="--labels", fix="give each label its own name")
    return out


def check_mask_grid(pred: np.ndarray, paff: np.ndarray, ref: np.ndarray, raff: np.ndarray, ppath: Path, *, rpath: Path) -> None:
    if pred.shape != ref.shape:
        raise DatasetError(
            f"prediction and reference are on different grids: shape {pred.shape} vs {ref.shape} ({rpath.name})",
            where=ppath,
            fix="resample the prediction onto the reference grid",
        )
    if paff.shape != raff.shape or not np.allclose(paff, raff, rtol=0, atol=GRID_ATOL_MM):
        diff = float(np.abs(paff - raff).max()) if paff.shape == raff.shape else float("inf")
        raise DatasetError(
            f"prediction and reference are on different grids: spacing/origin/direction differ by up to {diff:.4g} mm ({rpath.name})",
            where=ppath,
            fix="write the prediction with the reference's geometry",
        )
