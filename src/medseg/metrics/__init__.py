"""Segmentation metrics; conventions are written down in docs/metrics.md.

* :mod:`~medseg.metrics.overlap` — Dice, IoU, precision, recall, specificity, F1, volumes from
  confusion counts; confusion matrix and pixel-level classification report;
* :mod:`~medseg.metrics.surface` — HD, HD95, ASSD, NSD in mm (MedPy / MONAI / DeepMind conventions);
* :mod:`~medseg.metrics.clinical` — reader time saved per slice;
* :mod:`~medseg.metrics.lesions` — lesion-wise TP / FP / FN from connected components.
"""

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
from medseg.metrics.surface import surface_metrics, surface_metrics_per_class, surface_points

__all__ = [
    "classification_report",
    "classification_report_from_counts",
    "confusion_counts",
    "confusion_matrix",
    "lesion_counts",
    "lesion_counts_per_class",
    "metrics_from_counts",
    "overlap_metrics",
    "slice_dice",
    "surface_metrics",
    "surface_metrics_per_class",
    "surface_points",
    "time_saved",
]
