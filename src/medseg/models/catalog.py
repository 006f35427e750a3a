"""The catalogue of models: ``MODELS`` (name → builder with metadata), ``register_model`` and ``list_models``."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Literal

import torch.nn as nn

from medseg.core.errors import ModelError
from medseg.core.registry import Registry

#: the modules that register model families (imported on the first lookup in :data:`MODELS`)
FAMILIES = (
    "attention_unet",
    "classical",
    "dense_unet",
    "dynunet",
    "fcn",
    "improved_unet",
    "mednext",
    "resenc_unet",
    "segformer",
    "segresnet",
    "smp_family",
    "unet",
    "unetr",
)


def _import_families() -> None:
    import importlib

    for name in FAMILIES:
        importlib.import_module(f"medseg.models.{name}")


MODELS: Registry[Callable[..., nn.Module]] = Registry("model", ModelError, loader=_import_families)


Training = Literal["gradient", "fit"]


def register_model(
    name: str,
    *,
    dims: tuple[int, ...],
    description: str,
    paper: str = "",
    family: str = "",
    tiny: dict[str, Any] | None = None,
    deep_supervision: bool = False,
    training: Training = "gradient",
    weights: str = "",
) -> Callable:
    """Register a builder ``fn(spatial_dims, in_channels, num_classes, **kwargs) -> nn.Module``.

    Args:
        name: the name used in configs (``model.name``).
        dims: the spatial dimensionalities the model supports.
        description: one line for ``medseg models``.
        paper: citation or link.
        family: the module (file) the builder lives in, for grouping.
        tiny: keyword arguments giving a small version of the same architecture (the same code
            path, fewer channels/blocks), used by the tests that run every model.
        deep_supervision: the builder takes ``n_deep_supervision`` (see docs/models.md).
        training: ``"gradient"`` (an ``nn.Module`` trained by back-propagation) or ``"fit"``
            (the classical baseline: ``model.fit(images, labels)``, no optimiser).
        weights: where compatible pretrained weights come from (shown when a path is missing);
            empty when the model has no pretrained weights.
    """
    return MODELS.register(
        name,
        dims=tuple(dims),
        description=description,
        paper=paper,
        family=family,
        tiny=dict(tiny or {}),
        deep_supervision=deep_supervision,
        training=training,
        weights=weights,
    )


def list_models(spatial_dims: int | None = None, training: Training | None = None) -> list[str]:
    """Registered names, sorted; optionally only those supporting ``spatial_dims`` / a training kind."""
    out = []
    for n in MODELS.names():
        m = MODELS.meta(n)
        if spatial_dims is not None and spatial_dims not in m["dims"]:
            continue
        if training is not None and m["training"] != training:
            continue
        out.append(n)
    return out
