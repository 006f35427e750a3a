"""Time saved per slice and lesion-wise detection counts."""

from __future__ import annotations

import math

import numpy as np
import pytest

from medseg.metrics.clinical import slice_dice, time_saved
from medseg.metrics.lesions import lesion_counts, lesion_counts_per_class


def test_slice_dice_along_each_axis() -> None:
    ref = np.zeros((3, 4, 5), bool)
    ref[0, :2, :2] = True
    pred = ref.copy()
    pred[0, 0, 0] = False
    d = slice_dice(pred, ref, 0)
    assert d[0] == pytest.approx(2 * 3 / 7) and math.isnan(d[1]) and math.isnan(d[2])
    assert slice_dice(pred, ref, 2).shape == (5,)
    assert slice_dice(ref[0], ref[0]).tolist() == [1.0]


def test_time_saved_model() -> None:
    # 4 slices: pass, fail (missed), fail (false positive), nothing
    ref = np.zeros((4, 6, 6), np.int16)
    pred = np.zeros_like(ref)
    ref[0, 1:5, 1:5] = 1
    pred[0, 1:5, 1:5] = 1
    ref[1, 1:3, 1:3] = 1
    pred[2, 2:4, 2:4] = 1
    out = time_saved(pred, ref, [1], dice_threshold=0.9, draw_seconds=20, check_seconds=5)
    assert out["slices_passed"].tolist() == [1] and out["slices_failed"].tolist() == [2]
    assert out["time_saved_s"].tolist() == [20 - 2 * 5]
    per_class = time_saved(pred, ref, [1, 2], draw_seconds=[20, 99], check_seconds=5)
    assert per_class["time_saved_s"].tolist() == [10, 0]  # class 2 absent everywhere: 0
    ml = time_saved(pred[None] == 1, ref[None] == 1, [0], multi_label=True, dice_threshold=0.9, draw_seconds=20, check_seconds=5)
    assert ml["time_saved_s"].tolist() == [10]
    with pytest.raises(ValueError, match="draw_seconds"):
        time_saved(pred, ref, [1, 2], draw_seconds=[1, 2, 3])


def test_threshold_is_inclusive() -> None:
    ref = np.zeros((1, 4, 4), np.int16)
    ref[0, :2, :2] = 1
    pred = ref.copy()
    pred[0, 0, 0] = 0  # Dice 6/7
    assert time_saved(pred, ref, [1], dice_threshold=6 / 7)["slices_passed"][0] == 1
    assert time_saved(pred, ref, [1], dice_threshold=6 / 7 + 1e-9)["slices_passed"][0] == 0


def _lesions() -> tuple[np.ndarray, np.ndarray]:
    ref = np.zeros((20, 20), bool)
    pred = np.zeros((20, 20), bool)
    ref[1:4, 1:4] = True  # hit by a large prediction (IoU 9/25)
    pred[1:6, 1:6] = True
    ref[10:12, 10:12] = True  # missed
    pred[16:18, 16:18] = True  # false positive
    ref[15, 2] = True  # two reference lesions under one predicted blob
    ref[15, 4] = True
    pred[15, 1:6] = True
    return pred, ref


def test_lesion_overlap_rule() -> None:
    pred, ref = _lesions()
    c = lesion_counts(pred, ref, rule="overlap")
    assert c == {"lesion_tp": 3, "lesion_fp": 1, "lesion_fn": 1, "n_ref_lesions": 4, "n_pred_lesions": 3}


def test_lesion_iou_rule_is_one_to_one() -> None:
    pred, ref = _lesions()
    c = lesion_counts(pred, ref, rule="iou", iou_threshold=0.1)
    # the big blob matches the 3×3 lesion; the line matches only one of its two dots (IoU 1/5)
    assert c["lesion_tp"] == 2 and c["lesion_fn"] == 2 and c["lesion_fp"] == 1
    strict = lesion_counts(pred, ref, rule="iou", iou_threshold=0.5)
    assert strict["lesion_tp"] == 0 and strict["lesion_fp"] == 3 and strict["lesion_fn"] == 4


def test_lesion_connectivity() -> None:
    diag = np.eye(4, dtype=bool)
    assert lesion_counts(diag, diag, connectivity="full")["n_ref_lesions"] == 1
    assert lesion_counts(diag, diag, connectivity="face")["n_ref_lesions"] == 4


def test_lesions_per_class_and_empty() -> None:
    lab = np.zeros((6, 6), np.int16)
    lab[1, 1] = 1
    out = lesion_counts_per_class(lab, np.zeros_like(lab), [1, 2])
    assert out["lesion_fp"].tolist() == [1, 0] and out["lesion_tp"].tolist() == [0, 0]
    with pytest.raises(ValueError, match="rule"):
        lesion_counts(lab > 0, lab > 0, rule="dice")  # type: ignore[arg-type]
