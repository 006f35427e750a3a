"""medseg report: every section present, images embedded, opens in headless Chromium without errors.

The browser checks drive Debian's Chromium (``/usr/bin/chromium``) with Playwright; they fail, not
skip, when it is missing.
"""

from __future__ import annotations

import io
import json
import re
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from helpers import tiny_config
from medseg.cli import app
from medseg.config import config_from_dict
from medseg.core.errors import RunError
from medseg.engine.train import train
from medseg.reports.html import make_comparison_report, make_report
from medseg.viz.figures import error_map
from medseg.viz.overlay import FN_COLOR, FP_COLOR, WRONG_COLOR
from medseg.workflows.evaluate import evaluate_run

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
RUN_SECTIONS = ["summary", "curves", "class-dice", "boxplots", "gallery", "training", "dataset", "config"]


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    """A U-Net and a SegFormer trained for two epochs on a tiny phantom, both evaluated on the test split."""
    root = tmp_path_factory.mktemp("report")
    out = []
    for name, model in (
        ("cnn", {"name": "unet", "params": {"channels": [8, 16], "num_res_units": 0}}),
        ("transformer", {"name": "segformer_b0", "params": {}}),
    ):
        if model["name"] == "segformer_b0":
            model["params"] = {"hidden_sizes": [8, 16, 40, 64], "depths": [1, 1, 1, 1], "decoder_hidden_size": 16}
        cfg = config_from_dict(
            tiny_config(
                name=name,
                data={"cache_dir": str(root / "cache")},
                model=model,
                train={"epochs": 2},
                eval={"reference": {"name": "paper", "dice": 0.84, "class_dice": {"RV": 0.8}}},
            )
        )
        run = train(cfg, root / name, progress=False)
        evaluate_run(run, split="test", progress=False)
        out.append(run)
    return out


def _open_in_chromium(index: Path, shot: Path) -> dict:
    from playwright.sync_api import sync_playwright

    assert Path(CHROMIUM).is_file(), f"Chromium is needed for the report tests: apt-get install chromium (expected at {CHROMIUM})"
    errors: list[str] = []
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1300, "height": 900})
            page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
            page.on("pageerror", lambda e: errors.append(str(e)))
            page.on("requestfailed", lambda r: errors.append(f"request failed: {r.url}"))
            page.goto(index.as_uri(), wait_until="load")
            sections = page.evaluate("Array.from(document.querySelectorAll('section')).map(s => [s.id, s.getBoundingClientRect().height])")
            images = page.evaluate("Array.from(document.images).map(i => [i.alt, i.complete, i.naturalWidth, i.naturalHeight, i.src.slice(0, 22)])")
            external = page.evaluate("Array.from(document.querySelectorAll('[src],[href]')).map(e => e.getAttribute('src') || e.getAttribute('href'))")
            gallery = page.locator("#gallery img").first
            gallery.scroll_into_view_if_needed()
            gallery.screenshot(path=str(shot))
        finally:
            browser.close()
    return {"errors": errors, "sections": dict(sections), "images": images, "external": external}


def _not_blank(png: bytes) -> float:
    from PIL import Image

    img = np.asarray(Image.open(io.BytesIO(png)).convert("L"), dtype=np.float32)
    return float(img.std())


def test_error_map_colours() -> None:
    img = np.zeros((4, 4), np.float32)
    ref = np.array([[0, 1, 1, 0]] * 4)
    pred = np.array([[1, 1, 0, 2]] * 4)
    pred[:, 2] = 2
    rgb = error_map(img, pred, ref)
    assert tuple(rgb[0, 0]) == FP_COLOR and tuple(rgb[0, 2]) == WRONG_COLOR and tuple(rgb[0, 3]) == FP_COLOR
    assert tuple(rgb[0, 1]) == (0, 0, 0)
    ref2 = np.array([[1, 0]])
    assert tuple(error_map(np.zeros((1, 2)), np.zeros((1, 2), int), ref2)[0, 0]) == FN_COLOR
    ml = error_map(np.zeros((2, 2)), np.zeros((2, 2, 2), bool), np.ones((2, 2, 2), bool), multi_label=True)
    assert tuple(ml[0, 0]) == FN_COLOR


def test_run_report_has_every_section_and_renders(runs: list[Path], tmp_path: Path) -> None:
    index = make_report(runs[0], "test")
    text = index.read_text()
    for sid in RUN_SECTIONS:
        assert f"<section id='{sid}'>" in text, sid
    for name in ("curves.png", "class_dice.png", "boxplots.png", "case_best.png", "case_median.png", "case_worst.png", "training_0.gif", "dataset_samples.png"):
        assert (index.parent / name).is_file(), name
    assert "data:image/gif;base64" in text and "reference: paper" in text and "false positive" in text and "LV blood pool" in text
    summary = json.loads((runs[0] / "eval" / "test" / "summary.json").read_text())
    assert "<th>test loss</th>" in text and f"<td>{summary['loss']['mean']:.4f}</td>" in text  # the study table
    assert f"<td>{summary['pixel_accuracy']:.3f}</td>" in text and "<th>weighted F1</th>" in text
    assert not re.search(r"src=['\"](?!data:)", text)  # self-contained: no file or network references
    from PIL import Image

    gif = Image.open(index.parent / "training_0.gif")
    assert gif.n_frames == 2  # one frame per epoch
    seen = _open_in_chromium(index, tmp_path / "gallery.png")
    assert seen["errors"] == []
    assert set(RUN_SECTIONS) <= set(seen["sections"]) and all(h > 30 for h in seen["sections"].values())
    assert seen["images"] and all(complete and w > 50 and h > 50 for _, complete, w, h, _ in seen["images"]), seen["images"]
    assert all(s.startswith("data:image/") for *_, s in seen["images"])
    assert _not_blank((tmp_path / "gallery.png").read_bytes()) > 10


def test_comparison_report_side_by_side(runs: list[Path], tmp_path: Path) -> None:
    out = tmp_path / "cmp"
    index = make_comparison_report(runs, "test", out)
    text = index.read_text()
    for sid in [*RUN_SECTIONS, "paired"]:
        assert f"<section id='{sid}'>" in text, sid
    assert "cnn" in text and "transformer" in text and (out / "training_1.gif").is_file() and (out / "comparison.md").is_file()
    data = json.loads((out / "comparison.json").read_text())
    assert [r["model"] for r in data["rows"]] == ["unet", "segformer_b0"] and data["references"][0]["run"] == "reference: paper"
    assert any("too small" in w for w in data["warnings"])  # 2 test cases
    seen = _open_in_chromium(index, tmp_path / "gallery.png")
    assert seen["errors"] == [] and "paired" in seen["sections"]
    assert sum(1 for alt, *_ in seen["images"] if alt.startswith("training sequence")) == 2
    assert _not_blank((tmp_path / "gallery.png").read_bytes()) > 10


def test_report_command_and_bad_input(runs: list[Path], tmp_path: Path) -> None:
    r = CliRunner().invoke(app, ["report", str(runs[0]), str(runs[1]), "--out", str(tmp_path / "both")])
    assert r.exit_code == 0, r.output
    assert (tmp_path / "both" / "index.html").is_file()
    with pytest.raises(RunError, match=r"no evaluation on the val split — fix: run `medseg evaluate .* --split val` first"):
        make_report(runs[0], "val")
    r = CliRunner().invoke(app, ["report", str(runs[0]), "--split", "val"])
    assert r.exit_code == 2 and "medseg evaluate" in r.output


def test_report_of_a_2d_model_trained_on_slices_of_volumes_animates_one_slice(slices_run: Path) -> None:
    """Snapshots of a volume predicted slice by slice keep one slice: the training GIF shows it every epoch."""
    from PIL import Image

    from medseg.runs import read_snapshots

    meta, frames = read_snapshots(slices_run)  # type: ignore[misc]
    assert meta["slice"] is not None and len(frames) == 3
    assert all(f.shape == (32, 32) for _, f in frames)  # one 32×32 slice of the 8×32×32 volume
    html = make_report(slices_run, "test").read_text()
    assert "<section id='training'>" in html and "data:image/gif;base64" in html and "3 epochs" in html
    with Image.open(slices_run / "report" / "training_0.gif") as gif:
        assert gif.n_frames == 3
