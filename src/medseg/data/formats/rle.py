"""The Kaggle run-length codec lives in :mod:`medseg.io.rle`; importers and tests reach it here too."""

from __future__ import annotations

from medseg.io.rle import Order, rle_decode, rle_encode, write_rle_csv

__all__ = ["Order", "rle_decode", "rle_encode", "write_rle_csv"]
