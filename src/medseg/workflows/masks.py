"""Folders of mask files (NIfTI, NRRD, MHA, PNG, TIFF…, read by ``medseg.io``) matched by case name, for scoring predictions made by any tool."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from medseg.core.atomic import is_temporary
from medseg.core.errors import ConfigError, DatasetError
from medseg.io.geometry import axis_order
from medseg.io.source import IMAGE_SUFFIXES

#: lossless mask files (a JPEG is not a mask)
MASK_SUFFIXES = tuple(s for s in IMAGE_SUFFIXES if s not in (".jpg", ".jpeg"))


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
        name = case_name(p) if p.is_file() and not is_temporary(p) else None  # an interrupted write's temporary is no mask
        if name is None:
            continue
        if name in found:
            raise DatasetError(f"two {role} files for case {name!r} ({found[name].name}, {p.name})", where=folder, fix="keep one file per case")
        found[name] = p
    if not found:
        raise DatasetError(f"no {role} masks ({', '.join(MASK_SUFFIXES)})", where=folder, fix="point to a folder of mask files")
    return found


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


def check_mask_grid(pred: np.ndarray, paff: np.ndarray, ref: np.ndarray, raff: np.ndarray, ppath: Path, *, rpath: Path) -> np.ndarray:
    """The prediction in the reference's axis order; refused unless both lie on one voxel grid.

    Files of one grid may store their axes in different orders (a NIfTI and an NRRD of one
    volume): the prediction's axes are permuted to the reference's when their affines agree.
    """
    order = axis_order(pred.shape, paff, ref.shape, raff, atol=GRID_ATOL_MM)
    if order is not None:
        return np.transpose(pred, order) if order != tuple(range(pred.ndim)) else pred
    if sorted(pred.shape) != sorted(ref.shape):
        raise DatasetError(
            f"prediction and reference are on different grids: shape {pred.shape} vs {ref.shape} ({rpath.name})",
            where=ppath,
            fix="resample the prediction onto the reference grid",
        )
    diff = float(np.abs(paff - raff).max()) if paff.shape == raff.shape and pred.shape == ref.shape else float("nan")
    raise DatasetError(
        f"prediction and reference are on different grids: spacing/origin/direction differ{f' by up to {diff:.4g} mm' if diff == diff else ''} ({rpath.name})",
        where=ppath,
        fix="write the prediction with the reference's geometry",
    )
