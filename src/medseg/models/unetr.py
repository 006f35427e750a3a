"""UNETR and SwinUNETR (MONAI), 3D and 2D.

MONAI's ``UNETR`` fixes the token grid at construction (``img_size``): its learned position
embeddings and its ``proj_feat`` reshape assume that size. :class:`AnySizeUNETR` keeps MONAI's
modules and weights (state-dict compatible) and only re-states the forward pass so the position
embeddings are interpolated to the grid of the actual input — the way ViTs are commonly run at
other resolutions — so any input size (padded to a multiple of 16) works. ``SwinUNETR`` needs no
change beyond padding to a multiple of 32.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F
from monai.networks.nets import UNETR, SwinUNETR

from medseg.core.errors import DependencyError
from medseg.models.catalog import register_model
from medseg.models.wrappers import PadToMultiple


def _require_einops(name: str) -> None:
    """MONAI's transformer blocks import ``einops`` lazily; say so before MONAI fails obscurely."""
    try:
        import einops  # noqa: F401
    except ImportError:
        raise DependencyError(f"{name} needs the einops package (used by MONAI's attention blocks)", where="model.name", fix="pip install einops") from None


class AnySizeUNETR(UNETR):
    """MONAI ``UNETR`` whose forward accepts any input size divisible by the patch size (16).

    Shape:
        ``(B, C, *S)`` with ``S`` divisible by 16 → ``(B, K, *S)``.
    """

    def _position_embeddings(self, grid: tuple[int, ...]) -> torch.Tensor:
        pos = self.vit.patch_embedding.position_embeddings  # (1, N, hidden) on the img_size grid
        if grid == tuple(self.feat_size):
            return pos
        mode = "bilinear" if len(grid) == 2 else "trilinear"
        pos = pos.transpose(1, 2).reshape(1, self.hidden_size, *self.feat_size)
        return F.interpolate(pos, size=grid, mode=mode, align_corners=False).flatten(2).transpose(1, 2)

    def forward(self, x_in: torch.Tensor) -> torch.Tensor:
        pe = self.vit.patch_embedding
        tokens = pe.patch_embeddings(x_in)
        grid = tuple(tokens.shape[2:])
        x = pe.dropout(tokens.flatten(2).transpose(1, 2) + self._position_embeddings(grid))
        hidden = []
        for blk in self.vit.blocks:
            x = blk(x)
            hidden.append(x)
        x = self.vit.norm(x)

        def proj(t: torch.Tensor) -> torch.Tensor:
            return t.transpose(1, 2).reshape(t.shape[0], self.hidden_size, *grid)

        enc1 = self.encoder1(x_in)
        enc2 = self.encoder2(proj(hidden[3]))
        enc3 = self.encoder3(proj(hidden[6]))
        enc4 = self.encoder4(proj(hidden[9]))
        dec3 = self.decoder5(proj(x), enc4)
        dec2 = self.decoder4(dec3, enc3)
        dec1 = self.decoder3(dec2, enc2)
        return self.out(self.decoder2(dec1, enc1))


@register_model(
    "unetr",
    dims=(2, 3),
    description="UNETR: ViT encoder (16-voxel patches, 12 layers) with a convolutional U-shaped decoder (MONAI)",
    paper="Hatamizadeh et al. 2022, UNETR: Transformers for 3D Medical Image Segmentation (WACV)",
    family="unetr",
    tiny={"hidden_size": 48, "mlp_dim": 96, "num_heads": 4, "feature_size": 4},
    weights="a MONAI UNETR state dict (torch.save(model.state_dict()) or safetensors) trained with the same hidden_size/feature_size",
)
def unetr(
    spatial_dims: int,
    in_channels: int,
    num_classes: int,
    *,
    img_size: Sequence[int] | int | None = None,
    feature_size: int = 16,
    hidden_size: int = 768,
    mlp_dim: int = 3072,
    num_heads: int = 12,
    norm_name: str = "instance",
    res_block: bool = True,
    dropout: float = 0.0,
) -> nn.Module:
    """UNETR; any input size works (padded to 16, position embeddings interpolated).

    Args:
        img_size: the training patch size the position embeddings are learned for
            (default 96³ in 3D, 256² in 2D); other sizes interpolate them.
        feature_size: decoder feature width.
        hidden_size: ViT embedding width.
        mlp_dim: ViT MLP width.
        num_heads: attention heads.
        norm_name: ``instance`` or ``batch``.
        res_block: residual convolution blocks in the decoder.
        dropout: ViT dropout.
    """
    _require_einops("unetr")
    if img_size is None:
        img_size = (96,) * 3 if spatial_dims == 3 else (256,) * 2
    net = AnySizeUNETR(
        in_channels=in_channels,
        out_channels=num_classes,
        img_size=img_size,
        feature_size=feature_size,
        hidden_size=hidden_size,
        mlp_dim=mlp_dim,
        num_heads=num_heads,
        norm_name=norm_name,
        res_block=res_block,
        dropout_rate=dropout,
        spatial_dims=spatial_dims,
    )
    return PadToMultiple(net, 16, in_channels=in_channels)


@register_model(
    "swin_unetr",
    dims=(2, 3),
    description="SwinUNETR: shifted-window transformer encoder with a convolutional U-shaped decoder (MONAI)",
    paper="Hatamizadeh et al. 2022, Swin UNETR: Swin Transformers for Semantic Segmentation of Brain Tumors in MRI Images (BrainLes)",
    family="unetr",
    tiny={"feature_size": 12, "depths": (1, 1, 1, 1), "norm_name": "batch"},
    weights="a MONAI SwinUNETR state dict (e.g. the BTCV model's weights saved with torch.save or safetensors)",
)
def swin_unetr(
    spatial_dims: int,
    in_channels: int,
    num_classes: int,
    *,
    feature_size: int = 48,
    depths: Sequence[int] = (2, 2, 2, 2),
    num_heads: Sequence[int] = (3, 6, 12, 24),
    window_size: int = 7,
    norm_name: str = "instance",
    drop_rate: float = 0.0,
    attn_drop_rate: float = 0.0,
    dropout_path_rate: float = 0.0,
    use_checkpoint: bool = False,
    use_v2: bool = False,
) -> nn.Module:
    """SwinUNETR (inputs padded to a multiple of 32).

    Args:
        feature_size: embedding width of the first stage (a multiple of 12).
        depths: Swin blocks per stage.
        num_heads: attention heads per stage.
        window_size: attention window.
        norm_name: decoder normalisation.
        drop_rate: dropout.
        attn_drop_rate: attention dropout.
        dropout_path_rate: stochastic depth.
        use_checkpoint: gradient checkpointing (less memory, slower).
        use_v2: SwinUNETR-V2 (residual convolution blocks per stage).
    """
    _require_einops("swin_unetr")
    net = SwinUNETR(
        in_channels=in_channels,
        out_channels=num_classes,
        feature_size=feature_size,
        depths=tuple(depths),
        num_heads=tuple(num_heads),
        window_size=window_size,
        norm_name=norm_name,
        drop_rate=drop_rate,
        attn_drop_rate=attn_drop_rate,
        dropout_path_rate=dropout_path_rate,
        use_checkpoint=use_checkpoint,
        spatial_dims=spatial_dims,
        use_v2=use_v2,
    )
    # the bottleneck (1/32) is instance-normalised: it needs ≥ 2 voxels a side in training
    return PadToMultiple(net, 32, min_size=64 if norm_name == "instance" else 0, in_channels=in_channels)
