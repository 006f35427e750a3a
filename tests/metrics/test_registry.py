"""The metric registry: a metric registered in a test reaches metrics.csv, summary.json, compare, the
report, the CLI and the demo; declarations are checked; summary rules are applied as declared."""

from __future__ import annotations

import csv
import json
import math
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from helpers import tiny_config
from medseg.cli import app
from medseg.config import EvalConfig, config_from_dict
from medseg.metrics.registry import ALL_VIEWS, METRICS, CaseMasks, Column, MetricError, register_metric, unregister_metric
from medseg.metrics.summary import summarize
from medseg.workflows.scoring import metric_columns, score_case

TOY_LABEL = "predicted share"


def predicted_share(m: CaseMasks, cfg: object) -> dict[str, np.ndarray]:
    """The toy metric: the fraction of the image predicted as each class, and those voxels."""
    voxels = np.array([np.count_nonzero(m.mask("pred", i)) for i in range(len(m.classes))], dtype=float)
    return {"pred_share": voxels / m.ref[0].size if m.multi_label else voxels / m.ref.size, "pred_voxels": voxels}


@pytest.fixture
def toy() -> Iterator[str]:
    register_metric(
        "toy_share",
        columns=[
            Column("pred_share", TOY_LABEL, direction="none", digits=4, show=ALL_VIEWS, limits=(0.0, 1.0)),
            Column("pred_voxels", "predicted voxels", summary="sum", direction="none", digits=0),
        ],
        group="toy",
        conventions=lambda cfg: {"toy": "share of the image predicted as the class"},
    )(predicted_share)
    yield "toy_share"
    unregister_metric("toy_share")


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from medseg.engine.train import train

    root = tmp_path_factory.mktemp("registry")
    cfg = config_from_dict(tiny_config(name="toy", data={"cache_dir": str(root / "cache")}, train={"epochs": 1, "threads": 1}))
    return train(cfg, root / "run", progress=False)


def _rows(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


def test_a_registered_metric_reaches_every_stage(run: Path, toy: str, monkeypatch: pytest.MonkeyPatch) -> None:
    from medseg.cli.app import console
    from medseg.data.store import load_dataset
    from medseg.demo.state import DemoState
    from medseg.reports.html import make_report
    from medseg.reports.tables import display_table
    from medseg.workflows.compare import compare_runs
    from medseg.workflows.evaluate import evaluate_run

    assert metric_columns(EvalConfig())[-2:] == ["pred_share", "pred_voxels"]
    out = evaluate_run(run, split="test", progress=False)
    # metrics.csv: the column, its values equal to a count made here on the saved predictions
    rows = _rows(out / "metrics.csv")
    assert list(rows[0])[-2:] == ["pred_share", "pred_voxels"]
    ds = load_dataset(json.loads((run / "run.json").read_text())["dataset"])
    expected: dict[str, list[float]] = {}
    for r in rows:
        with np.load(out / "predictions" / f"{r['case']}.npz") as z:
            pred = z["label"]
        k = ds.info.class_names.index(r["class"])
        assert float(r["pred_share"]) == pytest.approx(float((pred == k).mean()), abs=1e-12)
        assert float(r["pred_voxels"]) == int((pred == k).sum())
        expected.setdefault(r["class"], []).append(float((pred == k).mean()))
    # summary.json: mean ± std per class and macro for a "mean" column, totals for a "sum" column
    s = json.loads((out / "summary.json").read_text())
    for cls, vals in expected.items():
        assert s["per_class"][cls]["pred_share"]["mean"] == pytest.approx(np.mean(vals))
        assert s["per_class"][cls]["pred_share"]["std"] == pytest.approx(np.std(vals))
        assert "pred_voxels" not in s["per_class"][cls]
    assert s["macro"]["pred_share"] == pytest.approx(np.mean([np.mean(v) for v in expected.values()]))
    assert s["totals"]["pred_voxels"]["all"] == sum(float(r["pred_voxels"]) for r in rows)
    assert s["conventions"]["toy"].startswith("share of the image")
    # compare: a column of the table, with the macro mean, formatted with the declared digits
    cmp = compare_runs([run], "test", with_macs=False)
    assert cmp.rows[0]["pred_share"] == pytest.approx(s["macro"]["pred_share"])
    header, lines = display_table(cmp)
    assert lines[0][header.index(TOY_LABEL)] == f"{s['macro']['pred_share']:.4f}"
    monkeypatch.setattr(console, "width", 400)  # the tables in one line each
    res = CliRunner().invoke(app, ["compare", str(run), "--no-macs"])
    assert res.exit_code == 0 and TOY_LABEL in res.output, res.output
    # the report: comparison table, per-class table, box plots
    html = make_report(run, "test").read_text()
    assert html.count(TOY_LABEL) >= 2 and f"{s['macro']['pred_share']:.4f}" in html
    # the CLI's evaluate table and the demo's metrics panel
    res = CliRunner().invoke(app, ["evaluate", str(run), "--no-progress"])
    assert res.exit_code == 0 and TOY_LABEL in res.output, res.output
    state = DemoState(run)
    case = ds.load_case(rows[0]["case"])
    panel = state.metrics_html([state.runs.get(state.runs.names[0])], case, ds.info.class_names, ds.info.foreground)
    assert TOY_LABEL in panel and f"{float(rows[0]['pred_share']):.4f}" in panel


def test_unregistered_metric_is_gone(toy: str) -> None:
    unregister_metric(toy)
    try:
        assert "pred_share" not in metric_columns(EvalConfig()) and toy not in METRICS
        with pytest.raises(MetricError, match="unknown metric 'toy_share'"):
            METRICS.get(toy)
    finally:
        register_metric(toy, columns=["pred_share", Column("pred_voxels", summary="sum")])(predicted_share)  # the fixture removes it again


def test_declarations_are_checked(toy: str) -> None:
    with pytest.raises(ValueError, match="registered twice"):
        register_metric(toy, columns=["other"])(predicted_share)
    with pytest.raises(ValueError, match="column 'dice' is already used by metric 'overlap'"):
        register_metric("dice_again", columns=["dice"])(predicted_share)
    with pytest.raises(ValueError, match="id columns"):
        register_metric("casey", columns=["case"])(predicted_share)
    with pytest.raises(ValueError, match="unknown views"):
        Column("x", show=frozenset({"sidebar"}))
    with pytest.raises(ValueError, match="summary must be"):
        Column("x", summary="median")  # type: ignore[arg-type]
    assert "dice_again" not in METRICS and "casey" not in METRICS


def test_a_metric_returning_other_columns_is_refused() -> None:
    register_metric("broken", columns=["broken_a"])(lambda m, cfg: {"broken_b": np.zeros(len(m.classes))})
    register_metric("short", columns=["short_a"])(lambda m, cfg: {"short_a": np.zeros(1)})
    lab = np.zeros((6, 6), np.int16)
    lab[1:3, 1:3] = 1
    lab[4, 4] = 2
    try:
        with pytest.raises(MetricError, match=r"metric 'broken' returned \['broken_b'\], but declares the columns \['broken_a'\]"):
            score_case(lab, lab, [1, 2], ["a", "b"], (1.0, 1.0), cfg=EvalConfig())
        unregister_metric("broken")
        with pytest.raises(MetricError, match="metric 'short' column 'short_a' has 1 values for 2 classes"):
            score_case(lab, lab, [1, 2], ["a", "b"], (1.0, 1.0), cfg=EvalConfig())
    finally:
        for name in ("broken", "short"):
            if name in METRICS:
                unregister_metric(name)


def test_enabled_follows_the_settings(toy: str) -> None:
    off = EvalConfig.model_validate({"surface": {"enabled": False}, "lesions": {"enabled": False}, "time_saved": {"enabled": False}})
    assert [m.name for m in METRICS.enabled(off)] == ["overlap", toy]
    assert "hd95" not in metric_columns(off) and "time_saved_s" not in metric_columns(off)


def test_summary_rules(toy: str) -> None:
    rows = [
        {"case": "c1", "class": "a", "dice": 1.0, "tp": 4, "fp": 0, "fn": 0, "pred_share": 0.25, "pred_voxels": 4.0},
        {"case": "c2", "class": "a", "dice": math.nan, "tp": 0, "fp": 0, "fn": 0, "pred_share": 0.0, "pred_voxels": 0.0},
        {"case": "c1", "class": "b", "dice": 0.5, "tp": 1, "fp": 1, "fn": 1, "pred_share": 0.125, "pred_voxels": 2.0},
        {"case": "c2", "class": "b", "dice": 0.0, "tp": 0, "fp": 3, "fn": 0, "pred_share": 0.1875, "pred_voxels": 3.0},
    ]
    s = summarize(rows, ["a", "b"], ["dice", "tp", "fp", "fn", "pred_share", "pred_voxels"])
    assert s["per_class"]["a"]["pred_share"]["mean"] == 0.125 and s["per_class"]["b"]["pred_share"]["mean"] == 0.15625
    assert s["macro"]["pred_share"] == pytest.approx((0.125 + 0.15625) / 2)
    assert s["weighted"]["pred_share"] == pytest.approx((0.125 * 4 + 0.15625 * 2) / 6)  # reference voxels 4 and 2
    assert s["totals"]["pred_voxels"] == {"a": 4.0, "b": 5.0, "all": 9.0}
    assert "tp" not in s["per_class"]["a"] and s["pooled"]["b"]["dice"] == pytest.approx(2 / 7)
    assert s["per_class"]["a"]["dice"]["n_undefined"] == 1 and s["mean_dice"] == pytest.approx((1.0 + 0.25) / 2)
