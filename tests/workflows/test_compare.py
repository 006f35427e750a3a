"""medseg compare: statistics on known cases, the table, reference rows and bad inputs (run folders made by code)."""

from __future__ import annotations

import csv
import json
import math
import re
from pathlib import Path

import numpy as np
import pytest
import yaml
from typer.testing import CliRunner

from medseg.cli import app
from medseg.core.errors import RunError
from medseg.metrics.paired import bootstrap_ci, paired_stats, wilcoxon_p
from medseg.reports.tables import display_table, study_table, write_comparison
from medseg.workflows.compare import compare_runs

CLASSES = ["liver", "tumour"]


def fake_run(root: Path, name: str, dice: dict[str, list[float]], cases: list[str] | None = None, dataset: str = "/data/ds", **cfg: object) -> Path:
    """A run folder with config, run.json, history.csv and an evaluation on the test split."""
    run = root / name
    (run / "eval" / "test").mkdir(parents=True)
    n = len(next(iter(dice.values())))
    cases = cases or [f"c{i:02d}" for i in range(n)]
    config = {"name": name, "model": {"name": "unet"}, **cfg}
    (run / "config.yaml").write_text(yaml.safe_dump(config))
    info = {
        "status": "finished",
        "model": "unet",
        "parameters": 12345,
        "train_time_s": 42.0,
        "epochs_run": 5,
        "best_epoch": 3,
        "device": "cpu",
        "dataset": dataset,
    }
    (run / "run.json").write_text(json.dumps(info))
    (run / "history.csv").write_text("epoch,train_loss,val_dice,samples_per_s,peak_memory_mb\n0,1.0,0.5,10.0,100\n1,0.8,0.6,12.0,120\n")
    rows, per_case = [], {}
    for i, c in enumerate(cases):
        vals = [dice[k][i] for k in CLASSES]
        per_case[c] = float(np.mean(vals))
        for k in CLASSES:
            d = dice[k][i]
            rows.append({"case": c, "patient": f"p{i // 2}", "class": k, "dice": d, "hd95": 2.0 * (1 - d), "assd": 1 - d, "precision": d, "recall": d})
    with (run / "eval" / "test" / "metrics.csv").open("w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    per_class = {
        k: {m: {"mean": float(np.mean([r[m] for r in rows if r["class"] == k])), "std": 0.01, "n": n} for m in ("dice", "hd95", "assd", "precision", "recall")}
        for k in CLASSES
    }
    summary = {
        "split": "test",
        "n_cases": n,
        "classes": CLASSES,
        "per_class": per_class,
        "mean_dice": float(np.mean([per_class[k]["dice"]["mean"] for k in CLASSES])),
        "per_case_mean_dice": per_case,
        "seconds_per_case": 0.05,
    }
    (run / "eval" / "test" / "summary.json").write_text(json.dumps(summary))
    return run


def test_identical_runs_ci_contains_zero_and_p_is_one() -> None:
    a = {f"c{i}": v for i, v in enumerate(np.linspace(0.5, 0.9, 15))}
    st = paired_stats(a, dict(a))
    assert st["ci_low"] <= 0 <= st["ci_high"] and st["p_wilcoxon"] == 1.0 and st["verdict"] == "no clear difference"
    assert st["n"] == 15 and st["mean_diff"] == 0


def test_clearly_better_run_ci_excludes_zero() -> None:
    rng = np.random.default_rng(0)
    a = {f"c{i}": float(v) for i, v in enumerate(rng.uniform(0.6, 0.8, 20))}
    b = {k: v + 0.1 + float(rng.normal(0, 0.01)) for k, v in a.items()}
    st = paired_stats(a, b)
    assert st["ci_low"] > 0.05 and st["ci_high"] < 0.15 and st["p_wilcoxon"] < 1e-4 and st["verdict"] == "b better"
    st = paired_stats(b, a)
    assert st["ci_high"] < 0 and st["verdict"] == "a better"


def test_noise_only_difference_is_not_called() -> None:
    rng = np.random.default_rng(1)
    a = {f"c{i}": float(v) for i, v in enumerate(rng.uniform(0.6, 0.8, 30))}
    b = {k: v + float(rng.normal(0, 0.02)) for k, v in a.items()}
    st = paired_stats(a, b)
    assert st["ci_low"] < 0 < st["ci_high"] and st["verdict"] == "no clear difference"


def test_bootstrap_and_wilcoxon_edge_cases() -> None:
    lo, hi = bootstrap_ci(np.array([0.2] * 8))
    assert lo == pytest.approx(0.2) and hi == pytest.approx(0.2)
    assert all(math.isnan(v) for v in bootstrap_ci(np.array([])))
    assert math.isnan(wilcoxon_p(np.array([])))
    assert bootstrap_ci(np.arange(10.0), seed=3) == bootstrap_ci(np.arange(10.0), seed=3)  # reproducible


def test_table_rows_reference_and_files(tmp_path: Path) -> None:
    a = fake_run(
        tmp_path, "cnn", {"liver": [0.8] * 12, "tumour": [0.6] * 12}, eval={"reference": {"name": "paper", "dice": 0.84, "class_dice": {"liver": 0.9}}}
    )
    b = fake_run(tmp_path, "vit", {"liver": [0.9] * 12, "tumour": [0.7 + 0.01 * i for i in range(12)]})
    cmp = compare_runs([a, b], with_macs=False)
    assert [r["run"] for r in cmp.rows] == ["cnn", "vit"]
    row = cmp.rows[0]
    assert row["mean_dice"] == pytest.approx(0.7) and row["dice_liver"] == pytest.approx(0.8) and row["epochs_to_best"] == 4
    assert row["train_samples_per_s"] == pytest.approx(11.0) and row["peak_memory_mb"] == 120 and row["latency_per_case_s"] == pytest.approx(0.05)
    assert len(cmp.references) == 1 and cmp.references[0]["run"] == "reference: paper" and cmp.references[0]["dice_liver"] == 0.9
    header, rows = display_table(cmp)
    assert "mean Dice" in header and "Dice tumour" in header and rows[-1][0] == "reference: paper" and rows[-1][4] == "0.840"
    mean_pair = next(p for p in cmp.paired if p["class"] == "mean")
    assert mean_pair["n"] == 12 and mean_pair["ci_low"] > 0 and mean_pair["verdict"] == "b better"
    assert any("not independent" in w for w in cmp.warnings)  # 12 cases from 6 patients
    out = write_comparison(cmp, tmp_path / "cmp")
    for f in ("comparison.md", "comparison.csv", "comparison.html", "paired.csv", "comparison.json"):
        assert (out / f).is_file(), f
    md = (out / "comparison.md").read_text()
    assert "| cnn | unet |" in md and "reference: paper" in md and "Paired statistics" in md
    by_patient = compare_runs([a, b], with_macs=False, by="patient")
    assert next(p for p in by_patient.paired if p["class"] == "mean")["n"] == 6
    assert study_table(cmp) == ([], []) and "Loss, pixel accuracy" not in md  # evaluations written before these numbers


def test_small_test_set_warns(tmp_path: Path) -> None:
    a = fake_run(tmp_path, "a", {"liver": [0.8, 0.7, 0.9], "tumour": [0.5, 0.6, 0.4]})
    b = fake_run(tmp_path, "b", {"liver": [0.9, 0.8, 0.95], "tumour": [0.6, 0.7, 0.5]})
    cmp = compare_runs([a, b], with_macs=False)
    assert any("too small to tell" in w for w in cmp.warnings)
    assert next(p for p in cmp.paired if p["class"] == "mean")["verdict"] == "no clear difference"  # p cannot reach 0.05 with 3 cases


def test_different_case_sets_use_the_intersection_with_a_warning(tmp_path: Path) -> None:
    a = fake_run(tmp_path, "a", {"liver": [0.8] * 10, "tumour": [0.6] * 10})
    b = fake_run(tmp_path, "b", {"liver": [0.9] * 8, "tumour": [0.7] * 8}, cases=[f"c{i:02d}" for i in range(2, 10)])
    cmp = compare_runs([a, b], with_macs=False)
    assert any("different case sets (10 vs 8 cases); paired statistics use the 8 cases" in w for w in cmp.warnings)
    assert next(p for p in cmp.paired if p["class"] == "mean")["n"] == 8
    c = fake_run(tmp_path, "c", {"liver": [0.9] * 4, "tumour": [0.7] * 4}, cases=["x1", "x2", "x3", "x4"])
    cmp = compare_runs([a, c], with_macs=False)
    assert cmp.paired == [] and any("no case evaluated by both" in w for w in cmp.warnings)
    d = fake_run(tmp_path, "d", {"liver": [0.9] * 10, "tumour": [0.7] * 10}, dataset="/data/other")
    cmp = compare_runs([a, d], with_macs=False)
    assert cmp.paired == [] and any("different data sets" in w for w in cmp.warnings)


def test_run_without_evaluation_names_the_command(tmp_path: Path) -> None:
    a = fake_run(tmp_path, "a", {"liver": [0.8] * 4, "tumour": [0.6] * 4})
    with pytest.raises(RunError, match=rf"no evaluation on the val split — fix: run `medseg evaluate {a} --split val` first"):
        compare_runs([a], split="val", with_macs=False)
    r = CliRunner().invoke(app, ["compare", str(a), str(tmp_path / "missing")])
    assert r.exit_code == 2 and "not a run folder" in r.output


def test_compare_command(tmp_path: Path) -> None:
    a = fake_run(tmp_path, "a", {"liver": [0.8] * 10, "tumour": [0.6] * 10})
    b = fake_run(tmp_path, "b", {"liver": [0.8] * 10, "tumour": [0.6] * 10})
    r = CliRunner().invoke(app, ["compare", str(a), str(b), "--out", str(tmp_path / "cmp"), "--no-macs"], terminal_width=250)
    assert r.exit_code == 0, r.output
    assert "Comparison on the test split" in r.output and "no clear difference" in (tmp_path / "cmp" / "comparison.md").read_text()
    rows = list(csv.DictReader((tmp_path / "cmp" / "paired.csv").open()))
    mean = next(x for x in rows if x["class"] == "mean")
    assert float(mean["p_wilcoxon"]) == 1.0 and float(mean["ci_low"]) <= 0 <= float(mean["ci_high"])
    r = CliRunner().invoke(app, ["compare", str(a), "--by", "lesion"])
    assert r.exit_code == 2 and "unknown paired unit" in r.output


def _evaluated_folders_run(root: Path, name: str, ref: dict[str, np.ndarray], pred: dict[str, np.ndarray]) -> Path:
    """A run folder whose test evaluation is `evaluate_folders` on hand-made masks."""
    import nibabel as nib

    from medseg.workflows.evaluate import evaluate_folders

    run = root / name
    for kind, masks in (("ref", ref), ("pred", pred)):
        (root / f"{name}_{kind}").mkdir(parents=True)
        for cid, m in masks.items():
            nib.save(nib.Nifti1Image(m.astype(np.uint8), np.diag([1.0, 0.8, 0.8, 1.0])), str(root / f"{name}_{kind}" / f"{cid}.nii.gz"))
    evaluate_folders(root / f"{name}_pred", root / f"{name}_ref", labels=["1=LV"], out=run / "eval" / "test", progress=False)
    (run / "config.yaml").write_text(yaml.safe_dump({"name": name, "model": {"name": "unet"}}))
    (run / "run.json").write_text(json.dumps({"status": "finished", "dataset": "/data/sunnybrook"}))
    return run


def test_study_metrics_by_hand(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The imbalance trap side by side (Dice 0 at 98 % pixel accuracy), pixel-level macro and weighted
    P/R/F1 with the background, and time saved per class, against numbers worked out by hand."""
    ref = {}
    for cid in ("c1", "c2"):
        lab = np.zeros((4, 10, 10), np.uint8)
        lab[1:3, 4:6, 4:6] = 1  # 8 of 400 voxels (2 %), on slices 1 and 2
        ref[cid] = lab
    missed = _evaluated_folders_run(tmp_path, "missed", ref, {c: np.zeros_like(v) for c, v in ref.items()})
    exact = _evaluated_folders_run(tmp_path, "exact", ref, ref)
    cmp = compare_runs([missed, exact], with_macs=False)
    m, e = cmp.rows
    assert m["mean_dice"] == 0.0 and m["pixel_accuracy"] == pytest.approx(784 / 800) == pytest.approx(0.98)
    f1_bg = 2 * 0.98 / 1.98  # background: precision 784/800, recall 1; LV: 0, 0, 0 (nothing predicted)
    assert (m["macro_precision"], m["macro_recall"], m["macro_f1"]) == pytest.approx((0.49, 0.5, f1_bg / 2))
    assert (m["weighted_precision"], m["weighted_recall"], m["weighted_f1"]) == pytest.approx((0.98 * 0.98, 0.98, 0.98 * f1_bg))  # supports 784, 16
    assert m["time_saved_s_LV"] == -20.0 and e["time_saved_s_LV"] == 60.0  # 2 slices per case: fail 2 × 10 s, pass 2 × 30 s
    assert e["mean_dice"] == 1.0 and e["pixel_accuracy"] == 1.0 and e["macro_f1"] == 1.0 and e["weighted_f1"] == 1.0
    assert math.isnan(m["test_loss"])  # folders of masks have no loss
    header, rows = display_table(cmp)
    sh, srows = study_table(cmp)
    assert rows[0][header.index("mean Dice")] == "0.000 ± 0.000"
    assert sh == ["run", "mean Dice", "pixel accuracy", "macro P", "macro R", "macro F1", "weighted P", "weighted R", "weighted F1", "time saved LV (s)"]
    assert srows[0] == ["missed", "0.000", "0.980", "0.490", "0.500", "0.495", "0.960", "0.980", "0.970", "-20"]
    out = write_comparison(cmp, tmp_path / "cmp")
    md = (out / "comparison.md").read_text()
    assert "| missed | 0.000 | 0.980 | 0.490 |" in md and "| test loss |" not in md
    saved = json.loads((out / "comparison.json").read_text())["rows"][0]
    assert saved["pixel_accuracy"] == pytest.approx(0.98) and saved["test_loss"] is None
    from medseg.cli.app import console

    monkeypatch.setattr(console, "width", 400)
    res = CliRunner().invoke(app, ["compare", str(missed), str(exact), "--no-macs"])
    assert res.exit_code == 0 and re.search(r"│ missed +│ 0\.000 +│ 0\.980 +│ 0\.490 +│", res.output), res.output


def test_compare_table_reads_in_an_80_column_terminal(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Too wide for the terminal: the table is printed on its side, every heading and value whole on one line."""
    from medseg.cli.app import console
    from medseg.reports.tables import display_table

    a = fake_run(tmp_path, "run_alpha", {"liver": [0.8] * 10, "tumour": [0.6] * 10})
    b = fake_run(tmp_path, "run_beta", {"liver": [0.7] * 10, "tumour": [0.5] * 10})
    header, rows = display_table(compare_runs([a, b], split="test", with_macs=False))
    monkeypatch.setattr(console, "width", 80)
    res = CliRunner().invoke(app, ["compare", str(a), str(b), "--no-macs"])
    assert res.exit_code == 0, res.output
    lines = res.output.splitlines()
    assert max(len(line) for line in lines) <= 80
    for h in header[1:]:
        assert any(re.match(rf"^│ {re.escape(h)} +│", line) for line in lines), h
    liver_row = next(line for line in lines if "Dice liver" in line)
    cells = [c.strip() for c in liver_row.strip("│").split("│")]
    assert cells[1:] == [r[header.index(cells[0])] for r in rows]
    monkeypatch.setattr(console, "width", 400)  # wide enough: the table as it is, one row per run
    res = CliRunner().invoke(app, ["compare", str(a), str(b), "--no-macs"])
    assert any(line.startswith("│ run_alpha") for line in res.output.splitlines()), res.output
