"""The model registry and ``create_model``: every architecture is one registered builder."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch.nn as nn

from medseg.errors import ModelError
from medseg.registry import Registry

MODELS: Registry[Callable[..., nn.Module]] = Registry("model", ModelError)


def register_model(name: str, *, dims: tuple[int, ...], description: str, paper: str = "") -> Callable:
    """Register a builder ``fn(spatial_dims, in_channels, num_classes, **kwargs) -> nn.Module``.

    Args:
        name: the name used in configs (``model.name``).
        dims: the spatial dimensionalities the model supports.
        description: one line for ``medseg models``.
        paper: citation or link.
    """
    return MODELS.register(name, dims=tuple(dims), description=description, paper=paper)


def create_model(name: str, spatial_dims: int, in_channels: int, num_classes: int, **kwargs: Any) -> nn.Module:
    """Build a registered model.

    Args:
        name: registered name (see :func:`list_models`).
        spatial_dims: 2 or 3.
        in_channels: image channels.
        num_classes: output channels (classes incl. background, or labels for multi-label data).
        **kwargs: the model's own keyword arguments.

    Returns:
        A module mapping ``(B, in_channels, [D,] H, W)`` to logits ``(B, num_classes, [D,] H, W)``.
    """
    builder = MODELS.get(name)
    dims = MODELS.meta(name)["dims"]
    if spatial_dims not in dims:
        raise ModelError(
            f"model {name!r} supports {'/'.join(f'{d}D' for d in dims)}, not {spatial_dims}D",
            where="model.name",
            fix="pick a model for this data set's dimensionality (`medseg models`)",
        )
    if num_classes < 1:
        raise ModelError(f"num_classes must be ≥ 1, got {num_classes}", where="model", fix="check the data set's classes")
    if in_channels < 1:
        raise ModelError(f"in_channels must be ≥ 1, got {in_channels}", where="model", fix="check the data set's modalities")
    try:
        return builder(spatial_dims=spatial_dims, in_channels=in_channels, num_classes=num_classes, **kwargs)
    except TypeError as e:
        raise ModelError(f"bad argument for model {name!r}: {e}", where="model.params", fix="see the builder's arguments in `medseg models`") from None


def list_models() -> list[str]:
    return MODELS.names()


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
