"""Fully convolutional networks (Long et al. 2015): FCN-8s/-32s on VGG-16 and FCN-AlexNet (study 004).

The backbones are torchvision's VGG-16 and AlexNet ``features`` (same layer indices, so
torchvision ImageNet state dicts load by name); the FCN head is written here because torchvision only ships
FCN on ResNet backbones. ``fc6``/``fc7`` are the classifier's fully connected layers as
convolutions: a torchvision ``classifier.0``/``classifier.3`` weight is reshaped into them when
pretrained weights are loaded ("convolutionalisation"). Intermediate ×2 upsampling layers are
transposed convolutions initialised to bilinear interpolation and learned; the final upsampling
to the input size is fixed bilinear interpolation, as in the paper.
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn as nn
import torch.nn.functional as F

from medseg.core.errors import ModelError
from medseg.models.catalog import register_model
from medseg.models.wrappers import PadToMultiple, resize_to

PAPER = "Long et al. 2015, Fully Convolutional Networks for Semantic Segmentation (CVPR)"
_VGG_TAPS = {"pool3": 16, "pool4": 23, "pool5": 30}


def bilinear_kernel(channels: int, kernel_size: int) -> torch.Tensor:
    """A ``(C, C, k, k)`` transposed-convolution weight performing bilinear upsampling per channel."""
    factor = (kernel_size + 1) // 2
    center = factor - 1 if kernel_size % 2 == 1 else factor - 0.5
    og = torch.arange(kernel_size, dtype=torch.float32)
    filt = 1 - (og - center).abs() / factor
    w = torch.zeros(channels, channels, kernel_size, kernel_size)
    w[range(channels), range(channels)] = filt[:, None] * filt[None, :]
    return w


def vgg16_features(in_channels: int) -> nn.Sequential:
    """torchvision's VGG-16 ``features`` (same layer indices, same init) for ``in_channels`` inputs.

    Built with torchvision's ``make_layers`` rather than ``vgg16().features`` to skip allocating
    and initialising the 120 M-parameter classifier that would be thrown away.
    """
    from torchvision.models.vgg import cfgs, make_layers

    features = make_layers(cfgs["D"], batch_norm=False)
    features[0] = nn.Conv2d(in_channels, 64, 3, padding=1)
    for m in features.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            nn.init.zeros_(m.bias)
    return features


def alexnet_features(in_channels: int) -> nn.Sequential:
    """torchvision's AlexNet ``features`` (same layer indices) for ``in_channels`` inputs."""
    return nn.Sequential(
        nn.Conv2d(in_channels, 64, kernel_size=11, stride=4, padding=2),
        nn.ReLU(inplace=True),
        nn.MaxPool2d(kernel_size=3, stride=2),
        nn.Conv2d(64, 192, kernel_size=5, padding=2),
        nn.ReLU(inplace=True),
        nn.MaxPool2d(kernel_size=3, stride=2),
        nn.Conv2d(192, 384, kernel_size=3, padding=1),
        nn.ReLU(inplace=True),
        nn.Conv2d(384, 256, kernel_size=3, padding=1),
        nn.ReLU(inplace=True),
        nn.Conv2d(256, 256, kernel_size=3, padding=1),
        nn.ReLU(inplace=True),
        nn.MaxPool2d(kernel_size=3, stride=2),
    )


class FCN(nn.Module):
    """FCN on a VGG-16 or AlexNet backbone.

    Args:
        in_channels: image channels (the first backbone convolution is rebuilt for them).
        num_classes: output channels.
        backbone: ``vgg16`` or ``alexnet``.
        stride: 8 (FCN-8s: pool3 + pool4 + fc7 scores), 16 (FCN-16s) or 32 (coarse, fc7 only);
            ``alexnet`` supports only 32.
        fc_channels: width of fc6/fc7 (4096 in the paper).
        dropout: dropout after fc6 and fc7.

    Shape:
        ``(B, C, H, W)`` with ``H, W`` multiples of 32 (and ≥ 64 for AlexNet) → ``(B, K, H, W)``.
    """

    def __init__(
        self,
        in_channels: int,
        num_classes: int,
        *,
        backbone: Literal["vgg16", "alexnet"] = "vgg16",
        stride: int = 8,
        fc_channels: int = 4096,
        dropout: float = 0.5,
    ):
        super().__init__()
        if stride not in (8, 16, 32) or (backbone == "alexnet" and stride != 32):
            raise ModelError(f"FCN stride must be 8, 16 or 32 (32 for AlexNet), got {stride} with {backbone}", where="model.params.stride")
        self.backbone, self.stride = backbone, stride
        if backbone == "vgg16":
            self.features = vgg16_features(in_channels)
            feat, fc_kernel = 512, 7
            # torchvision's VGG classifier: Linear(512·7·7 → 4096), ReLU, Dropout, Linear(4096 → 4096), ReLU, Dropout, Linear
            self.pretrained_renames = {"classifier.0.": "fc6.", "classifier.3.": "fc7."}
        elif backbone == "alexnet":
            self.features = alexnet_features(in_channels)
            feat, fc_kernel = 256, 6
            # torchvision's AlexNet classifier is Dropout, Linear(9216 → 4096), ReLU, Dropout, Linear, ReLU, Linear
            self.pretrained_renames = {"classifier.1.": "fc6.", "classifier.4.": "fc7."}
        else:
            raise ModelError(f"unknown FCN backbone {backbone!r}", where="model.params.backbone", fix="use 'vgg16' or 'alexnet'")
        self.fc6 = nn.Conv2d(feat, fc_channels, fc_kernel, padding=fc_kernel // 2)  # AlexNet (6×6): one extra row/column, absorbed by the final resize
        self.fc7 = nn.Conv2d(fc_channels, fc_channels, 1)
        self.drop = nn.Dropout(dropout)
        self.score_fr = nn.Conv2d(fc_channels, num_classes, 1)
        if stride <= 16:
            self.score_pool4 = nn.Conv2d(512, num_classes, 1)
            self.upscore2 = nn.ConvTranspose2d(num_classes, num_classes, 4, stride=2, padding=1, bias=False)
        if stride == 8:
            self.score_pool3 = nn.Conv2d(256, num_classes, 1)
            self.upscore_pool4 = nn.ConvTranspose2d(num_classes, num_classes, 4, stride=2, padding=1, bias=False)
        with torch.no_grad():
            for m in self.modules():
                if isinstance(m, nn.ConvTranspose2d):
                    m.weight.copy_(bilinear_kernel(num_classes, 4))
            for name in ("score_fr", "score_pool4", "score_pool3"):  # the paper zero-initialises the score layers
                if hasattr(self, name):
                    nn.init.zeros_(getattr(self, name).weight)
                    nn.init.zeros_(getattr(self, name).bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        size = x.shape[2:]
        taps: dict[str, torch.Tensor] = {}
        h = x
        for i, layer in enumerate(self.features):
            h = layer(h)
            if self.backbone == "vgg16" and i in (_VGG_TAPS["pool3"], _VGG_TAPS["pool4"]):
                taps["pool3" if i == _VGG_TAPS["pool3"] else "pool4"] = h
        h = self.drop(F.relu(self.fc6(h), inplace=True))
        h = self.drop(F.relu(self.fc7(h), inplace=True))
        score = self.score_fr(h)
        if self.stride <= 16:
            score = self.upscore2(score) + self.score_pool4(taps["pool4"])
        if self.stride == 8:
            score = self.upscore_pool4(score) + self.score_pool3(taps["pool3"])
        return resize_to(score, size)


def _build(in_channels: int, num_classes: int, backbone: Literal["vgg16", "alexnet"], stride: int, fc_channels: int, *, dropout: float) -> nn.Module:
    net = FCN(in_channels, num_classes, backbone=backbone, stride=stride, fc_channels=fc_channels, dropout=dropout)
    return PadToMultiple(net, 32, min_size=64 if backbone == "alexnet" else 32, in_channels=in_channels)


_VGG_WEIGHTS = "a torchvision VGG-16 state dict (vgg16-*.pth from torchvision.models.vgg16(weights='DEFAULT').state_dict())"


@register_model(
    "fcn8s",
    dims=(2,),
    description="FCN-8s: VGG-16 with score layers fused at strides 32, 16 and 8",
    paper=PAPER,
    family="fcn",
    tiny={"fc_channels": 32},
    weights=_VGG_WEIGHTS,
)
def fcn8s(spatial_dims: int, in_channels: int, num_classes: int, fc_channels: int = 4096, dropout: float = 0.5) -> nn.Module:
    return _build(in_channels, num_classes, "vgg16", 8, fc_channels, dropout=dropout)


@register_model(
    "fcn32s",
    dims=(2,),
    description="FCN-32s: VGG-16, one score map at stride 32 upsampled (coarse)",
    paper=PAPER,
    family="fcn",
    tiny={"fc_channels": 32},
    weights=_VGG_WEIGHTS,
)
def fcn32s(spatial_dims: int, in_channels: int, num_classes: int, fc_channels: int = 4096, dropout: float = 0.5) -> nn.Module:
    return _build(in_channels, num_classes, "vgg16", 32, fc_channels, dropout=dropout)


@register_model(
    "fcn_alexnet",
    dims=(2,),
    description="FCN-AlexNet: AlexNet features, one score map at stride ~32 upsampled (study 004's coarse baseline)",
    paper=PAPER,
    family="fcn",
    tiny={"fc_channels": 32},
    weights="a torchvision AlexNet state dict (alexnet-*.pth from torchvision.models.alexnet(weights='DEFAULT').state_dict())",
)
def fcn_alexnet(spatial_dims: int, in_channels: int, num_classes: int, fc_channels: int = 4096, dropout: float = 0.5) -> nn.Module:
    return _build(in_channels, num_classes, "alexnet", 32, fc_channels, dropout=dropout)
