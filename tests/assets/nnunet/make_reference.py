"""Regenerate the nnU-Net reference folders in tests/data/nnunet/.

Run by hand, with a Python environment that has nnU-Net installed (not the project's own
environment), for example:

    python3 -m venv /tmp/nnunet-venv && /tmp/nnunet-venv/bin/pip install nnunetv2
    /tmp/nnunet-venv/bin/python tests/data/nnunet/make_reference.py

For each scenario the script writes small reference (gt/) and prediction (pred/) masks, a
dataset.json in nnU-Net's raw format that declares the labels, and then lets nnU-Net's own
`nnunetv2.evaluation.evaluate_predictions.compute_metrics_on_folder` write summary.json.
The label/region list and the ignore label passed to it are taken from nnU-Net's LabelManager,
exactly as nnUNetTrainer.perform_actual_validation does. The evaluation runs with the scenario
folder as working directory and relative folder names, so that the file paths stored in
summary.json are relative ("gt/case_000.nii.gz") rather than absolute.

The medseg test suite only reads the files; it never imports nnU-Net.
"""

import json
import os
import shutil
from importlib.metadata import version
from pathlib import Path

import numpy as np
import SimpleITK as sitk
from nnunetv2.evaluation.evaluate_predictions import compute_metrics_on_folder
from nnunetv2.imageio.natural_image_reader_writer import NaturalImage2DIO
from nnunetv2.imageio.simpleitk_reader_writer import SimpleITKIO
from nnunetv2.utilities.label_handling.label_handling import LabelManager
from PIL import Image

HERE = Path(__file__).resolve().parent

# numpy (z, y, x) = (8, 10, 12): a 12 x 10 x 8 NIfTI volume.
SHAPE_3D = (8, 10, 12)
# SimpleITK order (x, y, z), anisotropic: thick slices.
SPACING_3D = (0.75, 0.75, 2.5)
ORIGIN_3D = (-4.0, 2.0, 10.0)
# PNG masks: 16 rows x 20 columns.
SHAPE_2D = (16, 20)


def box(shape, lo, hi):
    """Boolean mask that is True in the half-open box [lo, hi) (numpy axis order)."""
    m = np.zeros(shape, dtype=bool)
    m[tuple(slice(a, b) for a, b in zip(lo, hi, strict=True))] = True
    return m


def paint(shape, *items):
    """Label map from (mask, value) pairs; later pairs overwrite earlier ones."""
    seg = np.zeros(shape, dtype=np.uint8)
    for mask, value in items:
        seg[mask] = value
    return seg


def salt(seg, rng, n, values):
    """Set n random voxels to random values from `values` (non-trivial, irregular overlaps)."""
    out = seg.copy()
    flat = out.reshape(-1)
    idx = rng.choice(flat.size, size=n, replace=False)
    flat[idx] = rng.choice(values, size=n)
    return out


def write_nifti(seg, path):
    img = sitk.GetImageFromArray(seg.astype(np.uint8))
    img.SetSpacing(SPACING_3D)
    img.SetOrigin(ORIGIN_3D)
    sitk.WriteImage(img, str(path), True)


def write_png(seg, path):
    Image.fromarray(seg.astype(np.uint8), mode="L").save(path)


def write_dataset_json(folder, labels, file_ending, num_cases, regions_class_order=None):
    ds = {
        "channel_names": {"0": "noNorm"},
        "labels": labels,
        "numTraining": num_cases,
        "file_ending": file_ending,
    }
    if regions_class_order is not None:
        ds["regions_class_order"] = regions_class_order
    # nnU-Net's own rule: never sort the label keys (region order matters).
    with open(folder / "dataset.json", "w") as f:
        json.dump(ds, f, indent=4, sort_keys=False)


def write_cases(name, cases, writer, file_ending):
    folder = HERE / name
    for sub in ("gt", "pred"):
        shutil.rmtree(folder / sub, ignore_errors=True)
        (folder / sub).mkdir(parents=True)
    for case_id, (ref, pred) in cases.items():
        writer(ref, folder / "gt" / f"{case_id}{file_ending}")
        writer(pred, folder / "pred" / f"{case_id}{file_ending}")
    return folder


def evaluate(folder, labels, regions_class_order, reader_writer, file_ending, output_file="summary.json"):
    lm = LabelManager(labels, regions_class_order)
    regions_or_labels = lm.foreground_regions if lm.has_regions else lm.foreground_labels
    cwd = os.getcwd()
    os.chdir(folder)
    try:
        compute_metrics_on_folder(
            "gt",
            "pred",
            output_file,
            reader_writer,
            file_ending,
            regions_or_labels,
            ignore_label=lm.ignore_label,
            num_processes=2,
            chill=True,
        )
    finally:
        os.chdir(cwd)
    shown = [r if isinstance(r, tuple) else int(r) for r in regions_or_labels]
    print(f"{folder.name}/{output_file}: regions_or_labels={shown!r} ignore_label={lm.ignore_label!r}")


def scenario_labels(rng):
    """Labels 1 and 2, four cases, anisotropic spacing."""
    s = SHAPE_3D
    cases = {}
    # case_000: both labels present in both, partial overlaps, a few stray voxels.
    ref = paint(s, (box(s, (1, 2, 2), (6, 8, 7)), 1), (box(s, (3, 4, 7), (7, 9, 11)), 2))
    pred = paint(s, (box(s, (1, 3, 2), (6, 8, 8)), 1), (box(s, (2, 4, 6), (7, 8, 11)), 2))
    cases["case_000"] = (ref, salt(pred, rng, 6, [0, 1, 2]))
    # case_001: label 2 absent from reference and prediction -> Dice/IoU NaN for label 2.
    ref = paint(s, (box(s, (2, 1, 1), (7, 7, 9)), 1))
    pred = paint(s, (box(s, (2, 2, 2), (8, 7, 10)), 1))
    cases["case_001"] = (ref, pred)
    # case_002: label 2 only in the reference (missed: Dice 0, n_pred 0); label 1 over-segmented.
    ref = paint(s, (box(s, (1, 3, 3), (5, 7, 8)), 1), (box(s, (5, 5, 8), (7, 8, 11)), 2))
    pred = paint(s, (box(s, (0, 2, 2), (6, 9, 10)), 1))
    cases["case_002"] = (ref, pred)
    # case_003: label 2 only in the prediction (false positive: Dice 0, n_ref 0); label 1 exact.
    ref = paint(s, (box(s, (3, 0, 0), (6, 4, 5)), 1))
    pred = paint(s, (box(s, (3, 0, 0), (6, 4, 5)), 1), (box(s, (0, 6, 9), (2, 9, 12)), 2))
    cases["case_003"] = (ref, pred)
    labels = {"background": 0, "organ": 1, "lesion": 2}
    folder = write_cases("labels", cases, write_nifti, ".nii.gz")
    write_dataset_json(folder, labels, ".nii.gz", len(cases))
    evaluate(folder, labels, None, SimpleITKIO(), ".nii.gz")


def scenario_regions(rng):
    """BraTS-like nested regions: whole (1, 2, 3), core (2, 3), enhancing (3,)."""
    s = SHAPE_3D
    cases = {}
    # case_000: nested structures, prediction shifted and resized.
    ref = paint(s, (box(s, (1, 1, 1), (7, 9, 11)), 1), (box(s, (2, 3, 3), (6, 7, 9)), 2), (box(s, (3, 4, 4), (5, 6, 7)), 3))
    pred = paint(s, (box(s, (1, 2, 2), (8, 9, 11)), 1), (box(s, (2, 3, 4), (6, 8, 9)), 2), (box(s, (3, 4, 5), (5, 7, 8)), 3))
    cases["case_000"] = (ref, salt(pred, rng, 5, [0, 1, 2, 3]))
    # case_001: no enhancing tumour (label 3) in either -> region (3,) is NaN.
    ref = paint(s, (box(s, (0, 0, 2), (6, 8, 10)), 1), (box(s, (2, 2, 4), (5, 6, 8)), 2))
    pred = paint(s, (box(s, (0, 1, 2), (6, 8, 9)), 1), (box(s, (2, 2, 3), (4, 6, 8)), 2))
    cases["case_001"] = (ref, pred)
    # case_002: enhancing part predicted as label 2: core region is perfect, enhancing region missed.
    ref = paint(s, (box(s, (1, 1, 1), (7, 8, 10)), 1), (box(s, (2, 2, 3), (6, 6, 8)), 2), (box(s, (3, 3, 4), (5, 5, 6)), 3))
    pred = paint(s, (box(s, (1, 1, 1), (7, 9, 10)), 1), (box(s, (2, 2, 3), (6, 6, 8)), 2))
    cases["case_002"] = (ref, pred)
    folder = write_cases("regions", cases, write_nifti, ".nii.gz")
    # as in nnU-Net's Dataset137_BraTS21 conversion: the single-label region is the tuple (3, )
    labels = {"background": 0, "whole tumor": [1, 2, 3], "tumor core": [2, 3], "enhancing tumor": [3]}
    write_dataset_json(folder, labels, ".nii.gz", len(cases), regions_class_order=[1, 2, 3])
    evaluate(folder, labels, [1, 2, 3], SimpleITKIO(), ".nii.gz")
    # the other spelling that region_based_training.md allows: "enhancing tumor": 3 (key "3", not "(3,)")
    labels_int = {"background": 0, "whole tumor": [1, 2, 3], "tumor core": [2, 3], "enhancing tumor": 3}
    evaluate(folder, labels_int, [1, 2, 3], SimpleITKIO(), ".nii.gz", output_file="summary_int_region.json")


def scenario_ignore(rng):
    """Labels 1 and 2 with the ignore label 3 (highest value) in the reference."""
    s = SHAPE_3D
    cases = {}
    # case_000: slices z >= 5 not annotated; prediction extends into them (not counted).
    full = paint(s, (box(s, (1, 1, 1), (8, 6, 7)), 1), (box(s, (2, 5, 6), (8, 9, 11)), 2))
    ref = full.copy()
    ref[5:] = 3
    pred = paint(s, (box(s, (1, 2, 1), (8, 7, 8)), 1), (box(s, (3, 5, 5), (8, 10, 11)), 2))
    cases["case_000"] = (ref, salt(pred, rng, 6, [0, 1, 2]))
    # case_001: label 2 lies only inside the ignored block in reference and prediction -> NaN.
    full = paint(s, (box(s, (0, 0, 0), (4, 5, 6)), 1), (box(s, (4, 5, 6), (7, 9, 11)), 2))
    ref = full.copy()
    ref[box(s, (4, 4, 5), (8, 10, 12))] = 3
    pred = paint(s, (box(s, (0, 1, 0), (4, 5, 7)), 1), (box(s, (5, 4, 6), (8, 9, 12)), 2))
    cases["case_001"] = (ref, pred)
    # case_002: sparse annotation: only slices 1, 4 and 6 annotated.
    full = paint(s, (box(s, (0, 2, 2), (8, 8, 6)), 1), (box(s, (0, 3, 7), (8, 9, 11)), 2))
    ref = np.full(s, 3, dtype=np.uint8)
    ref[[1, 4, 6]] = full[[1, 4, 6]]
    pred = paint(s, (box(s, (0, 2, 3), (8, 8, 7)), 1), (box(s, (0, 4, 7), (8, 9, 12)), 2))
    cases["case_002"] = (ref, pred)
    labels = {"background": 0, "organ": 1, "lesion": 2, "ignore": 3}
    folder = write_cases("ignore", cases, write_nifti, ".nii.gz")
    write_dataset_json(folder, labels, ".nii.gz", len(cases))
    evaluate(folder, labels, None, SimpleITKIO(), ".nii.gz")


def scenario_png2d(rng):
    """2D PNG masks read by NaturalImage2DIO (labels 1 and 2)."""
    s = SHAPE_2D
    cases = {}
    ref = paint(s, (box(s, (2, 2), (10, 9)), 1), (box(s, (8, 11), (14, 18)), 2))
    pred = paint(s, (box(s, (3, 2), (11, 10)), 1), (box(s, (9, 12), (15, 18)), 2))
    cases["img_000"] = (ref, salt(pred, rng, 8, [0, 1, 2]))
    # label 2 absent from both -> NaN
    ref = paint(s, (box(s, (0, 5), (9, 15)), 1))
    pred = paint(s, (box(s, (1, 6), (9, 16)), 1))
    cases["img_001"] = (ref, pred)
    # label 2 only in reference, label 1 and 2 confused
    ref = paint(s, (box(s, (4, 0), (12, 8)), 1), (box(s, (5, 10), (11, 16)), 2))
    pred = paint(s, (box(s, (4, 0), (12, 8)), 1), (box(s, (5, 10), (11, 16)), 1))
    cases["img_002"] = (ref, pred)
    labels = {"background": 0, "road": 1, "building": 2}
    folder = write_cases("png2d", cases, write_png, ".png")
    write_dataset_json(folder, labels, ".png", len(cases))
    evaluate(folder, labels, None, NaturalImage2DIO(), ".png")


def scenario_absent_class(rng):
    """A declared label (3) that occurs in no case: its mean is NaN, and so is foreground_mean (np.mean)."""
    s = SHAPE_3D
    cases = {}
    ref = paint(s, (box(s, (1, 1, 1), (6, 6, 6)), 1), (box(s, (2, 6, 6), (7, 10, 11)), 2))
    pred = paint(s, (box(s, (1, 2, 1), (6, 7, 7)), 1), (box(s, (3, 6, 7), (7, 10, 12)), 2))
    cases["case_000"] = (ref, pred)
    ref = paint(s, (box(s, (0, 3, 3), (5, 9, 9)), 1))
    pred = paint(s, (box(s, (0, 3, 4), (6, 9, 9)), 1), (box(s, (6, 0, 0), (8, 2, 2)), 2))
    cases["case_001"] = (ref, pred)
    labels = {"background": 0, "a": 1, "b": 2, "c": 3}
    folder = write_cases("absent_class", cases, write_nifti, ".nii.gz")
    write_dataset_json(folder, labels, ".nii.gz", len(cases))
    evaluate(folder, labels, None, SimpleITKIO(), ".nii.gz")


def main():
    print(f"nnunetv2 {version('nnunetv2')}, numpy {np.__version__}, SimpleITK {sitk.Version_VersionString()}")
    rng = np.random.default_rng(20240601)
    scenario_labels(rng)
    scenario_regions(rng)
    scenario_ignore(rng)
    scenario_png2d(rng)
    scenario_absent_class(rng)


if __name__ == "__main__":
    main()
