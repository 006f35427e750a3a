"""``medseg study NAME --data PATH --out DIR``: a reference study, from its download to its report.

A study is a download layout, the importer and options that read it, and a comparison recipe
(``configs/comparisons/``) that says what the study trained: every model, loss, preprocessing,
augmentation, optimiser, schedule and split, with the published numbers as reference rows. The
study command runs, in order, into ``DIR``:

    DIR/data/      the imported data set (kept: a second run reuses it)
    DIR/runs/      one run folder per point of the recipe (resumable, like a sweep: sweep.json, sweep.csv)
    DIR/report/    the comparison (tables, paired statistics, reference rows) and its HTML page

``--quick`` shrinks everything for a smoke run on a laptop CPU: every model at its registered tiny
size, one short epoch, small images, and only as many runs as it takes to try every model and
every setting once.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from medseg.core.errors import ConfigError, FormatError, TrainingError
from medseg.workflows.sweep import SWEEP_FILE, SweepRecord, point_config, point_group, point_name, run_point

__all__ = ["STUDIES", "Study", "get_study", "locate", "plan_study", "quick_points", "run_points", "run_study", "SWEEP_FILE"]


@dataclass(frozen=True)
class Study:
    """One reference study: where its data come from and which recipe says what it did."""

    name: str
    number: str
    title: str
    download: str  # what to download and unpack, one line
    fmt: str  # the importer
    recipe: str  # the comparison recipe
    options: dict[str, Any] = field(default_factory=dict)  # importer options
    finds: tuple[str, ...] = ()  # what locate() looks for under --data (see there)
    quick: tuple[str, ...] = ()  # --set overrides of this study for --quick


#: the overrides every ``--quick`` run gets (one short epoch on the CPU, no accumulation or early stop)
QUICK = (
    "train.epochs=1",
    "train.iterations_per_epoch=2",
    "train.min_iterations=0",
    "train.iterations=null",
    "train.time_budget=null",
    "train.device=cpu",
    "train.precision='32'",
    "train.accumulate_grad_batches=1",
    "train.early_stop_patience=null",
    "data.batch_size=2",
    "data.num_workers=0",
)

STUDIES: dict[str, Study] = {
    s.name: s
    for s in (
        Study(
            "gi-tract",
            "000",
            "CNN (DenseUNet) vs transformer (SegFormer-b2) on the UW-Madison GI tract",
            "Kaggle 'UW-Madison GI Tract Image Segmentation': train.csv + train/caseN/caseN_dayD/scans/*.png",
            "kaggle-gi",
            "gi_cnn_vs_transformer",
            finds=("train.csv",),
            quick=("data.preprocess.resize=[32,32]",),
        ),
        Study(
            "neuro-npy",
            "001",
            "UNet / LinkNet / FPN × ResNet-18/34/50 × three losses on 4-class neuro NumPy stacks",
            "the course's task2_2D_4class{train,val,test}{images,labels}.npy files",
            "numpy",
            "numpy_unet_linknet_fpn",
            options={"classes": "background,blood vessel,cell,axon"},
            finds=("*images.npy",),
        ),
        Study(
            "pancreas-ct82",
            "002",
            "3D Attention U-Net variants for the pancreas (TCIA Pancreas-CT, CT-82)",
            "TCIA Pancreas-CT (NBIA retriever: Pancreas-CT/PANCREAS_NNNN/…/*.dcm) + TCIA_pancreas_labels-02-05-2017/labelNNNN.nii.gz",
            "dicom",
            "attention_unet_variants",
            options={"classes": "background,pancreas"},
            finds=("Pancreas-CT/", "TCIA_pancreas_labels*/"),
            quick=("data.preprocess.spacing=[3.0,3.0,3.0]", "data.preprocess.pad_to=[16,16,16]", "data.patch_size=[16,16,16]"),
        ),
        Study(
            "prostate-hipmri",
            "003",
            "Improved 3D U-Net, Dice vs Dice + 0.2 × weighted CE, on prostate MRI (6 labels)",
            "CSIRO HipMRI 'Labelled weekly MR images of the male pelvis': semantic_MRs_anon/ + semantic_labels_anon/",
            "nifti",
            "improved_unet3d_losses",
            options={"images_dir": "semantic_MRs_anon", "labels_dir": "semantic_labels_anon", "classes": "Background,Body,Bones,Bladder,Rectum,Prostate"},
            finds=("semantic_MRs_anon/",),
            quick=("data.preprocess.resize=[16,16,8]",),
        ),
        Study(
            "sunnybrook-lv",
            "004",
            "FCN-AlexNet / FCN-8s (and a U-Net), CE vs Dice, LV blood pool on Sunnybrook cardiac MRI",
            "MICCAI 2009 LV challenge: challenge_training/ + 'Sunnybrook Cardiac MR Database ContoursPart3'",
            "sunnybrook",
            "sunnybrook_fcn_vs_unet",
            options={"task": "lv"},
        ),
    )
}


def get_study(name: str) -> Study:
    """A study by name (``gi-tract``) or number (``000``, ``0``)."""
    key = name.strip().lower().replace("_", "-")
    for s in STUDIES.values():
        if key in (s.name, s.number) or (key.isdigit() and int(key) == int(s.number)):
            return s
    raise ConfigError(f"unknown study {name!r}", where="NAME", fix=f"choose one of: {', '.join(STUDIES)} (medseg study --list)")


def _find(root: Path, pattern: str, depth: int = 3) -> Path | None:
    """The shallowest file or folder (pattern ending in ``/``) matching ``pattern`` under ``root``."""
    want_dir = pattern.endswith("/")
    pat = pattern.rstrip("/")
    for d in range(depth + 1):
        hits = sorted(p for p in root.glob("/".join(["*"] * d + [pat])) if p.is_dir() == want_dir)
        if hits:
            return hits[0]
    return None


def locate(study: Study, data: Path) -> tuple[Path, dict[str, Any]]:
    """The path to import and the importer options, found under the unpacked download ``data``.

    The releases nest their folders differently (an NBIA ``manifest-…`` folder, a release folder
    around the image and label folders): the expected files are looked for up to 3 levels down.
    """
    data = Path(data)
    if not data.exists():
        raise FormatError("the download folder does not exist", where=data, fix=f"unpack {study.download} there")
    options = dict(study.options)
    if not study.finds:
        return data, options
    found = [_find(data, f) for f in study.finds]
    missing = [f for f, p in zip(study.finds, found, strict=True) if p is None]
    if missing:
        raise FormatError(f"no {missing[0]} found (up to 3 levels down)", where=data, fix=f"study {study.name} reads {study.download}")
    first = found[0]
    assert first is not None
    if study.fmt == "dicom":
        options["labels"] = str(found[1])
        return first, options
    return (first.parent if first.is_file() or study.fmt == "nifti" else first), options


def quick_points(points: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The fewest runs, in order, that still try every value of every key once."""
    seen: set[tuple[str, str]] = set()
    out = []
    for p in points:
        pairs = {(k, repr(v)) for k, v in p.items()}
        if not pairs <= seen or not out:
            out.append(p)
            seen |= pairs
    return out


def _tiny(model: str, params: dict[str, Any]) -> dict[str, Any]:
    """``params`` (the study's) at the model's registered tiny size; deep supervision stays the study's
    choice, capped at what the tiny network's fewer levels allow."""
    from medseg.models import MODELS

    tiny = copy.deepcopy(MODELS.meta(model).get("tiny") or {}) if model in MODELS else {}
    cap = tiny.pop("n_deep_supervision", None)
    out = {**params, **tiny}
    if cap is not None and int(out.get("n_deep_supervision", 0)) > int(cap):
        out["n_deep_supervision"] = cap
    return out


def plan_study(study: Study, dataset: Path, overrides: list[str] | None = None, quick: bool = False) -> tuple[dict[str, Any], dict[str, Any], list[dict]]:
    """The study's base config (on ``dataset``), per-model parameters and runs, ``--quick`` applied."""
    from medseg.recipes import recipe_points, resolve_sweep_source

    sets = [f"data.dataset={Path(dataset).resolve()}", *(QUICK + study.quick if quick else ()), *(overrides or [])]
    base, recipe = resolve_sweep_source(study.recipe, sets)
    models = copy.deepcopy(recipe.get("models") or {})
    points = recipe_points(recipe)
    if quick:
        points = quick_points(points)
        names = {str(p.get("model.name") or base["model"]["name"]) for p in points}
        models = {m: _tiny(m, models.get(m, {})) for m in names | set(models)}
        base["model"]["params"] = _tiny(base["model"]["name"], base["model"].get("params") or {})
    return base, models, points


def run_name(point: dict[str, Any], points: list[dict[str, Any]]) -> str:
    """A short run folder name: the point's plain values, or every value when that is ambiguous."""

    def short(p: dict[str, Any]) -> str:
        return point_name({k: v for k, v in p.items() if not isinstance(v, dict | list)})

    names = [short(p) for p in points]
    return short(point) if names.count(short(point)) == 1 else point_name(point)


def run_points(
    base: dict[str, Any],
    points: list[dict[str, Any]],
    out: str | Path,
    *,
    models: dict[str, dict[str, Any]] | None = None,
    evaluate: bool = True,
    progress: bool = False,
    on_point: Callable[[int, int, dict[str, Any]], None] | None = None,
) -> Path:
    """Train (or resume, or skip) and evaluate every point into ``out/runs/``; ``out/sweep.json`` lists them.

    Like :func:`medseg.workflows.sweep.run_sweep`, for an explicit list of points (a recipe's grid
    combined with its ``points``); every config is validated before the first run starts.
    """
    out = Path(out)
    named = [(p, run_name(p, points)) for p in points]
    configs = [(p, n, point_config(base, p, models, name=f"{base.get('name', 'run')}-{n}")) for p, n in named]
    out.mkdir(parents=True, exist_ok=True)
    record = SweepRecord(out, {"mode": "points", "base": base, "points": points, "models": models or {}})
    record.write()
    failed: list[str] = []
    for i, (point, name, cfg) in enumerate(configs):
        group = point_group(point, base)
        try:
            entry = run_point(cfg, out / "runs" / name, out, point, group, evaluate=evaluate, progress=progress)
        except TrainingError as e:  # a diverged setting is a result of the study, not its end
            entry = {"name": name, "group": group, "point": point, "status": "failed", "action": "failed", "error": e.one_line()}
            failed.append(name)
        record.add(entry)
        if on_point:
            on_point(i, len(configs), entry)
    if failed:
        raise TrainingError(
            f"{len(failed)} of {len(configs)} runs failed ({', '.join(failed[:3])})",
            where=out / SWEEP_FILE,
            fix="see each run's error in sweep.json; change those settings and re-run (finished runs are skipped)",
        )
    return out


def run_study(
    name: str,
    data: str | Path,
    out: str | Path,
    *,
    overrides: list[str] | None = None,
    quick: bool = False,
    progress: bool = False,
    report: Callable[..., Path] | None = None,
    on_step: Callable[[str], None] | None = None,
    on_point: Callable[[int, int, dict[str, Any]], None] | None = None,
) -> Path:
    """Import, train and evaluate every run, and compare: the whole study into ``out``.

    Args:
        name: a study name or number (:data:`STUDIES`).
        data: the unpacked download.
        out: the study folder (``data/``, ``runs/``, ``report/``); a second call resumes it.
        overrides: ``--set`` overrides, applied last.
        quick: shrink everything for a smoke run (see the module docstring).
        progress: show progress bars.
        report: ``report(runs, split, out, title=...)`` writes the comparison report (the reports
            layer's ``make_comparison_report``); without it the study stops after the runs.
        on_step: called with a one-line description before each stage.
        on_point: called as ``on_point(i, n, entry)`` after each run.

    Returns:
        The report's ``index.html`` (or the folder of runs without ``report``).
    """
    from medseg.data.formats import import_dataset
    from medseg.data.store import load_dataset

    study = get_study(name)
    out = Path(out)
    step = on_step or (lambda _: None)
    path, options = locate(study, Path(data))
    dataset = out / "data"
    if (dataset / "dataset.json").is_file():
        step(f"1/3 data: reusing {dataset}")
        load_dataset(dataset)
    else:
        step(f"1/3 import {study.fmt} {path}")
        import_dataset(study.fmt, path, dataset, progress=progress, **options)
    base, models, points = plan_study(study, dataset, overrides, quick)
    step(f"2/3 train and evaluate {len(points)} run(s) of recipe {study.recipe}")
    runs = run_points(base, points, out / "runs", models=models, progress=progress, on_point=on_point)
    if report is None:
        return runs
    step("3/3 compare and report")
    split = str((base.get("eval") or {}).get("split", "test"))
    return report([runs], split, out / "report", title=f"Study {study.number}: {study.title}")
