"""Lesion-wise detection: connected components of prediction and reference matched as objects.

Overlap rules (docs/metrics.md):

* ``"overlap"`` — a reference lesion is detected (TP) when at least one of its voxels is predicted
  (any predicted component touches it); an undetected reference lesion is a FN; a predicted
  component touching no reference lesion is a FP. Several reference lesions covered by one
  predicted blob are all TP (the count follows the reference).
* ``"iou"`` — one-to-one matching: pairs are taken greedily in decreasing IoU while IoU ≥
  ``iou_threshold``; matched pairs are TP, unmatched reference lesions FN, unmatched predicted
  components FP.

Components are found with ``scipy.ndimage.label`` under face (``"face"``: 6 in 3D, 4 in 2D) or full
(``"full"``: 26 in 3D, 8 in 2D) connectivity.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import numpy as np
from scipy import ndimage

Rule = Literal["overlap", "iou"]
Connectivity = Literal["face", "full"]
LESION_METRICS = ("lesion_tp", "lesion_fp", "lesion_fn", "n_ref_lesions", "n_pred_lesions")


def label_components(mask: np.ndarray, connectivity: Connectivity = "full") -> tuple[np.ndarray, int]:
    """Connected components of a boolean mask: (label image, number of components)."""
    structure = ndimage.generate_binary_structure(mask.ndim, mask.ndim if connectivity == "full" else 1)
    lab, n = ndimage.label(mask, structure=structure)
    return lab, int(n)


def lesion_counts(
    pred: np.ndarray, ref: np.ndarray, *, rule: Rule = "overlap", iou_threshold: float = 0.1, connectivity: Connectivity = "full"
) -> dict[str, int]:
    """TP, FP, FN lesions of two boolean masks, and the number of components on each side.

    Args:
        pred, ref: boolean masks of equal shape.
        rule: ``"overlap"`` or ``"iou"`` (see the module docstring).
        iou_threshold: smallest IoU of a match under ``rule="iou"``.
        connectivity: ``"face"`` or ``"full"``.
    """
    if rule not in ("overlap", "iou"):
        raise ValueError(f"rule must be 'overlap' or 'iou', got {rule!r}")
    lp, n_p = label_components(np.asarray(pred, dtype=bool), connectivity)
    lr, n_r = label_components(np.asarray(ref, dtype=bool), connectivity)
    both = (lp > 0) & (lr > 0)
    # intersection sizes of every (ref, pred) component pair that touches
    pairs = lr[both].astype(np.int64) * (n_p + 1) + lp[both]
    keys, inter = np.unique(pairs, return_counts=True)
    ri, pi = keys // (n_p + 1), keys % (n_p + 1)
    if rule == "overlap":
        tp = int(np.unique(ri).size)
        fp = n_p - int(np.unique(pi).size)
        return {"lesion_tp": tp, "lesion_fp": fp, "lesion_fn": n_r - tp, "n_ref_lesions": n_r, "n_pred_lesions": n_p}
    size_r = np.bincount(lr.ravel(), minlength=n_r + 1)
    size_p = np.bincount(lp.ravel(), minlength=n_p + 1)
    iou = inter / (size_r[ri] + size_p[pi] - inter)
    used_r: set[int] = set()
    used_p: set[int] = set()
    for j in np.argsort(-iou, kind="stable"):
        if iou[j] < iou_threshold:
            break
        a, b = int(ri[j]), int(pi[j])
        if a not in used_r and b not in used_p:
            used_r.add(a)
            used_p.add(b)
    tp = len(used_r)
    return {"lesion_tp": tp, "lesion_fp": n_p - tp, "lesion_fn": n_r - tp, "n_ref_lesions": n_r, "n_pred_lesions": n_p}


def lesion_counts_per_class(pred: np.ndarray, ref: np.ndarray, classes: Sequence[int], multi_label: bool = False, **kwargs: object) -> dict[str, np.ndarray]:
    """:func:`lesion_counts` for each class; arrays of length ``len(classes)`` per count."""
    out = {m: np.zeros(len(classes), dtype=np.int64) for m in LESION_METRICS}
    for i, k in enumerate(classes):
        p = pred[k].astype(bool) if multi_label else pred == k
        r = ref[k].astype(bool) if multi_label else ref == k
        res = lesion_counts(p, r, **kwargs)  # type: ignore[arg-type]
        for m in LESION_METRICS:
            out[m][i] = res[m]
    return out
