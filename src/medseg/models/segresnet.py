"""SegResNet (Myronenko 2018) as Auto3DSeg trains it: MONAI's ``SegResNetDS``, 2D and 3D.

Auto3DSeg's default network (``auto3dseg/algorithm_templates/segresnet``): 32 filters doubled per level,
five levels with ``(1, 2, 2, 4, 4)`` residual blocks (instance norm with affine parameters, ReLU), one
block per decoder level, transposed-convolution up-sampling, deep supervision at four levels
(``dsdepth=4``, here ``n_deep_supervision=3``). Auto3DSeg uses fewer levels for small images —
``(1, 2, 2, 4)``, ``(1, 2, 4)``, ``(1, 3)`` — pass them as ``blocks_down``. With ``resolution`` (the voxel
spacing, in the array's axis order) the first levels use anisotropic kernels and strides until the
spacing is near-isotropic, as Auto3DSeg does for anisotropic data.

Deep supervision: MONAI returns the heads at their own resolutions; here they are upsampled (linearly)
to the input size, full resolution first.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn as nn
from monai.networks.nets import SegResNetDS

from medseg.core.errors import ModelError
from medseg.models.catalog import register_model
from medseg.models.wrappers import Logits, PadToMultiple, resize_to

PAPER = "Myronenko 2018, 3D MRI Brain Tumor Segmentation Using Autoencoder Regularization, BrainLes (arXiv:1810.11654); MONAI Auto3DSeg"


class SegResNetHeads(nn.Module):
    """MONAI's SegResNetDS with its deep-supervision outputs all at the input size."""

    def __init__(self, net: SegResNetDS):
        super().__init__()
        self.net = net

    def forward(self, x: torch.Tensor) -> Logits:
        out = self.net(x)
        if isinstance(out, torch.Tensor):
            return out
        return [out[0], *(resize_to(h, x.shape[2:]) for h in out[1:])]


@register_model(
    "segresnet",
    dims=(2, 3),
    description="SegResNet (MONAI SegResNetDS, Auto3DSeg's defaults): residual encoder (1,2,2,4,4), light decoder",
    paper=PAPER,
    family="segresnet",
    tiny={"init_filters": 4, "blocks_down": (1, 1, 2), "n_deep_supervision": 1},
    deep_supervision=True,
)
def segresnet(
    spatial_dims: int,
    in_channels: int,
    num_classes: int,
    *,
    init_filters: int = 32,
    blocks_down: Sequence[int] = (1, 2, 2, 4, 4),
    blocks_up: Sequence[int] | None = None,
    norm: str = "instance",
    act: str = "relu",
    upsample_mode: str = "deconv",
    resolution: Sequence[float] | None = None,
    n_deep_supervision: int = 0,
) -> nn.Module:
    """SegResNet with Auto3DSeg's settings (see ``medseg.models.segresnet``).

    Args:
        init_filters: channels of the first level, doubled per level.
        blocks_down: residual blocks per encoder level (its length = number of levels).
        blocks_up: blocks per decoder level (default 1 each).
        norm: ``instance`` (Auto3DSeg), ``batch`` or ``group``.
        act: activation (``relu``).
        upsample_mode: ``deconv`` (transposed convolution), ``nontrainable`` or ``pixelshuffle``.
        resolution: voxel spacing per array axis; anisotropic kernels/strides until near-isotropic.
        n_deep_supervision: coarser decoder heads returned in training (≤ levels − 2).
    """
    levels = len(tuple(blocks_down))
    if levels < 1:
        raise ModelError("blocks_down must list at least one level", where="model.params.blocks_down")
    if not 0 <= n_deep_supervision <= max(levels - 2, 0):
        raise ModelError(
            f"n_deep_supervision must be between 0 and {max(levels - 2, 0)} for {levels} levels, got {n_deep_supervision}",
            where="model.params.n_deep_supervision",
        )
    if resolution is not None and (len(tuple(resolution)) != spatial_dims or min(float(r) for r in resolution) <= 0):
        raise ModelError(f"resolution must be {spatial_dims} positive spacings, got {resolution!r}", where="model.params.resolution")
    net = SegResNetDS(
        spatial_dims=spatial_dims,
        init_filters=init_filters,
        in_channels=in_channels,
        out_channels=num_classes,
        act=act,
        norm=norm,
        blocks_down=tuple(int(b) for b in blocks_down),
        blocks_up=None if blocks_up is None else tuple(int(b) for b in blocks_up),
        dsdepth=n_deep_supervision + 1,
        upsample_mode=upsample_mode,
        resolution=None if resolution is None else tuple(float(r) for r in resolution),
    )
    multiple = tuple(int(m) for m in net.shape_factor())
    # instance norm needs ≥ 2 bottleneck voxels in training: 2 along the axis pooled least is enough
    min_size = 2 * min(multiple) if norm == "instance" else 0
    return PadToMultiple(SegResNetHeads(net), multiple, min_size=min_size, in_channels=in_channels)
