"""The one inferer: every prediction medseg makes — validation, training snapshots, ``evaluate``,
``predict``, ``postprocess`` and the demo (cases and uploads) — goes through :class:`Inferer`.

It works from the values a run trained with (:class:`medseg.runs.Resolved`), not from its config:

* the case is prepared as in training — the run's preprocessing recipe (inverted afterwards, so the
  result lies on the case's own grid), else a per-case, per-channel z-score;
* an image larger than the training patch is predicted with a memory-bounded Gaussian sliding window
  (:mod:`medseg.engine.sliding`), smaller ones whole;
* a 2D network given a volume predicts it slice by slice in the plane it was trained on (the recorded
  slice plane, found in each volume from its affine; axial for networks trained on 2D images);
* test-time mirroring and ensembles (runs or folds) average probabilities over every flip of every
  member, flipped back;
* largest-component post-processing (the run's ``postprocessing.json``) is applied to label maps.

Build one from run folders with :func:`medseg.engine.load.load_inferer`, or from modules in memory.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch

from medseg.core.case import Case
from medseg.core.errors import ModelError
from medseg.data.preprocessing.transforms import normalize_image
from medseg.engine.postprocessing import apply_postprocessing
from medseg.engine.sliding import sliding_window
from medseg.runs import Resolved
from medseg.viz.render import plane_axes

Progress = Callable[[float, str], None]
#: fields ensemble members must share (they see the same input and their probabilities are averaged)
SHARED = ("spatial_dims", "in_channels", "class_names", "multi_label", "patch_size", "slices", "slice_axis", "slice_plane", "preprocess")


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


def _first(out: torch.Tensor | Sequence[torch.Tensor]) -> torch.Tensor:
    return out[0] if isinstance(out, list | tuple) else out


class Inferer:
    """Predicts label maps (or probabilities) for cases with one trained network or several.

    Args:
        nets: one network or several (an ensemble: probabilities are averaged); each maps
            ``(B, C, *spatial)`` to logits. A ``SegModule`` carries its own :class:`Resolved` record.
        resolved: what the networks were trained with (default: the first network's ``resolved``).
        tta: test-time mirroring: ``none``, ``all`` or a list of spatial axes of the network's input.
        overlap: sliding-window overlap.
        sw_batch_size: windows (or slices) per forward pass.
        postprocess: class indices whose largest connected component alone is kept.
    """

    def __init__(
        self,
        nets: Callable[[torch.Tensor], Any] | Sequence[Callable[[torch.Tensor], Any]],
        resolved: Resolved | None = None,
        *,
        tta: str | Sequence[int] | None = "none",
        overlap: float = 0.5,
        sw_batch_size: int = 4,
        postprocess: Sequence[int] = (),
    ):
        self.nets = list(nets) if isinstance(nets, list | tuple) else [nets]
        rec = resolved if resolved is not None else getattr(self.nets[0], "resolved", None)
        if rec is None:
            raise ModelError("the network has no record of what it was trained with", where="Inferer", fix="pass resolved=Resolved(...)")
        self.resolved: Resolved = rec
        for i, net in enumerate(self.nets[1:], start=2):
            other = getattr(net, "resolved", None)
            diff = next((f for f in SHARED if other is not None and getattr(other, f) != getattr(rec, f)), None)
            if diff is not None:
                raise ModelError(
                    f"ensemble member {i} was trained with another {diff} ({getattr(other, diff)!r} vs {getattr(rec, diff)!r})",
                    where="--ensemble",
                    fix="ensemble runs trained on the same data with the same classes, patch and preprocessing",
                )
        if rec.context_slices:
            raise ModelError("prediction with 2.5D context slices is not supported yet", where="data.context_slices", fix="train with context_slices=0")
        self.flips = tta_axes(tta, rec.spatial_dims)
        #: the mirroring asked for (``none``, ``all`` or axes), as written to ``predictions.json``
        self.tta: str | list[int] = tta if isinstance(tta, str) else "none" if tta is None else [int(a) for a in tta]
        self.overlap = overlap
        self.sw_batch_size = sw_batch_size
        self.postprocess = [int(k) for k in postprocess]

    # ----------------------------------------------------------------------------- properties

    @property
    def num_classes(self) -> int:
        """Output channels: one per class, less the ignore label (never predicted)."""
        return len(self.resolved.class_names) - (getattr(self.nets[0], "ignore_label", None) is not None)

    @property
    def multi_label(self) -> bool:
        return self.resolved.multi_label

    @property
    def class_names(self) -> list[str]:
        return list(self.resolved.class_names)

    @property
    def device(self) -> torch.device:
        net = self.nets[0]
        if isinstance(getattr(net, "device", None), torch.device):
            return net.device  # a LightningModule's device (a fitted pixel classifier has no parameters)
        p = next(iter(net.parameters()), None) if isinstance(net, torch.nn.Module) else None
        return p.device if p is not None else torch.device("cpu")

    # ----------------------------------------------------------------------------- tensors

    def _probs(self, x: torch.Tensor) -> torch.Tensor:
        """Mean probabilities over members and mirrorings, ``(B, K, *spatial)``."""
        total = None
        for net in self.nets:
            for axes in self.flips:
                dims = [a + 2 for a in axes]
                logits = _first(net(torch.flip(x, dims) if dims else x)).float()
                p = torch.sigmoid(logits) if self.multi_label else torch.softmax(logits, 1)
                p = torch.flip(p, dims) if dims else p
                total = p if total is None else total + p
        assert total is not None
        return total / (len(self.nets) * len(self.flips))

    def _roi(self, spatial: Sequence[int]) -> list[int] | None:
        ps = self.resolved.patch_size
        if ps and len(ps) == len(spatial) and any(s > p for s, p in zip(spatial, ps, strict=True)):
            return list(ps)
        return None

    def _reduce(self) -> Callable[[torch.Tensor], torch.Tensor]:
        return (lambda p: p > 0.5) if self.multi_label else (lambda p: p.argmax(0))

    def _image(self, x: torch.Tensor, reduce: Callable[[torch.Tensor], torch.Tensor] | None) -> torch.Tensor:
        """``x``: ``(1, C, *spatial)`` with the network's dimensionality → ``(K, *spatial)`` or reduced."""
        roi = self._roi(x.shape[2:])
        if roi is None:
            p = self._probs(x)[0]
            return reduce(p) if reduce is not None else p
        out_dtype = torch.bool if self.multi_label else torch.int16
        return sliding_window(x, self._probs, roi, self.num_classes, overlap=self.overlap, sw_batch_size=self.sw_batch_size, reduce=reduce, out_dtype=out_dtype)

    def _slices(self, x: torch.Tensor, axis: int, reduce: Callable[[torch.Tensor], torch.Tensor] | None, progress: Progress | None) -> torch.Tensor:
        """A 2D network on a volume ``(1, C, *spatial)``: batches of slices along ``axis``, stacked back."""
        slices = x[0].movedim(axis + 1, 0)  # (n, C, *plane)
        n = slices.shape[0]
        windowed = self._roi(slices.shape[2:]) is not None
        parts: list[torch.Tensor] = []
        for i in range(0, n, self.sw_batch_size):
            chunk = slices[i : i + self.sw_batch_size]
            if windowed:
                parts += [self._image(s[None], reduce).cpu() for s in chunk]
            else:
                p = self._probs(chunk)
                parts += [(reduce(q) if reduce is not None else q).cpu() for q in p]
            if progress is not None:
                progress(min(i + self.sw_batch_size, n) / n, f"slice {min(i + self.sw_batch_size, n)}/{n}")
        lead = 0 if reduce is not None and not self.multi_label else 1  # label maps have no channel axis
        return torch.stack(parts, lead).movedim(lead, lead + axis)

    def _run(self, x: torch.Tensor, axis: int | None, reduce: Callable[[torch.Tensor], torch.Tensor] | None, progress: Progress | None = None) -> torch.Tensor:
        """One prepared image ``(1, C, *spatial)`` → ``(K, *spatial)`` probabilities or the reduced map, on the CPU."""
        if x.ndim - 2 == self.resolved.spatial_dims:
            out = self._image(x, reduce).cpu()
            if progress is not None:
                progress(1.0, "done")
            return out
        return self._slices(x, self.resolved.slice_axis if axis is None else axis, reduce, progress)

    @torch.inference_mode()
    def scores(self, x: torch.Tensor, *, log: bool = False, axis: int | None = None) -> torch.Tensor:
        """Probabilities ``(B, K, *spatial)`` for a batch of prepared (normalised) images, on ``x``'s device.

        With ``log``, scores a loss can take as logits: the network's own logits when one network sees
        the whole image unmirrored, else the log-probabilities of the blend (softmax / sigmoid gives the
        blended probabilities back). A volume given to a 2D network is sliced along ``axis`` (default
        the recorded ``slice_axis``: the batch is in the training data's array order).
        """
        x = x.to(self.device)
        spatial = x.shape[2:]
        if len(spatial) == self.resolved.spatial_dims and self._roi(spatial) is None:
            if log and len(self.nets) == 1 and self.flips == [()]:
                return _first(self.nets[0](x)).float()
            p = self._probs(x)
        else:
            p = torch.stack([self._run(x[i : i + 1], axis, None) for i in range(x.shape[0])]).to(x.device)
        if not log:
            return p
        return torch.logit(p, eps=1e-6) if self.multi_label else torch.log(p.clamp_min(torch.finfo(p.dtype).tiny))

    @torch.inference_mode()
    def labels(self, x: torch.Tensor, *, axis: int | None = None) -> torch.Tensor:
        """The label map of one prepared image ``(1, C, *spatial)`` (class indices, or ``(K, …)`` booleans), on the CPU."""
        out = self._run(x.to(self.device), axis, self._reduce())
        return out.to(torch.bool) if self.multi_label else out.to(torch.int16)

    # ----------------------------------------------------------------------------- cases

    def slice_axis(self, case: Case, affine: np.ndarray | None = None) -> int | None:
        """The array axis of ``case`` (or of an array placed by ``affine``) a 2D network slices; None when
        the network takes the case whole."""
        if case.ndim == self.resolved.spatial_dims:
            return None
        plane = self.resolved.volume_plane
        aff = case.affine if affine is None else np.asarray(affine)
        if plane is not None and aff.shape == (4, 4):
            return plane_axes(aff)[plane]
        return self.resolved.slice_axis

    def _check(self, case: Case) -> None:
        r = self.resolved
        dims_ok = case.ndim == r.spatial_dims or (case.ndim == 3 and r.spatial_dims == 2)
        if not dims_ok or case.n_channels != r.in_channels:
            raise ModelError(
                f"input {case.case_id!r} is {case.ndim}D with {case.n_channels} channel(s); the model takes {r.spatial_dims}D images with {r.in_channels}",
                where=case.meta.get("source", case.case_id),
                fix="use a run trained on data of this kind (or convert the image)",
            )

    def prepare(self, case: Case) -> tuple[torch.Tensor, dict[str, Any] | None, int | None]:
        """The network's view of a case: ``(image (1, C, *shape), record, slice axis)``.

        The image is preprocessed with the run's recipe (``record`` inverts it) or z-scored per case.
        """
        self._check(case)
        if self.resolved.preprocess is not None:
            from medseg.data.preprocessing import PreprocessSpec, preprocess_pair

            image, _, record = preprocess_pair(case, PreprocessSpec.from_dict(self.resolved.preprocess), with_label=False)
            affine = np.asarray(record["affine"])
        else:
            image, record, affine = normalize_image(case.image), None, case.affine
        return torch.as_tensor(image)[None], record, self.slice_axis(case, affine)

    def _case(self, case: Case, reduce: Callable[[torch.Tensor], torch.Tensor] | None, progress: Progress | None) -> np.ndarray:
        x, record, axis = self.prepare(case)
        with torch.inference_mode():
            out = self._run(x.to(self.device), axis, reduce, progress).numpy()
        if record is None:
            return out
        from medseg.data.preprocessing import invert_label, invert_probabilities

        return invert_label(out, record) if reduce is not None else invert_probabilities(out, record, self.multi_label)

    def probabilities(self, case: Case, progress: Progress | None = None) -> np.ndarray:
        """Softmax (or sigmoid) probabilities ``(K, *spatial)`` on the case's grid."""
        return self._case(case, None, progress).astype(np.float32)

    def predict(self, case: Case, progress: Progress | None = None) -> np.ndarray:
        """Label map on the case's grid: class indices, or booleans ``(K, ...)`` for multi-label; post-processed."""
        out = self._case(case, self._reduce(), progress)
        out = out.astype(bool) if self.multi_label else out.astype(np.int16)
        return apply_postprocessing(out, self.postprocess, self.multi_label) if self.postprocess else out
