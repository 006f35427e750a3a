"""Data pipeline: medseg's cached loader and augmentation against MONAI references, in one process, on the CPU.

Three measurements on the same synthetic cardiac volumes (built-in ``phantom3d``, written once as a
medseg data set and as NIfTI files):

1. **epoch time** — one patch per case: medseg reads the memory-mapped cache (``medseg prepare``) and
   crops a patch with 1/3 foreground oversampling; the reference loads the NIfTI files and runs
   ``LoadImaged → EnsureChannelFirstd → Orientationd → Spacingd → NormalizeIntensityd →
   RandCropByPosNegLabeld`` (pos 1 : neg 2, the same 1/3) every epoch. Target ≥ 10×.
2. **augmentation throughput** — patches per second on one thread (= per loader worker) for the
   ``default`` preset on 96³ patches, against the same transforms chained as a MONAI ``Compose``
   (``RandRotated``, ``RandZoomd``, ``RandGaussianNoised``, ``RandGaussianSmoothd``, ``RandScaleIntensityd``,
   ``RandScaleIntensityFixedMeand``, ``RandSimulateLowResolutiond``, ``RandAdjustContrastd``, ``RandFlipd`` × 3),
   same probabilities and ranges. Target ≥ 1.5×.
3. **peak RSS of an epoch** when the data set grows 10× (the cache copied under new case ids), each in a
   fresh process, loader + ``default`` augmentation. Target ≤ 1.1×.

Times are medians of ``--repeats`` runs, ratios are reference / medseg.

    python benchmarks/data_pipeline.py              # 20 volumes of 64×96×96, patches 64³ (a few minutes on 2 cores)
    python benchmarks/data_pipeline.py --large      # 20 volumes of 128×160×160, patches 96³
"""

from __future__ import annotations

import argparse
import json
import math
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch

warnings.filterwarnings("ignore")


def build(root: Path, n: int, size: int, depth: int) -> tuple[Path, list[dict[str, str]]]:
    """The data set folder and NIfTI copies of its cases."""
    import nibabel as nib

    from medseg.data.builtin import make_builtin
    from medseg.data.store import write_dataset

    data = make_builtin("phantom3d", n_patients=n, size=size, depth=depth, slice_thickness=1.5, seed=0)
    cases = list(data.cases)
    ds_dir = root / "dataset"
    write_dataset(ds_dir, data.info, cases)
    files = []
    (root / "nifti").mkdir()
    for c in cases:
        img_p, lab_p = root / "nifti" / f"{c.case_id}_img.nii", root / "nifti" / f"{c.case_id}_lab.nii"
        nib.save(nib.Nifti1Image(c.image[0], c.affine), img_p)
        nib.save(nib.Nifti1Image(c.label.astype(np.int16), c.affine), lab_p)
        files.append({"image": str(img_p), "label": str(lab_p)})
    return ds_dir, files


def timed(fn: Any, repeats: int) -> list[float]:
    out = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t)
    return out


def config(ds_dir: Path, cache: Path, patch: int, augment: str = "none") -> Any:
    from medseg.config import config_from_dict

    return config_from_dict(
        {
            "data": {
                "dataset": str(ds_dir),
                "patch_size": [patch] * 3,
                "batch_size": 1,
                "augment": augment,
                "preprocess": {"enabled": True, "orientation": "RAS", "spacing": [1.5, 1.5, 1.5], "normalize": "zscore", "cache_dir": str(cache)},
                "split": {"ratios": [1.0, 0.0, 0.0]},
            }
        }
    )


def epoch_benchmark(ds_dir: Path, files: list[dict[str, str]], cache: Path, patch: int, repeats: int) -> dict[str, Any]:
    from monai import transforms as mt

    from medseg.data.loading import CachedItems, CaseItems
    from medseg.data.preprocessing import Cache, prepare, resolve_spec
    from medseg.data.sampling import PatchSampler
    from medseg.data.source import open_dataset

    cfg = config(ds_dir, cache, patch)
    ds = open_dataset(cfg)
    spec = resolve_spec(cfg, ds)
    t0 = time.perf_counter()
    prepare(ds, spec, out=cache, overwrite=True, progress=False)
    prepare_s = time.perf_counter() - t0
    items = CaseItems(CachedItems(Cache(cache, spec), ds.case_ids), None, PatchSampler([patch] * 3, foreground_oversample=1 / 3), multi_label=False)

    def ours() -> None:
        for i in range(len(items)):
            b = items[i]
            assert b["image"].shape == (1, patch, patch, patch)

    keys = ["image", "label"]
    ref_tf = mt.Compose(
        [
            mt.LoadImaged(keys=keys),
            mt.EnsureChannelFirstd(keys=keys),
            mt.Orientationd(keys=keys, axcodes="RAS"),
            mt.Spacingd(keys=keys, pixdim=(1.5, 1.5, 1.5), mode=("bilinear", "nearest")),
            mt.NormalizeIntensityd(keys="image"),
            mt.RandCropByPosNegLabeld(keys=keys, label_key="label", spatial_size=[patch] * 3, pos=1, neg=2, num_samples=1),
        ]
    )
    ref_tf.set_random_state(0)

    def ref() -> None:
        for f in files:
            out = ref_tf(dict(f))
            assert tuple(out[0]["image"].shape[1:]) == (patch,) * 3 or min(out[0]["image"].shape[1:]) < patch

    ours()  # warm-up: page cache and imports, for both
    ref()
    t_ours, t_ref = [], []
    for _ in range(repeats):  # interleaved, so load from other processes hits both alike
        t_ours += timed(ours, 1)
        t_ref += timed(ref, 1)
    mo, mr = statistics.median(t_ours), statistics.median(t_ref)
    return {"cases": len(files), "prepare_s": prepare_s, "medseg_epoch_s": mo, "monai_epoch_s": mr, "ratio": mr / mo}


def reference_augmentation() -> Any:
    from monai import transforms as mt

    k = ["image", "label"]
    r = math.radians(30)
    return mt.Compose(
        [
            mt.RandRotated(keys=k, range_x=r, range_y=r, range_z=r, prob=0.2, mode=("bilinear", "nearest"), padding_mode="zeros"),
            mt.RandZoomd(keys=k, prob=0.2, min_zoom=0.7, max_zoom=1.4, mode=("trilinear", "nearest"), keep_size=True),
            mt.RandGaussianNoised(keys="image", prob=0.1, std=0.1),
            mt.RandGaussianSmoothd(keys="image", prob=0.2, sigma_x=(0.5, 1.0), sigma_y=(0.5, 1.0), sigma_z=(0.5, 1.0)),
            mt.RandScaleIntensityd(keys="image", prob=0.15, factors=0.25),
            mt.RandScaleIntensityFixedMeand(keys="image", prob=0.15, factors=0.25, preserve_range=True),
            mt.RandSimulateLowResolutiond(keys="image", prob=0.25, zoom_range=(0.5, 1.0)),
            mt.RandAdjustContrastd(keys="image", prob=0.3, gamma=(0.7, 1.5)),
            *[mt.RandFlipd(keys=k, prob=0.5, spatial_axis=a) for a in range(3)],
        ]
    )


def augmentation_benchmark(patch: int, n: int, repeats: int) -> dict[str, Any]:
    from medseg.data.augment import augmentation_pipeline

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    rng = np.random.default_rng(0)
    img = rng.normal(size=(1, patch, patch, patch)).astype(np.float32)
    lab = (rng.random((1, patch, patch, patch)) > 0.8).astype(np.int64)
    ours, ref = augmentation_pipeline("default", 3), reference_augmentation()
    rates: dict[str, list[float]] = {"medseg": [], "monai": []}
    for r in range(repeats):
        for name, tf in (("medseg", ours), ("monai", ref)):
            tf.set_random_state(r)  # the same seeds for both, round by round
            t = time.perf_counter()
            for _ in range(n):
                tf({"image": img, "label": lab})
            rates[name].append(n / (time.perf_counter() - t))
    torch.set_num_threads(threads)
    mo, mr = statistics.median(rates["medseg"]), statistics.median(rates["monai"])
    return {"patch": patch, "medseg_patches_per_s": mo, "monai_patches_per_s": mr, "ratio": mo / mr}


def rss_child(ds_dir: str, cache: str, patch: int) -> None:
    """One epoch of the training loader (default augmentation) in this process; prints the peak RSS in MB."""
    from medseg.data.loading import SegDataModule
    from medseg.data.source import open_dataset, resolve_splits

    cfg = config(Path(ds_dir), Path(cache), patch, augment="default")
    ds = open_dataset(cfg)
    dm = SegDataModule(cfg, ds, resolve_splits(cfg, ds))
    torch.manual_seed(0)
    n = 0
    for batch in dm.train_dataloader():
        n += batch["image"].shape[0]
    print(json.dumps({"patches": n, "peak_rss_mb": peak_rss_mb()}))


def peak_rss_mb() -> float:
    """This process's peak resident set (``VmHWM``; ``ru_maxrss`` would include the parent's peak across exec)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def grow(ds_dir: Path, cache: Path, factor: int, out_ds: Path, out_cache: Path) -> None:
    """A data set and its cache ``factor`` times larger: every case copied under new ids (files copied, not linked)."""
    from medseg.core.atomic import write_json

    info = json.loads((ds_dir / "dataset.json").read_text())
    cinfo = json.loads((cache / "cache.json").read_text())
    (out_ds / "cases").mkdir(parents=True)
    (out_cache / "cases").mkdir(parents=True)
    entries, centries = [], {}
    for k in range(factor):
        for e in info["cases"]:
            cid = f"{e['id']}_x{k}"
            shutil.copy(ds_dir / e["file"], out_ds / "cases" / f"{cid}.npz")
            entries.append({**e, "id": cid, "patient": f"{e['patient']}_x{k}", "file": f"cases/{cid}.npz"})
            ce = dict(cinfo["cases"][e["id"]])
            for key in ("image", "label", "locs", "record"):
                new = f"cases/{cid}.{key if key != 'record' else 'json'}" + (".npy" if key != "record" else "")
                shutil.copy(cache / ce[key], out_cache / new)
                ce[key] = new
            centries[cid] = ce
    write_json(out_ds / "dataset.json", {**info, "cases": entries})
    write_json(out_cache / "cache.json", {**cinfo, "cases": centries, "dataset": str(out_ds.resolve())})


def rss_benchmark(root: Path, ds_dir: Path, cache: Path, patch: int, factor: int) -> dict[str, Any]:
    big_ds, big_cache = root / "dataset_x10", root / "cache_x10"
    grow(ds_dir, cache, factor, big_ds, big_cache)
    out = {}
    probe = f"import sys; sys.path.insert(0, {str(Path(__file__).parent)!r}); import medseg.data.pipeline, data_pipeline as b; print(b.peak_rss_mb())"
    base = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True)
    out["imports_rss_mb"] = float(base.stdout.strip().splitlines()[-1])
    for name, d, c in (("1x", ds_dir, cache), (f"{factor}x", big_ds, big_cache)):
        r = subprocess.run([sys.executable, __file__, "--rss-child", str(d), str(c), str(patch)], capture_output=True, text=True)
        if r.returncode:
            raise SystemExit(r.stderr)
        out[name] = json.loads(r.stdout.strip().splitlines()[-1])
    out["ratio"] = out[f"{factor}x"]["peak_rss_mb"] / out["1x"]["peak_rss_mb"]
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cases", type=int, default=20)
    ap.add_argument("--large", action="store_true", help="128×160×160 volumes and 96³ patches")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--aug-patches", type=int, default=20, help="patches per throughput round")
    ap.add_argument("--skip-rss", action="store_true", help="leave out [3] (it copies the data set 10×: about 4 GB with --large)")
    ap.add_argument("--rss-child", nargs=3, metavar=("DATASET", "CACHE", "PATCH"), help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.rss_child:
        rss_child(a.rss_child[0], a.rss_child[1], int(a.rss_child[2]))
        return
    size, depth, patch = (160, 128, 96) if a.large else (96, 64, 64)
    with tempfile.TemporaryDirectory(prefix="medseg-bench-") as tmp:
        root = Path(tmp)
        t = time.perf_counter()
        ds_dir, files = build(root, a.cases, size, sigmas=depth)
        print(f"{a.cases} phantom volumes of {depth}×{size}×{size} written (data set + NIfTI) in {time.perf_counter() - t:.1f} s")
        cache = root / "cache"
        e = epoch_benchmark(ds_dir, files, cache, patch, a.repeats)
        print(f"\n[1] epoch of {e['cases']} patches {patch}³ (median of {a.repeats}); prepare once: {e['prepare_s']:.1f} s")
        print(f"    medseg cached     {e['medseg_epoch_s']:8.3f} s")
        print(f"    MONAI uncached    {e['monai_epoch_s']:8.3f} s")
        print(f"    speed-up          {e['ratio']:8.1f}×   (target ≥ 10×)")
        g = augmentation_benchmark(96, a.aug_patches, a.repeats)
        print(f"\n[2] augmentation, default preset, 96³, one thread (median of {a.repeats} rounds of {a.aug_patches})")
        print(f"    medseg            {g['medseg_patches_per_s']:8.2f} patches/s")
        print(f"    MONAI Compose     {g['monai_patches_per_s']:8.2f} patches/s")
        print(f"    speed-up          {g['ratio']:8.2f}×   (target ≥ 1.5×)")
        if a.skip_rss:
            return
        r = rss_benchmark(root, ds_dir, cache, patch, 10)
        print(f"\n[3] peak RSS of a loader epoch (default augmentation), fresh process each; imports alone {r['imports_rss_mb']:.0f} MB")
        print(f"    {a.cases:4d} cases        {r['1x']['peak_rss_mb']:8.0f} MB")
        print(f"    {10 * a.cases:4d} cases        {r['10x']['peak_rss_mb']:8.0f} MB")
        print(f"    ratio             {r['ratio']:8.2f}×   (target ≤ 1.1×)")


if __name__ == "__main__":
    main()
