"""``predict(runs, input, out)``: masks for new images, written on the input's exact grid."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np

from medseg.core.atomic import atomic_dir, write_json
from medseg.core.case import Case
from medseg.core.errors import MedsegError, RunError
from medseg.core.progress import track
from medseg.engine.export import OUTPUT_FORMATS, meta_of, read_inputs, rle_rows, write_overlay, write_prediction
from medseg.engine.load import load_inferer
from medseg.runs import read_info


def _dataset_cases(path: Path, split: str | None) -> Iterator[Case]:
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
        case.meta.setdefault("source_kind", "dataset")
        yield case


def predict(
    runs: Sequence[str | Path],
    input: str | Path,
    out: str | Path,
    *,
    fmt: str = "nifti",
    checkpoint: str = "best",
    tta: str | Sequence[int] = "none",
    overlap: float = 0.5,
    probabilities: bool = False,
    overlays: bool = False,
    series: str | None = None,
    split: str | None = None,
    device: str = "auto",
    overwrite: bool = False,
    progress: bool = True,
    backend: str = "torch",
) -> Path:
    """Predict every image of ``input`` with one run (or an ensemble of runs) and write them to ``out``.

    Args:
        runs: run folders; several form an ensemble (mean of probabilities).
        input: a file, a folder of files, a DICOM folder/zip, or a data set folder.
        out: the output folder, written atomically (refused if it exists unless ``overwrite``).
        fmt: ``nifti``, ``nrrd``, ``png``, ``rle-csv`` or ``dicom-seg``.
        checkpoint: ``best`` or ``last``.
        tta: test-time mirroring: ``none``, ``all`` or a list of axes.
        overlap: sliding-window overlap.
        probabilities: also write ``<case>_probs.npz`` (float16 probabilities + affine).
        overlays: also write ``<case>_overlay.png``.
        series: DICOM SeriesInstanceUID when a folder holds several.
        split: with a data set folder, predict only this split.
        device: ``auto``, ``cpu``, ``cuda`` or ``mps``.
        overwrite: replace an existing output folder.
        progress: show a progress bar.
        backend: ``torch`` (eager) or ``onnx`` (ONNX Runtime on the CPU; exported on first use).

    Returns:
        The output folder (with ``predictions.json`` listing every case and file).
    """
    if fmt not in OUTPUT_FORMATS:
        raise MedsegError(f"unknown output format {fmt!r}", where="--format", fix=f"use one of {', '.join(OUTPUT_FORMATS)}")
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
    colors = [tuple(c.color) for c in load_dataset(input).info.classes] if is_dataset else None
    if colors is None and info.get("dataset") and (Path(info["dataset"]) / DATASET_FILE).is_file():
        colors = [tuple(c.color) for c in load_dataset(info["dataset"]).info.classes]
    cases = _dataset_cases(input, split) if is_dataset else read_inputs(input, series)
    listing = []
    rle: list[tuple[str, str, np.ndarray]] = []
    with atomic_dir(out, overwrite=overwrite) as tmp:
        for case in track(cases, "predict", enabled=progress):
            label = predictor.predict(case)
            entry = meta_of(case)
            if fmt == "rle-csv":
                rle += list(rle_rows(case, label, names))
            else:
                entry["file"] = write_prediction(case, label, tmp, fmt, names).name
            if probabilities:
                p = tmp / f"{entry['file'].split('.')[0] if 'file' in entry else case.case_id}_probs.npz"
                with open(p, "wb") as fh:
                    np.savez_compressed(fh, probabilities=predictor.probabilities(case).astype(np.float16), affine=case.affine, classes=np.array(names))
                entry["probabilities"] = p.name
            if overlays and colors:
                entry["overlay"] = write_overlay(case, label, colors, tmp / f"{case.case_id}_overlay.png").name  # type: ignore[arg-type]
            listing.append(entry)
        if not listing:
            raise MedsegError("no images found to predict", where=input, fix="check the input path")
        if fmt == "rle-csv":
            from medseg.data.formats.rle import write_rle_csv

            write_rle_csv(tmp / "submission.csv", rle)
        write_json(tmp / "predictions.json", {"runs": [str(r) for r in runs], "format": fmt, "classes": names, "tta": tta, "cases": listing})
    return out
