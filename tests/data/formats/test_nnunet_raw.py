"""nnU-Net raw folders as they are: every file_ending, channel_names → normalisation, regions/ignore kept, detection."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
from PIL import Image

from medseg.core.errors import FormatError
from medseg.data.formats import import_dataset
from medseg.data.formats.detect import detect_format
from medseg.data.store import load_dataset
from releases import ENDINGS_2D, ENDINGS_3D, nnunet_raw, nuclei_tiles


def _independent(path: Path) -> np.ndarray:
    """The label file as SimpleITK / Pillow read it (not through medseg.io)."""
    if path.suffix.lower() in (".png", ".bmp", ".tif"):
        return np.asarray(Image.open(path))
    return sitk.GetArrayFromImage(sitk.ReadImage(str(path)))


@pytest.mark.parametrize("ending", [*ENDINGS_2D, *ENDINGS_3D, ".nii"])
def test_every_nnunet_ending_imports(tmp_path: Path, ending: str) -> None:
    if ending == ".nii":
        rel = nnunet_raw(tmp_path / "raw", ".nii.gz")
        for p in sorted(rel.root.rglob("*.nii.gz")):  # the same volumes, uncompressed
            sitk.WriteImage(sitk.ReadImage(str(p)), str(p).removesuffix(".gz"))
            p.unlink()
        meta = json.loads(rel.dataset_json.read_text())
        rel.dataset_json.write_text(json.dumps({**meta, "file_ending": ".nii"}))
        labels = {c.name: Path(str(c.label).removesuffix(".gz")) for c in rel.training}
    else:
        rel = nnunet_raw(tmp_path / "raw", ending)  # type: ignore[arg-type]
        labels = {c.name: c.label for c in rel.training}
    assert detect_format(rel.root) == "msd"
    ds = import_dataset("msd", rel.root, tmp_path / "ds")
    assert ds.info.dims == (2 if ending in ENDINGS_2D else 3)
    assert sorted(ds.labelled_patients) == sorted(labels)
    assert ds.info.class_names == ["background", "organ", "lesion"]
    for cid, path in labels.items():
        ours = ds.load_case(cid).label
        ref = _independent(path)
        # voxel count per label value (axis order differs between readers; counts do not)
        assert np.array_equal(np.bincount(ours.ravel(), minlength=3), np.bincount(ref.ravel().astype(int), minlength=3))
        if ending in ENDINGS_2D:
            assert np.array_equal(ours, ref)
    assert len(ds.case_ids) == len(rel.training) + len(rel.test)  # imagesTs kept for prediction


def test_channel_names_ct_gives_global_normalisation(tmp_path: Path) -> None:
    from medseg.data.inspect import fingerprint
    from medseg.data.plan import make_plan

    rel = nnunet_raw(tmp_path / "raw", ".nrrd", channels=("CT", "T2"))
    ds = import_dataset("msd", rel.root, tmp_path / "ds")
    plan = make_plan(fingerprint(ds, progress=False), dims=3)
    assert plan["normalization"] == ["ct", "zscore"]


def test_png_raw_folder_with_regions_and_ignore_imports_one_channel_per_region(tmp_path: Path) -> None:
    rel = nnunet_raw(tmp_path / "raw", ".png", regions=True, ignore=True)
    ds = import_dataset("msd", rel.root, tmp_path / "ds")
    assert ds.info.class_names == ["whole_tumor", "tumor_core", "enhancing_tumor", "ignore"]
    members = [[1, 2, 3], [2, 3], [3], [4]]  # each region is the union of its label values; 4 is the ignore label
    for c in rel.training:
        got = ds.load_case(c.name).label
        want = np.stack([np.isin(c.label_array, m) for m in members])
        assert np.array_equal(got.astype(bool), want)


def test_nuclei_png_raw_folder_imports(tmp_path: Path) -> None:
    rel = nuclei_tiles(tmp_path / "raw", n_train=3, n_test=1, size=32)
    ds = import_dataset("msd", rel.root, tmp_path / "ds")
    assert len(ds.labelled_patients) == 3


def test_unknown_ending_is_one_line_error(tmp_path: Path) -> None:
    rel = nnunet_raw(tmp_path / "raw", ".png")
    rel.dataset_json.write_text(json.dumps({**rel.dataset, "file_ending": ".jpg"}))
    with pytest.raises(FormatError, match=r"file_ending '\.jpg'") as e:
        import_dataset("msd", rel.root, tmp_path / "ds")
    assert "\n" not in e.value.one_line()
    assert not (tmp_path / "ds").exists()


def test_label_outside_classes_is_one_line_error(tmp_path: Path) -> None:
    rel = nnunet_raw(tmp_path / "raw", ".png", classes=("organ", "lesion"))
    rel.dataset_json.write_text(json.dumps({**rel.dataset, "labels": {"background": 0, "organ": 1}}))
    with pytest.raises(FormatError, match="label value 2 has no class") as e:
        import_dataset("msd", rel.root, tmp_path / "ds")
    assert "\n" not in e.value.one_line()
    assert not (tmp_path / "ds").exists()


def test_detect_formats(tmp_path: Path) -> None:
    folder = nuclei_tiles(tmp_path / "tiles", n_train=2, n_test=1, size=16, layout="folder").root
    assert detect_format(folder) == "images"
    ds = import_dataset("images", folder, tmp_path / "ds")
    assert detect_format(ds.root) == "dataset"
    assert load_dataset(ds.root).info.dims == 2
    (tmp_path / "empty").mkdir()
    with pytest.raises(FormatError, match="no data set layout recognised") as e:
        detect_format(tmp_path / "empty")
    assert "imagesTr" in e.value.one_line() and "DICOM" in e.value.one_line()
