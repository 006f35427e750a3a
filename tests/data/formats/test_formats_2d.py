"""2D formats: NumPy stacks, image/mask folders, Sunnybrook contours."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pydicom
import pytest
from PIL import Image
from pydicom.data import get_testdata_file

from helpers import make_sunnybrook
from medseg.data.formats import FormatError, import_dataset
from medseg.data.formats.sunnybrook import read_contour

# ---------------------------------------------------------------- NumPy


def make_npy(root: Path, rng: np.random.Generator, channels: int = 0, counts: dict[str, int] | None = None) -> dict:
    root.mkdir(parents=True, exist_ok=True)
    truth = {}
    for split, n in (counts or {"train": 4, "val": 2, "test": 3}).items():
        shape = (n, channels, 8, 9) if channels else (n, 8, 9)
        img = rng.normal(size=shape).astype(np.float32)
        lab = rng.integers(0, 4, size=(n, 8, 9)).astype(np.uint8)
        np.save(root / f"{split}_images.npy", img)
        np.save(root / f"{split}_labels.npy", lab)
        truth[split] = (img, lab)
    return truth


@pytest.mark.parametrize("channels", [0, 3])
def test_numpy_keeps_given_splits(tmp_path: Path, rng: np.random.Generator, channels: int) -> None:
    truth = make_npy(tmp_path / "in", rng, channels)
    ds = import_dataset("numpy", tmp_path / "in", tmp_path / "out", classes="background,csf,grey,white")
    assert ds.info.class_names == ["background", "csf", "grey", "white"] and ds.info.dims == 2
    assert ds.info.n_channels == max(channels, 1)
    splits = json.loads((tmp_path / "out" / "splits.json").read_text())
    assert splits["train"] == [f"train_{i:05d}" for i in range(4)] and splits["val"] == ["val_00000", "val_00001"] and len(splits["test"]) == 3
    case = ds.load_case("test_00002")
    img, lab = truth["test"]
    np.testing.assert_array_equal(case.image, img[2] if channels else img[2][None])
    np.testing.assert_array_equal(case.label, lab[2])


def test_numpy_count_mismatch(tmp_path: Path, rng: np.random.Generator) -> None:
    make_npy(tmp_path / "in", rng)
    np.save(tmp_path / "in" / "val_labels.npy", np.zeros((3, 8, 9), np.uint8))
    with pytest.raises(FormatError, match="2 images but 3 labels") as e:
        import_dataset("numpy", tmp_path / "in", tmp_path / "out")
    assert "val_labels.npy" in str(e.value) and not (tmp_path / "out").exists()


@pytest.mark.parametrize(
    ("file", "shape", "problem"), [("train_images.npy", (4, 8), "expected N×H×W or N×C×H×W"), ("train_labels.npy", (4, 2, 8, 9), "expected N×H×W")]
)
def test_numpy_wrong_dimensionality(tmp_path: Path, rng: np.random.Generator, file: str, shape: tuple, problem: str) -> None:
    make_npy(tmp_path / "in", rng)
    np.save(tmp_path / "in" / file, np.zeros(shape, np.float32 if "images" in file else np.uint8))
    with pytest.raises(FormatError, match=problem) as e:
        import_dataset("numpy", tmp_path / "in", tmp_path / "out")
    assert file in str(e.value) and not (tmp_path / "out").exists()


# ---------------------------------------------------------------- image folders


@pytest.mark.parametrize("rgb", [False, True])
def test_image_folder_round_trip(tmp_path: Path, rng: np.random.Generator, rgb: bool) -> None:
    (tmp_path / "in" / "images").mkdir(parents=True)
    (tmp_path / "in" / "masks").mkdir()
    truth = {}
    for i, suffix in enumerate((".png", ".tif", ".jpg")):
        img = rng.integers(0, 255, size=(10, 11, 3) if rgb else (10, 11)).astype(np.uint8)
        mask = rng.integers(0, 3, size=(10, 11)).astype(np.uint8)
        Image.fromarray(img).save(tmp_path / "in" / "images" / f"im{i}{suffix}")
        Image.fromarray(mask).save(tmp_path / "in" / "masks" / f"im{i}_mask.png")
        truth[f"im{i}"] = (img, mask)
    ds = import_dataset("images", tmp_path / "in", tmp_path / "out", mask_suffix="_mask", classes="bg,a,b")
    assert ds.info.modalities == (["red", "green", "blue"] if rgb else ["image"])
    for cid, (img, mask) in truth.items():
        case = ds.load_case(cid)
        np.testing.assert_array_equal(case.label, mask)
        if cid != "im2":  # JPEG images are lossy by nature; PNG/TIFF come back exactly
            np.testing.assert_array_equal(case.image, np.moveaxis(img, -1, 0) if rgb else img[None])


def test_binary_255_masks_and_bad_masks(tmp_path: Path, rng: np.random.Generator) -> None:
    (tmp_path / "in" / "images").mkdir(parents=True)
    (tmp_path / "in" / "masks").mkdir()
    Image.fromarray(np.full((6, 6), 100, np.uint8)).save(tmp_path / "in" / "images" / "a.png")
    m = np.zeros((6, 6), np.uint8)
    m[2:4, 1:5] = 255
    Image.fromarray(m).save(tmp_path / "in" / "masks" / "a.png")
    case = import_dataset("images", tmp_path / "in", tmp_path / "out").load_case("a")
    assert case.label.sum() == 8
    Image.fromarray(m).save(tmp_path / "in" / "masks" / "a.jpg")
    with pytest.raises(FormatError, match="JPEG") as e:
        import_dataset("images", tmp_path / "in", tmp_path / "o2")
    assert "a.jpg" in str(e.value)
    (tmp_path / "in" / "masks" / "a.jpg").unlink()
    Image.fromarray(m).save(tmp_path / "in" / "masks" / "zzz.png")
    with pytest.raises(FormatError, match="matches no image"):
        import_dataset("images", tmp_path / "in", tmp_path / "o2")
    assert not (tmp_path / "o2").exists()


# ---------------------------------------------------------------- Sunnybrook


def test_sunnybrook_round_trip(tmp_path: Path) -> None:
    make_sunnybrook(tmp_path / "in")
    ds = import_dataset("sunnybrook", tmp_path / "in", tmp_path / "out")
    assert ds.info.class_names == ["background", "lv_blood_pool", "myocardium"]
    assert ds.case_ids == ["SC-HF-I-01_IM-0001-0048"] and ds.patients[ds.case_ids[0]] == "SC-HF-I-01"
    case = ds.load_case(ds.case_ids[0])
    src = pydicom.dcmread(get_testdata_file("MR_small.dcm"))
    np.testing.assert_array_equal(case.image[0], src.pixel_array.astype(np.float32))
    assert case.spacing == pytest.approx([float(v) for v in src.PixelSpacing])
    assert (case.label == 1).sum() == 11 * 11  # x, y = 20…30 inclusive
    assert (case.label == 2).sum() == 21 * 21 - 11 * 11
    assert case.label[25, 25] == 1 and case.label[16, 25] == 2 and case.label[5, 5] == 0


def test_sunnybrook_contour_without_image(tmp_path: Path) -> None:
    con = make_sunnybrook(tmp_path / "in")
    (con / "IM-0001-0099-icontour-manual.txt").write_text("1 1\n2 2\n3 1\n")
    with pytest.raises(FormatError, match=r"IM-0001-0099.*does not exist") as e:
        import_dataset("sunnybrook", tmp_path / "in", tmp_path / "out")
    assert "IM-0001-0099-icontour-manual.txt" in str(e.value) and not (tmp_path / "out").exists()


def test_sunnybrook_malformed_line(tmp_path: Path) -> None:
    con = make_sunnybrook(tmp_path / "in")
    (con / "IM-0001-0048-icontour-manual.txt").write_text("20.0 20.0\n30.0 x\n30.0 30.0\n")
    with pytest.raises(FormatError, match="malformed coordinate line") as e:
        import_dataset("sunnybrook", tmp_path / "in", tmp_path / "out")
    assert "icontour-manual.txt:2" in str(e.value) and "\n" not in str(e.value)
    assert not (tmp_path / "out").exists()
    with pytest.raises(FormatError):
        (con / "bad.txt").write_text("1 2 3\n")
        read_contour(con / "bad.txt")


def test_sunnybrook_patient_folders_may_differ_in_zero_padding(tmp_path: Path) -> None:
    make_sunnybrook(tmp_path / "in")
    (tmp_path / "in" / "contours" / "SC-HF-I-01").rename(tmp_path / "in" / "contours" / "SC-HF-I-1")
    ds = import_dataset("sunnybrook", tmp_path / "in", tmp_path / "out")
    assert ds.case_ids == ["SC-HF-I-1_IM-0001-0048"] and (ds.load_case(ds.case_ids[0]).label == 1).any()
