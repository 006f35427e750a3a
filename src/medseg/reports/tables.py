"""The comparison as tables: terminal/Markdown/HTML/CSV text and the comparison folder."""

from __future__ import annotations

import csv
import html
import io
import math
from pathlib import Path
from typing import Any

from medseg.core.atomic import write_json, write_text
from medseg.metrics.registry import METRICS
from medseg.workflows.compare import Comparison


def _f(v: Any, digits: int = 3) -> str:
    if v is None:
        return ""
    if isinstance(v, float):
        if math.isnan(v):
            return ""
        if math.isinf(v):
            return "inf"
        return f"{v:.{digits}f}"
    return str(v)


def _count(v: Any) -> str:
    if isinstance(v, int | float) and math.isfinite(v):
        from medseg.models.complexity import format_count

        return format_count(v)
    return ""


def display_table(cmp: Comparison) -> tuple[list[str], list[list[str]]]:
    """The comparison as header + text rows (what the Markdown, HTML and terminal tables show)."""
    classes: list[str] = []
    for r in cmp.runs:
        classes += [c for c in r.classes if c not in classes]
    shown = METRICS.shown("compare")
    header = ["run", "model", "params", "MACs", "mean Dice", *[f"Dice {c}" for c in classes], *[c.label for c in shown]]
    header += ["train time", "epochs to best", "train samples/s", "latency/case", "latency/slice", "peak memory", "sensitivity"]
    out = []
    for row in [*cmp.rows, *cmp.references]:
        is_ref = row["run"].startswith("reference: ")

        def pm(key: str, row: dict[str, Any] = row, is_ref: bool = is_ref) -> str:
            mean = row.get(key, math.nan)
            std = row.get(f"{key}_std", math.nan)
            if not isinstance(mean, float | int) or math.isnan(mean):
                return ""
            return f"{mean:.3f}" if is_ref or math.isnan(std) else f"{mean:.3f} ± {std:.3f}"

        line = [row["run"], row["model"], _count(row.get("parameters")), _count(row.get("macs"))]
        line += [pm("mean_dice"), *[pm(f"dice_{c}") for c in classes]]
        line += [c.format(row.get(c.name)) for c in shown]
        if is_ref:
            line += [""] * 7
        else:
            t = row.get("train_time_s", math.nan)
            ep = row.get("epochs_to_best", math.nan)
            line += [
                "" if not isinstance(t, int | float) or math.isnan(t) else f"{t:.0f} s",
                "" if not isinstance(ep, int | float) or math.isnan(ep) else f"{int(ep)}/{row.get('epochs_run', '?')}",
                _f(row.get("train_samples_per_s"), 1),
                "" if math.isnan(row["latency_per_case_s"]) else f"{row['latency_per_case_s'] * 1000:.1f} ms",
                "" if math.isnan(row["latency_per_slice_s"]) else f"{row['latency_per_slice_s'] * 1000:.1f} ms",
                "" if math.isnan(row["peak_memory_mb"]) else f"{row['peak_memory_mb']:.0f} MB" + (" GPU" if row.get("device") == "cuda" else " RSS"),
                "" if math.isnan(row["sensitivity_dice_range"]) else f"±{row['sensitivity_dice_range'] / 2:.3f} ({row['sensitivity_n_runs']} runs)",
            ]
        out.append(line)
    return header, out


def study_table(cmp: Comparison) -> tuple[list[str], list[list[str]]]:
    """What the reference studies report beside Dice, one row per run (mean Dice repeated): the test loss, pixel accuracy,
    pixel-level macro and weighted precision / recall / F1 (background included), and the registered
    per-class columns (time saved per class). Columns no run has a value for are left out."""
    classes: list[str] = []
    for r in cmp.runs:
        classes += [c for c in r.classes if c not in classes]
    cols: list[tuple[str, str, Any]] = [(s.name, s.label, s.format) for s in METRICS.scores]
    for col in METRICS.shown("compare_per_class"):
        cols += [(f"{col.name}_{c}", f"{col.label} {c}" + (f" ({col.unit})" if col.unit else ""), col.format) for c in classes]

    def known(v: Any) -> bool:
        return isinstance(v, int | float) and not math.isnan(v)

    cols = [c for c in cols if any(known(r.get(c[0])) for r in cmp.rows)]
    if not cols:
        return [], []
    header = ["run", "mean Dice", *[label for _, label, _ in cols]]  # Dice beside pixel accuracy: the imbalance trap in one glance
    rows = [*cmp.rows, *[r for r in cmp.references if any(known(r.get(key)) for key, _, _ in cols)]]  # published numbers as reference rows
    return header, [[r["run"], _f(r.get("mean_dice")), *[fmt(r.get(key)) if known(r.get(key)) else "" for key, _, fmt in cols]] for r in rows]


STUDY_NOTE = (
    "test loss: the run's own loss function on the evaluated cases (mean over cases); pixel accuracy: voxels of the right class over all "
    "voxels, background included; macro / weighted P, R, F1: pixel-level precision, recall and F1 averaged over the classes with the "
    "background (weighted by each class's voxels); time saved: mean per case."
)


def paired_table(cmp: Comparison) -> tuple[list[str], list[list[str]]]:
    header = ["a", "b", "class", f"n ({cmp.by}s)", "Dice a", "Dice b", "b − a", "95 % CI", "Wilcoxon p", "verdict"]
    rows = []
    for p in cmp.paired:
        rows.append(
            [
                p["a"],
                p["b"],
                p["class"],
                str(p["n"]),
                _f(p["mean_a"]),
                _f(p["mean_b"]),
                f"{p['mean_diff']:+.3f}",
                f"[{p['ci_low']:+.3f}, {p['ci_high']:+.3f}]",
                "" if math.isnan(p["p_wilcoxon"]) else f"{p['p_wilcoxon']:.3g}",
                p["verdict"].replace("a better", f"{p['a']} better").replace("b better", f"{p['b']} better"),
            ]
        )
    return header, rows


def markdown(header: list[str], rows: list[list[str]]) -> str:
    esc = [[c.replace("|", "\\|") for c in r] for r in [header, *rows]]
    lines = ["| " + " | ".join(esc[0]) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(r) + " |" for r in esc[1:]]
    return "\n".join(lines) + "\n"


def html_table(header: list[str], rows: list[list[str]], css_class: str = "cmp") -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    body = "".join(
        ("<tr class='ref'>" if r[0].startswith("reference: ") else "<tr>") + "".join(f"<td>{html.escape(c)}</td>" for c in r) + "</tr>" for r in rows
    )
    return f"<table class='{css_class}'><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


TABLE_NOTE = (
    "mean Dice: mean over classes of the per-class means, ± the std over cases of each case's mean Dice; class columns: mean ± std over cases; "
    "HD95/ASSD in mm; latency: prediction only; peak memory: GPU allocated on CUDA, process RSS on CPU; "
    "sensitivity: ± half the range of the best validation Dice over the model's runs in its sweep."
)


TABLE_CSS = """body{font-family:system-ui,sans-serif;margin:2em;color:#222}table{border-collapse:collapse;margin:1em 0}
td,th{border:1px solid #ccc;padding:4px 8px;text-align:right;font-size:13px}th{background:#f3f3f3}td:first-child,td:nth-child(2){text-align:left}
tr.ref td{font-style:italic;background:#fafaf0}.warn{color:#8a5300}"""


def _csv_text(cmp: Comparison) -> str:
    keys: list[str] = []
    for r in [*cmp.rows, *cmp.references]:
        keys += [k for k in r if k not in keys]
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=keys, lineterminator="\n", restval="")
    w.writeheader()
    for r in [*cmp.rows, *cmp.references]:
        w.writerow({k: ("" if isinstance(v, float) and math.isnan(v) else v) for k, v in r.items()})
    return buf.getvalue()


def _paired_csv(cmp: Comparison) -> str:
    buf = io.StringIO()
    keys = ["a", "b", "class", "unit", "n", "mean_a", "mean_b", "mean_diff", "ci_low", "ci_high", "p_wilcoxon", "min_p", "verdict"]
    w = csv.DictWriter(buf, fieldnames=keys, lineterminator="\n", extrasaction="ignore")
    w.writeheader()
    w.writerows(cmp.paired)
    return buf.getvalue()


def write_comparison(cmp: Comparison, out: str | Path) -> Path:
    """Write the table (``comparison.md/.csv/.html``), ``paired.csv`` and ``comparison.json`` to ``out``."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    header, rows = display_table(cmp)
    ph, prows = paired_table(cmp)
    sh, srows = study_table(cmp)
    md = [f"# Comparison on the {cmp.split} split\n", markdown(header, rows), f"\n{TABLE_NOTE}\n"]
    if srows:
        md += ["\n## Loss, pixel accuracy, pixel-level averages, time saved\n", markdown(sh, srows), f"\n{STUDY_NOTE}\n"]
    if prows:
        md += [f"\n## Paired statistics (per {cmp.by}, Dice b − a, bootstrap 95 % CI, Wilcoxon signed-rank)\n", markdown(ph, prows)]
    if cmp.warnings:
        md += ["\n## Warnings\n", *[f"- {w}\n" for w in cmp.warnings]]
    write_text(out / "comparison.md", "".join(md))
    write_text(out / "comparison.csv", _csv_text(cmp))
    write_text(out / "paired.csv", _paired_csv(cmp))
    page = [f"<!doctype html><html><head><meta charset='utf-8'><title>medseg comparison</title><style>{TABLE_CSS}</style></head><body>"]
    page.append(f"<h1>Comparison on the {html.escape(cmp.split)} split</h1>" + html_table(header, rows) + f"<p class='note'>{html.escape(TABLE_NOTE)}</p>")
    if srows:
        note = f"<p class='note'>{html.escape(STUDY_NOTE)}</p>"
        page.append(f"<h2>Loss, pixel accuracy, pixel-level averages, time saved</h2>{html_table(sh, srows, 'study')}{note}")
    if prows:
        page.append(f"<h2>Paired statistics (per {cmp.by})</h2>" + html_table(ph, prows, "paired"))
    if cmp.warnings:
        page.append("<h2>Warnings</h2><ul>" + "".join(f"<li class='warn'>{html.escape(w)}</li>" for w in cmp.warnings) + "</ul>")
    page.append("</body></html>")
    write_text(out / "comparison.html", "\n".join(page))
    write_json(
        out / "comparison.json",
        {
            "split": cmp.split,
            "unit": cmp.by,
            "runs": [str(r.path) for r in cmp.runs],
            "rows": _clean(cmp.rows),
            "references": _clean(cmp.references),
            "paired": _clean(cmp.paired),
            "warnings": cmp.warnings,
        },
    )
    return out


def _clean(obj: Any) -> Any:
    if isinstance(obj, float):
        return None if math.isnan(obj) else ("inf" if math.isinf(obj) else obj)
    if isinstance(obj, dict):
        return {k: _clean(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_clean(v) for v in obj]
    return obj
