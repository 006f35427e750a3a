"""Segmentation metrics; conventions are written down in docs/metrics.md.

* :mod:`~medseg.metrics.overlap` — Dice, IoU, precision, recall, specificity, F1, volumes from
  confusion counts; confusion matrix and pixel-level classification report;
* :mod:`~medseg.metrics.surface` — HD, HD95, ASSD, NSD in mm (MedPy / MONAI / DeepMind conventions);
* :mod:`~medseg.metrics.clinical` — reader time saved per slice;
* :mod:`~medseg.metrics.lesions` — lesion-wise TP / FP / FN from connected components;
* :mod:`~medseg.metrics.registry` — :data:`METRICS`, what every stage iterates over: each metric's
  columns, summary rule, direction, display and settings (``@register_metric``); the built-in
  metrics are registered by :mod:`~medseg.metrics.builtin`, imported here so that any import of
  ``medseg.metrics`` sees them.
"""

from medseg.metrics import builtin as _builtin  # noqa: F401  (registers the built-in metrics)
from medseg.metrics.clinical import slice_dice, time_saved
from medseg.metrics.lesions import lesion_counts, lesion_counts_per_class
from medseg.metrics.overlap import (
    classification_report,
    classification_report_from_counts,
    confusion_counts,
    confusion_matrix,
    metrics_from_counts,
    overlap_metrics,
)
from medseg.metrics.registry import METRICS, CaseMasks, Column, Score, register_metric, register_score, unregister_metric
from medseg.metrics.surface import surface_metrics, surface_metrics_per_class, surface_points

__all__ = [
    "METRICS",
    "CaseMasks",
    "Column",
    "Score",
    "classification_report",
    "classification_report_from_counts",
    "confusion_counts",
    "confusion_matrix",
    "lesion_counts",
    "lesion_counts_per_class",
    "metrics_from_counts",
    "overlap_metrics",
    "register_metric",
    "register_score",
    "slice_dice",
    "surface_metrics",
    "surface_metrics_per_class",
    "surface_points",
    "time_saved",
    "unregister_metric",
]
