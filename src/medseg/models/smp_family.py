"""segmentation_models_pytorch decoders on ResNet-18/34/50 encoders (study 001), 2D.

Every decoder × encoder pair is registered as ``{decoder}_{encoder}``, e.g. ``linknet_resnet18``,
``unet_resnet34``, ``fpn_resnet50``, ``unetplusplus_resnet34``, ``deeplabv3plus_resnet50``.
Encoders are always built with ``encoder_weights=None`` (nothing is downloaded); ImageNet weights
come from a local torchvision/timm ResNet state dict through ``pretrained=PATH``.
Each builder lists its keyword arguments explicitly, because smp silently accepts unknown ones.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Sequence
from typing import Any

import torch.nn as nn

from medseg.models.catalog import register_model
from medseg.models.wrappers import PadToMultiple

ENCODERS = ("resnet18", "resnet34", "resnet50")
_WEIGHTS = (
    "a torchvision ResNet state dict (e.g. {enc}-*.pth from torchvision.models.{enc}(weights='DEFAULT').state_dict()) "
    "or a timm {enc} checkpoint / safetensors file"
)
_TINY = {"encoder_depth": 3}


def _smp(name: str) -> Callable[..., nn.Module]:
    """An smp architecture class, imported when a model is built (not when the catalogue is listed: smp pulls
    timm and torchvision, seconds of start-up that ``medseg predict`` with another model should not pay)."""
    with warnings.catch_warnings():  # timm, which smp imports, calls torch.jit.interface (deprecated in torch): not the user's concern
        warnings.filterwarnings("ignore", message=r"`torch\.jit\.interface` is deprecated", category=FutureWarning)
        import segmentation_models_pytorch as smp

    return getattr(smp, name)


def _wrap(net: nn.Module, in_channels: int, encoder_depth: int) -> nn.Module:
    return PadToMultiple(net, 2**encoder_depth, in_channels=in_channels)


def _unet_like(cls: str, doc: str) -> Callable[[str], Callable[..., nn.Module]]:
    """Builders for smp's U-Net-shaped decoders (``Unet``, ``UnetPlusPlus``), which share their arguments."""

    def factory(encoder: str) -> Callable[..., nn.Module]:
        def build(
            spatial_dims: int,
            in_channels: int,
            num_classes: int,
            *,
            encoder_depth: int = 5,
            decoder_channels: Sequence[int] = (256, 128, 64, 32, 16),
            decoder_attention_type: str | None = None,
        ) -> nn.Module:
            dec = tuple(decoder_channels)[-encoder_depth:] if len(tuple(decoder_channels)) > encoder_depth else tuple(decoder_channels)
            net = _smp(cls)(
                encoder, encoder_depth, None, decoder_channels=dec, decoder_attention_type=decoder_attention_type, in_channels=in_channels, classes=num_classes
            )
            return _wrap(net, in_channels, encoder_depth)

        build.__doc__ = doc
        return build

    return factory


_unet = _unet_like("Unet", "smp ``Unet``; ``decoder_channels`` needs one entry per encoder stage (``encoder_depth``).")
_unetplusplus = _unet_like("UnetPlusPlus", "smp ``UnetPlusPlus`` (nested dense skip pathways).")


def _linknet(encoder: str) -> Callable[..., nn.Module]:
    def build(spatial_dims: int, in_channels: int, num_classes: int, encoder_depth: int = 5) -> nn.Module:
        """smp ``Linknet`` (encoder features added, not concatenated, to the decoder)."""
        return _wrap(_smp("Linknet")(encoder, encoder_depth, None, in_channels=in_channels, classes=num_classes), in_channels, encoder_depth)

    return build


def _fpn(encoder: str) -> Callable[..., nn.Module]:
    def build(
        spatial_dims: int,
        in_channels: int,
        num_classes: int,
        *,
        encoder_depth: int = 5,
        decoder_pyramid_channels: int = 256,
        decoder_segmentation_channels: int = 128,
        decoder_dropout: float = 0.2,
    ) -> nn.Module:
        """smp ``FPN`` (feature pyramid; its output is upsampled back to the input size).

        smp's fixed ``upsampling=4`` is only right for ``encoder_depth=5``; it is derived here.
        """
        encoder_depth = max(3, encoder_depth)
        net = _smp("FPN")(
            encoder,
            encoder_depth,
            None,
            upsampling=2 ** (encoder_depth - 3),
            decoder_pyramid_channels=decoder_pyramid_channels,
            decoder_segmentation_channels=decoder_segmentation_channels,
            decoder_dropout=decoder_dropout,
            in_channels=in_channels,
            classes=num_classes,
        )
        return _wrap(net, in_channels, max(3, encoder_depth))

    return build


def _deeplabv3plus(encoder: str) -> Callable[..., nn.Module]:
    def build(
        spatial_dims: int,
        in_channels: int,
        num_classes: int,
        *,
        encoder_depth: int = 5,
        encoder_output_stride: int = 16,
        decoder_channels: int = 256,
        decoder_atrous_rates: Sequence[int] = (12, 24, 36),
    ) -> nn.Module:
        """smp ``DeepLabV3Plus`` (atrous spatial pyramid pooling + a light decoder)."""
        net = _smp("DeepLabV3Plus")(
            encoder,
            max(3, encoder_depth),
            None,
            encoder_output_stride=encoder_output_stride,
            decoder_channels=decoder_channels,
            decoder_atrous_rates=tuple(decoder_atrous_rates),
            in_channels=in_channels,
            classes=num_classes,
        )
        return _wrap(net, in_channels, max(3, encoder_depth))

    return build


_ARCHS: dict[str, tuple[Callable[[str], Callable[..., nn.Module]], str, str, dict[str, Any]]] = {
    "unet": (_unet, "U-Net decoder", "Ronneberger et al. 2015 (U-Net); He et al. 2016 (ResNet); smp", {"encoder_depth": 3, "decoder_channels": (16, 8, 4)}),
    "unetplusplus": (_unetplusplus, "UNet++ nested decoder", "Zhou et al. 2018 (UNet++); smp", {"encoder_depth": 3, "decoder_channels": (16, 8, 4)}),
    "linknet": (_linknet, "LinkNet decoder", "Chaurasia & Culurciello 2017 (LinkNet); smp", _TINY),
    "fpn": (
        _fpn,
        "FPN decoder",
        "Lin et al. 2017 (FPN); Kirillov et al. 2019 (panoptic FPN head); smp",
        {"encoder_depth": 3, "decoder_pyramid_channels": 32, "decoder_segmentation_channels": 32},
    ),
    "deeplabv3plus": (_deeplabv3plus, "DeepLabV3+ (ASPP) decoder", "Chen et al. 2018 (DeepLabV3+); smp", {"encoder_depth": 5, "decoder_channels": 16}),
}

for _arch, (_factory, _desc, _paper, _tiny) in _ARCHS.items():
    for _enc in ENCODERS:
        register_model(
            f"{_arch}_{_enc}",
            dims=(2,),
            description=f"{_desc} on a {_enc.replace('resnet', 'ResNet-')} encoder (smp)",
            paper=_paper,
            family="smp",
            tiny=_tiny,
            weights=_WEIGHTS.format(enc=_enc),
        )(_factory(_enc))
