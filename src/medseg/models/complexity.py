"""Model size and cost for comparison tables: parameters (without allocating) and MACs.

``macs`` uses PyTorch's own ``torch.utils.flop_counter.FlopCounterMode`` (no extra dependency):
it counts matrix multiplications and convolutions (incl. attention), which dominate; element-wise
operations, norms and interpolation are not counted. One MAC = two FLOPs.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import torch.nn as nn

from medseg.models.catalog import MODELS
from medseg.models.registry import count_parameters, create_model

REFERENCE_IN_CHANNELS = 1
REFERENCE_NUM_CLASSES = 3
REFERENCE_SIZE = {2: (256, 256), 3: (96, 96, 96)}


def macs(model: nn.Module, input_size: Sequence[int], device: str | torch.device = "cpu") -> int:
    """Multiply-accumulates of one forward pass (eval mode, no gradient).

    Args:
        model: the model (its mode is restored afterwards).
        input_size: ``(B, C, [D,] H, W)``.
        device: where to run the counting pass; ``"meta"`` counts without computing (works for
            models built on the meta device, and most others).

    Returns:
        MACs (FLOPs / 2) of the counted operations; 0 for models without tensor operations
        (the classical baselines).
    """
    from torch.utils.flop_counter import FlopCounterMode  # imports triton: only when counting

    if getattr(model, "fitted", None) is not None:  # classical baseline: not a network
        return 0
    was_training = model.training
    model.eval()
    try:
        x = torch.zeros(tuple(int(s) for s in input_size), device=device)
        counter = FlopCounterMode(display=False)
        with torch.no_grad(), counter:
            model(x)
        return int(counter.get_total_flops() // 2)
    finally:
        model.train(was_training)


def build_on_meta(name: str, spatial_dims: int, in_channels: int = REFERENCE_IN_CHANNELS, num_classes: int = REFERENCE_NUM_CLASSES, **kwargs: Any) -> nn.Module:
    """Build a model on the meta device: shapes only, no memory, no initialisation cost."""
    with torch.device("meta"):
        return create_model(name, spatial_dims, in_channels, num_classes, **kwargs)


def reference_parameters(name: str, spatial_dims: int | None = None, **kwargs: Any) -> int:
    """Parameter count at the reference configuration (1 input channel, 3 classes, defaults)."""
    dims = MODELS.meta(name)["dims"]
    sd = spatial_dims if spatial_dims is not None else dims[0]
    try:
        return count_parameters(build_on_meta(name, sd, **kwargs))
    except (NotImplementedError, RuntimeError):  # a builder that cannot run on meta
        return count_parameters(create_model(name, sd, REFERENCE_IN_CHANNELS, REFERENCE_NUM_CLASSES, **kwargs))


def format_count(n: int | float) -> str:
    """``24436369`` → ``"24.4 M"``."""
    for unit, div in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if abs(n) >= div:
            return f"{n / div:.1f} {unit}"
    return str(int(n))
