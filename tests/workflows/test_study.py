"""``medseg study``: every reference study on a miniature copy of its real download.

The fast tests find, import and plan each study (what the command would train, checked against the
recipe and the builders' ground truth); the end-to-end ``--quick`` runs are marked slow.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from typer.testing import CliRunner

import releases as R
from medseg.cli import app
from medseg.config import config_from_dict
from medseg.data.formats import import_dataset
from medseg.models import MODELS
from medseg.recipes import recipe_points, resolve_sweep_source
from medseg.workflows.study import STUDIES, get_study, locate, plan_study, quick_points
from medseg.workflows.sweep import point_config


def _gi(tmp: Path) -> tuple[Path, int, list[str]]:
    rel = R.gi_tract(tmp / "uw-madison-gi-tract-image-segmentation", cases={1: (0, 1), 2: (0,), 3: (0,), 4: (2,)}, n_slices=4)
    return tmp, 5, list(rel.classes)


def _npy(tmp: Path) -> tuple[Path, int, list[str]]:
    rel = R.neuro_numpy(tmp / "stacks", n_train=6, n_val=2, n_test=2, size=32)
    return tmp, 10, list(rel.classes)


def _pancreas(tmp: Path) -> tuple[Path, int, list[str]]:
    R.pancreas_ct82(tmp, patients=(1, 2, 3, 4, 5), manifest="manifest-1599750808610", orphan_labels=(25,))
    return tmp, 5, ["background", "pancreas"]


def _prostate(tmp: Path) -> tuple[Path, int, list[str]]:
    rel = R.hipmri_prostate(tmp, scans={4: (0, 1), 11: (0,), 12: (0,), 13: (1,)}, shape=(16, 16, 8), release_folder="HipMRI_study_complete_release_v1")
    return tmp, 5, list(rel.classes)


def _sunnybrook(tmp: Path) -> tuple[Path, int, list[str]]:
    R.sunnybrook(tmp, cases=("SC-HF-I-1", "SC-N-2", "SC-HYP-1"), n_phases=4)
    return tmp, 3 * 3 * 2, ["background", "lv_blood_pool"]


BUILD: dict[str, Callable[[Path], tuple[Path, int, list[str]]]] = {
    "gi-tract": _gi,
    "neuro-npy": _npy,
    "pancreas-ct82": _pancreas,
    "prostate-hipmri": _prostate,
    "sunnybrook-lv": _sunnybrook,
}


def test_list_names_the_five_studies_and_their_downloads() -> None:
    res = CliRunner().invoke(app, ["study", "--list"])
    assert res.exit_code == 0, res.output
    lines = [ln for ln in res.output.splitlines() if ln.strip()]
    assert len(lines) == 5 == len(STUDIES)
    for line, study in zip(lines, STUDIES.values(), strict=True):
        assert line.startswith(f"{study.name} ({study.number})") and "Download:" in line
    assert "challenge_training" in lines[4] and "task2_2D_4class" in lines[1] and "TCIA_pancreas_labels" in lines[2]
    assert [get_study(n).name for n in ("000", "1", "pancreas_ct82")] == ["gi-tract", "neuro-npy", "pancreas-ct82"]


@pytest.mark.parametrize(
    ("args", "words"),
    [
        (["study", "sunnybrok"], ["unknown study 'sunnybrok'", "sunnybrook-lv"]),
        (["study", "gi-tract"], ["no download given", "--data"]),
        (["study", "pancreas-ct82", "--data", "{tmp}"], ["no Pancreas-CT/ found", "TCIA"]),
    ],
)
def test_refused_in_one_line(tmp_path: Path, args: list[str], words: list[str]) -> None:
    out = tmp_path / "out"
    res = CliRunner().invoke(app, [a.format(tmp=tmp_path) for a in args] + ["--out", str(out)])
    lines = [ln for ln in res.output.splitlines() if ln.strip()]
    assert res.exit_code == 2 and len(lines) == 1 and lines[0].startswith("error:"), res.output
    assert all(w in lines[0] for w in words), lines[0]
    assert not out.exists()


@pytest.mark.parametrize("name", list(BUILD))
def test_study_finds_imports_and_plans_its_download(tmp_path: Path, name: str) -> None:
    study = STUDIES[name]
    data, n_cases, classes = BUILD[name](tmp_path / "download")
    path, options = locate(study, data)
    with pytest.warns(UserWarning) if name == "pancreas-ct82" else _nothing():  # the orphan label0025 is reported
        ds = import_dataset(study.fmt, path, tmp_path / "data", **options)
    assert len(ds) == n_cases and ds.info.class_names == classes
    assert all(ds.load_case(c).label is not None for c in ds.case_ids)
    base, models, points = plan_study(study, tmp_path / "data")
    _, recipe = resolve_sweep_source(study.recipe)
    assert points == recipe_points(recipe) and base["data"]["dataset"] == str((tmp_path / "data").resolve())
    assert config_from_dict(base).eval.reference, "published numbers are reference rows of every study"
    for p in points:
        point_config(base, p, models)  # every run of the study validates
    qbase, qmodels, quick = plan_study(study, tmp_path / "data", quick=True)
    wanted = {(k, repr(v)) for p in points for k, v in p.items()}
    assert {(k, repr(v)) for p in quick for k, v in p.items()} == wanted and len(quick) <= len(points)
    assert qbase["train"]["epochs"] == 1 and qbase["train"]["device"] == "cpu"
    for m, params in qmodels.items():
        tiny = {k: v for k, v in (MODELS.meta(m)["tiny"] or {}).items() if k != "n_deep_supervision"}
        assert all(params[k] == v for k, v in tiny.items()), m


class _nothing:
    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc: Any) -> None:
        return None


def test_quick_points_cover_every_value_once() -> None:
    grid = [{"model.name": m, "train.loss": loss} for m in ("a", "b", "c") for loss in ("ce", "dice")]
    assert quick_points(grid) == [{"model.name": "a", "train.loss": "ce"}, {"model.name": "a", "train.loss": "dice"}, grid[2], grid[4]]


def test_recipes_say_what_the_studies_did() -> None:
    gi, _ = resolve_sweep_source("gi_cnn_vs_transformer")
    assert gi["data"]["slices"] and gi["data"]["preprocess"]["resize"] == [384, 384] and gi["train"]["loss"] == "bce"
    assert gi["data"]["split"]["ratios"] == [0.8, 0.1, 0.1] and gi["train"]["accumulate_grad_batches"] == 4
    pro, recipe = resolve_sweep_source("improved_unet3d_losses")
    assert pro["model"]["params"] == {"upsample": "transposed", "n_deep_supervision": 0}
    assert pro["data"]["preprocess"]["resize"] == [128, 128, 64] and pro["train"]["lr_gamma"] == 0.985
    ce = recipe_points(recipe)[0]
    assert ce["train.loss"] == "dice_ce" and ce["train.loss_params"]["lambda_ce"] == 0.2 and len(ce["train.loss_params"]["weight"]) == 6
    npy, recipe = resolve_sweep_source("numpy_unet_linknet_fpn")
    assert npy["train"]["lr"] == 3e-2 and npy["data"]["augmentation"]["overrides"]["rotate"]["range"] == 180.0
    assert {"train.loss": "ce", "train.loss_params": {"weight": [0.1, 0.3, 0.3, 0.2]}} in recipe["points"] and len(recipe_points(recipe)) == 27
    pan, recipe = resolve_sweep_source("attention_unet_variants")
    assert len(recipe_points(recipe)) == 4 and pan["data"]["preprocess"]["pad_to"] == [96, 96, 96] and pan["train"]["lr"] == 1e-4
    lv, _ = resolve_sweep_source("sunnybrook_fcn_vs_unet")
    assert lv["train"]["lr"] == 1e-4 and lv["eval"]["reference"][0]["metrics"] == {"pixel_accuracy": 0.98}


def test_config_list_shows_every_recipe() -> None:
    res = CliRunner().invoke(app, ["config", "--list"])
    assert res.exit_code == 0
    names = [ln.split()[0] for ln in res.output.splitlines() if ln.strip()]
    assert names[0] == "quickstart" and {s.recipe for s in STUDIES.values()} <= set(names)


@pytest.mark.slow
@pytest.mark.parametrize("name", list(BUILD))
def test_study_quick_end_to_end(tmp_path: Path, name: str) -> None:
    data, _, _ = BUILD[name](tmp_path / "download")
    out = tmp_path / "study"
    res = CliRunner().invoke(app, ["study", name, "--data", str(data), "--out", str(out), "--quick"])
    assert res.exit_code == 0, res.output
    assert (out / "report" / "index.html").is_file() and "report:" in res.output
    cmp = json.loads((out / "report" / "comparison.json").read_text())
    study = STUDIES[name]
    _, _, quick = plan_study(study, out / "data", quick=True)
    sweep = json.loads((out / "runs" / "sweep.json").read_text())
    assert len(sweep["runs"]) == len(quick) and all(r["status"] == "finished" for r in sweep["runs"])
    assert len(cmp["rows"]) == len(quick) and cmp["references"]
    dice = [r["mean_dice"] for r in cmp["rows"]]
    assert all(0.0 <= d <= 1.0 for d in dice if isinstance(d, float) and not np.isnan(d))
    again = CliRunner().invoke(app, ["study", name, "--data", str(data), "--out", str(out), "--quick"])
    assert again.exit_code == 0 and "reusing" in again.output and again.output.count("skipped") == len(quick)
