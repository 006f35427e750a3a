"""U-Net (MONAI's residual-unit implementation), 2D and 3D."""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch.nn as nn
from monai.networks.nets import UNet

from medseg.core.errors import ModelError
from medseg.models.catalog import register_model
from medseg.models.wrappers import PadToMultiple

__all__ = ["PadToMultiple", "unet"]


@register_model(
    "unet",
    dims=(2, 3),
    description="U-Net with residual units (MONAI)",
    paper="Ronneberger et al. 2015; Kerfoot et al. 2018",
    family="unet",
    tiny={"channels": (4, 8, 16), "num_res_units": 1},
)
def unet(
    spatial_dims: int,
    in_channels: int,
    num_classes: int,
    *,
    channels: Sequence[int] = (16, 32, 64, 128, 256),
    num_res_units: int = 2,
    norm: str = "instance",
    dropout: float = 0.0,
    strides: Sequence[int | Sequence[int]] | None = None,
) -> nn.Module:
    """U-Net whose depth is ``len(channels)``; every level down-samples by its stride (the first convolution too).

    Args:
        channels: feature channels per level, shallow to deep.
        num_res_units: residual units per block (0 = plain conv blocks).
        norm: ``instance`` or ``batch``.
        dropout: dropout probability.
        strides: ``len(channels) - 1`` down-sampling strides, each an int or one per axis (a plan's poolings,
            which spare a thick axis); default 2 on every axis.
    """
    channels = tuple(int(c) for c in channels)
    steps = (
        [[2] * spatial_dims for _ in channels[1:]]
        if strides is None
        else [[int(s)] * spatial_dims if isinstance(s, int) else [int(a) for a in s] for s in strides]
    )
    if len(steps) != len(channels) - 1 or any(len(s) != spatial_dims for s in steps):
        raise ModelError(
            f"{len(channels)} levels need {len(channels) - 1} strides of {spatial_dims} axes, got {strides}",
            where="model.params.strides",
            fix="give one stride per level below the first",
        )
    net = UNet(
        spatial_dims=spatial_dims,
        in_channels=in_channels,
        out_channels=num_classes,
        channels=channels,
        strides=tuple(tuple(s) for s in steps),
        num_res_units=num_res_units,
        norm=norm,
        dropout=dropout,
    )
    multiple = [math.prod(s[a] for s in steps) for a in range(spatial_dims)]
    # instance norm needs ≥ 2 voxels at the bottleneck in training
    least = [2 * m if norm == "instance" else 0 for m in multiple]
    if len(set(multiple)) == 1:  # the same on every axis: one number each
        return PadToMultiple(net, multiple[0], min_size=least[0], in_channels=in_channels)
    return PadToMultiple(net, multiple, min_size=least, in_channels=in_channels)
