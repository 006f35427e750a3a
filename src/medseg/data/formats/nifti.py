"""A plain pair of folders of NIfTI/NRRD/MHA volumes: images and labels matched by name.

Layout::

    path/
      images/  liver_01.nii.gz  liver_02.nii.gz      (or liver_01_0000.nii.gz, liver_01_0001.nii.gz per channel)
      labels/  liver_01.nii.gz  liver_02.nii.gz

Geometry: NIfTI affines are kept as is (RAS+, array axes i, j, k); NRRD/MHA (LPS) are converted
to RAS+. A label must lie on its image's grid (same shape and affine) and hold integers.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from medseg.core.case import Case
from medseg.data.formats.common import default_classes, parse_names, volume_case, volume_stem, volume_suffix
from medseg.data.formats.registry import FORMATS, FormatError, Imported
from medseg.data.labelset import LabelSet, region_channels, region_values, warn_absent
from medseg.data.store import IGNORE_CLASS, ClassInfo, DatasetInfo, make_classes
from medseg.io import read_array, read_label
from medseg.io.labels import ValueConvention

CHANNEL_RE = re.compile(r"^(.*)_(\d{4})$")


def group_channels(files: list[Path]) -> dict[str, list[Path]]:
    """``{case: [channel files]}``; ``x_0000``, ``x_0001`` are channels of case ``x``, other names one channel."""
    stems = {volume_stem(p): p for p in files}
    out: dict[str, dict[int, Path]] = {}
    for stem, p in stems.items():
        m = CHANNEL_RE.match(stem)
        case, ch = (m[1], int(m[2])) if m else (stem, 0)
        out.setdefault(case, {})[ch] = p
    result: dict[str, list[Path]] = {}
    for case, chans in sorted(out.items()):
        expected = list(range(max(chans) + 1))
        if sorted(chans) != expected:
            missing = sorted(set(expected) - set(chans))
            raise FormatError(
                f"case {case!r} lacks channel file(s) {', '.join(f'_{m:04d}' for m in missing)}", where=chans[min(chans)].parent, fix="give every channel file"
            )
        result[case] = [chans[i] for i in expected]
    return result


def classes_from_labels(label_paths: list[Path], names: list[str] | None, where: Path) -> list[str]:
    """Class names: the given ones, or background + class_i up to the largest label value found."""
    if names is not None:
        return names
    top = 0
    for p in label_paths:
        lab, _, _ = read_label(p)
        top = max(top, int(lab.max(initial=0)))
    return default_classes(top + 1, None, where)


def check_channels(groups: dict[str, list[Path]], where: Path) -> int:
    n = {len(v) for v in groups.values()}
    if len(n) > 1:
        counts = {k: len(v) for k, v in groups.items()}
        few = min(counts, key=counts.__getitem__)
        raise FormatError(f"case {few!r} has {counts[few]} channel file(s), others have {max(n)}", where=where, fix="give every case the same channels")
    return n.pop()


def n_channels_of(path: Path) -> int:
    arr, _, src = read_array(path)
    return int(arr.shape[-1]) if arr.ndim > len(src.shape) else 1


@FORMATS.register("nifti", help="folders of NIfTI/NRRD/MHA volumes: images/ + labels/ matched by name (_0000, _0001 = channels)")
def read_nifti_folders(
    path: Path,
    *,
    images_dir: str = "images",
    labels_dir: str = "labels",
    classes: str | list[str] | None = None,
    modalities: str | list[str] | None = None,
    name: str = "",
    patient: str = "auto",
) -> Imported:
    """Read an image folder and a label folder of volumes.

    Args:
        path: the folder holding ``images_dir`` and ``labels_dir``.
        images_dir: sub-folder of images.
        labels_dir: sub-folder of labels (missing: unlabelled cases).
        classes: class names, background first (default: background, class_1, … up to the largest label).
        modalities: channel names (default ``image`` / ``channel_i``).
        name: data set name (default: the folder's name).
        patient: how the patient is read from a case name: ``auto`` (the part before ``_Week3``,
            ``_day2``, ``_visit1``, ``_tp2``, ``_scan1``…; else the whole name), ``case`` (one patient per
            case), or a regular expression whose first group is the patient.
    """
    path = Path(path)
    img_dir, lab_dir = path / images_dir, path / labels_dir
    if not img_dir.is_dir():
        raise FormatError(f"no {images_dir}/ folder", where=path, fix="put images in images/ and labels in labels/, or pass --option images_dir=NAME")
    groups = group_channels([p for p in sorted(img_dir.iterdir()) if volume_suffix(p)])
    if not groups:
        raise FormatError("no .nii/.nii.gz/.nrrd/.mha volumes", where=img_dir, fix="check the folder")
    labels: dict[str, Path] = {}
    if lab_dir.is_dir():
        labels = {label_key(volume_stem(p), groups): p for p in sorted(lab_dir.iterdir()) if volume_suffix(p)}
        orphans = sorted(set(labels) - set(groups))
        if orphans:
            raise FormatError(f"label {orphans[0]!r} matches no image", where=labels[orphans[0]], fix="name labels like their images (without _0000)")
    n_files = check_channels(groups, img_dir)
    n_chan = n_files if n_files > 1 else n_channels_of(next(iter(groups.values()))[0])
    patients = patients_from_names(list(groups), patient)
    return volume_dataset(
        path, groups, labels, n_chan, classes, modalities=modalities, name=name or path.name, fmt="nifti", what="image/label folders", patients=patients
    )


#: name parts that mark a label file (``Case_004_Week0_SEMANTIC_LFOV`` labels ``Case_004_Week0_LFOV``)
LABEL_TOKENS = ("semantic", "seg", "segmentation", "label", "labels", "mask", "gt")
VISIT_RE = re.compile(r"^(.+?)[_-]?(?:week|wk|day|visit|tp|timepoint|scan|session|ses)[_-]?\d+", re.IGNORECASE)


def label_key(stem: str, images: dict[str, list[Path]]) -> str:
    """The image case a label stem names: itself, or itself without one marker token (``_SEMANTIC``, ``_seg``…)."""
    if stem in images:
        return stem
    parts = re.split(r"([_-])", stem)
    for i in range(0, len(parts), 2):
        if parts[i].lower() in LABEL_TOKENS:
            rest = parts[: max(i - 1, 0)] + parts[i + 1 :] if i else parts[i + 2 :]
            cand = "".join(rest)
            if cand in images:
                return cand
    return stem


def patients_from_names(cases: list[str], rule: str) -> dict[str, str]:
    """Case → patient by ``rule`` (see :func:`read_nifti_folders`); several scans of a patient share a split."""
    if rule == "case":
        return {c: c for c in cases}
    pattern = VISIT_RE if rule == "auto" else None
    if pattern is None:
        try:
            pattern = re.compile(rule)
        except re.error as e:
            raise FormatError(f"bad patient pattern ({e})", where="--option patient", fix="give a regular expression with one group, auto or case") from None
    out = {}
    for c in cases:
        m = pattern.search(c)
        if m is None and rule != "auto":
            raise FormatError(f"case name {c!r} does not match the patient pattern {rule!r}", where="--option patient", fix="adjust the pattern")
        out[c] = (m[1] if m and m.groups() else m[0] if m else c) if m else c
    return out


def volume_dataset(
    path: Path,
    groups: dict[str, list[Path]],
    labels: dict[str, Path],
    n_chan: int,
    classes: str | list[str] | None,
    *,
    modalities: str | list[str] | None,
    name: str,
    fmt: str,
    what: str,
    patients: dict[str, str] | None = None,
    class_names: list[str] | None = None,
    label_set: LabelSet | None = None,
    where: Path | None = None,
) -> Imported:
    """The ``Imported`` for cases made of volume files (shared by the nifti, csv and msd formats).

    With a region ``label_set`` (nnU-Net region-based labels, declared in ``where``) each label
    map becomes one boolean channel per region (:func:`region_cases`).
    """
    if label_set is not None and label_set.regions:
        return region_cases(path, groups, labels, n_chan, label_set, modalities=modalities, name=name, fmt=fmt, what=what, patients=patients, where=where)
    names = class_names or classes_from_labels(list(labels.values()), parse_names(classes), path)
    mods = parse_names(modalities) or (["image"] if n_chan == 1 else [f"channel_{i}" for i in range(n_chan)])
    if len(mods) != n_chan:
        raise FormatError(f"{len(mods)} modality names for {n_chan} channels", where="--option modalities", fix=f"give {n_chan} names")
    _, _, first = read_array(next(iter(groups.values()))[0])
    dims = 2 if len(first.shape) == 2 else 3
    info = DatasetInfo(
        name=name,
        description=f"Imported from {what}",
        dims=dims,
        modalities=mods,
        classes=make_classes(names),
        source={"format": fmt, "path": str(path)},
    )

    def cases() -> Iterator[Case]:
        stored = ValueConvention()
        for cid, files in groups.items():
            case = volume_case(files, labels.get(cid), case_id=cid, patient_id=(patients or {}).get(cid, ""), convention=stored)
            if case.image.shape[0] != n_chan:
                raise FormatError(f"image has {case.image.shape[0]} channels, others {n_chan}", where=files[0], fix="give every case the same channels")
            if case.label is not None and case.label.size and int(np.max(case.label)) >= len(names):
                raise FormatError(
                    f"label value {int(np.max(case.label))} has no class (classes: {', '.join(names)})",
                    where=labels[cid],
                    fix="add the class name to --option classes",
                )
            yield case
        info.mask_values = stored.values  # read before dataset.json is written, once every case is in

    return Imported(info=info, cases=cases())


def region_cases(
    path: Path,
    groups: dict[str, list[Path]],
    labels: dict[str, Path],
    n_chan: int,
    label_set: LabelSet,
    *,
    modalities: str | list[str] | None,
    name: str,
    fmt: str,
    what: str,
    patients: dict[str, str] | None,
    where: Path | None,
) -> Imported:
    """Region-based labels: multi-label cases, channel k the union of region k's label values.

    The ignore label, if any, becomes a last channel named ``ignore`` (its voxels are left out
    of training and scoring). A label file holding a value outside the declared ones is refused;
    a region value that no case holds is warned about once every case is read.
    """
    mods = parse_names(modalities) or (["image"] if n_chan == 1 else [f"channel_{i}" for i in range(n_chan)])
    if len(mods) != n_chan:
        raise FormatError(f"{len(mods)} modality names for {n_chan} channels", where="--option modalities", fix=f"give {n_chan} names")
    _, _, first = read_array(next(iter(groups.values()))[0])
    keys = list(label_set.regions.values())
    classes = make_classes(list(label_set.regions), background=False)
    for c, key in zip(classes, keys, strict=True):
        c.labels = key if isinstance(key, int) else list(key)  # the spelling decides nnU-Net's metric key
    if label_set.ignore is not None:
        classes.append(ClassInfo(name=IGNORE_CLASS, color=(128, 128, 128), labels=[label_set.ignore]))
    info = DatasetInfo(
        name=name,
        description=f"Imported from {what}",
        dims=2 if len(first.shape) == 2 else 3,
        modalities=mods,
        classes=classes,
        multi_label=True,
        regions_class_order=[*label_set.regions_class_order, *([label_set.ignore] if label_set.ignore is not None else [])],
        source={"format": fmt, "path": str(path), "regions": {n: list(region_values(k)) for n, k in label_set.regions.items()}},
    )
    allowed = sorted(label_set.values)
    channel_keys = [*keys, *([label_set.ignore] if label_set.ignore is not None else [])]

    def cases() -> Iterator[Case]:
        seen: set[int] = set()
        for cid, files in groups.items():
            case = volume_case(files, labels.get(cid), case_id=cid, patient_id=(patients or {}).get(cid, ""))
            if case.image.shape[0] != n_chan:
                raise FormatError(f"image has {case.image.shape[0]} channels, others {n_chan}", where=files[0], fix="give every case the same channels")
            if case.label is not None:
                values = {int(v) for v in np.unique(case.label)}
                bad = sorted(values - set(allowed))
                if bad:
                    raise FormatError(
                        f"label value(s) {bad} are not among the data set's values {allowed}",
                        where=labels[cid],
                        fix="declare them in dataset.json or remap the label",
                    )
                seen |= values
                case.label = region_channels(case.label, channel_keys)
            yield case
        warn_absent(label_set.regions, seen, where=where or path)

    return Imported(info=info, cases=cases())
