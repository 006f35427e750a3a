"""The web demo: browse a folder of runs, compare predictions on test cases, try a model on an upload.

``medseg demo RUNS_DIR`` calls :func:`serve`. The page (gradio) has three tabs:

* **Cases** — one run (or two side by side), a searchable test-case list, slice slider and plane for
  3D, window/level presets, opacity, per-class visibility, view mode (side by side | overlay |
  error map) and the case's metrics (loss, Dice, HD95, time saved) from ``eval/test/metrics.csv``.
* **Upload** — a NIfTI/NRRD/MHA/PNG file or a zipped DICOM series, predicted by the chosen run in a
  queue of bounded concurrency, shown as an overlay and offered as a mask on the input's grid.
* **Runs** — the comparison table with links to each run's report and curves.

Files of the runs folder are served under ``/runs/<path>`` only: absolute paths, ``..`` and
symbolic links that leave the folder are refused (:func:`medseg.demo.runs.safe_path`).
Nothing is fetched from the internet: analytics are off, fonts are the system's.
"""

from __future__ import annotations

import html
import ipaddress
import logging
import math
import os
import tempfile
import threading
from collections import OrderedDict
from collections.abc import Callable
from pathlib import Path
from typing import Any

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np

from medseg.core.errors import MedsegError
from medseg.demo.runs import DemoError, RunsFolder, RunView, safe_path
from medseg.demo.uploads import UPLOAD_SUFFIXES, Upload, predict_upload, read_upload
from medseg.viz import render as R

log = logging.getLogger("medseg.demo")
NONE = "(none)"
CSS = """
#case-image img, #upload-image img { image-rendering: pixelated; }
.medseg-legend { font-size: 0.9em; padding: 4px 0; }
table.medseg-metrics, table.medseg-runs { border-collapse: collapse; font-size: 0.9em; }
table.medseg-metrics td, table.medseg-metrics th, table.medseg-runs td, table.medseg-runs th { border: 1px solid #ccc; padding: 2px 6px; text-align: right; }
table.medseg-metrics td:first-child, table.medseg-runs td:first-child { text-align: left; }
.medseg-msg { color: #b00020; font-weight: 600; }
"""


def is_loopback(host: str) -> bool:
    """Whether ``host`` only accepts connections from this machine."""
    if host in ("localhost", "ip6-localhost"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def parse_auth(text: str | None) -> tuple[str, str] | None:
    """``user:pass`` → ``(user, pass)``; ``None`` stays ``None``."""
    if text is None:
        return None
    user, sep, password = text.partition(":")
    if not sep or not user or not password:
        raise DemoError("expected USER:PASSWORD", where="--auth", fix="e.g. --auth alice:s3cret")
    return user, password


def _fmt(v: Any, digits: int = 3) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "n/a"
    if isinstance(v, float):
        return f"{v:.{digits}f}"
    return html.escape(str(v))


class DemoState:
    """Server-side state shared by all sessions: the runs, and small caches of cases and predictions.

    Args:
        runs_dir: the runs folder.
        max_upload_mb: upload size limit.
    """

    def __init__(self, runs_dir: str | Path, max_upload_mb: float = 512):
        self.runs = RunsFolder(runs_dir)
        self.max_bytes = int(max_upload_mb * 2**20)
        self.out_dir = Path(tempfile.mkdtemp(prefix="medseg-demo-"))
        self._cache: OrderedDict[tuple[str, ...], Any] = OrderedDict()
        self._lock = threading.Lock()

    def _cached(self, key: tuple[str, ...], make: Callable[[], Any], size: int = 16) -> Any:
        with self._lock:
            if key in self._cache:
                self._cache.move_to_end(key)
                return self._cache[key]
        value = make()
        with self._lock:
            self._cache[key] = value
            while len(self._cache) > size:
                self._cache.popitem(last=False)
        return value

    def case(self, run: RunView, case_id: str) -> Any:
        return self._cached(("case", str(run.dataset.root), case_id), lambda: run.dataset.load_case(case_id))

    def prediction(self, run: RunView, case_id: str) -> np.ndarray:
        return self._cached(("pred", run.name, case_id), lambda: run.prediction(self.case(run, case_id)))

    # ------------------------------------------------------------------ the Cases tab

    def case_choices(self, run_name: str | None) -> list[tuple[str, str]]:
        if not run_name:
            return []
        run = self.runs.get(run_name)
        return [(f"{cid}  (Dice {_fmt(run.case_dice(cid), 2)})" if run.metrics else cid, cid) for cid in run.case_ids]

    def classes(self, run_name: str | None) -> tuple[list[str], list[tuple[int, int, int]], list[int], bool]:
        """Class names, colours, scored class indices and the multi-label flag of a run's data set."""
        info = self.runs.get(run_name).dataset.info
        return info.class_names, [tuple(c.color) for c in info.classes], info.foreground, info.multi_label

    def slice_setup(self, run_name: str | None, case_id: str | None, plane: str) -> tuple[int, int, bool]:
        """(number of slices, best slice, is 3D) along ``plane`` for one case."""
        if not run_name or not case_id:
            return 1, 0, False
        run = self.runs.get(run_name)
        case = self.case(run, case_id)
        if case.ndim == 2:
            return 1, 0, False
        axis = R.plane_axes(case.affine)[plane]
        best = 0
        if case.label is not None:
            from medseg.viz.overlay import best_slice

            best = best_slice(case.label, axis=axis, multi_label=case.multi_label)
        return case.spatial_shape[axis], best, True

    def render(
        self,
        run_a: str | None,
        run_b: str | None,
        case_id: str | None,
        plane: str,
        index: float,
        preset: str,
        alpha: float,
        visible: list[str] | None,
        view: str,
    ) -> tuple[np.ndarray | None, str, str]:
        """The picture, the metrics HTML and the legend HTML for the current choices."""
        if not run_a or not case_id:
            return None, "<p>Pick a run and a case.</p>", ""
        run = self.runs.get(run_a)
        names, colors, fg, multi = self.classes(run_a)
        shown = [k for k in fg if visible is None or names[k] in visible]
        case = self.case(run, case_id)
        others: list[RunView] = [run]
        notes: list[str] = []
        if run_b and run_b not in (NONE, run_a):
            rb = self.runs.get(run_b)
            if Path(rb.dataset.root).resolve() != Path(run.dataset.root).resolve():
                notes.append(f"{html.escape(run_b)} was trained on another data set; not shown.")
            else:
                others.append(rb)
        if case.ndim == 3:
            axis = R.plane_axes(case.affine)[plane]
            idx = int(index)
            sl = lambda a, lead: R.take_slice(a, axis, idx, lead)  # noqa: E731
            sp = [s for i, s in enumerate(case.spacing) if i != axis]
        else:
            sl = lambda a, lead: a  # noqa: E731
            sp = list(case.spacing)
        grey = R.window(sl(case.image, 1)[0], preset)
        lead = 1 if multi else 0
        ref = None if case.label is None else sl(case.label, lead)
        panels: list[np.ndarray] = []
        if view == "side by side":
            panels.append(R.titled(R.upscale(R.blend(grey, ref, colors, shown, alpha, multi=multi), sp), "ground truth"))
        for rv in others:
            pred = sl(self.prediction(rv, case_id), lead)
            if view == "side by side":
                rgb = R.blend(grey, pred, colors, shown, alpha, multi=multi)
            elif view == "overlay":
                rgb = R.contour_overlay(grey, pred, ref, colors, shown, alpha=alpha, multi=multi)
            else:
                rgb = R.error_map(grey, pred, ref, shown, alpha, multi=multi)
            panels.append(R.titled(R.upscale(rgb, sp), rv.name[:40]))
        picture = R.side_by_side(panels)
        metrics = self.metrics_html(others, case, names, fg) + "".join(f'<p class="medseg-msg">{n}</p>' for n in notes)
        return picture, metrics, R.legend_html(names, colors, shown, view)

    def metrics_html(self, runs: list[RunView], case: Any, names: list[str], fg: list[int]) -> str:
        parts = [f"<h4>case {html.escape(case.case_id)}</h4>"]
        for rv in runs:
            m = rv.metrics.get(case.case_id, {})
            has_time = any("time_saved_s" in v for v in m.values())
            head = "<tr><th>class</th><th>Dice</th><th>HD95 (mm)</th>" + ("<th>time saved (s)</th>" if has_time else "") + "</tr>"
            rows = []
            for k in fg:
                v = m.get(names[k], {})
                cells = [html.escape(names[k]), _fmt(v.get("dice")), _fmt(v.get("hd95"), 2)]
                if has_time:
                    cells.append(_fmt(v.get("time_saved_s"), 0))
                rows.append("<tr>" + "".join(f"<td>{c}</td>" for c in cells) + "</tr>")
            loss = rv.case_loss(case) if case.label is not None else math.nan
            parts.append(
                f"<p><b>{html.escape(rv.name)}</b> — mean Dice {_fmt(rv.case_dice(case.case_id))}, loss {_fmt(loss, 4)}"
                + ("" if m else " (run not evaluated on the test split: <code>medseg evaluate RUN</code>)")
                + "</p>"
            )
            parts.append(f'<table class="medseg-metrics">{head}{"".join(rows)}</table>')
        return "".join(parts)

    # ------------------------------------------------------------------ the Runs tab

    def runs_html(self) -> str:
        self.runs.refresh()
        rows = self.runs.table()
        if not rows:
            return f"<p>No runs in {html.escape(str(self.runs.root))}. Train one: <code>medseg quickstart</code>.</p>"
        classes: list[str] = []
        for r in rows:
            classes += [c for c in r["per_class_dice"] if c not in classes]
        head = [
            "run",
            "data set",
            "model",
            "parameters",
            "epochs",
            "train time (s)",
            "best val",
            "test mean Dice",
            *[f"Dice {c}" for c in classes],
            "s / case",
            "files",
        ]
        body = []
        for r in rows:
            links = []
            for key, label in (("report", "report"), ("curves", "curves")):
                if r[key]:
                    href = "/runs/" + "/".join(_url(p) for p in f"{r['path']}/{r[key]}".strip("/").split("/"))
                    links.append(f'<a href="{href}" target="_blank">{label}</a>')
            params = f"{r['parameters']:,}" if isinstance(r["parameters"], int) else _fmt(r["parameters"])
            cells = [
                html.escape(r["run"]),
                html.escape(str(r["dataset"])),
                html.escape(str(r["model"])),
                params,
                _fmt(r["epochs"]),
                _fmt(r["train_time_s"], 1),
                _fmt(r["best_val"]),
                _fmt(r["mean_dice"]),
                *[_fmt(r["per_class_dice"].get(c)) for c in classes],
                _fmt(r["seconds_per_case"], 3),
                " · ".join(links) or "—",
            ]
            body.append("<tr>" + "".join(f"<td>{c}</td>" for c in cells) + "</tr>")
        th = "".join(f"<th>{html.escape(h)}</th>" for h in head)
        return f'<table class="medseg-runs" id="runs-table"><tr>{th}</tr>{"".join(body)}</table>'

    # ------------------------------------------------------------------ the Upload tab

    def predict(self, path: str | None, run_name: str | None, progress: Callable[[float, str], None] | None = None) -> tuple[dict[str, Any], Path]:
        """Read, predict and write the mask of one upload; returns the view state and the mask file."""
        if not path:
            raise DemoError("no file uploaded", where="upload", fix="choose a file first")
        if not run_name:
            raise DemoError("no run chosen", where="upload", fix="pick a run")
        up: Upload = read_upload(path, self.max_bytes)
        run = self.runs.get(run_name)
        pred, _ = predict_upload(up.case, run.module(), progress)
        folder = Path(tempfile.mkdtemp(prefix="mask-", dir=self.out_dir))
        mask_path = up.write_mask(pred, folder)
        _, colors, fg, multi = self.classes(run_name)
        state = {"image": up.case.image[0], "pred": pred, "affine": up.case.affine, "spacing": up.case.spacing, "colors": colors, "classes": fg, "multi": multi}
        return state, mask_path

    @staticmethod
    def upload_picture(state: dict[str, Any] | None, index: float, alpha: float) -> np.ndarray | None:
        if not state:
            return None
        img, pred, multi = state["image"], state["pred"], state["multi"]
        sp = list(state["spacing"])
        if img.ndim == 3:
            axis = R.plane_axes(state["affine"])["axial"]
            img = R.take_slice(img, axis, int(index))
            pred = R.take_slice(pred, axis, int(index), 1 if multi else 0)
            sp = [s for i, s in enumerate(sp) if i != axis]
        return R.upscale(R.blend(R.window(img), pred, state["colors"], state["classes"], alpha, multi=multi), sp)


def _url(part: str) -> str:
    from urllib.parse import quote

    return quote(part)


def _message(e: BaseException) -> str:
    text = e.one_line() if isinstance(e, MedsegError) else f"unexpected error ({type(e).__name__}); the server keeps running"
    return f'<p class="medseg-msg">⚠ {html.escape(text)}</p>'


def build_app(runs_dir: str | Path, max_upload_mb: float = 512, max_concurrent: int = 2) -> Any:
    """Build the gradio ``Blocks`` of the demo (not started).

    Args:
        runs_dir: the folder holding run folders.
        max_upload_mb: upload size limit in MB.
        max_concurrent: predictions of uploads running at once; more wait in the queue.

    Returns:
        The ``gradio.Blocks``; its ``.medseg`` attribute is the :class:`DemoState`.
    """
    import gradio as gr

    st = DemoState(runs_dir, max_upload_mb)
    names = st.runs.names
    first = names[0] if names else None
    planes = list(R.PLANES)

    def on_run(run_a: str | None) -> tuple[Any, Any]:
        try:
            choices = st.case_choices(run_a)
            cls_names, _, fg, _ = st.classes(run_a) if run_a else ([], [], [], False)
        except MedsegError as e:
            log.warning("%s", e)
            return gr.update(choices=[], value=None), gr.update(choices=[], value=[])
        fg_names = [cls_names[k] for k in fg]
        return gr.update(choices=choices, value=choices[0][1] if choices else None), gr.update(choices=fg_names, value=fg_names)

    def on_load(run_a: str | None, run_b: str | None, up_run: str | None) -> tuple[Any, Any, Any]:
        """New runs appear when the page is (re)loaded."""
        names = st.runs.refresh()
        keep = lambda v: v if v in names else (names[0] if names else None)  # noqa: E731
        return (
            gr.update(choices=names, value=keep(run_a)),
            gr.update(choices=[NONE, *names], value=run_b if run_b in names else NONE),
            gr.update(choices=names, value=keep(up_run)),
        )

    def on_case(run_a: str | None, case_id: str | None, plane: str) -> tuple[Any, Any]:
        try:
            n, best, is3d = st.slice_setup(run_a, case_id, plane)
        except MedsegError:
            n, best, is3d = 1, 0, False
        return gr.update(maximum=max(n - 1, 1), value=best, visible=is3d), gr.update(visible=is3d)

    def do_render(*args: Any) -> tuple[Any, str, str]:
        try:
            return st.render(*args)
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
        msg = f"<p>Predicted with <b>{html.escape(run_name or '')}</b>: mask {html.escape(mask.name)} on the input's grid (shape {shape}).</p>"
        return st.upload_picture(state, mid, alpha), str(mask), msg, state, gr.update(maximum=max(n - 1, 1), value=mid, visible=n > 1)

    with gr.Blocks(title="medseg demo", analytics_enabled=False) as demo:
        gr.Markdown(f"## medseg demo — runs in `{html.escape(st.runs.root.name)}/`")
        with gr.Tab("Cases", id="cases"):
            with gr.Row():
                run_a = gr.Dropdown(names, value=first, label="run", elem_id="run-a", scale=2)
                run_b = gr.Dropdown([NONE, *names], value=NONE, label="compare with", elem_id="run-b", scale=2)
                case = gr.Dropdown([], label="test case (type to search)", filterable=True, elem_id="case", scale=3)
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
                "The chosen run predicts it; the mask is offered on the input's grid."
            )
            with gr.Row():
                up_run = gr.Dropdown(names, value=first, label="run", elem_id="upload-run")
                up_file = gr.File(label="image", type="filepath", elem_id="upload-file")
            up_btn = gr.Button("Predict", variant="primary", elem_id="predict")
            up_msg = gr.HTML(elem_id="upload-msg")
            with gr.Row():
                up_alpha = gr.Slider(0, 1, value=0.45, step=0.05, label="opacity", elem_id="upload-opacity")
                up_index = gr.Slider(0, 1, value=0, step=1, label="slice", visible=False, elem_id="upload-slice")
            up_image = gr.Image(label="prediction", type="numpy", interactive=False, elem_id="upload-image", format="png")
            up_mask = gr.File(label="mask (download)", interactive=False, elem_id="upload-mask")
            up_state = gr.State(None)
        with gr.Tab("Runs", id="runs"):
            refresh = gr.Button("Refresh", size="sm")
            runs_table = gr.HTML(elem_id="runs-html")

        view_inputs = [run_a, run_b, case, plane, index, preset, alpha, visible, view]
        view_outputs = [image, metrics, legend]
        conc = {"concurrency_limit": max(2, max_concurrent), "concurrency_id": "view"}
        private = {"api_visibility": "private"}
        run_a.input(on_run, [run_a], [case, visible], **private).then(on_case, [run_a, case, plane], [index, plane], **private).then(
            do_render, view_inputs, view_outputs, **conc, **private
        )
        for trigger in (case.input, plane.input):
            trigger(on_case, [run_a, case, plane], [index, plane], **private).then(do_render, view_inputs, view_outputs, **conc, **private)
        for trigger in (index.input, alpha.input, preset.input, visible.input, view.input, run_b.input):
            trigger(do_render, view_inputs, view_outputs, trigger_mode="always_last", **conc, **private)
        demo.load(on_load, [run_a, run_b, up_run], [run_a, run_b, up_run], **private).then(on_run, [run_a], [case, visible], **private).then(
            on_case, [run_a, case, plane], [index, plane], **private
        ).then(do_render, view_inputs, view_outputs, **conc, **private).then(st.runs_html, None, runs_table, **private)
        refresh.click(st.runs_html, None, runs_table, **private)

        up_btn.click(
            do_predict,
            [up_file, up_run, up_alpha],
            [up_image, up_mask, up_msg, up_state, up_index],
            api_name="predict",
            concurrency_limit=max_concurrent,
            concurrency_id="predict",
        )
        for trigger in (up_index.input, up_alpha.input):
            trigger(st.upload_picture, [up_state, up_index, up_alpha], up_image, trigger_mode="always_last", **private)

    demo.queue(default_concurrency_limit=max_concurrent, max_size=256)
    demo.medseg = st  # type: ignore[attr-defined]
    return demo


def create_server(runs_dir: str | Path, auth: tuple[str, str] | None = None, max_upload_mb: float = 512, max_concurrent: int = 2) -> Any:
    """The ASGI application: the demo page at ``/`` and the runs folder's files at ``/runs/<path>``.

    Args:
        runs_dir: the folder holding run folders.
        auth: ``(user, password)`` to require a login, or ``None``.
        max_upload_mb: upload size limit in MB (gradio refuses larger uploads, the reader checks again).
        max_concurrent: predictions running at once.

    Returns:
        A FastAPI application (serve it with uvicorn).
    """
    import fastapi
    import gradio as gr
    from fastapi.responses import FileResponse, PlainTextResponse
    from starlette.routing import Mount

    blocks = build_app(runs_dir, max_upload_mb, max_concurrent)
    root = blocks.medseg.runs.root
    app = fastapi.FastAPI(docs_url=None, redoc_url=None, openapi_url=None)
    holder: dict[str, Any] = {}

    def run_file(path: str, request: Any) -> Any:
        gapp = holder.get("gradio")
        if auth is not None and gapp is not None:
            token = request.cookies.get(f"access-token-{gapp.cookie_id}") or request.cookies.get(f"access-token-unsecure-{gapp.cookie_id}")
            if token not in gapp.tokens:
                return PlainTextResponse("log in first", status_code=401)
        try:
            target = safe_path(root, path)
        except DemoError as e:
            return PlainTextResponse(e.one_line(), status_code=404 if "no such file" in e.problem else 403)
        return FileResponse(target, headers={"X-Content-Type-Options": "nosniff"})

    # real annotation objects: this module's postponed (string) annotations cannot name the lazily imported fastapi
    run_file.__annotations__ = {"path": str, "request": fastapi.Request}
    app.add_api_route("/runs/{path:path}", run_file, methods=["GET"])

    theme = gr.themes.Default(font=["ui-sans-serif", "system-ui", "sans-serif"], font_mono=["ui-monospace", "monospace"])
    gr.mount_gradio_app(
        app,
        blocks,
        path="/",
        auth=auth,
        max_file_size=int(max_upload_mb * 2**20),
        ssr_mode=False,
        show_error=False,
        footer_links=[],
        theme=theme,
        css=CSS,
    )
    holder["gradio"] = next(r.app for r in app.routes if isinstance(r, Mount))
    app.state.medseg = blocks.medseg
    return app


def serve(
    runs_dir: str | Path,
    *,
    host: str = "127.0.0.1",
    port: int = 7860,
    auth: tuple[str, str] | None = None,
    max_upload_mb: float = 512,
    max_concurrent: int = 2,
    ready: Callable[[str], None] | None = None,
) -> None:
    """Start the demo and block until interrupted.

    Args:
        runs_dir: the folder holding run folders.
        host: address to bind; 127.0.0.1 (this machine only) unless you mean to share it.
        port: TCP port.
        auth: ``(user, password)`` to require a login.
        max_upload_mb: upload size limit in MB.
        max_concurrent: predictions running at once.
        ready: called with the URL once the server accepts connections.
    """
    import uvicorn

    app = create_server(runs_dir, auth, max_upload_mb, max_concurrent)
    # import the inference stack (torch, Lightning, MONAI) while the server starts, not on the first click
    threading.Thread(target=lambda: __import__("medseg.engine.inferer"), daemon=True).start()
    config = uvicorn.Config(app, host=host, port=port, log_level="warning", access_log=False)
    server = uvicorn.Server(config)
    url = f"http://{'[' + host + ']' if ':' in host else host}:{port}/"
    if ready is not None:

        def wait() -> None:
            import time

            while not server.started and not server.should_exit:
                time.sleep(0.05)
            if server.started:
                ready(url)

        threading.Thread(target=wait, daemon=True).start()
    server.run()
