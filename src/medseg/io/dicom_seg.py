"""DICOM-SEG with highdicom: masks written as a segmentation that references its source series, and read back."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from medseg.core.atomic import atomic_path
from medseg.core.errors import DependencyError, FormatError

FIX = "pip install highdicom (or pip install 'medseg[dicom]')"


def _highdicom() -> Any:
    try:
        import highdicom as hd
    except ImportError:
        raise DependencyError("DICOM-SEG needs highdicom", where="highdicom", fix=FIX) from None
    return hd


def write_seg(mask: np.ndarray, headers: Sequence[Any], path: str | Path, class_names: Sequence[str], *, multi_label: bool = False) -> Path:
    """Write a binary DICOM-SEG, one segment per class present, referencing ``headers`` (the source slices).

    Args:
        mask: ``(D, H, W)`` class indices on the series grid (slice order of ``headers``), or
            ``(K, D, H, W)`` booleans with ``multi_label``.
        headers: the source slices' pydicom headers, in array order (pixel data not needed).
        path: the ``.dcm`` file to write (atomically).
        class_names: the class names (index 0 is the background for class-index masks).
        multi_label: ``mask`` holds one boolean channel per class.
    """
    hd = _highdicom()
    from pydicom.sr.codedict import codes

    if multi_label:
        arr = np.moveaxis(mask.astype(bool), 0, -1)  # (D, H, W, K)
        names = list(class_names)
    else:
        present = [k for k in range(1, max(len(class_names), int(mask.max(initial=0)) + 1)) if (mask == k).any()] or [1]
        arr = np.stack([mask == k for k in present], -1)
        names = [class_names[k] if k < len(class_names) else f"class_{k}" for k in present]
    if arr.shape[0] != len(headers):
        raise FormatError(f"the mask has {arr.shape[0]} slices, the series {len(headers)}", where=path, fix="predict on the series grid")
    descriptions = [
        hd.seg.SegmentDescription(
            segment_number=i + 1,
            segment_label=name,
            segmented_property_category=codes.SCT.Tissue,
            segmented_property_type=codes.SCT.Tissue,
            algorithm_type=hd.seg.SegmentAlgorithmTypeValues.AUTOMATIC,
            algorithm_identification=hd.AlgorithmIdentificationSequence(name="medseg", version="1", family=codes.DCM.ArtificialIntelligence),
        )
        for i, name in enumerate(names)
    ]
    seg = hd.seg.Segmentation(
        source_images=list(headers),
        pixel_array=arr.astype(np.uint8),
        segmentation_type=hd.seg.SegmentationTypeValues.BINARY,
        segment_descriptions=descriptions,
        series_instance_uid=hd.UID(),
        series_number=900,
        sop_instance_uid=hd.UID(),
        instance_number=1,
        manufacturer="medseg",
        manufacturer_model_name="medseg",
        software_versions="1",
        device_serial_number="0",
        omit_empty_frames=False,
    )
    with atomic_path(path) as tmp:
        seg.save_as(tmp)
    return Path(path)


def read_seg(path: str | Path, sop_uids: Sequence[str], shape: tuple[int, int, int], classes: dict[str, int]) -> np.ndarray:
    """A DICOM-SEG's segments as a class-index volume on a series grid.

    Args:
        path: the SEG file.
        sop_uids: the series' SOPInstanceUIDs in array (slice) order.
        shape: the series' ``(slices, rows, columns)``.
        classes: lower-case segment label → class index (segments not listed are skipped).
    """
    hd = _highdicom()
    try:
        seg = hd.seg.segread(str(path))
    except Exception as e:
        raise FormatError(
            f"cannot read DICOM-SEG ({type(e).__name__}: {str(e).splitlines()[0][:120] if str(e) else ''})", where=path, fix="re-export it"
        ) from None
    label = np.zeros(shape, dtype=np.int16)
    referenced = {str(uid) for _, _, uid in seg.get_source_image_uids()}
    order = list(sop_uids)
    present = [u for u in order if u in referenced]
    if not present:
        raise FormatError("DICOM-SEG references no slice of the series", where=path, fix="the SEG must be drawn on this series")
    for number in seg.get_segment_numbers():
        name = str(seg.get_segment_description(number).segment_label).lower()
        if name not in classes:
            continue
        px = seg.get_pixels_by_source_instance(source_sop_instance_uids=present, segment_numbers=[number], combine_segments=True, skip_overlap_checks=True)
        for z_src, uid in enumerate(present):
            label[order.index(uid)][px[z_src] > 0] = classes[name]
    return label
