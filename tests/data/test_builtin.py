from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from medseg.core.errors import ConfigError
from medseg.data.builtin import BUILTINS, make_builtin, materialize
from medseg.data.store import load_dataset


def test_phantom2d_is_deterministic_multi_patient_and_labelled() -> None:
    a = list(make_builtin("phantom2d", n_patients=3, slices_per_patient=2, size=32).cases)
    b = list(make_builtin("phantom2d", n_patients=3, slices_per_patient=2, size=32).cases)
    assert len(a) == 6 and len({c.patient_id for c in a}) == 3
    for x, y in zip(a, b, strict=True):
        np.testing.assert_array_equal(x.image, y.image)
        np.testing.assert_array_equal(x.label, y.label)
    assert set(np.unique(a[0].label)) == {0, 1, 2, 3}
    # the image carries the anatomy: blood pool brighter than myocardium on average
    img, lab = a[0].image[0], a[0].label
    assert img[lab == 1].mean() > 1.2 * img[lab == 2].mean()
    # patients differ in shape and spacing
    assert a[0].spacing != a[2].spacing
    assert not np.array_equal(a[0].label, a[2].label)


def test_phantom3d_shape_and_anisotropic_spacing() -> None:
    (c,) = list(make_builtin("phantom3d", n_patients=1, size=32, depth=10, slice_thickness=5.0).cases)
    assert c.image.shape == (1, 10, 32, 32) and c.label.shape == (10, 32, 32)
    assert c.spacing[0] == 5.0 and c.spacing[1] < 2
    assert (c.label > 0).any(axis=(1, 2)).sum() >= 6


def test_materialize_writes_a_dataset_with_a_patient_split(tmp_path: Path) -> None:
    root = materialize("phantom2d", {"n_patients": 10, "slices_per_patient": 2, "size": 32}, tmp_path)
    ds = load_dataset(root)
    assert len(ds) == 20 and ds.splits_path.is_file()
    assert materialize("phantom2d", {"n_patients": 10, "slices_per_patient": 2, "size": 32}, tmp_path) == root


def test_unknown_builtin_and_bad_option() -> None:
    with pytest.raises(ConfigError, match="did you mean phantom2d"):
        BUILTINS.get("phantom2")
    with pytest.raises(ConfigError, match="bad option for built-in data set 'phantom2d'"):
        make_builtin("phantom2d", n_patient=3)


def test_mni152_tissue_is_the_real_template() -> None:
    pytest.importorskip("nilearn")
    (c,) = list(make_builtin("mni152-tissue").cases)
    assert c.image.shape == (1, 99, 117, 95)
    assert c.spacing == (2.0, 2.0, 2.0)
    counts = np.bincount(c.label.ravel(), minlength=3)
    assert counts[1] > 10_000 and counts[2] > 10_000
    # white matter is brighter than grey matter in a T1 image
    assert c.image[0][c.label == 2].mean() > c.image[0][c.label == 1].mean()
    slices = list(make_builtin("mni152-tissue-2d", slab=10).cases)
    assert len(slices) > 40 and slices[0].ndim == 2
    assert len({s.patient_id for s in slices}) < len(slices)
