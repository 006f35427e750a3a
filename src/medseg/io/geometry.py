"""The one geometry convention, and the only place where ITK's is converted to it.

A case's ``affine`` is a float64 ``(n+1, n+1)`` matrix that maps a voxel index **in array axis
order** to world millimetres: RAS+ for volumes (as NIfTI), the image plane for 2D pictures.
Spacing is the length of each column, direction the normalised columns, origin the translation.

ITK (SimpleITK: NRRD, MHA, MHD, GIPL, and DICOM's patient coordinates) describes an image by
spacing, origin and a direction matrix over index axes (x, y, z) in LPS, while its arrays come
out as ``(z, y, x)``. :func:`affine_from_itk` and :func:`itk_from_affine` are that conversion,
written once: the affine's columns are the ITK axes reversed, and x and y are negated for 3D.
"""

from __future__ import annotations

from collections.abc import Sequence
from itertools import permutations
from typing import Any

import numpy as np

from medseg.core.errors import FormatError

#: ITK (LPS) ↔ NIfTI/medseg (RAS) flip of the first two world axes.
LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0, 1.0])


def affine_from_itk(spacing: Sequence[float], origin: Sequence[float], direction: Sequence[float]) -> np.ndarray:
    """The affine of an ITK image's array (``GetArrayFromImage`` order, i.e. ITK axes reversed).

    Args:
        spacing: ITK spacing (x, y[, z]).
        origin: ITK origin (LPS for 3D).
        direction: ITK direction, row-major ``n × n`` (column j = direction of index axis j).

    Returns:
        ``(n+1, n+1)`` affine; RAS+ for 3D images, the ITK plane for 2D ones.
    """
    n = len(spacing)
    d = np.asarray(direction, dtype=np.float64).reshape(n, n)
    aff = np.eye(n + 1)
    aff[:n, :n] = (d * np.asarray(spacing, dtype=np.float64)[None, :])[:, ::-1]
    aff[:n, n] = np.asarray(origin, dtype=np.float64)
    return LPS_TO_RAS @ aff if n == 3 else aff


def itk_from_affine(affine: np.ndarray) -> tuple[tuple[float, ...], tuple[float, ...], tuple[float, ...]]:
    """``(spacing, origin, direction)`` of the ITK image whose ``GetArrayFromImage`` is our array.

    Its index axes (x, y, z) are our array axes reversed. The exact inverse of :func:`affine_from_itk`.
    """
    affine = np.asarray(affine, dtype=np.float64)
    n = affine.shape[0] - 1
    aff = LPS_TO_RAS @ affine if n == 3 else affine  # RAS → LPS (the flip is its own inverse)
    cols = aff[:n, :n][:, ::-1]
    spacing = np.linalg.norm(cols, axis=0)
    direction = cols / spacing[None, :]
    return tuple(float(v) for v in spacing), tuple(float(v) for v in aff[:n, n]), tuple(float(v) for v in direction.ravel())


def affine_4x4(affine: np.ndarray) -> np.ndarray:
    """A 2D (3×3) affine lifted to 4×4 with a unit third axis; a 4×4 one returned unchanged."""
    affine = np.asarray(affine, dtype=np.float64)
    if affine.shape == (4, 4):
        return affine
    out = np.eye(4)
    out[:2, :2] = affine[:2, :2]
    out[:2, 3] = affine[:2, 2]
    return out


def affine_2d(affine: np.ndarray) -> np.ndarray:
    """The 3×3 affine of the first two axes of a 4×4 one (a 3×3 one returned unchanged)."""
    affine = np.asarray(affine, dtype=np.float64)
    if affine.shape == (3, 3):
        return affine
    out = np.eye(3)
    out[:2, :2] = affine[:2, :2]
    out[:2, 2] = affine[:2, 3]
    return out


def check_affine(affine: np.ndarray, where: Any) -> np.ndarray:
    """Refuse an affine that places no voxel grid: non-finite, or a zero-length/degenerate axis."""
    affine = np.asarray(affine, dtype=np.float64)
    n = affine.shape[0] - 1
    if not np.isfinite(affine).all() or abs(np.linalg.det(affine[:n, :n])) < 1e-12:
        raise FormatError(
            "the header's geometry is invalid (non-finite values or a zero-size voxel axis)",
            where=where,
            fix="repair the header (spacing, direction, qform/sform)",
        )
    return affine


def check_same_grid(img_shape: tuple[int, ...], img_affine: np.ndarray, lab_shape: tuple[int, ...], lab_affine: np.ndarray, where: Any) -> None:
    """Refuse a label whose grid (shape or affine) differs from the image's."""
    if tuple(img_shape) != tuple(lab_shape):
        raise FormatError(
            f"label shape {tuple(lab_shape)} differs from image shape {tuple(img_shape)}", where=where, fix="resample the label onto the image grid"
        )
    if not np.allclose(img_affine, lab_affine, atol=1e-3, rtol=1e-5):
        raise FormatError(
            "label affine differs from the image affine (not the same voxel grid)",
            where=where,
            fix="resample the label onto the image grid, or fix the header",
        )


def axis_order(shape: tuple[int, ...], affine: np.ndarray, ref_shape: tuple[int, ...], ref_affine: np.ndarray, atol: float = 1e-3) -> tuple[int, ...] | None:
    """The axis permutation ``p`` with ``array.transpose(p)`` on the reference grid, or ``None``.

    Two files of one voxel grid may store their axes in different orders (a NIfTI written
    x-fastest and an NRRD read as ``(z, y, x)``; nnU-Net and dcm2niix copies of a DICOM series):
    their affines then differ by the same permutation of columns.
    """
    affine, ref_affine = np.asarray(affine, dtype=np.float64), np.asarray(ref_affine, dtype=np.float64)
    n = len(shape)
    if len(ref_shape) != n or affine.shape != ref_affine.shape or affine.shape[0] != n + 1:
        return None
    for p in permutations(range(n)):
        if tuple(shape[i] for i in p) != tuple(ref_shape):
            continue
        perm = affine.copy()
        perm[:n, :n] = affine[:n, :n][:, list(p)]
        if np.allclose(perm, ref_affine, rtol=0, atol=atol):
            return tuple(p)
    return None


def onto_grid(array: np.ndarray, affine: np.ndarray, ref_shape: Sequence[int], ref_affine: np.ndarray, atol: float = 0.05) -> np.ndarray | str:
    """``array`` (on ``affine``) put onto the reference grid by exact axis permutations and flips, or why not.

    Works when the two grids share their voxel centres: the voxel-to-voxel map
    ``inv(ref_affine) @ affine`` is a signed permutation with an integer offset (``atol`` in voxels),
    as when one file stores a series in another axis order or reoriented to RAS. Nothing is guessed:
    the flips come from the headers only. Returns a string describing the misfit when the grids differ
    (other spacing or rotation) or the array's world extent is not the reference's.
    """
    n = len(ref_shape)
    if array.ndim != n:
        return f"it has {array.ndim} axes, the reference {n}"
    m = np.linalg.inv(np.asarray(ref_affine, dtype=np.float64)) @ np.asarray(affine, dtype=np.float64)
    rot, offset = m[:n, :n], m[:n, n]
    perm = np.abs(rot).argmax(axis=0)  # array axis j runs along reference axis perm[j]
    signs = np.sign(rot[perm, np.arange(n)])
    ideal = np.zeros((n, n))
    ideal[perm, np.arange(n)] = signs
    if sorted(perm.tolist()) != list(range(n)) or not np.allclose(rot, ideal, atol=atol / max(array.shape)):
        return "its voxel grid has another spacing or orientation (not an axis permutation or flip)"
    if not np.allclose(offset, np.round(offset), atol=atol):
        return f"its voxel centres are shifted by {np.round(offset - np.round(offset), 2).tolist()} voxels"
    lo = np.round(offset).astype(int)
    start = np.zeros(n, dtype=int)
    stop = np.zeros(n, dtype=int)
    for j in range(n):
        a, b = lo[perm[j]], lo[perm[j]] + signs[j] * (array.shape[j] - 1)
        start[perm[j]], stop[perm[j]] = min(a, b), max(a, b)
    if np.any(start != 0) or np.any(stop != np.asarray(ref_shape) - 1):
        span = ", ".join(f"{a}…{b}" for a, b in zip(start.tolist(), stop.tolist(), strict=True))
        ref = ", ".join(f"0…{s - 1}" for s in ref_shape)
        return f"its world extent covers voxels {span} of the reference ({ref})"
    out = array
    for j in range(n):
        if signs[j] < 0:
            out = np.flip(out, axis=j)
    order = [int(np.where(perm == i)[0][0]) for i in range(n)]  # reference axis i comes from array axis order[i]
    return np.ascontiguousarray(np.transpose(out, order))
