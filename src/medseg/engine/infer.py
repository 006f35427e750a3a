"""Load a trained run and predict cases on their own grid."""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import torch

from medseg.config import resolve_device
from medseg.data.case import Case
from medseg.data.pipeline import normalize_image
from medseg.engine.module import SegModule, logits_to_labels
from medseg.engine.run import checkpoint_path
from medseg.errors import ModelError, RunError


def load_module(run_dir: str | Path, which: str = "best", device: str = "cpu") -> SegModule:
    """Rebuild a run's model from its checkpoint (tensors only: ``weights_only=True``)."""
    path = checkpoint_path(run_dir, which)
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
        hp = ckpt["hyper_parameters"]
        module = SegModule(**hp)
        module.load_state_dict(ckpt["state_dict"])
    except (RuntimeError, KeyError, EOFError, OSError, ValueError, pickle.UnpicklingError) as e:
        raise RunError(
            f"checkpoint is corrupt or from another model ({str(e).splitlines()[0][:120]})",
            where=path,
            fix="retrain, or use the other checkpoint (--checkpoint last)",
        ) from None
    return module.eval().to(resolve_device(device))


class Predictor:
    """Predicts label maps for cases with a trained module.

    Args:
        module: the trained ``SegModule``.
    """

    def __init__(self, module: SegModule):
        self.module = module

    @property
    def device(self) -> torch.device:
        return next(self.module.parameters()).device

    @torch.inference_mode()
    def probabilities(self, case: Case) -> np.ndarray:
        """Softmax (or sigmoid) probabilities ``(K, *spatial)`` on the case's grid."""
        self._check(case)
        x = torch.as_tensor(normalize_image(case.image))[None].to(self.device)
        logits = self.module.predict_logits(x)[0].float()
        return (torch.sigmoid(logits) if self.module.multi_label else torch.softmax(logits, 0)).cpu().numpy()

    @torch.inference_mode()
    def predict(self, case: Case) -> np.ndarray:
        """Label map on the case's grid: class indices, or booleans ``(K, ...)`` for multi-label."""
        self._check(case)
        x = torch.as_tensor(normalize_image(case.image))[None].to(self.device)
        logits = self.module.predict_logits(x)
        out = logits_to_labels(logits, self.module.multi_label)[0].cpu().numpy()
        return out if self.module.multi_label else out.astype(np.int16)

    def _check(self, case: Case) -> None:
        hp = self.module.hparams
        if case.ndim != hp["spatial_dims"] or case.n_channels != hp["in_channels"]:
            raise ModelError(
                f"case {case.case_id!r} is {case.ndim}D with {case.n_channels} channel(s); the model expects {hp['spatial_dims']}D with {hp['in_channels']}",
                where=case.meta.get("source", case.case_id),
                fix="use a run trained on data of this kind",
            )
