"""Experiment planning from the data set fingerprint, in the spirit of nnU-Net's planner.

:func:`make_plan` turns ``fingerprint.json`` (``medseg inspect``) into ``plan.json``::

    {"dataset": name, "dims": 3, "target_spacing": [...], "target_spacing_ras": [...] | null,
     "anisotropic_axis": 0 | null,
     "normalization": ["ct" | "zscore", ...],             # one per channel, by modality
     "median_shape": [...],                               # after resampling to target_spacing
     "budget": {"gpu_memory_gb": 8, "cpu_cores": 8, "num_workers": 7},
     "configurations": {
        "2d": {"patch_size", "batch_size", "pool_per_axis", "kernel_sizes", "strides", "n_stages", "spacing"},
        "3d": {...}},                                     # 3D only for 3D data sets
     "recommended": "2d" | "3d", "why": "..."}

The memory model is a rule of thumb calibrated on nnU-Net's defaults (a 3D U-Net with 32→320 features and
batch 2 of 128³ fits about 10 GB; a 2D one 12 × 512² in about the same): voxels × batch scale linearly with
the GPU budget. Every value can be overridden in the config (``data.patch_size``, ``data.batch_size``,
``data.preprocess.spacing``, ``data.preprocess.normalize``, ``model.params``).
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any

import numpy as np

from medseg.core.atomic import write_json
from medseg.core.errors import ConfigError, DatasetError

PLAN_FILE = "plan.json"
#: voxels × batch per GB of GPU memory (see the module docstring)
VOXELS_PER_GB = {2: 12 * 512 * 512 / 10, 3: 2 * 128**3 / 10}
MIN_FEATURE_SIZE = 4
MAX_STAGES = {2: 7, 3: 6}
ANISOTROPY = 3.0


def _check_spacings(fp: dict[str, Any]) -> None:
    for c in fp.get("per_case", []):
        sp = np.asarray(c["spacing"], dtype=float)
        if not np.all(np.isfinite(sp)) or np.any(sp <= 0):
            raise DatasetError(f"case {c['id']!r} has spacing {c['spacing']} (zero or NaN)", where="fingerprint", fix="repair its voxel size")


def target_spacing(fp: dict[str, Any], anisotropy: float = ANISOTROPY) -> tuple[list[float], int | None]:
    """Median spacing per axis; on a strongly anisotropic axis the 10th percentile of that axis.

    Returns:
        ``(spacing, coarse_axis)`` with ``coarse_axis`` None when the median spacing is not anisotropic.
    """
    _check_spacings(fp)
    sp = np.array([c["spacing"] for c in fp["per_case"]], dtype=float)
    med = np.median(sp, axis=0)
    coarse = int(np.argmax(med))
    if len(med) == 3 and med[coarse] / np.min(med) > anisotropy:
        med[coarse] = float(np.percentile(sp[:, coarse], 10))
        return med.tolist(), coarse
    return med.tolist(), None


def topology(patch: list[int], spacing: list[float], dims: int) -> dict[str, Any]:
    """Poolings per axis (nnU-Net rule): pool an axis while its feature map stays ≥ 4 and its spacing is
    at most twice the finest; 3×3 kernels except along an axis still much coarser than the others."""
    size = [float(p) for p in patch]
    sp = [float(s) for s in spacing]
    pools = [0] * dims
    strides: list[list[int]] = []
    kernels: list[list[int]] = [[3 if s <= 2 * min(sp) else 1 for s in sp]]
    for _ in range(MAX_STAGES[dims] - 1):
        finest = min(sp)
        axes = [a for a in range(dims) if size[a] / 2 >= MIN_FEATURE_SIZE and sp[a] <= 2 * finest]
        if not axes:
            break
        stride = [2 if a in axes else 1 for a in range(dims)]
        for a in axes:
            size[a] /= 2
            sp[a] *= 2
            pools[a] += 1
        strides.append(stride)
        kernels.append([3 if s <= 2 * min(sp) else 1 for s in sp])
    return {"pool_per_axis": pools, "strides": strides, "kernel_sizes": kernels, "n_stages": len(strides) + 1}


#: :func:`shrink_configuration` leaves at least this many voxels along each axis (or the whole axis when shorter)
MIN_PATCH_SIDE = 32


def _fit_patch(shape: list[float], spacing: list[float], dims: int, budget_voxels: float, *, min_batch: int = 2, min_side: int = 1) -> list[int]:
    """Largest patch (≤ the median shape, divisible by 2^pool per axis) whose ``min_batch`` copies fit the budget;
    no axis is shrunk below ``min_side`` voxels (the budget may then be exceeded)."""
    patch = [max(round(float(s)), 1) for s in shape]
    for _ in range(200):
        top = topology(patch, spacing, dims)
        div = [2**p for p in top["pool_per_axis"]]
        patch = [max(d, math.ceil(p / d) * d) for p, d in zip(patch, div, strict=True)]
        if np.prod(patch) * min_batch <= budget_voxels:
            return patch
        # shrink the axis with the largest physical extent, among those that may still shrink
        room = [a for a in range(dims) if patch[a] > div[a] and patch[a] - div[a] >= min_side]
        if not room:
            break
        a = max(room, key=lambda i: patch[i] * spacing[i])
        patch[a] -= div[a]
    return patch


def shrink_configuration(conf: dict[str, Any], factor: float, min_side: int = MIN_PATCH_SIDE) -> dict[str, Any]:
    """``conf`` with a patch of at most ``factor`` × its voxels — for a device slower than the plan assumed, where a
    smaller patch buys the optimiser steps a short budget needs. Same batch and spacing; the axis with the largest
    physical extent shrinks first (as when the plan fits its patch to the memory budget), none below ``min_side``
    voxels; the poolings and kernels are those of the new patch. A patch that cannot shrink comes back unchanged."""
    patch, spacing = [int(p) for p in conf["patch_size"]], [float(s) for s in conf["spacing"]]
    dims, batch = len(patch), int(conf["batch_size"])
    small = _fit_patch(patch, spacing, dims, float(np.prod(patch)) * batch * factor, min_batch=batch, min_side=min_side)
    return {**conf, "patch_size": small, **topology(small, spacing, dims)}


def _configuration(shape: list[float], spacing: list[float], dims: int, gpu_gb: float, workers: int, *, total_voxels: float) -> dict[str, Any]:
    budget = VOXELS_PER_GB[dims] * gpu_gb
    patch = _fit_patch(shape, spacing, dims, budget)
    vox = float(np.prod(patch))
    batch = max(2, int(budget // vox))
    cap_dataset = max(2, int(0.05 * total_voxels // vox))  # a batch never covers more than 5% of the data set (nnU-Net)
    cap_cpu = max(2, 4 * max(workers, 1)) if dims == 3 else max(2, 16 * max(workers, 1))  # what the loaders can augment
    batch = min(batch, cap_dataset, cap_cpu)
    top = topology(patch, spacing, dims)
    return {"patch_size": patch, "batch_size": int(batch), "spacing": [float(s) for s in spacing], **top}


def make_plan(
    fp: dict[str, Any],
    *,
    dims: int | None = None,
    gpu_memory_gb: float = 8.0,
    cpu_cores: int | None = None,
    configurations: tuple[str, ...] | None = None,
    anisotropy: float = ANISOTROPY,
    ras_spacings: dict[str, list[float]] | None = None,
) -> dict[str, Any]:
    """Derive the plan from a fingerprint.

    Args:
        fp: the fingerprint (``medseg.data.inspect.fingerprint``).
        dims: the data set's dimensionality (default: the fingerprint's).
        gpu_memory_gb: GPU memory the patch × batch must fit.
        cpu_cores: CPU cores for the loaders (default: this machine's).
        configurations: which to plan (``"2d"``, ``"3d"``); default all that apply.
        anisotropy: spacing ratio above which an axis counts as strongly anisotropic.
        ras_spacings: per-case spacings after RAS reorientation; adds ``target_spacing_ras`` (used when
            ``data.preprocess.orientation`` is RAS, since reorientation permutes the axes).

    Raises:
        ConfigError: a 3D configuration asked of a 2D data set; a non-positive budget.
        DatasetError: a case with zero or NaN spacing.
    """
    dims = int(dims or fp["dims"])
    if gpu_memory_gb <= 0:
        raise ConfigError(f"GPU memory budget must be positive (got {gpu_memory_gb})", where="--gpu-memory-gb", fix="give the GPU's memory in GB, e.g. 8")
    wanted = tuple(configurations or (("2d", "3d") if dims == 3 else ("2d",)))
    if "3d" in wanted and dims == 2:
        raise ConfigError("a 3D configuration was asked for a 2D data set", where="configuration", fix="use the 2d configuration (data.configuration: 2d)")
    cores = int(cpu_cores or os.cpu_count() or 1)
    workers = max(1, min(cores - 1, 12))
    spacing, coarse = target_spacing(fp, anisotropy)
    shapes = np.array([c["shape"] for c in fp["per_case"]], dtype=float)
    spacings = np.array([c["spacing"] for c in fp["per_case"]], dtype=float)
    resampled = shapes * spacings / np.asarray(spacing)[None]
    median_shape = np.median(resampled, axis=0).tolist()
    total = float(np.prod(resampled, axis=1).sum())
    confs: dict[str, Any] = {}
    if "3d" in wanted:
        confs["3d"] = _configuration(median_shape, spacing, 3, gpu_memory_gb, workers, total_voxels=total)
    if "2d" in wanted:
        inplane = [a for a in range(dims) if a != (coarse if coarse is not None else 0)] if dims == 3 else [0, 1]
        sh2 = [median_shape[a] for a in inplane]
        sp2 = [spacing[a] for a in inplane]
        c2 = _configuration(sh2, sp2, 2, gpu_memory_gb, workers, total_voxels=total)  # slices together hold the same voxels
        if dims == 3:
            c2["slice_axis"] = coarse if coarse is not None else 0
        confs["2d"] = c2
    modalities = fp.get("modalities", [])
    normalization = ["ct" if str(m).strip().upper() == "CT" else "zscore" for m in modalities]
    aniso = max(spacing) / min(spacing)
    if dims == 2 or "3d" not in confs:
        rec, why = "2d", "the data set is 2D" if dims == 2 else "only 2D was planned"
    elif aniso > anisotropy:
        rec, why = "2d", f"voxels are strongly anisotropic ({aniso:.2g}:1): slices carry most of the information"
    else:
        rec, why = "3d", "near-isotropic volumes: 3D context helps"
    return {
        "dataset": fp.get("dataset"),
        "dims": dims,
        "target_spacing": [float(s) for s in spacing],
        "target_spacing_ras": None
        if not ras_spacings
        else target_spacing({"per_case": [{"id": k, "spacing": v} for k, v in ras_spacings.items()]}, anisotropy)[0],
        "anisotropic_axis": coarse,
        "normalization": normalization,
        "median_shape": [float(s) for s in median_shape],
        "budget": {"gpu_memory_gb": gpu_memory_gb, "cpu_cores": cores, "num_workers": workers},
        "configurations": confs,
        "recommended": rec,
        "why": why,
    }


def write_plan(plan: dict[str, Any], path: str | Path) -> Path:
    """Write ``plan.json`` atomically."""
    return write_json(path, plan)


def load_plan(path: str | Path) -> dict[str, Any]:
    """Read a ``plan.json``; a missing or broken file is a ``ConfigError`` naming it."""
    import json

    p = Path(path)
    if not p.is_file():
        raise ConfigError("plan file not found", where=p, fix="write one with `medseg prepare DATASET` (it saves plan.json) or fix data.plan")
    try:
        plan = json.loads(p.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise ConfigError(f"invalid JSON ({e.msg} at line {e.lineno})", where=p, fix="regenerate it with `medseg prepare`") from None
    if not isinstance(plan, dict) or "configurations" not in plan or "target_spacing" not in plan:
        raise ConfigError("not a plan (no configurations/target_spacing)", where=p, fix="regenerate it with `medseg prepare`")
    return plan


def plan_configuration(plan: dict[str, Any], which: str = "auto", where: str = "data.configuration") -> dict[str, Any]:
    """The chosen configuration of a plan (``auto`` = the recommendation)."""
    name = plan.get("recommended", "3d") if which == "auto" else which
    if name == "3d" and int(plan.get("dims", 3)) == 2:
        raise ConfigError("a 3D configuration was asked for a 2D data set", where=where, fix="use 2d")
    if name not in plan["configurations"]:
        raise ConfigError(f"the plan has no {name} configuration (it has {', '.join(plan['configurations'])})", where=where, fix="choose one the plan has")
    return plan["configurations"][name]
