"""The web demo in a real browser: ``medseg demo`` in a background process, driven by headless Chromium.

Needs the Debian ``chromium`` package (``/usr/bin/chromium``, or ``MEDSEG_CHROMIUM``) and the
``playwright`` Python package (its own browser download is never used). A missing browser fails
the tests: it does not skip them. ``MEDSEG_WRITE_SCREENSHOT=1`` also writes ``docs/img/demo.png``.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from browser import browser_page, image_array, medseg_server, open_tab, pick, save_screenshot

TIMEOUT_MS = 60_000


def _train(root: Path, name: str, dataset: str, builtin: dict[str, Any], epochs: int, report: bool = False) -> None:
    from medseg.config import config_from_dict
    from medseg.engine.train import train
    from medseg.workflows.evaluate import evaluate_run

    cfg = config_from_dict(
        {
            "name": name,
            "data": {"dataset": dataset, "builtin": builtin, "batch_size": 4, "cache_dir": str(root / ".cache")},
            "model": {"name": "unet", "params": {"channels": [8, 16], "num_res_units": 0}},
            "train": {"epochs": epochs, "lr": 1e-2, "device": "cpu", "iterations_per_epoch": None},
        }
    )
    run = train(cfg, root / name, progress=False)
    evaluate_run(run, split="test", progress=False)
    if report:
        from medseg.reports.html import make_report

        make_report(run, "test")


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Path]]:
    root = tmp_path_factory.mktemp("demo-browser") / "runs"
    root.mkdir()

    def train_runs() -> None:  # the server starts while the runs are trained: runs appear in the page when it is loaded
        _train(root, "cardiac3d", "phantom3d", {"n_patients": 6, "size": 32, "depth": 8}, epochs=1)
        _train(root, "cardiac2d", "phantom2d", {"n_patients": 6, "slices_per_patient": 2, "size": 32}, epochs=2, report=True)  # the newest

    with medseg_server(["demo", str(root), "--max-upload-mb", "5"], root.parent / "server.log", timeout_s=90, while_starting=train_runs) as url:
        yield url, root


@pytest.fixture(scope="module")
def page(server: tuple[str, Path]) -> Iterator[Any]:
    url, _ = server
    with browser_page(url, TIMEOUT_MS) as (_, pg):
        pg.wait_for_selector("#case-image img")
        pg.wait_for_function("document.querySelector('#metrics') && document.querySelector('#metrics').innerText.includes('mean Dice')")
        yield pg


def _shot(pg: Any) -> bytes:
    return pg.locator("#case-image img").screenshot()


def _metrics(pg: Any) -> str:
    return pg.inner_text("#metrics")


def _wait_change(pg: Any, before: bytes, what: str) -> bytes:
    """The case picture once it differs from ``before`` (rendering is asynchronous)."""
    deadline = time.time() + TIMEOUT_MS / 1000
    while time.time() < deadline:
        pg.wait_for_timeout(250)
        if pg.locator("#case-image .pending, #case-image .generating").count() == 0:
            now = _shot(pg)
            if now != before:
                return now
    raise AssertionError(f"the picture did not change after {what}")


def test_case_view_reacts_to_every_control(page: Any) -> None:
    pg = page
    shot = _shot(pg)
    assert image_array(pg, "#case-image").std() > 5, "the first picture is blank"
    # the newest run is shown first (the 2D run, trained last)
    assert pg.input_value("#run-a input") == "cardiac2d"
    # select another case from the searchable list
    first_line = _metrics(pg).splitlines()[0]
    pg.click("#case input")
    ids = [pg.locator('[role="option"]').nth(i).get_attribute("aria-label") for i in range(pg.locator('[role="option"]').count())]
    ids = [i.split()[0] for i in ids if i]
    assert len(ids) >= 2, ids
    target = next(i for i in ids if i not in first_line)
    pg.fill("#case input", target[-3:])
    pg.locator('[role="option"]', has_text=target).first.click()
    pg.wait_for_function(f"document.querySelector('#metrics').innerText.includes('case {target}')")
    text = _metrics(pg)
    assert text != first_line and "Dice" in text and "HD95" in text and "loss" in text and "time saved" in text
    shot = _wait_change(pg, shot, "selecting a case")
    # a 3D run: the slice slider appears
    pick(pg, "run-a", "cardiac3d")
    pg.wait_for_function("document.querySelector('#metrics').innerText.includes('cardiac3d')")
    pg.wait_for_selector("#slice input[type=range]")
    shot = _wait_change(pg, shot, "choosing a 3D run")
    # move the slice slider
    slider = pg.locator("#slice input[type=range]")
    value = int(float(slider.input_value() or 0))
    slider.fill(str(0 if value > 0 else 3))
    shot = _wait_change(pg, shot, "moving the slice slider")
    # another plane
    pg.locator("#plane label", has_text="coronal").click()
    shot = _wait_change(pg, shot, "choosing the coronal plane")
    # change the opacity
    pg.locator("#opacity input[type=range]").fill("1")
    shot = _wait_change(pg, shot, "changing the opacity")
    # hide one label: its colour leaves the picture and the legend
    pg.locator("#labels label", has_text="myocardium").click()
    shot = _wait_change(pg, shot, "hiding a label")
    pg.wait_for_function("!document.querySelector('#legend').innerText.includes('myocardium')")
    # the error map
    pg.locator("#view label", has_text="error map").click()
    shot = _wait_change(pg, shot, "switching to the error map")
    pg.wait_for_function("document.querySelector('#legend').innerText.includes('false positive')")
    # compare with a run trained on another data set: refused with a message, no crash
    pick(pg, "run-b", "cardiac2d")
    pg.wait_for_function("document.querySelector('#metrics').innerText.includes('another data set')")


def test_upload_predict_download_and_bad_files(page: Any, server: tuple[str, Path], tmp_path: Path) -> None:
    import nibabel as nib

    pg = page
    url, _ = server
    aff = np.array([[0.9, 0, 0, -20.0], [0, 0.9, 0, 10.0], [0, 0, 4.0, 3.0], [0, 0, 0, 1]])
    vol = np.random.default_rng(0).normal(100, 30, size=(32, 32, 8)).astype(np.float32)
    nib.save(nib.Nifti1Image(vol, aff), str(tmp_path / "scan.nii.gz"))
    (tmp_path / "broken.nii.gz").write_bytes(b"definitely not a NIfTI file")
    # the Upload tab predicts with the Cases tab's run and says so
    open_tab(pg, "Cases")
    pick(pg, "run-a", "cardiac2d")
    pg.wait_for_function("document.querySelector('#metrics').innerText.includes('cardiac2d')")
    open_tab(pg, "Upload")
    pg.wait_for_function("document.querySelector('#upload-info').innerText.includes('cardiac2d')")
    # a malformed file: a message in the page, no traceback
    pg.set_input_files("#upload-file input[type=file]", str(tmp_path / "broken.nii.gz"))
    pg.wait_for_timeout(500)
    pg.click("#predict")
    pg.wait_for_function("document.querySelector('#upload-msg').innerText.includes('cannot read')")
    assert "Traceback" not in pg.inner_text("body")
    # a volume given to a run trained on 2D images: predicted slice by slice in axial planes, as `medseg predict` does
    clear = pg.locator("#upload-file button[aria-label='Clear']")
    if clear.count():
        clear.first.click()
    pg.set_input_files("#upload-file input[type=file]", str(tmp_path / "scan.nii.gz"))
    pg.wait_for_timeout(500)
    pg.click("#predict")
    pg.wait_for_function("document.querySelector('#upload-msg').innerText.includes('slice by slice: 8 axial slices')")
    assert "Predicted with cardiac2d" in pg.inner_text("#upload-msg")
    # with the 3D run chosen in the Cases tab, the NIfTI is predicted, shown and offered on its own grid
    open_tab(pg, "Cases")
    pick(pg, "run-a", "cardiac3d")
    pg.wait_for_function("document.querySelector('#metrics').innerText.includes('cardiac3d')")
    open_tab(pg, "Upload")
    pg.wait_for_function("document.querySelector('#upload-info').innerText.includes('cardiac3d')")
    pg.click("#predict")
    pg.wait_for_function("document.querySelector('#upload-msg').innerText.includes('Predicted with cardiac3d')")
    pg.wait_for_selector("#upload-image img")
    assert image_array(pg, "#upload-image").std() > 5
    href = pg.get_attribute("#upload-mask a", "href")
    assert href, "no download link"
    body = pg.request.get(href if href.startswith("http") else url.rstrip("/") + href).body()
    (tmp_path / "mask.nii.gz").write_bytes(body)
    mask = nib.load(str(tmp_path / "mask.nii.gz"))
    assert mask.shape == vol.shape
    np.testing.assert_allclose(mask.affine, aff)


def test_runs_page_links_reports_and_refuses_traversal(page: Any, server: tuple[str, Path]) -> None:
    pg = page
    url, root = server
    open_tab(pg, "Runs")
    pg.wait_for_selector("#runs-table")
    text = pg.inner_text("#runs-table")
    assert "cardiac2d" in text and "cardiac3d" in text and "test mean Dice" in text
    href = pg.get_attribute("#runs-table a:has-text('report')", "href")
    assert href == "/runs/cardiac2d/report/index.html"
    r = pg.request.get(url.rstrip("/") + href)
    assert r.status == 200 and "<html" in r.text().lower()
    os.symlink("/etc/passwd", root / "cardiac2d" / "passwd")
    for bad in (
        "runs/%2e%2e/%2e%2e/etc/passwd",
        "runs/..%2f..%2fetc/passwd",
        "runs/%2Fetc%2Fpasswd",
        "runs/cardiac2d/passwd",
        "runs/cardiac2d/../../../etc/passwd",
    ):
        r = pg.request.get(url + bad)
        assert r.status in (403, 404) and "root:" not in r.text(), bad  # the client may normalise '..' away: then nothing matches
    assert pg.request.get(url + "runs/cardiac2d/passwd").status == 403  # a symbolic link out of the runs folder
    assert pg.outside == [], f"the page fetched from outside this machine: {pg.outside[:5]}"


def test_fresh_page_screenshot(page: Any, server: tuple[str, Path], tmp_path: Path) -> None:
    """A reload shows the defaults again; its picture is the README's screenshot (with MEDSEG_WRITE_SCREENSHOT=1)."""
    pg = page
    url, _ = server
    pg.goto(url)
    pg.wait_for_selector("#case-image img")
    pg.wait_for_function("document.querySelector('#metrics') && document.querySelector('#metrics').innerText.includes('cardiac2d')")
    pg.wait_for_timeout(1000)
    dest = save_screenshot(pg, "demo", tmp_path)
    assert 10_000 < dest.stat().st_size < 400_000
    assert pg.outside == [], f"the page fetched from outside this machine: {pg.outside[:5]}"
