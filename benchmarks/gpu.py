"""GPU figures in one run: training steps by precision and memory format, the loader against dummy data, `medseg auto`.

1. **steps** — medseg's own networks and losses (``SegModule``, Dice + CE): a 2D U-Net (batch 32 × 256², channels
   32…512), a 3D U-Net (batch 2 × 64×128², channels 16…256), FPN with a ResNet-34 encoder (batch-norm) and SegFormer-B0,
   one optimiser step at a time in a plain loop, under ``fp32-strict`` (no TF32 anywhere), ``fp32`` (PyTorch's
   defaults: TF32 in cuDNN convolutions only), ``tf32`` (matmuls too), ``16-mixed``, ``bf16-mixed`` and ``16-mixed``
   + channels-last. Samples/s (median of 5 windows of 10 steps after a warm-up) and peak GPU memory; the ratio is to
   ``fp32``.
2. **loader** — the same 16-mixed step fed three ways on built-in data (``phantom2d`` 256² and ``phantom3d`` 64×128²
   volumes, default augmentation, ``num_workers=auto``): ``medseg train`` (Lightning, samples/s from
   ``history.csv``), the data module's own loader in a plain loop, and one fixed batch already on the GPU (dummy
   data). loader / dummy below 1 means the GPU waits for data; Lightning / loader is the framework's cost.
3. **auto** — ``benchmarks/auto.py``'s nuclei proxy end to end from the shell (``medseg auto DATA --out RUN`` with no
   other flag, so it picks the GPU and bf16-mixed where the GPU has it; then ``medseg predict`` of the 4 test tiles).
4. **auto3d** — ``medseg auto --time-budget 2m`` on the built-in ``phantom3d`` (2D and 3D trained, one chosen).

Every section writes its figures to ``--out`` as JSON as soon as it ends, so a run cut short keeps what it measured.
On a CPU (no CUDA) it runs the same code at toy sizes (``--small`` is implied): that checks the script, not speed.

    python benchmarks/gpu.py [--out gpu-figures] [--sections steps,loader,auto,auto3d] [--nets unet2d,fpn2d]
"""

from __future__ import annotations

import argparse
import csv
import json
import statistics
import sys
import tempfile
import time
import traceback
from contextlib import nullcontext
from pathlib import Path

import torch

from medseg.config import config_from_dict
from medseg.data.source import open_dataset, resolve_splits
from medseg.engine.module import SegModule, build_optimizer

ROOT = Path(__file__).resolve().parent
sys.path.insert(0, str(ROOT))

VARIANTS = {  # name: (autocast dtype, TF32 in matmuls and convolutions, channels_last)
    "fp32-strict": (None, False, False),
    "fp32": (None, None, False),  # PyTorch's defaults: TF32 in cuDNN convolutions, not in matmuls
    "tf32": (None, True, False),
    "16-mixed": (torch.float16, False, False),
    "bf16-mixed": (torch.bfloat16, False, False),
    "16-mixed+channels_last": (torch.float16, False, True),
}


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


NETS = {  # name: (dims, model, params at full size)
    "unet2d": (2, "unet", {"channels": [32, 64, 128, 256, 512], "num_res_units": 1}),
    "unet3d": (3, "unet", {"channels": [16, 32, 64, 128, 256], "num_res_units": 1}),
    "fpn2d": (2, "fpn_resnet34", {}),
    "segformer2d": (2, "segformer_b0", {}),
}


def raw_config(dims: int, small: bool, tmp: Path, net: str | None = None, **train: object) -> dict:
    if dims == 2:
        size = 32 if small else 256
        data = {"dataset": "phantom2d", "builtin": {"n_patients": 8 if small else 40, "slices_per_patient": 4, "size": size}, "batch_size": 4 if small else 32}
        model = {"name": "unet", "params": {"channels": [8, 16, 32] if small else [32, 64, 128, 256, 512], "num_res_units": 1}}
    else:
        size = 32 if small else 128
        data = {
            "dataset": "phantom3d",
            "builtin": {"n_patients": 6 if small else 12, "size": size, "depth": 16 if small else 64},
            "batch_size": 2,
            "patch_size": [16, 32, 32] if small else [64, 128, 128],
        }
        model = {"name": "unet", "params": {"channels": [8, 16, 32] if small else [16, 32, 64, 128, 256], "num_res_units": 1}}
    data.update(cache_dir=str(tmp / f"cache{dims}"), num_workers="auto")
    if net is not None and not small:
        model = {"name": NETS[net][1], "params": NETS[net][2]}
    return {"name": f"gpu{dims}d", "data": data, "model": model, "train": {"lr": 1e-3, "scheduler": "none", **train}}


def step_fn(module: SegModule, dims: int, device: torch.device, variant: str):
    """One optimiser step on (image, label) under a precision / memory-format variant."""
    dtype, tf32, cl = VARIANTS[variant]
    torch.backends.cuda.matmul.allow_tf32 = bool(tf32)
    torch.backends.cudnn.allow_tf32 = tf32 is not False
    net, loss_fn = module.net.to(device), module.loss_fn
    fmt = (torch.channels_last if dims == 2 else torch.channels_last_3d) if cl else torch.contiguous_format
    net = net.to(memory_format=fmt)
    opt = build_optimizer(net.parameters(), module.cfg.train)
    scaler = torch.amp.GradScaler(device.type, enabled=dtype is torch.float16 and device.type == "cuda")
    net.train()

    def step(image: torch.Tensor, label: torch.Tensor) -> None:
        opt.zero_grad(set_to_none=True)
        ctx = torch.autocast(device.type, dtype=dtype) if dtype is not None and device.type == "cuda" else nullcontext()
        with ctx:
            loss = loss_fn(net(image.to(memory_format=fmt)), label)
        scaler.scale(loss).backward()
        scaler.step(opt)
        scaler.update()

    return step


def make_module(raw: dict) -> tuple[SegModule, object, object]:
    cfg = config_from_dict(raw)
    ds = open_dataset(cfg)
    module = SegModule(cfg.dump(), ds.info.dims, ds.info.n_channels, ds.info.class_names)
    return module, cfg, ds


def dummy_batch(raw: dict, device: torch.device, n_classes: int) -> tuple[torch.Tensor, torch.Tensor]:
    d = raw["data"]
    spatial = d.get("patch_size") or [d["builtin"]["size"]] * 2
    image = torch.randn(d["batch_size"], 1, *spatial, device=device)
    label = torch.randint(0, n_classes, (d["batch_size"], 1, *spatial), device=device)
    return image, label


def timed(step, batches, device: torch.device, windows: int, per: int) -> list[float]:
    """Samples/s of ``windows`` windows of ``per`` steps (after 3 warm-up steps); ``batches`` yields (image, label)."""
    it = iter(batches)
    for _ in range(3):
        step(*next(it))
    sync(device)
    rates = []
    for _ in range(windows):
        n, t0 = 0, time.perf_counter()
        for _ in range(per):
            image, label = next(it)
            step(image, label)
            n += image.shape[0]
        sync(device)
        rates.append(n / (time.perf_counter() - t0))
    return rates


def steps(device: torch.device, small: bool, tmp: Path, nets: list[str]) -> list[dict]:
    rows = []
    for net in nets:
        dims = NETS[net][0]
        raw = raw_config(dims, small, tmp, net)
        _, _, ds = make_module(raw)
        n_classes = len(ds.info.class_names)
        for variant in VARIANTS:
            if device.type != "cuda" and variant != "fp32":
                continue
            m, _, _ = make_module(raw)
            step = step_fn(m, dims, device, variant)
            image, label = dummy_batch(raw, device, n_classes)
            if device.type == "cuda":
                torch.cuda.reset_peak_memory_stats()

            def fixed(image=image, label=label):
                while True:
                    yield image, label

            rates = timed(step, fixed(), device, 5, 2 if small else 10)
            peak = torch.cuda.max_memory_allocated() / 2**30 if device.type == "cuda" else float("nan")
            rows.append({"net": net, "variant": variant, "samples_per_s": statistics.median(rates), "peak_gib": peak})
            print(f"  {net:12s} {variant:24s} {statistics.median(rates):9.1f} samples/s   peak {peak:6.2f} GiB", flush=True)
            del m, step
        base = {r["net"]: r["samples_per_s"] for r in rows if r["variant"] == "fp32"}  # PyTorch's default
        for r in rows:
            r["vs_fp32"] = r["samples_per_s"] / base[r["net"]]
    return rows


def loader(device: torch.device, small: bool, tmp: Path) -> list[dict]:
    from medseg.data.loading import SegDataModule
    from medseg.engine.train import train

    rows = []
    for dims in (2, 3):
        precision = "16-mixed" if device.type == "cuda" else "32"
        epochs, ipe = (3, 4) if small else (4, 40)
        raw = raw_config(dims, small, tmp, epochs=epochs, iterations_per_epoch=ipe, val_every=epochs, precision=precision, device=device.type)
        run = train(config_from_dict(raw), tmp / f"run{dims}", overwrite=True, progress=False)
        hist = list(csv.DictReader((run / "history.csv").open()))
        lightning = statistics.median(float(r["samples_per_s"]) for r in hist[1:])

        module, cfg, ds = make_module(raw)
        dm = SegDataModule(cfg, ds, resolve_splits(cfg, ds))
        variant = "16-mixed" if device.type == "cuda" else "fp32"
        step = step_fn(module, dims, device, variant)

        dm.batches_per_epoch = 10**6  # one long pass: the workers start once, as in Lightning's persistent loader

        def real(dm=dm):
            for b in dm.train_dataloader():
                yield b["image"].to(device, non_blocking=True), b["label"].to(device, non_blocking=True)

        per = 4 if small else 20
        batches = real()
        with_loader = statistics.median(timed(step, batches, device, 3, per))
        batches.close()  # ends the loader's iterator: its worker processes stop before the next measurement
        image, label = dummy_batch(raw | {"data": raw["data"] | {"batch_size": cfg.data.batch_size}}, device, len(ds.info.class_names))

        def fixed(image=image, label=label):
            while True:
                yield image, label

        dummy = statistics.median(timed(step, fixed(), device, 3, per))
        row = {"data": raw["data"]["dataset"], "lightning_train": lightning, "plain_loader": with_loader, "plain_dummy": dummy}
        row |= {"loader_vs_dummy": with_loader / dummy, "lightning_vs_loader": lightning / with_loader, "workers": dm._workers()}
        rows.append(row)
        print(f"  {row['data']}: medseg train {lightning:.1f}  loader {with_loader:.1f}  dummy {dummy:.1f} samples/s  (workers {row['workers']})", flush=True)
    return rows


def auto(tmp: Path) -> dict:
    import auto as bench_auto

    return bench_auto.nuclei(None, 3, tmp / "auto")


def auto3d(tmp: Path, budget: str) -> dict:
    """``medseg auto --time-budget`` on the built-in ``phantom3d``: the chosen configuration and its validation Dice."""
    import auto as bench_auto
    from medseg.data.builtin import materialize

    folder = materialize("phantom3d", {}, tmp / "cache3d")
    seconds, _ = bench_auto.shell([*bench_auto.MEDSEG, "auto", str(folder), "--out", str(tmp / "auto3d"), "--time-budget", budget])
    state = json.loads((tmp / "auto3d" / "auto.json").read_text())
    scores = {k: v.get("best_val_dice") for k, v in state["stages"].items() if k.startswith("train.")}
    chosen = state["decisions"]["configuration"]["value"]
    return {"auto_s": seconds, "budget": budget, "val_dice": scores, "chosen": chosen, "estimate_s": state["estimate"]["total_s"]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, help="folder for the figures, one JSON per section (default: printed only)")
    ap.add_argument("--sections", default="steps,loader,auto,auto3d")
    ap.add_argument("--nets", default="unet2d,unet3d,fpn2d,segformer2d", help=f"networks of [steps], of {', '.join(NETS)}")
    ap.add_argument("--budget", default="2m", help="--time-budget of the phantom3d auto run")
    ap.add_argument("--small", action="store_true", help="toy sizes (implied without CUDA)")
    args = ap.parse_args()
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    small = args.small or device.type != "cuda"
    if args.out is not None:
        args.out.mkdir(parents=True, exist_ok=True)
    name = torch.cuda.get_device_name() if device.type == "cuda" else "CPU"
    print(f"device {name}, torch {torch.__version__}, small={small}", flush=True)
    sections = {
        "steps": lambda t: steps(device, small, t, args.nets.split(",")),
        "loader": lambda t: loader(device, small, t),
        "auto": auto,
        "auto3d": lambda t: auto3d(t, args.budget),
    }
    with tempfile.TemporaryDirectory() as d:
        for key in args.sections.split(","):
            print(f"[{key}]", flush=True)
            t0 = time.perf_counter()
            try:
                result = sections[key](Path(d))
            except Exception:  # one broken section must not cost the others' figures
                traceback.print_exc()
                continue
            if args.out is not None:
                (args.out / f"{key}.json").write_text(json.dumps({"device": name, "seconds": time.perf_counter() - t0, "result": result}, indent=1))
            print(json.dumps(result, indent=1), flush=True)


if __name__ == "__main__":
    main()
