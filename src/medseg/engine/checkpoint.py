"""Rebuild a run's network from its checkpoint (tensors only: ``weights_only=True``), without Lightning.

Prediction needs the network and the run's record of how it was trained, not the training loop:
:class:`TrainedNet` is that pair, so ``predict``, ``evaluate`` and the demo never import Lightning,
and the ONNX backend (:mod:`medseg.engine.onnx`) does not even build the PyTorch network.
"""

from __future__ import annotations

import pickle
from collections.abc import Callable
from functools import cached_property
from pathlib import Path
from typing import Any

import torch

from medseg.config import Config, resolve_device
from medseg.core.errors import RunError
from medseg.runs import Resolved, checkpoint_path, read_resolved

#: errors ``torch.load`` and ``load_state_dict`` raise for a file that is not this run's checkpoint
CORRUPT = (RuntimeError, KeyError, EOFError, OSError, ValueError, TypeError, pickle.UnpicklingError)


class TrainedNet(torch.nn.Module):
    """A trained network with what it was trained with; call it like the network (``(B, C, *S)`` → logits).

    Attributes:
        net: the network (its state-dict keys are the checkpoint's ``net.*``).
        cfg: the run's config; ``hparams``: the checkpoint's hyper-parameters.
        resolved: the run's resolved training record (patch, slicing plane, preprocessing…).
        class_names, spatial_dims, multi_label, ignore_label: as trained.
        loss_fn: the run's training loss, built on first use (the test loss of ``evaluate``).
    """

    def __init__(self, hparams: dict[str, Any], net: torch.nn.Module, resolved: Resolved, run_dir: Path | None = None):
        super().__init__()
        self.hparams = dict(hparams)
        self.cfg = Config.model_validate(hparams["config"])
        self.net = net
        self.resolved = resolved
        self.run_dir = run_dir
        self.class_names = list(hparams["class_names"])
        self.spatial_dims = int(hparams["spatial_dims"])
        self.multi_label = bool(hparams.get("multi_label", False))
        self.ignore_label = hparams.get("ignore_label")
        self.__dict__["_forward"] = net  # what a call runs (a fitted classifier, an ONNX session); not a submodule

    def forward(self, x: torch.Tensor) -> Any:
        forward: Callable[[torch.Tensor], Any] = self.__dict__["_forward"]
        return forward(x)

    @property
    def device(self) -> torch.device:
        p = next(iter(self.net.parameters()), None)
        return p.device if p is not None else torch.device("cpu")

    @cached_property
    def loss_fn(self) -> torch.nn.Module:
        from medseg.losses import build_loss

        t = self.cfg.train
        return build_loss(t.loss, self.multi_label, t.deep_supervision_weights, ignore_index=self.ignore_label, **t.loss_params).to(self.device)


def read_checkpoint(run_dir: str | Path, which: str = "best") -> tuple[dict[str, Any], Path]:
    """``(checkpoint dict, path)`` of a run's ``best`` or ``last`` checkpoint, tensors only.

    Raises:
        RunError: no checkpoint, or one that is corrupt.
    """
    path = checkpoint_path(run_dir, which)
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
        if "config" not in ckpt["hyper_parameters"]:
            raise KeyError("hyper_parameters.config")  # a checkpoint without it is not ours
    except CORRUPT as e:
        raise corrupt(path, e) from None
    return ckpt, path


def corrupt(path: Path, e: BaseException) -> RunError:
    return RunError(
        f"checkpoint is corrupt or from another model ({str(e).splitlines()[0][:120] if str(e) else type(e).__name__})",
        where=path,
        fix="retrain, or use the other checkpoint (--checkpoint last)",
    )


def run_record(run_dir: str | Path, hparams: dict[str, Any]) -> Resolved:
    """The run's resolved training record (``run.json``, else derived from the checkpoint's hyper-parameters)."""
    return read_resolved(run_dir, Config.model_validate(hparams["config"]), dict(hparams))


def load_module(run_dir: str | Path, which: str = "best", device: str = "cpu") -> TrainedNet:
    """The run's network in eval mode on ``device``, carrying the run's resolved training record.

    Raises:
        RunError: no checkpoint, or one that is corrupt or from another model (the fix names the other checkpoint).
    """
    from medseg.models import create_model

    ckpt, path = read_checkpoint(run_dir, which)
    hp = ckpt["hyper_parameters"]
    try:
        # the checkpoint holds the trained weights: don't read the pretrained ones again (they may be gone)
        hp["config"]["model"]["params"].pop("pretrained", None)
        cfg = Config.model_validate(hp["config"])
        n_out = len(hp["class_names"]) - (hp.get("ignore_label") is not None)
        if "classical" in ckpt:  # a fitted per-pixel classifier, saved as plain arrays beside the checkpoint
            from medseg.models.classical import PixelClassifier

            net: torch.nn.Module = PixelClassifier.load(path.parent / ckpt["classical"])
        else:
            net = create_model(cfg.model.name, hp["spatial_dims"], hp["in_channels"], n_out, **cfg.model.params)
            state = {k.removeprefix("net."): v for k, v in ckpt["state_dict"].items() if k.startswith("net.")}
            net.load_state_dict(state)
        module = TrainedNet(hp, net, run_record(run_dir, hp), Path(run_dir))
    except CORRUPT as e:
        raise corrupt(path, e) from None
    return module.eval().to(resolve_device(device))
