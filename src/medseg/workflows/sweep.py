"""Hyperparameter sweeps: a grid (or an Optuna search) of ordinary runs, resumable, locally or on Ray.

A sweep is a base config plus swept keys::

    medseg sweep quickstart --grid train.lr=1e-4,3e-4,1e-3 --grid model.name=unet,segformer_b0 --seeds 3 --out runs/lr

Every point of the grid (× seeds) is trained into ``OUT/runs/<name>/`` — a normal run folder that
``medseg evaluate``, ``compare`` and ``report`` read — and, by default, evaluated on the config's
``eval.split``. ``OUT/sweep.json`` and ``OUT/sweep.csv`` list the runs with their best validation
Dice; ``OUT/sensitivity.png`` plots that Dice against each swept value, one line per model.

Resuming: a run whose ``run.json`` says ``finished`` is skipped (and only evaluated if its
evaluation is missing); an interrupted run continues from its last checkpoint; a finished run
whose config differs from the sweep's is refused rather than silently reused.

Model changes: when a point sets ``model.name`` to another model than the base config's, the base
``model.params`` (which belong to the base model) are replaced by the recipe's ``models[NAME]``
entry, or by the model's defaults; swept ``model.params.*`` keys are applied on top.

Search modes:

* grid (default): every combination, one after another;
* Optuna (``--optuna N``): N trials of a TPE search over the swept values (``a,b,c`` → categorical,
  ``LOW..HIGH`` → uniform, ``LOW..HIGH:log`` → log-uniform), maximising the best validation Dice;
  the study lives in ``OUT/optuna.db`` so an interrupted search continues;
* Ray Tune (``--ray ADDRESS``): the same points as trials on a Ray cluster (``local`` starts one on
  this machine); every node must see ``OUT`` (a shared file system).
Hyperparameters are chosen on the validation split only; the test split is for the final comparison.
"""

from __future__ import annotations

import copy
import csv
import difflib
import hashlib
import io
import itertools
import json
import re
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml

from medseg.config import Config, config_from_dict, parse_override, set_dotted, valid_keys
from medseg.core.atomic import write_json, write_text
from medseg.core.errors import ConfigError, MedsegWarning, RunError, TrainingError
from medseg.models.pretrained import WEIGHT_KEYS, weights_for
from medseg.viz.plots import format_value, plot_sensitivity

SWEEP_FILE = "sweep.json"
#: dict-valued config fields whose inner keys are free (model arguments, loss arguments, generator options)
FREE_DICTS = ("model.params", "train.loss_params", "data.builtin")
#: short names used in run folder names
SHORT = {"model.name": "", "train.lr": "lr", "train.seed": "seed", "train.loss": "loss", "train.optimizer": "opt", "data.batch_size": "bs"}


# ---------------------------------------------------------------- parsing


def split_values(text: str) -> list[str]:
    """Split ``a,b,[1,2],{x: 1}`` at the commas outside brackets and braces."""
    out, depth, cur = [], 0, ""
    for ch in text:
        if ch in "[{(":
            depth += 1
        elif ch in "]})":
            depth -= 1
        if ch == "," and depth == 0:
            out.append(cur)
            cur = ""
        else:
            cur += ch
    out.append(cur)
    return [v.strip() for v in out if v.strip()]


RANGE = re.compile(r"^\s*([-+0-9.eE]+)\s*\.\.\s*([-+0-9.eE]+)\s*(?::\s*(log))?\s*$")


def parse_grid(items: list[str] | None) -> dict[str, list[Any]]:
    """``["train.lr=1e-4,3e-4", "model.name=unet,segformer_b0"]`` → ``{"train.lr": [1e-4, 3e-4], ...}``.

    Values are parsed as YAML (numbers, lists, mappings). A ``LOW..HIGH[:log]`` range is kept as
    ``{"range": [low, high], "log": bool}`` (Optuna only). Keys are checked with :func:`check_keys`.
    """
    grid: dict[str, list[Any]] = {}
    for item in items or []:
        if "=" not in item:
            raise ConfigError(f"--grid {item!r} is not KEY=V1,V2,...", where="--grid", fix="write e.g. --grid train.lr=1e-4,3e-4,1e-3")
        key, _, values = item.partition("=")
        key = key.strip()
        m = RANGE.match(values)
        if m:
            lo, hi = _number(yaml.safe_load(m.group(1))), _number(yaml.safe_load(m.group(2)))
            grid[key] = [{"range": [lo, hi], "log": bool(m.group(3))}]
            continue
        parsed = [_number(parse_override(f"x={v}")[1]) for v in split_values(values)]
        if not parsed:
            raise ConfigError(f"--grid {key} has no values", where="--grid", fix=f"write e.g. --grid {key}=A,B")
        grid[key] = parsed
    check_keys(list(grid))
    return grid


def _number(v: Any) -> Any:
    """YAML 1.1 reads ``1e-4`` (no dot) as text; sweep values that look like numbers are numbers."""
    if isinstance(v, str):
        try:
            return float(v)
        except ValueError:
            return v
    return v


def check_keys(keys: list[str]) -> None:
    """Refuse swept keys that are not config fields, naming the closest valid keys."""
    valid = valid_keys(Config)
    for key in keys:
        if key in valid or any(key.startswith(p + ".") and len(key) > len(p) + 1 for p in FREE_DICTS):
            continue
        close = difflib.get_close_matches(key, valid, n=3, cutoff=0.5)
        fix = f"did you mean {', '.join(close)}?" if close else "`medseg config` prints every valid key"
        raise ConfigError(f"unknown swept key '{key}'", where="--grid", fix=fix)


def _set(raw: dict[str, Any], key: str, value: Any) -> None:
    set_dotted(raw, key.split("."), copy.deepcopy(value))


def get_dotted(raw: dict[str, Any], key: str) -> Any:
    node: Any = raw
    for p in key.split("."):
        if not isinstance(node, dict) or p not in node:
            return None
        node = node[p]
    return node


# ---------------------------------------------------------------- points and configs


def grid_points(grid: dict[str, list[Any]], seeds: int = 1, base_seed: int = 0) -> list[dict[str, Any]]:
    """Every combination of the swept values (first key slowest), × ``seeds`` seeds (``train.seed``)."""
    for k, vals in grid.items():
        if any(isinstance(v, dict) and "range" in v for v in vals):
            raise ConfigError(f"--grid {k} is a range; a grid needs listed values", where="--grid", fix=f"list values ({k}=A,B,C) or use --optuna N")
    keys = list(grid)
    points = []
    for combo in itertools.product(*(grid[k] for k in keys)):
        for s in range(max(seeds, 1)):
            p = dict(zip(keys, combo, strict=True))
            if seeds > 1:
                p.setdefault("train.seed", base_seed + s)
            points.append(p)
    return points


def point_name(point: dict[str, Any]) -> str:
    """A readable, file-system-safe, unique folder name for a point, e.g. ``unet_lr0.0003_seed0``."""
    parts = []
    for k, v in sorted(point.items(), key=lambda kv: kv[0] != "model.name"):
        short = SHORT.get(k, k.split(".")[-1])
        parts.append(f"{short}{format_value(v)}")
    name = re.sub(r"[^A-Za-z0-9._=+-]+", "-", "_".join(parts)).strip("-_") or "base"
    if len(name) > 80:
        digest = hashlib.sha1(json.dumps(point, sort_keys=True, default=str).encode()).hexdigest()[:8]
        name = f"{name[:70]}_{digest}"
    return name


def point_config(base: dict[str, Any], point: dict[str, Any], models: dict[str, dict[str, Any]] | None = None, name: str | None = None) -> Config:
    """The validated config of one point: the base with the point's values applied.

    Args:
        base: the base config as a dict (already with ``--set`` overrides).
        point: swept key → value.
        models: per-model ``model.params`` used when the point picks that model.
        name: the run's ``name`` (default: base name + point name).
    """
    raw = copy.deepcopy(base)
    models = models or {}
    new_model = point.get("model.name")
    base_model = get_dotted(base, "model.name") or "unet"
    weights = {k: v for k, v in (get_dotted(base, "model.params") or {}).items() if k in WEIGHT_KEYS}  # given once, for every model
    if new_model is not None and (new_model != base_model or new_model in models):
        _set(raw, "model.params", {**copy.deepcopy(models.get(new_model, {})), **weights})
    for k, v in sorted(point.items(), key=lambda kv: kv[0].count(".")):  # model.params before model.params.x
        _set(raw, k, v)
    params, note = weights_for(str(get_dotted(raw, "model.name") or "unet"), get_dotted(raw, "model.params") or {})
    _set(raw, "model.params", params)
    if note:
        warnings.warn(MedsegWarning(f"model.params.pretrained: {note}"), stacklevel=2)
    base_name = str(raw.get("name", "run"))
    if new_model is not None and new_model != base_model and base_name.endswith(f"-{base_model}"):
        base_name = base_name[: -len(base_model) - 1]  # "quickstart-unet" must not name a SegFormer run
    raw["name"] = name or f"{base_name}-{point_name(point)}"
    return config_from_dict(raw, source=f"sweep point {point_name(point)}")


def point_group(point: dict[str, Any], base: dict[str, Any]) -> str:
    return str(point.get("model.name") or get_dotted(base, "model.name") or "unet")


# ---------------------------------------------------------------- running one point


#: fields that may differ between a finished run and the sweep that reuses it (where and how it ran, not what)
IGNORED_CHANGES = (
    "name",
    "train.device",
    "train.devices",
    "train.num_nodes",
    "train.strategy",
    "train.threads",
    "train.loggers",
    "data.num_workers",
    "data.cache_dir",
)


def _flat(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in d.items():
        if isinstance(v, dict) and v and k not in FREE_DICTS_LEAVES:
            out.update(_flat(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


FREE_DICTS_LEAVES = ("params", "loss_params", "builtin")


def config_changes(saved: Config, new: Config) -> dict[str, tuple[Any, Any]]:
    """Fields (dotted) whose values differ between two configs, as ``{key: (saved, new)}``."""
    a, b = _flat(saved.dump()), _flat(new.dump())
    return {k: (a.get(k), b.get(k)) for k in sorted(set(a) | set(b)) if a.get(k) != b.get(k) and k not in IGNORED_CHANGES}


def run_point(
    cfg: Config,
    run_dir: Path,
    sweep_dir: Path,
    point: dict[str, Any],
    group: str,
    *,
    evaluate: bool = True,
    progress: bool = False,
    train_fn: Callable[..., Path] | None = None,
) -> dict[str, Any]:
    """Train (or skip, or resume) one point and evaluate it; returns its ``sweep.json`` entry."""
    from medseg.engine.train import train
    from medseg.runs import has_checkpoint, read_run, read_summary, run_status, update_run

    train_fn = train_fn or train
    status = run_status(run_dir)
    action = "trained"
    if status == "finished":
        saved, _ = read_run(run_dir)
        changed = config_changes(saved, cfg)
        if changed:
            k, (old, new) = next(iter(changed.items()))
            raise RunError(
                f"finished run was trained with another config ({k} is {new!r} in the sweep but {old!r} in the run)",
                where=run_dir,
                fix="sweep into another --out, or delete that run folder",
            )
        action = "skipped"
    elif status != "missing" and has_checkpoint(run_dir, "last"):
        train_fn(cfg, run_dir, progress=progress, resume=True)
        action = "resumed"
    else:
        train_fn(cfg, run_dir, overwrite=run_dir.exists(), progress=progress)
    update_run(run_dir, sweep={"dir": str(sweep_dir.resolve()), "point": point, "group": group})
    _, info = read_run(run_dir)
    split = cfg.eval.split
    test_dice = None
    if evaluate:
        if not read_summary(run_dir, split):
            from medseg.workflows.evaluate import evaluate_run

            evaluate_run(run_dir, split=split, progress=progress)
        test_dice = read_summary(run_dir, split).get("mean_dice")
    best = (info.get("best_metric") or {}).get("value")
    return {
        "name": run_dir.name,
        "group": group,
        "point": point,
        "status": "finished",
        "action": action,
        "best_val_dice": best,
        f"{split}_dice": test_dice,
        "train_time_s": info.get("train_time_s"),
    }


# ---------------------------------------------------------------- the sweep record


class SweepRecord:
    """``OUT/sweep.json`` (+ ``sweep.csv`` and ``sensitivity.png``), rewritten after every run."""

    def __init__(self, out: Path, meta: dict[str, Any]):
        self.out = out
        self.path = out / SWEEP_FILE
        old = json.loads(self.path.read_text(encoding="utf-8")) if self.path.is_file() else {}
        self.runs: dict[str, dict[str, Any]] = {r["name"]: r for r in old.get("runs", [])}
        self.meta = meta

    def add(self, entry: dict[str, Any]) -> None:
        self.runs[entry["name"]] = entry
        self.write()

    def write(self) -> None:
        runs = list(self.runs.values())
        write_json(self.path, {**self.meta, "updated": time.strftime("%Y-%m-%dT%H:%M:%S"), "runs": runs})
        keys = list(dict.fromkeys(k for r in runs for k in r["point"]))
        buf = io.StringIO()
        w = csv.writer(buf, lineterminator="\n")
        extra = [k for k in ("best_val_dice", *(f"{s}_dice" for s in ("test", "val", "train")), "train_time_s") if any(k in r for r in runs)]
        w.writerow(["name", "group", *keys, *extra])
        for r in runs:
            w.writerow([r["name"], r["group"], *[format_value(r["point"].get(k, "")) for k in keys], *["" if r.get(k) is None else r.get(k) for k in extra]])
        write_text(self.out / "sweep.csv", buf.getvalue())
        plot_sensitivity(runs, self.out / "sensitivity.png")


# ---------------------------------------------------------------- entry points


def check_models(grid: dict[str, list[Any]]) -> None:
    from medseg.models import list_models

    known = list_models()
    for name in grid.get("model.name", []):
        if name not in known:
            close = difflib.get_close_matches(str(name), known, n=3)
            raise ConfigError(
                f"unknown model '{name}' in the sweep", where="--grid model.name", fix=f"did you mean {', '.join(close)}?" if close else "see `medseg models`"
            )


def run_sweep(
    base: dict[str, Any],
    grid: dict[str, list[Any]],
    out: str | Path,
    *,
    seeds: int = 1,
    models: dict[str, dict[str, Any]] | None = None,
    evaluate: bool = True,
    progress: bool = False,
    on_point: Callable[[int, int, dict[str, Any]], None] | None = None,
) -> Path:
    """Run every grid point one after another into ``out`` (resumable; see the module docstring).

    Args:
        base: base config dict (``--set`` applied).
        grid: swept key → values (from :func:`parse_grid`).
        out: the sweep folder.
        seeds: runs per point with ``train.seed`` = base seed + 0, 1, ...
        models: per-model ``model.params`` (a recipe's ``models``).
        evaluate: evaluate each run on its ``eval.split``.
        progress: show training progress bars.
        on_point: called as ``on_point(i, n, entry)`` after each run.

    Returns:
        The sweep folder.
    """
    out = Path(out)
    check_keys(list(grid))
    check_models(grid)
    points = grid_points(grid, seeds, int(get_dotted(base, "train.seed") or 0))
    configs = [(p, point_config(base, p, models)) for p in points]  # validate every point before training any
    out.mkdir(parents=True, exist_ok=True)
    record = SweepRecord(out, {"mode": "grid", "base": base, "grid": grid, "seeds": seeds, "models": models or {}})
    record.write()
    failed: list[str] = []
    for i, (point, cfg) in enumerate(configs):
        name = point_name(point)
        try:
            entry = run_point(cfg, out / "runs" / name, out, point, point_group(point, base), evaluate=evaluate, progress=progress)
        except TrainingError as e:  # a diverged or out-of-memory setting is a result of the sweep, not the end of it
            entry = {"name": name, "group": point_group(point, base), "point": point, "status": "failed", "action": "failed", "error": e.one_line()}
            failed.append(name)
        record.add(entry)
        if on_point:
            on_point(i, len(configs), entry)
    if failed:
        raise TrainingError(
            f"{len(failed)} of {len(configs)} runs failed ({', '.join(failed[:3])}{' …' if len(failed) > 3 else ''}); the others finished",
            where=out / SWEEP_FILE,
            fix="see each run's error in sweep.json; change those settings and re-run (finished runs are skipped)",
        )
    return out
