"""The web demo: browse a folder of runs, compare predictions on test cases, try a model on an upload.

``medseg demo RUNS_DIR`` calls :func:`~medseg.demo.server.serve`. The page (gradio) has three tabs
(``medseg workspace ROOT`` adds Data sets, New run and Jobs before them, :mod:`medseg.demo.pages`):

* **Cases** — one run (or two side by side; the newest run first), a split and a searchable case list, slice slider and plane for
  3D, window/level presets, opacity, per-class visibility, view mode (side by side | overlay |
  error map) and the case's metrics (loss, Dice, HD95, time saved) from ``eval/test/metrics.csv``.
* **Upload** — a NIfTI/NRRD/MHA/PNG file or a zipped DICOM series, predicted by the chosen run in a
  queue of bounded concurrency by the Cases tab's run, shown as an overlay and offered as a mask on the input's grid
  (as ``medseg predict``: a 2D network predicts a volume slice by slice, and the page says so).
* **Runs** — the comparison table with links to each run's report and curves.

Files of the runs folder are served under ``/runs/<path>`` only: absolute paths, ``..`` and
symbolic links that leave the folder are refused (:func:`medseg.demo.runs.safe_path`).
Nothing is fetched from the internet: analytics are off, fonts are the system's.
"""

from __future__ import annotations

import html
import logging
import os
import re
import tempfile
from pathlib import Path
from typing import Any

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np

from medseg.core.errors import MedsegError
from medseg.demo.served import Served
from medseg.demo.state import NONE, DemoState
from medseg.demo.uploads import UPLOAD_SUFFIXES
from medseg.viz import render as R

log = logging.getLogger("medseg.demo")
CSS = """
#case-image img, #upload-image img { image-rendering: pixelated; }
.medseg-legend { font-size: 0.9em; padding: 4px 0; }
table.medseg-metrics, table.medseg-runs { border-collapse: collapse; font-size: 0.9em; }
table.medseg-metrics td, table.medseg-metrics th, table.medseg-runs td, table.medseg-runs th { border: 1px solid #ccc; padding: 2px 6px; text-align: right; }
table.medseg-metrics td:first-child, table.medseg-runs td:first-child { text-align: left; }
.medseg-msg { color: #b00020; font-weight: 600; }
"""


def hide_temp_paths(text: str) -> str:
    """``text`` with every path inside the server's temporary folders cut to its file name (uploads, extracted zips)."""
    roots = {os.path.realpath(tempfile.gettempdir()), tempfile.gettempdir(), os.environ.get("GRADIO_TEMP_DIR") or tempfile.gettempdir()}
    for root in sorted(roots, key=len, reverse=True):
        text = re.sub(re.escape(root.rstrip("/")) + r"/[^\s'\",;:)]*", lambda m: m.group(0).rstrip("/").rsplit("/", 1)[-1], text)
    return text


def _message(e: BaseException) -> str:
    text = e.one_line() if isinstance(e, MedsegError) else f"unexpected error ({type(e).__name__}); the server keeps running"
    return f'<p class="medseg-msg">⚠ {html.escape(hide_temp_paths(text))}</p>'


def build_app(runs_dir: str | Path, max_upload_mb: float = 512, max_concurrent: int = 2, *, jobs: Any = None) -> Any:
    """Build the gradio ``Blocks`` of the demo (not started).

    Args:
        runs_dir: the folder holding run folders.
        max_upload_mb: upload size limit in MB.
        max_concurrent: predictions of uploads running at once; more wait in the queue.
        jobs: a :class:`~medseg.demo.jobs.JobManager` to add the workspace pages (data sets, new run, jobs).

    Returns:
        The ``gradio.Blocks``; its ``.medseg`` attribute is the :class:`DemoState`.
    """
    import gradio as gr

    st = DemoState(runs_dir, max_upload_mb)
    served = Served(st.out_dir)  # pictures go to gradio as files; upload views stay here, bounded
    names = st.runs.names
    first = st.runs.newest
    splits = ["test", "val", "train"]
    planes = list(R.PLANES)

    def on_run(run_a: str | None, split: str) -> tuple[Any, Any, str]:
        try:
            choices = st.case_choices(run_a, split)
            cls_names, _, fg, _ = st.classes(run_a) if run_a else ([], [], [], False)
        except MedsegError as e:
            log.warning("%s", e)
            return gr.update(choices=[], value=None), gr.update(choices=[], value=[]), st.model_note(run_a)
        fg_names = [cls_names[k] for k in fg]
        case_update = gr.update(choices=choices, value=choices[0][1] if choices else None)
        return case_update, gr.update(choices=fg_names, value=fg_names), st.model_note(run_a)

    def on_load(run_a: str | None, run_b: str | None) -> tuple[Any, Any]:
        """New runs appear when the page is (re)loaded or the Cases tab opened; the newest is the default."""
        names = st.runs.refresh()
        return (
            gr.update(choices=names, value=run_a if run_a in names else st.runs.newest),
            gr.update(choices=[NONE, *names], value=run_b if run_b in names else NONE),
        )

    def on_case(run_a: str | None, case_id: str | None, plane: str) -> tuple[Any, Any]:
        try:
            n, best, is3d = st.slice_setup(run_a, case_id, plane)
        except MedsegError:
            n, best, is3d = 1, 0, False
        return gr.update(maximum=max(n - 1, 1), value=best, visible=is3d), gr.update(visible=is3d)

    def do_render(*args: Any) -> tuple[Any, str, str]:
        try:
            picture, metrics, legend = st.render(*args)
            return served.picture(picture), metrics, legend
        except Exception as e:  # never a traceback in the page
            if not isinstance(e, MedsegError):
                log.exception("render failed")
            return None, _message(e), ""

    def do_predict(path: str | None, run_name: str | None, alpha: float, progress: Any = gr.Progress()) -> tuple[Any, ...]:
        try:
            state, mask = st.predict(path, run_name, lambda f, t: progress(f, desc=t))
        except Exception as e:
            if not isinstance(e, MedsegError):
                log.exception("prediction failed")
            return None, None, _message(e), None, gr.update(visible=False)
        n = 1
        if state["image"].ndim == 3:
            n = state["image"].shape[R.plane_axes(state["affine"])["axial"]]
        mid = n // 2
        shape = tuple(state["image"].shape)
        note = f" <span id='upload-sliced'>{html.escape(state['note'])}.</span>" if state.get("note") else ""
        msg = f"<p>Predicted with <b>{html.escape(run_name or '')}</b>: mask {html.escape(mask.name)} on the input's grid (shape {shape}).{note}</p>"
        pred = state["pred"]
        if pred.dtype.kind in "iub" and pred.size and pred.min() >= 0 and pred.max() < 256:
            state = {**state, "pred": pred.astype(np.uint8)}
        token = served.remember(state)  # the session keeps a token, not the arrays
        picture = served.picture(st.upload_picture(state, mid, alpha))
        return picture, str(mask), msg, token, gr.update(maximum=max(n - 1, 1), value=mid, visible=n > 1)

    def show_upload(token: str | None, index: float, alpha: float) -> Any:
        return served.picture(st.upload_picture(served.recall(token), index, alpha))

    title = "medseg workspace" if jobs is not None else "medseg demo"
    # gradio's cached copies of served files are removed after an hour (checked every 10 minutes)
    with gr.Blocks(title=title, analytics_enabled=False, delete_cache=(600, 3600)) as demo:
        where = jobs.ws.root.name if jobs is not None else st.runs.root.name
        gr.Markdown(f"## {title} — `{html.escape(where)}/`")
        tabs = gr.Tabs(elem_id="tabs")
        tabs.__enter__()
        ws_parts: dict[str, Any] = {}
        if jobs is not None:
            from medseg.demo.pages import add_workspace_tabs

            ws_parts = add_workspace_tabs(jobs, tabs)
        with gr.Tab("Cases", id="cases") as cases_tab:
            with gr.Row():
                run_a = gr.Dropdown(names, value=first, label="run", elem_id="run-a", scale=2)
                run_b = gr.Dropdown([NONE, *names], value=NONE, label="compare with", elem_id="run-b", scale=2)
                split = gr.Radio(splits, value="test", label="split", elem_id="split", scale=1)
                case = gr.Dropdown([], label="case (type to search)", filterable=True, elem_id="case", scale=3)
            with gr.Row():
                view = gr.Radio(list(R.VIEWS), value="side by side", label="view", elem_id="view")
                plane = gr.Radio(planes, value="axial", label="plane", elem_id="plane", visible=False)
                index = gr.Slider(0, 1, value=0, step=1, label="slice", elem_id="slice", visible=False)
            with gr.Row():
                preset = gr.Dropdown(list(R.WINDOWS), value="auto (1–99 %)", label="window / level", elem_id="window")
                alpha = gr.Slider(0, 1, value=0.45, step=0.05, label="opacity", elem_id="opacity")
                visible = gr.CheckboxGroup([], label="labels shown", elem_id="labels")
            legend = gr.HTML(elem_id="legend")
            with gr.Row():
                image = gr.Image(label="case", show_label=False, type="numpy", interactive=False, elem_id="case-image", scale=3, format="png")
                metrics = gr.HTML(elem_id="metrics")
        with gr.Tab("Upload", id="upload"):
            gr.Markdown(
                f"Upload one image ({', '.join(UPLOAD_SUFFIXES)}; a .zip holds one DICOM series; at most {max_upload_mb:g} MB). "
                "The run chosen in the Cases tab predicts it; the mask is offered on the input's grid."
            )
            up_info = gr.HTML(st.model_note(first), elem_id="upload-info")
            up_file = gr.File(label="image", type="filepath", elem_id="upload-file")
            up_btn = gr.Button("Predict", variant="primary", elem_id="predict")
            up_msg = gr.HTML(elem_id="upload-msg")
            with gr.Row():
                up_alpha = gr.Slider(0, 1, value=0.45, step=0.05, label="opacity", elem_id="upload-opacity")
                up_index = gr.Slider(0, 1, value=0, step=1, label="slice", visible=False, elem_id="upload-slice")
            up_image = gr.Image(label="prediction", type="numpy", interactive=False, elem_id="upload-image", format="png")
            up_mask = gr.File(label="mask (download)", interactive=False, elem_id="upload-mask")
            up_state = gr.State(None, time_to_live=3600)  # a token of `served`
        with gr.Tab("Runs", id="runs") as runs_tab:
            refresh = gr.Button("Refresh", size="sm")
            runs_table = gr.HTML(elem_id="runs-html")
            if jobs is not None:
                from medseg.demo.results_page import add_comparison

                add_comparison(jobs, st)

        tabs.__exit__(None, None, None)

        view_inputs = [run_a, run_b, case, plane, index, preset, alpha, visible, view, split]
        view_outputs = [image, metrics, legend]
        conc = {"concurrency_limit": max(2, max_concurrent), "concurrency_id": "view"}
        private = {"api_visibility": "private"}
        for trigger in (run_a.input, split.input):
            trigger(on_run, [run_a, split], [case, visible, up_info], **private).then(on_case, [run_a, case, plane], [index, plane], **private).then(
                do_render, view_inputs, view_outputs, **conc, **private
            )
        for trigger in (case.input, plane.input):
            trigger(on_case, [run_a, case, plane], [index, plane], **private).then(do_render, view_inputs, view_outputs, **conc, **private)
        for trigger in (index.input, alpha.input, preset.input, visible.input, view.input, run_b.input):
            trigger(do_render, view_inputs, view_outputs, trigger_mode="always_last", **conc, **private)
        for trigger in (demo.load, cases_tab.select):
            trigger(on_load, [run_a, run_b], [run_a, run_b], **private).then(on_run, [run_a, split], [case, visible, up_info], **private).then(
                on_case, [run_a, case, plane], [index, plane], **private
            ).then(do_render, view_inputs, view_outputs, **conc, **private)
        demo.load(st.runs_html, None, runs_table, **private)
        if ws_parts:
            demo.load(ws_parts["show"], ws_parts["ds_pick"], [ws_parts["ds_info"], ws_parts["ds_grid"]], **private)
        refresh.click(st.runs_html, None, runs_table, **private)
        runs_tab.select(st.runs_html, None, runs_table, **private)

        up_btn.click(
            do_predict,
            [up_file, run_a, up_alpha],
            [up_image, up_mask, up_msg, up_state, up_index],
            api_name="predict",
            concurrency_limit=max_concurrent,
            concurrency_id="predict",
        )
        for trigger in (up_index.input, up_alpha.input):
            trigger(show_upload, [up_state, up_index, up_alpha], up_image, trigger_mode="always_last", **private)

    demo.queue(default_concurrency_limit=max_concurrent, max_size=256)
    demo.state_session_capacity = 200  # sessions whose component values gradio keeps (about 80 KB each; scripts never close theirs)
    demo.medseg = st  # type: ignore[attr-defined]
    demo.medseg_served = served  # type: ignore[attr-defined]
    return demo
