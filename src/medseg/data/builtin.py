"""Data sets that ship with medseg: nothing is downloaded.

- ``phantom2d`` / ``phantom3d``: a deterministic cardiac short-axis MRI phantom with several patients
  (LV blood pool, myocardium, RV) rendered with per-patient shape, position and contrast, partial-volume
  blur, a smooth bias field and Rician noise.
- ``mni152-tissue`` / ``mni152-tissue-2d``: a real brain MRI, the MNI152 T1 template with its grey /
  white-matter probability maps as shipped inside the ``nilearn`` package (extra ``medseg[brain]``).

``materialize(name, options)`` writes a built-in into a canonical data set folder (cached by the
hash of its options) and returns the path.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from scipy import ndimage

from medseg.core.case import Case
from medseg.core.errors import ConfigError, DependencyError
from medseg.core.registry import Registry
from medseg.data.splits import make_splits
from medseg.data.store import DatasetInfo, load_dataset, make_classes, write_dataset


@dataclass
class BuiltinData:
    info: DatasetInfo
    cases: Iterator[Case]
    splits: dict[str, Any] | None = None


BUILTINS: Registry[Callable[..., BuiltinData]] = Registry("built-in data set", ConfigError)

CARDIAC_CLASSES = ["background", "LV blood pool", "myocardium", "RV"]


# --------------------------------------------------------------------------------------------
# cardiac phantom
# --------------------------------------------------------------------------------------------
def _patient_params(rng: np.random.Generator) -> dict[str, float]:
    return {
        "cx": rng.uniform(0.42, 0.58),
        "cy": rng.uniform(0.42, 0.58),
        "r_lv": rng.uniform(0.085, 0.12),
        "t_myo": rng.uniform(0.035, 0.05),
        "ecc": rng.uniform(0.85, 1.15),
        "theta": rng.uniform(0, np.pi),
        "rv_angle": np.pi + rng.uniform(-0.5, 0.5),
        "rv_scale": rng.uniform(1.1, 1.5),
        "blood": rng.uniform(0.85, 1.0),
        "myo": rng.uniform(0.2, 0.35),
        "tissue": rng.uniform(0.4, 0.55),
        "fat": rng.uniform(0.7, 0.9),
        "lung": rng.uniform(0.03, 0.1),
        "noise": rng.uniform(0.02, 0.05),
        "bias": rng.uniform(0.1, 0.3),
        "spacing": rng.uniform(1.2, 1.8),
        "gain": rng.uniform(600, 1400),
    }


def _render_slice(p: dict[str, float], level: float, size: tuple[int, int], rng: np.random.Generator, oversample: int = 2) -> tuple[np.ndarray, np.ndarray]:
    """Render one short-axis slice. ``level`` ∈ [0, 1): 0 at the base, towards 1 at the apex."""
    h, w = size
    hh, ww = h * oversample, w * oversample
    y, x = np.mgrid[0:hh, 0:ww].astype(np.float32)
    y = (y + 0.5) / hh
    x = (x + 0.5) / ww
    taper = float(np.sqrt(max(1e-3, 1.0 - level**2)))
    c, s = np.cos(p["theta"]), np.sin(p["theta"])

    def ell(cx: float, cy: float, a: float, b: float) -> np.ndarray:
        dx, dy = x - cx, y - cy
        u = c * dx + s * dy
        v = -s * dx + c * dy
        return (u / a) ** 2 + (v / b) ** 2

    r_lv = p["r_lv"] * taper
    r_epi = r_lv + p["t_myo"]
    lv = ell(p["cx"], p["cy"], r_lv * p["ecc"], r_lv / p["ecc"]) <= 1
    epi = ell(p["cx"], p["cy"], r_epi * p["ecc"], r_epi / p["ecc"]) <= 1
    rv_r = r_epi * p["rv_scale"] * max(0.0, 1.0 - 1.3 * level)
    off = r_epi * 0.95
    rv_cx = p["cx"] + off * np.cos(p["rv_angle"])
    rv_cy = p["cy"] + off * np.sin(p["rv_angle"])
    rv = (ell(rv_cx, rv_cy, rv_r * 1.2, rv_r * 0.8) <= 1) & ~epi if rv_r > 0 else np.zeros_like(lv)
    rv_wall = (ell(rv_cx, rv_cy, rv_r * 1.2 + 0.012, rv_r * 0.8 + 0.012) <= 1) & ~epi & ~rv if rv_r > 0 else np.zeros_like(lv)
    body = ell(0.5, 0.5, 0.46, 0.40) <= 1
    fat = body & ~(ell(0.5, 0.5, 0.43, 0.37) <= 1)
    lungs = (ell(0.27, 0.45, 0.12, 0.2) <= 1) | (ell(0.75, 0.45, 0.12, 0.2) <= 1)
    lungs &= ~epi & ~rv & ~rv_wall

    img = np.zeros((hh, ww), np.float32)
    img[body] = p["tissue"]
    img[fat] = p["fat"]
    img[lungs] = p["lung"]
    img[epi] = p["myo"]
    img[rv_wall] = p["myo"]
    img[lv] = p["blood"]
    img[rv] = p["blood"] * 0.95
    # papillary muscles: small dark blobs inside the LV blood pool, labelled as blood pool
    for k in range(2):
        ang = p["theta"] + np.pi / 3 + k * np.pi / 2.5
        pc = ell(p["cx"] + 0.55 * r_lv * np.cos(ang), p["cy"] + 0.55 * r_lv * np.sin(ang), 0.2 * r_lv, 0.2 * r_lv) <= 1
        img[pc & lv] = p["myo"] * 1.3

    label_hi = np.zeros((hh, ww), np.int16)
    label_hi[epi] = 2
    label_hi[lv] = 1
    label_hi[rv] = 3
    # partial-volume: average the oversampled intensities; labels by the centre sample
    img = img.reshape(h, oversample, w, oversample).mean(axis=(1, 3))
    label = label_hi[oversample // 2 :: oversample, oversample // 2 :: oversample]
    img = ndimage.gaussian_filter(img, 0.6)
    # smooth multiplicative bias field
    yy, xx = np.mgrid[0:h, 0:w] / np.array([h, w]).reshape(2, 1, 1)
    a, b, cc = rng.uniform(-1, 1, 3) * p["bias"]
    img *= np.exp(a * (xx - 0.5) + b * (yy - 0.5) + cc * (xx - 0.5) * (yy - 0.5))
    # Rician noise
    n1 = rng.normal(0, p["noise"], img.shape)
    n2 = rng.normal(0, p["noise"], img.shape)
    img = np.sqrt((img + n1) ** 2 + n2**2).astype(np.float32)
    return img * p["gain"], label


@BUILTINS.register("phantom2d", dims=2, description="synthetic cardiac short-axis MRI slices (LV, myocardium, RV)")
def phantom2d(n_patients: int = 30, slices_per_patient: int = 6, size: int = 96, seed: int = 0) -> BuiltinData:
    """2D slices of the cardiac phantom; each patient contributes ``slices_per_patient`` slices.

    Args:
        n_patients: number of synthetic patients.
        slices_per_patient: short-axis slices from base to near-apex per patient.
        size: image height and width in pixels.
        seed: the generator's seed; the same options always produce the same data.
    """
    info = DatasetInfo(
        name="phantom2d",
        description="Synthetic cardiac short-axis MRI phantom, 2D slices",
        dims=2,
        modalities=["MRI"],
        classes=make_classes(CARDIAC_CLASSES),
        source={"builtin": "phantom2d", "n_patients": n_patients, "slices_per_patient": slices_per_patient, "size": size, "seed": seed},
    )

    def gen() -> Iterator[Case]:
        for pi in range(n_patients):
            rng = np.random.default_rng([seed, pi])
            p = _patient_params(rng)
            origin = tuple(rng.uniform(-150, -100, 2))
            for si in range(slices_per_patient):
                level = 0.75 * si / max(1, slices_per_patient - 1)
                img, lab = _render_slice(p, level, (size, size), rng)
                yield Case.from_spacing(
                    img[None],
                    lab,
                    (p["spacing"], p["spacing"]),
                    case_id=f"p{pi:03d}_s{si:02d}",
                    patient_id=f"p{pi:03d}",
                    origin=origin,
                    meta={"slice": si},
                )

    return BuiltinData(info, gen())


@BUILTINS.register("phantom3d", dims=3, description="synthetic cardiac short-axis MRI volumes (LV, myocardium, RV)")
def phantom3d(n_patients: int = 12, size: int = 64, depth: int = 16, slice_thickness: float = 6.0, seed: int = 0) -> BuiltinData:
    """3D short-axis stacks of the cardiac phantom, one volume per patient, anisotropic spacing.

    Args:
        n_patients: number of volumes (one per patient).
        size: in-plane size in pixels.
        depth: number of slices from base to apex.
        slice_thickness: slice spacing in millimetres.
        seed: the generator's seed.
    """
    info = DatasetInfo(
        name="phantom3d",
        description="Synthetic cardiac short-axis MRI phantom, 3D stacks",
        dims=3,
        modalities=["MRI"],
        classes=make_classes(CARDIAC_CLASSES),
        source={"builtin": "phantom3d", "n_patients": n_patients, "size": size, "depth": depth, "slice_thickness": slice_thickness, "seed": seed},
    )

    def gen() -> Iterator[Case]:
        for pi in range(n_patients):
            rng = np.random.default_rng([seed, pi])
            p = _patient_params(rng)
            n_heart = max(2, round(depth * 0.8))
            start = int(rng.integers(0, depth - n_heart + 1))
            imgs, labs = [], []
            for z in range(depth):
                k = z - start
                level = k / n_heart if 0 <= k < n_heart else 0.999
                img, lab = _render_slice(p, level, (size, size), rng)
                if not 0 <= k < n_heart:
                    lab = np.zeros_like(lab)
                imgs.append(img)
                labs.append(lab)
            origin = tuple(rng.uniform(-150, -100, 3))
            yield Case.from_spacing(
                np.stack(imgs)[None],
                np.stack(labs),
                (slice_thickness, p["spacing"], p["spacing"]),
                case_id=f"p{pi:03d}",
                patient_id=f"p{pi:03d}",
                origin=origin,
            )

    return BuiltinData(info, gen())


# --------------------------------------------------------------------------------------------
# MNI152 tissue (real MRI shipped in nilearn)
# --------------------------------------------------------------------------------------------
TISSUE_CLASSES = ["background", "grey matter", "white matter"]


def _mni152(resolution: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    try:
        from nilearn import datasets as nd
    except ImportError:
        raise DependencyError("the mni152-tissue data set needs the nilearn package", where="data.dataset", fix="pip install 'medseg[brain]'") from None
    t1 = nd.load_mni152_template(resolution=resolution)
    gm = nd.load_mni152_gm_template(resolution=resolution).get_fdata()
    wm = nd.load_mni152_wm_template(resolution=resolution).get_fdata()
    img = t1.get_fdata().astype(np.float32)
    csf_bg = np.clip(1.0 - gm - wm, 0, 1)
    label = np.argmax(np.stack([csf_bg, gm, wm]), axis=0).astype(np.int16)
    label[(gm + wm) < 0.3] = 0
    return img, label, np.asarray(t1.affine, dtype=np.float64)


@BUILTINS.register("mni152-tissue", dims=3, description="real brain MRI: MNI152 T1 with grey/white matter (nilearn)")
def mni152_tissue(resolution: int = 2) -> BuiltinData:
    """The MNI152 2009 T1 template (one real brain MRI) labelled grey / white matter.

    Labels are the argmax of (other, GM, WM) probability maps inside the brain. Needs ``nilearn``.
    """
    img, label, affine = _mni152(resolution)
    info = DatasetInfo(
        name="mni152-tissue",
        description="MNI152 T1 template with grey/white-matter labels from its probability maps",
        dims=3,
        modalities=["MRI"],
        classes=make_classes(TISSUE_CLASSES),
        source={"builtin": "mni152-tissue", "resolution": resolution, "origin": "nilearn MNI152 ICBM 2009 templates"},
    )
    case = Case(img[None], label, affine, case_id="mni152", patient_id="mni152")
    return BuiltinData(info, iter([case]))


@BUILTINS.register("mni152-tissue-2d", dims=2, description="axial slices of the MNI152 brain MRI, grey/white matter (nilearn)")
def mni152_tissue_2d(resolution: int = 2, slab: int = 8, min_brain_fraction: float = 0.05) -> BuiltinData:
    """Axial slices of ``mni152-tissue``. Consecutive blocks of ``slab`` slices share a pseudo-patient
    id so that neighbouring, nearly identical slices never sit on both sides of a split."""
    img, label, affine = _mni152(resolution)
    info = DatasetInfo(
        name="mni152-tissue-2d",
        description="Axial slices of the MNI152 T1 template with grey/white-matter labels",
        dims=2,
        modalities=["MRI"],
        classes=make_classes(TISSUE_CLASSES),
        source={"builtin": "mni152-tissue-2d", "resolution": resolution, "slab": slab},
    )

    def gen() -> Iterator[Case]:
        for z in range(img.shape[2]):
            lab = label[:, :, z]
            if (lab > 0).mean() < min_brain_fraction:
                continue
            a2 = np.eye(3)
            a2[:2, :2] = affine[:2, :2]
            a2[:2, 2] = (affine @ np.array([0, 0, z, 1.0]))[:2]
            yield Case(
                img[None, :, :, z], lab, a2, case_id=f"z{z:03d}", patient_id=f"slab{z // slab:02d}", meta={"z": z, "z_mm": float((affine @ [0, 0, z, 1])[2])}
            )

    return BuiltinData(info, gen())


# --------------------------------------------------------------------------------------------
def default_cache_dir() -> Path:
    return Path(os.environ.get("MEDSEG_CACHE", Path.home() / ".cache" / "medseg")).expanduser()


def list_builtins() -> list[tuple[str, int, str]]:
    return [(n, BUILTINS.meta(n)["dims"], BUILTINS.meta(n)["description"]) for n in BUILTINS.names()]


def make_builtin(name: str, **options: Any) -> BuiltinData:
    builder = BUILTINS.get(name)
    check_builtin_options(name, builder, options)
    try:
        return builder(**options)
    except TypeError as e:
        raise ConfigError(f"bad option for built-in data set {name!r}: {e}", where="data.builtin", fix="see `medseg datasets`") from None


def check_builtin_options(name: str, builder: Any, options: dict[str, Any]) -> None:
    """Counts and sizes of a generator must be positive (``seed`` any integer): refused before anything is generated."""
    import inspect

    params = inspect.signature(builder).parameters
    for key, value in options.items():
        default = params[key].default if key in params else None
        if key == "seed" or isinstance(default, bool) or not isinstance(default, int | float):
            continue
        ok = isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value) and value > 0
        if ok and isinstance(default, int):
            ok = float(value).is_integer()
        if not ok:
            kind = "a whole number" if isinstance(default, int) else "a number"
            raise ConfigError(
                f"option {key} of built-in data set {name!r} must be {kind} > 0 (got {value!r})", where=f"data.builtin.{key}", fix="see `medseg datasets`"
            )


def materialize(name: str, options: dict[str, Any] | None = None, cache_dir: str | Path | None = None, seed: int = 0) -> Path:
    """Write a built-in data set (with a seeded 80/10/10 patient split) and return its folder.

    The folder name carries a hash of the options, so repeated calls reuse it.
    """
    options = dict(options or {})
    key = hashlib.sha1(json.dumps({"name": name, "options": options, "seed": seed}, sort_keys=True).encode()).hexdigest()[:10]
    root = Path(cache_dir) if cache_dir else default_cache_dir()
    out = root / "datasets" / f"{name}-{key}"
    if (out / "dataset.json").is_file():
        return out
    data = make_builtin(name, **options)
    ds = write_dataset(out, data.info, data.cases, overwrite=True)
    if data.splits is None:
        from medseg.data.splits import save_splits

        save_splits(ds.splits_path, make_splits(ds.labelled_patients, seed=seed))
    return load_dataset(out).root
