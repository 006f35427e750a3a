"""Commands that train: train, sweep, quickstart."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from medseg.cli.app import SetOpt, command, console
from medseg.core.errors import MedsegError


@command("train")
def train_cmd(
    config: Annotated[
        str | None, typer.Argument(help="YAML config, recipe (`medseg config --list`) or a data set folder (trained by its plan); optional with --resume")
    ] = None,
    out: Annotated[Path | None, typer.Option("--out", "-o", help="run folder (default runs/<name>)")] = None,
    set_: SetOpt = None,
    resume: Annotated[Path | None, typer.Option(help="continue this run folder from its last checkpoint")] = None,
    device: Annotated[str | None, typer.Option(help="auto | cpu | cuda | mps")] = None,
    devices: Annotated[str | None, typer.Option(help="devices per node for DDP (e.g. 2, or auto)")] = None,
    num_nodes: Annotated[int | None, typer.Option(help="number of nodes (torchrun / SLURM)")] = None,
    strategy: Annotated[str | None, typer.Option(help="Lightning strategy: auto, ddp, ddp_spawn, ...")] = None,
    max_time: Annotated[str | None, typer.Option(help="wall-clock budget, HH:MM:SS or DD:HH:MM:SS")] = None,
    overwrite: Annotated[bool, typer.Option(help="replace a run folder that already exists")] = False,
    progress: Annotated[bool, typer.Option(help="show the progress bar")] = True,
) -> None:
    """Train a model; leaves a run folder with config, checkpoints, history and curves."""
    from medseg.config import load_config
    from medseg.recipes import resolve_config_path

    flags = {"device": device, "devices": devices, "num_nodes": num_nodes, "strategy": strategy, "max_time": max_time}
    overrides = list(set_ or []) + [f"train.{k}={v}" for k, v in flags.items() if v is not None]
    # the config is validated before torch is imported: a typo is reported in a fraction of a second
    if resume is not None:
        if out is not None and Path(out) != resume:
            raise MedsegError("--out and --resume name different folders", where="--out", fix="give only --resume RUN")
        cfg = load_config(resolve_config_path(config) if config else resume / "config.yaml", overrides)
        run_dir = resume
    else:
        if config is None:
            raise MedsegError("no config given", where="CONFIG", fix="give a YAML file, a recipe name (e.g. `medseg train quickstart`) or a data set folder")
        if (Path(config) / "dataset.json").is_file():  # a data set folder: its plan and cache decide everything
            from medseg.workflows.auto.config import dataset_config

            cfg = dataset_config(config, overrides)
        else:
            cfg = load_config(resolve_config_path(config), overrides)
        run_dir = out or Path("runs") / cfg.name
    from medseg.engine.train import train

    run = train(cfg, run_dir, overwrite=overwrite, progress=progress, resume=resume is not None)
    console.print(f"run folder: [bold]{run}[/]")


@command("sweep")
def sweep_cmd(
    config: Annotated[str, typer.Argument(help="YAML config, recipe name, or comparison recipe (configs/comparisons/)")],
    grid: Annotated[list[str] | None, typer.Option("--grid", "-g", help="KEY=V1,V2,... (repeatable); for --optuna also LOW..HIGH[:log]")] = None,
    out: Annotated[Path | None, typer.Option("--out", "-o", help="sweep folder (default runs/sweep-<name>)")] = None,
    seeds: Annotated[int | None, typer.Option(help="runs per grid point, with train.seed = seed, seed+1, ...")] = None,
    optuna: Annotated[int | None, typer.Option("--optuna", help="an Optuna search of N trials instead of the full grid")] = None,
    ray: Annotated[str | None, typer.Option("--ray", help="run the grid on a Ray cluster: HOST:PORT, auto, or local")] = None,
    cpus_per_trial: Annotated[float, typer.Option(help="Ray: CPUs per trial")] = 1.0,
    gpus_per_trial: Annotated[float, typer.Option(help="Ray: GPUs per trial")] = 0.0,
    set_: SetOpt = None,
    evaluate: Annotated[bool, typer.Option(help="evaluate every run on its eval.split")] = True,
    progress: Annotated[bool, typer.Option(help="show training progress bars")] = False,
) -> None:
    """Run a hyperparameter sweep: every grid point a normal run folder, resumable; Dice vs each swept value.

    Example: medseg sweep quickstart --grid train.lr=1e-4,3e-4,1e-3 --grid model.name=unet,segformer_b0 --seeds 3 --out runs/lr
    Re-running the same command skips finished runs and resumes interrupted ones.
    """
    from medseg.recipes import resolve_sweep_source
    from medseg.workflows.search import run_optuna, run_ray
    from medseg.workflows.sweep import parse_grid, run_sweep

    base, recipe = resolve_sweep_source(config, list(set_ or []))
    if recipe.get("points") and optuna is None and ray is None:  # settings that go together: grid × points
        from medseg.recipes import recipe_points
        from medseg.workflows.study import run_points

        points = recipe_points(recipe, parse_grid(grid))
        out = out or Path("runs") / f"sweep-{base.get('name', 'run')}"

        def done(i: int, n: int, e: dict[str, Any]) -> None:
            console.print(f"[{i + 1}/{n}] {e['name']}: {e['action']}", highlight=False)

        run_points(base, points, out, models=recipe.get("models") or {}, evaluate=evaluate, progress=progress, on_point=done)
        console.print(f"sweep folder: [bold]{out}[/] (sweep.csv); next: medseg compare {out} or medseg report {out} --out {out}/report")
        return
    space = {k: list(v) for k, v in (recipe.get("grid") or {}).items()}
    space.update(parse_grid(grid))
    if recipe.get("grid"):
        from medseg.workflows.sweep import check_keys

        check_keys(list(space))
    if not space:
        raise MedsegError("nothing to sweep", where="--grid", fix="add e.g. --grid train.lr=1e-4,3e-4,1e-3")
    n_seeds = seeds if seeds is not None else int(recipe.get("seeds") or 1)
    models = recipe.get("models") or {}
    out = out or Path("runs") / f"sweep-{base.get('name', 'run')}"

    def report(i: int, n: int, entry: dict[str, Any]) -> None:
        v = entry.get("best_val_dice")
        console.print(f"[{i + 1}/{n}] {entry['name']}: {entry['action']}, best val Dice {'n/a' if v is None else f'{v:.3f}'}", highlight=False)

    if optuna is not None:
        if ray is not None:
            raise MedsegError("--optuna and --ray go separately", where="--ray", fix="use one of them")
        run_optuna(base, space, optuna, out, models=models, evaluate=evaluate, progress=progress, on_point=report)
    elif ray is not None:
        run_ray(base, space, out, ray, seeds=n_seeds, models=models, evaluate=evaluate, cpus_per_trial=cpus_per_trial, gpus_per_trial=gpus_per_trial)
    else:
        run_sweep(base, space, out, seeds=n_seeds, models=models, evaluate=evaluate, progress=progress, on_point=report)
    console.print(f"sweep folder: [bold]{out}[/] (sweep.csv, sensitivity.png); next: medseg compare {out} or medseg report {out} --out {out}/report")


@command("quickstart")
def quickstart_cmd(
    out: Annotated[Path, typer.Option("--out", "-o", help="folder for the two runs and the comparison report")] = Path("runs/quickstart"),
    set_: SetOpt = None,
    overwrite: Annotated[bool, typer.Option(help="replace an earlier quickstart (--no-overwrite: keep its finished runs)")] = True,
    progress: bool = True,
) -> None:
    """Train a CNN (U-Net) and a transformer (SegFormer-b0, from scratch) on the built-in phantom2d data,
    evaluate both and write the comparison report, in minutes on a CPU. --set applies to both runs."""
    import shutil

    from medseg.recipes import resolve_sweep_source
    from medseg.reports.html import make_comparison_report
    from medseg.workflows.sweep import SWEEP_FILE, run_sweep

    base, recipe = resolve_sweep_source("quickstart_cnn_vs_transformer", list(set_ or []))
    if out.exists() and any(out.iterdir()) and overwrite:
        if not (out / SWEEP_FILE).is_file():
            raise MedsegError("folder exists and is not a quickstart", where=out, fix="choose another --out")
        shutil.rmtree(out)
    models = recipe["grid"]["model.name"]
    console.rule(f"[bold]1/3 train and evaluate[/] {' and '.join(models)} on {base['data']['dataset']}")

    def step(i: int, n: int, entry: dict[str, Any]) -> None:
        d = entry.get("test_dice")
        console.print(f"{entry['group']}: {entry['action']} in {entry.get('train_time_s') or 0:.0f} s, test mean Dice {'n/a' if d is None else f'{d:.3f}'}")

    run_sweep(base, {"model.name": models}, out, models=recipe.get("models"), progress=progress, on_point=step)
    console.rule("[bold]2/3 compare[/] (table, paired statistics)")
    runs = [out / "runs" / m for m in models]
    index = make_comparison_report(runs, "test", out / "report", title="Quickstart: CNN vs transformer")
    console.print((out / "report" / "comparison.md").read_text(encoding="utf-8"), markup=False, highlight=False)
    console.rule("[bold]3/3 report")
    console.print(f"report: [bold]{index}[/]")


@command("study")
def study_cmd(
    name: Annotated[str | None, typer.Argument(help="the study: a name or number from --list")] = None,
    data: Annotated[Path | None, typer.Option("--data", "-d", help="the study's download, unpacked")] = None,
    out: Annotated[Path | None, typer.Option("--out", "-o", help="study folder: data/, runs/, report/ (default studies/NAME)")] = None,
    set_: SetOpt = None,
    quick: Annotated[bool, typer.Option("--quick", help="a smoke run on a laptop CPU: tiny models, one short epoch, small images")] = False,
    list_: Annotated[bool, typer.Option("--list", help="list the studies and the download each reads")] = False,
    progress: Annotated[bool, typer.Option(help="show progress bars")] = False,
) -> None:
    """Run a reference study on its download with one command: import, train every model of the study,
    evaluate, compare with the published numbers, report. Re-running continues where it stopped.

    Example: medseg study sunnybrook-lv --data ~/Downloads/sunnybrook --out studies/lv --quick
    """
    from medseg.workflows.study import STUDIES, get_study, run_study

    if list_:
        for s in STUDIES.values():
            console.print(f"[bold]{s.name}[/] ({s.number}) — {s.title}. Download: {s.download}", highlight=False, soft_wrap=True)
        return
    if name is None:
        raise MedsegError("no study named", where="NAME", fix=f"choose one of: {', '.join(STUDIES)} (medseg study --list)")
    study = get_study(name)
    if data is None:
        raise MedsegError("no download given", where="--data", fix=f"medseg study {study.name} --data PATH (the unpacked {study.download})")
    from medseg.reports.html import make_comparison_report

    def point(i: int, n: int, entry: dict[str, Any]) -> None:
        d = entry.get("test_dice")
        console.print(f"  [{i + 1}/{n}] {entry['name']}: {entry['action']}, test Dice {'n/a' if d is None else f'{d:.3f}'}", highlight=False)

    index = run_study(
        study.name,
        data,
        out or Path("studies") / study.name,
        overrides=list(set_ or []),
        quick=quick,
        progress=progress,
        report=make_comparison_report,
        on_step=lambda text: console.rule(text),
        on_point=point,
    )
    console.print(f"report: [bold]{index}[/]")


@command("auto")
def auto_cmd(
    data: Annotated[Path, typer.Argument(help="a data folder in any format `medseg import` reads (detected), or a medseg data set")],
    out: Annotated[Path, typer.Option("--out", "-o", help="the run folder to create")],
    time_budget: Annotated[str | None, typer.Option(help="wall clock for all of it, e.g. 10m (default: 1000 optimiser steps' time, minutes)")] = None,
    folds: Annotated[int, typer.Option(help="0: one training; 5: patient-grouped 5-fold cross-validation, the folds predict as an ensemble")] = 0,
    device: Annotated[str, typer.Option(help="auto | cpu | cuda | mps")] = "auto",
    ray: Annotated[str | None, typer.Option("--ray", help="with --folds 5: run the folds on a Ray cluster (HOST:PORT, auto or local)")] = None,
    resume: Annotated[bool, typer.Option("--resume", help="continue an interrupted auto run in --out")] = False,
    progress: Annotated[bool, typer.Option(help="show training progress bars")] = False,
) -> None:
    """Import, plan, size to the device and budget, train, pick the configuration and post-processing — no config.

    Every decision and its reason goes to OUT/auto.json and OUT/plan.json; OUT is a run folder for
    predict, evaluate, report and the demo. Example: medseg auto Dataset777_Nuclei --out runs/nuclei
    """
    from medseg.workflows.auto import run_auto

    def echo(text: str) -> None:
        console.print(text, markup=False, highlight=False)

    run_auto(data, out, time_budget=time_budget, folds=folds, device=device, ray=ray, resume=resume, progress=progress, echo=echo)
