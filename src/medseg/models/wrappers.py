"""Pieces every family shares: pad-and-crop for any input size, resizing logits, weight init.

Written here because no library offers them in the form the contract needs: MONAI's
``DivisiblePad`` is a data transform (not an ``nn.Module`` that crops the output back), and the
deep-supervision heads must be cropped exactly like the main output.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

from medseg.core.errors import ModelError

Logits = torch.Tensor | list[torch.Tensor]


class PadToMultiple(nn.Module):
    """Pad the input so every spatial size is a multiple of ``multiple``, run ``net``, crop back.

    Lets any input size through networks whose down-sampling needs divisible (or minimum) sizes.
    Padding is zeros, split evenly before/after; a list output (deep supervision) is cropped
    element-wise.

    Args:
        net: the wrapped network; its outputs must have the padded input's spatial size.
        multiple: one multiple for every spatial axis, or one per axis.
        min_size: pad each axis to at least this many voxels (after rounding to the multiple); one for every
            axis, or one per axis.
        in_channels: when given, the channel count the input must have (checked with a
            one-line ``ModelError``).

    Shape:
        ``(B, C, *S)`` → ``(B, K, *S)`` (or a list of such tensors).
    """

    def __init__(self, net: nn.Module, multiple: int | Sequence[int], min_size: int | Sequence[int] = 0, in_channels: int | None = None):
        super().__init__()
        self.net = net
        self.multiple = multiple if isinstance(multiple, int) else tuple(int(m) for m in multiple)
        self.min_size = int(min_size) if isinstance(min_size, int) else tuple(int(m) for m in min_size)
        self.in_channels = in_channels

    def _target(self, spatial: tuple[int, ...]) -> list[int]:
        mult = [self.multiple] * len(spatial) if isinstance(self.multiple, int) else list(self.multiple)
        least = [self.min_size] * len(spatial) if isinstance(self.min_size, int) else list(self.min_size)
        out = []
        for s, m, lo in zip(spatial, mult, least, strict=True):
            t = max(s, lo)
            out.append(t + (-t) % m)
        return out

    def forward(self, x: torch.Tensor) -> Logits:
        check_input(x, self.in_channels)
        spatial = tuple(x.shape[2:])
        extra = [t - s for t, s in zip(self._target(spatial), spatial, strict=True)]
        if not any(extra):
            return self.net(x)
        before = [e // 2 for e in extra]
        pads: list[int] = []
        for b, e in zip(reversed(before), reversed(extra), strict=True):
            pads += [b, e - b]
        out = self.net(F.pad(x, pads))
        crop = (slice(None), slice(None), *(slice(b, b + s) for b, s in zip(before, spatial, strict=True)))
        return [o[crop] for o in out] if isinstance(out, list | tuple) else out[crop]


class ReplicateChannels(nn.Module):
    """Repeat a 1-channel image to ``channels`` channels before ``net`` (grayscale → "RGB").

    The alternative to summing the first convolution's RGB weights when loading weights
    trained on colour images (see ``models/pretrained.py``).
    """

    def __init__(self, net: nn.Module, channels: int = 3):
        super().__init__()
        self.net = net
        self.channels = int(channels)

    def forward(self, x: torch.Tensor) -> Logits:
        check_input(x, 1)
        return self.net(x.expand(-1, self.channels, *x.shape[2:]))


def check_input(x: torch.Tensor, in_channels: int | None) -> None:
    """Raise a one-line ``ModelError`` when ``x`` is not ``(B, in_channels, *spatial)``."""
    if x.ndim not in (4, 5):
        raise ModelError(f"model input must be (B, C, H, W) or (B, C, D, H, W), got shape {tuple(x.shape)}", fix="add the batch and channel axes")
    if in_channels is not None and x.shape[1] != in_channels:
        raise ModelError(
            f"model expects {in_channels} input channel(s), got {x.shape[1]} (input shape {tuple(x.shape)})",
            where="model",
            fix="build the model with the data set's channel count (create_model(..., in_channels=...)) or convert the images",
        )


def resize_to(x: torch.Tensor, size: Sequence[int]) -> torch.Tensor:
    """Linearly interpolate logits ``(B, K, *S)`` to spatial ``size`` (no-op when equal)."""
    size = tuple(int(s) for s in size)
    if tuple(x.shape[2:]) == size:
        return x
    mode = {1: "linear", 2: "bilinear", 3: "trilinear"}[len(size)]
    return F.interpolate(x, size=size, mode=mode, align_corners=False)


def conv_nd(spatial_dims: int) -> type[nn.Module]:
    return {2: nn.Conv2d, 3: nn.Conv3d}[spatial_dims]


def conv_transpose_nd(spatial_dims: int) -> type[nn.Module]:
    return {2: nn.ConvTranspose2d, 3: nn.ConvTranspose3d}[spatial_dims]


def norm_nd(kind: str, spatial_dims: int, channels: int) -> nn.Module:
    """``batch`` or ``instance`` (affine) normalisation for 2D or 3D feature maps."""
    if kind == "batch":
        return {2: nn.BatchNorm2d, 3: nn.BatchNorm3d}[spatial_dims](channels)
    if kind == "instance":
        return {2: nn.InstanceNorm2d, 3: nn.InstanceNorm3d}[spatial_dims](channels, affine=True)
    raise ModelError(f"unknown norm {kind!r}", where="model.params.norm", fix="use 'batch' or 'instance'")


def max_pool_nd(spatial_dims: int) -> nn.Module:
    return {2: nn.MaxPool2d, 3: nn.MaxPool3d}[spatial_dims](kernel_size=2, stride=2)


def init_kaiming(module: nn.Module, negative_slope: float = 0.0) -> None:
    """Kaiming-normal convolutions (fan-in), N(1, 0.02) norm scales, zero biases.

    The initialisation of Oktay et al.'s Attention U-Net code, used by study 002.
    """
    for m in module.modules():
        if isinstance(m, nn.Conv2d | nn.Conv3d | nn.ConvTranspose2d | nn.ConvTranspose3d):
            nn.init.kaiming_normal_(m.weight, a=negative_slope, mode="fan_in", nonlinearity="leaky_relu" if negative_slope else "relu")
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.modules.batchnorm._BatchNorm | nn.modules.instancenorm._InstanceNorm | nn.GroupNorm):
            if getattr(m, "weight", None) is not None:
                nn.init.normal_(m.weight, 1.0, 0.02)
            if getattr(m, "bias", None) is not None:
                nn.init.zeros_(m.bias)
