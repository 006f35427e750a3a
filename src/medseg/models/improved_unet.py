"""Improved 3D U-Net (Isensee et al. 2017), as described in study 003.

Written here because neither MONAI nor smp ships this network (MONAI's ``DynUNet`` is the later
nnU-Net design: no context modules, no summed segmentation layers).

Context pathway: a 3×3×3 convolution (level 1) or a stride-2 3×3×3 convolution (deeper levels),
then a *context module* — two 3×3×3 convolutions with instance norm and leaky ReLU (0.01) and
dropout 0.3 between them — added to its input (residual sum). Localisation pathway: an
*upsampling module* (×2 nearest-neighbour + 3×3×3 convolution halving the channels, or the
4×4×4 stride-2 transposed convolution study 003 uses), concatenation with the skip, a
*localisation module* (3×3×3 then 1×1×1 convolution). Segmentation layers (1×1×1 convolutions)
on the two localisation levels above the bottom and on the top level are upsampled and summed.
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn as nn

from medseg.core.errors import ModelError
from medseg.models.catalog import register_model
from medseg.models.wrappers import Logits, PadToMultiple, conv_nd, conv_transpose_nd, init_kaiming, norm_nd, resize_to


class StandardModule(nn.Sequential):
    """Convolution → instance norm → leaky ReLU (the paper's basic unit)."""

    def __init__(
        self, spatial_dims: int, in_channels: int, out_channels: int, *, kernel_size: int = 3, stride: int = 1, norm: str = "instance", slope: float = 0.01
    ):
        super().__init__(
            conv_nd(spatial_dims)(in_channels, out_channels, kernel_size, stride=stride, padding=kernel_size // 2, bias=False),
            norm_nd(norm, spatial_dims, out_channels),
            nn.LeakyReLU(slope, inplace=True),
        )


class ContextModule(nn.Module):
    """Two 3×3×3 standard modules with dropout between, added to the input (residual sum)."""

    def __init__(self, spatial_dims: int, channels: int, dropout: float = 0.3, norm: str = "instance", slope: float = 0.01):
        super().__init__()
        drop = {2: nn.Dropout2d, 3: nn.Dropout3d}[spatial_dims](dropout)
        self.body = nn.Sequential(
            StandardModule(spatial_dims, channels, channels, norm=norm, slope=slope),
            drop,
            StandardModule(spatial_dims, channels, channels, norm=norm, slope=slope),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.body(x)


class UpsamplingModule(nn.Sequential):
    """×2 upsampling halving the channels: nearest + 3×3×3 conv (paper) or 4×4×4 transposed conv."""

    def __init__(self, spatial_dims: int, in_channels: int, out_channels: int, mode: str, norm: str, *, slope: float):
        if mode == "nearest":
            super().__init__(nn.Upsample(scale_factor=2, mode="nearest"), StandardModule(spatial_dims, in_channels, out_channels, norm=norm, slope=slope))
        elif mode == "transposed":
            super().__init__(
                conv_transpose_nd(spatial_dims)(in_channels, out_channels, kernel_size=4, stride=2, padding=1, bias=False),
                norm_nd(norm, spatial_dims, out_channels),
                nn.LeakyReLU(slope, inplace=True),
            )
        else:
            raise ModelError(f"unknown upsample mode {mode!r}", where="model.params.upsample", fix="use 'nearest' or 'transposed'")


class ImprovedUNet(nn.Module):
    """The network; see the module docstring.

    Args:
        spatial_dims: 3 (2 works too but is not registered).
        in_channels: image channels.
        num_classes: output channels.
        base_filters: channels at level 1; doubled per level.
        depth: number of levels (the paper: 5).
        dropout: dropout inside context modules.
        negative_slope: leaky-ReLU slope.
        upsample: ``nearest`` (paper) or ``transposed`` (study 003).
        norm: ``instance`` (paper) or ``batch``.
        n_deep_supervision: 0, 1 or 2 — in training mode also return the level-2 (and level-3)
            segmentation layers, upsampled to the input size, after the summed output.

    Shape:
        ``(B, C, *S)`` with ``S`` divisible by ``2**(depth-1)`` → ``(B, K, *S)``.
    """

    def __init__(
        self,
        spatial_dims: int,
        in_channels: int,
        num_classes: int,
        *,
        base_filters: int = 16,
        depth: int = 5,
        dropout: float = 0.3,
        negative_slope: float = 0.01,
        upsample: Literal["nearest", "transposed"] = "nearest",
        norm: str = "instance",
        n_deep_supervision: int = 0,
    ):
        super().__init__()
        if depth < 4:
            raise ModelError(f"improved_unet3d needs depth ≥ 4 (three segmentation levels), got {depth}", where="model.params.depth")
        if not 0 <= n_deep_supervision <= 2:
            raise ModelError(f"n_deep_supervision must be 0, 1 or 2, got {n_deep_supervision}", where="model.params.n_deep_supervision")
        sd, s = spatial_dims, negative_slope
        ch = [base_filters * 2**i for i in range(depth)]
        self.n_deep_supervision = n_deep_supervision
        self.down = nn.ModuleList(
            [StandardModule(sd, in_channels, ch[0], norm=norm, slope=s)]
            + [StandardModule(sd, ch[i - 1], ch[i], stride=2, norm=norm, slope=s) for i in range(1, depth)]
        )
        self.context = nn.ModuleList([ContextModule(sd, c, dropout, norm, s) for c in ch])
        self.up = nn.ModuleList([UpsamplingModule(sd, ch[i + 1], ch[i], upsample, norm, slope=s) for i in range(depth - 1)])
        # localisation modules for levels 1 … depth-2 (level 0 uses one 3×3×3 module instead)
        self.localise = nn.ModuleList(
            [nn.Identity()]
            + [
                nn.Sequential(StandardModule(sd, 2 * ch[i], ch[i], norm=norm, slope=s), StandardModule(sd, ch[i], ch[i], kernel_size=1, norm=norm, slope=s))
                for i in range(1, depth - 1)
            ]
        )
        self.top = StandardModule(sd, 2 * ch[0], 2 * ch[0], norm=norm, slope=s)
        conv = conv_nd(sd)
        self.seg = nn.ModuleList([conv(2 * ch[0], num_classes, 1), conv(ch[1], num_classes, 1), conv(ch[2], num_classes, 1)])
        init_kaiming(self, negative_slope)

    def forward(self, x: torch.Tensor) -> Logits:
        size = x.shape[2:]
        skips = []
        for down, ctx in zip(self.down, self.context, strict=True):
            x = down(x)
            x = ctx(x)
            skips.append(x)
        d = skips[-1]
        loc: dict[int, torch.Tensor] = {}
        for i in reversed(range(len(self.up))):
            d = torch.cat([skips[i], self.up[i](d)], dim=1)
            d = self.top(d) if i == 0 else self.localise[i](d)
            loc[i] = d
        seg3 = self.seg[2](loc[2])
        seg2 = self.seg[1](loc[1])
        out = self.seg[0](loc[0]) + resize_to(seg2 + resize_to(seg3, seg2.shape[2:]), size)
        if not (self.training and self.n_deep_supervision):
            return out
        heads = [resize_to(seg2, size), resize_to(seg3, size)]
        return [out, *heads[: self.n_deep_supervision]]


@register_model(
    "improved_unet3d",
    dims=(3,),
    description="Improved 3D U-Net: residual context modules, localisation modules, summed segmentation layers",
    paper="Isensee et al. 2017, Brain Tumor Segmentation and Radiomics Survival Prediction (arXiv:1802.10508)",
    family="improved_unet",
    tiny={"base_filters": 4, "depth": 4, "n_deep_supervision": 2},
    deep_supervision=True,
)
def improved_unet3d(
    spatial_dims: int,
    in_channels: int,
    num_classes: int,
    *,
    base_filters: int = 16,
    depth: int = 5,
    dropout: float = 0.3,
    negative_slope: float = 0.01,
    upsample: Literal["nearest", "transposed"] = "nearest",
    norm: str = "instance",
    n_deep_supervision: int = 0,
) -> nn.Module:
    """Improved 3D U-Net; see :class:`ImprovedUNet` for the arguments."""
    net = ImprovedUNet(
        spatial_dims,
        in_channels,
        num_classes,
        base_filters=base_filters,
        depth=depth,
        dropout=dropout,
        negative_slope=negative_slope,
        upsample=upsample,
        norm=norm,
        n_deep_supervision=n_deep_supervision,
    )
    multiple = 2 ** (depth - 1)
    return PadToMultiple(net, multiple, min_size=2 * multiple if norm == "instance" else 0, in_channels=in_channels)
