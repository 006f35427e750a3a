"""Augmentation presets built from MONAI dictionary transforms; image and label always move together.

Presets (``data.augment`` or ``data.augmentation.preset``) are tables of transform parameters; any entry can
be changed per transform with ``data.augmentation.overrides`` (``{rotate: {prob: 0.5}, elastic: {prob: 0}}``):

=============  ======================================================  ========================================
transform      parameters                                              MONAI transform
=============  ======================================================  ========================================
``flip``       ``prob`` per axis, ``axes`` (null = all)                 ``RandFlipd`` (fused: one copy)
``rot90``      ``prob`` (last two axes; 180° if not square)             ``RandRotate90d``, shape kept
``rotate``     ``prob``, ``range`` (degrees, ±; 3D: every axis)         ``RandAffined`` (one resampling
``scale``      ``prob``, ``range`` ([min, max] zoom)                    for rotation and scaling together)
``elastic``    ``prob``, ``sigma`` [lo, hi], ``magnitude`` [lo, hi]     ``Rand2DElasticd`` / ``Rand3DElasticd``
``noise``      ``prob``, ``std``                                        ``RandGaussianNoised``
``blur``       ``prob``, ``sigma`` [lo, hi]                             ``RandGaussianSmoothd``
``brightness`` ``prob``, ``range`` (multiplicative)                     ``RandScaleIntensityd``
``contrast``   ``prob``, ``range`` (around the mean)                    ``RandScaleIntensityFixedMeand``
``gamma``      ``prob``, ``range``                                      ``RandAdjustContrastd``
``lowres``     ``prob``, ``zoom`` [lo, hi]                              ``RandSimulateLowResolutiond``
=============  ======================================================  ========================================

Labels are resampled with nearest interpolation (class indices, or one channel per label for multi-label
data); intensity transforms touch only the image. Everything runs on plain tensors (no MetaTensor
bookkeeping), and rotation and scaling share a single resampling — the reasons the ``default`` preset is
faster than the same transforms chained one by one.
"""

from __future__ import annotations

import copy
import math
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from monai import transforms as mt
from monai.transforms.utils import create_rotate, create_scale

from medseg.core.errors import ConfigError

PRESETS: dict[str, dict[str, dict[str, Any]]] = {
    "none": {},
    "light": {
        "flip": {"prob": 0.5, "axes": None},
        "rot90": {"prob": 0.5},
    },
    "default": {  # nnU-Net's default probabilities and ranges
        "rotate": {"prob": 0.2, "range": 30.0},
        "scale": {"prob": 0.2, "range": [0.7, 1.4]},
        "noise": {"prob": 0.1, "std": 0.1},
        "blur": {"prob": 0.2, "sigma": [0.5, 1.0]},
        "brightness": {"prob": 0.15, "range": [0.75, 1.25]},
        "contrast": {"prob": 0.15, "range": [0.75, 1.25]},
        "lowres": {"prob": 0.25, "zoom": [0.5, 1.0]},
        "gamma": {"prob": 0.3, "range": [0.7, 1.5]},
        "flip": {"prob": 0.5, "axes": None},
    },
    "heavy": {
        "rotate": {"prob": 0.4, "range": 45.0},
        "scale": {"prob": 0.4, "range": [0.65, 1.6]},
        "elastic": {"prob": 0.2, "sigma": [9.0, 13.0], "magnitude": [0.0, 200.0]},
        "noise": {"prob": 0.2, "std": 0.15},
        "blur": {"prob": 0.3, "sigma": [0.5, 1.5]},
        "brightness": {"prob": 0.3, "range": [0.7, 1.3]},
        "contrast": {"prob": 0.3, "range": [0.65, 1.5]},
        "lowres": {"prob": 0.3, "zoom": [0.5, 1.0]},
        "gamma": {"prob": 0.4, "range": [0.6, 1.6]},
        "flip": {"prob": 0.5, "axes": None},
        "rot90": {"prob": 0.5},
    },
}
TRANSFORMS = ("flip", "rot90", "rotate", "scale", "elastic", "noise", "blur", "brightness", "contrast", "gamma", "lowres")
ORDER = ("rotate", "scale", "elastic", "noise", "blur", "brightness", "contrast", "lowres", "gamma", "flip", "rot90")


def resolve_augmentation(preset: str, overrides: dict[str, dict[str, Any]] | None = None) -> dict[str, dict[str, Any]]:
    """A preset's transform table with the overrides merged in (``prob: 0`` switches a transform off).

    Raises:
        ConfigError: an unknown preset, transform or parameter.
    """
    if preset not in PRESETS:
        raise ConfigError(f"unknown augmentation preset {preset!r}", where="data.augment", fix=f"choose one of {', '.join(PRESETS)}")
    table = copy.deepcopy(PRESETS[preset])
    for name, params in (overrides or {}).items():
        if name not in TRANSFORMS:
            raise ConfigError(f"unknown augmentation {name!r}", where=f"data.augmentation.overrides.{name}", fix=f"choose among {', '.join(TRANSFORMS)}")
        base = table.get(name) or copy.deepcopy(_DEFAULTS[name])
        for k in params:
            if k not in _DEFAULTS[name]:
                raise ConfigError(f"{name} has no parameter {k!r}", where=f"data.augmentation.overrides.{name}.{k}", fix=f"use {', '.join(_DEFAULTS[name])}")
        base.update(params)
        table[name] = base
    return {k: v for k, v in table.items() if float(v.get("prob", 0)) > 0}


_DEFAULTS: dict[str, dict[str, Any]] = {name: next((PRESETS[p][name] for p in ("heavy", "default", "light") if name in PRESETS[p]), {}) for name in TRANSFORMS}


def build_augmentation(table: dict[str, dict[str, Any]], spatial_dims: int, keys: tuple[str, ...] = ("image", "label")) -> list[Any]:
    """MONAI transforms for a resolved table (see :func:`resolve_augmentation`), in a fixed order."""
    img = keys[0]
    has_label = len(keys) > 1
    modes = ("bilinear", "nearest") if has_label else ("bilinear",)
    pads = ("zeros", "zeros") if has_label else ("zeros",)
    out: list[Any] = []
    rot, sc = table.get("rotate"), table.get("scale")
    if rot or sc:
        out.append(
            RandRotateScaled(
                keys=keys,
                spatial_dims=spatial_dims,
                rotate_prob=float(rot["prob"]) if rot else 0.0,
                rotate_range=float(rot["range"]) if rot else 0.0,
                scale_prob=float(sc["prob"]) if sc else 0.0,
                scale_range=tuple(sc["range"]) if sc else (1.0, 1.0),
            )
        )
    if "elastic" in table:
        e = table["elastic"]
        cls = mt.Rand3DElasticd if spatial_dims == 3 else mt.Rand2DElasticd
        kw: dict[str, Any] = {"sigma_range": tuple(e["sigma"]), "magnitude_range": tuple(e["magnitude"])}
        if spatial_dims == 2:
            kw = {"spacing": (max(e["sigma"]) * 2,) * 2, "magnitude_range": (e["magnitude"][0] / 100, e["magnitude"][1] / 100)}
        out.append(cls(keys=list(keys), prob=float(e["prob"]), mode=modes, padding_mode=pads, **kw))
    if "noise" in table:
        out.append(RandNoised(keys=(img,), prob=float(table["noise"]["prob"]), std=float(table["noise"]["std"])))
    if "blur" in table:
        s = tuple(table["blur"]["sigma"])
        out.append(mt.RandGaussianSmoothd(keys=[img], prob=float(table["blur"]["prob"]), sigma_x=s, sigma_y=s, sigma_z=s))
    if "brightness" in table:
        lo, hi = table["brightness"]["range"]
        out.append(mt.RandScaleIntensityd(keys=[img], prob=float(table["brightness"]["prob"]), factors=(lo - 1, hi - 1)))
    if "contrast" in table:
        lo, hi = table["contrast"]["range"]
        out.append(mt.RandScaleIntensityFixedMeand(keys=[img], prob=float(table["contrast"]["prob"]), factors=(lo - 1, hi - 1), preserve_range=True))
    if "lowres" in table:
        up = "trilinear" if spatial_dims == 3 else "bilinear"
        out.append(mt.RandSimulateLowResolutiond(keys=[img], prob=float(table["lowres"]["prob"]), zoom_range=tuple(table["lowres"]["zoom"]), upsample_mode=up))
    if "gamma" in table:
        out.append(mt.RandAdjustContrastd(keys=[img], prob=float(table["gamma"]["prob"]), gamma=tuple(table["gamma"]["range"])))
    if "flip" in table:
        axes = table["flip"].get("axes")
        out.append(RandFlipAxesd(keys=keys, prob=float(table["flip"]["prob"]), axes=list(range(spatial_dims)) if axes is None else [int(a) for a in axes]))
    if "rot90" in table:
        out.append(RandRot90d(keys=keys, prob=float(table["rot90"]["prob"]), axes=(spatial_dims - 2, spatial_dims - 1)))
    return out


def augmentation_pipeline(
    preset: str, spatial_dims: int, overrides: dict[str, dict[str, Any]] | None = None, keys: tuple[str, ...] = ("image", "label")
) -> mt.Compose:
    """The whole augmentation as one ``Compose`` on plain tensors (``EnsureTyped(track_meta=False)`` first)."""
    table = resolve_augmentation(preset, overrides)
    return mt.Compose([mt.EnsureTyped(keys=list(keys), track_meta=False), *build_augmentation(table, spatial_dims, keys)])


class RandRotateScaled(mt.RandomizableTransform, mt.MapTransform):
    """Random rotation and scaling about the patch centre in one resampling (image linear, label nearest).

    Rotation and scaling are drawn independently (each with its own probability, as nnU-Net does) and
    applied together: one ``torch.nn.functional.affine_grid`` + ``grid_sample`` per key, instead of one
    resampling per transform and MONAI's float64 coordinate grid. Scaling alone needs no grid: it is a
    ``torch.nn.functional.interpolate`` of the centre region, like MONAI's ``RandZoom``. The matrices come
    from ``monai.transforms.utils.create_rotate`` / ``create_scale``.

    Args:
        keys: image key first, then the label key (optional).
        spatial_dims: 2 or 3.
        rotate_prob: probability of a rotation.
        rotate_range: maximum angle in degrees (every axis in 3D).
        scale_prob: probability of a scaling.
        scale_range: (min, max) zoom factor; > 1 magnifies.
    """

    def __init__(
        self,
        keys: tuple[str, ...],
        spatial_dims: int,
        *,
        rotate_prob: float = 0.2,
        rotate_range: float = 30.0,
        scale_prob: float = 0.2,
        scale_range: tuple[float, float] = (0.7, 1.4),
    ):
        mt.MapTransform.__init__(self, list(keys))
        mt.RandomizableTransform.__init__(self, prob=1.0)
        self.spatial_dims = spatial_dims
        self.rotate_prob, self.rotate_range = rotate_prob, math.radians(rotate_range)
        self.scale_prob, self.scale_range = scale_prob, scale_range
        self._angles: list[float] | None = None
        self._zoom: float | None = None

    def randomize(self, data: Any = None) -> None:
        rot = self.R.rand() < self.rotate_prob
        zoom = self.R.rand() < self.scale_prob
        n_angles = 3 if self.spatial_dims == 3 else 1
        self._angles = [float(self.R.uniform(-self.rotate_range, self.rotate_range)) for _ in range(n_angles)] if rot else None
        self._zoom = float(self.R.uniform(*self.scale_range)) if zoom else None

    def __call__(self, data: dict[str, Any]) -> dict[str, Any]:
        self.randomize()
        if self._angles is None and self._zoom is None:
            return data
        d = dict(data)
        first = torch.as_tensor(d[self.keys[0]])
        size = tuple(first.shape[1:])
        if self._angles is None:
            for i, k in enumerate(self.keys):
                d[k] = self._zoom_only(torch.as_tensor(d[k]), size, label=i > 0)
            return d
        nd = self.spatial_dims
        m = np.eye(nd)
        m = m @ create_rotate(nd, self._angles)[:nd, :nd]
        if self._zoom is not None:
            m = m @ create_scale(nd, [1.0 / self._zoom] * nd)[:nd, :nd]
        half = np.array(size, dtype=np.float64) / 2
        theta = (m * half[None, :]) / half[:, None]  # in normalised coordinates of the array axes
        theta = theta[::-1, ::-1].copy()  # grid_sample orders the axes x, y(, z) = last array axis first
        aff = torch.zeros((1, nd, nd + 1), dtype=torch.float32)
        aff[0, :, :nd] = torch.from_numpy(theta)
        grid = affine_grid(aff[0], size)
        for i, k in enumerate(self.keys):
            x = torch.as_tensor(d[k])
            dtype = x.dtype
            y = F.grid_sample(x[None].float(), grid, mode="nearest" if i > 0 else "bilinear", padding_mode="zeros", align_corners=False)[0]
            d[k] = y.to(dtype) if i > 0 else y
        return d

    def _zoom_only(self, x: torch.Tensor, size: tuple[int, ...], label: bool) -> torch.Tensor:
        assert self._zoom is not None
        dtype = x.dtype
        new = [max(1, round(s * self._zoom)) for s in size]
        mode = "nearest-exact" if label else ("bilinear" if len(size) == 2 else "trilinear")
        y = F.interpolate(x[None].float(), size=new, mode=mode, **({} if label else {"align_corners": False}))[0]
        # centre crop or pad back to the patch size
        pads: list[int] = []
        sl = [slice(None)]
        for n, s in zip(new, size, strict=True):
            if n >= s:
                a = (n - s) // 2
                sl.append(slice(a, a + s))
                pads = [0, 0, *pads]
            else:
                sl.append(slice(None))
                lo = (s - n) // 2
                pads = [lo, s - n - lo, *pads]
        y = y[tuple(sl)]
        if any(pads):
            y = F.pad(y, pads)
        return y.to(dtype) if label else y


class RandNoised(mt.RandomizableTransform, mt.MapTransform):
    """Additive Gaussian noise with a standard deviation drawn from [0, std] (as MONAI's
    ``RandGaussianNoise``), generated in float32 by torch from a seed drawn from this transform's state."""

    def __init__(self, keys: tuple[str, ...], prob: float = 0.1, std: float = 0.1):
        mt.MapTransform.__init__(self, list(keys))
        mt.RandomizableTransform.__init__(self, prob=prob)
        self.std = std

    def __call__(self, data: dict[str, Any]) -> dict[str, Any]:
        self.randomize(None)
        if not self._do_transform:
            return data
        d = dict(data)
        sigma = float(self.R.uniform(0, self.std))
        g = torch.Generator().manual_seed(int(self.R.randint(0, 2**31 - 1)))
        for k in self.keys:
            x = torch.as_tensor(d[k]).float()
            d[k] = x + sigma * torch.randn(x.shape, generator=g, dtype=x.dtype)
        return d


def affine_grid(theta: torch.Tensor, size: tuple[int, ...]) -> torch.Tensor:
    """``torch.nn.functional.affine_grid(theta[None], (1, 1, *size), align_corners=False)``, built separably.

    An affine map of a regular grid is a sum of one term per axis, so each output coordinate is three
    broadcast additions of 1D vectors instead of a matrix product per voxel: the same values (to float
    rounding), about 20× faster on the CPU for a 96³ patch.

    Args:
        theta: ``(n, n + 1)`` matrix in grid_sample's normalised coordinates (x = last array axis first).
        size: spatial size in array order.

    Shape:
        Output ``(1, *size, n)``.
    """
    n = len(size)
    axes = [(torch.arange(s, dtype=torch.float32) * 2 + 1) / s - 1 for s in reversed(size)]  # x, y(, z)
    grid = torch.empty((*size, n), dtype=torch.float32)
    for i in range(n):
        acc = theta[i, n].to(torch.float32)
        for j in range(n):
            shape = [1] * n
            shape[n - 1 - j] = -1  # coordinate j (x = last array axis) varies along array axis n-1-j
            acc = acc + (theta[i, j] * axes[j]).reshape(shape)
        grid[..., i] = acc
    return grid[None]


class RandFlipAxesd(mt.RandomizableTransform, mt.MapTransform):
    """Flip each spatial axis independently with probability ``prob`` (as one ``RandFlipd`` per axis),
    all drawn axes in a single ``torch.flip`` per key — one copy instead of one per axis."""

    def __init__(self, keys: tuple[str, ...], prob: float = 0.5, axes: list[int] | None = None):
        mt.MapTransform.__init__(self, list(keys))
        mt.RandomizableTransform.__init__(self, prob=1.0)
        self.flip_prob = prob
        self.axes = list(axes if axes is not None else [0, 1, 2])

    def __call__(self, data: dict[str, Any]) -> dict[str, Any]:
        dims = [a + 1 for a in self.axes if self.R.rand() < self.flip_prob]
        if not dims:
            return data
        d = dict(data)
        for k in self.keys:
            d[k] = torch.flip(torch.as_tensor(d[k]), dims)
        return d


class RandRot90d(mt.RandomizableTransform, mt.MapTransform):
    """With probability ``prob``, rotate by k·90° (k = 1, 2 or 3) in the plane of two spatial ``axes``.

    A patch that is not square in that plane is rotated by 180° only (k = 2): a quarter turn would swap its
    sides, and patches of two shapes cannot be stacked into a batch (MONAI's ``RandRotate90d`` does swap them).
    """

    def __init__(self, keys: tuple[str, ...], prob: float = 0.5, axes: tuple[int, int] = (0, 1)):
        mt.MapTransform.__init__(self, list(keys))
        mt.RandomizableTransform.__init__(self, prob=prob)
        self.axes = (axes[0] + 1, axes[1] + 1)  # after the channel axis

    def __call__(self, data: dict[str, Any]) -> dict[str, Any]:
        self.randomize(None)
        k = int(self.R.randint(1, 4))
        if not self._do_transform:
            return data
        d = dict(data)
        first = torch.as_tensor(d[self.keys[0]])
        if first.shape[self.axes[0]] != first.shape[self.axes[1]]:
            k = 2
        for key in self.keys:
            d[key] = torch.rot90(torch.as_tensor(d[key]), k, self.axes)
        return d
