"""Score segmentations: per case × per class metrics → ``metrics.csv`` + ``summary.json``.

Two entry points write the same layout:

* :func:`evaluate_run` predicts every case of a split with a trained run and scores it
  (``RUN/eval/<split>/``);
* :func:`evaluate_folders` scores any two folders of masks (NIfTI, NRRD, MHA, PNG) matched by case
  name, so predictions made by other tools are judged by the same metrics.

Output folder (written atomically)::

    metrics.csv                 case, class, every metric (one row per case × scored class)
    summary.json                mean ± std per class, macro and voxel-weighted means, pooled counts,
                                lesion and time-saved totals, classification report, conventions
    classification_report.csv   pixel-level precision / recall / F1 / support per class + averages
    confusion_matrix.csv        voxel counts, rows = reference, columns = prediction
    eval_config.yaml            the evaluation settings used (metric modes, tolerances, policies)
    predictions/<case>.npz      (runs only) the predicted label map and its affine

Conventions and empty-mask policies are in ``docs/metrics.md``.
"""

from __future__ import annotations

import csv
import io
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from medseg.config import EvalConfig, config_from_dict
from medseg.core.atomic import atomic_dir, write_json, write_text
from medseg.core.errors import ConfigError, DatasetError, MedsegError, RunError, SplitError
from medseg.core.progress import track
from medseg.data.splits import load_splits, select
from medseg.data.store import Dataset, load_dataset
from medseg.metrics.clinical import time_saved
from medseg.metrics.lesions import LESION_METRICS, lesion_counts_per_class
from medseg.metrics.overlap import (
    classification_report,
    classification_report_from_counts,
    confusion_counts,
    confusion_matrix,
    metrics_from_counts,
)
from medseg.metrics.surface import SURFACE_METRICS, surface_metrics_per_class
from medseg.runs import read_run, update_run

OVERLAP_COLUMNS = [
    "dice",
    "iou",
    "precision",
    "recall",
    "specificity",
    "f1",
    "volume_pred",
    "volume_ref",
    "volume_diff",
    "rel_volume_diff",
    "tp",
    "fp",
    "fn",
]
TIME_COLUMNS = ["time_saved_s", "slices_passed", "slices_failed"]
#: Every column :func:`score_case` can fill, in ``metrics.csv`` order (disabled groups are left out).
METRIC_COLUMNS = [*OVERLAP_COLUMNS, *SURFACE_METRICS, *TIME_COLUMNS, *LESION_METRICS]
#: Columns summarised as mean ± std per class (counts are summed instead).
MEAN_METRICS = ["dice", "iou", "precision", "recall", "specificity", "f1", "volume_diff", "rel_volume_diff", *SURFACE_METRICS, "time_saved_s"]
MASK_SUFFIXES = (".nii.gz", ".nii", ".nrrd", ".nhdr", ".mha", ".mhd", ".png")
GRID_ATOL_MM = 1e-3


def metric_columns(cfg: EvalConfig) -> list[str]:
    """The ``metrics.csv`` columns produced under ``cfg``."""
    cols = list(OVERLAP_COLUMNS)
    if cfg.surface.enabled:
        cols += SURFACE_METRICS
    if cfg.time_saved.enabled:
        cols += TIME_COLUMNS
    if cfg.lesions.enabled:
        cols += LESION_METRICS
    return cols


def _per_class_setting(values: dict[str, float], default: float, names: Sequence[str], field_name: str) -> list[float]:
    unknown = sorted(set(values) - set(names))
    if unknown:
        raise ConfigError(f"unknown class names {unknown}; the classes are {list(names)}", where=field_name, fix="use the class names of the data set")
    return [float(values.get(n, default)) for n in names]


def score_case(
    pred: np.ndarray,
    ref: np.ndarray,
    classes: Sequence[int],
    names: Sequence[str],
    spacing: Sequence[float],
    cfg: EvalConfig,
    multi_label: bool = False,
) -> dict[str, np.ndarray]:
    """Every enabled metric of one case, as arrays of length ``len(classes)``.

    Args:
        pred, ref: label maps of class indices, or boolean stacks ``(K, ...)`` when ``multi_label``.
        classes: the scored classes (channels).
        names: their names (for per-class settings).
        spacing: voxel size per spatial axis in mm.
        cfg: the evaluation settings.
        multi_label: whether inputs are channel stacks.
    """
    counts = confusion_counts(pred, ref, classes, multi_label)
    out = metrics_from_counts(counts, float(np.prod(spacing)))
    out.update(tp=counts[:, 0].astype(float), fp=counts[:, 1].astype(float), fn=counts[:, 2].astype(float))
    if cfg.surface.enabled:
        s = cfg.surface
        tol = _per_class_setting(s.class_tolerance_mm, s.tolerance_mm, names, "eval.surface.class_tolerance_mm")
        out.update(
            surface_metrics_per_class(
                pred,
                ref,
                classes,
                spacing,
                multi_label,
                tolerances_mm=tol,
                percentile=s.percentile,
                hd95_mode=s.hd95_mode,
                assd_mode=s.assd_mode,
                nsd_mode=s.nsd_mode,
                empty_both=s.empty_both,
                empty_one=s.empty_one,
            )
        )
    if cfg.time_saved.enabled:
        t = cfg.time_saved
        draw = _per_class_setting(t.class_draw_seconds, t.draw_seconds, names, "eval.time_saved.class_draw_seconds")
        axis = min(t.slice_axis, len(spacing) - 1)
        res = time_saved(pred, ref, classes, multi_label, dice_threshold=t.dice_threshold, draw_seconds=draw, check_seconds=t.check_seconds, slice_axis=axis)
        out.update({k: v.astype(float) for k, v in res.items()})
    if cfg.lesions.enabled:
        lz = cfg.lesions
        res = lesion_counts_per_class(pred, ref, classes, multi_label, rule=lz.rule, iou_threshold=lz.iou_threshold, connectivity=lz.connectivity)
        out.update({k: v.astype(float) for k, v in res.items()})
    return out


def _json_float(v: float) -> float | str | None:
    """NaN → null, ±inf → "inf"/"-inf" (JSON has neither)."""
    if math.isnan(v):
        return None
    if math.isinf(v):
        return "inf" if v > 0 else "-inf"
    return float(v)


def _stats(values: np.ndarray) -> dict[str, Any]:
    undefined = int(np.isnan(values).sum())
    v = values[~np.isnan(values)]
    if v.size == 0:
        return {"mean": None, "std": None, "median": None, "n": 0, "n_undefined": undefined}
    finite = np.isfinite(v).all()
    with np.errstate(invalid="ignore"):
        return {
            "mean": _json_float(float(v.mean())),
            "std": _json_float(float(v.std())) if finite else None,
            "median": _json_float(float(np.median(v))),
            "n": int(v.size),
            "n_undefined": undefined,
        }


def _pooled(rows: list[dict[str, Any]]) -> dict[str, Any]:
    counts = np.array([[sum(r[k] for r in rows) for k in ("tp", "fp", "fn")] + [0]], dtype=np.float64)
    m = metrics_from_counts(counts)
    return {k: _json_float(float(m[k][0])) for k in ("dice", "iou", "precision", "recall")} | {k: int(counts[0, i]) for i, k in enumerate(("tp", "fp", "fn"))}


def _lesion_summary(rows: list[dict[str, Any]]) -> dict[str, Any]:
    tp, fp, fn = (int(sum(r[k] for r in rows)) for k in ("lesion_tp", "lesion_fp", "lesion_fn"))
    prec = tp / (tp + fp) if tp + fp else None
    rec = tp / (tp + fn) if tp + fn else None
    f1 = 2 * tp / (2 * tp + fp + fn) if tp + fp + fn else None
    return {"tp": tp, "fp": fp, "fn": fn, "precision": prec, "recall": rec, "f1": f1}


def summarize(rows: list[dict[str, Any]], class_names: list[str], columns: Sequence[str] | None = None) -> dict[str, Any]:
    """Aggregate ``metrics.csv`` rows.

    * ``per_class[name][metric]``: mean, std, median over cases, ``n`` cases with a defined value
      and ``n_undefined`` left out (NaN under the empty-mask policy, never averaged in);
    * ``macro[metric]``: the mean over classes of the per-class means;
    * ``weighted[metric]``: the per-class means weighted by reference volume (voxels);
    * ``pooled[name]``: overlap from the counts summed over all cases (and ``"all"`` classes);
    * ``lesions`` and ``time_saved`` totals when those columns exist;
    * ``mean_dice`` (= ``macro.dice``) and ``per_case_mean_dice``.
    """
    columns = list(columns) if columns is not None else [m for m in METRIC_COLUMNS if rows and m in rows[0]]
    means = [m for m in MEAN_METRICS if m in columns]
    out: dict[str, Any] = {"per_class": {}}
    ref_vox: dict[str, float] = {}
    for name in class_names:
        sel = [r for r in rows if r["class"] == name]
        out["per_class"][name] = {m: _stats(np.array([r[m] for r in sel], dtype=float)) for m in means}
        out["per_class"][name]["n_empty_reference"] = int(sum(1 for r in sel if r["tp"] + r["fn"] == 0))
        ref_vox[name] = float(sum(r["tp"] + r["fn"] for r in sel))
    macro: dict[str, Any] = {}
    weighted: dict[str, Any] = {}
    for m in means:
        vals = [(out["per_class"][n][m]["mean"], ref_vox[n]) for n in class_names]
        vals = [(math.inf if v == "inf" else v, w) for v, w in vals if v is not None]
        macro[m] = _json_float(float(np.mean([v for v, _ in vals]))) if vals else None
        wsum = sum(w for _, w in vals)
        with np.errstate(invalid="ignore"):
            weighted[m] = _json_float(float(sum(v * w for v, w in vals if w > 0) / wsum)) if vals and wsum > 0 else None
    out["macro"] = macro
    out["weighted"] = weighted
    out["pooled"] = {n: _pooled([r for r in rows if r["class"] == n]) for n in class_names} | {"all": _pooled(rows)}
    if "lesion_tp" in columns:
        out["lesions"] = {n: _lesion_summary([r for r in rows if r["class"] == n]) for n in class_names} | {"all": _lesion_summary(rows)}
    if "time_saved_s" in columns:
        n_cases = len({r["case"] for r in rows}) or 1
        per = {}
        for n in class_names:
            sel = [r for r in rows if r["class"] == n]
            total = float(sum(r["time_saved_s"] for r in sel))
            slices = int(sum(r["slices_passed"] + r["slices_failed"] for r in sel))
            per[n] = {
                "total_s": total,
                "per_case_s": total / n_cases,
                "per_slice_s": total / slices if slices else None,
                "slices_passed": int(sum(r["slices_passed"] for r in sel)),
                "slices_failed": int(sum(r["slices_failed"] for r in sel)),
            }
        out["time_saved"] = per | {
            "all": {"total_s": float(sum(p["total_s"] for p in per.values())), "per_case_s": float(sum(p["per_case_s"] for p in per.values()))}
        }
    out["mean_dice"] = macro.get("dice")
    per_case: dict[str, list[float]] = {}
    for r in rows:
        if np.isfinite(r["dice"]):
            per_case.setdefault(r["case"], []).append(r["dice"])
    out["per_case_mean_dice"] = {c: float(np.mean(v)) for c, v in per_case.items()}
    return out


def _fmt(v: Any) -> Any:
    if isinstance(v, float):
        if math.isnan(v):
            return "nan"
        if math.isinf(v):
            return "inf" if v > 0 else "-inf"
        return int(v) if v.is_integer() and abs(v) < 2**53 else f"{v:.10g}"
    return v


def _csv(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(header)
    for r in rows:
        w.writerow([_fmt(v) for v in r])
    return buf.getvalue()


@dataclass
class _Accumulator:
    """Rows and pixel-level counts gathered case by case."""

    names: list[str]
    columns: list[str]
    id_columns: list[str]
    all_names: list[str]
    multi_label: bool
    rows: list[dict[str, Any]] = field(default_factory=list)
    matrix: np.ndarray | None = None
    ml_counts: np.ndarray | None = None

    def add(self, ids: dict[str, str], pred: np.ndarray, ref: np.ndarray, m: dict[str, np.ndarray]) -> None:
        for i, name in enumerate(self.names):
            self.rows.append({**ids, "class": name, **{k: float(m[k][i]) for k in self.columns}})
        if self.multi_label:
            c = confusion_counts(pred, ref, list(range(len(self.all_names))), multi_label=True)
            self.ml_counts = c if self.ml_counts is None else self.ml_counts + c
        else:
            c = confusion_matrix(pred, ref, len(self.all_names))
            self.matrix = c if self.matrix is None else self.matrix + c

    def write(self, tmp: Path, header: dict[str, Any], cfg: EvalConfig, source: dict[str, Any]) -> dict[str, Any]:
        write_text(
            tmp / "metrics.csv",
            _csv([*self.id_columns, "class", *self.columns], [[r[k] for k in [*self.id_columns, "class", *self.columns]] for r in self.rows]),
        )
        if self.multi_label:
            counts = self.ml_counts if self.ml_counts is not None else np.zeros((len(self.all_names), 4), dtype=np.int64)
            report = classification_report_from_counts(counts, self.all_names)
            write_text(tmp / "confusion_matrix.csv", _csv(["class", "tp", "fp", "fn", "tn"], [[n, *map(int, counts[i])] for i, n in enumerate(self.all_names)]))
        else:
            mat = self.matrix if self.matrix is not None else np.zeros((len(self.all_names),) * 2, dtype=np.int64)
            report = classification_report(mat, self.all_names)
            write_text(
                tmp / "confusion_matrix.csv", _csv(["reference \\ prediction", *self.all_names], [[n, *map(int, mat[i])] for i, n in enumerate(self.all_names)])
            )
        rep_rows = [
            [k, "", "", v["accuracy"], int(v["support"])] if "accuracy" in v else [k, v["precision"], v["recall"], v["f1"], int(v["support"])]
            for k, v in report.items()
        ]
        write_text(tmp / "classification_report.csv", _csv(["class", "precision", "recall", "f1", "support"], rep_rows))
        summary = {
            **header,
            "classes": self.names,
            "columns": self.columns,
            "conventions": conventions(cfg),
            **summarize(self.rows, self.names, self.columns),
            "classification_report": report,
        }
        write_json(tmp / "summary.json", summary)
        write_text(tmp / "eval_config.yaml", yaml.safe_dump({"eval": cfg.model_dump(mode="json"), "source": source}, sort_keys=False, allow_unicode=True))
        return summary


def conventions(cfg: EvalConfig) -> dict[str, str]:
    """One line per convention in force (recorded in ``summary.json``; see docs/metrics.md)."""
    s = cfg.surface
    out = {
        "overlap_empty": "class absent from prediction and reference: Dice/IoU/precision/recall/F1 undefined (NaN), "
        "left out of means and counted as n_undefined; "
        "present in only one: 0",
        "volumes": "mm³ (mm² in 2D) from the voxel spacing",
    }
    if s.enabled:
        out |= {
            "surface": f"hd95_mode={s.hd95_mode}, assd_mode={s.assd_mode}, nsd_mode={s.nsd_mode}, percentile={s.percentile:g}, tolerance_mm={s.tolerance_mm:g}",
            "surface_empty_both": "NaN, left out of means" if s.empty_both == "nan" else "best value: distances 0, NSD 1",
            "surface_empty_one": {"worst": "distances = image diagonal in mm", "inf": "distances = inf", "nan": "distances NaN, left out of means"}[s.empty_one]
            + "; NSD 0",
        }
    if cfg.time_saved.enabled:
        t = cfg.time_saved
        out["time_saved"] = f"per slice × class: Dice ≥ {t.dice_threshold:g} saves {t.draw_seconds:g} s, below costs {t.check_seconds:g} s, absent from both: 0"
    if cfg.lesions.enabled:
        lz = cfg.lesions
        out["lesions"] = f"rule={lz.rule}" + (f" (IoU ≥ {lz.iou_threshold:g})" if lz.rule == "iou" else "") + f", connectivity={lz.connectivity}"
    return out


def _dataset_of(run_dir: Path, info: dict[str, Any], config: Any) -> Dataset:
    from medseg.data.source import resolve_dataset

    path = info.get("dataset")
    if path and Path(path).is_dir():
        return load_dataset(path)
    return load_dataset(resolve_dataset(config))


def evaluate_run(
    run_dir: str | Path,
    split: str | None = None,
    checkpoint: str | None = None,
    progress: bool = True,
    save_predictions: bool = True,
    overrides: list[str] | None = None,
) -> Path:
    """Predict every case of ``split`` with the run's model and score it.

    Writes ``RUN/eval/<split>/`` atomically (layout in the module docstring).

    Args:
        run_dir: the run folder.
        split: train | val | test (default: the config's ``eval.split``).
        checkpoint: best | last (default: the config's ``eval.checkpoint``).
        progress: show a progress bar.
        save_predictions: keep ``predictions/<case>.npz``.
        overrides: config overrides for the evaluation settings, e.g. ``["eval.surface.hd95_mode=monai"]``.

    Returns:
        The evaluation folder.
    """
    from medseg.engine.inferer import Predictor, load_module

    run_dir = Path(run_dir)
    config, info = read_run(run_dir)
    if overrides:
        config = config_from_dict(config.dump(), overrides, source="--set")
    cfg = config.eval
    split = split or cfg.split
    checkpoint = checkpoint or cfg.checkpoint
    ds = _dataset_of(run_dir, info, config)
    if not (run_dir / "splits.json").is_file():
        raise RunError("run has no splits.json", where=run_dir, fix="re-run `medseg train`")
    splits = load_splits(run_dir / "splits.json", ds.patients)
    ids = select(splits, split, config.data.split.fold)
    if not ids:
        raise SplitError(f"the {split} set of this run is empty", where=run_dir / "splits.json", fix="evaluate another split (--split val)")
    try:
        module = load_module(run_dir, checkpoint, config.train.device)
    except MedsegError:
        raise
    except Exception as e:  # e.g. pickle.UnpicklingError from a truncated or foreign file
        raise RunError(
            f"checkpoint '{checkpoint}' is corrupt or unreadable ({type(e).__name__})",
            where=run_dir / "checkpoints",
            fix="retrain, or use the other checkpoint (--checkpoint last)",
        ) from None
    predictor = Predictor(module)
    scored = ds.info.foreground
    names = [ds.info.class_names[k] for k in scored]
    acc = _Accumulator(names, metric_columns(cfg), ["case", "patient"], ds.info.class_names, ds.info.multi_label)
    out = run_dir / "eval" / split
    t_total = 0.0
    t_metrics = 0.0
    with atomic_dir(out, overwrite=True) as tmp:
        if save_predictions:
            (tmp / "predictions").mkdir()
        for cid in track(ids, f"evaluate {split}", enabled=progress):
            case = ds.load_case(cid)
            t0 = time.perf_counter()
            pred = predictor.predict(case)
            t_total += time.perf_counter() - t0
            if save_predictions:
                with open(tmp / "predictions" / f"{cid}.npz", "wb") as fh:
                    np.savez_compressed(fh, label=pred, affine=case.affine)
            t0 = time.perf_counter()
            m = score_case(pred, case.label, scored, names, case.spacing, cfg, ds.info.multi_label)
            acc.add({"case": cid, "patient": case.patient_id}, pred, case.label, m)
            t_metrics += time.perf_counter() - t0
        header = {
            "run": str(run_dir),
            "split": split,
            "checkpoint": checkpoint,
            "n_cases": len(ids),
            "empty_policy": conventions(cfg)["overlap_empty"],
            "seconds_per_case": t_total / len(ids),
            "metric_seconds_per_case": t_metrics / len(ids),
        }
        summary = acc.write(tmp, header, cfg, {"run": str(run_dir), "split": split, "checkpoint": checkpoint})
    update_run(run_dir, **{f"eval_{split}": {"mean_dice": summary["mean_dice"], "n_cases": len(ids)}})
    return out


# ---------------------------------------------------------------- folders of masks


def case_name(path: Path) -> str | None:
    """The case name of a mask file (its name less a known suffix), or None for other files."""
    low = path.name.lower()
    for suf in MASK_SUFFIXES:
        if low.endswith(suf):
            return path.name[: -len(suf)]
    return None


def _list_masks(folder: Path, role: str) -> dict[str, Path]:
    if not folder.is_dir():
        raise DatasetError(f"{role} folder not found", where=folder, fix=f"give an existing folder of {role} masks")
    found: dict[str, Path] = {}
    for p in sorted(folder.iterdir()):
        name = case_name(p) if p.is_file() else None
        if name is None:
            continue
        if name in found:
            raise DatasetError(f"two {role} files for case {name!r} ({found[name].name}, {p.name})", where=folder, fix="keep one file per case")
        found[name] = p
    if not found:
        raise DatasetError(f"no {role} masks ({', '.join(MASK_SUFFIXES)})", where=folder, fix="point to a folder of mask files")
    return found


def read_mask(path: str | Path) -> tuple[np.ndarray, np.ndarray]:
    """Read a label mask with SimpleITK: (integer array in ITK's array order, affine).

    The affine maps an array index (in the returned axis order) to LPS millimetres, so two files
    can be compared for grid equality whatever their formats. PNG masks that hold only 0 and 255
    are read as binary (255 → 1).
    """
    import SimpleITK as sitk

    path = Path(path)
    try:
        img = sitk.ReadImage(str(path))
    except RuntimeError as e:
        raise DatasetError(f"unreadable mask ({str(e).strip().splitlines()[-1][:120]})", where=path, fix="give a NIfTI, NRRD, MHA or PNG label file") from None
    if img.GetNumberOfComponentsPerPixel() != 1:
        raise DatasetError(
            f"mask has {img.GetNumberOfComponentsPerPixel()} channels per pixel (colour image?)",
            where=path,
            fix="save the mask as a single-channel label image",
        )
    arr = sitk.GetArrayFromImage(img)
    if arr.dtype.kind == "f":
        if not np.all(np.isfinite(arr)) or not np.all(arr == np.round(arr)):
            raise DatasetError("mask holds non-integer values", where=path, fix="save class indices (0, 1, 2, ...), not probabilities")
    elif arr.dtype.kind not in "iub":
        raise DatasetError(f"mask has unsupported pixel type {arr.dtype}", where=path, fix="save an integer label image")
    arr = arr.astype(np.int32)
    if arr.min(initial=0) < 0:
        raise DatasetError("mask holds negative labels", where=path, fix="save class indices 0, 1, 2, ...")
    if path.name.lower().endswith(".png") and set(np.unique(arr).tolist()) <= {0, 255}:
        arr = (arr > 0).astype(np.int32)
    n = img.GetDimension()
    spacing = np.array(img.GetSpacing())[::-1]
    direction = np.array(img.GetDirection()).reshape(n, n)[::-1, ::-1]
    origin = np.array(img.GetOrigin())[::-1]
    affine = np.eye(n + 1)
    affine[:n, :n] = direction * spacing[None, :]
    affine[:n, n] = origin
    return arr, affine


def parse_labels(items: Sequence[str] | None) -> dict[int, str] | None:
    """``["1", "2=tumour"]`` or ``["1,2=tumour"]`` → ``{1: "1", 2: "tumour"}``; None = every value found."""
    if not items:
        return None
    out: dict[int, str] = {}
    for item in items:
        for part in str(item).split(","):
            part = part.strip()
            if not part:
                continue
            value, _, name = part.partition("=")
            try:
                v = int(value)
            except ValueError:
                raise ConfigError(
                    f"label {part!r} is not an integer value (optionally VALUE=NAME)",
                    where="--labels",
                    fix="write e.g. --labels 1,2 or --labels 1=liver,2=tumour",
                ) from None
            if v <= 0:
                raise ConfigError(f"label {v} is the background or negative", where="--labels", fix="list foreground values only (1, 2, ...)")
            out[v] = name.strip() or str(v)
    if len(set(out.values())) != len(out):
        raise ConfigError("two labels share a name", where="--labels", fix="give each label its own name")
    return out


def _check_grid(pred: np.ndarray, paff: np.ndarray, ref: np.ndarray, raff: np.ndarray, ppath: Path, rpath: Path) -> None:
    if pred.shape != ref.shape:
        raise DatasetError(
            f"prediction and reference are on different grids: shape {pred.shape} vs {ref.shape} ({rpath.name})",
            where=ppath,
            fix="resample the prediction onto the reference grid",
        )
    if paff.shape != raff.shape or not np.allclose(paff, raff, rtol=0, atol=GRID_ATOL_MM):
        diff = float(np.abs(paff - raff).max()) if paff.shape == raff.shape else float("inf")
        raise DatasetError(
            f"prediction and reference are on different grids: spacing/origin/direction differ by up to {diff:.4g} mm ({rpath.name})",
            where=ppath,
            fix="write the prediction with the reference's geometry",
        )


def evaluate_folders(
    pred_dir: str | Path,
    ref_dir: str | Path,
    labels: Sequence[str] | dict[int, str] | None = None,
    out: str | Path | None = None,
    config: EvalConfig | None = None,
    progress: bool = True,
) -> Path:
    """Score a folder of predicted masks against a folder of reference masks.

    Files are matched by case name (the file name less its suffix: ``.nii.gz``, ``.nii``, ``.nrrd``,
    ``.nhdr``, ``.mha``, ``.mhd``, ``.png``); every reference needs a prediction, predictions
    without a reference are listed in ``summary.json`` and skipped. Pairs must share one grid
    (shape, spacing, origin, direction within 1e-3 mm). Masks hold class indices; the label value
    0 is the background.

    Args:
        pred_dir: predicted masks.
        ref_dir: reference masks.
        labels: label values to score (``["1", "2=tumour"]`` or ``{1: "liver"}``); default every
            non-zero value found in either folder.
        out: output folder (default ``<pred_dir>_eval`` beside ``pred_dir``).
        config: evaluation settings (default :class:`~medseg.config.EvalConfig`).
        progress: show a progress bar.

    Returns:
        The output folder (layout in the module docstring).
    """
    pred_dir, ref_dir = Path(pred_dir), Path(ref_dir)
    cfg = config or EvalConfig()
    preds = _list_masks(pred_dir, "prediction")
    refs = _list_masks(ref_dir, "reference")
    missing = sorted(set(refs) - set(preds))
    if missing:
        shown = ", ".join(missing[:3]) + (f" and {len(missing) - 3} more" if len(missing) > 3 else "")
        raise DatasetError(
            f"{len(missing)} reference case(s) have no prediction: {shown}", where=pred_dir, fix="predict every reference case (files are matched by name)"
        )
    names_ = sorted(refs)
    label_map = labels if isinstance(labels, dict) else parse_labels(labels)
    if label_map is None:
        values: set[int] = set()
        for n in track(names_, "labels", enabled=progress):
            for p in (preds[n], refs[n]):
                values |= set(np.unique(read_mask(p)[0]).tolist())
        label_map = {v: str(v) for v in sorted(values - {0})}
        if not label_map:
            raise DatasetError("every mask is empty (only label 0)", where=ref_dir, fix="give the label values to score with --labels")
    values_ = sorted(label_map)
    names = [label_map[v] for v in values_]
    # compact label maps 0..K: the listed values become 1..K, anything else the background
    lut_size = max(values_) + 1
    out_dir = Path(out) if out is not None else pred_dir.parent / f"{pred_dir.name}_eval"
    acc = _Accumulator(names, metric_columns(cfg), ["case"], ["background", *names], False)
    classes = list(range(1, len(values_) + 1))
    t_metrics = 0.0
    with atomic_dir(out_dir, overwrite=True) as tmp:
        for n in track(names_, "evaluate", enabled=progress):
            pred, paff = read_mask(preds[n])
            ref, raff = read_mask(refs[n])
            _check_grid(pred, paff, ref, raff, preds[n], refs[n])
            size = max(lut_size, int(pred.max(initial=0)) + 1, int(ref.max(initial=0)) + 1)
            lut = np.zeros(size, dtype=np.int16)
            lut[values_] = classes
            p, r = lut[pred], lut[ref]
            spacing = tuple(float(v) for v in np.linalg.norm(raff[:-1, :-1], axis=0))
            t0 = time.perf_counter()
            m = score_case(p, r, classes, names, spacing, cfg)
            acc.add({"case": n}, p, r, m)
            t_metrics += time.perf_counter() - t0
        header = {
            "pred": str(pred_dir),
            "ref": str(ref_dir),
            "n_cases": len(names_),
            "labels": {str(v): label_map[v] for v in values_},
            "unmatched_predictions": sorted(set(preds) - set(refs)),
            "empty_policy": conventions(cfg)["overlap_empty"],
            "metric_seconds_per_case": t_metrics / len(names_),
        }
        acc.write(tmp, header, cfg, {"pred": str(pred_dir), "ref": str(ref_dir), "labels": {str(v): label_map[v] for v in values_}})
    return out_dir
