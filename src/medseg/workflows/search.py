"""Searches over the same points as a sweep: an Optuna study (resumable) and Ray Tune trials on a cluster."""

from __future__ import annotations

import copy
import json
import socket
from collections.abc import Callable
from pathlib import Path
from typing import Any

from medseg.core.errors import ConfigError, DependencyError, RunError
from medseg.workflows.sweep import SweepRecord, check_keys, check_models, get_dotted, grid_points, point_config, point_group, point_name, run_point


def run_optuna(
    base: dict[str, Any],
    space: dict[str, list[Any]],
    n_trials: int,
    out: str | Path,
    *,
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
    check_models({k: v for k, v in space.items() if k == "model.name"})
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
        entry = run_point(cfg, out / "runs" / point_name(point), out, point, point_group(point, base), evaluate=evaluate, progress=progress)
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
    *,
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
    check_models(grid)
    points = grid_points(grid, seeds, int(get_dotted(base, "train.seed") or 0))
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
            entry = run_point(cfg, out / "runs" / point_name(point), out, point, point_group(point, base_), evaluate=evaluate, progress=False)
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
