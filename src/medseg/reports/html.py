"""``make_report(run)``: one self-contained HTML page (images embedded) plus its PNGs."""

from __future__ import annotations

import base64
import html
import json
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np

from medseg.atomic import atomic_path, write_text
from medseg.engine.run import read_run
from medseg.errors import RunError
from medseg.evaluation import _dataset_of
from medseg.reports.overlay import best_slice, overlay, to_uint8

CSS = """body{font-family:system-ui,sans-serif;max-width:1100px;margin:2em auto;color:#222}
table{border-collapse:collapse}td,th{border:1px solid #ccc;padding:4px 8px;text-align:right}
th{background:#f3f3f3}td:first-child{text-align:left}img{max-width:100%}
.legend span{display:inline-block;width:12px;height:12px;margin:0 4px 0 12px;vertical-align:middle}
pre{background:#f6f6f6;padding:8px;overflow:auto;font-size:12px}"""


def _img_tag(path: Path, alt: str) -> str:
    data = base64.b64encode(path.read_bytes()).decode()
    return f'<img alt="{html.escape(alt)}" src="data:image/png;base64,{data}">'


def _slice2d(arr: np.ndarray, multi: bool, z: int | None) -> np.ndarray:
    if z is None:
        return arr
    return arr[:, z] if multi else arr[z]


def _gallery(run_dir: Path, out: Path, eval_dir: Path, summary: dict[str, Any], ds: Any) -> list[tuple[str, Path]]:
    per_case = summary.get("per_case_mean_dice", {})
    if not per_case:
        return []
    order = sorted(per_case, key=per_case.get)
    picks = {"worst": order[0], "median": order[len(order) // 2], "best": order[-1]}
    colors = [c.color for c in ds.info.classes]
    multi = ds.info.multi_label
    figs = []
    for tag, cid in picks.items():
        case = ds.load_case(cid)
        with np.load(eval_dir / "predictions" / f"{cid}.npz") as z:
            pred = z["label"]
        z_idx = best_slice(case.label, 0, multi) if case.ndim == 3 else None
        img = case.image[0] if z_idx is None else case.image[0, z_idx]
        gt = _slice2d(case.label, multi, z_idx)
        pr = _slice2d(pred, multi, z_idx)
        fig, axes = plt.subplots(1, 3, figsize=(9, 3.3))
        for ax, (title, rgb) in zip(
            axes,
            [("image", np.repeat(to_uint8(img)[..., None], 3, -1)), ("ground truth", overlay(img, gt, colors)), ("prediction", overlay(img, pr, colors))],
            strict=True,
        ):
            ax.imshow(rgb)
            ax.set_title(title)
            ax.axis("off")
        fig.suptitle(f"{tag}: {cid} (mean Dice {per_case[cid]:.3f})" + (f", slice {z_idx}" if z_idx is not None else ""))
        fig.tight_layout()
        path = out / f"case_{tag}.png"
        with atomic_path(path) as tmp:
            fig.savefig(tmp, dpi=90)
        plt.close(fig)
        figs.append((f"{tag} case", path))
    return figs


def make_report(run_dir: str | Path, split: str = "test") -> Path:
    """Write ``RUN/report/index.html`` from the run's curves and its evaluation on ``split``."""
    run_dir = Path(run_dir)
    config, info = read_run(run_dir)
    eval_dir = run_dir / "eval" / split
    if not (eval_dir / "summary.json").is_file():
        raise RunError(f"run has no evaluation on the {split} split", where=run_dir, fix=f"run `medseg evaluate {run_dir} --split {split}` first")
    summary = json.loads((eval_dir / "summary.json").read_text(encoding="utf-8"))
    ds = _dataset_of(run_dir, info, config)
    out = run_dir / "report"
    out.mkdir(exist_ok=True)
    parts = [f"<!doctype html><html><head><meta charset='utf-8'><title>medseg report — {html.escape(config.name)}</title><style>{CSS}</style></head><body>"]
    parts.append(f"<h1>{html.escape(config.name)}</h1>")
    mean = summary.get("mean_dice")
    parts.append(
        "<p>"
        + " · ".join(
            html.escape(s)
            for s in [
                f"model {config.model.name} ({info.get('parameters', 0):,} parameters)",
                f"data set {ds.info.name}",
                f"{info.get('n_train', '?')} train / {info.get('n_val', '?')} val / {summary['n_cases']} {split} cases",
                f"trained {info.get('train_time_s', 0):.0f} s on {info.get('device', '?')}",
                f"mean {split} Dice {mean:.3f}" if mean is not None else "mean Dice n/a",
            ]
        )
        + "</p>"
    )
    legend = "".join(
        f"<span style='background:rgb{tuple(c.color)}'></span>{html.escape(c.name)}" for k, c in enumerate(ds.info.classes) if k in ds.info.foreground
    )
    parts.append(f"<p class='legend'>Classes: {legend}</p>")
    parts.append(
        f"<h2>{html.escape(split.capitalize())} metrics per class</h2><table><tr>"
        + "".join(f"<th>{h}</th>" for h in ("class", "Dice", "IoU", "precision", "recall", "n"))
        + "</tr>"
    )
    for name, entry in summary["per_class"].items():

        def fmt(m: str, e: dict[str, Any] = entry) -> str:
            v = e[m]
            return "n/a" if v["mean"] is None else f"{v['mean']:.3f} ± {v['std']:.3f}"

        parts.append(
            f"<tr><td>{html.escape(name)}</td><td>{fmt('dice')}</td><td>{fmt('iou')}</td><td>{fmt('precision')}</td><td>{fmt('recall')}</td><td>{entry['dice']['n']}</td></tr>"
        )
    parts.append("</table>")
    if (run_dir / "curves.png").is_file():
        parts.append("<h2>Training curves</h2>" + _img_tag(run_dir / "curves.png", "training curves"))
    gallery = _gallery(run_dir, out, eval_dir, summary, ds)
    if gallery:
        parts.append("<h2>Cases: worst, median, best</h2>")
        parts += [f"<div>{_img_tag(p, t)}</div>" for t, p in gallery]
    parts.append(f"<h2>Config</h2><pre>{html.escape(config.to_yaml())}</pre></body></html>")
    index = out / "index.html"
    write_text(index, "\n".join(parts))
    return index
