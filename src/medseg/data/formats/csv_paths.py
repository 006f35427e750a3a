"""A CSV listing image and label volume paths, one case per row.

Layout::

    cases.csv
      image,label,patient,case                  (label, patient and case are optional)
      scans/a_t1.nii.gz;scans/a_t2.nii.gz,masks/a.nii.gz,P01,a
      scans/b_t1.nii.gz;scans/b_t2.nii.gz,masks/b.nii.gz,P01,b

Several channels are separated by ``;`` (or given as columns ``image_0000``, ``image_0001``, …).
Relative paths are resolved against the CSV's folder.
"""

from __future__ import annotations

import csv
from pathlib import Path

from medseg.data.formats.common import volume_stem
from medseg.data.formats.nifti import n_channels_of, volume_dataset
from medseg.data.formats.registry import FORMATS, FormatError, Imported


@FORMATS.register("csv", help="a CSV of image/label volume paths (columns image[;image2],label[,patient][,case])")
def read_csv_paths(
    path: Path,
    classes: str | list[str] | None = None,
    modalities: str | list[str] | None = None,
    name: str = "",
) -> Imported:
    """Read a CSV of volume paths.

    Args:
        path: the CSV file.
        classes: class names, background first (default: background, class_1, … up to the largest label).
        modalities: channel names (default ``image`` / ``channel_i``).
        name: data set name (default: the CSV's stem).
    """
    path = Path(path)
    if not path.is_file():
        raise FormatError("expected a CSV file", where=path, fix="give the CSV listing image,label paths")
    base = path.parent
    groups: dict[str, list[Path]] = {}
    labels: dict[str, Path] = {}
    patients: dict[str, str] = {}
    with open(path, newline="", encoding="utf-8-sig") as fh:
        reader = csv.DictReader(fh)
        cols = [c.strip() for c in reader.fieldnames or []]
        img_cols = ["image"] if "image" in cols else sorted(c for c in cols if c.startswith("image_"))
        if not img_cols:
            raise FormatError(f"no 'image' column (columns: {', '.join(cols) or 'none'})", where=path, fix="name the columns image,label[,patient][,case]")
        for lineno, row in enumerate(reader, start=2):
            row = {(k or "").strip(): (v or "").strip() for k, v in row.items()}
            files = [base / p.strip() for c in img_cols for p in row[c].split(";") if p.strip()]
            if not files:
                raise FormatError("row has no image path", where=f"{path}:{lineno}", fix="fill the image column")
            cid = row.get("case") or volume_stem(files[0]).removesuffix("_0000")
            if cid in groups:
                raise FormatError(f"case {cid!r} listed twice", where=f"{path}:{lineno}", fix="give a 'case' column with unique ids")
            for f in files:
                if not f.is_file():
                    raise FormatError("image file not found", where=f"{path}:{lineno}: {f}", fix="fix the path (relative paths start at the CSV's folder)")
            groups[cid] = files
            if row.get("label"):
                labels[cid] = base / row["label"]
                if not labels[cid].is_file():
                    raise FormatError("label file not found", where=f"{path}:{lineno}: {labels[cid]}", fix="fix the path")
            if row.get("patient"):
                patients[cid] = row["patient"]
    if not groups:
        raise FormatError("CSV lists no cases", where=path, fix="add rows")
    n_files = {len(v) for v in groups.values()}
    if len(n_files) > 1:
        raise FormatError("rows list different numbers of channel files", where=path, fix="give every case the same channels")
    n = n_files.pop()
    n_chan = n if n > 1 else n_channels_of(next(iter(groups.values()))[0])
    return volume_dataset(
        path, groups, labels, n_chan, classes, modalities=modalities, name=name or path.stem, fmt="csv", what=f"{path.name}", patients=patients
    )
