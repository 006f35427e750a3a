"""The comparison recipes (``configs/comparisons/``): every grid point validates, and each recipe runs end
to end — sweep, evaluate, compare — on a built-in phantom standing in for its data set, with every
model at its registered tiny size and one epoch."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from medseg.models import MODELS, list_models
from medseg.recipes import RECIPES_DIR, recipe_points, resolve_sweep_source
from medseg.reports.html import make_comparison_report
from medseg.reports.tables import write_comparison
from medseg.workflows.compare import compare_runs
from medseg.workflows.study import run_points
from medseg.workflows.sweep import grid_points, point_config

RECIPES = sorted(p.stem for p in (RECIPES_DIR / "comparisons").glob("*.yaml"))
#: recipes of 3D studies use phantom3d; the others phantom2d
STAND_IN_3D = {"attention_unet_variants", "improved_unet3d_losses"}
#: run in the default test selection; the others are marked slow
FAST = {"quickstart_cnn_vs_transformer", "attention_unet_variants", "sunnybrook_fcn_vs_unet"}


def _stand_in(name: str, cache: Path) -> list[str]:
    common = [
        f"data.cache_dir={cache}",
        "train.epochs=1",
        "train.iterations_per_epoch=null",
        "train.device=cpu",
        "train.precision='32'",
        "train.accumulate_grad_batches=1",
    ]
    common += ["train.early_stop_patience=null", "data.batch_size=2", "eval.surface.enabled=false", "data.split.ratios=[0.6,0.2,0.2]"]
    common += ["data.preprocess={enabled: false}", "data.slices=false"]  # the studies' own pipelines are tried by tests/workflows/test_study.py
    if name in STAND_IN_3D:
        return [*common, "data.dataset=phantom3d", "data.builtin={n_patients: 5, size: 32, depth: 16}", "data.patch_size=[16,32,32]"]
    return [*common, "data.dataset=phantom2d", "data.builtin={n_patients: 5, slices_per_patient: 2, size: 64}", "data.patch_size=null"]


def _tiny(name: str) -> dict[str, Any]:
    return json.loads(json.dumps(MODELS.meta(name)["tiny"]))


def test_every_recipe_is_listed() -> None:
    assert {"quickstart_cnn_vs_transformer", "gi_cnn_vs_transformer", "numpy_unet_linknet_fpn", "attention_unet_variants"} <= set(RECIPES)
    assert {"improved_unet3d_losses", "sunnybrook_fcn_vs_unet"} <= set(RECIPES)


@pytest.mark.parametrize("name", RECIPES)
def test_every_point_of_the_recipe_validates(name: str, tmp_path: Path) -> None:
    base, recipe = resolve_sweep_source(name)
    points = recipe_points(recipe)
    for model in {p.get("model.name", base["model"]["name"]) for p in points}:
        assert model in list_models(), f"{name}: model {model} is not registered"
    if recipe.get("seeds"):
        points = grid_points(recipe["grid"], int(recipe["seeds"]))
    configs = [point_config(base, p, recipe.get("models")) for p in points]
    assert len({json.dumps(c.dump(), sort_keys=True, default=str) for c in configs}) == len(points)


@pytest.mark.parametrize("name", [pytest.param(n, marks=() if n in FAST else pytest.mark.slow) for n in RECIPES])
def test_recipe_runs_end_to_end_on_stand_in_data(name: str, tmp_path: Path) -> None:
    base, recipe = resolve_sweep_source(name, _stand_in(name, tmp_path / "cache"))
    every = recipe_points(recipe)
    two = [every[0], every[-1]]  # the first and the last run of the recipe
    models = {m: _tiny(m) for m in {p.get("model.name", base["model"]["name"]) for p in every}}
    base["model"]["params"] = {**_tiny(base["model"]["name"]), **{k: v for k, v in (base["model"].get("params") or {}).items() if k == "n_deep_supervision"}}
    out = run_points(base, two, tmp_path / "sweep", models=models)
    sweep = json.loads((out / "sweep.json").read_text())
    assert len(sweep["runs"]) == 2 and all(r["test_dice"] is not None for r in sweep["runs"])
    cmp = compare_runs([out], "test", with_macs=False)
    assert len(cmp.rows) == 2 and any(p["class"] == "mean" for p in cmp.paired)
    write_comparison(cmp, tmp_path / "cmp")
    refs = [r["run"] for r in cmp.references]
    if name == "attention_unet_variants":
        assert refs[0] == "reference: Oktay et al. 2018 (CT-82, from scratch)" and len(refs) == 5
        assert "reference: Oktay" in (tmp_path / "cmp" / "comparison.md").read_text()
    if name in ("quickstart_cnn_vs_transformer", "attention_unet_variants"):  # a 2D and a 3D report
        index = make_comparison_report([out], "test", tmp_path / "report")
        text = index.read_text()
        assert "<section id='gallery'>" in text and "data:image/gif;base64" in text and (tmp_path / "report" / "case_worst.png").is_file()
