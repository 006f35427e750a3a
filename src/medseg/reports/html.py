"""Self-contained HTML reports (images embedded) plus their PNGs, for one run or several side by side.

``make_report(run, split)`` writes ``RUN/report/index.html``; ``make_comparison_report(runs, split,
out)`` writes ``OUT/index.html`` with the runs side by side and the comparison tables of
:mod:`medseg.workflows.compare`. Sections (each an ``<section id=...>``):

* ``summary`` — the comparison table (model, size, MACs, Dice ± std, HD95, ASSD, precision/recall,
  timings, memory, sensitivity) with published reference numbers as extra rows;
* ``paired`` — paired statistics and warnings (several runs);
* ``curves`` — loss and metric curves;
* ``class-dice`` — per-class Dice bar chart;
* ``boxplots`` — per-case metric distributions;
* ``gallery`` — best / median / worst cases: image | ground truth | prediction | error map;
* ``training`` — an animated GIF of the snapshot slice's prediction across epochs;
* ``sensitivity`` — Dice against swept hyperparameters (runs from ``medseg sweep``);
* ``dataset`` — a sample grid and the class statistics per split;
* ``config`` — the resolved config of every run.
"""

from __future__ import annotations

import base64
import html
import json
import math
from pathlib import Path
from typing import Any

import numpy as np

from medseg.core.atomic import write_text
from medseg.core.errors import RunError
from medseg.data.labelset import region_values
from medseg.data.splits import select
from medseg.metrics.registry import METRICS
from medseg.reports.tables import STUDY_NOTE, TABLE_NOTE, display_table, html_table, paired_table, study_table, write_comparison
from medseg.runs import REPORT_DIR, RunResult, read_prediction, read_snapshots, read_splits, run_dataset
from medseg.viz import figures
from medseg.viz.plots import plot_curves
from medseg.workflows.compare import Comparison, compare_runs

CSS = """body{font-family:system-ui,sans-serif;max-width:1280px;margin:2em auto;padding:0 1em;color:#222}
h1{margin-bottom:.2em}section{margin:2em 0}table{border-collapse:collapse;margin:.6em 0}
td,th{border:1px solid #ccc;padding:3px 7px;text-align:right;font-size:13px}th{background:#f3f3f3}
td:first-child,td:nth-child(2){text-align:left}tr.ref td{font-style:italic;background:#fafaf0}img{max-width:100%}
.legend span{display:inline-block;width:12px;height:12px;margin:0 4px 0 12px;vertical-align:middle;border:1px solid #999}
.legend span.hatched{background:repeating-linear-gradient(135deg,#fff 0 2px,#888 2px 5px)}
.side{display:flex;flex-wrap:wrap;gap:1em}.side figure{margin:0}figcaption{font-size:13px;color:#555}
pre{background:#f6f6f6;padding:8px;overflow:auto;font-size:12px;max-height:480px}.warn{color:#8a5300}.note{color:#555;font-size:13px}"""

GALLERY_PICKS = ("best", "median", "worst")


def _img(path: Path, alt: str) -> str:
    mime = "image/gif" if path.suffix == ".gif" else "image/png"
    data = base64.b64encode(path.read_bytes()).decode()
    return f'<img alt="{html.escape(alt)}" src="data:{mime};base64,{data}">'


def _section(sid: str, title: str, body: str) -> str:
    return f"<section id='{sid}'><h2>{html.escape(title)}</h2>{body}</section>"


def class_label(c: Any) -> str:
    """A class as legends name it: a region with the label values whose union it is (``heart = {1, 2}``)."""
    return c.name if c.labels is None else f"{c.name} = {{{', '.join(str(v) for v in region_values(c.labels))}}}"


def _legend(ds: Any, errors: bool = True) -> str:
    """The classes (for region data sets: each region and its label values, and the value it is written with),
    the hatched ignore label, and the error-map colours."""
    info = ds.info
    regions = bool(info.regions_class_order)
    items = "".join(
        f"<span style='background:rgb{tuple(c.color)}'></span>{html.escape(class_label(c))}"
        + (f" (written as {info.regions_class_order[k]})" if regions else "")
        for k, c in enumerate(info.classes)
        if k in info.foreground
    )
    head = "Regions (one channel each; overlapping regions drawn one over the other)" if regions else "Classes"
    ignore = "" if info.ignore_label is None else " &nbsp;·&nbsp; <span class='hatched'></span>ignore: not annotated (striped; in no metric)"
    errs = "".join(f"<span style='background:rgb{c}'></span>{html.escape(n)}" for n, c in figures.ERROR_LEGEND)
    return f"<p class='legend'>{head}: {items}{ignore}" + (f" &nbsp;·&nbsp; Error maps: {errs}" if errors else "") + "</p>"


def split_ignore(ds: Any, label: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
    """A reference without its ignore label (channel, or value set to background) and its ignored voxels (None
    without an ignore label): figures stripe those voxels instead of colouring them as a class."""
    ign = ds.info.ignore_label
    if ign is None:
        return label, None
    if ds.info.multi_label:
        return label[:ign], label[ign].astype(bool)
    ignored = label == ign
    return np.where(ignored, 0, label), ignored


def _view(ds: Any, case: Any, z: int | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray | None, int | None]:
    """Image, reference (without the ignore label) and ignored voxels of a case's shown slice."""
    ref, ignored = split_ignore(ds, case.label)
    img, ref2d, _, z = figures.slice_of(case.image, ref, None, ds.info.multi_label, z)
    cut = None if ignored is None else figures.slice_of(case.image, ignored, None, False, z)[1]
    return img, ref2d, cut, z


def _gallery(results: list[RunResult], ds: Any, out: Path) -> str:
    per_run = [r.per_case() for r in results]
    common = sorted(set.intersection(*(set(p) for p in per_run))) if per_run else []
    if not common:
        return "<p class='note'>No case scored by every run.</p>"
    score = {c: float(np.mean([p[c] for p in per_run])) for c in common}
    order = sorted(common, key=lambda c: (score[c], c))
    picks = {"best": order[-1], "median": order[len(order) // 2], "worst": order[0]}
    colors = [c.color for c in ds.info.classes]
    fg = ds.info.foreground
    legend = ([class_label(ds.info.classes[k]) for k in fg], [colors[k] for k in fg])
    parts = []
    for tag in GALLERY_PICKS:
        cid = picks[tag]
        case = ds.load_case(cid)
        preds = [(r.label, read_prediction(r.path, r.split, cid)) for r in results]
        if any(p is None for _, p in preds):
            return "<p class='note'>Predictions were not saved (evaluate with predictions to see the cases).</p>"
        img, ref, ignored, z = _view(ds, case)
        cut = [(n, figures.slice_of(case.image, case.label, p, ds.info.multi_label, z)[2]) for n, p in preds]
        dice = ", ".join(f"{r.label} {p[cid]:.3f}" for r, p in zip(results, per_run, strict=True))
        title = f"{tag}: {cid}" + (f", slice {z}" if z is not None else "") + f" — mean Dice {dice}"
        ml = ds.info.multi_label
        path = figures.case_panel(out / f"case_{tag}.png", title, img, ref, cut, colors=colors, legend=legend, multi_label=ml, ignored=ignored)
        parts.append(f"<figure>{_img(path, f'{tag} case')}<figcaption>{html.escape(title)}</figcaption></figure>")
    return _legend(ds) + "".join(parts)


def _fit(mask: Any, shape: tuple[int, ...]) -> Any:
    """A mask's last two axes brought to ``shape`` by nearest-neighbour lookup (display only)."""
    import numpy as np

    if tuple(mask.shape[-2:]) == tuple(shape):
        return mask
    rows = np.minimum((np.arange(shape[0]) + 0.5) * mask.shape[-2] / shape[0], mask.shape[-2] - 1).astype(int)
    cols = np.minimum((np.arange(shape[1]) + 0.5) * mask.shape[-1] / shape[1], mask.shape[-1] - 1).astype(int)
    return mask[..., rows[:, None], cols[None, :]]


def _training_gifs(results: list[RunResult], ds: Any, out: Path) -> str:
    colors = [c.color for c in ds.info.classes]
    figs = []
    for i, r in enumerate(results):
        snap = read_snapshots(r.path)
        if snap is None:
            continue
        meta, frames = snap
        try:
            case = ds.load_case(meta["case"])
        except Exception:
            continue
        img, ref, ignored, z = _view(ds, case, meta.get("slice"))
        lead = 1 if ds.info.multi_label else 0
        if z is not None:  # whole predicted volumes (older runs of 2D models on slices): cut them like the image
            frames = [(e, f[:, z] if lead else f[z]) if f.ndim == case.ndim + lead else (e, f) for e, f in frames]
        frames = [(e, _fit(f, ref.shape[-2:])) for e, f in frames]  # snapshots of resized (preprocessed) cases
        path = figures.training_gif(out / f"training_{i}.gif", img, ref, frames, colors, title=r.label if len(results) > 1 else "", ignored=ignored)
        cap = f"{r.label}: case {meta['case']}" + (f", slice {z}" if z is not None else "") + f", {len(frames)} epochs"
        figs.append(f"<figure>{_img(path, f'training sequence {r.label}')}<figcaption>{html.escape(cap)}</figcaption></figure>")
    if not figs:
        return "<p class='note'>No prediction snapshots in the run folder(s).</p>"
    return "<div class='side'>" + "".join(figs) + "</div>"


def _dataset_section(r: RunResult, ds: Any, out: Path, max_per_split: int = 100) -> str:
    splits = read_splits(r.path, ds)
    fold = r.config.data.split.fold
    sets = {s: select(splits, s, fold) for s in ("train", "val", "test")} if splits else {"all": ds.case_ids}
    names = ds.info.class_names
    fg = ds.info.foreground
    voxels: dict[str, dict[str, int]] = {names[k]: {} for k in fg}
    sampled = False
    n_cases = {}
    for s, ids in sets.items():
        n_cases[s] = len(ids)
        if len(ids) > max_per_split:
            sampled = True
            ids = list(np.random.default_rng(0).choice(ids, max_per_split, replace=False))
        for cid in ids:
            lab = ds.load_case(cid).label
            for k in fg:
                n = int(lab[k].sum()) if ds.info.multi_label else int((lab == k).sum())
                voxels[names[k]][s] = voxels[names[k]].get(s, 0) + n
    colors = {c.name: c.color for c in ds.info.classes}
    sample_ids = (sets.get("train") or ds.case_ids)[:8]
    items = []
    for cid in sample_ids:
        img, lab, ignored, _ = _view(ds, ds.load_case(cid))
        items.append((cid, img, lab, ignored))
    legend = ([class_label(ds.info.classes[k]) for k in fg], [ds.info.classes[k].color for k in fg])
    grid = figures.sample_grid(out / "dataset_samples.png", items, [c.color for c in ds.info.classes], legend)
    stats = figures.class_stats_plot(out / "class_statistics.png", voxels, colors)
    header = ["class", *[f"{s} voxels" for s in sets]]
    rows = [[c, *[f"{v.get(s, 0):,}" for s in sets]] for c, v in voxels.items()]
    rows.append(["cases", *[str(n_cases[s]) for s in sets]])
    note = f" (voxels counted on up to {max_per_split} cases per split)" if sampled else ""
    n_pat = len(set(ds.patients.values()))
    desc = f"{ds.info.name} — {ds.info.description or ''} ({ds.info.dims}D, {len(ds)} cases, {n_pat} patients){note}"
    info = f"<p>{html.escape(desc)}</p>" + _legend(ds, errors=False)
    return info + _img(grid, "data set samples") + html_table(header, rows, "stats") + _img(stats, "class statistics")


def _config_section(results: list[RunResult]) -> str:
    if len(results) == 1:
        return f"<pre>{html.escape(results[0].config.to_yaml())}</pre>"
    return "".join(f"<details><summary>{html.escape(r.label)}</summary><pre>{html.escape(r.config.to_yaml())}</pre></details>" for r in results)


def _sensitivity(results: list[RunResult], out: Path) -> str:
    dirs = list(
        dict.fromkeys(Path(r.info["sweep"]["dir"]) for r in results if r.info.get("sweep") and Path(r.info["sweep"]["dir"], "sensitivity.png").is_file())
    )
    if not dirs:
        return ""
    body = "".join(f"<figure>{_img(d / 'sensitivity.png', f'sensitivity {d.name}')}<figcaption>sweep {html.escape(str(d))}</figcaption></figure>" for d in dirs)
    return _section("sensitivity", "Sensitivity to hyperparameters (best validation Dice over the sweep)", body)


def build_report(cmp: Comparison, out: Path, title: str) -> Path:
    """Write ``out/index.html`` and its PNG/GIF files from a :class:`~medseg.workflows.compare.Comparison`."""
    out.mkdir(parents=True, exist_ok=True)
    results = cmp.runs
    ds = run_dataset(results[0].path, results[0].info, results[0].config)
    parts = [f"<!doctype html><html><head><meta charset='utf-8'><title>medseg report — {html.escape(title)}</title><style>{CSS}</style></head><body>"]
    parts.append(f"<h1>{html.escape(title)}</h1>")
    lines = []
    for r in results:
        md = r.summary.get("mean_dice")
        lines.append(
            f"{r.label}: model {r.config.model.name}, {r.info.get('n_train', '?')} train / {r.info.get('n_val', '?')} val / {r.summary.get('n_cases')} "
            f"{cmp.split} cases, trained {r.info.get('train_time_s', 0):.0f} s on {r.info.get('device', '?')}, "
            + (f"mean {cmp.split} Dice {md:.3f}" if md is not None else "mean Dice n/a")
        )
    parts.append(
        "<p>" + "<br>".join(html.escape(x) for x in lines) + f"</p><p class='note'>data set {html.escape(ds.info.name)} ({html.escape(str(ds.root))})</p>"
    )
    header, rows = display_table(cmp)
    present = [c for r in results for c in (r.rows[0] if r.rows else {})]
    shown = METRICS.shown("per_class", present)
    per_class = []
    for r in results:
        for cls in r.classes:
            e = r.summary["per_class"][cls]

            def fmt(m: str, digits: int, e: dict[str, Any] = e) -> str:
                v = e.get(m) or {}
                if v.get("mean") is None or isinstance(v.get("mean"), str):
                    return "n/a" if v.get("mean") is None else str(v["mean"])
                return f"{v['mean']:.{digits}f}" + ("" if v.get("std") is None else f" ± {v['std']:.{digits}f}")

            per_class.append([r.label, cls, *[fmt(c.name, c.digits) for c in shown], str((e.get("dice") or {}).get("n", ""))])
    pc_header = ["run", "class", *[c.heading for c in shown], "n"]
    sh, srows = study_table(cmp)
    study = f"<h3>Loss, pixel accuracy, pixel-level averages, time saved</h3>{html_table(sh, srows, 'study')}<p class='note'>{html.escape(STUDY_NOTE)}</p>"
    parts.append(
        _section(
            "summary",
            f"Results on the {cmp.split} split",
            html_table(header, rows)
            + f"<p class='note'>{html.escape(TABLE_NOTE)}</p>"
            + (study if srows else "")
            + "<h3>Per class (mean ± std over cases)</h3>"
            + html_table(pc_header, per_class, "perclass"),
        )
    )
    if len(results) > 1:
        ph, prow = paired_table(cmp)
        if len(cmp.paired) > 3 * len(results):
            prow = [p for p, raw in zip(prow, cmp.paired, strict=True) if raw["class"] == "mean"]
        warn = "".join(f"<li class='warn'>{html.escape(w)}</li>" for w in cmp.warnings)
        body = (
            f"<p class='note'>Per-{cmp.by} mean Dice (over classes) differences (b − a) on the cases both runs share; "
            "95 % percentile bootstrap CI of the mean difference; "
            "two-sided Wilcoxon signed-rank test. 'better' needs the CI to exclude 0 and p &lt; 0.05.</p>" + html_table(ph, prow, "paired")
        )
        parts.append(_section("paired", "Paired statistics", body + (f"<ul>{warn}</ul>" if warn else "")))
    # curves
    if len(results) == 1 and results[0].history:
        curves = plot_curves(results[0].history, out / "curves.png")
    else:
        curves = figures.multi_curves(out / "curves.png", [(r.label, r.history) for r in results])
    parts.append(_section("curves", "Training curves", _img(curves, "training curves")))
    colors = {c.name: c.color for c in ds.info.classes}
    refs = [
        (ref["run"].removeprefix("reference: "), {k.removeprefix("dice_"): v for k, v in ref.items() if k.startswith("dice_") and isinstance(v, float)})
        for ref in cmp.references
    ]
    bars = figures.per_class_dice_bars(
        out / "class_dice.png",
        [(r.label, {c: _mean_std(r.summary["per_class"][c].get("dice")) for c in r.classes}) for r in results],
        colors,
        [x for x in refs if x[1]],
    )
    parts.append(_section("class-dice", "Dice per class", _img(bars, "per-class Dice")))
    boxes = METRICS.shown("boxplot", list(results[0].rows[0]) if results[0].rows else [])
    box = figures.metric_boxplots(
        out / "boxplots.png",
        [(r.label, r.rows) for r in results],
        results[0].classes,
        [c.name for c in boxes],
        titles={c.name: c.label for c in boxes},
        limits={c.name: c.limits for c in boxes if c.limits},
    )
    parts.append(_section("boxplots", "Per-case metrics", _img(box, "box plots of per-case metrics")))
    parts.append(_section("gallery", "Cases: best, median, worst", _gallery(results, ds, out)))
    parts.append(_section("training", "Prediction across training epochs", _training_gifs(results, ds, out)))
    parts.append(_sensitivity(results, out))
    parts.append(_section("dataset", "Data set", _dataset_section(results[0], ds, out)))
    parts.append(_section("config", "Config", _config_section(results)))
    parts.append("</body></html>")
    index = out / "index.html"
    write_text(index, "\n".join(p for p in parts if p))
    return index


def _mean_std(entry: dict[str, Any] | None) -> tuple[float, float]:
    if not entry or not isinstance(entry.get("mean"), int | float):
        return math.nan, math.nan
    return float(entry["mean"]), math.nan if entry.get("std") is None else float(entry["std"])


def make_report(run_dir: str | Path, split: str = "test") -> Path:
    """Write ``RUN/report/index.html`` (and its images) from the run and its evaluation on ``split``.

    Raises:
        RunError: not a run folder, or no evaluation on ``split`` (the fix names the command).
    """
    run_dir = Path(run_dir)
    cmp = compare_runs([run_dir], split)
    return build_report(cmp, run_dir / REPORT_DIR, cmp.runs[0].config.name)


def make_comparison_report(runs: list[str | Path], split: str = "test", out: str | Path | None = None, by: str = "case", title: str | None = None) -> Path:
    """Compare runs (or sweep folders) side by side: ``OUT/index.html`` plus the comparison tables.

    Args:
        runs: run folders evaluated on ``split`` (a sweep folder stands for its finished runs).
        split: the evaluated split.
        out: output folder (default: ``comparison`` beside the first run).
        by: paired unit, ``case`` or ``patient``.
        title: page title (default: the run names).
    """
    cmp = compare_runs(runs, split, by)
    if not cmp.runs:
        raise RunError("no run to report", where="RUN", fix="give run folders")
    out = Path(out) if out is not None else cmp.runs[0].path.parent / "comparison"
    write_comparison(cmp, out)
    return build_report(cmp, out, title or " vs ".join(r.label for r in cmp.runs))


def load_comparison_json(out: str | Path) -> dict[str, Any]:
    """Read back ``comparison.json`` written next to a comparison report."""
    return json.loads((Path(out) / "comparison.json").read_text(encoding="utf-8"))
