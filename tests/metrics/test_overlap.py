"""Overlap metrics, confusion matrix and classification report against MedPy, MONAI and scikit-learn."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy import ndimage

from medseg.metrics.overlap import (
    classification_report,
    classification_report_from_counts,
    confusion_counts,
    confusion_matrix,
    metrics_from_counts,
    multilabel_counts,
    overlap_metrics,
)

medpy_binary = pytest.importorskip("medpy.metric.binary")
monai_metrics = pytest.importorskip("monai.metrics")
skm = pytest.importorskip("sklearn.metrics")


def _pairs(n: int, seed: int = 1) -> list[tuple[np.ndarray, np.ndarray]]:
    rng = np.random.default_rng(seed)
    out = []
    while len(out) < n:
        shape = (16, 20) if len(out) % 2 else (7, 12, 10)
        a = ndimage.gaussian_filter(rng.standard_normal(shape), 1.2) > rng.uniform(-0.2, 0.4)
        b = ndimage.gaussian_filter(rng.standard_normal(shape), 1.2) > rng.uniform(-0.2, 0.4)
        if a.any() and b.any():
            out.append((a, b))
    return out


PAIRS = _pairs(110)


def test_dice_equals_medpy_and_monai_on_random_pairs() -> None:
    dm = monai_metrics.DiceMetric(include_background=False, reduction="none")
    for a, b in PAIRS:
        m = overlap_metrics(a.astype(np.int16), b.astype(np.int16), [1])
        assert m["dice"][0] == pytest.approx(medpy_binary.dc(a, b), abs=1e-6)
        assert m["iou"][0] == pytest.approx(medpy_binary.jc(a, b), abs=1e-6)
        assert m["precision"][0] == pytest.approx(medpy_binary.precision(a, b), abs=1e-6)
        assert m["recall"][0] == pytest.approx(medpy_binary.recall(a, b), abs=1e-6)
        assert m["specificity"][0] == pytest.approx(medpy_binary.specificity(a, b), abs=1e-6)
        assert m["f1"][0] == m["dice"][0]
        oh = [torch.as_tensor(np.stack([~x, x])[None].astype(np.float32)) for x in (a, b)]
        assert m["dice"][0] == pytest.approx(float(dm(oh[0], oh[1])[0, 0]), abs=1e-6)


def test_volumes_and_empty_policy() -> None:
    pred = np.zeros((4, 5), np.int16)
    ref = np.zeros((4, 5), np.int16)
    pred[0, :2] = 1
    ref[0, :1] = 1
    ref[3, 3] = 2
    m = overlap_metrics(pred, ref, [1, 2, 3], spacing=(0.5, 2.0))
    assert m["volume_pred"][0] == 2.0 and m["volume_ref"][0] == 1.0
    assert m["volume_diff"][0] == 1.0 and m["rel_volume_diff"][0] == 1.0
    # class 2: reference only → 0, not NaN
    assert m["dice"][1] == 0.0 and m["recall"][1] == 0.0 and m["precision"][1] == 0.0
    # class 3: absent from both → undefined
    assert all(math.isnan(m[k][2]) for k in ("dice", "iou", "precision", "recall", "f1", "rel_volume_diff"))
    assert m["specificity"][2] == 1.0


def test_counts_shape_mismatch() -> None:
    with pytest.raises(ValueError, match="shape"):
        confusion_counts(np.zeros((2, 2)), np.zeros((2, 3)), [1])


def test_confusion_matrix_and_report_match_sklearn() -> None:
    rng = np.random.default_rng(3)
    for _ in range(20):
        ref = rng.integers(0, 4, (9, 11))
        pred = np.where(rng.random(ref.shape) < 0.6, ref, rng.integers(0, 4, ref.shape))
        pred[pred == 3] = 2  # class 3 never predicted: zero-division path
        names = ["bg", "a", "b", "c"]
        mat = confusion_matrix(pred, ref, 4)
        np.testing.assert_array_equal(mat, skm.confusion_matrix(ref.ravel(), pred.ravel(), labels=range(4)))
        ours = classification_report(mat, names)
        theirs = skm.classification_report(ref.ravel(), pred.ravel(), labels=range(4), target_names=names, output_dict=True, zero_division=0)
        for k in [*names, "macro avg", "weighted avg"]:
            for m in ("precision", "recall", "support"):
                assert ours[k][m] == pytest.approx(theirs[k][m], abs=1e-12)
            assert ours[k]["f1"] == pytest.approx(theirs[k]["f1-score"], abs=1e-12)
        assert ours["accuracy"]["accuracy"] == pytest.approx(theirs["accuracy"])


def test_multilabel_report_matches_sklearn() -> None:
    rng = np.random.default_rng(4)
    pred = rng.random((3, 10, 12)) > 0.5
    ref = rng.random((3, 10, 12)) > 0.6
    ours = classification_report_from_counts(multilabel_counts(pred, ref), ["x", "y", "z"])
    theirs = skm.classification_report(ref.reshape(3, -1).T, pred.reshape(3, -1).T, target_names=["x", "y", "z"], output_dict=True, zero_division=0)
    for k in ("x", "y", "z", "micro avg", "macro avg", "weighted avg"):
        assert ours[k]["precision"] == pytest.approx(theirs[k]["precision"])
        assert ours[k]["recall"] == pytest.approx(theirs[k]["recall"])
        assert ours[k]["f1"] == pytest.approx(theirs[k]["f1-score"])


def test_confusion_matrix_rejects_unknown_values() -> None:
    with pytest.raises(ValueError, match="outside"):
        confusion_matrix(np.array([0, 5]), np.array([0, 1]), 3)


def test_metrics_from_counts_keeps_training_keys() -> None:
    m = metrics_from_counts(np.array([[3, 1, 1, 5]]))
    assert m["dice"][0] == pytest.approx(0.75)
    assert {"dice", "iou", "precision", "recall", "specificity", "volume_pred", "volume_ref"} <= set(m)
