"""Importers on miniature copies of the real public releases (``tests/releases.py``): pairings against the builders' ground truth."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pydicom
import pytest
from PIL import Image, ImageDraw
from typer.testing import CliRunner

import releases as R
from medseg.cli import app
from medseg.core.errors import FormatError
from medseg.data.formats import import_dataset


def polygon(points: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    canvas = Image.new("L", (shape[1], shape[0]), 0)
    ImageDraw.Draw(canvas).polygon([(float(x), float(y)) for x, y in points], fill=1, outline=1)
    return np.array(canvas, dtype=bool)


def refused(args: list[str], out: Path, *words: str) -> str:
    """The CLI refuses in one line naming ``words`` and leaves nothing behind."""
    res = CliRunner().invoke(app, ["import", *args, "--out", str(out), "--no-progress"])
    lines = [ln for ln in res.output.splitlines() if ln.strip()]
    assert res.exit_code == 2 and len(lines) == 1 and lines[0].startswith("error:"), res.output
    for w in words:
        assert w in lines[0], lines[0]
    assert not out.exists() and not [p for p in out.parent.iterdir() if p.name.startswith(f".{out.name}")]
    return lines[0]


# ---------------------------------------------------------------- Sunnybrook


@pytest.fixture(scope="module")
def sunnybrook(tmp_path_factory: pytest.TempPathFactory) -> R.SunnybrookRelease:
    return R.sunnybrook(tmp_path_factory.mktemp("sb"), n_phases=4, validation_cases=("SC-HF-I-5",), online_cases=("SC-HF-I-10",))


@pytest.mark.parametrize("task", ["lv", "lv_myo"])
def test_sunnybrook_challenge_pairs_each_contour_with_its_short_axis_image(sunnybrook: R.SunnybrookRelease, tmp_path: Path, task: str) -> None:
    ds = import_dataset("sunnybrook", sunnybrook.root, tmp_path / "out", task=task)
    assert ds.info.class_names == (["background", "lv_blood_pool"] if task == "lv" else ["background", "lv_blood_pool", "myocardium"])
    endo = sunnybrook.of_kind("icontour")
    epi = {(c.case, c.instance): c for c in sunnybrook.of_kind("ocontour")}
    assert len(ds) == len(endo) == 4 * 3 * 2
    for c in endo:
        cid = f"{c.case}_{c.image.stem}"
        case = ds.load_case(cid)
        assert ds.patients[cid] == c.case
        truth = pydicom.dcmread(c.image).pixel_array.astype(np.float32)
        np.testing.assert_array_equal(case.image[0], truth)
        for decoy in c.decoys:  # the IM-0001-NNNN.dcm of the file name is another view
            assert not np.array_equal(case.image[0], pydicom.dcmread(decoy).pixel_array.astype(np.float32))
        pool = polygon(np.loadtxt(c.path), truth.shape)
        np.testing.assert_array_equal(case.label == 1, pool)
        if task == "lv":
            assert set(np.unique(case.label)) == {0, 1}
        elif (c.case, c.instance) in epi:
            ring = polygon(np.loadtxt(epi[(c.case, c.instance)].path), truth.shape) & ~pool
            np.testing.assert_array_equal(case.label == 2, ring)


def test_sunnybrook_renamed_into_images_and_contours_uses_the_series_table(sunnybrook: R.SunnybrookRelease, tmp_path: Path) -> None:
    case = sunnybrook.cases["SC-N-2"]
    shutil.copytree(case.folder, tmp_path / "in" / "images" / case.name)
    shutil.copytree(case.contour_folder, tmp_path / "in" / "contours" / case.contour_name)
    ds = import_dataset("sunnybrook", tmp_path / "in", tmp_path / "out", task="lv")
    endo = [c for c in sunnybrook.of_kind("icontour") if c.case == "SC-N-2"]
    assert sorted(ds.case_ids) == sorted(f"{case.contour_name}_{c.image.stem}" for c in endo)
    assert all(c.image.name.startswith("IM-0898-") for c in endo)


def test_sunnybrook_unknown_case_is_refused_not_paired_by_name(sunnybrook: R.SunnybrookRelease, tmp_path: Path) -> None:
    case = sunnybrook.cases["SC-N-2"]
    shutil.copytree(case.folder, tmp_path / "in" / "images" / "SC-X-1")
    shutil.copytree(case.contour_folder, tmp_path / "in" / "contours" / "SC-X-1")
    refused(["sunnybrook", str(tmp_path / "in")], tmp_path / "out", "the contour file name cannot tell which", "sax=SC-X-1=NNNN")
    ds = import_dataset("sunnybrook", tmp_path / "in", tmp_path / "out2", task="lv", sax="SC-X-1=898")
    assert all("IM-0898-" in cid for cid in ds.case_ids) and len(ds) == 6


def test_sunnybrook_challenge_missing_short_axis_image_is_refused(sunnybrook: R.SunnybrookRelease, tmp_path: Path) -> None:
    root = tmp_path / "release"
    shutil.copytree(sunnybrook.root, root)
    c = sunnybrook.of_kind("icontour")[0]
    (root / c.image.relative_to(sunnybrook.root)).unlink()
    refused(["sunnybrook", str(root)], tmp_path / "out", c.path.name, f"no short-axis image {c.image.name}")


def test_sunnybrook_unknown_task_is_refused(sunnybrook: R.SunnybrookRelease, tmp_path: Path) -> None:
    with pytest.raises(FormatError, match="unknown task 'rv'"):
        import_dataset("sunnybrook", sunnybrook.root, tmp_path / "out", task="rv")


# ---------------------------------------------------------------- neuro NumPy stacks


def test_neuro_numpy_task2_names_keep_the_given_splits(tmp_path: Path) -> None:
    rel = R.neuro_numpy(tmp_path / "npy", n_train=4, n_val=2, n_test=3, size=16)
    ds = import_dataset("numpy", rel.root, tmp_path / "out", classes=",".join(rel.classes))
    assert ds.info.class_names == list(rel.classes)
    splits = json_splits(ds)
    for split in ("train", "val", "test"):
        assert splits[split] == [f"{split}_{i:05d}" for i in range(len(rel.images[split]))]
        for i in range(len(rel.images[split])):
            case = ds.load_case(f"{split}_{i:05d}")
            np.testing.assert_array_equal(case.image[0], rel.images[split][i].astype(np.float32))
            np.testing.assert_array_equal(case.label, rel.labels[split][i])


def json_splits(ds: object) -> dict[str, list[str]]:
    import json

    return json.loads(ds.splits_path.read_text())  # type: ignore[attr-defined]


# ---------------------------------------------------------------- Pancreas CT-82


def _world_truth(patient: R.PancreasPatient, case_image: np.ndarray) -> np.ndarray:
    """The builder's mask in the importer's (slice, row, column) order, slices matched by pixel values."""
    hu = np.moveaxis(patient.hu, -1, 0).astype(np.float32)  # (instance, row, column)
    order = [int(np.argmin([np.abs(hu[k] - case_image[z]).sum() for k in range(len(hu))])) for z in range(len(case_image))]
    assert sorted(order) == list(range(len(hu)))
    return np.moveaxis(patient.mask, -1, 0)[order]


def test_pancreas_labels_matched_to_series_in_world_coordinates(tmp_path: Path) -> None:
    rel = R.pancreas_ct82(tmp_path / "tcia", patients=(1, 2, 3), label_layout="mixed", orphan_labels=(25,), manifest="manifest-1599750808610")
    assert {p.label_layout for p in rel.patients.values()} == {"xyz", "ras"}
    with pytest.warns(UserWarning, match="label0025.nii.gz"):
        ds = import_dataset("dicom", rel.images_dir, tmp_path / "out", labels=str(rel.labels_dir), classes="background,pancreas")
    assert len(ds) == 3
    by_patient = {ds.patients[c]: c for c in ds.case_ids}
    for number, patient in rel.patients.items():
        case = ds.load_case(by_patient[f"PANCREAS_{number:04d}"])
        truth = _world_truth(patient, case.image[0])
        assert truth.sum() > 20
        np.testing.assert_array_equal(case.label.astype(bool), truth)


def test_pancreas_misfit_label_is_refused(tmp_path: Path) -> None:
    rel = R.pancreas_ct82(tmp_path / "tcia", patients=(1, 2), shape=(16, 14, 6), misfit_patient=2)
    refused(["dicom", str(rel.images_dir), "--labels", str(rel.labels_dir)], tmp_path / "out", "label0002.nii.gz", "world extent")


def test_pancreas_unlabelled_series_is_refused_not_imported_silently(tmp_path: Path) -> None:
    rel = R.pancreas_ct82(tmp_path / "tcia", patients=(1, 2), shape=(16, 14, 6), unlabelled_patient=2)
    refused(["dicom", str(rel.images_dir), "--labels", str(rel.labels_dir)], tmp_path / "out", "have no mask", "PANCREAS_0002", "unlabelled=keep")
    ds = import_dataset("dicom", rel.images_dir, tmp_path / "kept", labels=str(rel.labels_dir), unlabelled="keep")
    labelled = {ds.patients[c]: ds.load_case(c).label is not None for c in ds.case_ids}
    assert labelled == {"PANCREAS_0001": True, "PANCREAS_0002": False}
    ds = import_dataset("dicom", rel.images_dir, tmp_path / "skipped", labels=str(rel.labels_dir), unlabelled="skip")
    assert list(ds.patients.values()) == ["PANCREAS_0001"]


# ---------------------------------------------------------------- GI tract: both spellings


@pytest.mark.parametrize("fmt", ["kaggle_gi", "kaggle-gi"])
def test_gi_tract_under_either_name(tmp_path: Path, fmt: str) -> None:
    rel = R.gi_tract(tmp_path / "gi", n_slices=3)
    res = CliRunner().invoke(app, ["import", fmt, str(rel.root), "--out", str(tmp_path / "out"), "--no-progress"])
    assert res.exit_code == 0, res.output
    from medseg.data.store import load_dataset

    ds = load_dataset(tmp_path / "out")
    assert sorted(ds.case_ids) == sorted({f"case{s.case}_day{s.day}" for s in rel.slices.values()})
    for s in rel.slices.values():
        case = ds.load_case(f"case{s.case}_day{s.day}")
        assert ds.patients[case.case_id] == f"case{s.case}"
        for c, organ in enumerate(rel.classes):
            np.testing.assert_array_equal(case.label[c, s.slice - 1], s.masks[organ])


def test_image_folder_is_the_images_format(tmp_path: Path) -> None:
    rel = R.nuclei_tiles(tmp_path / "tiles", n_train=2, n_test=1, size=24, layout="folder")
    ds = import_dataset("image_folder", rel.root, tmp_path / "out")
    assert sorted(ds.case_ids) == sorted(rel.masks)
    for stem, mask in rel.masks.items():
        np.testing.assert_array_equal(ds.load_case(stem).label.astype(bool), mask)


# ---------------------------------------------------------------- HipMRI prostate: weekly scans of one patient


def test_hipmri_weeks_grouped_by_patient_by_the_nifti_importer(tmp_path: Path) -> None:
    rel = R.hipmri_prostate(tmp_path / "hip", scans={4: (0, 1, 2), 11: (0, 5), 27: (3,)}, shape=(12, 10, 6), odd_scan=(11, 5))
    ds = import_dataset("nifti", rel.root, tmp_path / "out", images_dir="semantic_MRs_anon", labels_dir="semantic_labels_anon", classes=",".join(rel.classes))
    assert len(ds) == len(rel.scans) == 6
    for scan in rel.scans:
        cid = f"Case_{scan.patient:03d}_Week{scan.week}_LFOV"
        assert ds.patients[cid] == f"Case_{scan.patient:03d}"
        np.testing.assert_array_equal(ds.load_case(cid).label, scan.label_array)
    splits = json_splits(ds)
    for patient in ("Case_004", "Case_011", "Case_027"):
        where = {s for s in ("train", "val", "test") for c in splits[s] if ds.patients[c] == patient}
        assert len(where) == 1, (patient, where)


def test_hipmri_label_without_image_is_refused(tmp_path: Path) -> None:
    rel = R.hipmri_prostate(tmp_path / "hip", scans={4: (0, 1)}, shape=(8, 8, 4))
    rel.scans[1].image.unlink()
    refused(
        ["nifti", str(rel.root), "--option", "images_dir=semantic_MRs_anon", "--option", "labels_dir=semantic_labels_anon"],
        tmp_path / "out",
        "Case_004_Week1_SEMANTIC_LFOV",
        "matches no image",
    )
