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
from pathlib import Path

from medseg.data.formats.common import parse_names, volume_stem, volume_suffix
from medseg.data.formats.nifti import check_channels, group_channels, n_channels_of, volume_dataset
from medseg.data.formats.registry import FORMATS, FormatError, Imported
from medseg.data.labelset import LabelSet, parse_labels

#: the endings nnU-Net v2 reads (``file_ending`` in dataset.json)
NNUNET_ENDINGS = (".png", ".bmp", ".tif", ".tiff", ".nii", ".nii.gz", ".nrrd", ".mha", ".gipl")


def _labels(meta: dict, where: Path) -> LabelSet:
    raw = meta["labels"]
    if isinstance(raw, dict) and all(str(k).isdigit() for k in raw):  # MSD: "0": "background"
        try:
            raw = {str(v): int(k) for k, v in raw.items()}
        except (TypeError, ValueError):
            raise FormatError("'labels' must map label values to names", where=where, fix='e.g. {"0": "background", "1": "liver"}') from None
    labels = parse_labels(raw, meta.get("regions_class_order"), where=where)
    values = sorted(labels.names)
    if not labels.regions and values != list(range(len(values))):
        raise FormatError(f"'labels' values {values} are not 0…K-1", where=where, fix="number classes consecutively from 0")
    return labels


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
    try:
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise FormatError(f"invalid JSON ({e.msg} at line {e.lineno})", where=meta_path, fix="repair the file") from None
    missing = [k for k in ("labels",) if k not in meta]
    if "modality" not in meta and "channel_names" not in meta:
        missing.append("modality (or channel_names)")
    if missing:
        raise FormatError(f"dataset.json lacks key(s) {', '.join(missing)}", where=meta_path, fix="add them as in the MSD / nnU-Net dataset.json")
    label_set = _labels(meta, meta_path)
    names = [label_set.names[v] for v in sorted(label_set.names)]
    chan_raw = meta.get("channel_names", meta.get("modality"))
    try:
        mods = [str(chan_raw[k]) for k in sorted(chan_raw, key=int)]
    except (TypeError, ValueError, AttributeError):
        raise FormatError("'modality' must map channel numbers to names", where=meta_path, fix='e.g. {"0": "MRI"}') from None
    img_dir, lab_dir = path / "imagesTr", path / "labelsTr"
    if not img_dir.is_dir():
        raise FormatError("no imagesTr/ folder", where=path, fix="give the task folder")
    ending = str(meta.get("file_ending", ".nii.gz")).lower()
    if ending not in NNUNET_ENDINGS:
        raise FormatError(f"file_ending {ending!r} is not one nnU-Net reads", where=meta_path, fix=f"use one of {' '.join(NNUNET_ENDINGS)}")

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
            img = (path / entry["image"]).resolve()
            cid = volume_stem(img)
            if img.is_file():  # MSD: one (possibly 4D) file per case
                groups[cid] = [img]
            else:  # nnU-Net: one file per channel
                files = [img_dir / f"{cid}_{c:04d}{volume_suffix(img) or ending}" for c in range(len(mods))]
                absent = [f for f in files if not f.is_file()]
                if absent:
                    raise FormatError(f"channel file missing for case {cid!r}", where=absent[0], fix=f"give all {len(mods)} channel files {cid}_0000…")
                groups[cid] = files
            if entry.get("label"):
                labels[cid] = (path / entry["label"]).resolve()
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
        name=name or str(meta.get("name") or path.name),
        fmt="msd",
        what="an MSD / nnU-Net raw folder",
        class_names=names,
        label_set=label_set,
        where=meta_path,
    )
