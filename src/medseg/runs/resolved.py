"""The values a run actually trained with, resolved once at training time and saved in ``run.json``.

A config may leave things open — ``data.patch_size: null`` with ``data.plan`` set takes the plan's
patch, ``data.preprocess.spacing: plan`` the plan's spacing, ``normalize: auto`` a scheme by
modality. Training resolves them (:func:`resolve_training`); the record is saved as
``run.json["resolved"]`` and in the checkpoint, and inference reads it instead of the config, so a
run predicts exactly as it was trained and validated (a sliding window of the plan's patch, the same
normalisation, slices cut in the same plane).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

from medseg.config import Config
from medseg.runs.folder import read_info, read_preprocess

#: the anatomical plane of each array axis of a volume reoriented to RAS
RAS_PLANES = ("sagittal", "coronal", "axial")


@dataclass
class Resolved:
    """What the network was trained on.

    Args:
        spatial_dims: the network's spatial dimensions (2 for slices of volumes).
        in_channels: channels of its input (times ``2k+1`` for 2.5D context slices).
        class_names: names of its output classes (background first unless multi-label).
        multi_label: sigmoid per class instead of softmax.
        data_dims: spatial dimensions of the data set's cases.
        patch_size: the training patch (the plan's when ``data.patch_size`` is null); images larger
            than it are predicted with a sliding window; None = whole images.
        slices: a 2D network trained on slices of 3D volumes.
        slice_axis: the array axis (of the network's input space) cut into slices.
        slice_plane: the anatomical plane of those slices (from the training cases' affine), so a
            volume stored in another axis order is sliced in the same plane; None when unknown.
        context_slices: 2.5D neighbours on each side.
        normalization: the intensity normalisation per channel (``zscore`` = per case on its own grid).
        spacing: the target spacing of the preprocessing (None = each case's own grid).
        preprocess: the preprocessing recipe (``preprocess.json``), applied before and inverted after
            prediction; None when each case was only z-scored.
    """

    spatial_dims: int
    in_channels: int
    class_names: list[str]
    multi_label: bool = False
    data_dims: int = 2
    patch_size: list[int] | None = None
    slices: bool = False
    slice_axis: int = 0
    slice_plane: str | None = None
    context_slices: int = 0
    normalization: list[str] | None = None
    spacing: list[float] | None = None
    preprocess: dict[str, Any] | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Resolved:
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in known})

    @property
    def volume_plane(self) -> str | None:
        """The plane a 2D network predicts a volume in: the one it was trained on (slices of volumes), or
        axial for a network trained on 2D images (medical 2D images are axial slices unless stated)."""
        if self.spatial_dims != 2:
            return None
        return self.slice_plane if self.slices else "axial"


def _plane_of(affine: Any, axis: int) -> str | None:
    import numpy as np

    from medseg.viz.render import plane_axes

    aff = np.asarray(affine, dtype=np.float64)
    if aff.shape != (4, 4):
        return None
    return next(p for p, a in plane_axes(aff).items() if a == axis)


def resolve_training(config: Config, dm: Any) -> Resolved:
    """Resolve the record from the data module a run trains with (``medseg.data.loading.SegDataModule``)."""
    d = config.data
    info = dm.ds.info
    spec = dm.cache.spec.to_dict() if dm.cache is not None else None
    plane = None
    if d.slices:
        first = dm.ids("train")[0]
        affine = dm.cache.record(first)["affine"] if dm.cache is not None else dm.ds.load_case(first).affine
        plane = _plane_of(affine, d.slice_axis)
    return Resolved(
        spatial_dims=dm.spatial_dims,
        in_channels=dm.in_channels,
        class_names=list(info.class_names),
        multi_label=bool(info.multi_label),
        data_dims=int(info.dims),
        patch_size=dm.patch_size(),
        slices=bool(d.slices),
        slice_axis=int(d.slice_axis),
        slice_plane=plane,
        context_slices=int(d.context_slices),
        normalization=list(spec["normalize"]) if spec else ["zscore"] * int(info.n_channels),
        spacing=None if not spec or spec.get("spacing") is None else [float(s) for s in spec["spacing"]],
        preprocess=spec,
    )


def derive_resolved(config: Config, hparams: dict[str, Any], preprocess: dict[str, Any] | None = None) -> Resolved:
    """The record of a run saved before records were kept: from its config and checkpoint (the plan's patch
    when the plan file is still there)."""
    d = config.data
    dims = int(hparams["spatial_dims"])
    ps = d.patch_size
    if ps is None and d.plan and Path(d.plan).is_file():
        from medseg.data.plan import load_plan, plan_configuration

        which = d.configuration if d.configuration != "auto" else ("2d" if dims == 2 else "3d")
        ps = plan_configuration(load_plan(d.plan), which)["patch_size"]
    return Resolved(
        spatial_dims=dims,
        in_channels=int(hparams["in_channels"]),
        class_names=list(hparams["class_names"]),
        multi_label=bool(hparams.get("multi_label", False)),
        data_dims=3 if d.slices else dims,
        patch_size=None if ps is None or len(ps) != dims else [int(p) for p in ps],
        slices=bool(d.slices),
        slice_axis=int(d.slice_axis),
        context_slices=int(d.context_slices),
        normalization=list(preprocess["normalize"]) if preprocess else ["zscore"] * (int(hparams["in_channels"]) // (2 * int(d.context_slices) + 1)),
        spacing=None if not preprocess or preprocess.get("spacing") is None else list(preprocess["spacing"]),
        preprocess=preprocess,
    )


def read_resolved(run_dir: str | Path, config: Config, hparams: dict[str, Any]) -> Resolved:
    """``run.json["resolved"]``, or for older runs the record derived from the config and checkpoint."""
    rec = read_info(run_dir).get("resolved")
    if rec:
        return Resolved.from_dict(rec)
    if hparams.get("resolved"):
        return Resolved.from_dict(hparams["resolved"])
    return derive_resolved(config, hparams, read_preprocess(run_dir))
