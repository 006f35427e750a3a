"""Data: the canonical case and data set folder, splits, built-in data sets and importers."""

from medseg.core.case import Case
from medseg.data.store import ClassInfo, Dataset, DatasetInfo, load_dataset, write_dataset

__all__ = ["Case", "ClassInfo", "Dataset", "DatasetInfo", "load_dataset", "write_dataset"]
