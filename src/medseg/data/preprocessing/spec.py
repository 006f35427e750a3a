"""The preprocessing recipe (:class:`PreprocessSpec`) and how a config, a plan and a fingerprint resolve it."""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from medseg.core.errors import ConfigError, DatasetError

CACHE_FORMAT = 1

NORMALIZATIONS = ("ct", "zscore", "zscore_nonzero", "clip01", "none")


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
        resize: fixed spatial size (0 keeps an axis, e.g. the slice axis of a volume cut into 2D slices), or None.
        pad_to: minimum spatial size, or None.
        labels: the regions the labels are read through (``data.regions`` and its ``regions_class_order``), or
            None: the cached labels are then region channels, so the hash differs (left out of the hash when None).
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
    labels: dict[str, Any] | None = None

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["clip_percentiles"] = list(self.clip_percentiles)
        if d["labels"] is None:  # the hash of every spec without regions stays what it was
            del d["labels"]
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
            keep = name == "resize" and 0 < v.count(0) < len(v)  # 0 keeps that axis's size (slices of a volume)
            if not all(math.isfinite(float(x)) and (float(x) > 0 or (keep and x == 0)) for x in v):
                raise ConfigError(f"{name} {list(v)} must be positive and finite", where=f"{where}.{name}", fix="give positive values")
        for n in self.normalize:
            if n not in NORMALIZATIONS:
                raise ConfigError(f"unknown normalisation {n!r}", where=f"{where}.normalize", fix=f"choose one of {', '.join(NORMALIZATIONS)}")
            if n == "ct" and not self.intensity:
                raise ConfigError("ct normalisation needs data-set intensity statistics", where=f"{where}.normalize", fix="resolve the spec with the data set")


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
        resize=_resize_axes(pc.resize, dims, config.data if isinstance(config, Config) else None),
        pad_to=None if pc.pad_to is None else [int(v) for v in pc.pad_to],
        labels=getattr(ds, "declaration", None),
    )
    spec.check()
    return spec


def _resize_axes(resize: list[int] | None, dims: int, data: Any) -> list[int] | None:
    """``data.preprocess.resize``; an in-plane size on a 3D data set cut into slices keeps the slice axis (0)."""
    if resize is None:
        return None
    out = [int(v) for v in resize]
    if data is not None and data.slices and dims == 3 and len(out) == 2:
        out.insert(data.slice_axis, 0)
    return out


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
        for i, (j, _) in enumerate(ras_ornt(aff)):
            new[int(j)] = sp[i]
        out[cid] = new.tolist()
    return out


def ras_ornt(affine: np.ndarray) -> np.ndarray:
    from nibabel.orientations import io_orientation

    return io_orientation(affine)
