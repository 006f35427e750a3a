"""Measure a few real optimiser steps before training: the time per step and the peak memory they need.

The step is the training step of the run (its network, loss with deep supervision, optimiser, precision and
batch × patch on the chosen device), fed random tensors: data loading runs in worker processes next to it.
The first steps (allocation, cuDNN autotuning) are not timed.
"""

from __future__ import annotations

import resource
import sys
import time
from typing import Any


def _rss_mb() -> float:
    """Peak resident memory of this process so far (MB)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 2**20 if sys.platform == "darwin" else peak / 1024


def measure_steps(
    raw: dict[str, Any], *, spatial_dims: int, in_channels: int, n_classes: int, patch: list[int], steps: int = 3, warmup: int = 1
) -> dict[str, float]:
    """``{"step_s", "peak_mb", "device"}`` of the training step ``raw`` (a config mapping) describes.

    Args:
        raw: the auto config (``model``, ``train``, ``data.batch_size``).
        spatial_dims: 2 or 3.
        in_channels: image channels.
        n_classes: network outputs.
        patch: the training patch.
        steps: timed steps (median).
        warmup: untimed steps first.
    """
    import statistics

    import torch

    from medseg.config import TrainConfig, resolve_device
    from medseg.engine.module import build_optimizer
    from medseg.losses import build_loss
    from medseg.models import create_model

    device = torch.device(resolve_device(raw["train"].get("device", "auto")))
    net = create_model(raw["model"]["name"], spatial_dims, in_channels, n_classes, **raw["model"]["params"]).to(device)
    net.train()
    loss_fn = build_loss(raw["train"].get("loss", "dice_ce"), False)
    precision = raw["train"].get("precision") or "32"
    opt = build_optimizer(net.parameters(), TrainConfig(optimizer="adamw", lr=1e-4, precision=precision, grad_clip=raw["train"].get("grad_clip")))
    bs = int(raw["data"]["batch_size"])
    x = torch.randn(bs, in_channels, *patch, device=device)
    y = torch.randint(0, n_classes, (bs, 1, *patch), device=device)
    amp = precision == "bf16-mixed" or (device.type == "cuda" and precision == "16-mixed")  # CPUs autocast to bfloat16 only
    dtype = torch.bfloat16 if precision == "bf16-mixed" else torch.float16
    scaler = torch.amp.GradScaler("cuda", enabled=amp and dtype is torch.float16)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    times: list[float] = []
    rss0 = _rss_mb()
    for i in range(warmup + steps):
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        t0 = time.perf_counter()
        opt.zero_grad(set_to_none=True)
        with torch.autocast(device.type, dtype=dtype, enabled=amp):
            loss = loss_fn(net(x), y)
        scaler.scale(loss).backward()
        scaler.step(opt)
        scaler.update()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        if i >= warmup:
            times.append(time.perf_counter() - t0)
    peak = torch.cuda.max_memory_allocated(device) / 2**20 if device.type == "cuda" else max(_rss_mb() - rss0, 0.0) + rss0
    del net, opt, x, y
    return {"step_s": float(statistics.median(times)), "peak_mb": float(peak), "device": device.type}


def predict_seconds(step_s: float, n_cases: int, voxels_per_case: float, patch_voxels: float, batch: int) -> float:
    """Inference time of ``n_cases`` from the step time: a forward pass costs about ⅓ of a training step,
    windows overlap by half (×2 per axis in the worst case, ×~1.5 typical)."""
    windows = max(1.0, voxels_per_case / patch_voxels) * 1.5
    return n_cases * windows * step_s / (3 * max(batch, 1))
