"""``predict(runs, input, out)``: masks for new images, written like each input (its format, its exact grid)."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np

from medseg.core.atomic import atomic_dir, write_json
from medseg.core.case import Case
from medseg.core.errors import MedsegError, RunError
from medseg.core.progress import track
from medseg.data.labelset import paint_regions
from medseg.data.source import configured_info
from medseg.data.store import DatasetInfo
from medseg.engine.load import load_inferer
from medseg.io import Source, check_format, read_images, write_mask
from medseg.io.raster import write_overlay
from medseg.io.rle import rle_rows, write_rle_csv
from medseg.runs import read_info, read_run


def _dataset_cases(path: Path, split: str | None) -> Iterator[tuple[Case, Source]]:
    from medseg.data.splits import load_splits
    from medseg.data.store import load_dataset

    ds = load_dataset(path)
    ids = ds.case_ids
    if split:
        ids = load_splits(ds.splits_path, ds.patients).get(split, []) if ds.splits_path.is_file() else []
        if not ids:
            raise MedsegError(f"the data set has no {split} cases", where=ds.splits_path, fix="omit --split to predict every case")
    for cid in ids:
        case = ds.load_case(cid)
        yield case, Source("array", None, case.case_id, "", case.affine, case.spatial_shape, meta=case.meta)


def predict(
    runs: Sequence[str | Path],
    input: str | Path,
    out: str | Path,
    *,
    fmt: str | None = None,
    checkpoint: str = "best",
    tta: str | Sequence[int] = "auto",
    overlap: float = 0.5,
    probabilities: bool = False,
    overlays: bool = False,
    series: str | None = None,
    split: str | None = None,
    device: str = "auto",
    overwrite: bool = False,
    progress: bool = True,
    backend: str = "auto",
) -> Path:
    """Predict every image of ``input`` with one run (or an ensemble of runs) and write them to ``out``.

    Args:
        runs: run folders; several form an ensemble (mean of probabilities).
        input: a file, a folder of files, a DICOM folder/zip, or a data set folder.
        out: the output folder, written atomically (refused if it exists unless ``overwrite``).
        fmt: ``None`` writes each mask like its input (NIfTI → NIfTI with the input's header, NRRD/MHA →
            the same format and geometry, PNG/TIFF/BMP → the same, a DICOM series → DICOM-SEG, data set
            cases → NIfTI); or one of ``medseg.io.OUTPUT_FORMATS`` (``nifti``, ``nrrd``, ``png``,
            ``dicom-seg``, ``rle-csv`` …) for all.
        checkpoint: ``best`` or ``last``.
        tta: test-time mirroring: ``auto`` (the run's decision, :func:`~medseg.engine.load.load_inferer`), ``none``,
            ``all`` or a list of axes.
        overlap: sliding-window overlap.
        probabilities: also write ``<case>_probs.npz`` (float16 probabilities + affine).
        overlays: also write ``<case>_overlay.png``.
        series: DICOM SeriesInstanceUID when a folder holds several.
        split: with a data set folder, predict only this split.
        device: ``auto``, ``cpu``, ``cuda`` or ``mps``.
        overwrite: replace an existing output folder.
        progress: show a progress bar.
        backend: ``auto`` (ONNX Runtime when every run has a current export and the device is the CPU,
            else PyTorch), ``torch`` (eager) or ``onnx`` (ONNX Runtime on the CPU; exported on first use).

    Returns:
        The output folder (with ``predictions.json`` listing every case and file).
    """
    fmt = check_format(fmt)
    if not runs:
        raise RunError("no run given", where="RUN", fix="give a run folder written by `medseg train`")
    out = Path(out)
    if out.exists() and not overwrite:
        raise MedsegError("output folder already exists", where=out, fix="choose another --out or pass --overwrite")
    predictor = load_inferer(runs, checkpoint=checkpoint, device=device, backend=backend, tta=tta, overlap=overlap)
    info = read_info(runs[0])
    names = predictor.class_names
    from medseg.data.store import DATASET_FILE, load_dataset

    input = Path(input)
    is_dataset = (input / DATASET_FILE).is_file()
    trained = load_dataset(input).info if is_dataset else None
    if trained is None and info.get("dataset") and (Path(info["dataset"]) / DATASET_FILE).is_file():
        trained = load_dataset(info["dataset"]).info
    if trained is not None:  # as the run saw it: regions declared in its config are painted like imported ones
        trained = configured_info(trained, read_run(runs[0])[0])
    colors = [tuple(c.color) for c in trained.classes] if trained else None
    values = trained.mask_values if trained else None  # masks written as the data set stored them (e.g. 0/255)
    cases = _dataset_cases(input, split) if is_dataset else read_images(input, series=series)
    listing = []
    rle: list[tuple[str, str, np.ndarray]] = []
    with atomic_dir(out, overwrite=overwrite) as tmp:
        for case, source in track(cases, "predict", enabled=progress):
            label = predictor.predict(case)
            written, written_names = as_written(label, trained, names)
            entry = {"case": case.case_id, "source": case.meta.get("source"), "shape": list(case.spatial_shape), "spacing": list(case.spacing)}
            if fmt == "rle-csv":
                rle += list(rle_rows(case, written, written_names))
            else:
                if (tmp / source.file_name(fmt or source.format)).exists():
                    raise MedsegError(f"two inputs are named {source.name!r}", where=source.path, fix="rename one of them, or predict them separately")
                entry["file"] = write_mask(written, source, tmp, fmt=fmt, values=values, class_names=written_names).name
            if probabilities:
                p = tmp / f"{entry['file'].split('.')[0] if 'file' in entry else case.case_id}_probs.npz"
                with open(p, "wb") as fh:
                    np.savez_compressed(fh, probabilities=predictor.probabilities(case).astype(np.float16), affine=case.affine, classes=np.array(names))
                entry["probabilities"] = p.name
            if overlays and colors:
                entry["overlay"] = write_overlay(case.image[0], label, colors, tmp / f"{source.name}_overlay.png").name  # type: ignore[arg-type]
            listing.append(entry)
        if not listing:
            raise MedsegError("no images found to predict", where=input, fix="check the input path")
        if fmt == "rle-csv":
            write_rle_csv(tmp / "submission.csv", rle)
        listed = {"runs": [str(r) for r in runs], "format": fmt or "input", "classes": names, "tta": predictor.tta, "cases": listing}
        write_json(tmp / "predictions.json", listed)
    return out


def as_written(label: np.ndarray, info: DatasetInfo | None, names: list[str]) -> tuple[np.ndarray, list[str]]:
    """What a mask file holds: region channels painted into a label map in ``regions_class_order``
    (later regions overwrite earlier ones, as nnU-Net writes them), named by value; else the prediction as it is."""
    if info is None or not info.regions_class_order or label.ndim == 0:
        return label, names
    order = info.regions_class_order[: label.shape[0]]
    by_value = [f"label_{v}" for v in range(max(order) + 1)]
    by_value[0] = "background"
    for k, v in enumerate(order):
        by_value[v] = info.class_names[k]
    return paint_regions(label, order), by_value
