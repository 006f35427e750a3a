"""A training step on the CPU: medseg's optimiser and precision against PyTorch's defaults, side by side.

The networks ``medseg auto`` trains on a CPU (nnU-Net's 2D U-Net for 128² tiles, the strided residual U-Net for a
3D patch of a brain MRI), their Dice + cross-entropy loss, one step each of:

* ``plain``: AdamW as PyTorch builds it by default on a CPU (a loop over the parameters), 32-bit;
* ``fused``: medseg's optimiser (``build_optimizer``: one fused kernel for every parameter), 32-bit;
* ``fused + bf16``: the same with bfloat16 autocast, which ``medseg auto`` picks where it measures it faster
  (CPUs with AMX / AVX-512 BF16; elsewhere bfloat16 is emulated and slower).

Random tensors, no loader; median seconds per step over ``--repeats`` windows of ``--steps`` steps, and the speed-up
against ``plain``. Run it on a machine doing nothing else.

    python benchmarks/cpu_step.py [--steps 10] [--repeats 5]
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from medseg.config import TrainConfig
from medseg.engine.module import build_optimizer
from medseg.losses import build_loss
from medseg.models import create_model
from medseg.workflows.auto.config import network

CASES = {
    "2D U-Net 16…512, 2 × 128²": ({"n_stages": 6, "strides": [[2, 2]] * 5, "kernel_sizes": [[3, 3]] * 6}, 2, [128, 128], 2),
    "3D residual U-Net 16…256, 2 × 48×64×64": ({"n_stages": 5, "strides": [[2, 2, 2]] * 4, "kernel_sizes": [[3, 3, 3]] * 5}, 3, [48, 64, 64], 4),
}


def seconds_per_step(conf: dict, dims: int, patch: list[int], n_classes: int, *, fused: bool, bf16: bool, steps: int, repeats: int) -> float:
    torch.manual_seed(0)
    spec = network(conf, dims, 16, device="cpu")
    net = create_model(spec["name"], dims, 1, n_classes, **spec["params"])
    opt = build_optimizer(net.parameters(), TrainConfig(lr=1e-4)) if fused else torch.optim.AdamW(net.parameters(), lr=1e-4, weight_decay=1e-5)
    loss_fn = build_loss("dice_ce", False)
    x, y = torch.randn(2, 1, *patch), torch.randint(0, n_classes, (2, 1, *patch))

    def step() -> None:
        opt.zero_grad(set_to_none=True)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            loss = loss_fn(net(x), y)
        loss.backward()
        opt.step()

    step()  # allocation, oneDNN primitive creation
    windows = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        for _ in range(steps):
            step()
        windows.append((time.perf_counter() - t0) / steps)
    return statistics.median(windows)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--repeats", type=int, default=5)
    args = ap.parse_args()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, CPU capability {torch.backends.cpu.get_cpu_capability()}")
    print(f"{'step (s, median)':42s} {'plain':>8s} {'fused':>8s} {'fused+bf16':>11s} {'speed-up':>9s}")
    for name, (conf, dims, patch, n_classes) in CASES.items():
        kw = {"steps": args.steps, "repeats": args.repeats}
        plain = seconds_per_step(conf, dims, patch, n_classes, fused=False, bf16=False, **kw)
        fused = seconds_per_step(conf, dims, patch, n_classes, fused=True, bf16=False, **kw)
        both = seconds_per_step(conf, dims, patch, n_classes, fused=True, bf16=True, **kw)
        print(f"{name:42s} {plain:8.3f} {fused:8.3f} {both:11.3f} {plain / fused:4.2f}× {plain / both:4.2f}×")


if __name__ == "__main__":
    main()
