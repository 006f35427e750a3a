"""Medical Segmentation Decathlon / nnU-Net raw layout.

Layout::

    Task04_Hippocampus/               (or Dataset004_Hippocampus/ for nnU-Net v2)
      dataset.json                    labels + modality (MSD) or channel_names + file_ending (nnU-Net v2)
      imagesTr/hippo_001_0000.nii.gz  one file per channel (_0000, _0001, …), or one 4D file (MSD)
      labelsTr/hippo_001.nii.gz
      imagesTs/                       unlabelled test cases (not imported)

MSD ``labels`` map ``"0": "background"``; nnU-Net v2 maps ``"background": 0``. Both are read.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

from medseg.data.formats.common import parse_names, volume_stem, volume_suffix
from medseg.data.formats.nifti import check_channels, group_channels, n_channels_of, volume_dataset
from medseg.data.formats.registry import FORMATS, FormatError, Imported
from medseg.data.labelset import LabelSet, parse_labels

#: the endings nnU-Net v2 reads (``file_ending`` in dataset.json)
NNUNET_ENDINGS = (".png", ".bmp", ".tif", ".tiff", ".nii", ".nii.gz", ".nrrd", ".mha", ".gipl")

_NUMBER = re.compile(r"[0-9]{1,9}")
_LABELS_FIX = 'e.g. {"0": "background", "1": "liver"} (MSD) or {"background": 0, "liver": 1} (nnU-Net v2)'


def _label_value(v: object) -> int | None:
    if isinstance(v, int) and not isinstance(v, bool):
        return v if 0 <= v < 10**9 else None
    return int(v) if isinstance(v, str) and _NUMBER.fullmatch(v) else None


def _labels(meta: dict, where: Path) -> LabelSet:
    """Classes (or nnU-Net regions) from MSD ``{"0": "background"}`` or nnU-Net v2 ``{"background": 0}``."""
    raw = meta["labels"]
    if not isinstance(raw, dict) or not raw:
        raise FormatError(f"'labels' must be a non-empty mapping, not {_kind(raw)}", where=where, fix=_LABELS_FIX)
    if all(_label_value(k) is not None for k in raw):  # MSD: "0": "background"
        pairs: dict[str, int] = {}
        seen: dict[int, str] = {}
        for k, v in raw.items():
            value = _label_value(k)
            if value is None or not isinstance(v, str) or not v.strip():
                raise FormatError(f"'labels' entry {k!r}: {v!r} does not map a label value to a name", where=where, fix=_LABELS_FIX)
            if value in seen:
                raise FormatError(f"'labels' gives value {value} twice ({seen[value]!r} and {v!r})", where=where, fix="give each label value once")
            seen[value] = v
            pairs[v] = value
        raw = pairs
    labels = parse_labels(raw, meta.get("regions_class_order"), where=where)
    values = sorted(labels.names)
    if not labels.regions and values != list(range(len(values))):
        shown = values[:12]
        raise FormatError(f"'labels' values {shown}{'…' if len(values) > 12 else ''} are not 0…K-1", where=where, fix="number classes consecutively from 0")
    return labels


def _modalities(raw: object, where: Path) -> list[str]:
    """Channel names in channel order from ``{"0": "CT", "1": "PET"}``."""
    fix = 'e.g. {"0": "MRI"} or {"0": "T1", "1": "T2"}'
    if not isinstance(raw, dict) or not raw:
        raise FormatError(f"'modality' (or 'channel_names') must be a non-empty mapping, not {_kind(raw)}", where=where, fix=fix)
    chans: dict[int, str] = {}
    for k, v in raw.items():
        c = _label_value(k)
        if c is None or not isinstance(v, str) or not v.strip():
            raise FormatError(f"'modality' entry {k!r}: {v!r} does not map a channel number to a name", where=where, fix=fix)
        if c in chans:
            raise FormatError(f"'modality' gives channel {c} twice", where=where, fix="give each channel once")
        chans[c] = v
    if sorted(chans) != list(range(len(chans))):
        raise FormatError(f"'modality' channels {sorted(chans)[:12]} are not 0…C-1", where=where, fix="number channels consecutively from 0")
    return [chans[i] for i in range(len(chans))]


def _kind(v: object) -> str:
    return {dict: "an empty mapping", list: "a list", str: "a string", bool: "true/false", type(None): "null"}.get(type(v), "a number")


def read_meta(meta_path: Path) -> dict:
    """``dataset.json`` as a mapping; unreadable, invalid or too deeply nested JSON raises ``FormatError``."""
    try:
        text = meta_path.read_bytes().decode("utf-8-sig")
    except UnicodeDecodeError as e:
        raise FormatError(f"not UTF-8 text (byte {e.start})", where=meta_path, fix="save dataset.json as UTF-8") from None
    except OSError as e:
        raise FormatError(f"cannot read the file ({e.strerror or e})", where=meta_path, fix="check the file") from None
    try:
        meta = json.loads(text)
    except json.JSONDecodeError as e:
        raise FormatError(f"invalid JSON ({e.msg} at line {e.lineno})", where=meta_path, fix="repair the file") from None
    except RecursionError:
        raise FormatError("JSON nested too deeply", where=meta_path, fix="repair the file") from None
    except ValueError as e:  # e.g. an integer of more than 4300 digits
        raise FormatError(f"invalid JSON ({str(e).splitlines()[0][:80]})", where=meta_path, fix="repair the file") from None
    if not isinstance(meta, dict):
        raise FormatError(f"dataset.json holds {_kind(meta)}, not a JSON object", where=meta_path, fix="see the MSD / nnU-Net dataset.json layout")
    return meta


def _relative(value: object, key: str, i: int, where: Path) -> str:
    if not isinstance(value, str) or not value.strip() or "\x00" in value:
        raise FormatError(f"training[{i}].{key} must be a file path (a string), not {value!r}"[:200], where=where, fix='e.g. "./imagesTr/x.nii.gz"')
    return value


@FORMATS.register("msd", help="Medical Segmentation Decathlon / nnU-Net raw folder (dataset.json, imagesTr/, labelsTr/)")
def read_msd(path: Path, modalities: str | list[str] | None = None, name: str = "") -> Imported:
    """Read an MSD or nnU-Net raw data set folder.

    Args:
        path: the task folder holding ``dataset.json``.
        modalities: channel names overriding ``dataset.json``.
        name: data set name (default: ``name`` in ``dataset.json`` or the folder's name).
    """
    path = Path(path)
    meta_path = path / "dataset.json"
    if not meta_path.is_file():
        raise FormatError("no dataset.json", where=path, fix="give the task folder (e.g. Task04_Hippocampus)")
    meta = read_meta(meta_path)
    missing = [k for k in ("labels",) if k not in meta]
    if "modality" not in meta and "channel_names" not in meta:
        missing.append("modality (or channel_names)")
    if missing:
        raise FormatError(f"dataset.json lacks key(s) {', '.join(missing)}", where=meta_path, fix="add them as in the MSD / nnU-Net dataset.json")
    label_set = _labels(meta, meta_path)
    names = [label_set.names[v] for v in sorted(label_set.names)]
    mods = _modalities(meta.get("channel_names", meta.get("modality")), meta_path)
    img_dir, lab_dir = path / "imagesTr", path / "labelsTr"
    if not img_dir.is_dir():
        raise FormatError("no imagesTr/ folder", where=path, fix="give the task folder")
    ending = meta.get("file_ending", ".nii.gz")
    if not isinstance(ending, str) or ending.lower() not in NNUNET_ENDINGS:
        raise FormatError(f"file_ending {ending!r} is not one nnU-Net reads", where=meta_path, fix=f"use one of {' '.join(NNUNET_ENDINGS)}")
    ending = ending.lower()

    def ours(p: Path) -> bool:
        return p.is_file() and p.name.lower().endswith(ending) and not p.name.startswith("._")

    groups: dict[str, list[Path]] = {}
    labels: dict[str, Path] = {}
    if isinstance(meta.get("training"), list) and meta["training"]:
        for i, entry in enumerate(meta["training"]):
            if not isinstance(entry, dict) or "image" not in entry:
                raise FormatError(
                    f"training[{i}] has no 'image'", where=meta_path, fix='entries look like {"image": "./imagesTr/x.nii.gz", "label": "./labelsTr/x.nii.gz"}'
                )
            img = (path / _relative(entry["image"], "image", i, meta_path)).resolve()
            cid = volume_stem(img)
            if img.is_file():  # MSD: one (possibly 4D) file per case
                groups[cid] = [img]
            else:  # nnU-Net: one file per channel
                files = [img_dir / f"{cid}_{c:04d}{volume_suffix(img) or ending}" for c in range(len(mods))]
                absent = [f for f in files if not f.is_file()]
                if absent:
                    raise FormatError(f"channel file missing for case {cid!r}", where=absent[0], fix=f"give all {len(mods)} channel files {cid}_0000…")
                groups[cid] = files
            if entry.get("label") not in (None, ""):
                labels[cid] = (path / _relative(entry["label"], "label", i, meta_path)).resolve()
    else:
        groups = group_channels([p for p in sorted(img_dir.iterdir()) if ours(p)])
        for cid, files in groups.items():
            if len(files) != len(mods):
                raise FormatError(
                    f"channel file missing for case {cid!r}: {len(files)} of {len(mods)}",
                    where=img_dir / f"{cid}_{len(files):04d}{ending}",
                    fix=f"give all {len(mods)} channel files",
                )
        if lab_dir.is_dir():
            labels = {volume_stem(p): p for p in sorted(lab_dir.iterdir()) if ours(p)}
    if not groups:
        raise FormatError("no training cases", where=img_dir, fix="check imagesTr/ and dataset.json")
    ts_dir = path / "imagesTs"
    if ts_dir.is_dir():  # unlabelled test images: imported, kept out of the splits, predicted with `medseg predict`
        for cid, files in group_channels([p for p in sorted(ts_dir.iterdir()) if ours(p)]).items():
            if cid in groups:
                raise FormatError(f"case {cid!r} is in both imagesTr/ and imagesTs/", where=ts_dir, fix="rename one of them")
            groups[cid] = files
    check_channels(groups, img_dir)
    n_chan = len(next(iter(groups.values())))
    if n_chan == 1:
        n_chan = n_channels_of(next(iter(groups.values()))[0])
    if n_chan != len(mods):
        raise FormatError(
            f"dataset.json lists {len(mods)} modalities but cases have {n_chan} channel(s)", where=meta_path, fix="make 'modality' match the images"
        )
    return volume_dataset(
        path,
        groups,
        labels,
        n_chan,
        classes=None,
        modalities=parse_names(modalities) or mods,
        name=name or (meta["name"] if isinstance(meta.get("name"), str) and meta["name"].strip() else path.name),
        fmt="msd",
        what="an MSD / nnU-Net raw folder",
        class_names=names,
        label_set=label_set,
        where=meta_path,
    )
