"""ONNX export of a run's network and an ONNX Runtime backend for the :class:`~medseg.engine.inferer.Inferer`.

The network inside medseg's pad-to-multiple wrapper is exported with dynamic batch and spatial
axes; padding and cropping stay in PyTorch around the ONNX Runtime session, so any input size works
exactly as with the eager model.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn as nn

from medseg.core.atomic import atomic_path, write_json
from medseg.core.errors import DependencyError, RunError
from medseg.engine.checkpoint import load_module
from medseg.engine.module import SegModule
from medseg.runs import EXPORT_DIR

ONNX_FILE = "model.onnx"


def _split_wrapper(net: nn.Module) -> tuple[nn.Module, dict[str, Any]]:
    """The exportable core and the padding it needs (``multiple``, ``min_size``)."""
    from medseg.models.wrappers import PadToMultiple

    if isinstance(net, PadToMultiple):
        return net.net, {"multiple": net.multiple, "min_size": net.min_size}
    return net, {"multiple": 1, "min_size": 0}


def export_onnx(run_dir: str | Path, checkpoint: str = "best", opset: int = 18) -> Path:
    """Write ``RUN/export/model.onnx`` (+ ``onnx.json``) for the run's network."""
    try:
        import onnx  # noqa: F401
        import onnxscript  # noqa: F401
    except ImportError:
        raise DependencyError("ONNX export needs onnx and onnxscript", where="medseg export", fix="pip install 'medseg[onnx]'") from None
    module = load_module(run_dir, checkpoint, "cpu")
    core, pad = _split_wrapper(module.net)
    nd = module.spatial_dims
    mult = [pad["multiple"]] * nd if isinstance(pad["multiple"], int) else list(pad["multiple"])
    ps = module.resolved.patch_size or [64] * nd
    size = [max(int(p), pad["min_size"]) for p in ps]
    size = [s + (-s) % m for s, m in zip(size, mult, strict=True)]
    x = torch.randn(1, module.hparams["in_channels"], *size)
    dims = {0: torch.export.Dim.AUTO} | {i + 2: torch.export.Dim.AUTO for i in range(nd)}
    out = Path(run_dir) / EXPORT_DIR / ONNX_FILE
    out.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(out) as tmp, torch.no_grad():
        torch.onnx.export(core.eval(), (x,), str(tmp), dynamo=True, dynamic_shapes=(dims,), input_names=["image"], output_names=["logits"], opset_version=opset)
    write_json(out.parent / "onnx.json", {"checkpoint": checkpoint, "padding": pad, "spatial_dims": nd, "classes": module.class_names})
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


def load_onnx_module(run_dir: str | Path, checkpoint: str = "best", threads: int | None = None) -> SegModule:
    """The run's module with its forward pass served by ONNX Runtime (export first if needed)."""
    from medseg.models.wrappers import PadToMultiple

    run_dir = Path(run_dir)
    path = run_dir / EXPORT_DIR / ONNX_FILE
    meta_path = run_dir / EXPORT_DIR / "onnx.json"
    if not path.is_file() or not meta_path.is_file() or json.loads(meta_path.read_text())["checkpoint"] != checkpoint:
        export_onnx(run_dir, checkpoint)
    meta = json.loads(meta_path.read_text())
    module = load_module(run_dir, checkpoint, "cpu")
    if module.hparams["in_channels"] is None:
        raise RunError("run has no input description", where=run_dir, fix="retrain the run")
    mult = meta["padding"]["multiple"]
    runner = PadToMultiple(OnnxNet(path, threads), mult if isinstance(mult, int) else tuple(mult), meta["padding"]["min_size"])
    module.__dict__["_forward"] = runner
    return module
