"""The ``medseg`` command line: a thin layer over the Python API (typer + rich)."""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer
from rich.console import Console
from rich.table import Table

from medseg import __version__
from medseg.core.errors import MedsegError

app = typer.Typer(
    name="medseg",
    help="Medical image segmentation: import → inspect → prepare → train → evaluate → predict → compare / sweep → report → demo.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode="rich",
)
console = Console()
err_console = Console(stderr=True)
F = TypeVar("F", bound=Callable[..., Any])


def command(name: str, **kwargs: Any) -> Callable[[F], F]:
    """Register a command whose ``MedsegError`` is printed on one line (exit status 2)."""

    def deco(fn: F) -> F:
        @functools.wraps(fn)
        def wrapper(*args: Any, **kw: Any) -> Any:
            try:
                return fn(*args, **kw)
            except MedsegError as e:
                err_console.print(f"[bold red]error:[/] {e.one_line()}", markup=True, highlight=False, soft_wrap=True)
                raise typer.Exit(e.exit_code) from None

        app.command(name, **kwargs)(wrapper)
        return fn

    return deco


def _not_yet(what: str) -> None:
    raise MedsegError(f"`medseg {what}` is not available in this version", fix="see the README's roadmap; use the Python API meanwhile")


SetOpt = Annotated[list[str] | None, typer.Option("--set", "-s", help="override a config field, e.g. --set train.lr=3e-4 (repeatable)")]


@app.callback(invoke_without_command=True)
def _main(version: Annotated[bool, typer.Option("--version", help="print the version and exit")] = False) -> None:
    if version:
        console.print(f"medseg {__version__}")
        raise typer.Exit()


@command("datasets")
def datasets_cmd(
    name: Annotated[str | None, typer.Argument(help="a built-in to write as a data set folder")] = None,
    out: Annotated[Path | None, typer.Option("--out", "-o", help="folder to write NAME into")] = None,
    option: Annotated[list[str] | None, typer.Option("--option", help="generator option KEY=VALUE, e.g. n_patients=50")] = None,
    overwrite: bool = False,
) -> None:
    """List the built-in data sets (no download needed), or write one to a folder."""
    from medseg.config import parse_override
    from medseg.data.builtin import list_builtins, make_builtin
    from medseg.data.splits import make_splits, save_splits
    from medseg.data.store import write_dataset

    if name is None:
        t = Table(title="Built-in data sets")
        for col in ("name", "dims", "description"):
            t.add_column(col)
        for n, d, desc in list_builtins():
            t.add_row(n, f"{d}D", desc)
        console.print(t)
        console.print("Write one with [bold]medseg datasets NAME --out DIR[/]; configs use it by name: data.dataset: NAME")
        return
    if out is None:
        raise MedsegError("no output folder given", where="--out", fix=f"medseg datasets {name} --out data/{name}")
    opts = {}
    for text in option or []:
        key, value = parse_override(text)
        opts[".".join(key)] = value
    data = make_builtin(name, **opts)
    ds = write_dataset(out, data.info, data.cases, overwrite=overwrite)
    save_splits(ds.splits_path, data.splits or make_splits(ds.labelled_patients))
    console.print(f"wrote {len(ds)} cases to {out}")


def _import_help() -> str:
    from medseg.data.formats import list_formats

    lines = ["Import a data set from its published format into a medseg data set folder.", "", "[bold]Formats[/] (FORMAT argument):", ""]
    for name, text, opts in list_formats():
        lines += [f"• [bold]{name}[/] — {text}. Options: {', '.join(opts)}", ""]
    lines.append("Example: medseg import dicom scans/ --out data/ct --to-nifti --option rois=Liver,Tumour")
    return "\n".join(lines)


@command("import", help=_import_help())
def import_cmd(
    fmt: Annotated[str, typer.Argument(help="input format (see the list above)", metavar="FORMAT")],
    path: Annotated[Path, typer.Argument(help="input file or folder")],
    out: Annotated[Path, typer.Option("--out", "-o", help="data set folder to create")],
    overwrite: Annotated[bool, typer.Option(help="replace --out if it exists (only once the new folder is complete)")] = False,
    classes: Annotated[str | None, typer.Option(help="class names, comma-separated, background first (multi-label: one per channel)")] = None,
    labels: Annotated[str | None, typer.Option(help="dicom: a NIfTI mask or a folder of masks on the series grid")] = None,
    rois: Annotated[str | None, typer.Option(help="dicom: RTSTRUCT/SEG ROI names to import, comma-separated, in class order")] = None,
    series: Annotated[str | None, typer.Option(help="dicom: the SeriesInstanceUID to import (or 'all')")] = None,
    to_nifti: Annotated[bool, typer.Option("--to-nifti", help="dicom: also write NIfTI copies to <out>/nifti")] = False,
    option: Annotated[list[str] | None, typer.Option("--option", help="format option KEY=VALUE (repeatable), e.g. order=column")] = None,
    seed: Annotated[int, typer.Option(help="seed of the patient-grouped split made when the format gives none")] = 0,
    progress: Annotated[bool, typer.Option(help="show the progress bar")] = True,
) -> None:
    from medseg.config import parse_override
    from medseg.data.formats import import_dataset

    opts: dict[str, Any] = {}
    for key, value in (("classes", classes), ("labels", labels), ("rois", rois), ("series", series)):
        if value is not None:
            opts[key] = value
    if to_nifti:
        opts["to_nifti"] = True
    for text in option or []:
        key, value = parse_override(text)
        opts[".".join(key)] = value
    ds = import_dataset(fmt, path, out, overwrite=overwrite, seed=seed, progress=progress, **opts)
    console.print(f"wrote {len(ds)} cases ({ds.info.dims}D, classes: {', '.join(ds.info.class_names)}) to {out}; next: medseg inspect {out}")


@command("inspect")
def inspect_cmd(
    dataset: Annotated[str, typer.Argument(help="data set folder or built-in name")],
    fingerprint: Annotated[Path | None, typer.Option(help="where to write fingerprint.json (default: inside the data set folder)")] = None,
    progress: Annotated[bool, typer.Option(help="show the progress bar")] = True,
) -> None:
    """Describe a data set: cases per split, shapes, spacings, intensities, class voxels, warnings; writes fingerprint.json."""
    from medseg.config import config_from_dict
    from medseg.data.inspect import FINGERPRINT_FILE, describe, write_fingerprint
    from medseg.data.source import open_dataset

    ds = open_dataset(config_from_dict({"data": {"dataset": dataset}}))
    d = describe(ds, progress=progress)
    fp_path = write_fingerprint(d["fingerprint"], fingerprint or ds.root / FINGERPRINT_FILE)
    console.print(f"[bold]{ds.info.name}[/] — {ds.info.description}  ({ds.root})")
    t = Table(show_header=False)
    for k, v in d["summary"].items():
        t.add_row(k, str(v))
    console.print(t)
    ct = Table(title="Voxels per class and split")
    ct.add_column("class")
    for s in d["splits"]:
        ct.add_column(s, justify="right")
    for cls, counts in d["class_voxels"].items():
        ct.add_row(cls, *[f"{counts.get(s, 0):,}" for s in d["splits"]])
    console.print(ct)
    for w in d["fingerprint"]["warnings"]:
        console.print(f"[bold yellow]warning:[/] {w}", highlight=False)
    console.print(f"fingerprint written to {fp_path}")


@command("prepare")
def prepare_cmd(
    dataset: Annotated[str, typer.Argument(help="data set folder or built-in name")],
    plan: Annotated[Path | None, typer.Option("--plan", help="use this plan.json instead of planning from the fingerprint")] = None,
    config: Annotated[str | None, typer.Option("--config", help="YAML config or recipe whose data.preprocess to apply (default: the plan's)")] = None,
    set_: SetOpt = None,
    gpu_memory_gb: Annotated[float, typer.Option("--gpu-memory-gb", help="GPU memory the planned patch × batch must fit")] = 8.0,
    cpu_cores: Annotated[int | None, typer.Option("--cpu-cores", help="CPU budget of the plan (default: this machine's)")] = None,
    overwrite: Annotated[bool, typer.Option(help="rebuild the cache even if it exists (also one from another plan)")] = False,
    progress: Annotated[bool, typer.Option(help="show the progress bar")] = True,
) -> None:
    """Plan (plan.json) and preprocess a data set into a memory-mapped cache that training reads."""
    from medseg.config import config_from_dict, load_config
    from medseg.recipes import resolve_config_path
    from medseg.workflows.prepare import PLAN_DEFAULTS, prepare_dataset

    overrides = [f"data.dataset={dataset}", *(set_ or [])]
    if config is not None:
        cfg = load_config(resolve_config_path(config), [*overrides, "data.preprocess.enabled=true"])
    else:
        cfg = config_from_dict({"data": {"preprocess": dict(PLAN_DEFAULTS)}}, overrides)
    p, plan_file, cache = prepare_dataset(cfg, plan, gpu_memory_gb, cpu_cores, overwrite=overwrite, progress=progress)
    t = Table(title=f"plan ({plan_file})")
    for col in ("configuration", "patch", "batch", "pooling per axis", "stages"):
        t.add_column(col)
    for name, c in p["configurations"].items():
        mark = " (recommended)" if name == p["recommended"] else ""
        t.add_row(name + mark, "×".join(map(str, c["patch_size"])), str(c["batch_size"]), str(c["pool_per_axis"]), str(c["n_stages"]))
    console.print(t)
    ras = cfg.data.preprocess.orientation == "RAS" and p.get("target_spacing_ras")
    spacing = " × ".join(f"{s:.3g}" for s in (p["target_spacing_ras"] if ras else p["target_spacing"]))
    console.print(f"target spacing {spacing} mm{' (RAS axes)' if ras else ''}; normalisation {', '.join(p['normalization'])}; {p['why']}")
    console.print(f"cache: [bold]{cache}[/]")


@command("augment-preview")
def augment_preview_cmd(
    dataset: Annotated[str, typer.Argument(help="data set folder or built-in name")],
    out: Annotated[Path, typer.Option("--out", "-o", help="PNG to write")],
    preset: Annotated[str | None, typer.Option(help="none | light | default | heavy (default: the config's)")] = None,
    config: Annotated[str | None, typer.Option("--config", help="YAML config or recipe (augmentation overrides, preprocessing)")] = None,
    set_: SetOpt = None,
    cases: Annotated[int, typer.Option(help="rows: training cases shown")] = 4,
    samples: Annotated[int, typer.Option(help="augmented versions per case")] = 4,
    seed: int = 0,
) -> None:
    """Write a PNG grid of original vs augmented training samples, label contours in class colours."""
    from medseg.config import load_config
    from medseg.recipes import resolve_config_path
    from medseg.workflows.previews import augment_preview

    overrides = [f"data.dataset={dataset}", *(set_ or [])]
    if preset is not None:
        overrides.append(f"data.augmentation.preset={preset}")
    cfg = load_config(resolve_config_path(config) if config else None, overrides)
    console.print(f"preview: [bold]{augment_preview(cfg, out, cases, samples, seed)}[/]")


@command("train")
def train_cmd(
    config: Annotated[str | None, typer.Argument(help="YAML config or recipe name (see `medseg config --list`); optional with --resume")] = None,
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
    from medseg.engine.train import train
    from medseg.recipes import resolve_config_path

    flags = {"device": device, "devices": devices, "num_nodes": num_nodes, "strategy": strategy, "max_time": max_time}
    overrides = list(set_ or []) + [f"train.{k}={v}" for k, v in flags.items() if v is not None]
    if resume is not None:
        if out is not None and Path(out) != resume:
            raise MedsegError("--out and --resume name different folders", where="--out", fix="give only --resume RUN")
        source = resolve_config_path(config) if config else resume / "config.yaml"
        run = train(load_config(source, overrides), resume, progress=progress, resume=True)
    else:
        if config is None:
            raise MedsegError("no config given", where="CONFIG", fix="give a YAML file or recipe name, e.g. `medseg train quickstart`")
        cfg = load_config(resolve_config_path(config), overrides)
        run = train(cfg, out or Path("runs") / cfg.name, overwrite=overwrite, progress=progress)
    console.print(f"run folder: [bold]{run}[/]")


@command("evaluate")
def evaluate_cmd(
    run: Annotated[Path | None, typer.Argument(help="run folder (or score two folders with --pred and --ref)")] = None,
    split: Annotated[str | None, typer.Option(help="train | val | test (default: the config's eval.split)")] = None,
    checkpoint: Annotated[str | None, typer.Option(help="best | last")] = None,
    pred: Annotated[Path | None, typer.Option("--pred", help="folder of predicted masks (NIfTI, NRRD, MHA, PNG), matched to --ref by case name")] = None,
    ref: Annotated[Path | None, typer.Option("--ref", help="folder of reference masks")] = None,
    labels: Annotated[list[str] | None, typer.Option("--labels", help="label values to score: 1,2 or 1=liver,2=tumour (default: all found)")] = None,
    out: Annotated[Path | None, typer.Option("--out", "-o", help="output folder for --pred/--ref (default: <pred>_eval)")] = None,
    config: Annotated[str | None, typer.Option("--config", help="YAML whose eval section sets the metric conventions (with --pred/--ref)")] = None,
    set_: SetOpt = None,
    progress: bool = True,
) -> None:
    """Score a run on a split, or any two folders of masks: metrics.csv (case × class) and summary.json.

    Metric conventions (HD95 / ASSD / NSD modes, empty-mask policies, time saved, lesions) are the
    eval.* config fields, e.g. --set eval.surface.hd95_mode=monai; see docs/metrics.md.
    """
    import json

    from medseg.workflows.evaluate import evaluate_folders, evaluate_run

    if pred is not None or ref is not None:
        if run is not None or pred is None or ref is None:
            raise MedsegError("--pred and --ref go together, without a run folder", where="evaluate", fix="medseg evaluate --pred PRED_DIR --ref REF_DIR")
        from medseg.config import load_config
        from medseg.recipes import resolve_config_path

        cfg = load_config(resolve_config_path(config) if config else None, list(set_ or []))
        result = evaluate_folders(pred, ref, labels, out, cfg.eval, progress=progress)
        title = f"{pred.name} vs {ref.name}"
    else:
        if run is None:
            raise MedsegError("nothing to evaluate", where="evaluate", fix="give a run folder, or --pred DIR --ref DIR")
        if config is not None or labels or out is not None:
            raise MedsegError("--config, --labels and --out apply to --pred/--ref", where="evaluate", fix="for a run, change settings with --set eval.…")
        result = evaluate_run(run, split, checkpoint, progress=progress, overrides=list(set_ or []))
        title = ""
    summary = json.loads((result / "summary.json").read_text())
    t = Table(title=f"{title or summary['split']}: per class mean ± std ({summary['n_cases']} cases)")
    t.add_column("class")
    shown = [m for m in ("dice", "hd95", "assd", "nsd") if m in summary["columns"]]
    for m in shown:
        t.add_column(m.upper() if m != "dice" else "Dice", justify="right")

    def fmt(e: dict[str, Any]) -> str:
        if e["mean"] is None or isinstance(e["mean"], str):
            return "n/a" if e["mean"] is None else str(e["mean"])
        return f"{e['mean']:.3f}" + ("" if e["std"] is None else f" ± {e['std']:.3f}") + (f" ({e['n_undefined']} n/a)" if e["n_undefined"] else "")

    for name, e in summary["per_class"].items():
        t.add_row(name, *[fmt(e[m]) for m in shown])
    console.print(t)
    md = summary["mean_dice"]
    console.print(f"mean Dice {'n/a' if md is None else f'{md:.3f}'}  →  {result}")


@command("predict")
def predict_cmd(
    run: Annotated[Path, typer.Argument(help="run folder")],
    input: Annotated[Path, typer.Argument(help="image/volume file, folder of files, DICOM folder or zip, or a data set folder")],
    out: Annotated[Path, typer.Option("--out", "-o", help="output folder (written atomically)")],
    ensemble: Annotated[list[Path] | None, typer.Option(help="more runs (folds) to average with RUN (repeatable)")] = None,
    format: Annotated[str, typer.Option("--format", "-f", help="nifti | nrrd | png | rle-csv | dicom-seg")] = "nifti",
    checkpoint: Annotated[str, typer.Option(help="best | last")] = "best",
    tta: Annotated[str, typer.Option(help="test-time mirroring: none | all | axes like 0,1")] = "none",
    overlap: Annotated[float, typer.Option(help="sliding-window overlap")] = 0.5,
    probabilities: Annotated[bool, typer.Option(help="also write probabilities (.npz)")] = False,
    overlays: Annotated[bool, typer.Option(help="also write overlay PNGs")] = False,
    series: Annotated[str | None, typer.Option(help="DICOM SeriesInstanceUID when a folder holds several")] = None,
    split: Annotated[str | None, typer.Option(help="with a data set folder: only this split")] = None,
    device: Annotated[str, typer.Option(help="auto | cpu | cuda | mps")] = "auto",
    backend: Annotated[str, typer.Option(help="torch | onnx (ONNX Runtime on the CPU)")] = "torch",
    overwrite: Annotated[bool, typer.Option(help="replace an existing output folder")] = False,
    progress: bool = True,
) -> None:
    """Predict masks for new images, written on each input's exact grid."""
    from medseg.workflows.predict import predict

    axes: str | list[int] = tta if tta in ("none", "all") else [int(a) for a in tta.split(",") if a.strip()]
    runs = [run, *(ensemble or [])]
    result = predict(runs, input, out, format, checkpoint, axes, overlap, probabilities, overlays, series, split, device, overwrite, progress, backend)
    console.print(f"predictions: [bold]{result}[/]")


@command("postprocess")
def postprocess_cmd(
    run: Annotated[Path, typer.Argument(help="run folder")],
    split: Annotated[str, typer.Option(help="split to decide on (validation by default)")] = "val",
    progress: bool = True,
) -> None:
    """Decide per class whether keeping the largest connected component helps; later predictions apply it."""
    from medseg.engine.inferer import decide_postprocessing

    d = decide_postprocessing(run, split, progress=progress)
    t = Table(title=f"Largest-component post-processing (decided on {split})")
    for col in ("class", "Dice before", "Dice after", "applied"):
        t.add_column(col)
    for name, before in d["dice_before"].items():
        t.add_row(name, f"{before:.4f}", f"{d['dice_after'][name]:.4f}", "yes" if d["dice_after"][name] > before else "no")
    console.print(t)


@command("export")
def export_cmd(
    run: Annotated[Path, typer.Argument(help="run folder")],
    onnx: Annotated[bool, typer.Option("--onnx", help="export the network to ONNX (RUN/export/model.onnx)")] = True,
    checkpoint: Annotated[str, typer.Option(help="best | last")] = "best",
) -> None:
    """Export a trained network (ONNX) for deployment; `medseg predict` runs it too."""
    from medseg.engine.onnx import export_onnx

    console.print(f"ONNX model: [bold]{export_onnx(run, checkpoint)}[/]")


@command("compare")
def compare_cmd(
    runs: Annotated[list[Path], typer.Argument(help="run folders evaluated on --split (a sweep folder stands for its runs)")],
    split: Annotated[str, typer.Option(help="the evaluated split to compare")] = "test",
    out: Annotated[Path | None, typer.Option("--out", "-o", help="folder for comparison.md/.csv/.html, paired.csv, comparison.json")] = None,
    by: Annotated[str, typer.Option(help="paired unit: case, or patient (per-case Dice averaged per patient)")] = "case",
    macs: Annotated[bool, typer.Option(help="count multiply-accumulates (loads each model)")] = True,
) -> None:
    """Compare runs: one table with accuracy, size, speed, memory and sensitivity, plus paired statistics.

    Paired statistics (bootstrap 95 % CI of the mean Dice difference, Wilcoxon signed-rank p) use the
    cases both runs were scored on: runs scored on different case sets are restricted to the
    intersection, with a warning. See docs/comparison.md.
    """
    from medseg.reports.tables import display_table, paired_table, write_comparison
    from medseg.workflows.compare import compare_runs

    cmp = compare_runs(list(runs), split, by, with_macs=macs)
    header, rows = display_table(cmp)
    t = Table(title=f"Comparison on the {split} split")
    for h in header:
        t.add_column(h, overflow="fold")
    for r in rows:
        t.add_row(*r)
    console.print(t)
    ph, prows = paired_table(cmp)
    if prows:
        pt = Table(title=f"Paired statistics per {by} (Dice b − a)")
        for h in ph:
            pt.add_column(h, overflow="fold")
        for r, raw in zip(prows, cmp.paired, strict=True):
            if raw["class"] == "mean":
                pt.add_row(*r)
        console.print(pt)
    for w in cmp.warnings:
        console.print(f"[bold yellow]warning:[/] {w}", highlight=False)
    if out is not None:
        console.print(f"comparison written to [bold]{write_comparison(cmp, out)}[/]")


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
        run_optuna(base, space, optuna, out, models, evaluate, progress, on_point=report)
    elif ray is not None:
        run_ray(base, space, out, ray, n_seeds, models, evaluate, cpus_per_trial, gpus_per_trial)
    else:
        run_sweep(base, space, out, n_seeds, models, evaluate, progress, on_point=report)
    console.print(f"sweep folder: [bold]{out}[/] (sweep.csv, sensitivity.png); next: medseg compare {out} or medseg report {out} --out {out}/report")


@command("report")
def report_cmd(
    runs: Annotated[list[Path], typer.Argument(help="run folder; several (or a sweep folder) for a side-by-side comparison report")],
    split: Annotated[str, typer.Option(help="the evaluated split to report")] = "test",
    out: Annotated[Path | None, typer.Option("--out", "-o", help="comparison report folder (default: comparison beside the first run)")] = None,
    by: Annotated[str, typer.Option(help="paired unit for a comparison: case or patient")] = "case",
) -> None:
    """Write a self-contained HTML report (images embedded) plus its PNGs: curves, per-class Dice, box plots,
    best/median/worst cases with error maps, the training GIF, the data set and the config."""
    from medseg.reports.html import make_comparison_report, make_report

    single = len(runs) == 1 and (runs[0] / "config.yaml").is_file()
    if single and out is None:
        index = make_report(runs[0], split)
    else:
        if out is None and len(runs) == 1:  # a sweep folder: its report goes inside it
            out = runs[0] / "report"
        index = make_comparison_report(list(runs), split, out, by)
    console.print(f"report: [bold]{index}[/]")


@command("demo")
def demo_cmd(
    runs_dir: Annotated[Path, typer.Argument(help="folder holding run folders (e.g. runs)")],
    host: Annotated[str, typer.Option(help="address to bind; the default serves this machine only")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="TCP port")] = 7860,
    auth: Annotated[str | None, typer.Option(help="require a login, USER:PASSWORD")] = None,
    max_upload_mb: Annotated[float, typer.Option(help="largest upload accepted, in MB")] = 512,
    max_concurrent: Annotated[int, typer.Option(help="predictions of uploads running at once (others queue)")] = 2,
) -> None:
    """Start the local web demo over a folder of runs: test cases, overlays, metrics, upload + predict."""
    try:
        from medseg.demo import is_loopback, parse_auth, serve
    except ImportError as e:  # gradio missing
        from medseg.core.errors import DependencyError

        raise DependencyError(f"the demo needs the demo extra ({e.name} is missing)", where="medseg demo", fix="pip install 'medseg[demo]'") from None

    if max_upload_mb <= 0 or max_concurrent < 1:
        raise MedsegError("--max-upload-mb must be > 0 and --max-concurrent ≥ 1", where="medseg demo", fix="e.g. --max-upload-mb 512 --max-concurrent 2")
    credentials = parse_auth(auth)
    if not is_loopback(host):
        login = "" if credentials else " without a login (add --auth USER:PASSWORD)"
        err_console.print(f"[bold yellow]warning:[/] binding {host}: other machines can reach the demo{login}", highlight=False)
    console.print(f"medseg demo on [bold]http://{host}:{port}/[/] (Ctrl+C stops it)", highlight=False)
    serve(runs_dir, host=host, port=port, auth=credentials, max_upload_mb=max_upload_mb, max_concurrent=max_concurrent)


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


@command("models")
def models_cmd(
    name: Annotated[str | None, typer.Argument(help="a model to describe (keyword arguments, weights)")] = None,
    dims: Annotated[int | None, typer.Option("--dims", help="only models for 2D or 3D data")] = None,
) -> None:
    """List the registered models: name, 2D/3D, parameters (1 channel in, 3 classes), description, paper."""
    import inspect

    from medseg.models import MODELS, list_models
    from medseg.models.complexity import REFERENCE_IN_CHANNELS, REFERENCE_NUM_CLASSES, format_count, reference_parameters

    def params(n: str) -> str:
        m = MODELS.meta(n)
        if m["training"] == "fit":
            return "— (fit)"
        try:
            return " / ".join(f"{format_count(reference_parameters(n, d))}" for d in m["dims"] if dims in (None, d))
        except MedsegError as e:  # e.g. a missing optional package
            return f"n/a ({e.fix or e.problem})"

    if name is not None:
        m = MODELS.meta(name)  # unknown names fail here with close matches
        t = Table(show_header=False, title=name)
        t.add_row("description", m["description"])
        t.add_row("paper", m["paper"])
        t.add_row("dims", "/".join(f"{d}D" for d in m["dims"]))
        ref = f"{REFERENCE_IN_CHANNELS} channel in, {REFERENCE_NUM_CLASSES} classes"
        t.add_row("parameters", f"{params(name)}  ({'/'.join(f'{d}D' for d in m['dims'])}, {ref})")
        t.add_row("training", "model.fit(images, labels) — no optimiser" if m["training"] == "fit" else "back-propagation")
        t.add_row("deep supervision", "n_deep_supervision: int (training mode returns a list, full resolution first)" if m["deep_supervision"] else "no")
        t.add_row("pretrained weights", m["weights"] or "none published; a checkpoint of this model via pretrained: PATH")
        sig = inspect.signature(MODELS.get(name))
        for p in list(sig.parameters.values())[3:]:
            t.add_row(f"  {p.name}", repr(p.default))
        if m["training"] == "gradient":
            t.add_row("  pretrained", "None — a local weights file or Hugging Face folder")
            t.add_row("  pretrained_channels", "'sum' — or 'replicate' (1-channel input repeated to RGB)")
        console.print(t)
        return
    t = Table(title=f"Models — parameters with {REFERENCE_IN_CHANNELS} input channel and {REFERENCE_NUM_CLASSES} classes (2D / 3D)")
    for col in ("name", "dims", "parameters", "description", "paper"):
        t.add_column(col, justify="right" if col == "parameters" else "left", no_wrap=col in ("name", "dims", "parameters"))
    for n in list_models(spatial_dims=dims):
        m = MODELS.meta(n)
        t.add_row(n, "/".join(f"{d}D" for d in m["dims"]), params(n), m["description"], m["paper"].split(",")[0])
    console.print(t)
    console.print("Details and keyword arguments: [bold]medseg models NAME[/]; in a config: model.name: NAME, model.params: {...}")


@command("config")
def config_cmd(
    config: Annotated[str | None, typer.Argument(help="YAML config or recipe name; omit for the defaults")] = None,
    set_: SetOpt = None,
    list_: Annotated[bool, typer.Option("--list", help="list the shipped recipes")] = False,
) -> None:
    """Print a resolved config (every valid key with its value), or list the recipes."""
    from medseg.config import load_config
    from medseg.recipes import list_recipes, resolve_config_path

    if list_:
        for r in list_recipes():
            console.print(r)
        return
    cfg = load_config(resolve_config_path(config) if config else None, list(set_ or []))
    sys.stdout.write(cfg.to_yaml())


def main() -> None:
    app()


if __name__ == "__main__":
    main()
