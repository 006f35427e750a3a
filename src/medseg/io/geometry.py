"""The one geometry convention: an affine maps array indices to world millimetres (RAS+ for volumes); ITK's LPS and reversed axes converted here."""

from __future__ import annotations

import numpy as np

#: ITK (LPS) ↔ NIfTI/medseg (RAS) flip of the first two world axes.
LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0, 1.0])
