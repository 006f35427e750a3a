"""The whole DIGITS path in a real browser: ``medseg workspace`` in a background process, driven by headless Chromium.

Create a data set from image and mask folders, start a 2-epoch training, watch its curves grow without
reloading, stop it, resume it, evaluate it, open its report and a case with the opacity slider moved.
Each action's latency (click → the page shows the answer) is measured while a training runs. Several
minutes on a 2-core machine: marked slow (``make test-all``, or ``pytest -m slow``).
``MEDSEG_WRITE_SCREENSHOT=1`` writes the pages' screenshots to ``docs/img/workspace-*.png``.
"""

from __future__ import annotations

import io
import json
import os
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from browser import browser_page, has_text, medseg_server, open_tab, pick, save_screenshot

TIMEOUT_MS = 120_000  # the page's own answers
#: a wait that includes a job's process: on a 2-core machine shared at load 15, starting ``medseg train``
#: (importing torch and Lightning) took 3.5 minutes and one epoch 3 more
JOB_TIMEOUT_MS = 1_200_000
MODEL = "{channels: [8, 16], num_res_units: 0}"


def _write_folders(root: Path) -> None:
    """A folder of PNG images and one of PNG masks (the cardiac phantom), as a user would copy them in."""
    from PIL import Image

    from medseg.data.builtin import make_builtin

    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    for case in make_builtin("phantom2d", n_patients=8, slices_per_patient=2, size=32).cases:
        img = case.image[0]
        grey = np.round(255 * (img - img.min()) / max(float(np.ptp(img)), 1e-6)).astype(np.uint8)
        Image.fromarray(grey).save(root / "images" / f"{case.case_id}.png")
        Image.fromarray(case.label.astype(np.uint8)).save(root / "masks" / f"{case.case_id}.png")


@pytest.fixture(scope="module")
def workspace(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Path]]:
    root = tmp_path_factory.mktemp("workspace-browser") / "ws"
    _write_folders(root / "data" / "cardiac")
    args = ["workspace", str(root), "--max-jobs", "2", "--max-upload-mb", "5"]
    with medseg_server(args, root.parent / "server.log", timeout_s=120) as url:
        yield url, root


def _timed(pg: Any, latencies: dict[str, float], name: str, action: Any, condition: str) -> None:
    """Run ``action`` and wait for ``condition`` (JavaScript); record the seconds between them."""
    t0 = time.perf_counter()
    action()
    pg.wait_for_function(condition, polling=50)
    latencies[name] = round(time.perf_counter() - t0, 3)


def _screenshot(pg: Any, name: str, tmp_path: Path, full_page: bool = True) -> None:
    save_screenshot(pg, f"workspace-{name}", tmp_path, full_page=full_page)


#: records every picture the curves panel shows (the page is never reloaded: the record would be lost)
WATCH_CURVES = """() => {
  window.medsegCurves = [];
  const seen = () => {
    const img = document.querySelector('#job-curves img');
    const src = img && img.getAttribute('src');
    if (src && window.medsegCurves[window.medsegCurves.length - 1] !== src) window.medsegCurves.push(src);
  };
  new MutationObserver(seen).observe(document.body, {subtree: true, childList: true, attributes: true, attributeFilter: ['src']});
  seen();
}"""


def _epochs(n: int) -> str:
    return f"document.querySelector('#history-table') && document.querySelector('#history-table').dataset.epochs === '{n}'"


def _picture(url: str) -> np.ndarray:
    from PIL import Image

    with urllib.request.urlopen(url, timeout=30) as r:
        return np.asarray(Image.open(io.BytesIO(r.read())).convert("RGB"))


@pytest.mark.slow
def test_the_digits_path(workspace: tuple[str, Path], tmp_path: Path) -> None:
    from PIL import Image

    url, root = workspace
    latencies: dict[str, float] = {}
    with browser_page(url, TIMEOUT_MS) as (browser, pg):
        # 1. a data set from the image and mask folders (the picker lists folders under data/ only)
        open_tab(pg, "Data sets")
        pick(pg, "ds-source", "cardiac")
        pg.fill("#ds-name textarea, #ds-name input", "cardiac")
        pg.click("#ds-create")
        pg.wait_for_function(has_text("ds-msg", "data set cardiac created"), timeout=JOB_TIMEOUT_MS)
        pg.wait_for_function(has_text("ds-info", "Voxels per class"))
        assert pg.input_value("#ds-pick input") == "cardiac"
        assert "train cases" in pg.inner_text("#ds-info")
        pg.wait_for_selector("#ds-grid img")
        _screenshot(pg, "datasets", tmp_path)

        # 2. a new run: a field out of range is refused with its name, then the 2-epoch run is started
        open_tab(pg, "New run")
        pg.fill("#nr-name textarea, #nr-name input", "unet-digits")
        pg.fill("#nr-params textarea, #nr-params input", MODEL)
        pg.fill("#nr-iters input", "80")  # long enough for the stop to land during the second epoch
        pg.fill("#nr-lr input", "0.01")
        pg.fill("#nr-batch input", "4")
        pg.fill("#nr-epochs input", "0")
        pg.wait_for_function(has_text("nr-msg", "train.epochs"))
        pg.fill("#nr-epochs input", "2")
        pg.wait_for_function(has_text("nr-msg", "ready to start"))
        pg.wait_for_function(has_text("nr-command", "medseg train jobs/configs/unet-digits.yaml --out runs/unet-digits"))
        pick(pg, "nr-recipe", "auto")  # auto: the medseg auto command, with the budget in whole seconds
        pg.fill("#nr-budget textarea, #nr-budget input", "2m")
        pg.wait_for_function(has_text("nr-command", "medseg auto datasets/cardiac --out runs/unet-digits --time-budget 120s"))
        pg.fill("#nr-budget textarea, #nr-budget input", "")
        pick(pg, "nr-recipe", "defaults")
        pg.wait_for_function(has_text("nr-command", "medseg train jobs/configs/unet-digits.yaml --out runs/unet-digits"))
        _screenshot(pg, "newrun", tmp_path)
        pg.click("#nr-start")

        # 3. the job: live curves without reloading, stop, resume
        pg.evaluate(WATCH_CURVES)
        pg.wait_for_function(has_text("job-status", "unet-digits"))
        pg.wait_for_function(has_text("job-state", "running"))
        # while it trains, every action answers quickly
        _timed(pg, latencies, "open the Data sets tab", lambda: open_tab(pg, "Data sets"), has_text("ds-info", "Voxels per class"))
        _timed(pg, latencies, "refresh the data sets", lambda: pg.click("#ds-refresh"), "true")
        _timed(
            pg,
            latencies,
            "open the New run tab",
            lambda: open_tab(pg, "New run"),
            "document.querySelector('#nr-name').offsetParent !== null",
        )
        _timed(pg, latencies, "validate a field", lambda: pg.fill("#nr-lr input", "-1"), has_text("nr-msg", "train.lr"))
        _timed(pg, latencies, "validate it again", lambda: pg.fill("#nr-lr input", "0.01"), "!(" + has_text("nr-msg", "train.lr") + ")")
        _timed(pg, latencies, "open the Jobs tab", lambda: open_tab(pg, "Jobs"), has_text("job-status", "unet-digits"))
        pg.wait_for_function(_epochs(1), timeout=JOB_TIMEOUT_MS)
        pg.wait_for_selector("#job-curves img")
        _timed(pg, latencies, "stop the training", lambda: pg.click("#job-stop"), has_text("job-action", "stop requested"))
        pg.wait_for_function(has_text("job-state", "stopped"), timeout=JOB_TIMEOUT_MS)
        assert "last.ckpt" in os.listdir(root / "runs" / "unet-digits" / "checkpoints")
        _timed(pg, latencies, "resume it", lambda: pg.click("#job-resume"), has_text("job-action", "queued again"))
        pg.wait_for_function(has_text("job-state", "finished"), timeout=JOB_TIMEOUT_MS)
        pg.wait_for_function(_epochs(2))
        pg.wait_for_function("window.medsegCurves && window.medsegCurves.length >= 2")  # epoch 1, then epoch 2: no reload
        shown = pg.evaluate("window.medsegCurves.map(s => new URL(s, document.baseURI).href)")
        first, last = _picture(shown[0]), _picture(shown[-1])
        assert first.shape != last.shape or np.abs(first.astype(int) - last.astype(int)).max() > 0, "the curves did not change"
        on_disk = np.asarray(Image.open(root / "runs" / "unet-digits" / "curves.png").convert("RGB"))
        np.testing.assert_array_equal(last, on_disk)  # the page ends on the second epoch's curves
        assert "--resume runs/unet-digits" in pg.inner_text("#job-status")
        _screenshot(pg, "jobs", tmp_path)

        # 4. results: evaluation on test, the report, a case with the opacity moved
        pg.locator("#eval-split label", has_text="test").click()
        pg.click("#job-evaluate")
        pg.wait_for_function(has_text("run-results", "test: mean Dice"), timeout=JOB_TIMEOUT_MS)
        pg.wait_for_function(r"/evaluate[^\n]*finished/.test(document.querySelector('#jobs-list').innerText)", timeout=JOB_TIMEOUT_MS)  # one job per run
        pg.click("#job-report")
        pg.wait_for_selector("#report-link", timeout=JOB_TIMEOUT_MS)
        href = pg.get_attribute("#report-link", "href")
        assert href == "/runs/unet-digits/report/index.html"
        report = browser.new_page(viewport={"width": 1280, "height": 1500})
        report.goto(url.rstrip("/") + href)
        assert "unet-digits" in report.inner_text("body")
        _screenshot(report, "report", tmp_path, full_page=False)  # its first screen: scores, curves, Dice per class
        report.close()
        open_tab(pg, "Cases")
        pg.wait_for_function(has_text("metrics", "unet-digits"))
        tab_bar = pg.evaluate("Array.from(document.querySelectorAll('[role=tab]')).map(b => b.innerText.trim())")
        assert tab_bar == ["Data sets", "New run", "Jobs", "Cases", "Upload", "Runs"], tab_bar
        pg.wait_for_selector("#case-image img")
        before = pg.get_attribute("#case-image img", "src")
        pg.locator("#opacity input[type=range]").fill("1")
        pg.wait_for_function(f"document.querySelector('#case-image img').src !== {json.dumps(before)}")
        _screenshot(pg, "cases", tmp_path)
        outside = list(pg.outside)
    assert outside == [], f"the page fetched from outside this machine: {outside[:5]}"
    print("latencies (s):", json.dumps(latencies))
    (tmp_path / "latencies.json").write_text(json.dumps(latencies))
    slow = {k: v for k, v in latencies.items() if v > 3.0}
    assert not slow, f"actions slower than 3 s while a training runs: {slow}"
