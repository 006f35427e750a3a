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
import math
import re
import socket
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml

from medseg.config import Config, _valid_keys, config_from_dict, parse_override, set_dotted
from medseg.core.atomic import write_json, write_text
from medseg.core.errors import ConfigError, DependencyError, RunError, TrainingError

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
    valid = _valid_keys(Config)
    for key in keys:
        if key in valid or any(key.startswith(p + ".") and len(key) > len(p) + 1 for p in FREE_DICTS):
            continue
        close = difflib.get_close_matches(key, valid, n=3, cutoff=0.5)
        fix = f"did you mean {', '.join(close)}?" if close else "`medseg config` prints every valid key"
        raise ConfigError(f"unknown swept key '{key}'", where="--grid", fix=fix)


def _set(raw: dict[str, Any], key: str, value: Any) -> None:
    set_dotted(raw, key.split("."), copy.deepcopy(value))


def _get(raw: dict[str, Any], key: str) -> Any:
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


def _fmt_value(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:g}"
    if isinstance(v, list | dict):
        return json.dumps(v, separators=(",", ":"))
    return str(v)


def point_name(point: dict[str, Any]) -> str:
    """A readable, file-system-safe, unique folder name for a point, e.g. ``unet_lr0.0003_seed0``."""
    parts = []
    for k, v in sorted(point.items(), key=lambda kv: kv[0] != "model.name"):
        short = SHORT.get(k, k.split(".")[-1])
        parts.append(f"{short}{_fmt_value(v)}")
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
    base_model = _get(base, "model.name") or "unet"
    if new_model is not None and (new_model != base_model or new_model in models):
        _set(raw, "model.params", models.get(new_model, {}))
    for k, v in sorted(point.items(), key=lambda kv: kv[0].count(".")):  # model.params before model.params.x
        _set(raw, k, v)
    raw["name"] = name or f"{raw.get('name', 'run')}-{point_name(point)}"
    return config_from_dict(raw, source=f"sweep point {point_name(point)}")


def _group(point: dict[str, Any], base: dict[str, Any]) -> str:
    return str(point.get("model.name") or _get(base, "model.name") or "unet")


# ---------------------------------------------------------------- running one point


def _status(run_dir: Path) -> str:
    path = run_dir / "run.json"
    if not path.is_file():
        return "missing"
    try:
        return str(json.loads(path.read_text(encoding="utf-8")).get("status", "unknown"))
    except json.JSONDecodeError:
        return "unknown"


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
    evaluate: bool = True,
    progress: bool = False,
    train_fn: Callable[..., Path] | None = None,
) -> dict[str, Any]:
    """Train (or skip, or resume) one point and evaluate it; returns its ``sweep.json`` entry."""
    from medseg.engine.train import train
    from medseg.runs import read_run, update_run

    train_fn = train_fn or train
    status = _status(run_dir)
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
    elif status != "missing" and (run_dir / "checkpoints" / "last.ckpt").is_file():
        train_fn(cfg, run_dir, progress=progress, resume=True)
        action = "resumed"
    else:
        train_fn(cfg, run_dir, overwrite=run_dir.exists(), progress=progress)
    update_run(run_dir, sweep={"dir": str(sweep_dir.resolve()), "point": point, "group": group})
    _, info = read_run(run_dir)
    split = cfg.eval.split
    test_dice = None
    if evaluate:
        summary_path = run_dir / "eval" / split / "summary.json"
        if not summary_path.is_file():
            from medseg.workflows.evaluate import evaluate_run

            evaluate_run(run_dir, split, progress=progress)
        test_dice = json.loads(summary_path.read_text(encoding="utf-8")).get("mean_dice")
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
            w.writerow([r["name"], r["group"], *[_fmt_value(r["point"].get(k, "")) for k in keys], *["" if r.get(k) is None else r.get(k) for k in extra]])
        write_text(self.out / "sweep.csv", buf.getvalue())
        plot_sensitivity(runs, self.out / "sensitivity.png")


def plot_sensitivity(runs: list[dict[str, Any]], path: Path) -> Path | None:
    """Best validation Dice against each swept value, one line (mean over the rest) per model."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    from medseg.core.atomic import atomic_path

    runs = [r for r in runs if isinstance(r.get("best_val_dice"), int | float)]
    keys = [k for k in dict.fromkeys(k for r in runs for k in r["point"]) if k not in ("model.name", "train.seed")]
    keys = [k for k in keys if len({_fmt_value(r["point"].get(k)) for r in runs}) > 1]
    if not runs or not keys:  # only models (or seeds) swept: no hyperparameter to plot against
        return None
    groups = list(dict.fromkeys(r["group"] for r in runs))
    n = max(len(keys), 1)
    fig, axes = plt.subplots(1, n, figsize=(4.2 * n, 3.4), squeeze=False)
    for ax, key in zip(axes[0], keys, strict=False):
        values = list(dict.fromkeys(_fmt_value(r["point"].get(key, "")) for r in runs))
        numeric = all(isinstance(r["point"].get(key), int | float) and not isinstance(r["point"].get(key), bool) for r in runs)
        if numeric:
            values = sorted({float(r["point"][key]) for r in runs})
        for g in groups:
            sel = [r for r in runs if r["group"] == g]
            xs, means, lo, hi = [], [], [], []
            for i, v in enumerate(values):
                ys = [r["best_val_dice"] for r in sel if (float(r["point"].get(key, math.nan)) if numeric else _fmt_value(r["point"].get(key, ""))) == v]
                if ys:
                    xs.append(v if numeric else i)
                    means.append(float(np.mean(ys)))
                    lo.append(min(ys))
                    hi.append(max(ys))
            if xs:
                ax.plot(xs, means, marker="o", label=g)
                ax.fill_between(xs, lo, hi, alpha=0.15)
        if numeric and values and min(values) > 0 and max(values) / min(values) >= 20:
            ax.set_xscale("log")
        if not numeric:
            ax.set_xticks(range(len(values)), [str(v) for v in values], rotation=20)
        ax.set(xlabel=key, ylabel="best validation Dice", title=f"Dice vs {key}")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=90)
    plt.close(fig)
    return path


# ---------------------------------------------------------------- entry points


def load_sweep_recipe(path: str | Path) -> dict[str, Any]:
    """Read a comparison recipe (``configs/comparisons/*.yaml``): base, set, models, grid, seeds, optuna."""
    p = Path(path)
    try:
        raw = yaml.safe_load(p.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as e:
        raise ConfigError(f"invalid YAML ({str(e).splitlines()[0]})", where=p, fix="repair the YAML syntax") from None
    allowed = {"description", "base", "set", "models", "grid", "seeds", "optuna", "compare", "name"}
    unknown = sorted(set(raw) - allowed)
    if unknown:
        close = difflib.get_close_matches(unknown[0], sorted(allowed), n=2)
        fix = f"did you mean {', '.join(close)}?" if close else f"use {', '.join(sorted(allowed))}"
        raise ConfigError(f"unknown recipe key '{unknown[0]}'", where=p, fix=fix)
    return raw


def resolve_sweep_source(source: str | Path, overrides: list[str] | None = None) -> tuple[dict[str, Any], dict[str, Any]]:
    """A config (path or recipe) or a comparison recipe → (base config dict, recipe dict).

    The base dict has the ``--set`` overrides applied and is validated once.
    """
    from medseg.config import apply_overrides
    from medseg.recipes import RECIPES_DIR, resolve_config_path

    p = Path(source)
    cand = [p, RECIPES_DIR / "comparisons" / f"{source}.yaml"]
    recipe_path = next((c for c in cand if c.is_file() and "base" in (yaml.safe_load(c.read_text(encoding="utf-8")) or {})), None)
    recipe: dict[str, Any] = {}
    if recipe_path is not None:
        recipe = load_sweep_recipe(recipe_path)
        b = recipe["base"]
        if isinstance(b, dict):
            base = copy.deepcopy(b)
        else:
            bp = Path(b)
            if not bp.is_absolute() and (recipe_path.parent / bp).is_file():
                bp = recipe_path.parent / bp
            base = yaml.safe_load(resolve_config_path(bp if bp.is_file() else b).read_text(encoding="utf-8")) or {}
        base = apply_overrides(base, [str(s) for s in recipe.get("set") or []])
        source_name = str(recipe_path)
    else:
        cfg_path = resolve_config_path(source)
        base = yaml.safe_load(cfg_path.read_text(encoding="utf-8")) or {}
        source_name = str(cfg_path)
    base = apply_overrides(base, list(overrides or []))
    config_from_dict(base, source=source_name)  # fail early on a bad base
    return base, recipe


def _check_models(grid: dict[str, list[Any]]) -> None:
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
    _check_models(grid)
    points = grid_points(grid, seeds, int(_get(base, "train.seed") or 0))
    configs = [(p, point_config(base, p, models)) for p in points]  # validate every point before training any
    out.mkdir(parents=True, exist_ok=True)
    record = SweepRecord(out, {"mode": "grid", "base": base, "grid": grid, "seeds": seeds, "models": models or {}})
    record.write()
    failed: list[str] = []
    for i, (point, cfg) in enumerate(configs):
        name = point_name(point)
        try:
            entry = run_point(cfg, out / "runs" / name, out, point, _group(point, base), evaluate, progress)
        except TrainingError as e:  # a diverged or out-of-memory setting is a result of the sweep, not the end of it
            entry = {"name": name, "group": _group(point, base), "point": point, "status": "failed", "action": "failed", "error": e.one_line()}
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


def run_optuna(
    base: dict[str, Any],
    space: dict[str, list[Any]],
    n_trials: int,
    out: str | Path,
    models: dict[str, dict[str, Any]] | None = None,
    evaluate: bool = True,
    progress: bool = False,
    seed: int = 0,
    on_point: Callable[[int, int, dict[str, Any]], None] | None = None,
) -> Path:
    """An Optuna (TPE) search of ``n_trials`` trials maximising the best validation Dice.

    The study is stored in ``OUT/optuna.db`` (SQLite): re-running continues it, trials interrupted
    while running are marked failed and their point is tried again (its run resumes from its
    checkpoint). A point sampled twice reuses its finished run.
    """
    try:
        import optuna
    except ModuleNotFoundError:
        raise DependencyError("--optuna needs the optuna package", where="--optuna", fix="pip install 'medseg[sweep]'") from None
    out = Path(out)
    check_keys(list(space))
    _check_models({k: v for k, v in space.items() if k == "model.name"})
    out.mkdir(parents=True, exist_ok=True)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    storage = f"sqlite:///{(out / 'optuna.db').resolve()}"
    n_before = len(optuna.create_study(study_name="medseg", storage=storage, direction="maximize", load_if_exists=True).trials)
    sampler = optuna.samplers.TPESampler(seed=seed + n_before)  # a continued search does not replay the first draws
    study = optuna.load_study(study_name="medseg", storage=storage, sampler=sampler)
    for t in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,)):
        study.tell(t.number, state=optuna.trial.TrialState.FAIL)
        study.enqueue_trial(t.params)
    done = len(study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,)))
    record = SweepRecord(out, {"mode": "optuna", "base": base, "space": space, "trials": n_trials, "models": models or {}})
    record.write()
    remaining = max(n_trials - done, 0)

    def objective(trial: Any) -> float:
        point: dict[str, Any] = {}
        for key, vals in space.items():
            if len(vals) == 1 and isinstance(vals[0], dict) and "range" in vals[0]:
                lo, hi = vals[0]["range"]
                if isinstance(lo, int) and isinstance(hi, int) and not vals[0]["log"]:
                    point[key] = trial.suggest_int(key, lo, hi)
                else:
                    point[key] = trial.suggest_float(key, float(lo), float(hi), log=vals[0]["log"])
            else:
                choices = [v if isinstance(v, str | int | float | bool) or v is None else json.dumps(v) for v in vals]
                picked = trial.suggest_categorical(key, choices)
                point[key] = vals[choices.index(picked)]
        cfg = point_config(base, point, models)
        entry = run_point(cfg, out / "runs" / point_name(point), out, point, _group(point, base), evaluate, progress)
        entry["trial"] = trial.number
        record.add(entry)
        if on_point:
            on_point(trial.number, n_trials, entry)
        v = entry.get("best_val_dice")
        return float(v) if v is not None else 0.0

    if remaining:
        study.optimize(objective, n_trials=remaining, catch=())
    best = study.best_trial if study.get_trials(states=(optuna.trial.TrialState.COMPLETE,)) else None
    if best is not None:
        record.meta["best"] = {"trial": best.number, "value": best.value, "params": best.params}
        record.write()
    return out


def check_ray_address(address: str, timeout: float = 3.0) -> None:
    """Refuse an unreachable ``HOST:PORT`` (or ``ray://HOST:PORT``) within ``timeout`` seconds, instead of hanging."""
    if address in ("local", "auto"):
        return
    hostport = address.split("://", 1)[-1].rstrip("/")
    host, _, port = hostport.rpartition(":")
    if not host or not port.isdigit():
        raise ConfigError(f"Ray address {address!r} is not HOST:PORT", where="--ray", fix="give the head node as HOST:PORT, 'auto' or 'local'")
    try:
        with socket.create_connection((host, int(port)), timeout=timeout):
            pass
    except OSError as e:
        raise RunError(
            f"cannot reach the Ray cluster at {hostport} ({e.strerror or type(e).__name__})",
            where="--ray",
            fix="start it with `ray start --head` on that machine, check the address and firewall, or use --ray local",
        ) from None


def run_ray(
    base: dict[str, Any],
    grid: dict[str, list[Any]],
    out: str | Path,
    address: str,
    seeds: int = 1,
    models: dict[str, dict[str, Any]] | None = None,
    evaluate: bool = True,
    cpus_per_trial: float = 1.0,
    gpus_per_trial: float = 0.0,
    max_concurrent: int | None = None,
) -> Path:
    """Run the grid as Ray Tune trials on a cluster (``local``: a Ray instance on this machine).

    Each trial calls :func:`run_point`, so the run folders, resuming and ``sweep.json`` are the same
    as for a local sweep. ``OUT`` must be on a file system every node sees.
    """
    check_ray_address(address)
    try:
        import ray
        from ray import tune
    except ModuleNotFoundError:
        raise DependencyError("--ray needs Ray Tune", where="--ray", fix="pip install 'medseg[sweep]'") from None
    out = Path(out).resolve()
    check_keys(list(grid))
    _check_models(grid)
    points = grid_points(grid, seeds, int(_get(base, "train.seed") or 0))
    for p in points:
        point_config(base, p, models)
    out.mkdir(parents=True, exist_ok=True)
    record = SweepRecord(out, {"mode": "ray", "base": base, "grid": grid, "seeds": seeds, "models": models or {}, "ray": address})
    record.write()
    started_here = False
    try:
        if not ray.is_initialized():
            kw: dict[str, Any] = {"include_dashboard": False, "log_to_driver": False, "configure_logging": False}
            if address == "local":
                ray.init(**kw)
            else:
                ray.init(address=address, **kw)
            started_here = True
    except (ConnectionError, RuntimeError, ValueError) as e:
        msg = str(e).splitlines()[0][:160] if str(e) else type(e).__name__
        raise RunError(f"cannot connect to Ray at {address} ({msg})", where="--ray", fix="check the address, or use --ray local") from None
    try:
        base_ = copy.deepcopy(base)
        models_ = copy.deepcopy(models or {})

        def trainable(params: dict[str, Any]) -> dict[str, Any]:
            point = params["point"]
            cfg = point_config(base_, point, models_)
            entry = run_point(cfg, out / "runs" / point_name(point), out, point, _group(point, base_), evaluate, False)
            return {"best_val_dice": entry.get("best_val_dice") or 0.0, "entry": entry}

        tuner = tune.Tuner(
            tune.with_resources(trainable, {"cpu": cpus_per_trial, "gpu": gpus_per_trial}),
            param_space={"point": tune.grid_search(points)},
            tune_config=tune.TuneConfig(max_concurrent_trials=max_concurrent),
            run_config=tune.RunConfig(name="tune", storage_path=str(out / "ray"), verbose=0),
        )
        results = tuner.fit()
        for r in results:
            if r.error is not None:
                raise RunError(f"a Ray trial failed: {str(r.error).splitlines()[-1][:200]}", where=out / "ray", fix="see the trial's log under OUT/ray/tune")
            record.add(r.metrics["entry"])
    finally:
        if started_here:
            ray.shutdown()
    return out
