"""U-Net (MONAI's residual-unit implementation), 2D and 3D."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn as nn
from monai.networks.nets import UNet

from medseg.models.registry import register_model


class PadToMultiple(nn.Module):
    """Pad the input so every spatial size is a multiple of ``multiple``, run ``net``, crop back.

    Lets any input size through networks whose down-sampling needs divisible sizes.
    """

    def __init__(self, net: nn.Module, multiple: int):
        super().__init__()
        self.net = net
        self.multiple = int(multiple)

    def forward(self, x: torch.Tensor) -> torch.Tensor | list[torch.Tensor]:
        spatial = tuple(x.shape[2:])
        extra = [(-s) % self.multiple for s in spatial]
        if not any(extra):
            return self.net(x)
        before = [e // 2 for e in extra]
        pads: list[int] = []
        for b, e in zip(reversed(before), reversed(extra), strict=True):
            pads += [b, e - b]
        out = self.net(nn.functional.pad(x, pads))
        crop = (slice(None), slice(None), *(slice(b, b + s) for b, s in zip(before, spatial, strict=True)))
        return [o[crop] for o in out] if isinstance(out, list | tuple) else out[crop]


@register_model("unet", dims=(2, 3), description="U-Net with residual units (MONAI)", paper="Ronneberger et al. 2015; Kerfoot et al. 2018")
def unet(
    spatial_dims: int,
    in_channels: int,
    num_classes: int,
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
    return PadToMultiple(net, 2 ** (len(channels) - 1))
