"""Largest-connected-component post-processing of label maps (decided per class by ``medseg postprocess``)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from scipy import ndimage


def keep_largest_component(mask: np.ndarray) -> np.ndarray:
    """The largest connected component (full connectivity) of a boolean mask."""
    lab, n = ndimage.label(mask, structure=np.ones((3,) * mask.ndim))
    if n <= 1:
        return mask
    sizes = np.bincount(lab.ravel())
    sizes[0] = 0
    return lab == int(sizes.argmax())


def apply_postprocessing(label: np.ndarray, classes: Sequence[int], multi_label: bool) -> np.ndarray:
    """Keep only the largest component of each listed class (removed voxels become background)."""
    out = label.copy()
    for k in classes:
        if multi_label:
            out[k] = keep_largest_component(out[k].astype(bool))
        else:
            m = out == k
            out[m & ~keep_largest_component(m)] = 0
    return out
