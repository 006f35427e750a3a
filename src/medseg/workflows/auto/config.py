"""The config ``medseg auto`` (and ``medseg train DATA``) trains with: everything from the plan, nothing to choose.

Every value comes with the reason it was chosen (:func:`auto_config` returns both), so ``auto.json`` can say why.
The defaults were measured (docs/auto.md): nnU-Net's recipe — plain-conv U-Net with instance norm, Dice +
cross-entropy, ⅓ foreground-centred patches, rotation/scaling/intensity augmentation with
mirroring — but AdamW with a cosine schedule fitted to a wall-clock budget instead of 1000 × 250 SGD steps,
and widths chosen so the budget buys enough optimiser steps on the device at hand.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from medseg.config import mixed_precision, resolve_device
from medseg.workflows.prepare import PLAN_DEFAULTS

#: widths of the first stage tried, widest first; the widest that affords :data:`MIN_STEPS` steps is kept
BASE_WIDTHS = {"cuda": (32, 16), "cpu": (32, 16, 8), "mps": (32, 16)}
#: feature cap per stage (nnU-Net: 512 in 2D, 320 in 3D)
MAX_WIDTH = {2: 512, 3: 320}
#: fewest optimiser steps a budget must buy, else a smaller patch or a narrower network is taken (measured on a CPU,
#: docs/auto.md: a 3D U-Net in 280 s reached Dice 0.89–0.91 in 150–550 steps, 0.93 in 750)
MIN_STEPS = 800
#: at least this many steps at the narrowest width, else the budget is refused as too short
REFUSE_STEPS = 100
#: the default training time of a configuration (no --time-budget): the widest network that makes MIN_STEPS steps
#: in it trains for it (measured: a wider network at fewer steps beats a narrow one at more, docs/auto.md). A small
#: 2D data set then takes ~2½ minutes end to end on 2 CPU cores, leaving room for a slow hour within 3 minutes
DEFAULT_RUN_S = 135.0
#: without a budget, a configuration whose narrowest network cannot make MIN_STEPS steps in DEFAULT_RUN_S trains this
#: many optimiser steps (``medseg train DATA``: always this many)
DEFAULT_STEPS = 1000
#: bounds of that fallback, seconds
DEFAULT_BUDGET_S = (DEFAULT_RUN_S, 3600.0)
#: on a CPU, bfloat16 mixed precision trains when its measured step takes at most this share of the 32-bit one (CPUs
#: with AMX / AVX-512 BF16: a 2D U-Net step 0.8×, a 3D one 0.55×; elsewhere bfloat16 is emulated and slower)
CPU_BF16_GAIN = 0.9
#: at most this many stages (a 128² patch gets 6, as in nnU-Net)
MAX_STAGES = 6


def auto_split(n_labelled: int) -> tuple[tuple[float, float, float], str]:
    """Train/val/test ratios: no test split (test data comes with the data set or later); ~15 % validation."""
    if n_labelled < 2:
        return (1.0, 0.0, 0.0), "one labelled case: it trains and validates on the same case (no held-out estimate)"
    return (0.85, 0.15, 0.0), "15 % of the labelled patients validate (checkpoint, 2D/3D and post-processing choice); no test split is held back"


def widths(n_stages: int, dims: int, base: int) -> list[int]:
    """``base · 2^i`` per stage, capped like nnU-Net's."""
    return [min(base * 2**i, MAX_WIDTH[dims]) for i in range(n_stages)]


def strided_stem(dims: int, device: str) -> bool:
    """Whether the network's first convolution is strided: 3D on a CPU, where the full-resolution stage of nnU-Net's
    U-Net takes most of a step (a 64³ patch: ~4× the step of the strided U-Net, docs/auto.md)."""
    return dims == 3 and device == "cpu"


def network(conf: dict[str, Any], dims: int, base: int, device: str = "cuda") -> dict[str, Any]:
    """The model (``name`` and ``params``) from a plan configuration: its stages (at most :data:`MAX_STAGES`) and
    strides. nnU-Net's plain-conv U-Net (``dynunet``, with the plan's kernels), or where :func:`strided_stem`
    (3D on a CPU) MONAI's residual U-Net (``unet``), whose first convolution already down-samples."""
    n = min(int(conf["n_stages"]), MAX_STAGES)
    strides = [list(s) for s in conf["strides"]][: n - 1]
    if strided_stem(dims, device):
        return {"name": "unet", "params": {"channels": widths(n, dims, base), "strides": strides, "num_res_units": 2, "norm": "instance"}}
    params = {
        "filters": widths(n, dims, base),
        "kernel_sizes": [list(k) for k in conf["kernel_sizes"]][:n],
        "strides": [[1] * dims, *strides],
        "n_deep_supervision": 0,  # measured: no gain at the step counts a short budget buys (docs/auto.md)
        "norm": "instance",
    }
    return {"name": "dynunet", "params": params}


def auto_config(
    dataset: str | Path,
    plan_file: str | Path,
    plan: dict[str, Any],
    configuration: str,
    *,
    base_width: int = 32,
    device: str = "auto",
    budget_s: float | None = None,
    n_labelled: int = 2,
    fold: int | None = None,
    n_folds: int = 0,
    conf: dict[str, Any] | None = None,
    precision: str | None = None,
) -> tuple[dict[str, Any], dict[str, str]]:
    """The raw config (validated later by ``config_from_dict``) and, per decision, why.

    Args:
        dataset: the medseg data set folder.
        plan_file: its ``plan.json`` (training reads spacing, normalisation and the cache through it).
        plan: the plan itself.
        configuration: ``2d`` or ``3d``.
        base_width: channels of the first stage.
        device: ``auto``, ``cpu``, ``cuda`` or ``mps``.
        budget_s: the training budget in seconds (None: :data:`DEFAULT_STEPS` optimiser steps).
        n_labelled: labelled patients (sets the split).
        fold, n_folds: cross-validation fold of a ``--folds 5`` run.
        conf: the configuration to train when not the plan's own (a patch shrunk for a slow device,
            :func:`medseg.data.plan.shrink_configuration`): its patch is set as ``data.patch_size``.
        precision: ``train.precision`` (default: mixed on CUDA, 32-bit elsewhere; the size stage picks ``bf16-mixed``
            on a CPU whose measured step it makes faster).
    """
    dims = 3 if configuration == "3d" else 2
    planned = plan["configurations"][configuration]
    conf = planned if conf is None else conf
    shrunk = list(conf["patch_size"]) != list(planned["patch_size"])
    ratios, why_split = auto_split(n_labelled)
    split: dict[str, Any] = {"ratios": list(ratios), "seed": 0}
    if n_folds:
        split.update(ratios=[0.8, 0.2, 0.0], n_folds=n_folds, fold=fold)
        why_split = f"patient-grouped {n_folds}-fold cross-validation (fold {fold})"
    batch = max(2, int(conf["batch_size"]))
    raw: dict[str, Any] = {
        "name": f"auto-{configuration}" + (f"-fold{fold}" if fold is not None else ""),
        "data": {
            "dataset": str(Path(dataset).resolve()),
            "split": split,
            "plan": str(Path(plan_file).resolve()),
            "configuration": configuration,
            "patch_size": list(conf["patch_size"]) if shrunk else None,
            "batch_size": batch,
            "num_workers": "auto",
            "augment": "default",
            "foreground_oversample": 1 / 3,
            "preprocess": dict(PLAN_DEFAULTS),  # the same spec as `medseg prepare`: one cache
            "slices": dims == 2 and plan["dims"] == 3,
            "slice_axis": int(conf.get("slice_axis", 0)),
        },
        "model": network(conf, dims, base_width, resolve_device() if device == "auto" else device),
        "train": {
            "optimizer": "adamw",
            "lr": 2e-3,
            "weight_decay": 1e-4,
            "scheduler": "cosine",
            "warmup_epochs": 1,
            "grad_clip": 12.0,
            "loss": "dice_ce",
            "device": device,
            "precision": precision or (mixed_precision() if device == "cuda" else "32"),
            "iterations_per_epoch": 50,
            "seed": 0,
        },
        "eval": {"split": "val"},
    }
    if budget_s is not None:
        raw["train"]["time_budget"] = f"{budget_s:.0f}s"
    else:
        raw["train"]["iterations"] = DEFAULT_STEPS
    why = {
        "split": why_split,
        "network": (
            "MONAI's residual U-Net (strided first convolution: on a CPU the full-resolution stage of nnU-Net's U-Net takes most "
            f"of a 3D step) with the plan's {len(raw['model']['params']['channels'])} stages and strides; "
            if raw["model"]["name"] == "unet"
            else f"nnU-Net's plain-conv U-Net with the plan's {len(raw['model']['params']['filters'])} stages, kernels and strides; "
        )
        + f"first-stage width {base_width} (the widest that buys at least {MIN_STEPS} optimiser steps in the budget on this device)",
        "deep_supervision": "none: nnU-Net's deep supervision (decoder outputs weighted 1/2^i) did not help at the few hundred to few thousand "
        "steps a short budget buys (benchmarks/auto_defaults.py, docs/auto.md) and costs step time; set model.params.n_deep_supervision to use it",
        "loss": "Dice + cross-entropy (nnU-Net's): Dice for overlap, cross-entropy for calibrated, stable gradients",
        "augmentation": "the 'default' preset: rotation, scaling, noise, blur, brightness/contrast, gamma and mirroring on every axis",
        "sampling": "⅓ of the patches centred on a foreground voxel (nnU-Net), so small structures are seen",
        "optimizer": "AdamW, lr 2e-3, cosine schedule fitted to the time budget (ends annealed): converges in far fewer steps than SGD + poly",
        "batch": f"the plan's batch size {batch} at patch {'×'.join(str(p) for p in conf['patch_size'])}"
        + (
            f" (the plan's {'×'.join(str(p) for p in planned['patch_size'])} shrunk: at the narrowest width it bought fewer than "
            f"{MIN_STEPS} optimiser steps in the budget on this device)"
            if shrunk
            else ""
        ),
        "precision": f"{raw['train']['precision']} on CUDA (bfloat16 where the GPU has it: faster, no loss scaling)"
        if device == "cuda"
        else f"bfloat16 mixed precision on this CPU: its measured step was at least {1 - CPU_BF16_GAIN:.0%} faster than 32-bit "
        "(the size stage in auto.json has both)"
        if raw["train"]["precision"] == "bf16-mixed"
        else "32-bit (CPU)",
    }
    return raw, why


def dataset_config(dataset: str | Path, overrides: list[str] | None = None) -> Any:
    """``medseg train DATA``: the config of a data set folder with no recipe — its ``plan.json`` (planned now
    when absent, with the same preprocessing as ``medseg prepare``, so both use one cache), the plan's
    recommended configuration, nnU-Net's first-stage width 32 and :data:`DEFAULT_STEPS` optimiser steps."""
    import json

    from medseg.config import config_from_dict
    from medseg.data.store import load_dataset

    ds = load_dataset(dataset)
    plan_file = ds.root / "plan.json"
    if not plan_file.is_file():
        from medseg.workflows.prepare import prepare_dataset

        prepare_dataset(config_from_dict({"data": {"dataset": str(ds.root), "preprocess": dict(PLAN_DEFAULTS)}}), progress=False)
    plan = json.loads(plan_file.read_text(encoding="utf-8"))
    n = len(set(ds.labelled_patients.values()))
    raw, _ = auto_config(ds.root, plan_file, plan, plan["recommended"], n_labelled=n)
    raw["name"] = f"{ds.info.name}-{plan['recommended']}"
    return config_from_dict(raw, overrides, source=str(plan_file))
