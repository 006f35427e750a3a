"""The report and the viewer show regions as regions (each with its label values) and stripe the ignore label."""

from __future__ import annotations

import html
import re
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from helpers import tiny_config
from medseg.config import config_from_dict
from medseg.data.builtin import make_builtin
from medseg.data.store import load_dataset, make_classes, write_dataset
from medseg.viz import figures
from medseg.viz.overlay import FN_COLOR, FP_COLOR, HATCH_COLOR

IGNORE = 4  # phantom2d: 1 LV, 2 myocardium, 3 RV; the last six rows of every slice are not annotated


@pytest.fixture(scope="module")
def region_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    from medseg.engine.train import train
    from medseg.workflows.evaluate import evaluate_run

    tmp = tmp_path_factory.mktemp("report_regions")
    src = make_builtin("phantom2d", n_patients=6, slices_per_patient=2, size=32)
    cases = list(src.cases)
    for c in cases:
        c.label[-6:] = IGNORE
    info = src.info.model_copy(update={"classes": make_classes([*src.info.class_names, "ignore"])})
    root = write_dataset(tmp / "ds", info, cases).root
    data = {"dataset": str(root), "regions": {"heart": [1, 2], "LV": 1}, "regions_class_order": [2, 1]}
    run = train(config_from_dict(tiny_config(data=data, train={"epochs": 1})), tmp / "run", progress=False)
    evaluate_run(run, split="test", progress=False)
    return run, root


def test_report_names_each_region_with_its_values_and_stripes_the_ignore_label(region_run: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch) -> None:
    from medseg.reports import html as report

    run, root = region_run
    seen: dict[str, list[Any]] = {"panel": [], "grid": [], "gif": []}
    panel, grid, gif = figures.case_panel, figures.sample_grid, figures.training_gif

    def spy_panel(path: Path, title: str, *args: Any, **kw: Any) -> Path:
        seen["panel"].append((title.split(": ")[1].split(" ")[0], kw["ignored"], kw["legend"][0]))
        return panel(path, title, *args, **kw)

    def spy_grid(path: Path, items: list, *args: Any) -> Path:
        seen["grid"] += [(cid, ign) for cid, _, _, ign in items]
        return grid(path, items, *args)

    def spy_gif(*args: Any, **kw: Any) -> Path:
        seen["gif"].append(kw["ignored"])
        return gif(*args, **kw)

    monkeypatch.setattr(report.figures, "case_panel", spy_panel)
    monkeypatch.setattr(report.figures, "sample_grid", spy_grid)
    monkeypatch.setattr(report.figures, "training_gif", spy_gif)
    index = report.make_report(run, split="test")
    text = html.unescape(re.sub(r"<[^>]+>", " ", index.read_text()))
    legend = " ".join(text.split())
    assert "Regions (one channel each; overlapping regions drawn one over the other): heart = {1, 2} (written as 2) LV = {1} (written as 1)" in legend
    assert "ignore: not annotated (striped; in no metric)" in legend
    stored = load_dataset(root)  # the label maps as stored: the ignored voxels by hand
    for cid, ignored, names in seen["panel"]:
        assert names == ["heart = {1, 2}", "LV = {1}"]
        assert np.array_equal(ignored, stored.load_case(cid).label == IGNORE)
    assert len(seen["panel"]) == 3 and seen["grid"] and seen["gif"]
    for cid, ignored in seen["grid"]:
        assert np.array_equal(ignored, stored.load_case(cid).label == IGNORE)
    assert all(g is not None and g[-6:].all() and not g[:-6].any() for g in seen["gif"])


def test_ignored_voxels_are_striped_and_never_errors() -> None:
    img = np.zeros((8, 8), np.float32)
    ref = np.zeros((8, 8), int)
    pred = np.ones((8, 8), int)  # a false positive everywhere
    ref[:, :2] = 1
    pred[:, :2] = 0  # a false negative in the first two columns
    ignored = np.zeros((8, 8), bool)
    ignored[4:] = True
    rgb = figures.error_map(img, pred, ref, ignored=ignored)
    for i in range(8):
        for j in range(8):
            if ignored[i, j]:
                expected = HATCH_COLOR if (i + j) % 4 == 0 else (0, 0, 0)  # striped over the dimmed image, no error colour
            else:
                expected = FN_COLOR if j < 2 else FP_COLOR
            assert tuple(rgb[i, j]) == expected, (i, j)
    gt = figures.striped(np.zeros((8, 8, 3), np.uint8), ignored)
    assert {tuple(gt[i, j]) for i in range(4, 8) for j in range(8) if (i + j) % 4 == 0} == {HATCH_COLOR}
    assert not gt[:4].any() and np.array_equal(figures.striped(gt, None), gt)


def test_the_viewer_shows_the_regions_and_stripes_the_ignore_label(region_run: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch) -> None:
    from medseg.demo import state as demo_state
    from medseg.demo.app import DemoState

    run, root = region_run
    masks: list[np.ndarray] = []
    real = demo_state.hatch

    def spy(rgb: np.ndarray, mask: np.ndarray, *args: Any, **kw: Any) -> np.ndarray:
        masks.append(np.array(mask))
        return real(rgb, mask, *args, **kw)

    monkeypatch.setattr(demo_state, "hatch", spy)
    st = DemoState(run.parent)
    cid = st.runs.get(run.name).case_ids[0]
    pic, _, legend = st.render(run.name, None, cid, "axial", 0, "auto (1–99 %)", 0.5, None, "side by side")
    assert pic is not None and "heart" in legend and "LV" in legend
    lab = load_dataset(root).load_case(cid).label
    assert len(masks) == 2 and all(np.array_equal(m, lab == IGNORE) for m in masks)  # ground truth and prediction panels
