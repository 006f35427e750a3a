"""The Sunnybrook challenge release as downloaded: ``challenge_*`` image folders beside the contour archives.

Layout (MICCAI 2009 LV Segmentation Challenge; Radau et al. 2009)::

    path/
      challenge_training/SC-HF-I-1/IM-0004-0048.dcm …            one folder per case, several series
      Sunnybrook Cardiac MR Database ContoursPart3/TrainingDataContours/SC-HF-I-01/
          contours-manual/IRCCI-expert/IM-0001-0048-icontour-manual.txt
      (challenge_validation + ContoursPart2/ValidationDataContours,
       challenge_online + ContoursPart1/OnlineDataContours likewise)

A contour file always says ``IM-0001``, but its image is instance ``NNNN`` of the case's short-axis
cine series, which the file names do not give: the case folders also hold other series (long axis,
static) with the same instance numbers. The case → series table below is the one the community
uses (the Kaggle Data Science Bowl LV tutorial's ``SAX_series.txt``; the NVIDIA DIGITS Sunnybrook
plug-in for the 15 training cases). A case missing from it is refused unless ``--option sax=CASE=SERIES``
names its series; a contour whose short-axis image is absent is refused.
"""

from __future__ import annotations

import re
from pathlib import Path

from medseg.data.formats.registry import FormatError

#: image folder → contour sub-folder, per part of the release
PARTS = {
    "challenge_training": "TrainingDataContours",
    "challenge_validation": "ValidationDataContours",
    "challenge_online": "OnlineDataContours",
}

# case → short-axis cine series number (public table, 45 cases: training, online, validation)
SAX_SERIES: dict[str, str] = {
    # training (ContoursPart3)
    "SC-HF-I-1": "0004", "SC-HF-I-2": "0106", "SC-HF-I-4": "0116", "SC-HF-I-40": "0134",
    "SC-HF-NI-3": "0379", "SC-HF-NI-4": "0501", "SC-HF-NI-34": "0446", "SC-HF-NI-36": "0474",
    "SC-HYP-1": "0550", "SC-HYP-3": "0650", "SC-HYP-38": "0734", "SC-HYP-40": "0755",
    "SC-N-2": "0898", "SC-N-3": "0915", "SC-N-40": "0944",
    # online (ContoursPart1)
    "SC-HF-I-9": "0241", "SC-HF-I-10": "0024", "SC-HF-I-11": "0043", "SC-HF-I-12": "0062",
    "SC-HF-NI-12": "0286", "SC-HF-NI-13": "0304", "SC-HF-NI-14": "0331", "SC-HF-NI-15": "0359",
    "SC-HYP-9": "0003", "SC-HYP-10": "0579", "SC-HYP-11": "0601", "SC-HYP-12": "0629",
    "SC-N-9": "1031", "SC-N-10": "0851", "SC-N-11": "0878",
    # validation (ContoursPart2)
    "SC-HF-I-5": "0156", "SC-HF-I-6": "0180", "SC-HF-I-7": "0209", "SC-HF-I-8": "0226",
    "SC-HF-NI-7": "0523", "SC-HF-NI-11": "0270", "SC-HF-NI-31": "0401", "SC-HF-NI-33": "0424",
    "SC-HYP-6": "0767", "SC-HYP-7": "0007", "SC-HYP-8": "0796", "SC-HYP-37": "0702",
    "SC-N-5": "0963", "SC-N-6": "0984", "SC-N-7": "1009",
}  # fmt: skip

#: (images, contours, patients) keyed by (case key, image stem)
Pairing = tuple[dict[tuple[str, str], Path], dict[tuple[str, str], dict[str, Path]], dict[tuple[str, str], str]]

CONTOUR_RE = re.compile(r"^IM-\d{4}-(?P<number>\d{4})-(?P<kind>[io])contour-(?:manual|auto)\.txt$")


def case_key(folder: str) -> str:
    """``SC-HF-I-01`` and ``SC-HF-I-1`` name one case: drop leading zeros, ignore case."""
    return re.sub(r"(?<!\d)0+(\d)", r"\1", folder).lower()


def _dirs(path: Path, depth: int = 3) -> list[Path]:
    out, level = [], [path]
    for _ in range(depth):
        level = [c for d in level for c in sorted(d.iterdir()) if c.is_dir()]
        out += level
    return out


def find_parts(path: Path) -> list[tuple[Path, Path]]:
    """``(image folder, contour folder)`` of every part of the release found under ``path`` (up to 3 levels)."""
    found = [path, *_dirs(path)]
    images = {d.name: d for d in found if d.name in PARTS}
    contours = {d.name: d for d in found if d.name in PARTS.values()}
    return [(images[i], contours[c]) for i, c in PARTS.items() if i in images and c in contours]


def parse_sax(value: str | dict[str, str] | None) -> dict[str, str]:
    """The table, with ``CASE=SERIES[,CASE=SERIES]`` entries given on the command line on top."""
    table = {case_key(k): v for k, v in SAX_SERIES.items()}
    if isinstance(value, dict):
        items = [f"{k}={v}" for k, v in value.items()]
    else:
        items = [v for v in (value or "").split(",") if v.strip()]
    for item in items:
        case, _, series = item.partition("=")
        if not series.strip().isdigit():
            raise FormatError(f"bad short-axis entry {item!r}", where="--option sax", fix="write CASE=SERIES, e.g. sax=SC-HF-I-1=0004")
        table[case_key(case.strip())] = f"{int(series):04d}"
    return table


def pair_challenge(path: Path, sax: str | dict[str, str] | None = None) -> Pairing:
    """Pair every contour file of the release with its short-axis image.

    Returns ``(images, contours, patients)`` keyed by ``(case key, image stem)``: the DICOM file,
    ``{"i"|"o": contour file}`` and the case folder name.
    """
    parts = find_parts(path)
    if not parts:
        raise FormatError(
            "no challenge_training/ (or _validation/_online) folder beside its contour folder (TrainingDataContours …)",
            where=path,
            fix="unpack the challenge images and the contour archive into this folder",
        )
    table = parse_sax(sax)
    images: dict[tuple[str, str], Path] = {}
    contours: dict[tuple[str, str], dict[str, Path]] = {}
    patients: dict[tuple[str, str], str] = {}
    for image_dir, contour_dir in parts:
        cases = {case_key(d.name): d for d in image_dir.iterdir() if d.is_dir()}
        for folder in sorted(d for d in contour_dir.iterdir() if d.is_dir()):
            key = case_key(folder.name)
            files = [(p, CONTOUR_RE.match(p.name)) for p in sorted(folder.rglob("*.txt"))]
            files = [(p, m) for p, m in files if m]
            if not files:
                continue
            if key not in cases:
                raise FormatError(f"contours of case {folder.name!r} but no image folder for it", where=folder, fix=f"unpack that case into {image_dir}")
            series = table.get(key)
            if series is None:
                raise FormatError(
                    f"the short-axis series of case {folder.name!r} is unknown",
                    where=cases[key],
                    fix=f"name it with --option sax={cases[key].name}=NNNN (the series of its IM-NNNN-*.dcm short-axis cine files)",
                )
            for p, m in files:
                dcm = cases[key] / f"IM-{series}-{m['number']}.dcm"
                if not dcm.is_file():
                    raise FormatError(
                        f"contour has no short-axis image {dcm.name} (series {series}) in {cases[key].name}",
                        where=p,
                        fix="check the download of that case, or give its series with --option sax=CASE=NNNN",
                    )
                k = (key, dcm.stem)
                images[k] = dcm
                contours.setdefault(k, {})[m["kind"]] = p
                patients[k] = cases[key].name
    if not contours:
        raise FormatError("no contour files (IM-0001-NNNN-icontour-manual.txt …)", where=path, fix="unpack the contour archive here")
    return images, contours, patients
