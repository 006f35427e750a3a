"""The canonical data set folder: ``dataset.json`` + ``cases/<id>.npz`` + ``splits.json``.

Layout::

    my_dataset/
      dataset.json     name, dims, modality per channel, classes (name, colour), multi-label flag, mask value convention, cases
      cases/<id>.npz   image (float32, C×[D×]H×W), label, affine (float64), meta (JSON)
      splits.json      patient-grouped train/val/test (and folds), see ``medseg.data.splits``

Every importer writes this folder; every later stage reads only this folder. Case files keep the
affine in float64, so geometry survives a round trip bit for bit.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from medseg.core.atomic import atomic_dir, write_json
from medseg.core.case import Case
from medseg.core.errors import DatasetError

DATASET_FILE = "dataset.json"
#: the class name that marks unannotated voxels (as in nnU-Net)
IGNORE_CLASS = "ignore"
SPLITS_FILE = "splits.json"
CASES_DIR = "cases"

#: Default class colours (RGB): red, green, blue first, as overlays in the field usually show them.
DEFAULT_COLORS: list[tuple[int, int, int]] = [
    (255, 0, 0),
    (0, 200, 0),
    (0, 90, 255),
    (255, 200, 0),
    (200, 0, 255),
    (0, 220, 220),
    (255, 120, 0),
    (140, 90, 40),
    (255, 105, 180),
    (128, 128, 128),
]


class ClassInfo(BaseModel):
    """A segmentation class: its name and display colour (RGB 0–255); for a region (multi-label data
    imported from region-based labels) the label values whose union it is, spelled as declared."""

    model_config = ConfigDict(extra="forbid")
    name: str
    color: tuple[int, int, int] = (255, 0, 0)
    labels: list[int] | int | None = Field(
        None,
        description="region: the label values whose union this class is (nnU-Net region-based labels); "
        'a number when the region was declared as one (nnU-Net keys its metrics "3" for 3 and "(3,)" for [3])',
    )

    @property
    def key(self) -> int | tuple[int, ...] | None:
        """The region as nnU-Net passes it to its evaluation: an int or a tuple of label values (None: not a region)."""
        return self.labels if isinstance(self.labels, int) or self.labels is None else tuple(self.labels)


class CaseEntry(BaseModel):
    model_config = ConfigDict(extra="forbid")
    id: str
    patient: str
    file: str
    shape: list[int] = Field(default_factory=list, description="spatial shape")
    labelled: bool = Field(True, description="false for images without a label (e.g. an MSD imagesTs/); they stay out of splits")


class DatasetInfo(BaseModel):
    """The contents of ``dataset.json``.

    For single-label data ``classes[0]`` is the background and label values are class indices;
    for multi-label data (``multi_label: true``) each class is one boolean label channel and there
    is no background entry.
    """

    model_config = ConfigDict(extra="forbid")
    name: str
    description: str = ""
    format_version: int = 1
    dims: Literal[2, 3]
    modalities: list[str] = Field(min_length=1)
    classes: list[ClassInfo] = Field(min_length=1)
    multi_label: bool = False
    mask_values: list[int] | None = Field(
        None,
        description="the value the imported mask files stored for each class (index = class) when it was not the class index, "
        "e.g. [0, 255] for 0/255 PNG masks; predicted masks are written with it",
    )
    cases: list[CaseEntry] = Field(default_factory=list)
    source: dict[str, Any] = Field(default_factory=dict)
    ignore_label: int | None = Field(
        None,
        description="the class whose voxels are not annotated (nnU-Net's ignore label): the last class; default the class named 'ignore'. "
        "Left out of the loss, of every metric, of validation Dice and of foreground sampling",
    )
    regions_class_order: list[int] | None = Field(
        None, description="region data sets: the label value each region (class) is painted with when written back as a label map, in class order"
    )

    @field_validator("classes")
    @classmethod
    def _unique_names(cls, v: list[ClassInfo]) -> list[ClassInfo]:
        names = [c.name for c in v]
        if len(set(names)) != len(names):
            raise ValueError(f"class names must be unique, got {names}")
        return v

    @model_validator(mode="after")
    def _ignore_last(self) -> DatasetInfo:
        names = self.class_names
        if IGNORE_CLASS in names and self.ignore_label is None:
            self.ignore_label = names.index(IGNORE_CLASS)
        if self.ignore_label is not None and self.ignore_label != len(names) - 1:
            got = names[self.ignore_label] if 0 <= self.ignore_label < len(names) else "no class"
            raise ValueError(f"the ignore label must be the highest class ({len(names) - 1}, {names[-1]!r}), got {self.ignore_label} ({got!r})")
        if self.regions_class_order is not None and len(self.regions_class_order) != len(names):
            raise ValueError(f"regions_class_order has {len(self.regions_class_order)} entries for {len(names)} regions")
        return self

    @property
    def class_names(self) -> list[str]:
        return [c.name for c in self.classes]

    @property
    def foreground(self) -> list[int]:
        """Indices of the classes that are scored (all but background for single-label data, and never the ignore label)."""
        return [k for k in range(0 if self.multi_label else 1, len(self.classes)) if k != self.ignore_label]

    @property
    def n_outputs(self) -> int:
        """Network output channels: one per class, less the ignore label (never predicted)."""
        return len(self.classes) - (self.ignore_label is not None)

    @property
    def n_channels(self) -> int:
        return len(self.modalities)


def make_classes(names: list[str], colors: list[tuple[int, int, int]] | None = None, background: bool = True) -> list[ClassInfo]:
    """Class list with default colours; the background (if any) is black and gets no colour slot."""
    out = []
    palette = list(colors or DEFAULT_COLORS)
    k = 0
    for i, name in enumerate(names):
        if background and i == 0:
            out.append(ClassInfo(name=name, color=(0, 0, 0)))
            continue
        out.append(ClassInfo(name=name, color=tuple(palette[k % len(palette)])))
        k += 1
    return out


def validate_case(case: Case, info: DatasetInfo, where: str | Path) -> None:
    """Check one case against the data set description; raise ``DatasetError`` naming the file."""
    img = case.image
    if img.ndim != info.dims + 1:
        raise DatasetError(
            f"image has shape {img.shape}, expected (C, {'D, ' if info.dims == 3 else ''}H, W) for a {info.dims}D data set",
            where=where,
            fix="re-import the case with the right dimensionality",
        )
    if img.shape[0] != info.n_channels:
        raise DatasetError(
            f"image has {img.shape[0]} channels but dataset.json lists {info.n_channels} modalities",
            where=where,
            fix="make the modality list match the image channels",
        )
    if not np.isfinite(img).all():
        bad = int((~np.isfinite(img)).sum())
        raise DatasetError(f"image holds {bad} NaN/Inf values", where=where, fix="replace or mask them before import")
    if case.affine.shape != (info.dims + 1, info.dims + 1):
        raise DatasetError(f"affine has shape {case.affine.shape}, expected {(info.dims + 1,) * 2}", where=where)
    if not np.isfinite(case.affine).all() or min(case.spacing) <= 0:
        raise DatasetError(f"invalid geometry: spacing {case.spacing}", where=where, fix="give a positive, finite spacing")
    lab = case.label
    if lab is None:
        return
    spatial = img.shape[1:]
    if info.multi_label and (lab.dtype != bool or lab.shape != (len(info.classes), *spatial)):
        raise DatasetError(
            f"multi-label label has shape {lab.shape} ({lab.dtype}), expected boolean {(len(info.classes), *spatial)}",
            where=where,
            fix="give one boolean channel per class, on the image grid",
        )
    if not info.multi_label and lab.shape != spatial:
        raise DatasetError(f"label shape {lab.shape} does not match image shape {spatial}", where=where, fix="resample the label onto the image grid")
    ign = info.ignore_label
    if ign is not None and bool(lab[ign].all() if info.multi_label else (lab == ign).all()):
        value = info.regions_class_order[ign] if info.regions_class_order else ign  # a region data set's ignore channel: its label value
        problem = f"every voxel is the ignore label {value} ({info.class_names[ign]!r}): nothing is annotated"
        raise DatasetError(problem, where=where, fix="annotate part of the case, or leave it out")
    if info.multi_label:
        return
    values = np.unique(lab)
    bad = [int(v) for v in values if v < 0 or v >= len(info.classes)]
    if bad:
        raise DatasetError(
            f"label values {bad} are not among the {len(info.classes)} classes {info.class_names}",
            where=where,
            fix="add the missing classes to dataset.json or remap the label",
        )


def save_case(path: Path, case: Case, compress: bool = False) -> None:
    """Write one case file (``.npz``). Uncompressed by default: deflate made imports CPU-bound
    (≈ 3 s for a 100×256² volume against 0.07 s), and reading it back costs the same again."""
    arrays: dict[str, Any] = {
        "image": case.image,
        "affine": case.affine,
        "meta": np.array(json.dumps({"case_id": case.case_id, "patient_id": case.patient_id, **case.meta})),
    }
    if case.label is not None:
        arrays["label"] = case.label
    with open(path, "wb") as fh:
        (np.savez_compressed if compress else np.savez)(fh, **arrays)


def read_case(path: Path) -> Case:
    try:
        with np.load(path, allow_pickle=False) as z:
            meta = json.loads(str(z["meta"]))
            return Case(
                image=z["image"],
                label=z["label"] if "label" in z.files else None,
                affine=z["affine"],
                case_id=meta.pop("case_id"),
                patient_id=meta.pop("patient_id"),
                meta=meta,
            )
    except FileNotFoundError:
        raise DatasetError("case file is missing", where=path, fix="re-import the data set or remove the case from dataset.json") from None
    except (OSError, ValueError, KeyError) as e:
        raise DatasetError(f"case file is unreadable ({e})", where=path, fix="re-import the data set") from None


class Dataset:
    """A data set folder opened for reading; cases are loaded on demand.

    Args:
        root: the folder holding ``dataset.json``.
        info: its parsed description.
    """

    def __init__(self, root: Path, info: DatasetInfo):
        self.root = Path(root)
        self.info = info
        self._entries = {c.id: c for c in info.cases}

    def __len__(self) -> int:
        return len(self._entries)

    def __repr__(self) -> str:
        return f"Dataset({self.info.name!r}, {len(self)} cases, {self.info.dims}D, classes={self.info.class_names})"

    @property
    def case_ids(self) -> list[str]:
        return list(self._entries)

    @property
    def patients(self) -> dict[str, str]:
        """case id → patient id."""
        return {cid: e.patient for cid, e in self._entries.items()}

    @property
    def labelled_patients(self) -> dict[str, str]:
        """case id → patient id of the labelled cases: what splits are made of."""
        return {cid: e.patient for cid, e in self._entries.items() if e.labelled}

    def case_path(self, case_id: str) -> Path:
        return self.root / self._entries[case_id].file

    def load_case(self, case_id: str, validate: bool = True) -> Case:
        if case_id not in self._entries:
            raise DatasetError(f"no case {case_id!r}", where=self.root / DATASET_FILE, fix="check the case id (see `medseg inspect`)")
        path = self.case_path(case_id)
        case = read_case(path)
        if validate:
            validate_case(case, self.info, path)
        return case

    def load_label(self, case_id: str) -> np.ndarray | None:
        """A case's label alone (the image is not read), unchecked; None for an unlabelled case."""
        try:
            with np.load(self.case_path(case_id), allow_pickle=False) as z:
                return z["label"] if "label" in z.files else None
        except (OSError, ValueError) as e:
            raise DatasetError(f"case file is unreadable ({e})", where=self.case_path(case_id), fix="re-import the data set") from None

    def __iter__(self) -> Iterator[Case]:
        for cid in self._entries:
            yield self.load_case(cid)

    @property
    def splits_path(self) -> Path:
        return self.root / SPLITS_FILE


def load_dataset(root: str | Path) -> Dataset:
    """Open a data set folder, checking ``dataset.json`` and that every case file exists."""
    root = Path(root)
    meta_path = root / DATASET_FILE
    if not root.is_dir():
        raise DatasetError("data set folder does not exist", where=root, fix="create it with `medseg import` or use a built-in (`medseg datasets`)")
    if not meta_path.is_file():
        raise DatasetError(
            "no dataset.json in this folder",
            where=root,
            fix="point to a folder written by `medseg import`, or run `medseg import FORMAT PATH --out DATASET` first",
        )
    try:
        raw = json.loads(meta_path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise DatasetError(f"invalid JSON ({e.msg} at line {e.lineno})", where=meta_path, fix="repair or regenerate the file") from None
    try:
        info = DatasetInfo.model_validate(raw)
    except ValidationError as e:
        err = e.errors()[0]
        field = ".".join(str(p) for p in err["loc"])
        raise DatasetError(f"field '{field}': {err['msg']}", where=meta_path, fix="correct the field") from None
    seen: set[str] = set()
    for entry in info.cases:
        if entry.id in seen:
            raise DatasetError(f"duplicate case id {entry.id!r}", where=meta_path, fix="give every case a unique id")
        seen.add(entry.id)
        if not (root / entry.file).is_file():
            raise DatasetError(
                f"case {entry.id!r} is listed but its file is missing",
                where=root / entry.file,
                fix="restore the file or re-import the data set",
            )
    return Dataset(root, info)


def write_dataset(
    root: str | Path,
    info: DatasetInfo,
    cases: Iterable[Case],
    *,
    splits: dict[str, Any] | None = None,
    overwrite: bool = False,
    compress: bool = False,
) -> Dataset:
    """Write a data set folder atomically: built in a temporary folder, renamed when complete.

    Args:
        root: the destination folder; refused if it exists unless ``overwrite``.
        info: description; its ``cases`` list is filled in from ``cases``.
        cases: the cases, consumed one at a time (a generator keeps memory flat).
        splits: an optional split dictionary to validate and save as ``splits.json``.
        overwrite: replace an existing folder.
        compress: deflate the case files (smaller, several times slower to write and read).
    """
    from medseg.data.splits import save_splits, validate_splits

    root = Path(root)
    if root.exists() and not overwrite:
        raise DatasetError("output folder already exists", where=root, fix="choose another --out or pass --overwrite")
    entries: list[CaseEntry] = []
    seen: set[str] = set()
    with atomic_dir(root, overwrite=overwrite) as tmp:
        (tmp / CASES_DIR).mkdir()
        for case in cases:
            if case.case_id in seen:
                raise DatasetError(f"duplicate case id {case.case_id!r}", where=case.meta.get("source", root), fix="give every case a unique id")
            seen.add(case.case_id)
            rel = f"{CASES_DIR}/{_safe_name(case.case_id)}.npz"
            validate_case(case, info, case.meta.get("source", case.case_id))
            save_case(tmp / rel, case, compress)
            entries.append(CaseEntry(id=case.case_id, patient=case.patient_id, file=rel, shape=list(case.spatial_shape), labelled=case.label is not None))
        if not entries:
            raise DatasetError("no cases to write", where=root, fix="check the input path and format")
        info = info.model_copy(update={"cases": entries})
        write_json(tmp / DATASET_FILE, info.model_dump(mode="json"))
        if splits is not None:
            validate_splits(splits, {e.id: e.patient for e in entries}, where=root / SPLITS_FILE)
            save_splits(tmp / SPLITS_FILE, splits)
    return load_dataset(root)


def _safe_name(case_id: str) -> str:
    keep = "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in case_id)
    return keep or "case"
