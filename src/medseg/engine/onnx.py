"""ONNX export of a run's network and an ONNX Runtime backend for the :class:`~medseg.engine.inferer.Inferer`.

The network inside medseg's pad-to-multiple wrapper is exported with dynamic batch and spatial
axes; padding and cropping stay in PyTorch around the ONNX Runtime session, so any input size works
exactly as with the eager model. The exporter is PyTorch's TorchScript-based one (a fraction of a
second for a U-Net), falling back to the ``torch.export`` one for networks it cannot trace.

Loading an exported run builds no PyTorch network (no MONAI, smp or transformers import): with
``export/onnx.json`` recording which checkpoint file it came from, ``medseg predict`` on a few
pictures starts in a few seconds. An export older than its checkpoint is made again.
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn as nn

from medseg.core.atomic import atomic_path, write_json
from medseg.core.errors import DependencyError, RunError
from medseg.engine.checkpoint import TrainedNet, load_module, read_checkpoint, run_record
from medseg.runs import EXPORT_DIR, checkpoint_path

ONNX_FILE = "model.onnx"


def _split_wrapper(net: nn.Module) -> tuple[nn.Module, dict[str, Any]]:
    """The exportable core and the padding it needs (``multiple``, ``min_size``)."""
    from medseg.models.wrappers import PadToMultiple

    if isinstance(net, PadToMultiple):
        return net.net, {"multiple": net.multiple, "min_size": net.min_size}
    return net, {"multiple": 1, "min_size": 0}


def _stamp(run_dir: str | Path, checkpoint: str) -> dict[str, Any]:
    """Which checkpoint file an export came from (its name, size and modification time)."""
    st = checkpoint_path(run_dir, checkpoint).stat()
    return {"checkpoint": checkpoint, "size": st.st_size, "mtime_ns": st.st_mtime_ns}


def onnx_fresh(run_dir: str | Path, checkpoint: str = "best") -> bool:
    """Whether ``RUN/export/model.onnx`` exists and was exported from the run's current ``checkpoint``."""
    folder = Path(run_dir) / EXPORT_DIR
    try:
        meta = json.loads((folder / "onnx.json").read_text())
        return (folder / ONNX_FILE).is_file() and all(meta.get(k) == v for k, v in _stamp(run_dir, checkpoint).items())
    except (OSError, ValueError, RunError):
        return False


def export_onnx(run_dir: str | Path, checkpoint: str = "best", opset: int = 18) -> Path:
    """Write ``RUN/export/model.onnx`` (+ ``onnx.json``) for the run's network."""
    try:
        import onnx  # noqa: F401
    except ImportError:
        raise DependencyError("ONNX export needs onnx", where="medseg export", fix="pip install 'medseg[onnx]'") from None
    module = load_module(run_dir, checkpoint, "cpu")
    core, pad = _split_wrapper(module.net)
    nd = module.spatial_dims
    mult = [pad["multiple"]] * nd if isinstance(pad["multiple"], int) else list(pad["multiple"])
    ps = module.resolved.patch_size or [64] * nd
    least = [pad["min_size"]] * nd if isinstance(pad["min_size"], int) else list(pad["min_size"])
    size = [max(int(p), int(lo)) for p, lo in zip(ps, least, strict=True)]
    size = [s + (-s) % m for s, m in zip(size, mult, strict=True)]
    x = torch.randn(1, module.hparams["in_channels"], *size)
    out = Path(run_dir) / EXPORT_DIR / ONNX_FILE
    out.parent.mkdir(parents=True, exist_ok=True)
    axes = {0: "batch"} | {i + 2: f"s{i}" for i in range(nd)}
    with atomic_path(out) as tmp, torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the TorchScript exporter's deprecation and tracer notes
        try:
            torch.onnx.export(
                core.eval(), (x,), str(tmp), dynamo=False, input_names=["image"], output_names=["logits"], dynamic_axes={"image": axes}, opset_version=opset
            )
        except Exception:  # a network the tracer cannot export: torch.export (slower, needs onnxscript)
            dims = {0: torch.export.Dim.AUTO} | {i + 2: torch.export.Dim.AUTO for i in range(nd)}
            torch.onnx.export(
                core.eval(), (x,), str(tmp), dynamo=True, dynamic_shapes=(dims,), input_names=["image"], output_names=["logits"], opset_version=opset
            )
    write_json(out.parent / "onnx.json", {**_stamp(run_dir, checkpoint), "padding": pad, "spatial_dims": nd, "classes": module.class_names})
    return out


class OnnxNet(nn.Module):
    """Calls an ONNX Runtime session like a network: ``(B, C, *S)`` tensor in, logits tensor out."""

    def __init__(self, path: Path, threads: int | None = None):
        super().__init__()
        try:
            import onnxruntime as ort
        except ImportError:
            raise DependencyError("the ONNX backend needs onnxruntime", where="--backend onnx", fix="pip install 'medseg[onnx]'") from None
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = threads or torch.get_num_threads()
        self.session = ort.InferenceSession(str(path), sess_options=opts, providers=["CPUExecutionProvider"])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.session.run(None, {"image": np.ascontiguousarray(x.detach().cpu().numpy(), dtype=np.float32)})[0]
        return torch.from_numpy(out)


def load_onnx_module(run_dir: str | Path, checkpoint: str = "best", threads: int | None = None) -> TrainedNet:
    """The run's record with its forward pass served by ONNX Runtime (exported first when missing or stale)."""
    from medseg.models.wrappers import PadToMultiple

    run_dir = Path(run_dir)
    if not onnx_fresh(run_dir, checkpoint):
        export_onnx(run_dir, checkpoint)
    meta = json.loads((run_dir / EXPORT_DIR / "onnx.json").read_text())
    ckpt, _ = read_checkpoint(run_dir, checkpoint)
    hp = ckpt["hyper_parameters"]
    if hp.get("in_channels") is None:
        raise RunError("run has no input description", where=run_dir, fix="retrain the run")
    mult = meta["padding"]["multiple"]
    runner = PadToMultiple(OnnxNet(run_dir / EXPORT_DIR / ONNX_FILE, threads), mult if isinstance(mult, int) else tuple(mult), meta["padding"]["min_size"])
    return TrainedNet(hp, runner, run_record(run_dir, hp), run_dir).eval()
