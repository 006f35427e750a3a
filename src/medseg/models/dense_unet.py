"""DenseUNet ("FancyUNet" of study 000): DenseNet blocks in the encoder, U-Net skips and decoder.

Written here because the dense blocks of MONAI (``monai.networks.nets.densenet._DenseBlock``) and
torchvision are private classification-network internals without a decoder; the DenseNet-BC
layer is a few lines.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn as nn

from medseg.models.catalog import register_model
from medseg.models.wrappers import PadToMultiple, conv_nd, conv_transpose_nd, init_kaiming, max_pool_nd, norm_nd


class DenseLayer(nn.Module):
    """DenseNet-BC layer: norm → ReLU → 1×1 conv (``bn_size·k``) → norm → ReLU → 3×3 conv (``k``); output concatenated to the input."""

    def __init__(self, spatial_dims: int, in_channels: int, growth_rate: int, bn_size: int, norm: str, *, dropout: float):
        super().__init__()
        conv = conv_nd(spatial_dims)
        self.body = nn.Sequential(
            norm_nd(norm, spatial_dims, in_channels),
            nn.ReLU(inplace=True),
            conv(in_channels, bn_size * growth_rate, 1, bias=False),
            norm_nd(norm, spatial_dims, bn_size * growth_rate),
            nn.ReLU(inplace=True),
            conv(bn_size * growth_rate, growth_rate, 3, padding=1, bias=False),
            nn.Dropout(dropout) if dropout else nn.Identity(),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([x, self.body(x)], dim=1)


class DenseBlock(nn.Sequential):
    def __init__(self, spatial_dims: int, in_channels: int, n_layers: int, growth_rate: int, bn_size: int, *, norm: str, dropout: float):
        super().__init__(*[DenseLayer(spatial_dims, in_channels + i * growth_rate, growth_rate, bn_size, norm, dropout=dropout) for i in range(n_layers)])
        self.out_channels = in_channels + n_layers * growth_rate


class DenseUNet(nn.Module):
    """Stem → [dense block → transition (1×1 conv compressing, max-pool)]×L → dense bottleneck →
    [transposed conv ×2, concat skip, two 3×3 conv]×L → 1×1 head.

    Args:
        spatial_dims: 2 or 3.
        in_channels: image channels.
        num_classes: output channels.
        init_features: channels after the stem convolution.
        growth_rate: channels each dense layer adds (``k``).
        block_layers: dense layers per encoder level; one more entry is the bottleneck block.
        bn_size: bottleneck width factor of a dense layer.
        compression: channel factor of the transitions (DenseNet-BC: 0.5).
        norm: ``batch`` or ``instance``.
        dropout: dropout after each dense layer.

    Shape:
        ``(B, C, *S)`` with ``S`` divisible by ``2**(len(block_layers)-1)`` → ``(B, K, *S)``.
    """

    def __init__(
        self,
        spatial_dims: int,
        in_channels: int,
        num_classes: int,
        *,
        init_features: int = 32,
        growth_rate: int = 16,
        block_layers: Sequence[int] = (4, 4, 4, 4, 4),
        bn_size: int = 4,
        compression: float = 0.5,
        norm: str = "batch",
        dropout: float = 0.0,
    ):
        super().__init__()
        conv, sd = conv_nd(spatial_dims), spatial_dims
        self.stem = nn.Sequential(conv(in_channels, init_features, 3, padding=1, bias=False), norm_nd(norm, sd, init_features), nn.ReLU(inplace=True))
        c = init_features
        self.blocks, self.transitions, skip_ch = nn.ModuleList(), nn.ModuleList(), []
        layers = [int(n) for n in block_layers]
        for i, n in enumerate(layers):
            block = DenseBlock(sd, c, n, growth_rate, bn_size, norm=norm, dropout=dropout)
            self.blocks.append(block)
            c = block.out_channels
            if i < len(layers) - 1:
                skip_ch.append(c)
                t = max(1, int(c * compression))
                self.transitions.append(nn.Sequential(norm_nd(norm, sd, c), nn.ReLU(inplace=True), conv(c, t, 1, bias=False), max_pool_nd(sd)))
                c = t
        self.ups, self.decoders = nn.ModuleList(), nn.ModuleList()
        for s in reversed(skip_ch):
            self.ups.append(conv_transpose_nd(sd)(c, s // 2, kernel_size=2, stride=2))
            self.decoders.append(
                nn.Sequential(
                    conv(s + s // 2, s // 2, 3, padding=1, bias=False),
                    norm_nd(norm, sd, s // 2),
                    nn.ReLU(inplace=True),
                    conv(s // 2, s // 2, 3, padding=1, bias=False),
                    norm_nd(norm, sd, s // 2),
                    nn.ReLU(inplace=True),
                )
            )
            c = s // 2
        self.head = conv(c, num_classes, 1)
        init_kaiming(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        skips = []
        for i, block in enumerate(self.blocks):
            x = block(x)
            if i < len(self.transitions):
                skips.append(x)
                x = self.transitions[i](x)
        for up, dec, skip in zip(self.ups, self.decoders, reversed(skips), strict=True):
            x = dec(torch.cat([skip, up(x)], dim=1))
        return self.head(x)


@register_model(
    "dense_unet",
    dims=(2, 3),
    description="DenseUNet / 'FancyUNet': DenseNet-BC blocks in the encoder, U-Net skips and decoder",
    paper="Huang et al. 2017 (DenseNet); Li et al. 2018 (H-DenseUNet); study 000's FancyUNet",
    family="dense_unet",
    tiny={"init_features": 4, "growth_rate": 4, "block_layers": (2, 2, 2), "bn_size": 2},
)
def dense_unet(
    spatial_dims: int,
    in_channels: int,
    num_classes: int,
    *,
    init_features: int = 32,
    growth_rate: int = 16,
    block_layers: Sequence[int] = (4, 4, 4, 4, 4),
    bn_size: int = 4,
    compression: float = 0.5,
    norm: str = "batch",
    dropout: float = 0.0,
) -> nn.Module:
    """DenseUNet; see :class:`DenseUNet` for the arguments."""
    net = DenseUNet(
        spatial_dims,
        in_channels,
        num_classes,
        init_features=init_features,
        growth_rate=growth_rate,
        block_layers=block_layers,
        bn_size=bn_size,
        compression=compression,
        norm=norm,
        dropout=dropout,
    )
    multiple = 2 ** (len(tuple(block_layers)) - 1)
    return PadToMultiple(net, multiple, min_size=2 * multiple if norm == "instance" else 0, in_channels=in_channels)
