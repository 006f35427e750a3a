"""SegFormer b0–b5 (Xie et al. 2021) via Hugging Face transformers, 2D (study 000).

Built from a :class:`transformers.SegformerConfig` with the published MiT-b* sizes — never
``from_pretrained`` on a hub name, so nothing is downloaded. The decode head predicts at 1/4 of
the input size; the wrapper upsamples the logits (bilinear) to the input size. Any number of
input channels works (``num_channels``). Pretrained weights come from a local Hugging Face folder
(``config.json`` + ``model.safetensors``, e.g. a copy of ``nvidia/mit-b2`` or
``nvidia/segformer-b2-finetuned-ade-512-512``) through ``pretrained=PATH``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
import torch.nn as nn

from medseg.models.catalog import register_model
from medseg.models.wrappers import PadToMultiple, resize_to

PAPER = "Xie et al. 2021, SegFormer: Simple and Efficient Design for Semantic Segmentation with Transformers (NeurIPS)"

# (hidden_sizes, depths, decoder_hidden_size) of the MiT-b0 … b5 encoders
VARIANTS: dict[str, tuple[tuple[int, ...], tuple[int, ...], int]] = {
    "b0": ((32, 64, 160, 256), (2, 2, 2, 2), 256),
    "b1": ((64, 128, 320, 512), (2, 2, 2, 2), 256),
    "b2": ((64, 128, 320, 512), (3, 4, 6, 3), 768),
    "b3": ((64, 128, 320, 512), (3, 4, 18, 3), 768),
    "b4": ((64, 128, 320, 512), (3, 8, 27, 3), 768),
    "b5": ((64, 128, 320, 512), (3, 6, 40, 3), 768),
}


class SegFormer(nn.Module):
    """``SegformerForSemanticSegmentation`` returning logits at the input size.

    Args:
        in_channels: image channels (``num_channels`` of the config).
        num_classes: output channels (``num_labels``).
        hidden_sizes: channels of the four encoder stages.
        depths: transformer blocks per stage.
        decoder_hidden_size: channels of the all-MLP decode head.
        num_attention_heads: heads per stage.
        drop_path_rate: stochastic depth.
        classifier_dropout: dropout before the classifier.

    Shape:
        ``(B, C, H, W)`` → ``(B, K, H, W)``.
    """

    def __init__(
        self,
        in_channels: int,
        num_classes: int,
        hidden_sizes: Sequence[int],
        depths: Sequence[int],
        decoder_hidden_size: int,
        *,
        num_attention_heads: Sequence[int] = (1, 2, 5, 8),
        drop_path_rate: float = 0.1,
        classifier_dropout: float = 0.1,
    ):
        super().__init__()
        from transformers import SegformerConfig, SegformerForSemanticSegmentation

        self.config = SegformerConfig(
            num_channels=in_channels,
            num_labels=num_classes,
            hidden_sizes=list(hidden_sizes),
            depths=list(depths),
            decoder_hidden_size=decoder_hidden_size,
            num_attention_heads=list(num_attention_heads),
            drop_path_rate=drop_path_rate,
            classifier_dropout_prob=classifier_dropout,
        )
        self.model = SegformerForSemanticSegmentation(self.config)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        logits = self.model(pixel_values=x).logits
        return resize_to(logits, x.shape[2:])


def _make(variant: str) -> Callable[..., nn.Module]:
    hidden, depths, dec = VARIANTS[variant]

    def build(
        spatial_dims: int,
        in_channels: int,
        num_classes: int,
        *,
        drop_path_rate: float = 0.1,
        classifier_dropout: float = 0.1,
        hidden_sizes: Sequence[int] = hidden,
        depths: Sequence[int] = depths,
        decoder_hidden_size: int = dec,
    ) -> nn.Module:
        """SegFormer; the size arguments default to the variant's and exist for experiments."""
        net = SegFormer(
            in_channels, num_classes, hidden_sizes, depths, decoder_hidden_size, drop_path_rate=drop_path_rate, classifier_dropout=classifier_dropout
        )
        # stage 1 attention reduces its 1/4-size map by 8: inputs need ≥ 32 pixels a side
        return PadToMultiple(net, 32, in_channels=in_channels)

    return build


for _v, (_hidden, _depths, _dec) in VARIANTS.items():
    register_model(
        f"segformer_{_v}",
        dims=(2,),
        description=f"SegFormer-{_v.upper()}: hierarchical MiT transformer encoder + all-MLP decoder (transformers)",
        paper=PAPER,
        family="segformer",
        tiny={"hidden_sizes": (8, 16, 40, 64), "depths": (1, 1, 1, 1), "decoder_hidden_size": 16},
        weights=f"a local Hugging Face folder (config.json + model.safetensors) of nvidia/mit-{_v} or nvidia/segformer-{_v}-finetuned-ade-512-512",
    )(_make(_v))
