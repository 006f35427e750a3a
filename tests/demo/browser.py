"""What the browser tests share: a ``medseg`` web server in a background process, Debian's Chromium driven by
Playwright, and small page helpers (pick from a dropdown, wait for a text, read or save a picture).

The browser is the Debian ``chromium`` package (``/usr/bin/chromium``, or ``MEDSEG_CHROMIUM``); Playwright's
own browser download is never used. A missing browser fails the tests: it does not skip them.
``MEDSEG_WRITE_SCREENSHOT=1`` makes :func:`save_screenshot` write into ``docs/img/``.
"""

from __future__ import annotations

import io
import json
import os
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from helpers import REPO
from medseg.core.signals import stop_process_group

CHROMIUM = os.environ.get("MEDSEG_CHROMIUM", "/usr/bin/chromium")
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update", "--disable-sync", "--no-first-run"]
DOCS_IMG = REPO / "docs" / "img"


def require_chromium() -> None:
    if not Path(CHROMIUM).is_file():
        pytest.fail(f"Chromium not found at {CHROMIUM}: install the Debian package (apt-get install chromium) or set MEDSEG_CHROMIUM", pytrace=False)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextmanager
def medseg_server(args: list[str], log_path: Path, *, timeout_s: float, while_starting: Callable[[], None] | None = None) -> Iterator[str]:
    """``medseg ARGS --port P`` in its own process group; yields its URL once it answers, stops it afterwards.

    Args:
        args: the command after ``medseg`` (e.g. ``["demo", RUNS]``).
        log_path: where its output goes (shown when it exits early).
        timeout_s: how long it may take to answer.
        while_starting: work done while the server starts (e.g. training the runs it will show).
    """
    require_chromium()
    port = free_port()
    env = {**os.environ, "GRADIO_ANALYTICS_ENABLED": "False", "PYTHONUNBUFFERED": "1"}
    log = open(log_path, "w+")  # noqa: SIM115 - closed below
    cmd = [sys.executable, "-m", "medseg.cli", *args, "--port", str(port)]
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True)
    url = f"http://127.0.0.1:{port}/"
    try:
        if while_starting is not None:
            while_starting()
        deadline = time.time() + timeout_s
        while True:
            if proc.poll() is not None:
                log.seek(0)
                pytest.fail(f"medseg {args[0]} exited early:\n{log.read()}")
            try:
                with urllib.request.urlopen(url, timeout=2) as r:
                    if r.status == 200:
                        break
            except OSError:
                time.sleep(0.5)
            if time.time() > deadline:
                pytest.fail(f"medseg {args[0]} did not start within {timeout_s:.0f} s")
        yield url
    finally:
        stop_process_group(proc, 20)
        log.close()


@contextmanager
def browser_page(url: str, timeout_ms: float) -> Iterator[tuple[Any, Any]]:
    """Chromium and one page at ``url`` (1280 × 1000); ``page.outside`` lists requests that left this machine."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=FLAGS)
        pg = browser.new_page(viewport={"width": 1280, "height": 1000})
        pg.set_default_timeout(timeout_ms)
        pg.outside = []
        pg.on("request", lambda r: pg.outside.append(r.url) if not r.url.startswith((url, "data:", "blob:")) else None)
        pg.goto(url)
        try:
            yield browser, pg
        finally:
            browser.close()


def open_tab(pg: Any, name: str) -> None:
    """Click the page's tab named ``name``."""
    pg.get_by_role("tab", name=name).click()


def pick(pg: Any, elem: str, text: str) -> None:
    """Choose ``text`` in the dropdown ``#elem`` by typing it, as a user does."""
    pg.click(f"#{elem} input")
    pg.fill(f"#{elem} input", text)
    pg.locator('[role="option"]', has_text=text).first.click()


def has_text(elem: str, needle: str) -> str:
    """JavaScript: whether ``#elem`` exists and shows ``needle`` (for ``wait_for_function``)."""
    return f"document.querySelector('#{elem}') && document.querySelector('#{elem}').innerText.includes({json.dumps(needle)})"


def image_array(pg: Any, selector: str) -> np.ndarray:
    """The RGB pixels of the picture in ``selector`` (fetched as the page fetched it)."""
    from PIL import Image

    src = pg.get_attribute(f"{selector} img", "src")
    body = pg.request.get(src).body() if not src.startswith("data:") else None
    assert body is not None
    return np.asarray(Image.open(io.BytesIO(body)).convert("RGB"))


def save_screenshot(pg: Any, name: str, tmp_path: Path, *, full_page: bool = True) -> Path:
    """The page, at 3/4 size in 96 colours, as ``NAME.png`` in ``docs/img`` (``MEDSEG_WRITE_SCREENSHOT=1``) or ``tmp_path``."""
    from PIL import Image

    img = Image.open(io.BytesIO(pg.screenshot(full_page=full_page))).convert("RGB")
    assert np.asarray(img).std() > 10, f"the {name} page is blank"
    img = img.resize((img.width * 3 // 4, img.height * 3 // 4), Image.LANCZOS).quantize(colors=96)
    dest = (DOCS_IMG if os.environ.get("MEDSEG_WRITE_SCREENSHOT") else tmp_path) / f"{name}.png"
    dest.parent.mkdir(parents=True, exist_ok=True)
    img.save(dest, optimize=True)
    return dest
