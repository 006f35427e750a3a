"""Score segmentations: per case × per class metrics → ``metrics.csv`` + ``summary.json``.

Two entry points write the same layout:

* :func:`evaluate_run` predicts every case of a split with a trained run and scores it
  (``RUN/eval/<split>/``);
* :func:`evaluate_folders` scores any two folders of masks (NIfTI, NRRD, MHA, PNG) matched by case
  name, so predictions made by other tools are judged by the same metrics.

Output folder (written atomically)::

    metrics.csv                 case, class, every metric (one row per case × scored class)
    summary.json                mean ± std per class, macro and voxel-weighted means, pooled counts,
                                lesion and time-saved totals, pixel accuracy, classification report,
                                conventions; runs: the test loss (the run's loss per case, mean ± std)
    classification_report.csv   pixel-level precision / recall / F1 / support per class + averages
    confusion_matrix.csv        voxel counts, rows = reference, columns = prediction
    eval_config.yaml            the evaluation settings used (metric modes, tolerances, policies)
    predictions/<case>.npz      (runs only) the predicted label map and its affine

Conventions and empty-mask policies are in ``docs/metrics.md``.
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from medseg.config import EvalConfig, config_from_dict
from medseg.core.atomic import atomic_dir, write_text
from medseg.core.errors import ConfigError, DatasetError, MedsegError, RunError, SplitError
from medseg.core.progress import track
from medseg.data.labelset import LabelSet, config_regions, region_channels, region_values
from medseg.data.labelset import parse_labels as parse_label_set
from medseg.data.store import DatasetInfo
from medseg.io import read_mask
from medseg.metrics import nnunet
from medseg.metrics.nnunet import Key, key_name
from medseg.runs import PREDICTIONS_DIR, SPLITS_FILE, checkpoints_dir, eval_dir, read_run, run_dataset, save_prediction, split_ids, update_run
from medseg.workflows.masks import check_mask_grid, list_masks, parse_labels
from medseg.workflows.scoring import MetricTable, conventions, metric_columns, score_case


def evaluate_run(
    run_dir: str | Path,
    *,
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
    from medseg.engine.case_loss import probability_loss
    from medseg.engine.load import load_inferer
    from medseg.engine.module import split_ignored

    run_dir = Path(run_dir)
    config, info = read_run(run_dir)
    if overrides:
        config = config_from_dict(config.dump(), overrides, source="--set")
    cfg = config.eval
    split = split or cfg.split
    checkpoint = checkpoint or cfg.checkpoint
    ds = run_dataset(run_dir, info, config)
    ignore = ds.info.ignore_label
    ids = split_ids(run_dir, ds, split, config.data.split.fold)
    if not ids:
        raise SplitError(f"the {split} set of this run is empty", where=run_dir / SPLITS_FILE, fix="evaluate another split (--split val)")
    try:
        inferer = load_inferer(run_dir, checkpoint=checkpoint, device=config.train.device)
    except MedsegError:
        raise
    except Exception as e:  # e.g. pickle.UnpicklingError from a truncated or foreign file
        raise RunError(
            f"checkpoint '{checkpoint}' is corrupt or unreadable ({type(e).__name__})",
            where=checkpoints_dir(run_dir),
            fix="retrain, or use the other checkpoint (--checkpoint last)",
        ) from None
    scored = ds.info.foreground
    names = [ds.info.class_names[k] for k in scored]
    all_names = ds.info.class_names[: ds.info.n_outputs] if ds.info.multi_label else ds.info.class_names
    acc = MetricTable(names, metric_columns(cfg), ["case", "patient"], all_names, ds.info.multi_label, loss_name=config.train.loss)
    out = eval_dir(run_dir, split)
    nn_keys = run_keys(ds.info)
    nn_cases = []
    t_total = 0.0
    t_metrics = 0.0
    with atomic_dir(out, overwrite=True) as tmp:
        if save_predictions:
            (tmp / PREDICTIONS_DIR).mkdir()
        for cid in track(ids, f"evaluate {split}", enabled=progress):
            case = ds.load_case(cid)
            t0 = time.perf_counter()
            pred = inferer.predict(case)
            t_total += time.perf_counter() - t0
            if save_predictions:
                save_prediction(tmp / PREDICTIONS_DIR, cid, pred, case.affine)
            if cfg.loss:  # the test loss: the run's loss function on this case (not counted in the latency)
                acc.losses[cid] = probability_loss(inferer.nets[0], inferer.probabilities(case), case)
            t0 = time.perf_counter()
            ref, valid = split_ignored(case.label, ignore, ds.info.multi_label)
            ignored = None if valid is None else ~valid
            m = score_case(pred, ref, scored, names, case.spacing, cfg=cfg, multi_label=ds.info.multi_label, ignore=ignored)
            acc.add({"case": cid, "patient": case.patient_id}, pred, ref, m, ignored)
            files = (str(ds.case_path(cid)), f"{PREDICTIONS_DIR}/{cid}.npz" if save_predictions else cid)
            if ds.info.multi_label:
                nn_cases.append((*files, nnunet.channel_metrics(pred, ref, nn_keys, valid)))
            else:
                nn_cases.append((*files, nnunet.case_metrics(pred, case.label, nn_keys, ignore)))
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
        write_text(tmp / nnunet.FILE, nnunet.dumps(nnunet.summary(nn_cases)))
    update_run(run_dir, **{f"eval_{split}": {"mean_dice": summary["mean_dice"], "n_cases": len(ids)}})
    return out


# ---------------------------------------------------------------- folders of masks


def evaluate_folders(
    pred_dir: str | Path,
    ref_dir: str | Path,
    *,
    labels: Sequence[str] | dict[int, str] | None = None,
    out: str | Path | None = None,
    config: EvalConfig | None = None,
    progress: bool = True,
    dataset_json: str | Path | None = None,
    ignore_label: int | None = None,
    declared: tuple[dict[str, Any], Any] | None = None,
) -> Path:
    """Score a folder of predicted masks against a folder of reference masks.

    Files are matched by case name (the file name less its suffix: ``.nii.gz``, ``.nii``, ``.nrrd``,
    ``.nhdr``, ``.mha``, ``.mhd``, ``.gipl``, ``.png``, ``.bmp``, ``.tif``); every reference needs a
    prediction, predictions without a reference are listed in ``summary.json`` and skipped; other
    files (an nnU-Net prediction folder's ``.npz``, ``.pkl``, ``.json``) are passed over. Pairs must
    share one grid (shape, spacing, origin, direction within 1e-3 mm). Masks hold label values;
    0 is the background. Besides ``summary.json``, nnU-Net's own ``summary.json`` layout is written
    as ``summary_nnunet.json`` (:mod:`medseg.metrics.nnunet`).

    Args:
        pred_dir: predicted masks.
        ref_dir: reference masks.
        labels: label values to score (``["1", "2=tumour"]`` or ``{1: "liver"}``); default the
            labels of ``dataset_json``, else every non-zero value found in either folder.
        out: output folder (default ``<pred_dir>_eval`` beside ``pred_dir``).
        config: evaluation settings (default :class:`~medseg.config.EvalConfig`).
        progress: show a progress bar.
        dataset_json: an nnU-Net / MSD ``dataset.json`` declaring the labels, regions
            (scored per region) and ignore label; default ``<pred_dir>/dataset.json`` if there is one
            (nnU-Net writes it into its prediction folders).
        ignore_label: a label value whose reference voxels are left out of every metric (default:
            the ``ignore`` label of ``dataset_json``).
        declared: a config's ``(data.regions, data.regions_class_order)``: score these regions (checked
            as a ``dataset.json``'s are), in place of any the ``dataset_json`` declares.

    Returns:
        The output folder (layout in the module docstring).
    """
    pred_dir, ref_dir = Path(pred_dir), Path(ref_dir)
    cfg = config or EvalConfig()
    preds = list_masks(pred_dir, "prediction")
    refs = list_masks(ref_dir, "reference")
    missing = sorted(set(refs) - set(preds))
    if missing:
        shown = ", ".join(missing[:3]) + (f" and {len(missing) - 3} more" if len(missing) > 3 else "")
        raise DatasetError(
            f"{len(missing)} reference case(s) have no prediction: {shown}", where=pred_dir, fix="predict every reference case (files are matched by name)"
        )
    names_ = sorted(refs)
    spec = read_label_spec(pred_dir, dataset_json)
    ignore = ignore_label if ignore_label is not None else (spec.ignore if spec else None)
    regions = dict(spec.regions) if spec is not None and spec.regions and labels is None else {}
    if declared is not None and declared[0] is not None:
        regions = config_regions(*declared, known=None)[0]
    label_map = labels if isinstance(labels, dict) else parse_labels(labels)
    if label_map is None and spec is not None and not regions:
        label_map = {v: n for v, n in spec.names.items() if v not in (0, ignore)}
    if label_map is None and not regions:
        values: set[int] = set()
        for n in track(names_, "labels", enabled=progress):
            for p in (preds[n], refs[n]):
                values |= set(np.unique(read_mask(p)[0]).tolist())
        label_map = {v: str(v) for v in sorted(values - {0, ignore})}
        if not label_map:
            raise DatasetError("every mask is empty (only label 0)", where=ref_dir, fix="give the label values to score with --labels")
    if ignore is not None and label_map and ignore in label_map:
        raise ConfigError(f"label {ignore} is both scored and the ignore label", where="--labels", fix="leave the ignore label out of --labels")
    if regions:
        keys: list[Key] = list(regions.values())
        names = list(regions)
        acc = MetricTable(names, metric_columns(cfg), ["case"], names, True)
        shown_labels = {key_name(k): n for n, k in regions.items()}
    else:
        assert label_map is not None
        keys = sorted(label_map)
        names = [label_map[v] for v in keys]  # type: ignore[index]
        acc = MetricTable(names, metric_columns(cfg), ["case"], ["background", *names], False)
        shown_labels = {str(v): label_map[v] for v in keys}  # type: ignore[index]
    out_dir = Path(out) if out is not None else pred_dir.parent / f"{pred_dir.name}_eval"
    t_metrics = 0.0
    nn_cases = []
    with atomic_dir(out_dir, overwrite=True) as tmp:
        for n in track(names_, "evaluate", enabled=progress):
            pred, paff = read_mask(preds[n])
            ref, raff = read_mask(refs[n])
            pred = check_mask_grid(pred, paff, ref, raff, preds[n], rpath=refs[n])
            spacing = tuple(float(v) for v in np.linalg.norm(raff[:-1, :-1], axis=0))
            ignored = None if ignore is None else ref == ignore
            t0 = time.perf_counter()
            if regions:
                p, r = region_channels(pred, keys), region_channels(ref, keys)
                m = score_case(p, r, list(range(len(keys))), names, spacing, cfg=cfg, multi_label=True, ignore=ignored)
            else:
                p, r = compact(pred, keys), compact(ref, keys)
                m = score_case(p, r, list(range(1, len(keys) + 1)), names, spacing, cfg=cfg, ignore=ignored)
            acc.add({"case": n}, p, r, m, ignored)
            nn_cases.append((str(refs[n]), str(preds[n]), nnunet.case_metrics(pred, ref, keys, ignore)))
            t_metrics += time.perf_counter() - t0
        header = {
            "pred": str(pred_dir),
            "ref": str(ref_dir),
            "n_cases": len(names_),
            "labels": shown_labels,
            **({"regions": {n: list(region_values(k)) for n, k in regions.items()}} if regions else {}),
            **({"ignore_label": ignore} if ignore is not None else {}),
            "unmatched_predictions": sorted(set(preds) - set(refs)),
            "empty_policy": conventions(cfg)["overlap_empty"],
            "metric_seconds_per_case": t_metrics / len(names_),
        }
        acc.write(tmp, header, cfg, {"pred": str(pred_dir), "ref": str(ref_dir), "labels": shown_labels})
        write_text(tmp / nnunet.FILE, nnunet.dumps(nnunet.summary(nn_cases)))
    return out_dir


def run_keys(info: DatasetInfo) -> list[Key]:
    """nnU-Net's keys of a data set's scored classes: the class index (= label value), or per channel of
    multi-label data its region as declared (``labels``: ``3`` or ``(3,)``), else the channel number + 1."""
    if not info.multi_label:
        return list(info.foreground)
    keys: list[Key] = []
    for k in info.foreground:
        key = info.classes[k].key
        keys.append(k + 1 if key is None else key)
    return keys


def compact(seg: np.ndarray, values: Sequence[int]) -> np.ndarray:
    """A label map with ``values`` renumbered 1..K and every other value the background."""
    lut = np.zeros(max(max(values, default=0), int(seg.max(initial=0))) + 1, dtype=np.int16)
    lut[list(values)] = np.arange(1, len(values) + 1)
    return lut[np.clip(seg, 0, None)]


def read_label_spec(pred_dir: Path, dataset_json: str | Path | None) -> LabelSet | None:
    """The labels, regions and ignore label of an nnU-Net / MSD ``dataset.json`` (given, or found in ``pred_dir``)."""
    path = Path(dataset_json) if dataset_json is not None else pred_dir / "dataset.json"
    if dataset_json is None and not path.is_file():
        return None
    try:
        meta = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise DatasetError("dataset.json not found", where=path, fix="give the data set's dataset.json (nnU-Net / MSD format)") from None
    except json.JSONDecodeError as e:
        raise DatasetError(f"invalid JSON ({e.msg} at line {e.lineno})", where=path, fix="repair the file") from None
    if not isinstance(meta, dict) or "labels" not in meta:
        raise DatasetError("no 'labels' in dataset.json", where=path, fix='declare the labels, e.g. "labels": {"background": 0, "liver": 1}')
    return parse_label_set(meta["labels"], meta.get("regions_class_order"), where=path)
