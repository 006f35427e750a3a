"""The workspace's comparison of selected runs (on the Runs tab): a ``medseg report RUN… --out`` job and its link.

Comparison reports are written to ``runs/comparisons/<name>/`` (served under ``/runs/``).
"""

from __future__ import annotations

import html
from typing import Any

from medseg.core.errors import MedsegError
from medseg.demo.jobs import JobManager
from medseg.demo.newrun import cli_argv
from medseg.demo.state import DemoState, file_url
from medseg.demo.workspace import check_name

COMPARISONS = "comparisons"


def comparisons_html(jobs: JobManager) -> str:
    base = jobs.ws.runs_dir / COMPARISONS
    found = sorted(p.parent.name for p in base.glob("*/index.html")) if base.is_dir() else []
    if not found:
        return "<p>No comparison reports yet.</p>"
    links = [f'<a href="/runs/{COMPARISONS}/{file_url(n)}/index.html" target="_blank">{html.escape(n)}</a>' for n in found]
    return "<p id='comparison-links'>Comparison reports: " + " · ".join(links) + "</p>"


def compare_argv(jobs: JobManager, names: list[str], split: str, out_name: str) -> tuple[list[str], str]:
    """The ``medseg report`` job comparing runs (each checked to be a run folder inside ``runs/``)."""
    from medseg.runs import is_run_dir

    if len(names or []) < 2:
        raise MedsegError("pick at least two runs", where="runs to compare", fix="tick two or more runs")
    if split not in ("val", "test"):
        raise MedsegError(f"unknown split {split!r}", where="split", fix="val or test")
    runs = []
    for n in names:
        path = jobs.ws.inside(n, "runs")
        if not is_run_dir(path, trained=True):
            raise MedsegError("not a trained run folder", where=f"runs/{n}", fix="pick runs from the list")
        runs.append(jobs.ws.rel(path))
    out = jobs.ws.new_path(check_name(out_name, "comparison"), f"runs/{COMPARISONS}", "comparison")
    return cli_argv("report", *runs, "--split", split, "--out", jobs.ws.rel(out.parent) + "/" + out.name), jobs.ws.rel(out.parent) + "/" + out.name


def add_comparison(jobs: JobManager, st: DemoState) -> None:
    import gradio as gr

    private = {"api_visibility": "private"}
    gr.Markdown("### Compare selected runs\nA comparison report (`medseg report RUN… --out`): accuracy, size, speed, paired statistics.")
    with gr.Row():
        picks = gr.CheckboxGroup(st.runs.names, label="runs to compare (evaluated on the split)", elem_id="cmp-runs", scale=3)
        split = gr.Radio(["test", "val"], value="test", label="split", elem_id="cmp-split", scale=1)
        name = gr.Textbox(label="name of the comparison", elem_id="cmp-name", scale=2)
    go = gr.Button("Compare selected", elem_id="cmp-go")
    out = gr.HTML(comparisons_html(jobs), elem_id="cmp-msg")

    def run(names: list[str], split_v: str, name_v: str) -> str:
        try:
            argv, target = compare_argv(jobs, names, split_v, name_v)
            job = jobs.submit("compare", f"compare {len(names)} runs ({name_v})", argv, run=target)
        except MedsegError as e:
            return f'<p class="medseg-msg">⚠ {html.escape(e.one_line())}</p>'
        return f"<p>queued as job {html.escape(job.id)}; the link appears here when it is done (Refresh).</p>" + comparisons_html(jobs)

    def refresh() -> tuple[Any, str]:
        st.runs.refresh()
        return gr.update(choices=st.runs.names), comparisons_html(jobs)

    go.click(run, [picks, split, name], out, **private)
    gr.Button("Refresh the run list and the links", size="sm", elem_id="cmp-refresh").click(refresh, None, [picks, out], **private)
