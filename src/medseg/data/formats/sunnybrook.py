"""Sunnybrook cardiac MRI: DICOM images per patient + expert contours as text files.

Layouts: the challenge download as unpacked (``challenge_training/`` beside the contour archive,
see :mod:`medseg.data.formats.sunnybrook_challenge`), or::

    path/
      images/SC-HF-I-01/IM-0001-0048.dcm …
      contours/SC-HF-I-01/contours-manual/IRCCI-expert/IM-0001-0048-icontour-manual.txt
                                                        IM-0001-0048-ocontour-manual.txt

Patient folders are matched ignoring zero padding (``SC-HF-I-01`` = ``SC-HF-I-1``). A contour
file holds one ``x y`` point per line (column, row in pixels) and is named after its
image. Every annotated image becomes one 2D case: the inner contour fills the LV blood pool (1), the
ring between outer and inner contours the myocardium (2). Papillary-muscle contours (``p1``/``p2``)
are ignored. The patient is the folder under ``contours/``.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from medseg.core.case import Case
from medseg.data.formats.common import fill_polygon
from medseg.data.formats.registry import FORMATS, FormatError, Imported
from medseg.data.formats.sunnybrook_challenge import Pairing, find_parts, pair_challenge, parse_sax
from medseg.data.store import DatasetInfo, make_classes
from medseg.io.dicom_input import read_slice

CONTOUR_RE = re.compile(r"^(?P<image>.+)-(?P<kind>[io])contour-(?:manual|auto)\.txt$")
CLASSES = ["background", "lv_blood_pool", "myocardium"]


def patient_key(folder: str) -> str:
    """Folder names of one patient differ between releases (``SC-HF-I-01`` vs ``SC-HF-I-1``): drop leading zeros."""
    return re.sub(r"(?<!\d)0+(\d)", r"\1", folder).lower()


def read_contour(path: Path) -> np.ndarray:
    """``(N, 2)`` float array of ``x y`` points; malformed lines raise ``FormatError`` naming the line."""
    pts = []
    for lineno, line in enumerate(path.read_text(encoding="utf-8", errors="replace").splitlines(), start=1):
        if not line.strip():
            continue
        parts = line.split()
        try:
            if len(parts) != 2:
                raise ValueError
            x, y = float(parts[0]), float(parts[1])
        except ValueError:
            raise FormatError(
                f"malformed coordinate line {line.strip()[:40]!r}", where=f"{path}:{lineno}", fix="each line must be 'x y' (two numbers)"
            ) from None
        if not (math.isfinite(x) and math.isfinite(y)):
            raise FormatError(
                f"coordinate line {line.strip()[:40]!r} holds NaN or infinity", where=f"{path}:{lineno}", fix="each line must be 'x y' (two finite numbers)"
            )
        pts.append((x, y))
    if len(pts) < 3:
        raise FormatError(f"contour has {len(pts)} points", where=path, fix="a closed contour needs at least 3 points")
    return np.asarray(pts, dtype=np.float64)


@FORMATS.register("sunnybrook", help="Sunnybrook cardiac MRI: the challenge download or images/ + contours/; --option task=lv for LV blood pool only")
def read_sunnybrook(
    path: Path, images_dir: str = "images", contours_dir: str = "contours", name: str = "", *, task: str = "lv_myo", sax: str | None = None
) -> Imported:
    """Read Sunnybrook images and expert contours.

    Args:
        path: the folder of the challenge download (``challenge_training`` + ``… ContoursPart3``), or one
            holding ``images_dir`` and ``contours_dir``.
        images_dir: sub-folder of DICOM files (any depth, one folder per patient).
        contours_dir: sub-folder of contour text files (any depth, one folder per patient).
        name: data set name (default: the folder's name).
        task: ``lv_myo`` (LV blood pool and myocardium, from i- and o-contours) or ``lv`` (LV blood pool
            vs background, i-contours only, as in the DIGITS tutorial).
        sax: challenge layout: ``CASE=SERIES,…`` short-axis series of cases missing from the built-in table.
    """
    path = Path(path)
    if task not in ("lv", "lv_myo"):
        raise FormatError(f"unknown task {task!r}", where="--option task", fix="use task=lv (blood pool only) or task=lv_myo")
    img_root, con_root = path / images_dir, path / contours_dir
    if img_root.is_dir() and con_root.is_dir():
        dicoms, annotated, names = _pair_by_name(img_root, con_root, sax)
    elif find_parts(path):
        dicoms, annotated, names = pair_challenge(path, sax)
    else:
        raise FormatError(
            f"neither the challenge layout (challenge_training/ + TrainingDataContours/) nor {images_dir}/ + {contours_dir}/",
            where=path,
            fix="point at the unpacked challenge download, or put DICOM images in images/ and contours in contours/",
        )
    kinds = ("i",) if task == "lv" else ("i", "o")
    annotated = {k: {kind: p for kind, p in v.items() if kind in kinds} for k, v in annotated.items()}
    annotated = {k: v for k, v in annotated.items() if v}
    info = DatasetInfo(
        name=name or path.name,
        description="Imported from Sunnybrook cardiac MRI (expert contours)",
        dims=2,
        modalities=["MRI"],
        classes=make_classes(CLASSES[:2] if task == "lv" else CLASSES),
        source={"format": "sunnybrook", "path": str(path), "task": task},
    )

    def cases() -> Iterator[Case]:
        for key, contours in sorted(annotated.items()):
            dcm = dicoms[key]
            patient, stem = names[key], key[1]
            arr, ps = read_slice(dcm)
            h, w = arr.shape
            label = np.zeros((h, w), dtype=np.int16)
            masks = {}
            for kind, cp in contours.items():
                pts = read_contour(cp)
                if pts[:, 0].min() < -0.5 or pts[:, 1].min() < -0.5 or pts[:, 0].max() > w - 0.5 or pts[:, 1].max() > h - 0.5:
                    raise FormatError(f"contour points lie outside the {w}×{h} image", where=cp, fix="the contour belongs to another image")
                masks[kind] = fill_polygon(label, pts[:, 1], pts[:, 0])
            if "o" in masks:
                label[masks["o"]] = 2
            if "i" in masks:
                label[masks["i"]] = 1
            yield Case.from_spacing(
                arr[None],
                label,
                spacing=(ps[0], ps[1]),
                case_id=f"{patient}_{stem}",
                patient_id=patient,
                meta={"source": str(dcm), "contours": sorted(str(c) for c in contours.values())},
            )

    return Imported(info=info, cases=cases())


def _pair_by_name(img_root: Path, con_root: Path, sax: str | None) -> Pairing:
    """``images/`` + ``contours/``: each contour names its image (``IM-0001-0048-icontour`` → ``IM-0001-0048.dcm``)."""
    table = parse_sax(sax)
    dicoms: dict[tuple[str, str], Path] = {}
    for p in img_root.rglob("*.dcm"):
        patient = p.relative_to(img_root).parts[0]
        dicoms[(patient_key(patient), p.stem)] = p
    annotated: dict[tuple[str, str], dict[str, Path]] = {}
    names: dict[tuple[str, str], str] = {}
    for p in sorted(con_root.rglob("*.txt")):
        m = CONTOUR_RE.match(p.name)
        if not m:
            continue
        patient = p.relative_to(con_root).parts[0]
        key = (patient_key(patient), m["image"])
        number = m["image"].rsplit("-", 1)[-1]
        same = sorted(k[1] for k in dicoms if k[0] == key[0] and re.fullmatch(rf"IM-\d{{4}}-{number}", k[1]))
        if len(same) > 1:  # the challenge's case folders: several series share the instance numbers
            series = table.get(key[0])
            if series is None or f"IM-{series}-{number}" not in same:
                raise FormatError(
                    f"{len(same)} images of patient {patient!r} have number {number} ({', '.join(same)}); the contour file name cannot tell which",
                    where=p,
                    fix=f"give the short-axis series with --option sax={patient}=NNNN, or point at the unpacked challenge download",
                )
            key = (key[0], f"IM-{series}-{number}")
        if key not in dicoms:
            raise FormatError(
                f"contour names image {m['image']!r}, which does not exist for patient {patient!r}",
                where=p,
                fix=f"put {m['image']}.dcm under {img_root / patient}",
            )
        annotated.setdefault(key, {})[m["kind"]] = p
        names[key] = patient
    if not annotated:
        raise FormatError("no contour files (*-icontour-manual.txt / *-ocontour-manual.txt)", where=con_root, fix="check the folder")
    return dicoms, annotated, names
