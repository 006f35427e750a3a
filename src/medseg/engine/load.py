"""From run folders to a ready :class:`~medseg.engine.inferer.Inferer`, and the post-processing decision.

:func:`load_inferer` is how ``evaluate``, ``predict``, ``postprocess`` and the demo get their inferer:
the networks of one run or several (an ensemble), eager PyTorch or ONNX Runtime, the run's resolved
training record and its post-processing decision.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from medseg.core.errors import MedsegError, RunError
from medseg.engine.checkpoint import load_module
from medseg.engine.inferer import Inferer
from medseg.engine.postprocessing import apply_postprocessing

BACKENDS = ("auto", "torch", "onnx")


def pick_backend(folders: Sequence[Path], checkpoint: str, device: str) -> str:
    """``auto``: ONNX Runtime when every run has a current ONNX export, onnxruntime is installed and
    the device is the CPU (it starts in a fraction of the time: no network libraries are imported);
    else eager PyTorch."""
    import importlib.util

    from medseg.engine.onnx import onnx_fresh

    if device not in ("auto", "cpu") or importlib.util.find_spec("onnxruntime") is None:
        return "torch"
    if device == "auto":
        from medseg.config import resolve_device

        if resolve_device("auto") != "cpu":
            return "torch"
    return "onnx" if all(onnx_fresh(r, checkpoint) for r in folders) else "torch"


def load_inferer(
    runs: str | Path | Sequence[str | Path],
    *,
    checkpoint: str = "best",
    device: str = "auto",
    backend: str = "torch",
    tta: str | Sequence[int] | None = "auto",
    overlap: float = 0.5,
    sw_batch_size: int = 4,
    postprocess: Sequence[int] | None = None,
) -> Inferer:
    """The inferer of one run folder, or of several (an ensemble: mean of their probabilities).

    Args:
        runs: run folders.
        checkpoint: ``best`` or ``last``.
        device: ``auto``, ``cpu``, ``cuda`` or ``mps`` (the ONNX backend runs on the CPU).
        backend: ``torch`` (eager), ``onnx`` (ONNX Runtime; exported on first use) or ``auto``
            (see :func:`pick_backend`).
        tta: test-time mirroring: ``none``, ``all``, a list of axes, or ``auto`` (the default): what the first run
            decided on validation (``postprocessing.json``; ``medseg auto`` decides it), ``none`` when it decided
            nothing — so evaluation, prediction and the demo score and write the same masks.
        overlap: sliding-window overlap.
        sw_batch_size: windows (or slices) per forward pass.
        postprocess: classes whose largest component alone is kept; None = the first run's
            ``postprocessing.json`` decision (none when absent).

    Raises:
        RunError: no run given, or a run folder without a usable checkpoint.
        MedsegError: unknown backend.
    """
    from medseg.runs import read_ensemble, read_postprocessing, read_tta

    folders = [Path(runs)] if isinstance(runs, str | Path) else [Path(r) for r in runs]
    if not folders:
        raise RunError("no run given", where="RUN", fix="give a run folder written by `medseg train`")
    if len(folders) == 1 and read_ensemble(folders[0]):  # a cross-validated run predicts with all its folds
        pp_from = folders[0]
        folders = read_ensemble(folders[0])
    else:
        pp_from = folders[0]
    if backend == "auto":
        backend = pick_backend(folders, checkpoint, device)
    if backend == "onnx":
        from medseg.engine.onnx import load_onnx_module

        modules = [load_onnx_module(r, checkpoint) for r in folders]
    elif backend == "torch":
        modules = [load_module(r, checkpoint, device) for r in folders]
    else:
        raise MedsegError(f"unknown backend {backend!r}", where="--backend", fix=f"use {' or '.join(BACKENDS)}")
    if postprocess is None:
        postprocess = read_postprocessing(pp_from)
    if tta == "auto":
        tta = read_tta(pp_from)
    return Inferer(modules, tta=tta, overlap=overlap, sw_batch_size=sw_batch_size, postprocess=postprocess)


def decide_postprocessing(run_dir: str | Path, split: str = "val", checkpoint: str = "best", progress: bool = True, tta: bool = False) -> dict[str, Any]:
    """Per class, keep only the largest connected component if that raises the mean Dice on ``split``; with ``tta``,
    first decide test-time mirroring (every axis) the same way: kept when it raises the mean Dice.

    The decision is saved in ``RUN/postprocessing.json`` and applied by every later prediction (mirroring by those
    that ask for ``--tta auto``, the default of ``medseg predict``).
    """
    import time

    from medseg.core.progress import track
    from medseg.metrics.overlap import confusion_counts, metrics_from_counts
    from medseg.runs import SPLITS_FILE, read_run, run_dataset, split_ids, write_postprocessing

    run_dir = Path(run_dir)
    config, info = read_run(run_dir)
    ds = run_dataset(run_dir, info, config)
    ids = split_ids(run_dir, ds, split, config.data.split.fold)
    if not ids:
        raise RunError(f"the {split} set is empty", where=run_dir / SPLITS_FILE, fix="decide on another split (--split test is optimistic)")
    plain = load_inferer(run_dir, checkpoint=checkpoint, device=config.train.device, tta="none", postprocess=[])
    inferers = {"none": plain}
    if tta:
        inferers["all"] = Inferer(plain.nets, tta="all", overlap=plain.overlap, sw_batch_size=plain.sw_batch_size)
    scored = ds.info.foreground
    dice: dict[str, list[np.ndarray]] = {k: [] for k in (*inferers, "largest")}
    seconds = dict.fromkeys(inferers, 0.0)
    preds: dict[str, list[np.ndarray]] = {k: [] for k in inferers}
    cases = []
    for cid in track(ids, f"post-processing on {split}", enabled=progress):
        case = ds.load_case(cid)
        cases.append(case.label)
        for mode, inferer in inferers.items():
            t0 = time.perf_counter()
            preds[mode].append(inferer.predict(case))
            seconds[mode] += time.perf_counter() - t0
            dice[mode].append(metrics_from_counts(confusion_counts(preds[mode][-1], case.label, scored, ds.info.multi_label))["dice"])

    def mean(rows: list[np.ndarray]) -> np.ndarray:
        with np.errstate(all="ignore"):
            return np.nanmean(np.stack(rows), axis=0)

    overall = {mode: float(np.nanmean(mean(dice[mode]))) for mode in inferers}  # over the scored classes
    mirrored = tta and overall["all"] > overall["none"]
    chosen = "all" if mirrored else "none"
    for pred, label in zip(preds[chosen], cases, strict=True):
        processed = apply_postprocessing(pred, scored, ds.info.multi_label)
        dice["largest"].append(metrics_from_counts(confusion_counts(processed, label, scored, ds.info.multi_label))["dice"])
    b, a = mean(dice[chosen]), mean(dice["largest"])
    keep = [int(k) for k, x, y in zip(scored, b, a, strict=True) if np.isfinite(x) and np.isfinite(y) and y > x]
    names = [ds.info.class_names[k] for k in scored]
    decision: dict[str, Any] = {
        "keep_largest": keep,
        "split": split,
        "dice_before": dict(zip(names, map(float, b), strict=True)),
        "dice_after": dict(zip(names, map(float, a), strict=True)),
    }
    if tta:
        decision.update(
            tta=chosen,
            tta_dice={mode: dict(zip(names, map(float, mean(dice[mode])), strict=True)) for mode in inferers},
            tta_mean_dice=overall,
            tta_seconds_per_case={mode: round(t / len(ids), 3) for mode, t in seconds.items()},
        )
    write_postprocessing(run_dir, decision)
    return decision
