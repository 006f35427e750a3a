"""The Jobs page of the workspace: every job with its state, and the chosen job's live view.

The page polls the server once a second (``gr.Timer``): the job table, the chosen job's progress
(epochs done of planned, from the run's ``history.csv`` and ``run.json``), its last log lines, the
learning curves (``curves.png``, loss, Dice and pixel accuracy, redrawn by the training after every
epoch; sent to the browser only when the file changed) and the last epochs as a table. **Stop**
interrupts a running job (or cancels a queued one), **Resume** queues a stopped or interrupted
training again as ``medseg train --resume RUN`` (``medseg auto``: its command with ``--resume``; its
progress and curves are those of the candidate it trains). For a training's run: evaluation on val or test
(``medseg evaluate``), its report (``medseg report``), both as jobs, and links to the results.
"""

from __future__ import annotations

import csv
import html
import io
import time
from pathlib import Path
from typing import Any

import numpy as np

from medseg.core.errors import MedsegError
from medseg.demo.jobs import Job, JobManager
from medseg.demo.newrun import cli_argv
from medseg.demo.state import file_url, format_number

#: job kinds that train (progress, curves, resume, evaluation of their run)
TRAINING = ("train", "auto")
HISTORY_COLUMNS = (
    ("epoch", "epoch", 0),
    ("train_loss", "train loss", 4),
    ("val_loss", "val loss", 4),
    ("val_dice", "val Dice", 3),
    ("val_pixel_accuracy", "pixel accuracy", 3),
)


def _ago(t: float | None) -> str:
    return "—" if not t else time.strftime("%H:%M:%S", time.localtime(t))


def _duration(job: Job) -> str:
    if not job.started:
        return "—"
    return f"{(job.ended or time.time()) - job.started:.0f} s"


def read_picture(path: Path) -> np.ndarray | None:
    """An RGB picture read once (``None`` when it is being replaced or is damaged)."""
    from PIL import Image

    try:
        with Image.open(path) as im:
            return np.asarray(im.convert("RGB"))
    except (OSError, ValueError):
        return None


def jobs_table(jobs: JobManager) -> str:
    rows = []
    for j in jobs.jobs()[:50]:
        trains = j.kind in TRAINING
        done, total = jobs.progress(j) if trains else (0, None)
        prog = f"{done}/{total} epochs" if trains and total else (f"{done} epochs" if trains else "")
        cells = [j.id, j.kind, j.title, f'<span class="job-state job-{j.state}">{j.state}</span>', prog, _ago(j.started), _duration(j)]
        rows.append("<tr>" + "".join(f"<td>{c if i == 3 else html.escape(str(c))}</td>" for i, c in enumerate(cells)) + "</tr>")
    head = "".join(f"<th>{h}</th>" for h in ("job", "kind", "what", "state", "progress", "started", "time"))
    running = sum(j.state == "running" for j in jobs.jobs())
    queued = sum(j.state == "queued" for j in jobs.jobs())
    note = f"<p>{running} running (at most {jobs.max_jobs} at once), {queued} queued.</p>"
    return note + (f'<table class="medseg-runs" id="jobs-list"><tr>{head}</tr>{"".join(rows)}</table>' if rows else "<p>No jobs yet.</p>")


def history_html(jobs: JobManager, job: Job) -> str:
    folder = jobs.live_folder(job)
    path = (folder or jobs.ws.root) / "history.csv"
    if folder is None or not path.is_file():
        return "<p>No epoch finished yet.</p>"
    try:
        rows = list(csv.DictReader(io.StringIO(path.read_text(encoding="utf-8"))))
    except OSError:
        return ""
    head = "".join(f"<th>{h}</th>" for _, h, _ in HISTORY_COLUMNS)
    body = []
    for r in rows[-8:]:
        cells = []
        for key, _, digits in HISTORY_COLUMNS:
            try:
                cells.append(format_number(float(r.get(key) or "nan"), digits) if digits else html.escape(str(r.get(key, ""))))
            except ValueError:
                cells.append("n/a")
        body.append("<tr>" + "".join(f"<td>{c}</td>" for c in cells) + "</tr>")
    return f'<table class="medseg-runs" id="history-table" data-epochs="{len(rows)}"><tr>{head}</tr>{"".join(body)}</table>'


def status_html(jobs: JobManager, job: Job) -> str:
    parts = [f"<b>{html.escape(job.title)}</b> — {html.escape(job.kind)}, <b id='job-state'>{job.state}</b>"]
    if job.kind in TRAINING:
        done, total = jobs.progress(job)
        if total:
            pct = 100 * min(done, total) / total
            parts.append(f"<progress max='100' value='{pct:.0f}'></progress> {done} / {total} epochs")
        else:
            parts.append(f"{done} epochs done")
    if job.returncode not in (None, 0) and job.state == "failed":
        parts.append(f"exit code {job.returncode} (see the log)")
    parts.append(f"command: <code>medseg {html.escape(' '.join(job.argv[3:]))}</code>")
    return "<p>" + " · ".join(parts) + "</p>"


def links_html(jobs: JobManager, job: Job) -> str:
    if not job.run or not job.run.startswith("runs/"):
        return ""
    run = jobs.ws.root / job.run
    rel = job.run.removeprefix("runs/")
    href = lambda p: "/runs/" + "/".join(file_url(x) for x in f"{rel}/{p}".split("/"))  # noqa: E731
    out = []
    if (run / "report" / "index.html").is_file():
        out.append(f'<a id="report-link" href="{href("report/index.html")}" target="_blank">report</a>')
    if (run / "curves.png").is_file():
        out.append(f'<a href="{href("curves.png")}" target="_blank">curves</a>')
    from medseg import runs

    for split in ("val", "test"):
        s = runs.read_summary(run, split) if (runs.eval_dir(run, split) / runs.SUMMARY_FILE).is_file() else {}
        if s:
            out.append(f"{split}: mean Dice {format_number(s.get('mean_dice'))} ({s.get('n_cases', '?')} cases)")
    return "<p id='run-results'>" + " · ".join(out) + "</p>" if out else "<p id='run-results'>Not evaluated yet.</p>"


def add_jobs_tab(jobs: JobManager) -> dict[str, Any]:
    import gradio as gr

    private = {"api_visibility": "private"}

    def choices() -> list[tuple[str, str]]:
        return [(f"{j.title} ({j.kind}, {j.state}, {j.id})", j.id) for j in jobs.jobs()]

    with gr.Tab("Jobs", id="jobs"):
        table = gr.HTML(jobs_table(jobs), elem_id="jobs-html")
        with gr.Row():
            pick = gr.Dropdown(choices(), value=None, label="job", elem_id="job-pick", scale=4)
            stop = gr.Button("Stop", elem_id="job-stop", scale=1)
            resume = gr.Button("Resume", elem_id="job-resume", scale=1)
        status = gr.HTML(elem_id="job-status")
        with gr.Row():
            # sent as pixels: the training replaces the file while the page may be reading it
            curves = gr.Image(
                label="learning curves (loss, Dice, pixel accuracy)", type="numpy", format="png", interactive=False, elem_id="job-curves", scale=3
            )
            history = gr.HTML(elem_id="job-history")
        with gr.Row():
            split = gr.Radio(["val", "test"], value="test", label="evaluate on", elem_id="eval-split")
            evaluate = gr.Button("Evaluate", elem_id="job-evaluate")
            report = gr.Button("Write report", elem_id="job-report")
        links = gr.HTML(elem_id="job-links")
        action = gr.HTML(elem_id="job-action")
        log = gr.Textbox(label="log (last lines)", lines=10, max_lines=10, interactive=False, autoscroll=True, elem_id="job-log")
        seen = gr.State({"curves": None, "jobs": None})
        timer = gr.Timer(1.0)

    def tick(job_id: str | None, memo: dict[str, Any]) -> tuple[Any, ...]:
        memo = dict(memo or {})
        sig = ";".join(f"{j.id}:{j.state}" for j in jobs.jobs())
        pick_update = gr.update(choices=choices(), value=job_id) if sig != memo.get("jobs") else gr.skip()
        memo["jobs"] = sig
        try:
            job = jobs.get(job_id) if job_id else None
        except MedsegError:
            job = None
        if job is None:
            return jobs_table(jobs), pick_update, "<p>Pick a job.</p>", "", gr.skip(), "", "", memo
        curves_path = (jobs.live_folder(job) or jobs.ws.root / "-") / "curves.png"
        curves_out: Any = gr.skip()
        if job.run and curves_path.is_file():
            stamp = f"{job.id}:{curves_path}:{curves_path.stat().st_mtime_ns}"
            if stamp != memo.get("curves"):
                curves_out, memo["curves"] = read_picture(curves_path), stamp
        elif memo.get("curves") is not None:
            curves_out, memo["curves"] = None, None
        return (
            jobs_table(jobs),
            pick_update,
            status_html(jobs, job),
            history_html(jobs, job),
            curves_out,
            links_html(jobs, job),
            jobs.log_tail(job.id, 3000),
            memo,
        )

    def act(kind: str, job_id: str | None, split_v: str = "test") -> str:
        try:
            job = jobs.get(job_id)
            if kind == "stop":
                jobs.stop(job.id)
                return "<p>stop requested</p>"
            if kind == "resume":
                jobs.resume(job.id)
                return "<p>queued again: <code>medseg train --resume</code></p>"
            if not job.run or not job.run.startswith("runs/") or job.kind not in (*TRAINING, "evaluate", "report"):
                raise MedsegError("this job has no run to evaluate", where=job.id, fix="pick a training job")
            if split_v not in ("val", "test"):
                raise MedsegError(f"unknown split {split_v!r}", where="evaluate on", fix="val or test")
            run = jobs.ws.inside(job.run)
            name = run.name
            if kind == "evaluate":
                argv = cli_argv("evaluate", job.run, "--split", split_v, "--no-progress")
            else:
                if not (run / "eval" / split_v / "summary.json").is_file():
                    raise MedsegError(f"the run is not evaluated on {split_v} yet", where=job.run, fix="press Evaluate first")
                argv = cli_argv("report", job.run, "--split", split_v)
            new = jobs.submit(kind, f"{kind} {name} on {split_v}", argv, run=job.run)
        except MedsegError as e:
            return f'<p class="medseg-msg">⚠ {html.escape(e.one_line())}</p>'
        return f"<p>queued as job {html.escape(new.id)}</p>"

    outputs = [table, pick, status, history, curves, links, log, seen]
    timer.tick(tick, [pick, seen], outputs, concurrency_id="tick", concurrency_limit=4, show_progress="hidden", **private)
    pick.change(lambda: {"curves": None, "jobs": None}, None, seen, **private).then(tick, [pick, seen], outputs, **private)
    stop.click(lambda j: act("stop", j), pick, action, **private)
    resume.click(lambda j: act("resume", j), pick, action, **private)
    evaluate.click(lambda j, s: act("evaluate", j, s), [pick, split], action, **private)
    report.click(lambda j, s: act("report", j, s), [pick, split], action, **private)
    return {"pick": pick, "timer": timer}
