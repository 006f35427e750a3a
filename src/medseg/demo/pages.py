"""The workspace pages of ``medseg workspace ROOT``: Data sets and New run (the Jobs page is :mod:`medseg.demo.jobs_page`).

* **Data sets** — the data sets under ``datasets/`` with their ``inspect`` view (cases, classes, voxels
  per class per split, sample slices with label overlays); create one from a folder under ``data/``
  (a picker that lists only folders inside it) or an uploaded zip, imported by a ``medseg import`` job.
* **New run** — data set, model (filtered by the data set's dimensions), recipe, the fields that matter;
  checked by the config models as they are edited, with the resolved YAML and the equivalent
  ``medseg train`` command (recipe ``auto``: the ``medseg auto`` command with the time budget);
  **Start training** queues the job and opens the Jobs page.
"""

from __future__ import annotations

import html
import json
import threading
import time
from typing import Any

import numpy as np

from medseg.core.errors import MedsegError
from medseg.demo.jobs import JobManager
from medseg.demo.newrun import AUGMENT_PRESETS, RECIPE_NONE, RunForm, cli_argv, loss_choices, model_choices, recipe_choices, write_config
from medseg.demo.workspace import Workspace, check_name
from medseg.viz import render as R

NO_WEIGHTS = "(none)"
FORM_KEYS = ("name", "dataset", "model", "recipe", "epochs", "budget", "lr", "batch", "loss", "aug", "weights", "iters", "params")
_inspect_cache: dict[tuple[str, int], tuple[str, np.ndarray | None]] = {}
_inspect_lock = threading.Lock()


def msg(text: str, ok: bool = False) -> str:
    return f'<p class="{"medseg-ok" if ok else "medseg-msg"}">{"" if ok else "⚠ "}{html.escape(text)}</p>'


def dataset_dims(ws: Workspace, name: str | None) -> int | None:
    if not name:
        return None
    try:
        return int(json.loads((ws.dataset_path(name) / "dataset.json").read_text(encoding="utf-8"))["dims"])
    except (MedsegError, OSError, ValueError, KeyError):
        return None


def _grid(panels: list[np.ndarray], cols: int = 4, gap: int = 6) -> np.ndarray | None:
    if not panels:
        return None
    h = max(p.shape[0] for p in panels)
    w = max(p.shape[1] for p in panels)
    tiles = [np.pad(p, ((0, h - p.shape[0]), (0, w - p.shape[1]), (0, 0)), constant_values=255) for p in panels]
    tiles += [np.full((h, w, 3), 255, np.uint8)] * (-len(tiles) % cols)
    out = np.full(((h + gap) * (len(tiles) // cols) - gap, (w + gap) * cols - gap, 3), 255, np.uint8)
    for i, t in enumerate(tiles):
        r, c = divmod(i, cols)
        out[r * (h + gap) : r * (h + gap) + h, c * (w + gap) : c * (w + gap) + w] = t
    return out


def inspect_view(ws: Workspace, name: str | None, n_samples: int = 8) -> tuple[str, np.ndarray | None]:
    """The ``medseg inspect`` view of a data set: summary and voxel tables (HTML) and a grid of sample slices."""
    if not name:
        return "<p>No data set yet: create one below.</p>", None
    path = ws.dataset_path(name)
    key = (str(path), (path / "dataset.json").stat().st_mtime_ns)
    with _inspect_lock:
        if key in _inspect_cache:
            return _inspect_cache[key]
    from medseg.data.inspect import describe
    from medseg.data.store import load_dataset
    from medseg.viz.overlay import best_slice

    ds = load_dataset(path)
    d = describe(ds, progress=False)
    rows = "".join(f"<tr><td>{html.escape(str(k))}</td><td>{html.escape(str(v))}</td></tr>" for k, v in d["summary"].items())
    head = "".join(f"<th>{html.escape(s)}</th>" for s in d["splits"])
    voxels = "".join(
        f"<tr><td>{html.escape(c)}</td>" + "".join(f"<td>{counts.get(s, 0):,}</td>" for s in d["splits"]) + "</tr>" for c, counts in d["class_voxels"].items()
    )
    text = (
        f"<h4>{html.escape(ds.info.name)} — {html.escape(ds.info.description or '')}</h4>"
        f'<table class="medseg-runs" id="ds-summary">{rows}</table><h4>Voxels per class and split</h4>'
        f'<table class="medseg-runs" id="ds-voxels"><tr><th>class</th>{head}</tr>{voxels}</table>'
        + "".join(f"<p>warning: {html.escape(w)}</p>" for w in d["fingerprint"]["warnings"])
    )
    colors = [tuple(c.color) for c in ds.info.classes]
    panels = []
    for cid in ds.case_ids[:n_samples]:
        case = ds.load_case(cid)
        if case.label is None:
            continue
        image, label, lead = case.image[0], case.label, 1 if case.multi_label else 0
        if case.ndim == 3:
            axis = R.plane_axes(case.affine)["axial"]
            idx = best_slice(label, axis=axis, multi_label=case.multi_label)
            image, label = R.take_slice(case.image, axis, idx, 1)[0], R.take_slice(label, axis, idx, lead)
        rgb = R.blend(R.window(image), label, colors, ds.info.foreground, 0.45, multi=case.multi_label)
        panels.append(R.titled(R.upscale(rgb, min_size=160, max_size=200), cid[:24]))
    out = (text, _grid(panels))
    with _inspect_lock:
        _inspect_cache[key] = out
    return out


def import_argv(ws: Workspace, fmt: str, source: str | None, name: str | None, classes: str | None) -> tuple[list[str], str]:
    """The ``medseg import`` job of the Data sets form (every value checked), and its target folder."""
    from medseg.data.formats import list_formats

    formats = [f[0] for f in list_formats()]
    if fmt not in formats:
        raise MedsegError(f"unknown format {fmt!r}", where="format", fix=f"one of: {', '.join(formats)}")
    src = ws.inside(source or "", "data")
    if src == (ws.root / "data").resolve() and not source:
        raise MedsegError("no source folder chosen", where="source folder", fix="pick a folder under data/ (or upload a zip)")
    out = ws.new_path(name, "datasets", "data set")
    argv = cli_argv("import", fmt, ws.rel(src), "--out", f"datasets/{out.name}", "--no-progress")
    text = (classes or "").strip()
    if text:
        names = [check_name(c.strip(), "class") for c in text.split(",")]
        argv += ["--classes", ",".join(names)]
    return argv, f"datasets/{out.name}"


def add_workspace_tabs(jobs: JobManager, tabs: Any) -> dict[str, Any]:
    """Add the Data sets and New run tabs (and the Jobs tab) to the current ``gr.Blocks``."""
    import gradio as gr

    from medseg.data.formats import list_formats
    from medseg.demo.jobs_page import add_jobs_tab

    ws = jobs.ws
    private = {"api_visibility": "private"}
    datasets = ws.datasets()
    first = datasets[0] if datasets else None

    with gr.Tab("Data sets", id="datasets"):
        with gr.Row():
            ds_pick = gr.Dropdown(datasets, value=first, label="data set", elem_id="ds-pick", scale=3)
            ds_refresh = gr.Button("Refresh", size="sm", elem_id="ds-refresh", scale=1)
        with gr.Row():
            ds_info = gr.HTML(elem_id="ds-info")
            ds_grid = gr.Image(label="sample slices (labels overlaid)", type="numpy", interactive=False, elem_id="ds-grid", format="png")
        gr.Markdown("### Create a data set\nFrom a folder under the workspace's `data/` (copy it there, or upload a zip); imported by `medseg import`.")
        with gr.Row():
            fmt = gr.Dropdown([f[0] for f in list_formats()], value="images", label="format", elem_id="ds-format")
            src = gr.Dropdown(ws.data_folders(), value=None, label="source folder (under data/)", elem_id="ds-source")
            new_name = gr.Textbox(label="name", elem_id="ds-name")
            classes = gr.Textbox(label="class names, comma-separated, background first (optional)", elem_id="ds-classes")
        with gr.Row():
            zip_file = gr.File(label="or upload a zip of the folders", file_types=[".zip"], type="filepath", elem_id="ds-zip")
            zip_btn = gr.Button("Unpack into data/uploads/<name>", elem_id="ds-unzip")
        create = gr.Button("Create data set", variant="primary", elem_id="ds-create")
        ds_msg = gr.HTML(elem_id="ds-msg")
        import_job = gr.State(None)  # inside the tab: a component between two tabs would shift the tab bar's order

    with gr.Tab("New run", id="newrun"):
        with gr.Row():
            nr_ds = gr.Dropdown(datasets, value=first, label="data set", elem_id="nr-dataset")
            nr_model = gr.Dropdown(model_choices(dataset_dims(ws, first)), value="unet", label="model (fits the data set's dimensions)", elem_id="nr-model")
            nr_recipe = gr.Dropdown(recipe_choices(), value=RECIPE_NONE, label="recipe (auto: planned from the data set by medseg auto)", elem_id="nr-recipe")
        with gr.Row():
            nr_name = gr.Textbox(label="run name", elem_id="nr-name")
            nr_epochs = gr.Number(10, precision=0, label="epochs", elem_id="nr-epochs")
            nr_budget = gr.Textbox(label="time budget (e.g. 10m; replaces epochs; auto: for all of it)", elem_id="nr-budget")
            nr_iters = gr.Number(None, precision=0, label="iterations per epoch (empty: one pass)", elem_id="nr-iters")
        with gr.Row():
            nr_lr = gr.Number(1e-3, label="learning rate", elem_id="nr-lr")
            nr_batch = gr.Number(8, precision=0, label="batch size", elem_id="nr-batch")
            nr_loss = gr.Dropdown(loss_choices(), value="dice_ce", label="loss", elem_id="nr-loss")
            nr_aug = gr.Dropdown(list(AUGMENT_PRESETS), value="light", label="augmentation", elem_id="nr-augment")
            nr_weights = gr.Dropdown([NO_WEIGHTS, *ws.weights()], value=NO_WEIGHTS, label="pretrained weights (weights/)", elem_id="nr-weights")
        nr_params = gr.Textbox(label="model parameters (YAML mapping, optional), e.g. {channels: [8, 16]}", elem_id="nr-params")
        nr_msg = gr.HTML(elem_id="nr-msg")
        with gr.Row():
            nr_yaml = gr.Code(label="resolved config", language="yaml", interactive=False, elem_id="nr-yaml")
            nr_cmd = gr.Code(label="equivalent command (from the workspace folder)", language="shell", interactive=False, elem_id="nr-command")
        nr_start = gr.Button("Start training", variant="primary", elem_id="nr-start")

    jobs_parts = add_jobs_tab(jobs)
    fields = [nr_name, nr_ds, nr_model, nr_recipe, nr_epochs, nr_budget, nr_lr, nr_batch, nr_loss, nr_aug, nr_weights, nr_iters, nr_params]

    def form(*values: Any) -> RunForm:
        v = dict(zip(FORM_KEYS, values, strict=True))
        return RunForm(
            name=v["name"] or "",
            dataset=v["dataset"] or "",
            model=v["model"] or "",
            recipe=v["recipe"] or RECIPE_NONE,
            epochs=v["epochs"],
            time_budget=v["budget"] or "",
            lr=v["lr"],
            batch_size=v["batch"],
            loss=v["loss"] or "",
            augment=v["aug"] or "",
            pretrained="" if v["weights"] in (None, NO_WEIGHTS) else v["weights"],
            iterations_per_epoch=v["iters"],
            model_params=v["params"] or "",
        )

    def check(*values: Any) -> tuple[str, str, str]:
        try:
            plan = form(*values).plan(ws)
        except MedsegError as e:
            return msg(e.one_line()), "", ""
        return msg("ready to start", ok=True), plan["yaml"], plan["command"]

    def start(*values: Any) -> tuple[Any, ...]:
        try:
            plan = form(*values).plan(ws)
            write_config(plan)
            job = jobs.submit(plan["kind"], plan["name"], plan["argv"], run=ws.rel(plan["out"]))
        except MedsegError as e:
            return msg(e.one_line()), gr.skip(), gr.skip()
        choices = [(f"{j.title} ({j.kind}, {j.id})", j.id) for j in jobs.jobs()]
        return msg(f"queued as job {job.id}", ok=True), gr.update(choices=choices, value=job.id), gr.Tabs(selected="jobs")

    def on_dataset(ds: str | None, model: str | None) -> Any:
        choices = model_choices(dataset_dims(ws, ds))
        return gr.update(choices=choices, value=model if model in choices else (choices[0] if choices else None))

    def show(ds: str | None) -> tuple[str, Any]:
        try:
            return inspect_view(ws, ds)
        except MedsegError as e:
            return msg(e.one_line()), None
        except Exception as e:  # a damaged data set: a message, never a traceback
            return msg(f"cannot inspect {ds}: {type(e).__name__}"), None

    def refresh(ds: str | None, src_value: str | None) -> tuple[Any, Any, Any, Any]:
        names = ws.datasets()
        keep = ds if ds in names else (names[0] if names else None)
        folders = ws.data_folders()
        return (
            gr.update(choices=names, value=keep),
            gr.update(choices=names, value=keep),
            gr.update(choices=folders, value=src_value if src_value in folders else None),
            gr.update(choices=[NO_WEIGHTS, *ws.weights()]),
        )

    def unzip(path: str | None, name: str) -> tuple[str, Any]:
        try:
            if not path:
                raise MedsegError("no zip uploaded", where="upload", fix="choose a .zip first")
            rel = ws.save_upload(path, name)
        except MedsegError as e:
            return msg(e.one_line()), gr.skip()
        return msg(f"unpacked into data/{rel}", ok=True), gr.update(choices=ws.data_folders(), value=rel)

    def create_ds(fmt_v: str, src_v: str | None, name: str, classes_v: str) -> tuple[str, str | None]:
        try:
            argv, target = import_argv(ws, fmt_v, src_v, name, classes_v)
            job = jobs.submit("import", f"data set {name}", argv, run=target)
        except MedsegError as e:
            return msg(e.one_line()), None
        return msg(f"importing as job {job.id}", ok=True), job.id

    for f in fields:
        f.change(check, fields, [nr_msg, nr_yaml, nr_cmd], trigger_mode="always_last", **private)
    nr_ds.change(on_dataset, [nr_ds, nr_model], nr_model, **private)
    nr_start.click(start, fields, [nr_msg, jobs_parts["pick"], tabs], **private)
    ds_pick.change(show, ds_pick, [ds_info, ds_grid], **private)
    ds_refresh.click(refresh, [ds_pick, src], [ds_pick, nr_ds, src, nr_weights], **private)
    zip_btn.click(unzip, [zip_file, new_name], [ds_msg, src], **private)

    def follow(job_id: str | None, ds: str | None, src_value: str | None) -> Any:
        """Stream the import job's state (once a second) until it ends; then show the new data set."""
        if not job_id:
            return
        t0 = time.time()
        while True:
            job = jobs.get(job_id)
            if not job.active:
                break
            tail = jobs.log_tail(job_id, 300).strip().splitlines()[-1:] or [""]
            yield (msg(f"job {job_id}: {job.state}, {time.time() - t0:.0f} s — {tail[0]}", ok=True), *(gr.skip(),) * 6)
            time.sleep(1.0)
        if job.state != "finished":
            yield (msg(f"job {job_id} {job.state}: see its log on the Jobs page"), *(gr.skip(),) * 6)
            return
        name = (job.run or "").removeprefix("datasets/")
        names = ws.datasets()
        pickers = refresh(name if name in names else ds, src_value)
        yield (msg(f"data set {name} created", ok=True), *pickers, *show(name))

    create.click(create_ds, [fmt, src, new_name, classes], [ds_msg, import_job], **private).then(
        follow, [import_job, ds_pick, src], [ds_msg, ds_pick, nr_ds, src, nr_weights, ds_info, ds_grid], concurrency_limit=None, **private
    )
    return {"ds_pick": ds_pick, "ds_info": ds_info, "ds_grid": ds_grid, "show": show, **jobs_parts}
