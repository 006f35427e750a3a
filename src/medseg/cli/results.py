"""Commands on trained runs: evaluate, predict, postprocess, export, compare, report, demo."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from medseg.cli.app import SetOpt, command, console, err_console
from medseg.core.errors import MedsegError


@command("evaluate")
def evaluate_cmd(
    run: Annotated[Path | None, typer.Argument(help="run folder (or score two folders with --pred and --ref)")] = None,
    split: Annotated[str | None, typer.Option(help="train | val | test (default: the config's eval.split)")] = None,
    checkpoint: Annotated[str | None, typer.Option(help="best | last")] = None,
    pred: Annotated[Path | None, typer.Option("--pred", help="folder of predicted masks (NIfTI, NRRD, MHA, PNG), matched to --ref by case name")] = None,
    ref: Annotated[Path | None, typer.Option("--ref", help="folder of reference masks")] = None,
    labels: Annotated[list[str] | None, typer.Option("--labels", help="label values to score: 1,2 or 1=liver,2=tumour (default: all found)")] = None,
    out: Annotated[Path | None, typer.Option("--out", "-o", help="output folder for --pred/--ref (default: <pred>_eval)")] = None,
    config: Annotated[
        str | None, typer.Option("--config", help="YAML whose eval section sets the metric conventions, and data.regions the regions (with --pred/--ref)")
    ] = None,
    dataset_json: Annotated[
        Path | None,
        typer.Option("--dataset-json", help="nnU-Net / MSD dataset.json: labels, regions, ignore label (default: <pred>/dataset.json if present)"),
    ] = None,
    ignore_label: Annotated[int | None, typer.Option("--ignore-label", help="label value whose reference voxels no metric counts")] = None,
    set_: SetOpt = None,
    progress: bool = True,
) -> None:
    """Score a run on a split, or any two folders of masks: metrics.csv (case × class), summary.json and
    nnU-Net's summary.json layout as summary_nnunet.json.

    Metric conventions (HD95 / ASSD / NSD modes, empty-mask policies, time saved, lesions) are the
    eval.* config fields, e.g. --set eval.surface.hd95_mode=monai; see docs/metrics.md.
    """
    import json
    import math

    from medseg.workflows.evaluate import evaluate_folders, evaluate_run

    if pred is not None or ref is not None:
        if run is not None or pred is None or ref is None:
            raise MedsegError("--pred and --ref go together, without a run folder", where="evaluate", fix="medseg evaluate --pred PRED_DIR --ref REF_DIR")
        from medseg.config import load_config
        from medseg.recipes import resolve_config_path

        cfg = load_config(resolve_config_path(config) if config else None, list(set_ or []))
        declared = (cfg.data.regions, cfg.data.regions_class_order)  # regions of the config (or --set data.regions=…)
        result = evaluate_folders(
            pred, ref, labels=labels, out=out, config=cfg.eval, progress=progress, dataset_json=dataset_json, ignore_label=ignore_label, declared=declared
        )
        title = f"{pred.name} vs {ref.name}"
    else:
        if run is None:
            raise MedsegError("nothing to evaluate", where="evaluate", fix="give a run folder, or --pred DIR --ref DIR")
        if config is not None or labels or out is not None or dataset_json is not None or ignore_label is not None:
            raise MedsegError(
                "--config, --labels, --out, --dataset-json and --ignore-label apply to --pred/--ref",
                where="evaluate",
                fix="for a run, change settings with --set eval.…",
            )
        result = evaluate_run(run, split=split, checkpoint=checkpoint, progress=progress, overrides=list(set_ or []))
        title = ""
    from medseg.metrics.registry import METRICS

    summary = json.loads((result / "summary.json").read_text())
    t = Table(title=f"{title or summary['split']}: per class mean ± std ({summary['n_cases']} cases)")
    t.add_column("class")
    shown = METRICS.shown("cli", summary["columns"])
    for c in shown:
        t.add_column(c.label, justify="right")

    def fmt(e: dict[str, Any], digits: int) -> str:
        if e["mean"] is None or isinstance(e["mean"], str):
            return "n/a" if e["mean"] is None else str(e["mean"])
        std = "" if e["std"] is None else f" ± {e['std']:.{digits}f}"
        return f"{e['mean']:.{digits}f}{std}" + (f" ({e['n_undefined']} n/a)" if e["n_undefined"] else "")

    for name, e in summary["per_class"].items():
        t.add_row(name, *[fmt(e[c.name], c.digits) for c in shown])
    console.print(t)
    md = summary["mean_dice"]
    console.print(f"mean Dice {'n/a' if md is None else f'{md:.3f}'}  →  {result}")
    scores = [f"{sc.label} {sc.format(v)}" for sc in METRICS.scores if not math.isnan(v := sc.value(summary))]
    if scores:
        console.print(", ".join(scores), highlight=False)


@command("predict")
def predict_cmd(
    run: Annotated[Path, typer.Argument(help="run folder")],
    input: Annotated[Path, typer.Argument(help="image file (NIfTI, NRRD, MHA, PNG, TIFF…), folder of files, DICOM folder, zip or file, or a data set folder")],
    out: Annotated[Path, typer.Option("--out", "-o", help="output folder (written atomically)")],
    ensemble: Annotated[list[Path] | None, typer.Option(help="more runs (folds) to average with RUN (repeatable)")] = None,
    format: Annotated[
        str | None,
        typer.Option("--format", "-f", help="default: like each input (DICOM → dicom-seg); or nifti|nrrd|mha|mhd|gipl|png|tiff|bmp|dicom-seg|rle-csv"),
    ] = None,
    checkpoint: Annotated[str, typer.Option(help="best | last")] = "best",
    tta: Annotated[
        str, typer.Option(help="test-time mirroring: auto (as the run decided on validation — `medseg auto` does — else none) | none | all | axes like 0,1")
    ] = "auto",
    overlap: Annotated[float, typer.Option(help="sliding-window overlap")] = 0.5,
    probabilities: Annotated[bool, typer.Option(help="also write probabilities (.npz)")] = False,
    overlays: Annotated[bool, typer.Option(help="also write overlay PNGs")] = False,
    series: Annotated[str | None, typer.Option(help="DICOM SeriesInstanceUID when a folder holds several")] = None,
    split: Annotated[str | None, typer.Option(help="with a data set folder: only this split")] = None,
    device: Annotated[str, typer.Option(help="auto | cpu | cuda | mps")] = "auto",
    backend: Annotated[str, typer.Option(help="auto (ONNX Runtime when the run has a current export and the device is the CPU) | torch | onnx")] = "auto",
    overwrite: Annotated[bool, typer.Option(help="replace an existing output folder")] = False,
    progress: bool = True,
) -> None:
    """Predict masks for new images, each written like its input: its format, its exact voxel grid."""
    from medseg.workflows.predict import predict

    axes: str | list[int] = tta if tta in ("auto", "none", "all") else [int(a) for a in tta.split(",") if a.strip()]
    runs = [run, *(ensemble or [])]
    result = predict(
        runs,
        input,
        out,
        fmt=format,
        checkpoint=checkpoint,
        tta=axes,
        overlap=overlap,
        probabilities=probabilities,
        overlays=overlays,
        series=series,
        split=split,
        device=device,
        overwrite=overwrite,
        progress=progress,
        backend=backend,
    )
    console.print(f"predictions: [bold]{result}[/]")


@command("postprocess")
def postprocess_cmd(
    run: Annotated[Path, typer.Argument(help="run folder")],
    split: Annotated[str, typer.Option(help="split to decide on (validation by default)")] = "val",
    tta: Annotated[bool, typer.Option("--tta", help="also decide test-time mirroring (kept when it raises Dice; `predict --tta auto` applies it)")] = False,
    progress: bool = True,
) -> None:
    """Decide per class whether keeping the largest connected component helps; later predictions apply it."""
    from medseg.engine.load import decide_postprocessing

    d = decide_postprocessing(run, split, progress=progress, tta=tta)
    if tta:
        dice = d["tta_mean_dice"]
        s = d["tta_seconds_per_case"]
        timing = f"{s['none']:.2f} s vs {s['all']:.2f} s a case"
        console.print(f"test-time mirroring: {d['tta']} (mean Dice {dice['none']:.4f} without, {dice['all']:.4f} with; {timing})")
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
    macs: Annotated[bool, typer.Option(help="show the multiply-accumulates recorded at training time")] = True,
) -> None:
    """Compare runs: one table with accuracy, size, speed, memory and sensitivity, plus paired statistics.

    Paired statistics (bootstrap 95 % CI of the mean Dice difference, Wilcoxon signed-rank p) use the
    cases both runs were scored on: runs scored on different case sets are restricted to the
    intersection, with a warning. See docs/comparison.md.
    """
    from medseg.reports.tables import display_table, paired_table, study_table, write_comparison
    from medseg.workflows.compare import compare_runs

    cmp = compare_runs(list(runs), split, by, with_macs=macs)
    header, rows = display_table(cmp)
    print_table(f"Comparison on the {split} split", header, rows)
    ph, prows = paired_table(cmp)
    if prows:
        means = [r for r, raw in zip(prows, cmp.paired, strict=True) if raw["class"] == "mean"]
        print_table(f"Paired statistics per {by} (Dice b − a)", ph, means)
    sh, srows = study_table(cmp)
    if srows:
        print_table("Loss, pixel accuracy, pixel-level averages (background included), time saved per case", sh, srows)
    for w in cmp.warnings:
        console.print(f"[bold yellow]warning:[/] {w}", highlight=False)
    if out is not None:
        console.print(f"comparison written to [bold]{write_comparison(cmp, out)}[/]")


def print_table(title: str, header: list[str], rows: list[list[str]]) -> None:
    """Print a table whole when the terminal is wide enough; else turned on its side (one column per row of
    the table, its first cell as the heading), in as many blocks as needed, so that no column is squeezed
    into a few characters per line."""
    from rich.measure import Measurement

    def table(head: list[str], body: list[list[str]], name: str) -> Table:
        t = Table(title=name)
        for i, h in enumerate(head):
            t.add_column(h, overflow="fold", no_wrap=i == 0)
        for r in body:
            t.add_row(*r)
        return t

    wide = console.options.update_width(100_000)
    whole = table(header, rows, title)
    if Measurement.get(console, wide, whole).maximum <= console.width or not rows:
        console.print(whole)
        return
    n = len(rows)
    while n > 1:
        chunk = rows[:n]
        side = table([header[0], *[r[0] for r in chunk]], [[h, *[r[i] for r in chunk]] for i, h in enumerate(header) if i], title)
        if Measurement.get(console, wide, side).maximum <= console.width:
            break
        n -= 1
    for start in range(0, len(rows), n):
        chunk = rows[start : start + n]
        console.print(table([header[0], *[r[0] for r in chunk]], [[h, *[r[i] for r in chunk]] for i, h in enumerate(header) if i], title))


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
    from medseg.runs import is_run_dir

    single = len(runs) == 1 and is_run_dir(runs[0])
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


@command("workspace")
def workspace_cmd(
    root: Annotated[Path, typer.Argument(help="workspace folder (created when missing): data/, datasets/, runs/, weights/, jobs/")],
    host: Annotated[str, typer.Option(help="address to bind; anything but this machine needs --auth")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="TCP port")] = 7860,
    auth: Annotated[str | None, typer.Option(help="require a login, USER:PASSWORD")] = None,
    max_upload_mb: Annotated[float, typer.Option(help="largest upload accepted (images, zips of data), in MB")] = 512,
    max_concurrent: Annotated[int, typer.Option(help="predictions of uploads running at once (others queue)")] = 2,
    max_jobs: Annotated[int, typer.Option(help="jobs (imports, trainings, evaluations) running at once; others queue")] = 1,
) -> None:
    """Start the browser workspace: create data sets, configure and start trainings, watch them live, look at the results."""
    try:
        from medseg.demo import is_loopback, parse_auth, serve
    except ImportError as e:  # gradio missing
        from medseg.core.errors import DependencyError

        raise DependencyError(f"the workspace needs the demo extra ({e.name} is missing)", where="medseg workspace", fix="pip install 'medseg[demo]'") from None

    if max_upload_mb <= 0 or max_concurrent < 1 or max_jobs < 1:
        raise MedsegError("--max-upload-mb must be > 0, --max-concurrent and --max-jobs ≥ 1", where="medseg workspace", fix="e.g. --max-jobs 1")
    credentials = parse_auth(auth)
    if not is_loopback(host) and credentials is None:
        raise MedsegError(f"binding {host} lets other machines start jobs", where="--host", fix="add --auth USER:PASSWORD, or bind 127.0.0.1")
    console.print(f"medseg workspace {root} on [bold]http://{host}:{port}/[/] (Ctrl+C stops it; running jobs are interrupted)", highlight=False)
    serve(None, workspace=root, host=host, port=port, auth=credentials, max_upload_mb=max_upload_mb, max_concurrent=max_concurrent, max_jobs=max_jobs)
