"""Compare evaluated runs: one table (Markdown, CSV, HTML) plus paired statistics.

:func:`compare_runs` reads each run folder (``config.yaml``, ``run.json``, ``history.csv``) and its
evaluation on one split (``eval/<split>/summary.json`` + ``metrics.csv``) and returns a
:class:`Comparison`; :func:`write_comparison` writes it to a folder::

    comparison.md / comparison.csv / comparison.html   one row per run (+ reference rows)
    paired.csv                                         per pair of runs: mean Dice difference,
                                                       bootstrap 95 % CI, Wilcoxon p, n
    comparison.json                                    everything above, and the warnings

Paired statistics use the cases both runs were scored on. Runs scored on different case sets are
restricted to the intersection with a warning naming how many cases were dropped; runs of
different data sets, or without a common case, get no paired statistics (a warning says why).
Bootstrap and Wilcoxon are written here (numpy + ``scipy.stats.wilcoxon``) because the CI of a
*paired mean difference* over cases is three lines and no segmentation library reports it.
"""

from __future__ import annotations

import csv
import html
import io
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from medseg.config import Config
from medseg.core.atomic import write_json, write_text
from medseg.core.errors import ConfigError, RunError
from medseg.runs import read_run

#: Below this many paired cases (or patients) a warning says the test set is too small to tell.
MIN_PAIRED = 10
BOOTSTRAP_SAMPLES = 10_000
#: A difference is called only when the bootstrap CI excludes 0 and the Wilcoxon p is below this.
ALPHA = 0.05
#: With more runs than this, each run is paired with the first one only (the baseline).
ALL_PAIRS_MAX = 4


@dataclass
class RunResult:
    """One evaluated run, as read from its folder."""

    path: Path
    split: str
    label: str
    config: Config
    info: dict[str, Any]
    summary: dict[str, Any]
    rows: list[dict[str, Any]]
    history: list[dict[str, float]]

    @property
    def classes(self) -> list[str]:
        return list(self.summary.get("classes") or self.summary["per_class"])

    def per_case(self, cls: str | None = None, by: str = "case") -> dict[str, float]:
        """Dice per case (mean over classes when ``cls`` is None), or per patient when ``by="patient"``."""
        vals: dict[str, list[float]] = {}
        for r in self.rows:
            if cls is not None and r["class"] != cls:
                continue
            d = r["dice"]
            if math.isfinite(d):
                vals.setdefault(r["case"], []).append(d)
        per_case = {c: float(np.mean(v)) for c, v in vals.items()}
        if by == "case":
            return per_case
        patient = {r["case"]: r.get("patient") or r["case"] for r in self.rows}
        groups: dict[str, list[float]] = {}
        for c, v in per_case.items():
            groups.setdefault(patient[c], []).append(v)
        return {p: float(np.mean(v)) for p, v in groups.items()}


@dataclass
class Comparison:
    """The table rows, the paired statistics and the warnings of one comparison."""

    split: str
    runs: list[RunResult]
    rows: list[dict[str, Any]]
    references: list[dict[str, Any]]
    paired: list[dict[str, Any]]
    warnings: list[str] = field(default_factory=list)
    by: str = "case"


# ---------------------------------------------------------------- reading runs


def _num(v: str) -> Any:
    if v in ("", None):
        return math.nan
    try:
        return float(v)
    except ValueError:
        return v


def read_history(run_dir: Path) -> list[dict[str, float]]:
    """``history.csv`` as a list of rows of floats (empty if absent)."""
    path = run_dir / "history.csv"
    if not path.is_file():
        return []
    with path.open(newline="", encoding="utf-8") as fh:
        return [{k: _num(v) for k, v in r.items()} for r in csv.DictReader(fh)]


def read_metrics(path: Path) -> list[dict[str, Any]]:
    """``metrics.csv`` rows: ``case``, ``patient``, ``class`` as text, every metric as float."""
    with path.open(newline="", encoding="utf-8") as fh:
        return [{k: (v if k in ("case", "patient", "class") else _num(v)) for k, v in r.items()} for r in csv.DictReader(fh)]


def load_result(run_dir: str | Path, split: str = "test") -> RunResult:
    """Read a run folder and its evaluation on ``split``.

    Raises:
        RunError: not a run folder, or no evaluation on ``split`` (the fix names the command).
    """
    run_dir = Path(run_dir)
    config, info = read_run(run_dir)
    ev = run_dir / "eval" / split
    if not (ev / "summary.json").is_file() or not (ev / "metrics.csv").is_file():
        raise RunError(f"run has no evaluation on the {split} split", where=run_dir, fix=f"run `medseg evaluate {run_dir} --split {split}` first")
    summary = json.loads((ev / "summary.json").read_text(encoding="utf-8"))
    rows = read_metrics(ev / "metrics.csv")
    return RunResult(run_dir, split, config.name, config, info, summary, rows, read_history(run_dir))


def expand_runs(paths: list[str | Path]) -> list[Path]:
    """Run folders as given; a sweep folder (``sweep.json``) stands for its finished runs."""
    out: list[Path] = []
    for p in map(Path, paths):
        if (p / "sweep.json").is_file() and not (p / "config.yaml").is_file():
            sweep = json.loads((p / "sweep.json").read_text(encoding="utf-8"))
            runs = [p / "runs" / r["name"] for r in sweep.get("runs", []) if r.get("status") == "finished" and (p / "runs" / r["name"] / "run.json").is_file()]
            if not runs:
                raise RunError("sweep folder holds no finished run", where=p, fix=f"run the sweep first (`medseg sweep ... --out {p}`)")
            out += runs
        else:
            out.append(p)
    return out


# ---------------------------------------------------------------- statistics


def bootstrap_ci(diff: np.ndarray, n_boot: int = BOOTSTRAP_SAMPLES, level: float = 0.95, seed: int = 0) -> tuple[float, float]:
    """Percentile bootstrap confidence interval of the mean of paired differences.

    Args:
        diff: one difference per case (or patient).
        n_boot: resamples.
        level: coverage of the interval.
        seed: seed of the resampling (results are reproducible).

    Returns:
        ``(low, high)``; ``(nan, nan)`` for an empty input.
    """
    diff = np.asarray(diff, dtype=np.float64)
    if diff.size == 0:
        return math.nan, math.nan
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, diff.size, size=(n_boot, diff.size))
    means = diff[idx].mean(axis=1)
    a = (1 - level) / 2
    lo, hi = np.quantile(means, [a, 1 - a])
    return float(lo), float(hi)


def wilcoxon_p(diff: np.ndarray) -> float:
    """Two-sided Wilcoxon signed-rank p-value of paired differences; 1.0 when every difference is 0."""
    from scipy.stats import wilcoxon

    diff = np.asarray(diff, dtype=np.float64)
    if diff.size == 0:
        return math.nan
    if np.all(diff == 0):
        return 1.0
    return float(wilcoxon(diff).pvalue)


def paired_stats(a: dict[str, float], b: dict[str, float], seed: int = 0) -> dict[str, Any]:
    """Compare two runs' per-case values on their common keys: ``b - a``.

    Returns:
        ``n``, ``mean_a``, ``mean_b``, ``mean_diff``, ``ci_low``, ``ci_high``, ``p_wilcoxon``,
        ``min_p`` (the smallest two-sided p the signed-rank test can give with ``n`` pairs) and
        ``verdict`` (``"b better"`` / ``"a better"`` when the CI excludes 0 and p < ``ALPHA``,
        otherwise ``"no clear difference"``).
    """
    keys = sorted(set(a) & set(b))
    da = np.array([a[k] for k in keys])
    db = np.array([b[k] for k in keys])
    diff = db - da
    lo, hi = bootstrap_ci(diff, seed=seed)
    p = wilcoxon_p(diff)
    n = len(keys)
    significant = n > 0 and p < ALPHA
    if significant and lo > 0:
        verdict = "b better"
    elif significant and hi < 0:
        verdict = "a better"
    else:
        verdict = "no clear difference"
    return {
        "n": n,
        "mean_a": float(da.mean()) if n else math.nan,
        "mean_b": float(db.mean()) if n else math.nan,
        "mean_diff": float(diff.mean()) if n else math.nan,
        "ci_low": lo,
        "ci_high": hi,
        "p_wilcoxon": p,
        "min_p": 2.0 / 2**n if n else math.nan,
        "verdict": verdict,
    }


# ---------------------------------------------------------------- the table


def _macs(result: RunResult) -> tuple[int | None, str]:
    """MACs of one forward pass at the evaluated input size (first case's prediction, or the patch)."""
    try:
        from medseg.engine.inferer import load_module
        from medseg.models import macs

        module = load_module(result.path, "best", "cpu")
        size = result.config.data.patch_size
        if not size:
            pred_dir = result.path / "eval" / result.split / "predictions"
            first = next(iter(sorted(pred_dir.glob("*.npz"))), None)
            if first is None:
                return None, ""
            with np.load(first) as z:
                shape = z["label"].shape
            dims = int(module.hparams.get("spatial_dims", len(shape)))
            size = list(shape[-dims:])
        in_ch = int(module.hparams.get("in_channels", 1))
        return macs(module.net, (1, in_ch, *size)), "×".join(map(str, size))
    except Exception:  # MACs are informative; a model the counter cannot trace leaves the cell empty
        return None, ""


def _sweep_sensitivity(result: RunResult) -> dict[str, Any] | None:
    """Spread of the best validation Dice over the runs of the same model in the run's sweep."""
    sweep = result.info.get("sweep")
    if not sweep:
        return None
    sdir = Path(sweep.get("dir", ""))
    path = sdir / "sweep.json"
    if not path.is_file():
        return None
    data = json.loads(path.read_text(encoding="utf-8"))
    vals = [
        r["best_val_dice"]
        for r in data.get("runs", [])
        if r.get("group") == sweep.get("group") and isinstance(r.get("best_val_dice"), int | float) and math.isfinite(r["best_val_dice"])
    ]
    if len(vals) < 2:
        return None
    return {"n_runs": len(vals), "range": float(max(vals) - min(vals)), "std": float(np.std(vals)), "min": float(min(vals)), "max": float(max(vals))}


def _mean_std(entry: dict[str, Any] | None) -> tuple[float, float]:
    if not entry or entry.get("mean") is None or isinstance(entry.get("mean"), str):
        return math.nan, math.nan
    return float(entry["mean"]), math.nan if entry.get("std") is None else float(entry["std"])


def _macro(summary: dict[str, Any], metric: str) -> float:
    v = (summary.get("macro") or {}).get(metric)
    if v is None:
        vals = [float(e[metric]["mean"]) for e in summary["per_class"].values() if metric in e and isinstance(e[metric].get("mean"), int | float)]
        return float(np.mean(vals)) if vals else math.nan
    return math.inf if v == "inf" else float(v)


def table_row(result: RunResult, with_macs: bool = True) -> dict[str, Any]:
    """One row of the comparison table (numbers as floats; NaN when unknown)."""
    s, info, h = result.summary, result.info, result.history
    pcd = list((s.get("per_case_mean_dice") or {}).values())
    row: dict[str, Any] = {
        "run": result.label,
        "model": result.config.model.name,
        "parameters": info.get("parameters", math.nan),
    }
    if with_macs:
        m, size = _macs(result)
        row["macs"] = math.nan if m is None else m
        row["macs_input"] = size
    row["n_cases"] = s.get("n_cases", len(pcd))
    row["mean_dice"] = math.nan if s.get("mean_dice") is None else float(s["mean_dice"])
    row["mean_dice_std"] = float(np.std(pcd)) if pcd else math.nan
    for cls in result.classes:
        mean, std = _mean_std(s["per_class"][cls].get("dice"))
        row[f"dice_{cls}"] = mean
        row[f"dice_{cls}_std"] = std
    for metric in ("hd95", "assd", "precision", "recall"):
        row[metric] = _macro(s, metric)
    row["train_time_s"] = info.get("train_time_s", math.nan)
    row["epochs_run"] = info.get("epochs_run", math.nan)
    best = info.get("best_epoch")
    row["epochs_to_best"] = math.nan if best is None else int(best) + 1
    sps = [r["samples_per_s"] for r in h if isinstance(r.get("samples_per_s"), float) and math.isfinite(r["samples_per_s"])]
    row["train_samples_per_s"] = float(np.median(sps)) if sps else math.nan
    spc = s.get("seconds_per_case")
    row["latency_per_case_s"] = math.nan if spc is None else float(spc)
    slices = _slices_per_case(result)
    row["latency_per_slice_s"] = row["latency_per_case_s"] / slices if slices else math.nan
    mem = [r["peak_memory_mb"] for r in h if isinstance(r.get("peak_memory_mb"), float) and math.isfinite(r["peak_memory_mb"])]
    row["peak_memory_mb"] = max(mem) if mem else math.nan
    row["device"] = info.get("device", "")
    sens = _sweep_sensitivity(result)
    row["sensitivity_dice_range"] = math.nan if sens is None else sens["range"]
    row["sensitivity_n_runs"] = 0 if sens is None else sens["n_runs"]
    return row


def _slices_per_case(result: RunResult) -> float:
    """Mean number of 2D slices per evaluated case (1 for 2D data), from up to 20 saved predictions."""
    counts = []
    for f in sorted((result.path / "eval" / result.split / "predictions").glob("*.npz"))[:20]:
        with np.load(f) as z:
            shape = z["label"].shape
            dims = int(z["affine"].shape[0]) - 1 if "affine" in z.files else len(shape)
        counts.append(shape[-3] if dims == 3 and len(shape) >= 3 else 1)
    return float(np.mean(counts)) if counts else 1.0


def _reference_rows(results: list[RunResult]) -> list[dict[str, Any]]:
    seen: dict[str, dict[str, Any]] = {}
    for r in results:
        for ref in r.config.eval.reference:
            if ref.name in seen:
                continue
            row: dict[str, Any] = {"run": f"reference: {ref.name}", "model": ref.note or "published", "parameters": ref.parameters or math.nan}
            row["mean_dice"] = math.nan if ref.dice is None else ref.dice
            for cls, v in ref.class_dice.items():
                row[f"dice_{cls}"] = v
            for metric in ("hd95", "assd", "precision", "recall"):
                v = getattr(ref, metric)
                row[metric] = math.nan if v is None else v
            seen[ref.name] = row
    return list(seen.values())


def compare_runs(runs: list[str | Path], split: str = "test", by: str = "case", with_macs: bool = True, seed: int = 0) -> Comparison:
    """Read runs (or sweep folders) evaluated on ``split`` and build the comparison.

    Args:
        runs: run folders; a sweep folder stands for its finished runs.
        split: the evaluated split to compare.
        by: paired unit, ``"case"`` or ``"patient"`` (per-case Dice averaged per patient first;
            use it when a patient contributes several cases, which are not independent).
        with_macs: count multiply-accumulates (loads each model once).
        seed: bootstrap seed.

    Returns:
        The :class:`Comparison` (nothing written; see :func:`write_comparison`).

    Raises:
        RunError: a run is missing or not evaluated on ``split``.
        ConfigError: bad ``by``.
    """
    if by not in ("case", "patient"):
        raise ConfigError(f"unknown paired unit {by!r}", where="--by", fix="use case or patient")
    paths = expand_runs(runs)
    if not paths:
        raise RunError("no run to compare", where="RUN", fix="give one or more run folders")
    results = []
    for p in paths:
        results.append(load_result(p, split))
    _unique_labels(results)
    warnings: list[str] = []
    rows = [table_row(r, with_macs) for r in results]
    paired: list[dict[str, Any]] = []
    n = len(results)
    pairs = [(i, j) for i in range(n) for j in range(i + 1, n)] if n <= ALL_PAIRS_MAX else [(0, j) for j in range(1, n)]
    pair_warnings: dict[str, list[str]] = {}
    for i, j in pairs:
        a, b = results[i], results[j]
        found: list[str] = []
        paired += _pair(a, b, by, seed, found)
        for w in found:
            pair_warnings.setdefault(w, []).append(f"{a.label} vs {b.label}")
    for w, who in pair_warnings.items():
        warnings.append(f"{who[0]}: {w}" if len(who) == 1 else f"{w} ({'every pair' if len(who) == len(pairs) else '; '.join(who)})")
    if n > ALL_PAIRS_MAX:
        warnings.append(f"{n} runs: each is paired with the first ({results[0].label}) only")
    return Comparison(split, results, rows, _reference_rows(results), paired, warnings, by)


def _unique_labels(results: list[RunResult]) -> None:
    counts: dict[str, int] = {}
    for r in results:
        counts[r.label] = counts.get(r.label, 0) + 1
    for r in results:
        if counts[r.label] > 1:
            r.label = f"{r.label} ({r.path.name})"
    seen: dict[str, int] = {}
    for r in results:  # still equal (same name, same folder name): number them
        if r.label in seen:
            seen[r.label] += 1
            r.label = f"{r.label} #{seen[r.label]}"
        else:
            seen[r.label] = 1


def _pair(a: RunResult, b: RunResult, by: str, seed: int, warnings: list[str]) -> list[dict[str, Any]]:
    da, db = a.info.get("dataset"), b.info.get("dataset")
    if da and db and da != db:
        warnings.append(f"trained on different data sets ({da} vs {db}); no paired statistics")
        return []
    ca, cb = set(a.per_case()), set(b.per_case())
    common = ca & cb
    if not common:
        warnings.append("no case evaluated by both; no paired statistics (evaluate both on the same split)")
        return []
    if ca != cb:
        warnings.append(f"evaluated on different case sets ({len(ca)} vs {len(cb)} cases); paired statistics use the {len(common)} cases both share")
    out = []
    for cls in [None, *[c for c in a.classes if c in b.classes]]:
        pa = {k: v for k, v in a.per_case(cls, "case").items() if k in common}
        pb = {k: v for k, v in b.per_case(cls, "case").items() if k in common}
        if by == "patient":
            patient = {r["case"]: r.get("patient") or r["case"] for r in a.rows}
            pa, pb = _by_patient(pa, patient), _by_patient(pb, patient)
        st = paired_stats(pa, pb, seed)
        st = {"a": a.label, "b": b.label, "class": "mean" if cls is None else cls, "unit": by, **st}
        out.append(st)
        if cls is None:
            n = st["n"]
            if st["min_p"] > 0.05:
                warnings.append(f"only {n} paired {by}s — the Wilcoxon test cannot reach p < {ALPHA:g}; the test set is too small to tell")
            elif n < MIN_PAIRED:
                warnings.append(f"only {n} paired {by}s — too few to tell reliably; evaluate on more cases")
            n_pat = len({r.get("patient") or r["case"] for r in a.rows if r["case"] in common})
            if by == "case" and n_pat < n:
                warnings.append(f"{n} cases come from {n_pat} patients and are not independent; see also --by patient")
    return out


def _by_patient(values: dict[str, float], patient: dict[str, str]) -> dict[str, float]:
    groups: dict[str, list[float]] = {}
    for c, v in values.items():
        groups.setdefault(patient.get(c, c), []).append(v)
    return {p: float(np.mean(v)) for p, v in groups.items()}


# ---------------------------------------------------------------- output


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
    header = ["run", "model", "params", "MACs", "mean Dice", *[f"Dice {c}" for c in classes], "HD95", "ASSD", "precision", "recall"]
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
        line += [_f(row.get("hd95"), 2), _f(row.get("assd"), 2), _f(row.get("precision")), _f(row.get("recall"))]
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
    md = [f"# Comparison on the {cmp.split} split\n", markdown(header, rows), f"\n{TABLE_NOTE}\n"]
    if prows:
        md += [f"\n## Paired statistics (per {cmp.by}, Dice b − a, bootstrap 95 % CI, Wilcoxon signed-rank)\n", markdown(ph, prows)]
    if cmp.warnings:
        md += ["\n## Warnings\n", *[f"- {w}\n" for w in cmp.warnings]]
    write_text(out / "comparison.md", "".join(md))
    write_text(out / "comparison.csv", _csv_text(cmp))
    write_text(out / "paired.csv", _paired_csv(cmp))
    page = [f"<!doctype html><html><head><meta charset='utf-8'><title>medseg comparison</title><style>{TABLE_CSS}</style></head><body>"]
    page.append(f"<h1>Comparison on the {html.escape(cmp.split)} split</h1>" + html_table(header, rows) + f"<p class='note'>{html.escape(TABLE_NOTE)}</p>")
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
