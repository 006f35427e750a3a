"""The self-configuring U-Net of nnU-Net (MONAI's ``DynUNet``): kernels, strides and widths from the plan.

``medseg auto`` builds it from ``plan.json`` (``kernel_sizes``, ``strides`` per stage); the strides may
differ per axis (no pooling along a thick-slice axis), which a fixed-stride U-Net cannot express.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
import torch.nn as nn
from monai.networks.nets import DynUNet

from medseg.core.errors import ModelError
from medseg.models.catalog import register_model
from medseg.models.wrappers import PadToMultiple


class DeepSupervisionList(nn.Module):
    """``DynUNet`` stacks its deep-supervision outputs on dim 1 in training mode; the losses take a list."""

    def __init__(self, net: DynUNet):
        super().__init__()
        self.net = net

    def forward(self, x: torch.Tensor) -> torch.Tensor | list[torch.Tensor]:
        out = self.net(x)
        if self.training and self.net.deep_supervision:
            return list(torch.unbind(out, dim=1))
        return out


@register_model(
    "dynunet",
    dims=(2, 3),
    description="nnU-Net's plain-conv U-Net (MONAI DynUNet): kernels/strides per stage from the plan, deep supervision",
    paper="Isensee et al. 2021, nnU-Net (Nature Methods 18:203)",
    family="dynunet",
    tiny={"filters": (4, 8, 16), "n_deep_supervision": 1},
    deep_supervision=True,
)
def dynunet(
    spatial_dims: int,
    in_channels: int,
    num_classes: int,
    *,
    filters: Sequence[int] = (32, 64, 128, 256, 320),
    kernel_sizes: Sequence[Sequence[int] | int] | None = None,
    strides: Sequence[Sequence[int] | int] | None = None,
    n_deep_supervision: int = 0,
    norm: str = "instance",
    res_block: bool = False,
) -> nn.Module:
    """U-Net with one stage per entry of ``filters``.

    Args:
        filters: feature channels per stage, shallow to deep.
        kernel_sizes: per stage (default 3 everywhere); an entry is an int or one per axis.
        strides: per stage, the first 1 (default 1 then 2 everywhere).
        n_deep_supervision: extra outputs at the decoder levels below the top (training mode only).
        norm: ``instance`` or ``batch``.
        res_block: residual conv blocks instead of plain ones.
    """
    n = len(filters)
    if n < 2:
        raise ModelError(f"dynunet needs at least 2 stages, got {n}", where="model.params.filters", fix="give 2 or more widths")
    kernels = [list(k) if isinstance(k, Sequence) else [int(k)] * spatial_dims for k in (kernel_sizes or [3] * n)]
    steps = [list(s) if isinstance(s, Sequence) else [int(s)] * spatial_dims for s in (strides or [1] + [2] * (n - 1))]
    if len(kernels) != n or len(steps) != n:
        raise ModelError(
            f"{len(kernels)} kernel sizes and {len(steps)} strides for {n} stages", where="model.params", fix="give one kernel size and one stride per stage"
        )
    if not 0 <= n_deep_supervision <= n - 2:
        raise ModelError(f"n_deep_supervision must be between 0 and {n - 2}, got {n_deep_supervision}", where="model.params.n_deep_supervision")
    net = DynUNet(
        spatial_dims=spatial_dims,
        in_channels=in_channels,
        out_channels=num_classes,
        kernel_size=kernels,
        strides=steps,
        upsample_kernel_size=steps[1:],
        filters=[int(f) for f in filters],
        norm_name=(norm, {"affine": True}) if norm == "instance" else norm,
        deep_supervision=n_deep_supervision > 0,
        deep_supr_num=max(n_deep_supervision, 1),
        res_block=res_block,
    )
    multiple = [int(m) for m in np.prod(np.asarray(steps), axis=0)]
    return PadToMultiple(DeepSupervisionList(net), multiple, in_channels=in_channels)
