"""Residual-encoder U-Net after nnU-Net's ResEnc presets (Isensee et al. 2024, "nnU-Net Revisited").

The network nnU-Net's ``nnUNetPlannerResEncM`` / ``…L`` plans (``ResidualEncoderUNet`` with ``BasicBlockD``):

* stem: one convolution (kernel of stage 0) → instance norm → leaky ReLU (0.01), to the stage-0 width;
* encoder stage ``s``: ``(1, 3, 4, 6, 6, 6, …)[s]`` residual blocks, widths ``32·2^s`` capped at 320 (3D) /
  512 (2D); the first block of each deeper stage down-samples with a strided convolution;
* residual block (ResNet-D): conv (stride) → norm → leaky ReLU → conv → norm, plus the skip — average
  pooling when it strides, then a 1×1 convolution + norm when the width changes — then leaky ReLU;
* decoder stage: transposed convolution (kernel = stride), concatenation with the skip, ONE
  conv → norm → leaky ReLU; a 1×1 segmentation head per decoder stage (deep supervision);
* convolutions with bias (the skip projection without), instance norm with affine parameters (eps 1e-5),
  He initialisation (slope 0.01) and the last norm of every residual block starting at zero — as nnU-Net
  initialises it.

The M and L presets build the *same* network: nnU-Net's presets differ only in the GPU memory the planner
fills (8 GB vs 24 GB, ``RESENC_PRESETS``) — a larger patch and batch, and so sometimes one more stage. In
medseg that is ``medseg prepare --gpu-memory-gb 24`` for L; the stage layout comes from the plan
(``strides`` and ``kernel_sizes`` of its configuration, passed as model parameters) or from ``n_stages``.

Written here with MONAI's convolution blocks (``get_conv_layer``: conv + norm + activation, transposed
convolutions; ``UnetOutBlock`` heads) because MONAI's ``UnetResBlock``/``DynUNet`` differ from nnU-Net's
block: their skip path is a strided 1×1 convolution even when the width does not change (ResNet-B, not
the average-pooling ResNet-D), their convolutions have no bias, and their decoder stages have two
convolutions instead of one — the parameter count and the function would not be nnU-Net's.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
import torch.nn as nn
from monai.networks.blocks.dynunet_block import UnetOutBlock, get_conv_layer
from monai.networks.layers.factories import Pool

from medseg.core.errors import ModelError
from medseg.models.catalog import register_model
from medseg.models.wrappers import Logits, PadToMultiple, resize_to

PAPER = "Isensee et al. 2024, nnU-Net Revisited: A Call for Rigorous Validation in 3D Medical Image Segmentation, MICCAI (arXiv:2404.09556)"
#: encoder residual blocks per stage of every ResEnc preset (one decoder convolution per stage)
ENCODER_BLOCKS = (1, 3, 4, 6, 6, 6, 6, 6, 6, 6, 6, 6, 6)
#: widths 32·2^s capped here (nnU-Net's planner)
MAX_FEATURES = {2: 512, 3: 320}
#: stages when neither ``n_stages`` nor ``strides`` is given: what nnU-Net plans for a 128³ (3D) / 256² (2D) patch
DEFAULT_STAGES = {2: 7, 3: 6}
#: what distinguishes nnU-Net's presets: the GPU memory its planner fills, and its reference values
RESENC_PRESETS: dict[str, dict[str, Any]] = {
    "m": {"gpu_memory_gb": 8, "reference_3d": 680e6, "reference_2d": 135e6, "planner": "nnUNetPlannerResEncM"},
    "l": {"gpu_memory_gb": 24, "reference_3d": 2.1e9, "reference_2d": 380e6, "planner": "nnUNetPlannerResEncL"},
}
NORM = ("instance", {"affine": True, "eps": 1e-5})
ACT = ("leakyrelu", {"negative_slope": 0.01, "inplace": True})


class ResidualBlockD(nn.Module):
    """nnU-Net's ``BasicBlockD``: two convolutions plus an average-pool / 1×1-projection skip (ResNet-D).

    Args:
        spatial_dims: 2 or 3.
        in_channels: input width.
        out_channels: output width.
        kernel_size: kernel of both convolutions (an int or one per axis).
        stride: stride of the first convolution and of the skip's pooling (an int or one per axis).
    """

    def __init__(self, spatial_dims: int, in_channels: int, out_channels: int, kernel_size: Sequence[int], stride: Sequence[int]):
        super().__init__()
        self.conv1 = get_conv_layer(spatial_dims, in_channels, out_channels, kernel_size, stride, act=ACT, norm=NORM, bias=True, conv_only=False)
        self.conv2 = get_conv_layer(spatial_dims, out_channels, out_channels, kernel_size, 1, act=None, norm=NORM, bias=True, conv_only=False)
        skip: list[nn.Module] = []
        if any(s != 1 for s in stride):
            skip.append(Pool[Pool.AVG, spatial_dims](kernel_size=tuple(stride), stride=tuple(stride)))
        if in_channels != out_channels:
            skip.append(get_conv_layer(spatial_dims, in_channels, out_channels, 1, 1, act=None, norm=NORM, bias=False, conv_only=False))
        self.skip = nn.Sequential(*skip)  # empty: identity
        self.act = nn.LeakyReLU(0.01, inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.conv2(self.conv1(x)) + self.skip(x))


class ResEncUNet(nn.Module):
    """The network; see the module docstring.

    Args:
        spatial_dims: 2 or 3.
        in_channels: image channels.
        num_classes: output channels.
        strides: one stride per down-sampling (``n_stages − 1`` entries, each an int or one per axis).
        kernel_sizes: one kernel per stage (``n_stages`` entries, each an int or one per axis).
        features: width per stage.
        encoder_blocks: residual blocks per encoder stage.
        n_deep_supervision: in training mode also return this many coarser decoder heads (≤ n_stages − 2).

    Shape:
        ``(B, C, *S)`` with each ``S[a]`` divisible by the product of the strides along ``a`` → ``(B, K, *S)``.
    """

    def __init__(
        self,
        spatial_dims: int,
        in_channels: int,
        num_classes: int,
        *,
        strides: Sequence[Sequence[int]],
        kernel_sizes: Sequence[Sequence[int]],
        features: Sequence[int],
        encoder_blocks: Sequence[int],
        n_deep_supervision: int = 0,
    ):
        super().__init__()
        sd, n = spatial_dims, len(features)
        self.n_deep_supervision = n_deep_supervision
        self.stem = get_conv_layer(sd, in_channels, features[0], kernel_sizes[0], 1, act=ACT, norm=NORM, bias=True, conv_only=False)
        all_strides = [(1,) * sd, *strides]
        stages = []
        for s in range(n):
            prev = features[max(s - 1, 0)]
            blocks = [ResidualBlockD(sd, prev, features[s], kernel_sizes[s], all_strides[s])]
            blocks += [ResidualBlockD(sd, features[s], features[s], kernel_sizes[s], (1,) * sd) for _ in range(encoder_blocks[s] - 1)]
            stages.append(nn.Sequential(*blocks))
        self.stages = nn.ModuleList(stages)
        # decoder, deepest first: up-sample stage s+1 to stage s, merge with the skip of stage s
        self.up = nn.ModuleList()
        self.merge = nn.ModuleList()
        for s in reversed(range(n - 1)):
            st = all_strides[s + 1]
            self.up.append(get_conv_layer(sd, features[s + 1], features[s], st, st, bias=True, conv_only=True, is_transposed=True))
            self.merge.append(get_conv_layer(sd, 2 * features[s], features[s], kernel_sizes[s], 1, act=ACT, norm=NORM, bias=True, conv_only=False))
        # heads of decoder stages 0 (full resolution), 1, …, n_deep_supervision
        self.heads = nn.ModuleList([UnetOutBlock(sd, features[s], num_classes) for s in range(n_deep_supervision + 1)])
        initialise(self)

    def forward(self, x: torch.Tensor) -> Logits:
        size = x.shape[2:]
        skips = []
        x = self.stem(x)
        for stage in self.stages:
            x = stage(x)
            skips.append(x)
        decoded: list[torch.Tensor] = []  # stage n-2 … 0
        for i, (up, merge) in enumerate(zip(self.up, self.merge, strict=True)):
            x = merge(torch.cat([up(x), skips[-(i + 2)]], dim=1))
            decoded.append(x)
        decoded.reverse()  # stage 0 (full resolution) first
        out = self.heads[0](decoded[0])
        if not (self.training and self.n_deep_supervision):
            return out
        return [out, *(resize_to(self.heads[s](decoded[s]), size) for s in range(1, self.n_deep_supervision + 1))]


def initialise(net: nn.Module) -> None:
    """nnU-Net's initialisation of this network: He-normal convolutions (slope 0.01), zero biases, and
    the last norm of each residual block at zero (every block starts as its skip path)."""
    for m in net.modules():
        if isinstance(m, nn.Conv2d | nn.Conv3d | nn.ConvTranspose2d | nn.ConvTranspose3d):
            nn.init.kaiming_normal_(m.weight, a=1e-2)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
    for m in net.modules():
        if isinstance(m, ResidualBlockD):
            nn.init.zeros_(m.conv2.adn.N.weight)
            nn.init.zeros_(m.conv2.adn.N.bias)


def _per_axis(value: Any, spatial_dims: int, where: str) -> tuple[int, ...]:
    if isinstance(value, int) and not isinstance(value, bool):
        return (value,) * spatial_dims
    try:
        out = tuple(int(v) for v in value)
    except (TypeError, ValueError):
        raise ModelError(f"{where} entries must be an int or {spatial_dims} ints, got {value!r}", where=f"model.params.{where}") from None
    if len(out) != spatial_dims or min(out) < 1:
        raise ModelError(f"{where} entries must be an int or {spatial_dims} positive ints, got {value!r}", where=f"model.params.{where}")
    return out


def stage_layout(
    spatial_dims: int, n_stages: int | None, strides: Sequence[Any] | None, kernel_sizes: Sequence[Any] | None
) -> tuple[list[tuple[int, ...]], list[tuple[int, ...]]]:
    """The down-sampling strides (``n_stages − 1``) and kernels (``n_stages``) of the network.

    ``strides`` as ``plan.json`` writes them (one per down-sampling) or as nnU-Net's plans do (a leading
    all-ones stride for stage 0, dropped here); without them every down-sampling halves every axis.

    Raises:
        ModelError: fewer than 2 stages; ``n_stages`` contradicting ``strides``; lengths that do not fit.
    """
    sd = spatial_dims
    st = [_per_axis(s, sd, "strides") for s in strides] if strides is not None else None
    if st and all(v == 1 for v in st[0]):
        st = st[1:]
    if st is not None and n_stages is not None and len(st) + 1 != n_stages:
        raise ModelError(
            f"n_stages={n_stages} but {len(st)} strides give {len(st) + 1} stages", where="model.params.n_stages", fix="give one of them, or make them agree"
        )
    n = len(st) + 1 if st is not None else int(n_stages or DEFAULT_STAGES[sd])
    if n < 2 or n > len(ENCODER_BLOCKS):
        raise ModelError(f"n_stages must be between 2 and {len(ENCODER_BLOCKS)}, got {n}", where="model.params.n_stages")
    st = st if st is not None else [(2,) * sd] * (n - 1)
    ks = [_per_axis(k, sd, "kernel_sizes") for k in kernel_sizes] if kernel_sizes is not None else [(3,) * sd] * n
    if len(ks) != n:
        raise ModelError(f"kernel_sizes has {len(ks)} entries for {n} stages", where="model.params.kernel_sizes", fix="give one kernel per stage")
    if any(k % 2 == 0 for kk in ks for k in kk):
        raise ModelError(f"kernel sizes must be odd, got {kernel_sizes!r}", where="model.params.kernel_sizes")
    return st, ks


def resenc_unet(
    spatial_dims: int,
    in_channels: int,
    num_classes: int,
    *,
    n_stages: int | None = None,
    strides: Sequence[Any] | None = None,
    kernel_sizes: Sequence[Any] | None = None,
    base_features: int = 32,
    max_features: int | None = None,
    n_deep_supervision: int = 0,
) -> nn.Module:
    st, ks = stage_layout(spatial_dims, n_stages, strides, kernel_sizes)
    n = len(ks)
    if not 0 <= n_deep_supervision <= n - 2:
        raise ModelError(f"n_deep_supervision must be between 0 and {n - 2} for {n} stages, got {n_deep_supervision}", where="model.params.n_deep_supervision")
    cap = int(max_features or MAX_FEATURES[spatial_dims])
    features = [min(cap, base_features * 2**s) for s in range(n)]
    net = ResEncUNet(
        spatial_dims,
        in_channels,
        num_classes,
        strides=st,
        kernel_sizes=ks,
        features=features,
        encoder_blocks=ENCODER_BLOCKS[:n],
        n_deep_supervision=n_deep_supervision,
    )
    multiple = [math.prod(s[a] for s in st) for a in range(spatial_dims)]
    # instance norm needs ≥ 2 bottleneck voxels in training: 2 along the axis pooled least is enough
    return PadToMultiple(net, multiple, min_size=2 * min(multiple), in_channels=in_channels)


_DOC = """Residual-encoder U-Net, nnU-Net ResEnc {preset} preset (see ``medseg.models.resenc_unet``).

    Args:
        n_stages: resolution stages (default 6 in 3D, 7 in 2D: nnU-Net's plan for a 128³ / 256² patch);
            ignored when ``strides`` are given.
        strides: one stride per down-sampling, an int or one per axis (``plan.json``'s ``strides``, or
            nnU-Net's with the leading ``[1, 1, 1]``); default 2 on every axis.
        kernel_sizes: one kernel per stage (``plan.json``'s ``kernel_sizes``); default 3.
        base_features: stage-0 width, doubled per stage.
        max_features: width cap (default 320 in 3D, 512 in 2D).
        n_deep_supervision: coarser decoder heads returned in training (≤ n_stages − 2; nnU-Net's trainer
            uses n_stages − 3: its coarsest head has weight 0).
    """

_TINY = {"n_stages": 3, "base_features": 4, "n_deep_supervision": 1}


_PRESET = {"dims": (2, 3), "paper": PAPER, "family": "resenc_unet", "tiny": _TINY, "deep_supervision": True}
register_model(
    "resenc_unet_m",
    description="nnU-Net ResEnc M: residual encoder (1,3,4,6,6,6 blocks), 32→320 widths, 1 conv per decoder stage (8 GB plan)",
    **_PRESET,
)(resenc_unet)
register_model(
    "resenc_unet_l",
    description="nnU-Net ResEnc L: the ResEnc network planned for a 24 GB GPU (larger patch/batch: medseg prepare --gpu-memory-gb 24)",
    **_PRESET,
)(resenc_unet)


resenc_unet.__doc__ = _DOC.format(preset="M or L")  # one network: nnU-Net's presets differ in the plan's patch and batch
