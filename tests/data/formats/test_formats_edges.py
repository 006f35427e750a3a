"""Imports of files that are not what they claim: one-line errors (exit 2, nothing written) or one warning, and the value convention recorded."""

from __future__ import annotations

import json
import time
import warnings
from collections.abc import Callable
from pathlib import Path

import nibabel as nib
import numpy as np
import pydicom
import pytest
from PIL import Image
from typer.testing import CliRunner

from helpers import SHAPE, oblique, write_series
from medseg.cli import app
from medseg.core.errors import MedsegWarning
from medseg.data.formats import import_dataset
from medseg.data.store import load_dataset
from releases import nuclei_tiles


def _pair(root: Path, label: np.ndarray, image: np.ndarray | None = None) -> Path:
    for sub, data in (("images", np.random.default_rng(0).normal(size=SHAPE).astype(np.float32) if image is None else image), ("labels", label)):
        (root / sub).mkdir(parents=True, exist_ok=True)
        nib.save(nib.Nifti1Image(data, oblique()), str(root / sub / "a.nii.gz"))
    return root


def _huge_label(tmp: Path) -> tuple[list[str], str, str]:
    lab = np.zeros(SHAPE, np.int32)
    lab[1, 1, 1] = 2_000_000_000
    return ["nifti", str(_pair(tmp / "in", lab))], "labels/a.nii.gz", "not a class index"


def _complex_image(tmp: Path) -> tuple[list[str], str, str]:
    img = (np.ones(SHAPE) * (1 + 2j)).astype(np.complex64)
    return ["nifti", str(_pair(tmp / "in", np.zeros(SHAPE, np.uint8), img))], "images/a.nii.gz", "complex"


def _empty_dicom(tmp: Path) -> tuple[list[str], str, str]:
    write_series(tmp / "in", n=3)
    for p in (tmp / "in").iterdir():
        ds = pydicom.dcmread(p)
        ds.Rows, ds.Columns, ds.PixelData = 0, 0, b""
        ds.save_as(p)
    return ["dicom", str(tmp / "in")], ".dcm", "0 × 0 pixels"


def _multipage_mask(tmp: Path) -> tuple[list[str], str, str]:
    (tmp / "in" / "images").mkdir(parents=True)
    (tmp / "in" / "masks").mkdir()
    Image.fromarray(np.zeros((9, 7), np.uint8)).save(tmp / "in" / "images" / "a.png")
    pages = [Image.fromarray(np.zeros((9, 7), np.uint8)) for _ in range(3)]
    pages[0].save(tmp / "in" / "masks" / "a.tif", save_all=True, append_images=pages[1:])
    return ["images", str(tmp / "in")], "masks/a.tif", "3 pages"


def _big_junk_in_dicom_folder(tmp: Path) -> tuple[list[str], str, str]:
    write_series(tmp / "in", n=3)
    (tmp / "in" / "blob").write_bytes(b"XY" + bytes(20 * 2**20))
    return ["dicom", str(tmp / "in")], "blob", "not a DICOM file"


@pytest.mark.parametrize("make", [_huge_label, _complex_image, _empty_dicom, _multipage_mask, _big_junk_in_dicom_folder])
def test_refused_in_one_line_with_nothing_written(tmp_path: Path, make: Callable) -> None:
    args, name, problem = make(tmp_path)
    out = tmp_path / "out"
    t0 = time.perf_counter()
    res = CliRunner().invoke(app, ["import", *args, "--out", str(out), "--no-progress"])
    assert time.perf_counter() - t0 < 5.0  # no 2·10⁹ class names, no forced parse of 20 MB
    lines = [ln for ln in res.output.splitlines() if ln.strip()]
    assert res.exit_code == 2 and len(lines) == 1 and lines[0].startswith("error:"), res.output
    assert name in lines[0] and problem in lines[0], lines[0]
    assert not out.exists() and not [p for p in tmp_path.iterdir() if p.name.startswith(".out")]


def test_nifti_label_0_255_is_binary_with_one_warning_and_recorded(tmp_path: Path) -> None:
    lab = np.zeros(SHAPE, np.uint8)
    lab[1:4, 2:5, 1:3] = 255
    _pair(tmp_path / "in", lab)
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("default")  # as a person sees them: once per file and message
        ds = import_dataset("nifti", tmp_path / "in", tmp_path / "out")
    assert ds.info.class_names == ["background", "class_1"]  # not 256 classes
    np.testing.assert_array_equal(ds.load_case("a").label, lab // 255)
    assert ds.info.mask_values == [0, 255]
    ours = [str(w.message) for w in seen if issubclass(w.category, MedsegWarning)]
    assert len(ours) == 1 and "a.nii.gz" in ours[0]


def test_pixdim_zero_warns_once_per_import(tmp_path: Path) -> None:
    img = nib.Nifti1Image(np.random.default_rng(1).normal(size=SHAPE).astype(np.float32), None)
    img.header["pixdim"][1:4] = [0.0, 1.5, 2.0]
    img.update_header = lambda: None  # type: ignore[method-assign]
    (tmp_path / "in" / "images").mkdir(parents=True)
    nib.save(img, str(tmp_path / "in" / "images" / "a.nii"))
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("default")
        ds = import_dataset("nifti", tmp_path / "in", tmp_path / "out")
    ours = [str(w.message) for w in seen if issubclass(w.category, MedsegWarning)]
    assert len(ours) == 1 and "assumed [1.0, 1.5, 2.0] mm" in ours[0]
    assert ds.load_case("a").spacing == pytest.approx((1.0, 1.5, 2.0))


def test_png_masks_0_255_are_recorded_and_16_bit_0_65535_masks_import(tmp_path: Path) -> None:
    rel = nuclei_tiles(tmp_path / "nuclei", n_train=3, n_test=1, size=32, layout="folder")
    ds = import_dataset("images", rel.root, tmp_path / "out")
    assert ds.info.mask_values == [0, 255] and ds.info.class_names == ["background", "class_1"]
    assert json.loads((tmp_path / "out" / "dataset.json").read_text())["mask_values"] == [0, 255]
    for stem, mask in rel.masks.items():
        np.testing.assert_array_equal(ds.load_case(stem).label, mask.astype(np.int16))
    # the same masks as 16-bit 0/65535 files: class 1, not "label values [-1]"
    for stem, mask in rel.masks.items():
        Image.fromarray(mask.astype(np.uint16) * 65535).save(rel.root / "masks" / f"{stem}.png")
    ds16 = import_dataset("images", rel.root, tmp_path / "out16")
    assert ds16.info.mask_values == [0, 65535]
    np.testing.assert_array_equal(ds16.load_case("tile_000").label, rel.masks["tile_000"].astype(np.int16))


def test_mask_value_without_a_class_names_the_mask(tmp_path: Path) -> None:
    (tmp_path / "in" / "images").mkdir(parents=True)
    (tmp_path / "in" / "masks").mkdir()
    Image.fromarray(np.zeros((9, 7), np.uint8)).save(tmp_path / "in" / "images" / "a.png")
    m = np.zeros((9, 7), np.uint16)
    m[2, 2] = 3
    Image.fromarray(m).save(tmp_path / "in" / "masks" / "a.png")
    res = CliRunner().invoke(app, ["import", "images", str(tmp_path / "in"), "--out", str(tmp_path / "out"), "--classes", "bg,fg", "--no-progress"])
    assert res.exit_code == 2 and "masks/a.png" in res.output and "values up to 3 but only 2 class names" in res.output


def test_dataset_json_without_mask_values_still_loads(tmp_path: Path) -> None:
    rel = nuclei_tiles(tmp_path / "nuclei", n_train=2, n_test=0, size=32, layout="folder")
    import_dataset("images", rel.root, tmp_path / "out")
    meta = json.loads((tmp_path / "out" / "dataset.json").read_text())
    del meta["mask_values"]  # written before the field existed
    (tmp_path / "out" / "dataset.json").write_text(json.dumps(meta))
    assert load_dataset(tmp_path / "out").info.mask_values is None
