"""What ``medseg auto`` prints and leaves: the plan summary, the chosen run adopted as ``RUN``, its ONNX export."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any


def say_plan(auto: Any, plan: dict[str, Any], runs: dict[str, Any], sizes: dict[str, Any], est: dict[str, Any]) -> None:
    auto.echo(f"plan: {', '.join(plan['configurations'])} ({plan['why']}); spacing {plan['target_spacing']}, normalisation {plan['normalization']}")
    for name, raw in runs.items():
        p, s = raw["model"]["params"], sizes[name]
        ds = ", deep supervision" if p.get("n_deep_supervision") else ""
        kind, w = ("residual U-Net", p["channels"]) if raw["model"]["name"] == "unet" else ("U-Net", p["filters"])
        auto.echo(
            f"  {name}: {kind} {len(w)} stages {w[0]}→{w[-1]} channels{ds}, "
            f"batch {raw['data']['batch_size']} × patch {'×'.join(map(str, s.get('patch_size') or plan['configurations'][name]['patch_size']))}, "
            f"{s['step_s']:.3f} s/step{' (bfloat16)' if raw['train']['precision'] == 'bf16-mixed' else ''} → ~{s['steps']} steps in {s['train_s']:.0f} s"
        )
    mem = "GPU" if auto.state.get("device") == "cuda" else "process"
    auto.echo(f"estimate: {est['total_s']:.0f} s in all, peak {mem} memory {est['peak_mb']:.0f} MB")


def adopt(run_dir: Path, out: Path) -> None:
    """Make ``out`` the run folder of ``run_dir`` (its files copied next to ``data/``, ``candidates/``…)."""
    for p in run_dir.iterdir():
        dest = out / p.name
        if p.is_dir():
            shutil.copytree(p, dest, dirs_exist_ok=True)
        else:
            shutil.copy2(p, dest)


def export(out: Path, folds: int) -> dict[str, Any]:
    """ONNX export of the chosen network(s): ``medseg predict`` on the CPU then starts without the network libraries."""
    from medseg.engine.onnx import export_onnx
    from medseg.runs import read_ensemble

    done, failed = [], {}
    for run in read_ensemble(out) if folds else [out]:
        try:
            done.append(str(export_onnx(run)))
        except Exception as e:  # an export is an optimisation: predict falls back to PyTorch
            failed[str(run)] = f"{type(e).__name__}: {str(e).splitlines()[0][:200] if str(e) else ''}"
    return {"onnx": done, "failed": failed}
