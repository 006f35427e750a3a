"""The canonical in-memory case: image, label and the geometry that places them in the world."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np


@dataclass
class Case:
    """One image (and its label) with its geometry.

    Args:
        image: float32 array ``(C, [D,] H, W)``; channel first, then the spatial axes.
        label: integer array ``([D,] H, W)`` of class indices, or for multi-label data a boolean
            array ``(K, [D,] H, W)`` with one channel per class; ``None`` for unlabelled cases.
        affine: ``(n+1, n+1)`` float64 matrix mapping a voxel index, in array axis order, to world
            coordinates in millimetres (RAS+ for volumes read from NIfTI, LPS-converted for DICOM
            and ITK files). ``spacing``, ``origin`` and ``direction`` are derived from it.
        case_id: unique within the data set.
        patient_id: the patient the case belongs to; splits never put one patient in two sets.
        meta: free metadata (source file, acquisition parameters...), JSON-serialisable.
    """

    image: np.ndarray
    label: np.ndarray | None
    affine: np.ndarray
    case_id: str
    patient_id: str = ""
    meta: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.image = np.asarray(self.image, dtype=np.float32)
        self.affine = np.asarray(self.affine, dtype=np.float64)
        if not self.patient_id:
            self.patient_id = self.case_id
        if self.label is not None:
            self.label = np.asarray(self.label)
            if self.label.dtype != bool:
                self.label = self.label.astype(np.int16 if self.label.max(initial=0) < 32767 else np.int32)

    @classmethod
    def from_spacing(
        cls,
        image: np.ndarray,
        label: np.ndarray | None,
        spacing: tuple[float, ...],
        case_id: str,
        *,
        patient_id: str = "",
        origin: tuple[float, ...] | None = None,
        direction: np.ndarray | None = None,
        meta: dict[str, Any] | None = None,
    ) -> Case:
        """Build a case from spacing, origin and direction instead of an affine."""
        return cls(
            image=image,
            label=label,
            affine=make_affine(spacing, origin, direction),
            case_id=case_id,
            patient_id=patient_id,
            meta=meta or {},
        )

    @property
    def ndim(self) -> int:
        """Number of spatial dimensions (2 or 3)."""
        return self.image.ndim - 1

    @property
    def spatial_shape(self) -> tuple[int, ...]:
        return tuple(self.image.shape[1:])

    @property
    def n_channels(self) -> int:
        return int(self.image.shape[0])

    @property
    def multi_label(self) -> bool:
        return self.label is not None and self.label.dtype == bool and self.label.ndim == self.image.ndim

    @property
    def spacing(self) -> tuple[float, ...]:
        return spacing_of(self.affine)

    @property
    def origin(self) -> tuple[float, ...]:
        n = self.affine.shape[0] - 1
        return tuple(float(v) for v in self.affine[:n, n])

    @property
    def direction(self) -> np.ndarray:
        n = self.affine.shape[0] - 1
        return self.affine[:n, :n] / np.asarray(self.spacing)[None, :]


def make_affine(spacing: tuple[float, ...], origin: tuple[float, ...] | None = None, direction: np.ndarray | None = None) -> np.ndarray:
    """Compose an affine from spacing, origin and a direction matrix (columns = axis directions)."""
    n = len(spacing)
    direction = np.eye(n) if direction is None else np.asarray(direction, dtype=np.float64)
    origin = np.zeros(n) if origin is None else np.asarray(origin, dtype=np.float64)
    aff = np.eye(n + 1)
    aff[:n, :n] = direction * np.asarray(spacing, dtype=np.float64)[None, :]
    aff[:n, n] = origin
    return aff


def spacing_of(affine: np.ndarray) -> tuple[float, ...]:
    """Voxel size along each array axis: the length of each affine column."""
    n = affine.shape[0] - 1
    return tuple(float(v) for v in np.linalg.norm(affine[:n, :n], axis=0))
