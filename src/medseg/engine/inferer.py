"""Load trained runs and predict cases on their own grid.

``Predictor`` handles whole images, memory-bounded sliding windows for volumes larger than the
training patch (``medseg.engine.sliding``), 3D volumes with a 2D model (batched slices), test-time
mirroring, ensembles of runs or folds (mean of probabilities) and per-class largest-component
post-processing.
"""

from __future__ import annotations

import json
import pickle
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from scipy import ndimage

from medseg.config import resolve_device
from medseg.core.case import Case
from medseg.core.errors import ModelError, RunError
from medseg.data.loading import normalize_image
from medseg.engine.module import SegModule, plain_tensor
from medseg.engine.sliding import sliding_window
from medseg.runs import PREPROCESS_FILE, checkpoint_path

POSTPROCESS_FILE = "postprocessing.json"


def load_module(run_dir: str | Path, which: str = "best", device: str = "cpu") -> SegModule:
    """Rebuild a run's model from its checkpoint (tensors only: ``weights_only=True``)."""
    path = checkpoint_path(run_dir, which)
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
        hp = ckpt["hyper_parameters"]
        # the checkpoint holds the trained weights: don't read the pretrained ones again (they may be gone)
        hp["config"]["model"]["params"].pop("pretrained", None)
        module = SegModule(**hp)
        if "classical" in ckpt:  # a fitted per-pixel classifier, saved as plain arrays beside the checkpoint
            from medseg.models.classical import PixelClassifier

            module.net = PixelClassifier.load(path.parent / ckpt["classical"])
            module.__dict__["_forward"] = module.net
        else:
            module.load_state_dict(ckpt["state_dict"])
    except (RuntimeError, KeyError, EOFError, OSError, ValueError, pickle.UnpicklingError) as e:
        raise RunError(
            f"checkpoint is corrupt or from another model ({str(e).splitlines()[0][:120]})",
            where=path,
            fix="retrain, or use the other checkpoint (--checkpoint last)",
        ) from None
    module.run_dir = Path(run_dir)  # lets a Predictor find the run's preprocessing and post-processing
    return module.eval().to(resolve_device(device))


def tta_axes(mode: str | Sequence[int] | None, spatial_dims: int) -> list[tuple[int, ...]]:
    """Flip combinations for test-time mirroring: ``none``, ``all`` (every subset of axes) or a list of axes."""
    if mode in (None, "none", "off"):
        return [()]
    axes = list(range(spatial_dims)) if mode == "all" else [int(a) for a in mode]  # type: ignore[union-attr]
    if any(a < 0 or a >= spatial_dims for a in axes):
        raise ModelError(f"mirror axes {axes} out of range for {spatial_dims}D", where="--tta", fix=f"use axes 0…{spatial_dims - 1}, all or none")
    combos: list[tuple[int, ...]] = [()]
    for a in axes:
        combos += [(*c, a) for c in combos]
    return combos


def keep_largest_component(mask: np.ndarray) -> np.ndarray:
    """The largest connected component (full connectivity) of a boolean mask."""
    lab, n = ndimage.label(mask, structure=np.ones((3,) * mask.ndim))
    if n <= 1:
        return mask
    sizes = np.bincount(lab.ravel())
    sizes[0] = 0
    return lab == int(sizes.argmax())


def apply_postprocessing(label: np.ndarray, classes: Sequence[int], multi_label: bool) -> np.ndarray:
    """Keep only the largest component of each listed class (removed voxels become background)."""
    out = label.copy()
    for k in classes:
        if multi_label:
            out[k] = keep_largest_component(out[k].astype(bool))
        else:
            m = out == k
            out[m & ~keep_largest_component(m)] = 0
    return out


class Predictor:
    """Predicts label maps (or probabilities) for cases with one or several trained modules.

    Args:
        modules: one ``SegModule`` or several (an ensemble: probabilities are averaged).
        tta: test-time mirroring: ``none``, ``all`` or a list of spatial axes.
        overlap: sliding-window overlap.
        sw_batch_size: windows (or slices) per forward pass.
        postprocess: class indices whose largest connected component alone is kept; ``None`` reads
            the decision saved in the (first) run folder by :func:`decide_postprocessing`, if any.
        run_dir: the first module's run folder (default: where :func:`load_module` loaded it from),
            for the saved post-processing decision and preprocessing recipe.
    """

    def __init__(
        self,
        modules: SegModule | Sequence[SegModule],
        *,
        tta: str | Sequence[int] | None = "none",
        overlap: float = 0.5,
        sw_batch_size: int = 4,
        postprocess: Sequence[int] | None = None,
        run_dir: str | Path | None = None,
    ):
        self.modules = [modules] if isinstance(modules, SegModule) else list(modules)
        first = self.modules[0]
        for m in self.modules[1:]:
            if m.class_names != first.class_names or m.multi_label != first.multi_label or m.hparams["in_channels"] != first.hparams["in_channels"]:
                raise ModelError("ensemble members predict different classes or take different inputs", where="--ensemble", fix="ensemble runs of one data set")
        self.module = first
        self.multi_label = first.multi_label
        self.num_classes = len(first.class_names)
        self.model_dims = first.spatial_dims
        self.flips = tta_axes(tta, self.model_dims)
        self.overlap = overlap
        self.sw_batch_size = sw_batch_size
        run_dir = run_dir if run_dir is not None else getattr(first, "run_dir", None)
        if postprocess is None and run_dir is not None and (Path(run_dir) / POSTPROCESS_FILE).is_file():
            postprocess = json.loads((Path(run_dir) / POSTPROCESS_FILE).read_text())["keep_largest"]
        self.postprocess = list(postprocess or [])
        self.spec: dict[str, Any] | None = None
        if run_dir is not None and (Path(run_dir) / PREPROCESS_FILE).is_file():
            self.spec = json.loads((Path(run_dir) / PREPROCESS_FILE).read_text())
        if first.cfg.data.context_slices:
            raise ModelError("prediction with 2.5D context slices is not supported yet", where="data.context_slices", fix="train with context_slices=0")

    @property
    def device(self) -> torch.device:
        return self.module.device  # LightningModule's device (a fitted pixel classifier has no parameters)

    def _scores(self, x: torch.Tensor) -> torch.Tensor:
        """Mean probabilities over ensemble members and mirrorings, ``(B, K, *spatial)``."""
        total = None
        for m in self.modules:
            for axes in self.flips:
                dims = [a + 2 for a in axes]
                xi = torch.flip(x, dims) if dims else x
                out = m(xi)
                logits = (out[0] if isinstance(out, list | tuple) else out).float()
                p = torch.sigmoid(logits) if self.multi_label else torch.softmax(logits, 1)
                p = torch.flip(p, dims) if dims else p
                total = p if total is None else total + p
        assert total is not None
        return total / (len(self.modules) * len(self.flips))

    def _roi(self, spatial: Sequence[int]) -> list[int] | None:
        ps = self.module.cfg.data.patch_size
        if ps and len(ps) == len(spatial) and any(s > p for s, p in zip(spatial, ps, strict=True)):
            return list(ps)
        return None

    def _volume_scores(self, x: torch.Tensor, reduce: Any) -> torch.Tensor:
        """``x``: ``(1, C, *spatial)`` with as many spatial axes as the model takes."""
        roi = self._roi(x.shape[2:])
        if roi is None:
            p = self._scores(x)[0]
            return reduce(p) if reduce is not None else p
        out_dtype = torch.int16 if not self.multi_label else torch.bool
        return sliding_window(
            x, self._scores, roi, self.num_classes, overlap=self.overlap, sw_batch_size=self.sw_batch_size, reduce=reduce, out_dtype=out_dtype
        )

    @torch.inference_mode()
    def _run(self, case: Case, reduce: Any) -> np.ndarray:
        self._check(case)
        record = None
        if self.spec is not None:  # the run's preprocessing, inverted below
            from medseg.data.preprocessing import preprocess_case

            image, record = preprocess_case(case, self.spec)
        else:
            image = normalize_image(case.image)
        x = plain_tensor(torch.as_tensor(image))[None].to(self.device)
        out = self._forward_volume(x, case.ndim, reduce).numpy()
        if record is None:
            return out
        from medseg.data.preprocessing import invert_label, invert_probabilities

        return invert_label(out, record) if reduce is not None else invert_probabilities(out, record, self.multi_label)

    def _forward_volume(self, x: torch.Tensor, ndim: int, reduce: Any) -> torch.Tensor:
        if ndim == self.model_dims:
            out = self._volume_scores(x, reduce)
        else:  # a 3D volume with a 2D model: batches of slices along the first axis
            slices = x[0].permute(1, 0, 2, 3)  # (D, C, H, W)
            parts = []
            for i in range(0, slices.shape[0], self.sw_batch_size):
                chunk = slices[i : i + self.sw_batch_size]
                res = [self._volume_scores(s[None], reduce) for s in chunk] if self._roi(chunk.shape[2:]) else None
                if res is None:
                    p = self._scores(chunk)  # (b, K, H, W)
                    res = [reduce(q) if reduce is not None else q for q in p]
                parts += res
            stack_axis = 0 if reduce is not None and not self.multi_label else 1
            out = torch.stack([r.cpu() for r in parts], stack_axis)
        return out.cpu()

    def probabilities(self, case: Case) -> np.ndarray:
        """Softmax (or sigmoid) probabilities ``(K, *spatial)`` on the case's grid."""
        return self._run(case, None).astype(np.float32)

    def predict(self, case: Case) -> np.ndarray:
        """Label map on the case's grid: class indices, or booleans ``(K, ...)`` for multi-label."""
        reduce = (lambda p: p > 0.5) if self.multi_label else (lambda p: p.argmax(0))
        out = self._run(case, reduce)
        out = out.astype(bool) if self.multi_label else out.astype(np.int16)
        return apply_postprocessing(out, self.postprocess, self.multi_label) if self.postprocess else out

    def _check(self, case: Case) -> None:
        hp = self.module.hparams
        dims_ok = case.ndim == self.model_dims or (case.ndim == 3 and self.model_dims == 2)
        if not dims_ok or case.n_channels != hp["in_channels"]:
            raise ModelError(
                f"input {case.case_id!r} is {case.ndim}D with {case.n_channels} channel(s); the model takes {self.model_dims}D images with {hp['in_channels']}",
                where=case.meta.get("source", case.case_id),
                fix="use a run trained on data of this kind (or convert the image)",
            )


def decide_postprocessing(run_dir: str | Path, split: str = "val", checkpoint: str = "best", progress: bool = True) -> dict[str, Any]:
    """Per class, keep only the largest connected component if that raises the mean Dice on ``split``.

    The decision is saved in ``RUN/postprocessing.json`` and applied by every later prediction.
    """
    from medseg.core.atomic import write_json
    from medseg.core.progress import track
    from medseg.data.splits import load_splits, select
    from medseg.metrics.overlap import confusion_counts, metrics_from_counts
    from medseg.runs import read_run, run_dataset

    run_dir = Path(run_dir)
    config, info = read_run(run_dir)
    ds = run_dataset(run_dir, info, config)
    ids = select(load_splits(run_dir / "splits.json", ds.patients), split, config.data.split.fold)
    if not ids:
        raise RunError(f"the {split} set is empty", where=run_dir / "splits.json", fix="decide on another split (--split test is optimistic)")
    predictor = Predictor(load_module(run_dir, checkpoint, config.train.device), postprocess=[])
    scored = ds.info.foreground
    before: list[np.ndarray] = []
    after: list[np.ndarray] = []
    for cid in track(ids, f"post-processing on {split}", enabled=progress):
        case = ds.load_case(cid)
        pred = predictor.predict(case)
        processed = apply_postprocessing(pred, scored, ds.info.multi_label)
        before.append(metrics_from_counts(confusion_counts(pred, case.label, scored, ds.info.multi_label))["dice"])
        after.append(metrics_from_counts(confusion_counts(processed, case.label, scored, ds.info.multi_label))["dice"])
    with np.errstate(all="ignore"):
        b = np.nanmean(np.stack(before), axis=0)
        a = np.nanmean(np.stack(after), axis=0)
    keep = [int(k) for k, x, y in zip(scored, b, a, strict=True) if np.isfinite(x) and np.isfinite(y) and y > x]
    decision = {
        "keep_largest": keep,
        "split": split,
        "dice_before": {ds.info.class_names[k]: float(x) for k, x in zip(scored, b, strict=True)},
        "dice_after": {ds.info.class_names[k]: float(y) for k, y in zip(scored, a, strict=True)},
    }
    write_json(run_dir / POSTPROCESS_FILE, decision)
    return decision
