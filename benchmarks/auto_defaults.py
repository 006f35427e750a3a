"""The choices ``medseg auto`` makes, each measured against its alternatives on two 2D data sets.

For each data set the auto config (``workflows.auto.config.auto_config``: the plan's network at first-stage
width 8, Dice + CE, no deep supervision, the ``default`` augmentation, ⅓ foreground-centred patches, AdamW with
a cosine schedule) trains for a fixed number of optimiser steps; each variant changes one choice. Printed:
the best validation Dice and the test Dice (``medseg evaluate`` on a held-out split) per variant, the mean
over ``--seeds``, and the difference to the auto default. Equal steps, not equal time: the question is
which choice learns more from the same number of updates.

Data sets: the nuclei proxy (``tests/releases.py::nuclei_tiles``: 24 fluorescence-like tiles of 128², one
class) and ``mni152-tissue-2d`` (axial slices of a real brain MRI, grey and white matter).

    python benchmarks/auto_defaults.py [--steps 300] [--seeds 0 1] [--only nuclei]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT / "src"), str(ROOT / "tests")]

VARIANTS: dict[str, list[str]] = {
    "auto default": [],
    "deep supervision (3 levels, nnU-Net)": ["model.params.n_deep_supervision=3"],
    "cross-entropy only": ["train.loss=ce"],
    "Dice only": ["train.loss=dice"],
    "light augmentation": ["data.augment=light"],
    "no augmentation": ["data.augment=none"],
    "no foreground oversampling": ["data.foreground_oversample=0"],
    "SGD + poly, lr 0.01 (nnU-Net)": ["train.optimizer=sgd", "train.lr=0.01", "train.scheduler=poly"],
}


def datasets(work: Path) -> dict[str, Path]:
    from medseg.data.builtin import materialize
    from medseg.data.formats import import_dataset
    from releases import nuclei_tiles

    raw = nuclei_tiles(work / "raw", n_train=24, n_test=0, seed=3).root
    nuclei = work / "nuclei"
    import_dataset("msd", raw, nuclei, progress=False)
    return {"nuclei": nuclei, "mni152-tissue-2d": materialize("mni152-tissue-2d", {}, work / "cache")}


def train_variant(ds: Path, overrides: list[str], steps: int, seed: int, out: Path) -> dict[str, float]:
    from medseg.config import config_from_dict
    from medseg.data.store import load_dataset
    from medseg.engine.train import train
    from medseg.workflows.auto.config import auto_config
    from medseg.workflows.evaluate import evaluate_run
    from medseg.workflows.prepare import PLAN_DEFAULTS, prepare_dataset

    plan_file = ds / "plan.json"
    if not plan_file.is_file():
        prepare_dataset(config_from_dict({"data": {"dataset": str(ds), "preprocess": dict(PLAN_DEFAULTS)}}), progress=False)
    plan = json.loads(plan_file.read_text())
    n = len(set(load_dataset(ds).labelled_patients.values()))
    raw, _ = auto_config(ds, plan_file, plan, plan["recommended"], base_width=8, device="cpu", n_labelled=n)
    raw["train"].pop("time_budget", None)
    raw["data"]["split"] = {"ratios": [0.6, 0.2, 0.2], "seed": 0}
    cfg = config_from_dict(raw, [f"train.iterations={steps}", f"train.seed={seed}", *overrides], source="benchmark")
    t0 = time.perf_counter()
    run = train(cfg, out, progress=False)
    train_s = time.perf_counter() - t0
    info = json.loads((run / "run.json").read_text())
    evaluate_run(run, split="test", progress=False, save_predictions=False)
    test = json.loads((run / "run.json").read_text())["eval_test"]["mean_dice"]
    return {"val": float(info["best_metric"]["value"]), "test": float(test), "train_s": train_s}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--steps", type=int, default=300)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0])
    ap.add_argument("--only", help="one data set (nuclei or mni152-tissue-2d)")
    ap.add_argument("--variants", nargs="+", help="a subset of the variants (by name)")
    args = ap.parse_args()
    os.environ.setdefault("PYTHONWARNINGS", "ignore")
    print(f"load average: {os.getloadavg()[0]:.2f}, {os.cpu_count()} CPU(s); {args.steps} steps, seeds {args.seeds}")
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        for name, ds in datasets(work).items():
            if args.only and name != args.only:
                continue
            print(f"\n{name}: variant                         val Dice   test Dice   Δ test vs default   train s")
            base = None
            for label, overrides in VARIANTS.items():
                if args.variants and label not in args.variants:
                    continue
                rows = [train_variant(ds, overrides, args.steps, s, work / "runs" / f"{name}-{abs(hash(label))}-{s}") for s in args.seeds]
                val = statistics.mean(r["val"] for r in rows)
                test = statistics.mean(r["test"] for r in rows)
                base = test if base is None else base
                secs = statistics.median(r["train_s"] for r in rows)
                print(f"  {label:<38} {val:8.4f}   {test:9.4f}   {test - base:+17.4f}   {secs:7.0f}", flush=True)


if __name__ == "__main__":
    main()
