"""Attention U-Net (Oktay et al. 2018), 2D and 3D, as re-implemented and varied in study 002.

Written here rather than taken from MONAI because ``monai.networks.nets.AttentionUnet`` has
neither the ``conv_mapping`` gate, nor deep-supervision heads, nor the gating-signal block of
the reference code; the building blocks are a few lines each.

Variants (all the same builder, registered under their own names for comparison tables):
``attention_unet`` (additive gates), ``attention_unet_convmap`` (gate inputs stacked and mixed by a
1×1(×1) convolution), ``attention_unet_deeper`` (one more level, bottleneck 1024 channels).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

from medseg.core.errors import ModelError
from medseg.models.catalog import register_model
from medseg.models.wrappers import Logits, PadToMultiple, conv_nd, init_kaiming, max_pool_nd, norm_nd, resize_to

PAPER = "Oktay et al. 2018, Attention U-Net: Learning Where to Look for the Pancreas (arXiv:1804.03999)"


class ConvBlock(nn.Sequential):
    """Two (3×3[×3] convolution → norm → ReLU) layers."""

    def __init__(self, spatial_dims: int, in_channels: int, out_channels: int, norm: str = "batch"):
        conv = conv_nd(spatial_dims)
        super().__init__(
            conv(in_channels, out_channels, 3, padding=1, bias=False),
            norm_nd(norm, spatial_dims, out_channels),
            nn.ReLU(inplace=True),
            conv(out_channels, out_channels, 3, padding=1, bias=False),
            norm_nd(norm, spatial_dims, out_channels),
            nn.ReLU(inplace=True),
        )


class AttentionGate(nn.Module):
    """Additive grid attention gate: weights a skip connection ``x`` by a gating signal ``g``.

    ``θ(x)`` (a stride-2 convolution bringing ``x`` to the gating grid) and ``φ(g)`` (a 1×1
    convolution) are added — or, with ``conv_mapping``, stacked and mixed by a 1×1 convolution —
    then ReLU, a 1×1 convolution ``ψ`` to one channel and a sigmoid give the attention
    coefficients α, upsampled to ``x``'s grid; the output is ``W(α·x)`` (1×1 convolution + norm).

    Args:
        spatial_dims: 2 or 3.
        in_channels: channels of the skip features ``x``.
        gating_channels: channels of the gating signal ``g`` (half ``x``'s resolution).
        inter_channels: channels of the intermediate space.
        conv_mapping: mix θ(x) and φ(g) by a learned 1×1 convolution instead of adding them.
        norm: ``batch`` or ``instance``.

    Shape:
        ``x``: ``(B, Cx, *S)``, ``g``: ``(B, Cg, *S/2)`` → ``(y, α)`` with ``y`` like ``x`` and
        ``α``: ``(B, 1, *S)`` in [0, 1].
    """

    def __init__(self, spatial_dims: int, in_channels: int, gating_channels: int, inter_channels: int, *, conv_mapping: bool = False, norm: str = "batch"):
        super().__init__()
        conv = conv_nd(spatial_dims)
        self.conv_mapping = conv_mapping
        self.theta = conv(in_channels, inter_channels, kernel_size=2, stride=2, bias=False)
        self.phi = conv(gating_channels, inter_channels, kernel_size=1)
        self.mix = conv(2 * inter_channels, inter_channels, kernel_size=1) if conv_mapping else None
        self.psi = conv(inter_channels, 1, kernel_size=1)
        self.out = nn.Sequential(conv(in_channels, in_channels, kernel_size=1), norm_nd(norm, spatial_dims, in_channels))

    def forward(self, x: torch.Tensor, g: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        theta = self.theta(x)
        phi = resize_to(self.phi(g), theta.shape[2:])
        f = self.mix(torch.cat([theta, phi], dim=1)) if self.mix is not None else theta + phi
        alpha = resize_to(torch.sigmoid(self.psi(F.relu(f))), x.shape[2:])
        return self.out(x * alpha), alpha


class AttentionUNet(nn.Module):
    """Encoder of ConvBlocks and max-pooling; decoder of gated skips, upsampling and ConvBlocks.

    Args:
        spatial_dims: 2 or 3.
        in_channels: image channels.
        num_classes: output channels.
        channels: features per level, shallow to deep (the last is the bottleneck).
        conv_mapping: see :class:`AttentionGate`.
        attention: ``False`` drops the gates (a plain U-Net, for ablations).
        n_deep_supervision: extra 1×1 heads on the decoder levels below the top; in training mode
            the forward returns ``[full_res, level1, …]``, each upsampled to the input size.
        norm: ``batch`` or ``instance``.

    Shape:
        ``(B, C, *S)`` with ``S`` divisible by ``2**(len(channels)-1)`` → ``(B, K, *S)``.
    """

    def __init__(
        self,
        spatial_dims: int,
        in_channels: int,
        num_classes: int,
        *,
        channels: Sequence[int] = (32, 64, 128, 256, 512),
        conv_mapping: bool = False,
        attention: bool = True,
        n_deep_supervision: int = 0,
        norm: str = "batch",
    ):
        super().__init__()
        ch = [int(c) for c in channels]
        if len(ch) < 2:
            raise ModelError(f"attention_unet needs at least 2 levels, got channels={ch}", where="model.params.channels")
        if not 0 <= n_deep_supervision <= len(ch) - 2:
            raise ModelError(
                f"n_deep_supervision must be between 0 and {len(ch) - 2} for {len(ch)} levels, got {n_deep_supervision}",
                where="model.params.n_deep_supervision",
            )
        conv = conv_nd(spatial_dims)
        self.n_deep_supervision = n_deep_supervision
        self.encoders = nn.ModuleList([ConvBlock(spatial_dims, c_in, c_out, norm) for c_in, c_out in zip([in_channels, *ch[:-1]], ch, strict=True)])
        self.pool = max_pool_nd(spatial_dims)
        self.gating = nn.Sequential(conv(ch[-1], ch[-1], 1, bias=False), norm_nd(norm, spatial_dims, ch[-1]), nn.ReLU(inplace=True))
        # decoder level i (0 = top) takes the level-(i+1) features and the gated level-i skip
        self.gates = nn.ModuleList(
            [
                AttentionGate(spatial_dims, ch[i], ch[i + 1], max(1, ch[i] // 2), conv_mapping=conv_mapping, norm=norm) if attention else nn.Identity()
                for i in range(len(ch) - 1)
            ]
        )
        self.decoders = nn.ModuleList([ConvBlock(spatial_dims, ch[i] + ch[i + 1], ch[i], norm) for i in range(len(ch) - 1)])
        self.head = conv(ch[0], num_classes, 1)
        self.ds_heads = nn.ModuleList([conv(ch[i], num_classes, 1) for i in range(1, n_deep_supervision + 1)])
        self.attention = attention
        init_kaiming(self)

    def forward(self, x: torch.Tensor) -> Logits:
        size = x.shape[2:]
        skips = []
        for i, enc in enumerate(self.encoders):
            x = enc(x if i == 0 else self.pool(x))
            skips.append(x)
        g = self.gating(skips[-1])
        d = skips[-1]
        decoded: list[torch.Tensor] = []
        for i in reversed(range(len(self.decoders))):
            skip = self.gates[i](skips[i], g)[0] if self.attention else skips[i]
            d = self.decoders[i](torch.cat([skip, resize_to(d, skip.shape[2:])], dim=1))
            g = d
            decoded.append(d)
        out = self.head(decoded[-1])
        if not (self.training and self.n_deep_supervision):
            return out
        levels = decoded[::-1]  # top first
        return [out] + [resize_to(h(levels[i + 1]), size) for i, h in enumerate(self.ds_heads)]


def _build(spatial_dims: int, in_channels: int, num_classes: int, channels: Sequence[int], **kw: object) -> nn.Module:
    net = AttentionUNet(spatial_dims, in_channels, num_classes, channels=channels, **kw)  # type: ignore[arg-type]
    multiple = 2 ** (len(tuple(channels)) - 1)
    return PadToMultiple(net, multiple, min_size=2 * multiple if kw.get("norm") == "instance" else 0, in_channels=in_channels)


_TINY = {"channels": (4, 8, 16), "n_deep_supervision": 1}
_TINY_DEEP = {"channels": (4, 8, 16, 32), "n_deep_supervision": 2}


@register_model(
    "attention_unet",
    dims=(2, 3),
    description="Attention U-Net: additive attention gates on the skips, optional deep supervision",
    paper=PAPER,
    family="attention_unet",
    tiny=_TINY,
    deep_supervision=True,
)
def attention_unet(
    spatial_dims: int,
    in_channels: int,
    num_classes: int,
    *,
    channels: Sequence[int] = (32, 64, 128, 256, 512),
    conv_mapping: bool = False,
    attention: bool = True,
    n_deep_supervision: int = 0,
    norm: str = "batch",
) -> nn.Module:
    """Attention U-Net; see :class:`AttentionUNet` for the arguments."""
    return _build(
        spatial_dims, in_channels, num_classes, channels, conv_mapping=conv_mapping, attention=attention, n_deep_supervision=n_deep_supervision, norm=norm
    )


@register_model(
    "attention_unet_convmap",
    dims=(2, 3),
    description="Attention U-Net whose gates stack θ(x), φ(g) and mix them by a 1×1 conv (study 002)",
    paper=PAPER,
    family="attention_unet",
    tiny=_TINY,
    deep_supervision=True,
)
def attention_unet_convmap(
    spatial_dims: int,
    in_channels: int,
    num_classes: int,
    *,
    channels: Sequence[int] = (32, 64, 128, 256, 512),
    n_deep_supervision: int = 0,
    norm: str = "batch",
) -> nn.Module:
    """``attention_unet`` with ``conv_mapping=True``."""
    return _build(spatial_dims, in_channels, num_classes, channels, conv_mapping=True, n_deep_supervision=n_deep_supervision, norm=norm)


@register_model(
    "attention_unet_deeper",
    dims=(2, 3),
    description="Attention U-Net with one more level, bottleneck 1024 channels (study 002's deeper variant)",
    paper=PAPER,
    family="attention_unet",
    tiny=_TINY_DEEP,
    deep_supervision=True,
)
def attention_unet_deeper(
    spatial_dims: int,
    in_channels: int,
    num_classes: int,
    *,
    channels: Sequence[int] = (32, 64, 128, 256, 512, 1024),
    conv_mapping: bool = False,
    n_deep_supervision: int = 0,
    norm: str = "batch",
) -> nn.Module:
    """``attention_unet`` with a sixth level of 1024 channels."""
    return _build(spatial_dims, in_channels, num_classes, channels, conv_mapping=conv_mapping, n_deep_supervision=n_deep_supervision, norm=norm)
