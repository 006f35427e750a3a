"""Preprocessing that can be undone: reorient, crop, normalise, resample, resize, pad — and the cache.

:func:`preprocess_case` turns a :class:`~medseg.core.case.Case` into the array a network sees and a
*record* (plain JSON) of every step; :func:`invert_label` and :func:`invert_probabilities` walk the
record backwards to put a prediction on the case's original grid (same shape, same affine).

Steps, in order (each optional, see :class:`PreprocessSpec`):

1. reorientation to RAS (nibabel's orientation tools: axis permutation and flips, exact);
2. crop to the non-zero image box or the label's foreground box (plus a margin);
3. intensity normalisation per channel (``ct``, ``zscore``, ``zscore_nonzero``, ``clip01``, ``none``);
4. resampling to a target spacing — images linear (or cubic), labels nearest; when the spacing is
   strongly anisotropic the coarse axis is resampled separately with nearest interpolation, so slices
   are never blended (as nnU-Net does);
5. resizing to a fixed spatial size (images linear, labels nearest);
6. centred zero padding to a minimum size.

The cache (:func:`prepare`) holds one uncompressed ``.npy`` per case and array kind, memory-mapped at
training time, and a ``cache.json`` carrying the hash of the spec; see docs/pipeline.md for the layout.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from medseg.core.atomic import atomic_dir, write_json
from medseg.core.case import Case, spacing_of
from medseg.core.errors import ConfigError, DatasetError

CACHE_FILE = "cache.json"
CACHE_FORMAT = 1
NORMALIZATIONS = ("ct", "zscore", "zscore_nonzero", "clip01", "none")
#: foreground voxel coordinates kept per class and case for foreground oversampling
LOCATIONS_PER_CLASS = 10_000


@dataclass
class PreprocessSpec:
    """The fully resolved preprocessing of a data set (what the cache hash is computed from).

    Args:
        dims: spatial dimensions of the data set (2 or 3).
        orientation: ``"RAS"`` or ``"none"``.
        spacing: target spacing per array axis (after reorientation), or None to keep each case's.
        interpolation: ``"linear"`` or ``"cubic"`` for images.
        anisotropy_threshold: spacing ratio above which the coarse axis is resampled separately (nearest).
        crop: ``"none"``, ``"nonzero"`` or ``"foreground"``.
        crop_margin: voxels kept around the crop box.
        normalize: one scheme per channel (see ``NORMALIZATIONS``).
        clip_percentiles: (low, high) percentiles for ``ct`` (data-set foreground) and ``clip01`` (per case).
        intensity: per-channel data-set statistics for ``ct``: ``{"low", "high", "mean", "std"}``.
        resize: fixed spatial size, or None.
        pad_to: minimum spatial size, or None.
    """

    dims: int
    orientation: str = "none"
    spacing: list[float] | None = None
    interpolation: str = "linear"
    anisotropy_threshold: float = 3.0
    crop: str = "none"
    crop_margin: int = 0
    normalize: list[str] = field(default_factory=lambda: ["zscore"])
    clip_percentiles: tuple[float, float] = (0.5, 99.5)
    intensity: list[dict[str, float]] = field(default_factory=list)
    resize: list[int] | None = None
    pad_to: list[int] | None = None

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["clip_percentiles"] = list(self.clip_percentiles)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> PreprocessSpec:
        d = dict(d)
        d["clip_percentiles"] = tuple(d.get("clip_percentiles", (0.5, 99.5)))
        return cls(**d)

    @property
    def hash(self) -> str:
        """SHA-1 of the canonical JSON form: two specs with the same hash preprocess identically."""
        text = json.dumps({"format": CACHE_FORMAT, **self.to_dict()}, sort_keys=True)
        return hashlib.sha1(text.encode()).hexdigest()

    def check(self, where: str = "data.preprocess") -> None:
        """Refuse sizes and spacings that do not fit the data set's dimensionality."""
        for name in ("spacing", "resize", "pad_to"):
            v = getattr(self, name)
            if v is None:
                continue
            if len(v) != self.dims:
                raise ConfigError(f"{name} {list(v)} has {len(v)} axes but the data set is {self.dims}D", where=f"{where}.{name}", fix=f"give {self.dims}")
            if not all(math.isfinite(float(x)) and float(x) > 0 for x in v):
                raise ConfigError(f"{name} {list(v)} must be positive and finite", where=f"{where}.{name}", fix="give positive values")
        for n in self.normalize:
            if n not in NORMALIZATIONS:
                raise ConfigError(f"unknown normalisation {n!r}", where=f"{where}.normalize", fix=f"choose one of {', '.join(NORMALIZATIONS)}")
            if n == "ct" and not self.intensity:
                raise ConfigError("ct normalisation needs data-set intensity statistics", where=f"{where}.normalize", fix="resolve the spec with the data set")


# ---------------------------------------------------------------------------------------------- geometry


def _check_geometry(case: Case) -> None:
    aff = case.affine
    sp = np.linalg.norm(aff[:-1, :-1], axis=0) if aff.ndim == 2 and aff.shape[0] == aff.shape[1] else np.array([np.nan])
    if not np.isfinite(aff).all() or not np.all(sp > 0) or abs(np.linalg.det(aff[:-1, :-1])) < 1e-12:
        raise DatasetError(
            f"case {case.case_id!r} has an invalid spacing {[float(s) for s in sp]} (zero, NaN or degenerate axes)",
            where=case.meta.get("source", case.case_id),
            fix="repair the image header (voxel size) and re-import the case",
        )


def _ornt(affine: np.ndarray) -> np.ndarray:
    from nibabel.orientations import io_orientation

    return io_orientation(affine)


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
        ornt = _ornt(affine)
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
        new = tuple(int(s) for s in spec.resize)
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


def resolve_spec(config: Any, ds: Any, plan: dict[str, Any] | None = None, fingerprint: dict[str, Any] | None = None) -> PreprocessSpec:
    """The concrete preprocessing of a config (``data.preprocess``) for a data set.

    Fields left to the plan (``spacing: plan``, ``normalize: auto``) come from ``plan`` (or, without one, from a
    plan derived from the fingerprint); CT normalisation uses the data set's foreground intensity statistics.

    Args:
        config: a :class:`~medseg.config.Config` or its ``data.preprocess`` section.
        ds: the opened :class:`~medseg.data.store.Dataset`.
        plan: a plan dictionary (``plan.json``), optional.
        fingerprint: the data set fingerprint, computed when needed and not given.
    """
    from medseg.config import Config, PreprocessConfig

    pc: PreprocessConfig = config.data.preprocess if isinstance(config, Config) else config
    dims = ds.info.dims
    fp = fingerprint

    def get_fp() -> dict[str, Any]:
        nonlocal fp
        if fp is None:
            from medseg.data.inspect import fingerprint as make_fp

            fp = make_fp(ds, progress=False)
        return fp

    spacing: list[float] | None
    if pc.spacing == "plan":
        if plan is None:
            from medseg.data.plan import make_plan

            plan = make_plan(get_fp(), dims=dims, ras_spacings=ras_spacings(ds) if pc.orientation == "RAS" else None)
        if pc.orientation == "RAS":
            if plan.get("target_spacing_ras") is None:
                from medseg.data.plan import target_spacing

                plan = {**plan, "target_spacing_ras": target_spacing({"per_case": [{"id": k, "spacing": v} for k, v in ras_spacings(ds).items()]})[0]}
            spacing = [float(v) for v in plan["target_spacing_ras"]]
        else:
            spacing = [float(v) for v in plan["target_spacing"]]
    else:
        spacing = None if pc.spacing is None else [float(v) for v in pc.spacing]
    if pc.normalize == "auto":
        if plan is not None and plan.get("normalization"):
            normalize = list(plan["normalization"])
        else:
            normalize = ["ct" if m.strip().upper() == "CT" else "zscore" for m in ds.info.modalities]
    else:
        normalize = [pc.normalize] * ds.info.n_channels
    intensity: list[dict[str, float]] = []
    if "ct" in normalize:
        lo_p, hi_p = (f"{p:g}" for p in pc.clip_percentiles)
        for c, st in enumerate(get_fp()["intensity"]):
            if normalize[c] != "ct":
                intensity.append({})
                continue
            if not st.get("voxels_sampled"):
                raise DatasetError(f"no intensities to normalise channel {c} ({st['modality']})", where=ds.root, fix="use normalize: zscore")
            pct = st["percentiles"]
            if lo_p not in pct or hi_p not in pct:
                raise ConfigError(
                    f"ct normalisation needs the {lo_p}/{hi_p} percentiles; the fingerprint has {', '.join(pct)}",
                    where="data.preprocess.clip_percentiles",
                    fix="choose two of those percentiles",
                )
            intensity.append({"low": float(pct[lo_p]), "high": float(pct[hi_p]), "mean": float(st["mean"]), "std": float(st["std"])})
    spec = PreprocessSpec(
        dims=dims,
        orientation=pc.orientation,
        spacing=spacing,
        interpolation=pc.interpolation,
        anisotropy_threshold=float(pc.anisotropy_threshold),
        crop=pc.crop,
        crop_margin=pc.crop_margin,
        normalize=normalize,
        clip_percentiles=tuple(pc.clip_percentiles),
        intensity=intensity,
        resize=None if pc.resize is None else [int(v) for v in pc.resize],
        pad_to=None if pc.pad_to is None else [int(v) for v in pc.pad_to],
    )
    spec.check()
    return spec


def ras_spacings(ds: Any) -> dict[str, list[float]]:
    """Each case's spacing along its array axes after RAS reorientation (reads only the affines)."""
    out: dict[str, list[float]] = {}
    for cid in ds.case_ids:
        try:
            with np.load(ds.case_path(cid), allow_pickle=False) as z:
                aff = np.asarray(z["affine"], dtype=np.float64)
        except (OSError, ValueError, KeyError) as e:
            raise DatasetError(f"case file is unreadable ({e})", where=ds.case_path(cid), fix="re-import the data set") from None
        sp = np.linalg.norm(aff[:-1, :-1], axis=0)
        if not np.all(np.isfinite(sp)) or np.any(sp <= 0):
            raise DatasetError(f"case {cid!r} has spacing {sp.tolist()} (zero or NaN)", where=ds.case_path(cid), fix="repair its voxel size and re-import it")
        new = np.empty_like(sp)
        for i, (j, _) in enumerate(_ornt(aff)):
            new[int(j)] = sp[i]
        out[cid] = new.tolist()
    return out


# --------------------------------------------------------------------------------------------- the cache


def _locations(lab: np.ndarray, multi_label: bool, rng: np.random.Generator) -> tuple[np.ndarray, list[int]]:
    """Up to ``LOCATIONS_PER_CLASS`` voxel coordinates per foreground class: rows ``(class, *index)``."""
    rows = []
    counts = []
    classes = range(lab.shape[0]) if multi_label else range(1, int(lab.max(initial=0)) + 1)
    for k in classes:
        mask = lab[k] > 0 if multi_label else lab[0] == k
        idx = np.flatnonzero(mask)
        counts.append(int(idx.size))
        if idx.size == 0:
            continue
        if idx.size > LOCATIONS_PER_CLASS:
            idx = np.sort(rng.choice(idx, LOCATIONS_PER_CLASS, replace=False))
        coords = np.stack(np.unravel_index(idx, mask.shape), axis=1)
        rows.append(np.concatenate([np.full((len(idx), 1), k), coords], axis=1))
    nd = lab.ndim - 1
    locs = np.concatenate(rows).astype(np.int32) if rows else np.zeros((0, nd + 1), dtype=np.int32)
    return locs, counts


def default_cache_dir(ds: Any, spec: PreprocessSpec, root: str | Path | None = None) -> Path:
    """``<root or data set>/preprocessed/<first 12 hex digits of the spec hash>``."""
    base = Path(root) if root else ds.root / "preprocessed"
    return base / spec.hash[:12]


def read_cache_info(path: str | Path) -> dict[str, Any] | None:
    p = Path(path) / CACHE_FILE
    if not p.is_file():
        return None
    try:
        return json.loads(p.read_text(encoding="utf-8"))
    except json.JSONDecodeError:
        return None


def check_cache(path: str | Path, spec: PreprocessSpec) -> dict[str, Any] | None:
    """The cache's description if ``path`` holds a cache of this spec; None if there is no cache.

    Raises:
        DatasetError: the folder holds a cache made with another preprocessing (hash mismatch).
    """
    info = read_cache_info(path)
    if info is None:
        return None
    if info.get("hash") != spec.hash:
        raise DatasetError(
            f"the cache was built with another preprocessing (hash {str(info.get('hash'))[:12]}, expected {spec.hash[:12]})",
            where=Path(path) / CACHE_FILE,
            fix="run `medseg prepare` with --overwrite to rebuild it, or point data.preprocess.cache_dir elsewhere",
        )
    return info


def prepare(
    ds: Any,
    spec: PreprocessSpec,
    out: str | Path | None = None,
    overwrite: bool = False,
    progress: bool = True,
    seed: int = 0,
) -> Path:
    """Preprocess every case of a data set into a cache folder (written atomically, reused when up to date).

    Args:
        ds: the opened data set.
        spec: the resolved preprocessing.
        out: the cache folder (default :func:`default_cache_dir`).
        overwrite: rebuild even when the folder holds a cache (of this or another spec).
        progress: show a progress bar.
        seed: seed of the foreground-location subsampling.

    Returns:
        The cache folder.

    Raises:
        DatasetError: ``out`` holds a cache from another spec and ``overwrite`` is false; a case is invalid
            (nothing is left behind: the folder is built beside ``out`` and renamed when complete).
    """
    from medseg.core.progress import track

    spec.check()
    out = Path(out) if out is not None else default_cache_dir(ds, spec)
    if not overwrite:
        if check_cache(out, spec) is not None:
            return out
        if out.exists() and any(out.iterdir()):
            raise DatasetError("folder exists and is not a preprocessing cache", where=out, fix="choose another cache folder or pass --overwrite")
    rng = np.random.default_rng(seed)
    cases: dict[str, Any] = {}
    with atomic_dir(out, overwrite=True) as tmp:
        (tmp / "cases").mkdir()
        for cid in track(ds.case_ids, f"preprocessing {ds.info.name}", total=len(ds), enabled=progress):
            case = ds.load_case(cid)
            img, lab, rec = preprocess_pair(case, spec)
            stem = _safe(cid)
            np.save(tmp / "cases" / f"{stem}.image.npy", img)
            entry: dict[str, Any] = {"image": f"cases/{stem}.image.npy", "record": f"cases/{stem}.json", "shape": rec["shape"]}
            if lab is not None:
                np.save(tmp / "cases" / f"{stem}.label.npy", lab)
                locs, counts = _locations(lab, case.multi_label, rng)
                np.save(tmp / "cases" / f"{stem}.locs.npy", locs)
                entry.update(label=f"cases/{stem}.label.npy", locs=f"cases/{stem}.locs.npy", class_voxels=counts)
            write_json(tmp / "cases" / f"{stem}.json", rec)
            cases[cid] = entry
        write_json(
            tmp / CACHE_FILE,
            {
                "format": CACHE_FORMAT,
                "hash": spec.hash,
                "dataset": str(Path(ds.root).resolve()),
                "dataset_name": ds.info.name,
                "dims": ds.info.dims,
                "multi_label": ds.info.multi_label,
                "n_channels": ds.info.n_channels,
                "spec": spec.to_dict(),
                "cases": cases,
            },
        )
    return out


def _safe(case_id: str) -> str:
    keep = "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in case_id)
    return keep or "case"


class Cache:
    """A preprocessing cache opened for reading; arrays are memory-mapped, never loaded whole.

    Args:
        path: the cache folder.
        spec: when given, the cache must have been built with it (hash check).
    """

    def __init__(self, path: str | Path, spec: PreprocessSpec | None = None):
        self.path = Path(path)
        info = check_cache(self.path, spec) if spec is not None else read_cache_info(self.path)
        if info is None:
            raise DatasetError("no preprocessing cache here", where=self.path, fix="run `medseg prepare DATASET` first")
        self.info = info
        self.spec = PreprocessSpec.from_dict(info["spec"])

    @property
    def case_ids(self) -> list[str]:
        return list(self.info["cases"])

    def _entry(self, cid: str) -> dict[str, Any]:
        try:
            return self.info["cases"][cid]
        except KeyError:
            raise DatasetError(f"case {cid!r} is not in the cache", where=self.path / CACHE_FILE, fix="rebuild it: medseg prepare --overwrite") from None

    def _load(self, cid: str, key: str, mmap: bool = True) -> np.ndarray:
        rel = self._entry(cid).get(key)
        if rel is None:
            raise DatasetError(f"case {cid!r} has no {key} in the cache", where=self.path, fix="only labelled cases can be trained or validated on")
        try:
            return np.load(self.path / rel, mmap_mode="r" if mmap else None, allow_pickle=False)
        except (OSError, ValueError) as e:
            raise DatasetError(f"case {cid!r}: cached {key} is unreadable ({e})", where=self.path / rel, fix="rebuild: medseg prepare --overwrite") from None

    def image(self, cid: str) -> np.ndarray:
        return self._load(cid, "image")

    def label(self, cid: str) -> np.ndarray:
        return self._load(cid, "label")

    def has_label(self, cid: str) -> bool:
        return "label" in self._entry(cid)

    def locations(self, cid: str) -> np.ndarray:
        return self._load(cid, "locs", mmap=False)

    def class_voxels(self, cid: str) -> list[int]:
        return list(self._entry(cid).get("class_voxels", []))

    def record(self, cid: str) -> dict[str, Any]:
        return json.loads((self.path / self._entry(cid)["record"]).read_text(encoding="utf-8"))


#: preprocessing used by ``medseg prepare DATASET`` when no config is given: the plan decides
PLAN_DEFAULTS: dict[str, Any] = {"enabled": True, "orientation": "RAS", "spacing": "plan", "crop": "nonzero", "normalize": "auto"}


def prepare_dataset(
    config: Any,
    plan_path: str | Path | None = None,
    gpu_memory_gb: float = 8.0,
    cpu_cores: int | None = None,
    overwrite: bool = False,
    progress: bool = True,
) -> tuple[dict[str, Any], Path, Path]:
    """``medseg prepare``: fingerprint, plan (``plan.json`` in the data set folder) and the cache.

    Args:
        config: the run config; its ``data.preprocess`` section says what to do (``enabled`` is implied).
        plan_path: an existing ``plan.json`` to use instead of planning (also ``data.plan``).
        gpu_memory_gb: GPU memory budget of the plan.
        cpu_cores: CPU budget of the plan (default: this machine's cores).
        overwrite: rebuild a cache that exists (also one built with another spec).
        progress: show progress bars.

    Returns:
        ``(plan, plan_file, cache_folder)``.
    """
    from medseg.data.inspect import fingerprint as make_fingerprint
    from medseg.data.pipeline import open_dataset
    from medseg.data.plan import PLAN_FILE, load_plan, make_plan, write_plan

    ds = open_dataset(config)
    fp = None
    plan_src = plan_path or config.data.plan
    if plan_src:
        plan = load_plan(plan_src)
        if int(plan.get("dims", ds.info.dims)) != ds.info.dims:
            raise ConfigError(f"the plan is for {plan.get('dims')}D data but the data set is {ds.info.dims}D", where=plan_src, fix="plan this data set")
        plan_file = Path(plan_src)
    else:
        fp = make_fingerprint(ds, progress=progress)
        plan = make_plan(fp, dims=ds.info.dims, gpu_memory_gb=gpu_memory_gb, cpu_cores=cpu_cores, ras_spacings=ras_spacings(ds) if ds.info.dims == 3 else None)
        plan_file = write_plan(plan, ds.root / PLAN_FILE)
    spec = resolve_spec(config, ds, plan, fp)
    pc = config.data.preprocess
    out = Path(pc.cache_dir) if pc.cache_dir else default_cache_dir(ds, spec)
    cache = prepare(ds, spec, out, overwrite=overwrite, progress=progress)
    return plan, plan_file, cache
