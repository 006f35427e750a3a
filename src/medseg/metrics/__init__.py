"""Segmentation metrics; conventions are written down in docs/metrics.md."""

from medseg.metrics.overlap import confusion_counts, overlap_metrics

__all__ = ["confusion_counts", "overlap_metrics"]
