"""Commands that bring data in and look at it: datasets, import, inspect, prepare, augment-preview."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from medseg.cli.app import SetOpt, command, console
from medseg.core.errors import MedsegError


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
    p, plan_file, cache = prepare_dataset(cfg, plan_path=plan, gpu_memory_gb=gpu_memory_gb, cpu_cores=cpu_cores, overwrite=overwrite, progress=progress)
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
