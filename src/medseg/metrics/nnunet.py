"""nnU-Net's ``summary.json``: per case and per label (or region) Dice, IoU, TP, FP, FN, TN, n_pred, n_ref.

medseg writes this file as ``summary_nnunet.json`` beside its own ``summary.json`` so that scripts
written for nnU-Net (v2, ``nnunetv2.evaluation.evaluate_predictions``) read medseg's results
unchanged. The rules are nnU-Net's (checked against files written by nnU-Net 2.8.1 in
``tests/assets/nnunet``):

* a key is a label value (``"1"``) or a region, the tuple of label values whose union it is
  (``"(1, 2, 3)"``, ``"(3,)"``), written as Python's ``str`` of it;
* voxels whose **reference** holds the ignore label are left out of TP, FP, FN and TN;
* Dice = 2TP / (2TP + FP + FN) and IoU = TP / (TP + FP + FN), ``NaN`` when TP + FP + FN = 0;
  ``n_pred`` = TP + FP, ``n_ref`` = TP + FN;
* ``mean``: per key and metric ``np.nanmean`` over cases (counts become floats);
  ``foreground_mean``: per metric ``np.mean`` over the keys of ``mean`` (so one key that is
  ``NaN`` in every case makes it ``NaN``);
* JSON with sorted keys, indent 4, ``NaN`` as the bare token ``NaN``.

Written here because nnU-Net is not a dependency of medseg (it pins its own torch and
preprocessing stack) and its function reads files itself; this one takes arrays.
"""

from __future__ import annotations

import json
import warnings
from collections.abc import Sequence
from typing import Any

import numpy as np

#: a label value or a region (the label values whose union it is)
Key = int | tuple[int, ...]
METRICS = ("Dice", "FN", "FP", "IoU", "TN", "TP", "n_pred", "n_ref")
FILE = "summary_nnunet.json"


def key_name(key: Key) -> str:
    """The key as nnU-Net writes it: ``"1"``, ``"(1, 2, 3)"``, ``"(3,)"``."""
    return str(int(key)) if isinstance(key, int | np.integer) else str(tuple(int(v) for v in key))


def key_mask(seg: np.ndarray, key: Key) -> np.ndarray:
    """Voxels of a label map that belong to a label (``seg == key``) or a region (any of its labels)."""
    return seg == key if isinstance(key, int | np.integer) else np.isin(seg, list(key))


def counts_metrics(tp: int, fp: int, fn: int, tn: int) -> dict[str, Any]:
    """The eight numbers of one case × key, from its voxel counts."""
    den = tp + fp + fn
    return {
        "Dice": 2 * tp / (2 * tp + fp + fn) if den else float("nan"),
        "IoU": tp / den if den else float("nan"),
        "FP": fp,
        "TP": tp,
        "FN": fn,
        "TN": tn,
        "n_pred": fp + tp,
        "n_ref": fn + tp,
    }


def mask_metrics(pred: np.ndarray, ref: np.ndarray, valid: np.ndarray | None = None) -> dict[str, Any]:
    """The eight numbers of two boolean masks, counting only voxels where ``valid`` (default: all)."""
    if valid is None:
        valid = np.ones(ref.shape, dtype=bool)
    tp = int(np.count_nonzero(pred & ref & valid))
    fp = int(np.count_nonzero(pred & ~ref & valid))
    fn = int(np.count_nonzero(~pred & ref & valid))
    tn = int(np.count_nonzero(~pred & ~ref & valid))
    return counts_metrics(tp, fp, fn, tn)


def case_metrics(pred: np.ndarray, ref: np.ndarray, keys: Sequence[Key], ignore_label: int | None = None) -> dict[str, dict[str, Any]]:
    """Per key the eight numbers of one case, from two label maps (nnU-Net's ``compute_metrics``)."""
    if pred.shape != ref.shape:
        raise ValueError(f"prediction shape {pred.shape} != reference shape {ref.shape}")
    valid = None if ignore_label is None else ref != ignore_label
    return {key_name(k): mask_metrics(key_mask(pred, k), key_mask(ref, k), valid) for k in keys}


def channel_metrics(pred: np.ndarray, ref: np.ndarray, keys: Sequence[Key], valid: np.ndarray | None = None) -> dict[str, dict[str, Any]]:
    """Per key the eight numbers of one case, from boolean stacks ``(K, ...)`` (channel k is key k)."""
    if pred.shape != ref.shape:
        raise ValueError(f"prediction shape {pred.shape} != reference shape {ref.shape}")
    return {key_name(k): mask_metrics(np.asarray(pred[i], dtype=bool), np.asarray(ref[i], dtype=bool), valid) for i, k in enumerate(keys)}


def summary(cases: Sequence[tuple[str, str, dict[str, dict[str, Any]]]]) -> dict[str, Any]:
    """``{"metric_per_case", "mean", "foreground_mean"}`` from ``(reference_file, prediction_file, metrics)`` per case."""
    per_case = [{"metrics": m, "prediction_file": p, "reference_file": r} for r, p, m in cases]
    keys = list(cases[0][2]) if cases else []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # nanmean of all-NaN is NaN, as in nnU-Net
        mean = {k: {m: float(np.nanmean([c[2][k][m] for c in cases])) for m in METRICS} for k in keys}
        fg = {m: float(np.mean([mean[k][m] for k in keys])) for m in METRICS}
    return {"foreground_mean": fg, "mean": mean, "metric_per_case": per_case}


def dumps(obj: dict[str, Any]) -> str:
    """JSON as nnU-Net writes it: sorted keys, indent 4, ``NaN`` for undefined values."""
    return json.dumps(obj, sort_keys=True, indent=4)
