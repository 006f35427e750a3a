"""The preprocessing steps on one case and their inverses (the record of each step is plain JSON)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from medseg.core.case import Case, spacing_of
from medseg.core.errors import DatasetError
from medseg.data.preprocessing.spec import PreprocessSpec, ras_ornt

# ---------------------------------------------------------------------------------------------- geometry


def normalize_image(image: np.ndarray) -> np.ndarray:
    """Per-case, per-channel z-score (the MRI default)."""
    img = image.astype(np.float32, copy=True)
    for c in range(img.shape[0]):
        ch = img[c]
        std = float(ch.std())
        img[c] = (ch - float(ch.mean())) / (std if std > 1e-8 else 1.0)
    return img


def _check_geometry(case: Case) -> None:
    aff = case.affine
    sp = np.linalg.norm(aff[:-1, :-1], axis=0) if aff.ndim == 2 and aff.shape[0] == aff.shape[1] else np.array([np.nan])
    if not np.isfinite(aff).all() or not np.all(sp > 0) or abs(np.linalg.det(aff[:-1, :-1])) < 1e-12:
        raise DatasetError(
            f"case {case.case_id!r} has an invalid spacing {[float(s) for s in sp]} (zero, NaN or degenerate axes)",
            where=case.meta.get("source", case.case_id),
            fix="repair the image header (voxel size) and re-import the case",
        )


def _apply_ornt(arr: np.ndarray, ornt: np.ndarray) -> np.ndarray:
    """Reorient a channel-first array ``(C, *spatial)`` (exact: transpose and flips only)."""
    from nibabel.orientations import apply_orientation

    moved = np.moveaxis(arr, 0, -1)
    return np.ascontiguousarray(np.moveaxis(apply_orientation(moved, ornt), -1, 0))


def _invert_ornt(ornt: np.ndarray) -> np.ndarray:
    inv = np.zeros_like(ornt)
    for i, (j, flip) in enumerate(ornt):
        inv[int(j)] = [i, flip]
    return inv


def _resize(arr: np.ndarray, shape: tuple[int, ...], mode: str) -> np.ndarray:
    """Resample ``(C, *spatial)`` onto a grid of ``shape`` covering the same extent (voxel centres, no corner alignment).

    ``mode`` is ``linear``, ``cubic`` or ``nearest`` (torch's ``nearest-exact``: symmetric, so an integer up- then
    down-sampling returns the input exactly). Written on ``torch.nn.functional.interpolate`` — the function MONAI's
    ``Resize`` calls — to keep a per-axis choice of interpolation; cubic 3D uses SciPy (torch has no tricubic).
    """
    if tuple(arr.shape[1:]) == tuple(shape):
        return arr
    nd = arr.ndim - 1
    if mode == "cubic" and nd == 3:
        from scipy.ndimage import zoom

        factors = [1.0] + [s / o for s, o in zip(shape, arr.shape[1:], strict=True)]
        return zoom(arr.astype(np.float32), factors, order=3, mode="nearest", grid_mode=True).astype(arr.dtype, copy=False)
    dtype = arr.dtype
    t = torch.from_numpy(np.ascontiguousarray(arr).astype(np.float32, copy=False))[None]
    if mode == "nearest":
        out = F.interpolate(t, size=tuple(shape), mode="nearest-exact")
    else:
        tm = {("linear", 2): "bilinear", ("linear", 3): "trilinear", ("cubic", 2): "bicubic"}[(mode, nd)]
        out = F.interpolate(t, size=tuple(shape), mode=tm, align_corners=False)
    res = out[0].numpy()
    if np.issubdtype(dtype, np.integer) or dtype is np.dtype(bool):
        res = np.rint(res)
    return res.astype(dtype, copy=False)


def _resample(arr: np.ndarray, shape: tuple[int, ...], mode: str, coarse_axis: int | None) -> np.ndarray:
    """Resize, handling a strongly anisotropic axis separately with nearest interpolation."""
    if coarse_axis is None or mode == "nearest":
        return _resize(arr, shape, mode)
    inplane = list(arr.shape[1:])
    for a in range(len(inplane)):
        if a != coarse_axis:
            inplane[a] = shape[a]
    return _resize(_resize(arr, tuple(inplane), mode), shape, "nearest")


def _scale_affine(affine: np.ndarray, old: tuple[int, ...], new: tuple[int, ...]) -> np.ndarray:
    """Affine of a grid resized from ``old`` to ``new`` voxels over the same extent (voxel centres)."""
    s = np.array(old, dtype=np.float64) / np.array(new, dtype=np.float64)
    m = np.eye(len(old) + 1)
    m[:-1, :-1] = np.diag(s)
    m[:-1, -1] = (s - 1) / 2
    return affine @ m


def _shift_affine(affine: np.ndarray, start: list[int]) -> np.ndarray:
    m = np.eye(len(start) + 1)
    m[:-1, -1] = start
    return affine @ m


def _bbox(mask: np.ndarray, margin: int) -> list[list[int]] | None:
    if not mask.any():
        return None
    box = []
    for ax in range(mask.ndim):
        other = tuple(a for a in range(mask.ndim) if a != ax)
        idx = np.flatnonzero(mask.any(axis=other))
        box.append([max(int(idx[0]) - margin, 0), min(int(idx[-1]) + 1 + margin, mask.shape[ax])])
    return box


# ------------------------------------------------------------------------------------------- intensities


def _normalize(img: np.ndarray, spec: PreprocessSpec) -> tuple[np.ndarray, list[dict[str, Any]]]:
    out = np.empty(img.shape, dtype=np.float32)
    params: list[dict[str, Any]] = []
    lo_p, hi_p = spec.clip_percentiles
    for c in range(img.shape[0]):
        ch = img[c].astype(np.float32, copy=False)
        scheme = spec.normalize[c] if c < len(spec.normalize) else spec.normalize[-1]
        if scheme == "ct":
            st = spec.intensity[c]
            std = st["std"] if st["std"] > 1e-8 else 1.0
            out[c] = (np.clip(ch, st["low"], st["high"]) - st["mean"]) / std
            params.append({"scheme": scheme, **st})
        elif scheme in ("zscore", "zscore_nonzero"):
            sel = ch[ch != 0] if scheme == "zscore_nonzero" else ch
            mean, std = (float(sel.mean()), float(sel.std())) if sel.size else (0.0, 1.0)
            std = std if std > 1e-8 else 1.0
            out[c] = (ch - mean) / std
            if scheme == "zscore_nonzero":
                out[c][ch == 0] = 0
            params.append({"scheme": scheme, "mean": mean, "std": std})
        elif scheme == "clip01":
            lo, hi = (float(v) for v in np.percentile(ch, [lo_p, hi_p]))
            out[c] = (np.clip(ch, lo, hi) - lo) / (hi - lo if hi - lo > 1e-8 else 1.0)
            params.append({"scheme": scheme, "low": lo, "high": hi})
        else:
            out[c] = ch
            params.append({"scheme": "none"})
    return out, params


# -------------------------------------------------------------------------------------- forward / inverse


def _label_channels(case: Case) -> np.ndarray | None:
    if case.label is None:
        return None
    return case.label.astype(np.uint8) if case.multi_label else case.label[None]


def preprocess_pair(case: Case, spec: PreprocessSpec, with_label: bool = True) -> tuple[np.ndarray, np.ndarray | None, dict[str, Any]]:
    """Preprocess a case's image and (optionally) its label.

    Args:
        case: the case on its original grid.
        spec: the resolved preprocessing.
        with_label: also transform the label (nearest interpolation throughout).

    Returns:
        ``(image, label, record)``: image float32 ``(C, *shape)``; label ``(1, *shape)`` int16 class indices or
        ``(K, *shape)`` uint8 for multi-label (None without a label); the record to invert the steps.

    Raises:
        DatasetError: zero, NaN or degenerate spacing; a case whose dimensionality does not match the spec.
    """
    _check_geometry(case)
    if case.ndim != spec.dims:
        raise DatasetError(f"case {case.case_id!r} is {case.ndim}D but the preprocessing is for {spec.dims}D data", where=case.meta.get("source", case.case_id))
    img = case.image
    lab = _label_channels(case) if with_label else None
    affine = case.affine.copy()
    rec: dict[str, Any] = {
        "case_id": case.case_id,
        "spec_hash": spec.hash,
        "original_shape": list(case.spatial_shape),
        "original_affine": case.affine.tolist(),
        "multi_label": bool(case.multi_label),
        "steps": [],
    }
    steps = rec["steps"]
    if spec.orientation == "RAS":
        ornt = ras_ornt(affine)
        if not np.array_equal(ornt, np.stack([np.arange(spec.dims), np.ones(spec.dims)], axis=1)):
            from nibabel.orientations import inv_ornt_aff

            affine = affine @ inv_ornt_aff(ornt, img.shape[1:])
            img = _apply_ornt(img, ornt)
            lab = None if lab is None else _apply_ornt(lab, ornt)
            steps.append({"op": "orient", "ornt": ornt.tolist()})
    if spec.crop != "none":
        if spec.crop == "foreground" and lab is not None:  # without a label (inference): the non-zero box
            mask = lab.any(0) if case.multi_label else lab[0] > 0
        else:
            mask = (img != 0).any(0)
        box = _bbox(mask, spec.crop_margin)
        if box is not None and any(b != [0, s] for b, s in zip(box, img.shape[1:], strict=True)):
            sl = (slice(None), *(slice(a, b) for a, b in box))
            steps.append({"op": "crop", "box": box, "shape": list(img.shape[1:])})
            img = img[sl]
            lab = None if lab is None else lab[sl]
            affine = _shift_affine(affine, [a for a, _ in box])
    img, norm = _normalize(img, spec)
    rec["normalization"] = norm
    if spec.spacing is not None:
        sp = np.array(spacing_of(affine))
        target = np.array(spec.spacing, dtype=np.float64)
        old = tuple(int(s) for s in img.shape[1:])
        new = tuple(max(1, round(float(o * s / t))) for o, s, t in zip(old, sp, target, strict=True))
        if new != old:
            coarse = None
            if spec.dims == 3 and max(sp) / min(sp) > spec.anisotropy_threshold:
                coarse = int(np.argmax(sp))
            img = _resample(img, new, spec.interpolation, coarse)
            lab = None if lab is None else _resize(lab, new, "nearest")
            affine = _scale_affine(affine, old, new)
            steps.append({"op": "resample", "shape": list(old), "to": list(new), "coarse_axis": coarse})
    if spec.resize is not None:
        old = tuple(int(s) for s in img.shape[1:])
        new = tuple(int(s) or o for s, o in zip(spec.resize, old, strict=True))
        if new != old:
            img = _resize(img, new, spec.interpolation if spec.dims == 2 else "linear")
            lab = None if lab is None else _resize(lab, new, "nearest")
            affine = _scale_affine(affine, old, new)
            steps.append({"op": "resize", "shape": list(old), "to": list(new)})
    if spec.pad_to is not None:
        shape = img.shape[1:]
        pads = [[max(t - s, 0) // 2, max(t - s, 0) - max(t - s, 0) // 2] for s, t in zip(shape, spec.pad_to, strict=True)]
        if any(a or b for a, b in pads):
            width = [(0, 0), *(tuple(p) for p in pads)]
            img = np.pad(img, width)
            lab = None if lab is None else np.pad(lab, width)
            affine = _shift_affine(affine, [-a for a, _ in pads])
            steps.append({"op": "pad", "pads": pads, "shape": list(shape)})
    rec["shape"] = list(img.shape[1:])
    rec["affine"] = affine.tolist()
    rec["spacing"] = list(spacing_of(affine))
    img = np.ascontiguousarray(img, dtype=np.float32)
    if lab is not None:
        lab = np.ascontiguousarray(lab, dtype=np.uint8 if case.multi_label else np.int16)
    return img, lab, rec


def preprocess_case(case: Case, spec: PreprocessSpec | dict[str, Any]) -> tuple[np.ndarray, dict[str, Any]]:
    """The network input for a case and the record that inverts it (the inference side of the contract).

    Args:
        case: a case on its original grid (its label, if any, is ignored).
        spec: a :class:`PreprocessSpec` or its dict (``cache.json["spec"]``, ``record["spec"]``).

    Returns:
        ``(image, record)``: float32 ``(C, *shape)`` and a JSON-serialisable record for
        :func:`invert_label` / :func:`invert_probabilities`.
    """
    spec = spec if isinstance(spec, PreprocessSpec) else PreprocessSpec.from_dict(spec)
    img, _, rec = preprocess_pair(case, spec, with_label=False)
    return img, rec


def _invert(arr: np.ndarray, record: dict[str, Any], mode: str, fill: Callable[[tuple[int, ...]], np.ndarray]) -> np.ndarray:
    if list(arr.shape[1:]) != list(record["shape"]):
        raise DatasetError(
            f"array of spatial shape {list(arr.shape[1:])} does not match the preprocessed shape {record['shape']}",
            where=record.get("case_id", "record"),
            fix="invert the prediction made on this case's preprocessed image",
        )
    for step in reversed(record["steps"]):
        op = step["op"]
        if op == "pad":
            sl = (slice(None), *(slice(a, s + a) for (a, _), s in zip(step["pads"], step["shape"], strict=True)))
            arr = arr[sl]
        elif op in ("resize", "resample"):
            arr = _resize(arr, tuple(step["shape"]), mode)
        elif op == "crop":
            full = fill((arr.shape[0], *step["shape"])).astype(arr.dtype)
            full[(slice(None), *(slice(a, b) for a, b in step["box"]))] = arr
            arr = full
        elif op == "orient":
            arr = _apply_ornt(arr, _invert_ornt(np.array(step["ornt"])))
    return np.ascontiguousarray(arr)


def invert_label(label: np.ndarray, record: dict[str, Any]) -> np.ndarray:
    """Put a label predicted on the preprocessed grid back on the case's original grid (nearest).

    Args:
        label: class indices ``(*shape)`` or ``(1, *shape)``, or multi-label channels ``(K, *shape)``.
        record: the record from :func:`preprocess_case`.

    Returns:
        The label with the original spatial shape (``(*original)`` or ``(K, *original)``), same dtype;
        regions cropped away are background.
    """
    squeeze = label.ndim == len(record["shape"])
    arr = label[None] if squeeze else label
    dtype = arr.dtype
    work = arr.astype(np.uint8) if dtype is np.dtype(bool) else arr
    out = _invert(work, record, "nearest", lambda s: np.zeros(s, dtype=work.dtype))
    out = out.astype(dtype, copy=False)
    return out[0] if squeeze else out


def invert_probabilities(prob: np.ndarray, record: dict[str, Any], multi_label: bool = False) -> np.ndarray:
    """Put class probabilities ``(K, *shape)`` back on the original grid (linear interpolation).

    Regions cropped away get probability 1 for the background (softmax) or 0 for every label (sigmoid).
    """

    def fill(shape: tuple[int, ...]) -> np.ndarray:
        f = np.zeros(shape, dtype=np.float32)
        if not multi_label:
            f[0] = 1.0
        return f

    return _invert(prob.astype(np.float32, copy=False), record, "linear", fill)


# ---------------------------------------------------------------------------------------------- the spec


# --------------------------------------------------------------------------------------------- the cache
