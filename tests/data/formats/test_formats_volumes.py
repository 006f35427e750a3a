"""NIfTI / NRRD / MHA folders, MSD / nnU-Net raw layout and CSV path lists."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import SimpleITK as sitk

from helpers import SHAPE, make_pair, oblique, save
from medseg.data.formats import FormatError, import_dataset


def test_folder_pair_round_trip_keeps_the_oblique_affine(tmp_path: Path, rng: np.random.Generator) -> None:
    truth = make_pair(tmp_path / "in", rng, channels=2)
    ds = import_dataset("nifti", tmp_path / "in", tmp_path / "out", classes="background,liver,tumour", modalities="T1,T2")
    assert ds.info.class_names == ["background", "liver", "tumour"] and ds.info.modalities == ["T1", "T2"]
    for cid, (img, lab) in truth.items():
        case = ds.load_case(cid)
        np.testing.assert_array_equal(case.image, img)
        np.testing.assert_array_equal(case.label, lab)
        np.testing.assert_allclose(case.affine, oblique(), atol=1e-5)  # nibabel's affine as is (float32 in the header)
    # a mask written back with the case's affine sits on the source grid
    case = ds.load_case("case_01")
    nib.save(nib.Nifti1Image(case.label, case.affine), str(tmp_path / "back.nii.gz"))
    src = sitk.ReadImage(str(tmp_path / "in" / "images" / "case_01_0000.nii.gz"))
    back = sitk.ReadImage(str(tmp_path / "back.nii.gz"))
    assert back.GetSize() == src.GetSize()
    for a, b in ((back.GetSpacing(), src.GetSpacing()), (back.GetOrigin(), src.GetOrigin()), (back.GetDirection(), src.GetDirection())):
        np.testing.assert_allclose(a, b, atol=1e-5)


def test_default_classes_from_label_values(tmp_path: Path, rng: np.random.Generator) -> None:
    make_pair(tmp_path / "in", rng)
    ds = import_dataset("nifti", tmp_path / "in", tmp_path / "out")
    assert ds.info.class_names == ["background", "class_1", "class_2"]


def test_mha_and_nrrd_are_converted_to_ras(tmp_path: Path, rng: np.random.Generator) -> None:
    arr = rng.normal(size=(4, 5, 6)).astype(np.float32)  # (z, y, x)
    img = sitk.GetImageFromArray(arr)
    img.SetSpacing((0.5, 0.75, 2.0))
    img.SetOrigin((10.0, -20.0, 5.0))
    lab = sitk.GetImageFromArray((arr > 0).astype(np.uint8))
    lab.CopyInformation(img)
    (tmp_path / "in" / "images").mkdir(parents=True)
    (tmp_path / "in" / "labels").mkdir()
    sitk.WriteImage(img, str(tmp_path / "in" / "images" / "a.mha"))
    sitk.WriteImage(lab, str(tmp_path / "in" / "labels" / "a.nrrd"))
    case = import_dataset("nifti", tmp_path / "in", tmp_path / "out").load_case("a")
    np.testing.assert_array_equal(case.image[0], arr)
    assert case.spacing == pytest.approx((2.0, 0.75, 0.5))
    np.testing.assert_allclose(case.origin, (-10.0, 20.0, 5.0))  # LPS → RAS
    # voxel (z, y, x) = (1, 2, 3) lands where ITK puts index (3, 2, 1), with x and y negated
    world = case.affine @ np.array([1, 2, 3, 1.0])
    np.testing.assert_allclose(world[:3], np.array(img.TransformIndexToPhysicalPoint((3, 2, 1))) * [-1, -1, 1])


def test_truncated_file(tmp_path: Path, rng: np.random.Generator) -> None:
    make_pair(tmp_path / "in", rng)
    p = tmp_path / "in" / "images" / "case_01.nii.gz"
    p.write_bytes(p.read_bytes()[:200])
    with pytest.raises(FormatError, match="cannot read volume") as e:
        import_dataset("nifti", tmp_path / "in", tmp_path / "out", classes="b,x,y")
    assert "case_01.nii.gz" in str(e.value) and "\n" not in str(e.value)
    assert not (tmp_path / "out").exists()


def test_corrupt_file(tmp_path: Path, rng: np.random.Generator) -> None:
    make_pair(tmp_path / "in", rng)
    (tmp_path / "in" / "labels" / "case_02.nii.gz").write_bytes(gzip.compress(b"garbage" * 50))
    with pytest.raises(FormatError, match="cannot read volume") as e:
        import_dataset("nifti", tmp_path / "in", tmp_path / "out", classes="b,x,y")
    assert "case_02.nii.gz" in str(e.value)
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("what", ["shape", "affine"])
def test_label_off_the_image_grid(tmp_path: Path, rng: np.random.Generator, what: str) -> None:
    make_pair(tmp_path / "in", rng)
    aff = oblique()
    if what == "affine":
        aff = aff.copy()
        aff[0, 3] += 2.0
        lab = np.zeros(SHAPE, np.uint8)
    else:
        lab = np.zeros((6, 7, 4), np.uint8)
    save(tmp_path / "in" / "labels" / "case_01.nii.gz", lab, aff)
    with pytest.raises(FormatError, match=f"label {what}") as e:
        import_dataset("nifti", tmp_path / "in", tmp_path / "out", classes="b,x,y")
    assert "case_01.nii.gz" in str(e.value)
    assert not (tmp_path / "out").exists()


def test_non_integer_labels(tmp_path: Path, rng: np.random.Generator) -> None:
    make_pair(tmp_path / "in", rng)
    save(tmp_path / "in" / "labels" / "case_00.nii.gz", rng.random(SHAPE).astype(np.float32), oblique())
    with pytest.raises(FormatError, match="non-integer") as e:
        import_dataset("nifti", tmp_path / "in", tmp_path / "out")
    assert "case_00.nii.gz" in str(e.value)


# ---------------------------------------------------------------- MSD / nnU-Net


def make_msd(root: Path, rng: np.random.Generator, v2: bool = False, channels: int = 2, n: int = 3) -> None:
    aff = oblique(3)
    meta: dict = {"name": "Prostate", "numTraining": n}
    if v2:
        meta |= {"channel_names": {str(c): f"ch{c}" for c in range(channels)}, "labels": {"background": 0, "PZ": 1, "TZ": 2}, "file_ending": ".nii.gz"}
    else:
        meta |= {"modality": {str(c): f"ch{c}" for c in range(channels)}, "labels": {"0": "background", "1": "PZ", "2": "TZ"}, "training": []}
    for i in range(n):
        cid = f"prostate_{i:02d}"
        for c in range(channels):
            save(root / "imagesTr" / f"{cid}_{c:04d}.nii.gz", rng.normal(size=SHAPE).astype(np.float32), aff)
        save(root / "labelsTr" / f"{cid}.nii.gz", rng.integers(0, 3, size=SHAPE).astype(np.uint8), aff)
        if not v2:
            meta["training"].append({"image": f"./imagesTr/{cid}.nii.gz", "label": f"./labelsTr/{cid}.nii.gz"})
    (root / "imagesTs").mkdir()
    (root / "dataset.json").write_text(json.dumps(meta))


@pytest.mark.parametrize("v2", [False, True])
def test_msd_layouts(tmp_path: Path, rng: np.random.Generator, v2: bool) -> None:
    make_msd(tmp_path / "Task05", rng, v2=v2)
    ds = import_dataset("msd", tmp_path / "Task05", tmp_path / "out")
    assert ds.info.name == "Prostate" and ds.info.class_names == ["background", "PZ", "TZ"]
    assert ds.info.modalities == ["ch0", "ch1"] and len(ds) == 3
    case = ds.load_case("prostate_01")
    assert case.image.shape == (2, *SHAPE)
    src = nib.load(str(tmp_path / "Task05" / "imagesTr" / "prostate_01_0001.nii.gz"))
    np.testing.assert_array_equal(case.image[1], src.get_fdata(dtype=np.float32))


def test_msd_4d_file(tmp_path: Path, rng: np.random.Generator) -> None:
    root = tmp_path / "Task01"
    data = rng.normal(size=(*SHAPE, 3)).astype(np.float32)
    save(root / "imagesTr" / "brats_001.nii.gz", data, oblique())
    save(root / "labelsTr" / "brats_001.nii.gz", np.ones(SHAPE, np.uint8), oblique())
    meta = {
        "modality": {"0": "FLAIR", "1": "T1w", "2": "T2w"},
        "labels": {"0": "background", "1": "tumour"},
        "training": [{"image": "./imagesTr/brats_001.nii.gz", "label": "./labelsTr/brats_001.nii.gz"}],
    }
    (root / "dataset.json").write_text(json.dumps(meta))
    case = import_dataset("msd", root, tmp_path / "out").load_case("brats_001")
    np.testing.assert_array_equal(case.image, np.moveaxis(data, -1, 0))


def test_msd_missing_keys(tmp_path: Path, rng: np.random.Generator) -> None:
    make_msd(tmp_path / "T", rng)
    meta = json.loads((tmp_path / "T" / "dataset.json").read_text())
    del meta["modality"], meta["labels"]
    (tmp_path / "T" / "dataset.json").write_text(json.dumps(meta))
    with pytest.raises(FormatError, match=r"lacks key.*labels.*modality") as e:
        import_dataset("msd", tmp_path / "T", tmp_path / "out")
    assert "dataset.json" in str(e.value)
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("v2", [False, True])
def test_msd_missing_channel_file(tmp_path: Path, rng: np.random.Generator, v2: bool) -> None:
    make_msd(tmp_path / "T", rng, v2=v2)
    (tmp_path / "T" / "imagesTr" / "prostate_01_0001.nii.gz").unlink()
    with pytest.raises(FormatError, match="channel file missing") as e:
        import_dataset("msd", tmp_path / "T", tmp_path / "out")
    assert "prostate_01_0001.nii.gz" in str(e.value)
    assert not (tmp_path / "out").exists()


# ---------------------------------------------------------------- CSV


def test_csv_of_paths(tmp_path: Path, rng: np.random.Generator) -> None:
    truth = make_pair(tmp_path / "in", rng, channels=2)
    rows = ["image,label,patient,case"]
    for i, cid in enumerate(truth):
        rows.append(f"images/{cid}_0000.nii.gz;images/{cid}_0001.nii.gz,labels/{cid}.nii.gz,P{i // 2},{cid}")
    (tmp_path / "in" / "list.csv").write_text("\n".join(rows) + "\n")
    ds = import_dataset("csv", tmp_path / "in" / "list.csv", tmp_path / "out", classes="bg,a,b")
    assert ds.patients == {"case_00": "P0", "case_01": "P0", "case_02": "P1"}
    np.testing.assert_array_equal(ds.load_case("case_02").image, truth["case_02"][0])
    (tmp_path / "in" / "bad.csv").write_text("image,label\nimages/nope.nii.gz,\n")
    with pytest.raises(FormatError, match="image file not found") as e:
        import_dataset("csv", tmp_path / "in" / "bad.csv", tmp_path / "o2")
    assert "bad.csv:2" in str(e.value)


def test_msd_images_ts_are_imported_unlabelled_and_kept_out_of_splits(tmp_path: Path, rng: np.random.Generator) -> None:
    from medseg.data.splits import load_splits

    make_msd(tmp_path / "T", rng, v2=True, n=4)
    for c in range(2):
        save(tmp_path / "T" / "imagesTs" / f"prostate_90_{c:04d}.nii.gz", rng.normal(size=SHAPE).astype(np.float32), oblique(3))
    ds = import_dataset("msd", tmp_path / "T", tmp_path / "out")
    assert len(ds) == 5
    assert ds.load_case("prostate_90").label is None
    assert "prostate_90" not in ds.labelled_patients
    splits = load_splits(ds.splits_path, ds.patients)
    assert "prostate_90" not in {c for s in ("train", "val", "test") for c in splits[s]}
    assert len({c for s in ("train", "val", "test") for c in splits[s]}) == 4


def test_images_without_labels_import_without_a_split(tmp_path: Path, rng: np.random.Generator) -> None:
    from medseg.config import config_from_dict
    from medseg.core.errors import SplitError
    from medseg.data.source import resolve_splits

    make_msd(tmp_path / "T", rng, v2=True, n=2)
    for p in (tmp_path / "T" / "labelsTr").iterdir():
        p.unlink()
    ds = import_dataset("msd", tmp_path / "T", tmp_path / "out")
    assert len(ds) == 2 and not ds.labelled_patients and not ds.splits_path.exists()
    with pytest.raises(SplitError, match="no labelled cases to split"):
        resolve_splits(config_from_dict({"data": {"dataset": str(ds.root)}}), ds)
