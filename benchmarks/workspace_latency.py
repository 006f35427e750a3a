"""Latency of the workspace page while a training job runs: every action should answer within 1 s.

Starts ``medseg workspace`` in a background process over a fresh workspace (a tiny phantom2d data set and a
one-epoch U-Net run, evaluated on test, made here in a few seconds), starts a long training job from the
New run form, waits until it trains (its first epoch is written), then times the page's actions as the
browser sends them: gradio's queue protocol over HTTP (``/gradio_api/queue/join`` and the event stream), the
same events in the same order (a ``.then`` chain is timed to its end), and the pictures an answer names are
downloaded as part of it. Each action is repeated ``--repeats`` times (``--warmup`` unrecorded first); the table
gives the median and the worst, and whether the median is within ``--target`` seconds. The load average of
the machine is printed before and after (the machine may be shared: compare with it).

The page's handlers are private to the page (not in gradio's client API), so ``gradio_client`` cannot call
them; this script speaks the protocol the page itself speaks. There is no reference implementation to
compare with: the figure of merit is the 1 s target, with and without a training running (``--no-job``).

Run:  python benchmarks/workspace_latency.py [--repeats 7] [--warmup 2] [--target 1.0] [--no-job]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

from medseg.core.signals import stop_process_group


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def make_workspace(root: Path) -> None:
    """``root/datasets/tiny`` (phantom2d, 8 patients × 2 slices, 32²) and ``root/runs/bench`` (1 epoch, evaluated on test)."""
    from medseg.config import config_from_dict
    from medseg.data.builtin import make_builtin
    from medseg.data.splits import make_splits, save_splits
    from medseg.data.store import write_dataset
    from medseg.engine.train import train
    from medseg.workflows.evaluate import evaluate_run

    data = make_builtin("phantom2d", n_patients=8, slices_per_patient=2, size=32)
    ds = write_dataset(root / "datasets" / "tiny", data.info, data.cases)
    save_splits(ds.splits_path, data.splits or make_splits(ds.labelled_patients))
    cfg = config_from_dict(
        {
            "name": "bench",
            "data": {"dataset": str(ds.root), "batch_size": 4},
            "model": {"name": "unet", "params": {"channels": [8, 16], "num_res_units": 0}},
            "train": {"epochs": 1, "lr": 1e-2, "device": "cpu", "iterations_per_epoch": 10},
        }
    )
    evaluate_run(train(cfg, root / "runs" / "bench", progress=False), split="test", progress=False)


class Page:
    """One browser session of the gradio page, driven over HTTP: events by the element and trigger they hang on."""

    def __init__(self, url: str):
        self.url = url
        with urllib.request.urlopen(url + "config", timeout=60) as r:
            self.config = json.loads(r.read())
        self.session = uuid.uuid4().hex[:11]
        self.values: dict[int, Any] = {}
        for c in self.config["components"]:
            props = c.get("props", {})
            self.values[c["id"]] = None if c.get("type") == "state" else props.get("value")
        self.deps = self.config["dependencies"]

    def component(self, elem_id: str | None = None, *, type_: str | None = None) -> int:
        for c in self.config["components"]:
            if (elem_id is None or c.get("props", {}).get("elem_id") == elem_id) and (type_ is None or c.get("type") == type_):
                return int(c["id"])
        raise KeyError(elem_id or type_)

    def set(self, elem_id: str, value: Any) -> None:
        self.values[self.component(elem_id)] = value

    def chain(self, target: int, trigger: str) -> list[dict[str, Any]]:
        """The dependency triggered by ``trigger`` on ``target`` and the ``.then`` steps after it, in order."""
        first = [d for d in self.deps if [target, trigger] in [list(t) for t in d.get("targets", [])]]
        if not first:
            raise KeyError(f"no {trigger} event on component {target}")
        out = [first[0]]
        while True:
            nxt = [d for d in self.deps if d.get("trigger_after") == out[-1]["id"]]
            if not nxt:
                return out
            out.append(nxt[0])

    def _call(self, dep: dict[str, Any], target: int) -> list[Any]:
        body = {
            "data": [self.values.get(i) for i in dep["inputs"]],
            "event_data": None,
            "fn_index": dep["id"],
            "trigger_id": target,
            "session_hash": self.session,
        }
        req = urllib.request.Request(self.url + "gradio_api/queue/join", json.dumps(body).encode(), {"Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=120) as r:
            event_id = json.loads(r.read())["event_id"]
        with urllib.request.urlopen(f"{self.url}gradio_api/queue/data?session_hash={self.session}", timeout=120) as stream:
            for raw in stream:
                line = raw.decode("utf-8", errors="replace").strip()
                if not line.startswith("data:"):
                    continue
                msg = json.loads(line[5:])
                if msg.get("event_id") != event_id or msg.get("msg") != "process_completed":
                    continue
                if not msg.get("success", False):
                    raise RuntimeError(f"event {dep['id']} failed: {msg.get('output')}")
                return list(msg["output"]["data"])
        raise RuntimeError(f"event {dep['id']}: the stream closed without an answer")

    def _fetch_files(self, value: Any) -> None:
        """Download what an answer names (a picture), as the browser does before showing it."""
        if isinstance(value, dict) and isinstance(value.get("url"), str):
            with urllib.request.urlopen(value["url"], timeout=60) as r:
                r.read()
        elif isinstance(value, dict) and value.get("__type__") == "update":
            self._fetch_files(value.get("value"))

    def fire(self, elem_id: str | None, trigger: str, *, target: int | None = None) -> None:
        """Trigger an event as the browser does: each step of its chain with the current values; outputs update them."""
        tid = target if target is not None else self.component(elem_id)
        for dep in self.chain(tid, trigger):
            data = self._call(dep, tid)
            for comp, value in zip(dep["outputs"], data, strict=False):
                self._fetch_files(value)
                if isinstance(value, dict) and value.get("__type__") == "update":
                    if "value" in value:
                        self.values[comp] = value["value"]
                elif not (isinstance(value, dict) and value.get("__type__")):
                    self.values[comp] = value


def timed(fn: Callable[[], Any], repeats: int, warmup: int) -> list[float]:
    for _ in range(warmup):
        fn()
    out = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t0)
    return out


def start_server(root: Path, port: int, log: Path) -> subprocess.Popen:
    env = {**os.environ, "GRADIO_ANALYTICS_ENABLED": "False", "PYTHONUNBUFFERED": "1"}
    cmd = [sys.executable, "-m", "medseg.cli", "workspace", str(root), "--port", str(port), "--max-jobs", "1"]
    proc = subprocess.Popen(cmd, stdout=log.open("wb"), stderr=subprocess.STDOUT, env=env, start_new_session=True)
    deadline = time.time() + 180
    while time.time() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"medseg workspace exited: {log.read_text()[-2000:]}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=2):
                return proc
        except OSError:
            time.sleep(0.5)
    proc.kill()
    raise SystemExit("medseg workspace did not start within 180 s")


def start_training(page: Page, root: Path) -> str:
    """Fill the New run form and press Start training (a long run: it trains through the whole measurement)."""
    for elem, value in (
        ("nr-name", "busy"),
        ("nr-dataset", "tiny"),
        ("nr-params", "{channels: [8, 16], num_res_units: 0}"),
        ("nr-epochs", 1000),
        ("nr-iters", 50),
        ("nr-batch", 4),
    ):
        page.set(elem, value)
    page.fire("nr-start", "click")
    assert "queued as job" in str(page.values[page.component("nr-msg")]), page.values[page.component("nr-msg")]
    history = root / "runs" / "busy" / "history.csv"
    deadline = time.time() + 600
    while not (history.is_file() and len(history.read_text().splitlines()) >= 2):
        if time.time() > deadline:
            raise SystemExit("the training job did not finish an epoch within 10 minutes")
        time.sleep(1)
    jobs = sorted((root / "jobs").glob("*-train-*.json"))
    return json.loads(jobs[-1].read_text())["id"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--target", type=float, default=1.0, help="seconds an action may take")
    ap.add_argument("--no-job", action="store_true", help="measure without a training running")
    ap.add_argument("--keep", action="store_true", help="keep the workspace folder")
    args = ap.parse_args()

    tmp = Path(tempfile.mkdtemp(prefix="ws-latency-"))
    root = tmp / "ws"
    print(f"load average before: {' '.join(f'{x:.2f}' for x in os.getloadavg())} ({os.cpu_count()} CPUs)")
    t0 = time.perf_counter()
    make_workspace(root)
    port = free_port()
    proc = start_server(root, port, tmp / "server.log")
    url = f"http://127.0.0.1:{port}/"
    print(f"workspace and run made, server up in {time.perf_counter() - t0:.0f} s")
    try:
        page = Page(url)
        job_id = None
        if not args.no_job:
            job_id = start_training(page, root)
            print(f"training job {job_id} is training (first epoch written)")
        page.set("ds-pick", "tiny")
        page.set("run-a", "bench")
        page.set("split", "test")
        page.fire("run-a", "input")  # the case list, as the page's first load gives it
        case = page.values[page.component("case")]
        picture, metrics = page.values[page.component("case-image")], page.values[page.component("metrics")]
        assert isinstance(picture, dict) and picture.get("url") and "mean Dice" in str(metrics), (picture, metrics)
        page.set("nr-name", "probe")  # a valid form: the whole config is checked on every change
        page.fire("nr-lr", "change")
        assert "ready to start" in str(page.values[page.component("nr-msg")]), page.values[page.component("nr-msg")]
        timer = page.component(type_="timer")
        page.set("job-pick", job_id)

        alphas = iter([0.1 * (i % 10) for i in range(1000)])

        def move_slider() -> None:
            page.set("opacity", next(alphas))
            page.fire("opacity", "input")

        actions: list[tuple[str, Callable[[], Any]]] = [
            ("list the data sets (Refresh)", lambda: page.fire("ds-refresh", "click")),
            ("show a data set (inspect view)", lambda: page.fire("ds-pick", "change")),
            ("validate a New run field", lambda: page.fire("nr-lr", "change")),
            ("open a run (Cases: run → cases → picture)", lambda: page.fire("run-a", "input")),
            ("open a case (slices → picture)", lambda: (page.set("case", case), page.fire("case", "input"))),
            ("move the opacity slider", move_slider),
        ]
        if job_id is not None:
            actions += [
                ("refresh the job view (tables, log)", lambda: page.fire(None, "tick", target=timer)),
                ("choose the job (view and curves sent anew)", lambda: page.fire("job-pick", "change")),
            ]
        rows = []
        for name, fn in actions:
            times = timed(fn, args.repeats, args.warmup)
            rows.append((name, statistics.median(times), max(times)))
        running = job_id is not None and json.loads((root / "jobs" / f"{job_id}.json").read_text())["state"] == "running"
    finally:
        stop_process_group(proc, 30)
        if not args.keep:
            shutil.rmtree(tmp, ignore_errors=True)
    print(f"\nwhile {'a training job runs' if job_id else 'no job runs'} (median and worst of {args.repeats}, after {args.warmup} warm-up):")
    width = max(len(r[0]) for r in rows)
    print(f"{'action':<{width}}  {'median s':>8}  {'worst s':>8}  ≤ {args.target:g} s")
    for name, med, worst in rows:
        print(f"{name:<{width}}  {med:8.3f}  {worst:8.3f}  {'yes' if med <= args.target else 'NO'}")
    if job_id is not None:
        print(f"the job was still training at the end: {'yes' if running else 'NO'}")
    print(f"load average after: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    ok = all(med <= args.target for _, med, _ in rows)
    print(f"every action within {args.target:g} s (median): {'yes' if ok else 'NO'}")


if __name__ == "__main__":
    main()
