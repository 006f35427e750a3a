"""What the demo page shows, computed from the runs folder: cases, pictures, metrics, predictions of uploads."""

from __future__ import annotations

import html
import math
import tempfile
import threading
from collections import OrderedDict
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from medseg.core.atomic import temp_prefix
from medseg.core.errors import MedsegError
from medseg.demo.runs import SPLIT, DemoError, RunsFolder, RunView
from medseg.demo.uploads import Upload, predict_upload, read_upload
from medseg.metrics.registry import METRICS
from medseg.viz import render as R
from medseg.viz.overlay import hatch


def format_number(v: Any, digits: int = 3) -> str:
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
        self.out_dir = Path(tempfile.mkdtemp(prefix=temp_prefix("medseg-demo"), suffix=".tmp"))  # removed when stale (core.atomic)
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

    def prediction(self, run: RunView, case_id: str, split: str = SPLIT) -> np.ndarray:
        return self._cached(("pred", run.name, split, case_id), lambda: run.prediction(self.case(run, case_id), split))

    # ------------------------------------------------------------------ the Cases tab

    def case_choices(self, run_name: str | None, split: str = SPLIT) -> list[tuple[str, str]]:
        if not run_name:
            return []
        run = self.runs.get(run_name)
        scored = bool(run.metrics_of(split))
        return [(f"{cid}  (Dice {format_number(run.case_dice(cid, split), 2)})" if scored else cid, cid) for cid in run.case_ids_of(split)]

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
        split: str = SPLIT,
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
        ign = run.dataset.info.ignore_label
        ignored = None if ref is None or ign is None else (ref[ign].astype(bool) if multi else ref == ign)
        striped = (lambda rgb: hatch(rgb, ignored)) if ignored is not None and ignored.any() else (lambda rgb: rgb)
        panels: list[np.ndarray] = []
        if view == "side by side":
            panels.append(R.titled(R.upscale(striped(R.blend(grey, ref, colors, shown, alpha, multi=multi)), sp), "ground truth"))
        for rv in others:
            pred = sl(self.prediction(rv, case_id, split), lead)
            if view == "side by side":
                rgb = R.blend(grey, pred, colors, shown, alpha, multi=multi)
            elif view == "overlay":
                rgb = R.contour_overlay(grey, pred, ref, colors, shown, alpha=alpha, multi=multi)
            else:
                rgb = R.error_map(grey, pred, ref, shown, alpha, multi=multi)
            panels.append(R.titled(R.upscale(striped(rgb), sp), rv.name[:40]))
        picture = R.side_by_side(panels)
        metrics = self.metrics_html(others, case, names, fg, split) + "".join(f'<p class="medseg-msg">{n}</p>' for n in notes)
        return picture, metrics, R.legend_html(names, colors, shown, view)

    def metrics_html(self, runs: list[RunView], case: Any, names: list[str], fg: list[int], split: str = SPLIT) -> str:
        parts = [f"<h4>case {html.escape(case.case_id)} ({html.escape(split)})</h4>"]
        saved_shown = False
        for rv in runs:
            m = rv.metrics_of(split).get(case.case_id, {})
            cols = METRICS.shown("demo", [k for v in m.values() for k in v]) if m else METRICS.shown("demo", ["dice", "hd95"])
            head = "<tr><th>class</th>" + "".join(f"<th>{html.escape(c.heading)}</th>" for c in cols) + "</tr>"
            rows = []
            for k in fg:
                v = m.get(names[k], {})
                cells = [html.escape(names[k]), *[format_number(v.get(c.name), c.digits) for c in cols]]
                rows.append("<tr>" + "".join(f"<td>{c}</td>" for c in cells) + "</tr>")
            saved_shown = saved_shown or any(c.name == "time_saved_s" for c in cols)
            saved = ((rv.summary_of(split).get("loss") or {}).get("per_case") or {}).get(case.case_id)  # the loss `medseg evaluate` recorded
            loss = float(saved) if isinstance(saved, int | float) else rv.case_loss(case) if case.label is not None else math.nan
            parts.append(
                f"<p><b>{html.escape(rv.name)}</b> — mean Dice {format_number(rv.case_dice(case.case_id, split))}, loss {format_number(loss, 4)}"
                + ("" if m else f" (run not evaluated on the {html.escape(split)} split: <code>medseg evaluate RUN --split {html.escape(split)}</code>)")
                + "</p>"
            )
            parts.append(f'<table class="medseg-metrics">{head}{"".join(rows)}</table>')
        if saved_shown:
            parts.append(f'<p class="medseg-note" id="time-saved-note">{TIME_SAVED_NOTE}</p>')
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
                    href = "/runs/" + "/".join(file_url(p) for p in f"{r['path']}/{r[key]}".strip("/").split("/"))
                    links.append(f'<a href="{href}" target="_blank">{label}</a>')
            params = f"{r['parameters']:,}" if isinstance(r["parameters"], int) else format_number(r["parameters"])
            cells = [
                html.escape(r["run"]),
                html.escape(str(r["dataset"])),
                html.escape(str(r["model"])),
                params,
                format_number(r["epochs"]),
                format_number(r["train_time_s"], 1),
                format_number(r["best_val"]),
                format_number(r["mean_dice"]),
                *[format_number(r["per_class_dice"].get(c)) for c in classes],
                format_number(r["seconds_per_case"], 3),
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
        inferer = self.runs.get(run_name).inferer()
        pred, axis = predict_upload(up.case, inferer, progress)  # as `medseg predict`: a 2D network slices a volume
        folder = Path(tempfile.mkdtemp(prefix="mask-", dir=self.out_dir))
        mask_path = up.write_mask(pred, folder)
        _, colors, fg, multi = self.classes(run_name)
        state = {"image": up.case.image[0], "pred": pred, "affine": up.case.affine, "spacing": up.case.spacing, "colors": colors, "classes": fg, "multi": multi}
        if axis is not None:
            plane = inferer.resolved.volume_plane or "axial"
            state["note"] = f"the 2D network predicted the volume slice by slice: {up.case.spatial_shape[axis]} {plane} slices (array axis {axis})"
        return state, mask_path

    def model_note(self, run_name: str | None) -> str:
        """Which run and model predict uploads (the Cases tab's run)."""
        if not run_name:
            return "<p>Pick a run in the Cases tab first.</p>"
        try:
            run = self.runs.get(run_name)
            model, dims = run.info.get("model") or run.config.model.name, run.spatial_dims
        except MedsegError as e:
            return f'<p class="medseg-msg">{html.escape(e.one_line())}</p>'
        if dims == 3:
            net2d = (run.info.get("resolved") or {}).get("spatial_dims") == 2
            kind = "volumes; its 2D network predicts a volume slice by slice in the plane it was trained on" if net2d else "volumes"
        else:
            kind = "2D images: it predicts a volume slice by slice in axial planes"
        who = f"<b>{html.escape(run_name)}</b> (model {html.escape(str(model))}, trained on {kind})"
        return f'<p id="upload-model">Predicted by the Cases tab\'s run {who}.</p>'

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


NONE = "(none)"
#: what the "time saved (s)" column means (docs/metrics.md, time saved)
TIME_SAVED_NOTE = (
    "<b>time saved (s)</b>: seconds a reader saves by starting from this prediction instead of drawing the class by hand "
    "(slices passed × drawing time − slices failed × checking time; a slice passes when its Dice reaches the threshold; "
    "eval.time_saved in the config). <b>Negative</b>: the time lost checking the failed slices is more than the time saved "
    "on the passed ones — correcting this prediction takes longer than drawing from scratch."
)


def file_url(part: str) -> str:
    from urllib.parse import quote

    return quote(part)
