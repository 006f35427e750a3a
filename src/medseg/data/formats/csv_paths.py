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


def _is_file(p: Path) -> bool:
    try:
        return p.is_file()
    except (OSError, ValueError):  # a name too long for the file system, a NUL byte
        return False


def _read_rows(path: Path) -> list[tuple[int, list[str]]]:
    """``(line number, fields)`` of every record (the header first); raises ``csv.Error`` / ``UnicodeDecodeError``."""
    with open(path, newline="", encoding="utf-8-sig") as fh:
        reader = csv.reader(fh)
        out = []
        line = 1
        for fields in reader:
            out.append((line, fields))
            line = reader.line_num + 1
        return out


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
    try:
        rows = _read_rows(path)
    except UnicodeDecodeError as e:
        raise FormatError(f"not UTF-8 text (byte {e.start})", where=path, fix="save the CSV as UTF-8") from None
    except csv.Error as e:
        raise FormatError(f"not a readable CSV ({str(e)[:80]})", where=path, fix="one case per line, fields of at most 131,072 characters") from None
    except OSError as e:
        raise FormatError(f"cannot read the file ({e.strerror or e})", where=path, fix="check the file") from None
    cols = [c.strip() for c in rows[0][1]] if rows else []
    img_cols = ["image"] if "image" in cols else sorted(c for c in cols if c.startswith("image_"))
    if not img_cols:
        shown = ", ".join(c[:40] for c in cols[:10]) or "none"
        raise FormatError(f"no 'image' column (columns: {shown})", where=path, fix="name the columns image,label[,patient][,case]")
    for lineno, fields in rows[1:]:
        if not any(f.strip() for f in fields):
            continue
        if len(fields) > len(cols):
            raise FormatError(
                f"row has {len(fields)} fields but the header names {len(cols)} columns",
                where=f"{path}:{lineno}",
                fix="quote fields holding commas, or add the missing column names",
            )
        row = dict.fromkeys(cols, "") | {c: f.strip() for c, f in zip(cols, fields, strict=False)}
        files = [base / p.strip() for c in img_cols for p in row[c].split(";") if p.strip()]
        if not files:
            raise FormatError("row has no image path", where=f"{path}:{lineno}", fix="fill the image column")
        cid = row.get("case") or volume_stem(files[0]).removesuffix("_0000")
        if cid in groups:
            raise FormatError(f"case {cid[:80]!r} listed twice", where=f"{path}:{lineno}", fix="give a 'case' column with unique ids")
        for f in files:
            if not _is_file(f):
                raise FormatError(
                    "image file not found", where=f"{path}:{lineno}: {str(f)[:200]}", fix="fix the path (relative paths start at the CSV's folder)"
                )
        groups[cid] = files
        if row.get("label"):
            labels[cid] = base / row["label"]
            if not _is_file(labels[cid]):
                raise FormatError("label file not found", where=f"{path}:{lineno}: {str(labels[cid])[:200]}", fix="fix the path")
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
