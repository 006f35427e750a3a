"""``medseg auto DATA --out RUN``: detect → import → fingerprint and plan → measure → train → choose → post-process.

Each stage records what it did in ``RUN/auto.json`` (``stages``); ``--resume`` skips the finished stages and
continues an interrupted training from its last checkpoint. ``RUN`` ends up a run folder like any other
(the chosen configuration's config, checkpoints, history, post-processing), plus:

* ``RUN/data/``: the imported data set (unless DATA already was a medseg data set), with ``plan.json`` and
  its preprocessing cache;
* ``RUN/candidates/<2d|3d>/``: one run per planned configuration (volumes: both), the best on validation
  is copied to ``RUN``;
* ``RUN/folds/``: with ``--folds 5``, the five fold runs; ``RUN/ensemble.json`` makes ``predict`` use all five;
* ``RUN/plan.json`` (the plan) and ``RUN/auto.json`` (every decision with its reason, the estimate of time and
  memory next to what was measured).
"""

from __future__ import annotations

import math
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from medseg.core.atomic import write_json
from medseg.core.errors import ConfigError, DatasetError, RunError
from medseg.workflows.auto.config import auto_config
from medseg.workflows.auto.output import adopt, export, say_plan
from medseg.workflows.auto.sizing import TRAIN_OVERHEAD_S
from medseg.workflows.auto.sizing import size as _size

AUTO_FILE = "auto.json"
#: test-time mirroring is tried on validation when mirrored predictions of it take at most this long (or 10 % of training)
MIRROR_S = 30.0


class Auto:
    """The state of one ``medseg auto`` run (``auto.json``), saved after every stage."""

    def __init__(self, out: Path, resume: bool, echo: Callable[[str], None]):
        import json

        self.out, self.echo, self.t0 = out, echo, time.perf_counter()
        path = out / AUTO_FILE
        if resume:
            if not path.is_file():
                raise RunError("nothing to resume: no auto.json", where=out, fix="start it without --resume")
            self.state = json.loads(path.read_text(encoding="utf-8"))
            self.t0 -= float(self.state.get("elapsed_s", 0.0))
        else:
            if out.exists() and any(out.iterdir()):
                raise RunError("output folder already exists and is not empty", where=out, fix="choose another --out, or add --resume to continue it")
            self.state = {"stages": {}, "decisions": {}}
        out.mkdir(parents=True, exist_ok=True)

    def done(self, stage: str) -> bool:
        return stage in self.state["stages"]

    def finish(self, stage: str, **values: Any) -> None:
        self.state["stages"][stage] = {"elapsed_s": round(self.elapsed(), 2), **values}
        self.save()

    def decide(self, key: str, value: Any, why: str) -> None:
        self.state["decisions"][key] = {"value": value, "why": why}

    def warn(self, msg: str) -> None:
        """A warning: raised as a Python warning, printed, and kept in ``auto.json``."""
        import warnings

        warnings.warn(msg, stacklevel=3)
        self.echo(f"warning: {msg}")
        self.state.setdefault("warnings", []).append(msg)

    def elapsed(self) -> float:
        return time.perf_counter() - self.t0

    def save(self) -> None:
        self.state["elapsed_s"] = round(self.elapsed(), 2)
        write_json(self.out / AUTO_FILE, self.state)


def _import(auto: Auto, data: Path) -> Path:
    from medseg.data.formats import import_dataset
    from medseg.data.formats.detect import detect_format

    if auto.done("import"):
        return Path(auto.state["stages"]["import"]["dataset"])
    fmt = detect_format(data)
    if fmt == "dataset":
        ds_path = data.resolve()
        auto.decide("format", "dataset", "DATA is a medseg data set folder: used as it is")
    else:
        ds_path = (auto.out / "data").resolve()
        if ds_path.exists():
            shutil.rmtree(ds_path)  # an import interrupted before it finished left nothing valid
        import_dataset(fmt, data, ds_path, progress=False)
        auto.decide("format", fmt, f"detected from the layout of {data} (see docs/formats.md)")
    auto.finish("import", dataset=str(ds_path), format=fmt)
    return ds_path


def _check_data(auto: Auto, ds: Any) -> int:
    """Labelled patients (none is refused; labels beyond the classes are refused at import). With one, it trains
    and validates on the same case (``val_on_train`` in ``RUN/splits-auto.json``), with a warning."""
    n = len(set(ds.labelled_patients.values()))
    if n == 0:
        raise DatasetError("no labelled case", where=ds.root, fix="add cases with labels (images alone can only be predicted)")
    if n == 1:
        from medseg.data.splits import SETS

        ids = sorted(ds.labelled_patients)
        write_json(auto.out / "splits-auto.json", {**{k: [] for k in SETS}, "train": ids, "val_on_train": True})
        msg = "one labelled patient: the model is validated on its training case, so validation Dice is optimistic"
        auto.warn(msg)
        auto.decide("split", ids, msg)
    return n


def _plan(auto: Auto, ds_path: Path, device: str) -> dict[str, Any]:
    from medseg.config import config_from_dict
    from medseg.workflows.prepare import PLAN_DEFAULTS, prepare_dataset

    if auto.done("plan"):
        import json

        return json.loads((auto.out / "plan.json").read_text(encoding="utf-8"))
    gpu_gb = 8.0
    if device == "cuda":
        import torch

        gpu_gb = max(2.0, min(40.0, torch.cuda.get_device_properties(0).total_memory / 2**30 * 0.8))
    from medseg.data.inspect import fingerprint
    from medseg.data.store import load_dataset

    cfg = config_from_dict({"data": {"dataset": str(ds_path), "preprocess": dict(PLAN_DEFAULTS)}})
    fp = fingerprint(load_dataset(ds_path), progress=False)
    for w in fp.get("warnings", []):
        auto.echo(f"warning: {w}")
    auto.state.setdefault("warnings", []).extend(fp.get("warnings", []))
    plan, plan_file, cache = prepare_dataset(cfg, gpu_memory_gb=gpu_gb, progress=False, fingerprint=fp)
    write_json(auto.out / "plan.json", plan)
    auto.decide("spacing", plan["target_spacing"], "median spacing of the cases (10th percentile along a strongly anisotropic axis), as nnU-Net")
    auto.decide(
        "normalization",
        plan["normalization"],
        "per channel from dataset.json's modality / channel_names: CT → clip to the foreground 0.5/99.5 percentiles and "
        "standardise with the data set's foreground mean/std; anything else → per-image z-score",
    )
    auto.decide("configurations", list(plan["configurations"]), plan["why"])
    auto.finish("plan", plan=str(plan_file), cache=str(cache), gpu_memory_gb=gpu_gb)
    return plan


def _train(auto: Auto, raw: dict[str, Any], run_dir: Path, progress: bool) -> Path:
    from medseg.config import config_from_dict
    from medseg.engine.train import train
    from medseg.runs import has_checkpoint, run_status

    cfg = config_from_dict(raw, source="medseg auto")
    if run_dir.exists() and run_status(run_dir) == "finished":
        return run_dir
    resume = run_dir.exists() and has_checkpoint(run_dir, "last")
    return train(cfg, run_dir, overwrite=not resume, progress=progress, resume=resume)


def _best(run_dir: Path) -> float:
    from medseg.runs import read_info

    v = (read_info(run_dir).get("best_metric") or {}).get("value")
    return float("nan") if v is None else float(v)


def run_auto(
    data: str | Path,
    out: str | Path,
    *,
    time_budget: str | None = None,
    folds: int = 0,
    device: str = "auto",
    ray: str | None = None,
    resume: bool = False,
    progress: bool = False,
    echo: Callable[[str], None] = print,
) -> dict[str, Any]:
    """Train the best model this machine affords on ``data`` and leave the run folder ``out``; returns ``auto.json``.

    Args:
        data: any folder ``medseg import`` reads, or a medseg data set folder.
        out: the run folder.
        time_budget: wall clock for the whole of it (``10m``, ``1h``); default: :data:`DEFAULT_RUN_S` seconds of
            training per configuration, with the widest network (and the largest patch up to the plan's) that makes
            :data:`MIN_STEPS` optimiser steps in them; where even the narrowest cannot, :data:`DEFAULT_STEPS` of its
            steps (at most 1 hour).
        folds: 0 (one training, 15 % validation) or 5 (patient-grouped 5-fold cross-validation, the folds
            predict as an ensemble).
        device: ``auto``, ``cpu``, ``cuda`` or ``mps``.
        ray: with ``folds``, run them as Ray tasks on this cluster (``local``, ``auto``, ``HOST:PORT``).
        resume: continue an interrupted run in ``out``.
        progress: training progress bars.
        echo: where the plan of action and the estimate are printed.
    """
    from medseg.config import parse_duration, resolve_device
    from medseg.data.store import load_dataset

    if folds not in (0, 5):
        raise ConfigError(f"--folds must be 0 or 5, got {folds}", where="--folds", fix="use 0 (one split) or 5 (cross-validation)")
    if ray is not None and not folds:
        raise ConfigError("--ray runs cross-validation folds", where="--ray", fix="add --folds 5")
    try:
        budget_s = parse_duration(time_budget) if time_budget else None
    except ValueError as e:
        raise ConfigError(str(e), where="--time-budget", fix="write e.g. 90s, 10m or 1.5h") from None
    dev = resolve_device(device)
    out = Path(out)
    data = Path(data)
    if not data.exists():
        raise ConfigError("DATA does not exist", where=data, fix="give a data folder")
    auto = Auto(out, resume, echo)
    auto.state.update(data=str(data.resolve()), time_budget_s=budget_s, folds=folds, device=dev)
    ds = load_dataset(_import(auto, data))
    n_patients = _check_data(auto, ds)
    plan = _plan(auto, ds.root, dev)
    plan["_file"] = str(ds.root / "plan.json")
    names = [plan["recommended"]] if folds else list(plan["configurations"])
    if folds:
        auto.decide("configuration", plan["recommended"], f"cross-validation trains the plan's recommendation only ({plan['why']})")
    sizes = _size(auto, plan, ds, names, device=dev, budget_s=budget_s, folds=folds)
    names = [n for n in names if n in sizes]  # configurations the budget cannot train are dropped
    runs: dict[str, Any] = {}
    for name in names:
        raw, why = auto_config(
            ds.root,
            plan["_file"],
            plan,
            name,
            base_width=sizes[name]["base_width"],
            device=dev,
            budget_s=sizes[name]["train_s"],
            n_labelled=n_patients,
            conf=sizes[name].get("configuration"),
            precision=sizes[name].get("precision"),
        )
        if n_patients == 1:
            raw["data"]["split"]["file"] = str((out / "splits-auto.json").resolve())
        runs[name] = raw
        for k, v in why.items():
            auto.decide(f"{name}.{k}", raw["model"]["params"] if k == "network" else None, v)
    est = _estimate(auto, plan, ds, sizes, names, folds=folds)
    say_plan(auto, plan, runs, sizes, est)
    auto.save()
    if folds:
        from medseg.workflows.auto.folds import train_folds

        chosen_dir = train_folds(auto, runs[names[0]], folds, ray=ray, progress=progress, train=_train)
        chosen = names[0]
    else:
        scores = {}
        for name, raw in runs.items():
            run_dir = out / "candidates" / name
            if not auto.done(f"train.{name}"):
                echo(f"training {name} ({sizes[name]['train_s']:.0f} s budget)…")
                _train(auto, raw, run_dir, progress)
                auto.finish(f"train.{name}", best_val_dice=_best(run_dir))
            scores[name] = _best(run_dir)
        chosen = max(scores, key=lambda k: -1.0 if math.isnan(scores[k]) else scores[k])
        auto.decide("configuration", chosen, "best validation Dice: " + ", ".join(f"{k} {v:.4f}" for k, v in scores.items()))
        chosen_dir = out / "candidates" / chosen
    if not auto.done("choose"):
        adopt(chosen_dir, out)
        auto.finish("choose", configuration=chosen)
    if not auto.done("postprocess") and not folds:
        from medseg.engine.load import decide_postprocessing

        mirror = bool(est.get("mirror"))
        d = decide_postprocessing(out, split="val", progress=False, tta=mirror)
        if mirror:
            dice = d["tta_mean_dice"]
            secs = d["tta_seconds_per_case"]["all"]
            why = f"validation Dice {dice['none']:.4f} without, {dice['all']:.4f} with mirroring on every axis ({secs:.2f} s a case)"
        else:
            why = "not tried: mirrored predictions of the validation cases would take too long on this device"
        auto.decide("tta", d.get("tta", "none"), why + "; `medseg predict` applies it (--tta auto)")
        auto.decide("postprocessing", d["keep_largest"], "keep only the largest component of a class when that raised its validation Dice (nnU-Net)")
        auto.finish("postprocess", **d)
    if not auto.done("export"):
        auto.finish("export", **export(out, folds))
    total = auto.elapsed()
    auto.state["measured"] = {"total_s": round(total, 1), "train_s": {k: v.get("elapsed_s") for k, v in auto.state["stages"].items() if k.startswith("train")}}
    auto.state["estimate_error"] = round(total / est["total_s"] - 1, 3) if est["total_s"] else None
    auto.finish("done")
    echo(f"done in {total:.0f} s (estimated {est['total_s']:.0f} s); run folder {out}: medseg predict {out} IMAGES --out PREDICTIONS")
    return auto.state


def _estimate(auto: Auto, plan: dict[str, Any], ds: Any, sizes: dict[str, Any], names: list[str], *, folds: int) -> dict[str, Any]:
    """Seconds and peak memory of what is left, from the measured steps."""
    from medseg.workflows.auto.estimate import predict_seconds

    n_val = max(1, round(0.15 * len(ds.labelled_patients)))
    train = sum(sizes[n]["train_s"] + TRAIN_OVERHEAD_S for n in names) * max(folds, 1)
    conf = sizes[names[0]].get("configuration") or plan["configurations"][names[0]]
    vox = math.prod(plan["median_shape"])
    bare = sizes[names[0]].get("bare_step_s", sizes[names[0]]["step_s"])  # (an auto.json of an older version has no bare step)
    plain = predict_seconds(bare, n_val, vox, math.prod(conf["patch_size"]), conf["batch_size"])
    mirror = not folds and plain * 2 ** len(conf["patch_size"]) <= max(MIRROR_S, 0.1 * train)  # every flip of every axis
    post = 0.0 if folds else plain * (1 + 2 ** len(conf["patch_size"]) * mirror) + 3.0
    est = {
        "total_s": round(auto.elapsed() + train + post, 1),
        "train_s": round(train, 1),
        "peak_mb": round(max(sizes[n]["peak_mb"] for n in names), 1),
        "mirror": mirror,
    }
    if "estimate" not in auto.state:  # a resumed run keeps its first estimate
        auto.state["estimate"] = est
    return auto.state["estimate"]
