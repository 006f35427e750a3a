"""Framework overhead: medseg's Lightning training loop vs a hand-written PyTorch loop.

Same model (a small 2D U-Net), same data pipeline (the in-memory phantom2d items and their
augmentation), same loss and optimiser; both run in this process on the CPU. Prints samples/s for
each (median over epochs and repeats) and the ratio medseg / plain (target ≥ 0.95).

    python benchmarks/training.py [--epochs 4] [--repeats 3] [--size 64]
"""

from __future__ import annotations

import argparse
import csv
import statistics
import tempfile
import time
from pathlib import Path

import torch
from torch.utils.data import DataLoader

from medseg.config import config_from_dict
from medseg.data.loading import CaseItems, SegDataModule, train_transforms
from medseg.data.source import open_dataset, resolve_splits
from medseg.engine.module import SegModule, build_optimizer
from medseg.engine.train import train


def make_config(tmp: Path, epochs: int, size: int) -> dict:
    return {
        "name": "bench",
        "data": {"dataset": "phantom2d", "builtin": {"n_patients": 20, "slices_per_patient": 4, "size": size}, "batch_size": 8, "cache_dir": str(tmp)},
        "model": {"name": "unet", "params": {"channels": [16, 32, 64, 128], "num_res_units": 1}},
        # validation only after the last epoch, so both loops time the same training work
        "train": {"epochs": epochs, "lr": 1e-3, "device": "cpu", "val_every": epochs, "scheduler": "none"},
    }


def medseg_loop(raw: dict, out: Path) -> list[float]:
    run = train(config_from_dict(raw), out, overwrite=True, progress=False)
    rows = list(csv.DictReader((run / "history.csv").open()))
    return [float(r["samples_per_s"]) for r in rows[1:]]  # the first epoch warms up


def plain_loop(raw: dict) -> list[float]:
    cfg = config_from_dict(raw)
    torch.manual_seed(0)
    ds = open_dataset(cfg)
    dm = SegDataModule(cfg, ds, resolve_splits(cfg, ds))
    module = SegModule(cfg.dump(), ds.info.dims, ds.info.n_channels, ds.info.class_names)
    net, loss_fn = module.net, module.loss_fn
    opt = build_optimizer(net.parameters(), cfg.train)
    loader = DataLoader(CaseItems(dm.items("train"), train_transforms(2, None, cfg.data.augment)), batch_size=8, shuffle=True, drop_last=True)
    rates = []
    net.train()
    for _ in range(cfg.train.epochs):
        n, t0 = 0, time.perf_counter()
        for batch in loader:
            opt.zero_grad(set_to_none=True)
            loss = loss_fn(net(batch["image"]), batch["label"])
            loss.backward()
            opt.step()
            n += batch["image"].shape[0]
        rates.append(n / (time.perf_counter() - t0))
    return rates[1:]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--epochs", type=int, default=4)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--size", type=int, default=64)
    args = ap.parse_args()
    torch.set_num_threads(max(1, torch.get_num_threads()))
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        raw = make_config(tmp, args.epochs, args.size)
        ours, ref = [], []
        for i in range(args.repeats):  # interleaved, so drift in machine load hits both
            ref += plain_loop(raw)
            ours += medseg_loop(raw, tmp / f"run{i}")
    m, p = statistics.median(ours), statistics.median(ref)
    print(f"samples/s  medseg (Lightning): {m:8.1f}   plain PyTorch loop: {p:8.1f}   (median of {len(ours)} epochs each)")
    print(f"ratio medseg / plain = {m / p:.3f}  (target ≥ 0.95)")


if __name__ == "__main__":
    main()
