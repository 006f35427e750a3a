"""The run folder's layout: every file name a run folder holds, in one place.

Layout::

    RUN/
      config.yaml          the config, every field filled in (enough to rebuild the model and pipeline)
      run.json             status, data set path, timings, best metric, model size, MACs, and
                           ``resolved``: the values the run actually trained with (patch size from
                           the plan, slicing, normalisation, spacing, in-channels, classes)
      splits.json          the split actually used
      preprocess.json      the preprocessing recipe (when data.preprocess is enabled), inverted by predictions
      postprocessing.json  largest-component decision (``medseg postprocess``), applied by every prediction
      checkpoints/         best.ckpt, last.ckpt (written to a temp file and renamed)
      logs/metrics.csv     every logged value (Lightning CSV logger)
      history.csv          one row per epoch: losses, Dice per class, pixel accuracy, lr, epoch time
      curves.png           loss, Dice and pixel accuracy curves, refreshed every epoch
      snapshots/           snapshot.json + epoch_NNNN.npz: one validation slice predicted every epoch
      eval/<split>/        metrics.csv, summary.json, predictions/<case>.npz (``medseg evaluate``)
      export/              model.onnx + onnx.json (``medseg export``, ``--backend onnx``)
      report/index.html    self-contained report (``medseg report``)
"""

from __future__ import annotations

from pathlib import Path

from medseg.data.store import SPLITS_FILE

CONFIG_FILE = "config.yaml"
RUN_FILE = "run.json"
PREPROCESS_FILE = "preprocess.json"  # the preprocessing recipe of the training cache, inverted at prediction
POSTPROCESS_FILE = "postprocessing.json"
ENSEMBLE_FILE = "ensemble.json"  # member runs that predict together (medseg auto --folds 5)
HISTORY_FILE = "history.csv"
CURVES_FILE = "curves.png"
CHECKPOINTS_DIR = "checkpoints"
SNAPSHOTS_DIR = "snapshots"
SNAPSHOT_FILE = "snapshot.json"
EVAL_DIR = "eval"
PREDICTIONS_DIR = "predictions"
SUMMARY_FILE = "summary.json"
METRICS_FILE = "metrics.csv"
EXPORT_DIR = "export"
REPORT_DIR = "report"
SWEEP_FILE = "sweep.json"

__all__ = [
    "CHECKPOINTS_DIR",
    "CONFIG_FILE",
    "CURVES_FILE",
    "EVAL_DIR",
    "EXPORT_DIR",
    "HISTORY_FILE",
    "METRICS_FILE",
    "POSTPROCESS_FILE",
    "ENSEMBLE_FILE",
    "PREDICTIONS_DIR",
    "PREPROCESS_FILE",
    "REPORT_DIR",
    "RUN_FILE",
    "SNAPSHOTS_DIR",
    "SNAPSHOT_FILE",
    "SPLITS_FILE",
    "SUMMARY_FILE",
    "SWEEP_FILE",
    "checkpoint_file",
    "eval_dir",
    "is_run_dir",
]


def checkpoint_file(run_dir: str | Path, which: str = "best") -> Path:
    """``RUN/checkpoints/<which>.ckpt`` (whether or not it exists)."""
    return Path(run_dir) / CHECKPOINTS_DIR / f"{which}.ckpt"


def eval_dir(run_dir: str | Path, split: str) -> Path:
    """``RUN/eval/<split>``: where ``medseg evaluate`` writes the evaluation on ``split``."""
    return Path(run_dir) / EVAL_DIR / split


def is_run_dir(path: str | Path, *, trained: bool = False) -> bool:
    """Whether ``path`` holds a run (its ``config.yaml``); with ``trained``, also a checkpoints folder."""
    p = Path(path)
    return (p / CONFIG_FILE).is_file() and (not trained or (p / CHECKPOINTS_DIR).is_dir())
