"""Rebuild a run's network from its checkpoint (tensors only: ``weights_only=True``)."""

from __future__ import annotations

import pickle
from pathlib import Path

import torch

from medseg.config import resolve_device
from medseg.core.errors import RunError
from medseg.engine.module import SegModule
from medseg.runs import checkpoint_path, read_resolved


def load_module(run_dir: str | Path, which: str = "best", device: str = "cpu") -> SegModule:
    """The run's ``SegModule`` in eval mode on ``device``, carrying the run's resolved training record.

    Raises:
        RunError: no checkpoint, or one that is corrupt or from another model (the fix names the other checkpoint).
    """
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
    except (RuntimeError, KeyError, EOFError, OSError, ValueError, TypeError, pickle.UnpicklingError) as e:
        raise RunError(
            f"checkpoint is corrupt or from another model ({str(e).splitlines()[0][:120]})",
            where=path,
            fix="retrain, or use the other checkpoint (--checkpoint last)",
        ) from None
    module.resolved = read_resolved(run_dir, module.cfg, dict(hp))
    module.run_dir = Path(run_dir)
    return module.eval().to(resolve_device(device))
