"""The metric registry: every metric medseg scores, with what it takes to summarise, compare and show it.

A metric is one function and one decorator (docs/metrics.md, "Adding a metric")::

    from medseg.metrics.registry import CaseMasks, Column, register_metric

    @register_metric("boundary_f1", columns=[Column("bf1", "boundary F1", show=ALL_VIEWS)])
    def boundary_f1(m: CaseMasks, cfg) -> dict[str, np.ndarray]:
        return {"bf1": np.array([... one value per scored class ...])}

The function receives one case (:class:`CaseMasks`: prediction, reference, the scored classes,
spacing) and the ``eval`` settings, and returns one array of length ``len(m.classes)`` per declared
column. From the declaration alone, ``medseg evaluate`` writes the column to ``metrics.csv`` and
summarises it in ``summary.json``; ``medseg compare``, the HTML report, the ``evaluate`` table of
the CLI and the demo show it where its :attr:`Column.show` says.

Run-level numbers that are not a case × class column (pixel accuracy and the pixel-level
precision / recall / F1 averages from the summed confusion matrix, the test loss) are
:class:`Score` entries: a name, how to read it from ``summary.json``, and how to show it.

Written here rather than with :class:`medseg.core.registry.Registry` because the order of
registration is the order of the ``metrics.csv`` columns, entries must be removable (a test
registers a metric and takes it away), and a column name must be unique across metrics.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np

from medseg.core.errors import ConfigError, MedsegError

Summary = Literal["mean", "sum", "none"]
Direction = Literal["higher", "lower", "none"]
#: where a column can be shown: the comparison table (macro mean), the comparison's per-class
#: columns, the report's per-class table, the report's box plots, ``medseg evaluate``'s table, the demo
VIEWS = ("compare", "compare_per_class", "per_class", "boxplot", "cli", "demo")
ALL_VIEWS = frozenset(VIEWS)
#: column names the id columns of ``metrics.csv`` use
RESERVED = frozenset({"case", "patient", "class"})


class MetricError(MedsegError):
    """A metric is unknown, declared twice, or returned something other than it declared."""


@dataclass(frozen=True)
class Column:
    """One ``metrics.csv`` column (one value per case × class).

    Args:
        name: the column name (``metrics.csv``, ``summary.json``, ``comparison.csv``).
        label: the display name in tables and figures.
        summary: ``"mean"`` — mean ± std, median over cases per class (undefined NaN values are
            left out and counted as ``n_undefined``), then ``macro`` and reference-volume
            ``weighted`` means over classes; ``"sum"`` — totals per class and over all classes
            (``summary.json → totals``); ``"none"`` — not summarised on its own (raw counts a
            metric's ``summarize`` pools, e.g. TP / FP / FN).
        direction: ``"higher"`` or ``"lower"`` is better, or ``"none"`` (signed differences, counts).
        digits: decimals shown.
        unit: shown after the label in per-class tables (``"mm"``, ``"s"``).
        show: the views that show it (:data:`VIEWS`).
        limits: the axis range of plots (``(0, 1)`` for ratios); ``None`` lets the data decide.
    """

    name: str
    label: str = ""
    summary: Summary = "mean"
    direction: Direction = "higher"
    digits: int = 3
    unit: str = ""
    show: frozenset[str] = frozenset()
    limits: tuple[float, float] | None = None

    def __post_init__(self) -> None:
        if not self.label:
            object.__setattr__(self, "label", self.name)
        object.__setattr__(self, "show", frozenset(self.show))
        if self.summary not in ("mean", "sum", "none"):
            raise ValueError(f"column {self.name!r}: summary must be mean, sum or none, got {self.summary!r}")
        if self.direction not in ("higher", "lower", "none"):
            raise ValueError(f"column {self.name!r}: direction must be higher, lower or none, got {self.direction!r}")
        unknown = set(self.show) - set(VIEWS)
        if unknown:
            raise ValueError(f"column {self.name!r}: unknown views {sorted(unknown)}; choose from {list(VIEWS)}")

    @property
    def heading(self) -> str:
        """The label with its unit: ``HD95 (mm)``."""
        return f"{self.label} ({self.unit})" if self.unit else self.label

    def format(self, value: Any, empty: str = "") -> str:
        """A value as shown in tables: ``digits`` decimals, ``inf``, or ``empty`` when undefined."""
        return format_value(value, self.digits, empty)


@dataclass(frozen=True)
class Score:
    """One run-level number of ``summary.json`` (not a case × class column), shown by ``compare`` and the report.

    Args:
        name: the key in compare's rows and ``comparison.csv``.
        label: display name.
        read: ``summary.json`` (as a dict) → the value, or None when the summary lacks it (older runs).
        direction: ``"higher"``, ``"lower"`` or ``"none"``.
        digits: decimals shown.
        group: what it belongs to (``classification``, ``loss``); the report groups by it.
    """

    name: str
    label: str
    read: Callable[[dict[str, Any]], float | None]
    direction: Direction = "higher"
    digits: int = 3
    group: str = ""

    def value(self, summary: dict[str, Any]) -> float:
        try:
            v = self.read(summary)
        except (KeyError, TypeError, ValueError, IndexError):
            v = None
        return math.nan if v is None else float(v)

    def format(self, value: Any, empty: str = "") -> str:
        return format_value(value, self.digits, empty)


def format_value(value: Any, digits: int = 3, empty: str = "") -> str:
    """``digits`` decimals; ``inf`` for infinity; ``empty`` for None / NaN; text as it is."""
    if value is None:
        return empty
    if isinstance(value, str):
        return value
    if isinstance(value, int | float | np.floating | np.integer):
        v = float(value)
        if math.isnan(v):
            return empty
        if math.isinf(v):
            return "inf" if v > 0 else "-inf"
        return f"{v:.{digits}f}"
    return str(value)


@dataclass
class CaseMasks:
    """What a metric function receives for one case.

    Attributes:
        pred, ref: label maps of class indices, or boolean stacks ``(K, ...)`` when ``multi_label``.
        classes: the scored class indices (channels); every returned array has one value per class.
        names: their names (for per-class settings).
        spacing: voxel size per spatial axis in mm.
        multi_label: whether ``pred`` and ``ref`` are channel stacks.
        valid: spatial mask of the voxels that count, or None (all). Where it is false (the
            reference holds the ignore label) ``pred`` and ``ref`` are background already;
            voxel counts (TN) leave those voxels out too.
    """

    pred: np.ndarray
    ref: np.ndarray
    classes: Sequence[int]
    names: Sequence[str]
    spacing: Sequence[float]
    multi_label: bool = False
    valid: np.ndarray | None = None

    def mask(self, which: Literal["pred", "ref"], i: int) -> np.ndarray:
        """Boolean mask of the ``i``-th scored class in the prediction or the reference."""
        arr = self.pred if which == "pred" else self.ref
        k = self.classes[i]
        return arr[k].astype(bool) if self.multi_label else arr == k


MetricFn = Callable[[CaseMasks, Any], dict[str, np.ndarray]]


@dataclass(frozen=True)
class Metric:
    """A registered metric (see :func:`register_metric`)."""

    name: str
    fn: MetricFn
    columns: tuple[Column, ...]
    group: str
    enabled: Callable[[Any], bool] = field(default=lambda cfg: True)
    conventions: Callable[[Any], dict[str, str]] | None = None
    summarize: Callable[[list[dict[str, Any]], list[str]], dict[str, Any]] | None = None

    def is_enabled(self, cfg: Any) -> bool:
        return True if cfg is None else bool(self.enabled(cfg))

    def score(self, masks: CaseMasks, cfg: Any) -> dict[str, np.ndarray]:
        """Run the function and check it returned one array of ``len(classes)`` values per declared column."""
        out = self.fn(masks, cfg)
        want = [c.name for c in self.columns]
        if not isinstance(out, dict) or sorted(out) != sorted(want):
            got = sorted(out) if isinstance(out, dict) else type(out).__name__
            raise MetricError(
                f"metric {self.name!r} returned {got}, but declares the columns {want}", where=self.fn.__qualname__, fix="return one array per column"
            )
        res = {}
        for k in want:
            v = np.asarray(out[k], dtype=np.float64).reshape(-1)
            if v.shape != (len(masks.classes),):
                raise MetricError(
                    f"metric {self.name!r} column {k!r} has {v.size} values for {len(masks.classes)} classes", where=self.fn.__qualname__, fix="one per class"
                )
            res[k] = v
        return res


class MetricRegistry:
    """Metrics in registration order (the order of the ``metrics.csv`` columns) and run-level scores."""

    def __init__(self) -> None:
        self._metrics: dict[str, Metric] = {}
        self._scores: dict[str, Score] = {}

    # ------------------------------------------------------------ registering

    def add(self, metric: Metric) -> Metric:
        if metric.name in self._metrics:
            raise ValueError(f"metric {metric.name!r} is registered twice")
        taken = {c.name: m.name for m in self._metrics.values() for c in m.columns}
        for c in metric.columns:
            if c.name in RESERVED or c.name in taken:
                owner = "metrics.csv's id columns" if c.name in RESERVED else f"metric {taken[c.name]!r}"
                raise ValueError(f"metric {metric.name!r}: column {c.name!r} is already used by {owner}")
        if len({c.name for c in metric.columns}) != len(metric.columns):
            raise ValueError(f"metric {metric.name!r} declares a column twice")
        self._metrics[metric.name] = metric
        return metric

    def add_score(self, score: Score) -> Score:
        if score.name in self._scores:
            raise ValueError(f"score {score.name!r} is registered twice")
        self._scores[score.name] = score
        return score

    def remove(self, name: str) -> None:
        """Take a metric (or a score) away again."""
        if name not in self._metrics and name not in self._scores:
            raise self._unknown(name)
        self._metrics.pop(name, None)
        self._scores.pop(name, None)

    # ------------------------------------------------------------ reading

    def get(self, name: str) -> Metric:
        if name not in self._metrics:
            raise self._unknown(name)
        return self._metrics[name]

    def _unknown(self, name: str) -> MetricError:
        return MetricError(f"unknown metric {name!r}", fix=f"choose one of: {', '.join(self._metrics) or '(none)'}")

    def __iter__(self) -> Iterator[Metric]:
        return iter(list(self._metrics.values()))

    def __contains__(self, name: object) -> bool:
        return name in self._metrics

    def __len__(self) -> int:
        return len(self._metrics)

    @property
    def names(self) -> list[str]:
        return list(self._metrics)

    def enabled(self, cfg: Any = None) -> list[Metric]:
        """The metrics computed under the ``eval`` settings ``cfg`` (all of them for ``None``)."""
        return [m for m in self._metrics.values() if m.is_enabled(cfg)]

    def columns(self, cfg: Any = None) -> list[Column]:
        """Every column the enabled metrics write, in ``metrics.csv`` order."""
        return [c for m in self.enabled(cfg) for c in m.columns]

    def column(self, name: str) -> Column | None:
        for m in self._metrics.values():
            for c in m.columns:
                if c.name == name:
                    return c
        return None

    def shown(self, view: str, present: Sequence[str] | None = None) -> list[Column]:
        """The columns a view shows, optionally only those ``present`` (e.g. in a run's ``metrics.csv``)."""
        if view not in VIEWS:
            raise ValueError(f"unknown view {view!r}; choose from {list(VIEWS)}")
        cols = [c for m in self._metrics.values() for c in m.columns if view in c.show]
        return cols if present is None else [c for c in cols if c.name in present]

    @property
    def scores(self) -> list[Score]:
        return list(self._scores.values())


#: the one registry every stage reads; the built-in metrics are registered by :mod:`medseg.metrics.builtin`
METRICS = MetricRegistry()


def register_metric(
    name: str,
    *,
    columns: Sequence[Column | str],
    group: str | None = None,
    enabled: Callable[[Any], bool] | None = None,
    conventions: Callable[[Any], dict[str, str]] | None = None,
    summarize: Callable[[list[dict[str, Any]], list[str]], dict[str, Any]] | None = None,
) -> Callable[[MetricFn], MetricFn]:
    """Register ``fn(masks: CaseMasks, cfg) -> {column: array per class}`` as a metric.

    Args:
        name: the metric's name (unique).
        columns: what it returns, as :class:`Column` (a plain string is a ``Column`` with defaults).
        group: what it belongs to (``overlap``, ``surface``…; default: ``name``).
        enabled: ``cfg → bool`` on the ``eval`` settings (default: always).
        conventions: ``cfg → {key: one line}`` recorded in ``summary.json → conventions``.
        summarize: ``(rows, class_names) → {key: value}`` merged into ``summary.json`` (pooled
            values, totals of counts) — beyond what each column's ``summary`` rule gives.
    """

    def deco(fn: MetricFn) -> MetricFn:
        cols = tuple(Column(c) if isinstance(c, str) else c for c in columns)
        METRICS.add(Metric(name, fn, cols, group or name, enabled or (lambda cfg: True), conventions, summarize))
        return fn

    return deco


def register_score(
    name: str, label: str, read: Callable[[dict[str, Any]], float | None], *, direction: Direction = "higher", digits: int = 3, group: str = ""
) -> Score:
    """Register a run-level number read from ``summary.json`` (see :class:`Score`)."""
    return METRICS.add_score(Score(name, label, read, direction, digits, group))


def unregister_metric(name: str) -> None:
    """Remove a metric or score registered earlier (a plugin unloading, a test cleaning up)."""
    METRICS.remove(name)


def per_class_setting(values: dict[str, float], default: float, names: Sequence[str], where: str) -> list[float]:
    """One value per class name from ``{name: value}`` settings with a default; unknown names are refused."""
    unknown = sorted(set(values) - set(names))
    if unknown:
        raise ConfigError(f"unknown class names {unknown}; the classes are {list(names)}", where=where, fix="use the class names of the data set")
    return [float(values.get(n, default)) for n in names]
