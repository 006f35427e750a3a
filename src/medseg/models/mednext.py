"""MedNeXt (Roy et al. 2023), MONAI's ``monai.networks.nets.MedNeXt``, sizes S/B/M/L, kernel 3 or 5, 2D and 3D.

The four sizes are the paper's (and MONAI's ``create_mednext``): expansion ratios and blocks per stage in
``MEDNEXT_SIZES``, 32 channels after the 1×1 stem doubled at each of four down-samplings, residual
connections in every block, GroupNorm with one group per channel. ``create_mednext`` always uses 32
channels; the network is built here from the same table with MONAI's class so the tests can shrink the
width (``init_filters``) and check the table against the factory.

Deep supervision: MONAI returns ``(full resolution, level-1 head, …, level-4 head)`` at their own
resolutions in training mode; here the first ``n_deep_supervision`` coarser heads are upsampled
(linearly) to the input size and returned as a list, as every medseg model does. The UpKern
initialisation of the paper (a kernel-5 network started from a trained kernel-3 one) is not done here:
``pretrained:`` loads same-shaped weights only.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn as nn
from monai.networks.nets import MedNeXt

from medseg.core.errors import ModelError
from medseg.models.catalog import register_model
from medseg.models.wrappers import Logits, PadToMultiple, resize_to

PAPER = "Roy et al. 2023, MedNeXt: Transformer-driven Scaling of ConvNets for Medical Image Segmentation, MICCAI (arXiv:2303.09975)"
#: the paper's sizes, as MONAI's ``create_mednext`` builds them
MEDNEXT_SIZES: dict[str, dict[str, Any]] = {
    "s": {
        "encoder_expansion_ratio": 2,
        "decoder_expansion_ratio": 2,
        "bottleneck_expansion_ratio": 2,
        "blocks_down": (2, 2, 2, 2),
        "blocks_bottleneck": 2,
        "blocks_up": (2, 2, 2, 2),
    },
    "b": {
        "encoder_expansion_ratio": (2, 3, 4, 4),
        "decoder_expansion_ratio": (4, 4, 3, 2),
        "bottleneck_expansion_ratio": 4,
        "blocks_down": (2, 2, 2, 2),
        "blocks_bottleneck": 2,
        "blocks_up": (2, 2, 2, 2),
    },
    "m": {
        "encoder_expansion_ratio": (2, 3, 4, 4),
        "decoder_expansion_ratio": (4, 4, 3, 2),
        "bottleneck_expansion_ratio": 4,
        "blocks_down": (3, 4, 4, 4),
        "blocks_bottleneck": 4,
        "blocks_up": (4, 4, 4, 3),
    },
    "l": {
        "encoder_expansion_ratio": (3, 4, 8, 8),
        "decoder_expansion_ratio": (8, 8, 4, 3),
        "bottleneck_expansion_ratio": 8,
        "blocks_down": (3, 4, 8, 8),
        "blocks_bottleneck": 8,
        "blocks_up": (8, 8, 4, 3),
    },
}
LEVELS = 4  # down-samplings of every size


class MedNeXtHeads(nn.Module):
    """MONAI's MedNeXt with its deep-supervision outputs in medseg's form (a list, all at the input size)."""

    def __init__(self, net: MedNeXt, n_deep_supervision: int):
        super().__init__()
        self.net = net
        self.n_deep_supervision = n_deep_supervision

    def forward(self, x: torch.Tensor) -> Logits:
        out = self.net(x)
        if not isinstance(out, tuple | list):
            return out
        size = x.shape[2:]
        return [out[0], *(resize_to(h, size) for h in out[1 : 1 + self.n_deep_supervision])]


def build_mednext(
    size: str, spatial_dims: int, in_channels: int, num_classes: int, *, kernel_size: int = 3, init_filters: int = 32, n_deep_supervision: int = 0
) -> nn.Module:
    """MedNeXt of one of the paper's sizes (``s``, ``b``, ``m``, ``l``) wrapped for any input size.

    Raises:
        ModelError: an even or non-positive kernel; ``n_deep_supervision`` outside 0…4.
    """
    if isinstance(kernel_size, bool) or not isinstance(kernel_size, int) or kernel_size < 1 or kernel_size % 2 == 0:
        raise ModelError(f"kernel_size must be an odd integer (the paper uses 3 or 5), got {kernel_size!r}", where="model.params.kernel_size")
    if not 0 <= n_deep_supervision <= LEVELS:
        raise ModelError(f"n_deep_supervision must be between 0 and {LEVELS}, got {n_deep_supervision}", where="model.params.n_deep_supervision")
    net = MedNeXt(
        spatial_dims=spatial_dims,
        init_filters=init_filters,
        in_channels=in_channels,
        out_channels=num_classes,
        kernel_size=kernel_size,
        deep_supervision=n_deep_supervision > 0,
        use_residual_connection=True,
        norm_type="group",
        global_resp_norm=False,
        **MEDNEXT_SIZES[size],
    )
    # GroupNorm over a 1-voxel bottleneck is constant, but the residual paths carry the features: no minimum size
    return PadToMultiple(MedNeXtHeads(net, n_deep_supervision), 2**LEVELS, in_channels=in_channels)


def _register(size: str, blurb: str) -> None:
    @register_model(
        f"mednext_{size}",
        dims=(2, 3),
        description=f"MedNeXt-{size.upper()} (MONAI): ConvNeXt blocks, {blurb}; kernel_size 3 or 5",
        paper=PAPER,
        family="mednext",
        tiny={"init_filters": 4, "n_deep_supervision": 2},
        deep_supervision=True,
    )
    def builder(
        spatial_dims: int, in_channels: int, num_classes: int, *, kernel_size: int = 3, init_filters: int = 32, n_deep_supervision: int = 0
    ) -> nn.Module:
        return build_mednext(
            size, spatial_dims, in_channels, num_classes, kernel_size=kernel_size, init_filters=init_filters, n_deep_supervision=n_deep_supervision
        )

    builder.__name__ = builder.__qualname__ = f"mednext_{size}"
    builder.__doc__ = f"""MedNeXt-{size.upper()} (see ``medseg.models.mednext``).

    Args:
        kernel_size: depth-wise kernel of every block (the paper: 3, or 5 — "k3" / "k5").
        init_filters: channels after the stem (the paper: 32), doubled per level.
        n_deep_supervision: coarser decoder heads returned in training (0…4).
    """


_register("s", "expansion 2, 2 blocks per stage")
_register("b", "expansion 2–4, 2 blocks per stage")
_register("m", "expansion 2–4, 3–4 blocks per stage")
_register("l", "expansion 3–8, 3–8 blocks per stage")
