"""The model registry and ``create_model``: every architecture is one registered builder."""

from __future__ import annotations

from typing import Any

import torch.nn as nn

from medseg.core.errors import ModelError
from medseg.models.catalog import MODELS


def create_model(name: str, spatial_dims: int, in_channels: int, num_classes: int, **kwargs: Any) -> nn.Module:
    """Build a registered model, optionally with pretrained weights from a local path.

    Args:
        name: registered name (see :func:`list_models`).
        spatial_dims: 2 or 3.
        in_channels: image channels.
        num_classes: output channels (classes incl. background, or labels for multi-label data).
        **kwargs: the model's own keyword arguments, plus two handled here for every model:
            ``pretrained`` (a local weights file or Hugging Face folder, see
            :func:`medseg.models.pretrained.load_pretrained`) and ``pretrained_channels``
            (``"sum"``: adapt the first convolution to ``in_channels`` by summing/cycling its
            RGB weights; ``"replicate"``: keep a 3-channel first convolution and repeat a
            1-channel input three times). The load report is kept as ``model.pretrained_report``.

    Returns:
        A module mapping ``(B, in_channels, [D,] H, W)`` to logits ``(B, num_classes, [D,] H, W)``.

    Raises:
        ModelError: unknown name (with close matches), unsupported dimensionality, bad counts,
            bad keyword arguments, missing or unusable weights.
    """
    builder = MODELS.get(name)
    meta = MODELS.meta(name)
    dims = meta["dims"]
    if spatial_dims not in dims:
        raise ModelError(
            f"model {name!r} supports {'/'.join(f'{d}D' for d in dims)}, not {spatial_dims}D",
            where="model.name",
            fix=f"pick a model for this data set's dimensionality (`medseg models`), e.g. {_suggest(spatial_dims)}",
        )
    for what, value in (("num_classes", num_classes), ("in_channels", in_channels)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ModelError(f"{what} must be an integer ≥ 1, got {value!r}", where="model", fix="check the data set's classes and channels")
    pretrained = kwargs.pop("pretrained", None)
    channel_mode = kwargs.pop("pretrained_channels", "sum")
    if channel_mode not in ("sum", "replicate"):
        raise ModelError(f"pretrained_channels must be 'sum' or 'replicate', got {channel_mode!r}", where="model.params.pretrained_channels")
    replicate = pretrained is not None and channel_mode == "replicate" and in_channels != 3
    if replicate and in_channels != 1:
        raise ModelError(
            f"pretrained_channels='replicate' repeats a 1-channel image to RGB, but the data have {in_channels} channels",
            where="model.params.pretrained_channels",
            fix="use pretrained_channels: sum",
        )
    try:
        model = builder(spatial_dims=spatial_dims, in_channels=3 if replicate else in_channels, num_classes=num_classes, **kwargs)
    except TypeError as e:
        raise ModelError(f"bad argument for model {name!r}: {e}", where="model.params", fix="see the model's keyword arguments in docs/models.md") from None
    if pretrained is not None:
        from medseg.models.pretrained import load_pretrained

        report = load_pretrained(model, pretrained, model_name=name)
        if replicate:
            from medseg.models.wrappers import PadToMultiple, ReplicateChannels

            if isinstance(model, PadToMultiple):  # inside the padding wrapper: the ONNX export keeps splitting it off
                model.net, model.in_channels = ReplicateChannels(model.net, 3), 1
            else:
                model = ReplicateChannels(model, 3)
        model.pretrained_report = report
    return model


def _suggest(spatial_dims: int) -> str:
    names = [n for n in MODELS.names() if spatial_dims in MODELS.meta(n)["dims"]]
    return ", ".join(names[:4]) if names else "none registered"


def count_parameters(model: nn.Module) -> int:
    """Number of parameters (trainable or not; works on models built on the meta device)."""
    return sum(p.numel() for p in model.parameters())
