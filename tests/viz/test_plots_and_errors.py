"""viz/: one error-map colour scheme for the report and the demo (with their legends); the training
curves put pixel accuracy beside Dice."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from medseg.viz import figures, render
from medseg.viz.overlay import ERROR_LEGEND, FN_COLOR, FP_COLOR, WRONG_COLOR, error_masks
from medseg.viz.plots import curve_series, plot_curves


def _case() -> tuple[np.ndarray, np.ndarray]:
    ref = np.zeros((5, 6), np.int16)
    pred = np.zeros((5, 6), np.int16)
    ref[0, :3] = 1
    pred[0, :2] = 1  # (0, 2) missed
    pred[4, 5] = 2  # (4, 5) false positive
    ref[2, 2], pred[2, 2] = 1, 2  # wrong class
    ref[3, 3] = pred[3, 3] = 2  # right
    return pred, ref


def test_report_and_demo_draw_the_same_errors_in_the_same_colours() -> None:
    pred, ref = _case()
    fp, fn, wrong = error_masks(pred, ref)
    assert list(zip(*np.nonzero(fp), strict=True)) == [(4, 5)] and list(zip(*np.nonzero(fn), strict=True)) == [(0, 2)]
    assert list(zip(*np.nonzero(wrong), strict=True)) == [(2, 2)]
    report = figures.error_map(np.zeros(pred.shape, np.float32), pred, ref)
    demo = render.error_map(np.zeros(pred.shape, np.uint8), pred, ref, [1, 2], 1.0)
    for rgb in (report, demo):
        assert tuple(rgb[4, 5]) == FP_COLOR and tuple(rgb[0, 2]) == FN_COLOR and tuple(rgb[2, 2]) == WRONG_COLOR
        assert tuple(rgb[3, 3]) == tuple(rgb[0, 0]) == (0, 0, 0)  # correct voxels are not coloured
    coloured = {tuple(c) for c in report.reshape(-1, 3)} | {tuple(c) for c in demo.reshape(-1, 3)}
    assert coloured == {(0, 0, 0), FP_COLOR, FN_COLOR, WRONG_COLOR}


def test_both_legends_name_the_scheme() -> None:
    assert [n for n, _ in ERROR_LEGEND] == ["false positive", "false negative", "wrong class"]
    html = render.legend_html(["bg", "a"], [(0, 0, 0), (255, 0, 0)], [1], "error map")
    for name, color in ERROR_LEGEND:
        assert f"background:rgb{tuple(color)}" in html and name in html, name
    assert "true positive" not in html


def test_curves_show_pixel_accuracy_beside_dice(tmp_path: Path) -> None:
    rows = [
        {"epoch": 0.0, "train_loss": 0.9, "val_loss": 0.8, "val_dice": 0.0, "val_dice_LV": 0.0, "val_pixel_accuracy": 0.98},
        {"epoch": 1.0, "train_loss": 0.7, "val_loss": float("nan"), "val_dice": 0.4, "val_dice_LV": 0.4, "val_pixel_accuracy": 0.985},
    ]
    s = curve_series(rows)
    assert s["validation"]["mean Dice"] == [(1, 0.0), (2, 0.4)] and s["validation"]["pixel accuracy"] == [(1, 0.98), (2, 0.985)]
    assert s["validation"]["LV"] == [(1, 0.0), (2, 0.4)] and s["loss"]["validation"] == [(1, 0.8)]  # NaN left out
    assert "pixel accuracy" not in curve_series([{k: v for k, v in r.items() if k != "val_pixel_accuracy"} for r in rows])["validation"]
    from PIL import Image

    for path in (plot_curves(rows, tmp_path / "one.png"), figures.multi_curves(tmp_path / "two.png", [("a", rows), ("b", rows)])):
        img = np.asarray(Image.open(path).convert("RGB"))
        assert img.shape[0] > 100 and img.std() > 5


@pytest.mark.parametrize("multi", [False, True])
def test_error_masks_are_disjoint(multi: bool) -> None:
    rng = np.random.default_rng(3)
    if multi:
        pred, ref = rng.random((3, 9, 7)) > 0.6, rng.random((3, 9, 7)) > 0.6
    else:
        pred, ref = rng.integers(0, 3, (9, 7)), rng.integers(0, 3, (9, 7))
    fp, fn, wrong = error_masks(pred, ref, None, multi)
    assert not (fp & fn).any() and not (fp & wrong).any() and not (fn & wrong).any()
    differs = (pred != ref).any(0) if multi else (pred != ref)
    assert ((fp | fn | wrong) == differs).all()  # every difference is drawn, nothing else
