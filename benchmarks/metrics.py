"""HD95 + ASSD + NSD on 3D masks: medseg against MedPy and MONAI, in one process, on the CPU.

Masks are realistic blobs (a smoothed-noise organ inside an ellipsoid, and a prediction that
differs from it by a smooth boundary error) with anisotropic spacing. Each library computes the
metrics under its own convention and medseg is asked for the same convention, so the values must
agree; times are medians of ``--repeats`` runs. MedPy has no NSD: its time covers HD95 + ASSD only.
DeepMind's ``surface-distance`` (surfel convention) is timed too when it is installed.

    python benchmarks/metrics.py                 # 128³ with all three, 256³ without MedPy
    python benchmarks/metrics.py --full          # MedPy at 256³ too (about a minute per repeat)
"""

from __future__ import annotations

import argparse
import importlib.util
import statistics
import time
import warnings
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from scipy import ndimage

from medseg.metrics.surface import surface_metrics

SPACING = (2.0, 0.8, 0.8)
TOLERANCE_MM = 1.0


def blobs(n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """A reference organ and a prediction of it, both ``n³`` booleans."""
    rng = np.random.default_rng(seed)
    zz, yy, xx = np.ogrid[:n, :n, :n]
    c = n / 2
    r = np.sqrt(((zz - c) / (0.35 * n)) ** 2 + ((yy - c) / (0.30 * n)) ** 2 + ((xx - c) / (0.28 * n)) ** 2)

    def noise(s: int) -> np.ndarray:
        g = np.random.default_rng(s).standard_normal((n // 8,) * 3).astype(np.float32)
        return ndimage.zoom(ndimage.gaussian_filter(g, 1.0), 8, order=1)

    organ = r + 0.6 * noise(int(rng.integers(1 << 30)))
    ref = organ < 1.0
    pred = (organ + 0.15 * noise(int(rng.integers(1 << 30))) + 0.03) < 1.0  # a smooth boundary error, slightly under-segmented
    return ref, pred


def timed(fn: Callable[[], Any], repeats: int) -> tuple[float, Any]:
    times, out = [], None
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times), out


def run_medpy(pred: np.ndarray, ref: np.ndarray) -> dict[str, float]:
    from medpy.metric.binary import assd, hd95

    return {"hd95": float(hd95(pred, ref, voxelspacing=SPACING)), "assd": float(assd(pred, ref, voxelspacing=SPACING))}


def run_deepmind(pred: np.ndarray, ref: np.ndarray) -> dict[str, float]:
    import surface_distance as sd

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        s = sd.compute_surface_distances(ref, pred, SPACING)
    return {
        "hd95": float(sd.compute_robust_hausdorff(s, 95)),
        "assd": float(np.mean(sd.compute_average_surface_distance(s))),
        "nsd": float(sd.compute_surface_dice_at_tolerance(s, TOLERANCE_MM)),
    }


def run_monai(pred_t: torch.Tensor, ref_t: torch.Tensor) -> dict[str, float]:
    from monai.metrics import compute_average_surface_distance, compute_hausdorff_distance, compute_surface_dice

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return {
            "hd95": float(compute_hausdorff_distance(pred_t, ref_t, percentile=95, spacing=SPACING)[0, 0]),
            "assd": float(compute_average_surface_distance(pred_t, ref_t, symmetric=True, spacing=SPACING)[0, 0]),
            "nsd": float(compute_surface_dice(pred_t, ref_t, [TOLERANCE_MM], spacing=SPACING)[0, 0]),
        }


def one_hot(m: np.ndarray) -> torch.Tensor:
    return torch.as_tensor(np.stack([~m, m])[None])


def agree(a: dict[str, float], b: dict[str, float]) -> str:
    worst = max(abs(a[k] - b[k]) / max(1.0, abs(b[k])) for k in b)
    return f"max rel. diff {worst:.1e} " + ("(agree)" if worst < 1e-5 else "(DISAGREE)")


def bench(n: int, repeats: int, with_medpy: bool) -> None:
    ref, pred = blobs(n)
    print(f"\n== {n}³  reference {int(ref.sum()):,} voxels, prediction {int(pred.sum()):,} voxels")

    def ours(mode: str, nsd: str) -> dict[str, float]:
        return surface_metrics(pred, ref, SPACING, tolerance_mm=TOLERANCE_MM, hd95_mode=mode, assd_mode=mode, nsd_mode=nsd)  # type: ignore[arg-type]

    ours("monai", "monai")  # warm-up (imports, thread pools)
    t_ms_monai, ms_monai = timed(lambda: ours("monai", "monai"), repeats)
    pt, rt = one_hot(pred), one_hot(ref)
    t_monai, monai = timed(lambda: run_monai(pt, rt), repeats)
    print(f"medseg (MONAI convention)  {t_ms_monai:8.3f} s   hd95 {ms_monai['hd95']:.4f}  assd {ms_monai['assd']:.4f}  nsd {ms_monai['nsd']:.4f}")
    print(f"MONAI                      {t_monai:8.3f} s   hd95 {monai['hd95']:.4f}  assd {monai['assd']:.4f}  nsd {monai['nsd']:.4f}")
    print(f"  → medseg {t_monai / t_ms_monai:.1f}× faster than MONAI; {agree(ms_monai, monai)}")
    t_ms_dm, ms_dm = timed(lambda: ours("deepmind", "deepmind"), repeats)
    print(f"medseg (DeepMind surfels)  {t_ms_dm:8.3f} s   hd95 {ms_dm['hd95']:.4f}  assd {ms_dm['assd']:.4f}  nsd {ms_dm['nsd']:.4f}")
    if importlib.util.find_spec("surface_distance") is not None:
        t_dm, dm = timed(lambda: run_deepmind(pred, ref), repeats)
        print(f"DeepMind surface-distance  {t_dm:8.3f} s   hd95 {dm['hd95']:.4f}  assd {dm['assd']:.4f}  nsd {dm['nsd']:.4f}")
        print(f"  → medseg {t_dm / t_ms_dm:.1f}× faster than DeepMind's package; {agree(ms_dm, dm)}")
    if not with_medpy:
        print(f"MedPy skipped at {n}³ (pass --full to run it)")
        return
    t_ms_medpy, ms_medpy = timed(lambda: ours("medpy", "monai"), repeats)
    t_medpy, medpy = timed(lambda: run_medpy(pred, ref), repeats)
    print(f"medseg (MedPy convention)  {t_ms_medpy:8.3f} s   hd95 {ms_medpy['hd95']:.4f}  assd {ms_medpy['assd']:.4f}  nsd {ms_medpy['nsd']:.4f}")
    print(f"MedPy (HD95 + ASSD only)   {t_medpy:8.3f} s   hd95 {medpy['hd95']:.4f}  assd {medpy['assd']:.4f}")
    print(f"  → medseg {t_medpy / t_ms_medpy:.1f}× faster than MedPy; {agree(ms_medpy, medpy)}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[128, 256])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--full", action="store_true", help="run MedPy at every size (slow at 256³)")
    ap.add_argument("--medpy-max", type=int, default=128, help="largest size MedPy runs at without --full")
    args = ap.parse_args()
    print(f"spacing {SPACING} mm, NSD tolerance {TOLERANCE_MM} mm, torch threads {torch.get_num_threads()}, medians of {args.repeats}")
    for n in args.sizes:
        bench(n, args.repeats, with_medpy=args.full or n <= args.medpy_max)


if __name__ == "__main__":
    main()
