"""U-Net (MONAI's residual-unit implementation), 2D and 3D."""

from __future__ import annotations

from collections.abc import Sequence

import torch.nn as nn
from monai.networks.nets import UNet

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
) -> nn.Module:
    """U-Net whose depth is ``len(channels)``; every level halves each spatial size.

    Args:
        channels: feature channels per level, shallow to deep.
        num_res_units: residual units per block (0 = plain conv blocks).
        norm: ``instance`` or ``batch``.
        dropout: dropout probability.
    """
    channels = tuple(int(c) for c in channels)
    net = UNet(
        spatial_dims=spatial_dims,
        in_channels=in_channels,
        out_channels=num_classes,
        channels=channels,
        strides=(2,) * (len(channels) - 1),
        num_res_units=num_res_units,
        norm=norm,
        dropout=dropout,
    )
    multiple = 2 ** (len(channels) - 1)
    # instance norm needs ≥ 2 voxels at the bottleneck in training
    return PadToMultiple(net, multiple, min_size=2 * multiple if norm == "instance" else 0, in_channels=in_channels)
