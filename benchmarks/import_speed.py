"""Import speed and memory: medseg's importers against a plain read with the underlying libraries.

Cases:
  * DICOM: one 100-slice CT series. medseg (``medseg.data.formats.dicom``: scan, sort, checks,
    rescale) vs pydicom (read every file, sort by position, rescale) and SimpleITK's series reader.
  * RLE: a 1,000-slice GI-tract CSV (3 organs per slice, 10 case-days of 100 slices). medseg
    (``kaggle-gi``) vs pandas ``read_csv`` + PIL + a NumPy RLE decode assembling the same volumes.

Each is timed as *read* (the importer's case generator drained, nothing written; the like-for-like
comparison) and as *full import* (``import_dataset``: read + validate + ``.npz`` write).
Peak RSS of a full import is measured in a fresh process for a growing number of cases.

Run:  python benchmarks/import_speed.py [--repeat 3] [--size 256] [--quick]
"""

from __future__ import annotations

import argparse
import json
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

# ---------------------------------------------------------------- fixtures


def phantom(h: int, w: int, k: int, rng: np.random.Generator) -> np.ndarray:
    """A CT-like slice: air outside an ellipse of soft tissue (stored ~1040) with an organ and noise."""
    yy, xx = np.mgrid[:h, :w]
    body = ((yy - h / 2) / (0.42 * h)) ** 2 + ((xx - w / 2) / (0.47 * w)) ** 2 < 1
    organ = ((yy - 0.4 * h) / (0.12 * h)) ** 2 + ((xx - (0.35 + 0.001 * k) * w) / (0.15 * w)) ** 2 < 1
    img = np.where(body, 1040, 0) + np.where(organ, 60, 0)
    return img + np.where(body, rng.normal(0, 12, size=(h, w)), 0).round()


def write_dicom_series(folder: Path, n: int, size: int, seed: int = 0, patient: str = "P1") -> None:
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, generate_uid

    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    study, series, frame = generate_uid(), generate_uid(), generate_uid()
    for k in range(n):
        meta = FileMetaDataset()
        meta.MediaStorageSOPClassUID = CTImageStorage
        meta.MediaStorageSOPInstanceUID = generate_uid()
        meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds = Dataset()
        ds.file_meta = meta
        ds.SOPClassUID, ds.SOPInstanceUID, ds.Modality = CTImageStorage, meta.MediaStorageSOPInstanceUID, "CT"
        ds.PatientID, ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.FrameOfReferenceUID = patient, study, series, frame
        ds.SeriesNumber, ds.InstanceNumber = 1, k + 1
        ds.ImagePositionPatient = [-100.0, -120.0, 50.0 + 1.25 * k]
        ds.ImageOrientationPatient = [1.0, 0.0, 0.0, 0.0, 1.0, 0.0]
        ds.PixelSpacing, ds.SliceThickness = [0.7, 0.7], 1.25
        ds.Rows = ds.Columns = size
        ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 1
        ds.RescaleSlope, ds.RescaleIntercept = 1, -1024
        ds.PixelData = phantom(size, size, k, rng).astype(np.int16).tobytes()
        ds.save_as(folder / f"IM{(k * 37) % n:05d}.dcm", enforce_file_format=True)


def write_gi(root: Path, n_days: int, slices: int, size: int = 266, seed: int = 0) -> None:
    from PIL import Image

    from medseg.data.formats.rle import rle_encode

    rng = np.random.default_rng(seed)
    root.mkdir(parents=True, exist_ok=True)
    yy, xx = np.mgrid[:size, :size]
    lines = ["id,class,segmentation"]
    for d in range(n_days):
        day = f"case{d + 1}_day{d % 3}"
        scans = root / "train" / day.split("_")[0] / day / "scans"
        scans.mkdir(parents=True)
        for s in range(1, slices + 1):
            img = (phantom(size, size, s, rng) * 4).clip(0, 65535).astype(np.uint16)
            Image.fromarray(img).save(scans / f"slice_{s:04d}_{size}_{size}_1.50_1.50.png")
            for j, organ in enumerate(("large_bowel", "small_bowel", "stomach")):
                cy, cx, r = 60 + 60 * j, 80 + 40 * j, 20 + (s % 15)
                m = (yy - cy) ** 2 + (xx - cx) ** 2 < r * r
                lines.append(f"{day}_slice_{s:04d},{organ},{rle_encode(m) if (s + j) % 4 else ''}")
    (root / "train.csv").write_text("\n".join(lines) + "\n")


# ---------------------------------------------------------------- references


def ref_pydicom(folder: Path) -> np.ndarray:
    import pydicom

    slices = [pydicom.dcmread(p) for p in folder.iterdir()]
    slices.sort(key=lambda d: float(d.ImagePositionPatient[2]))
    return np.stack([d.pixel_array.astype(np.float32) * float(d.RescaleSlope) + float(d.RescaleIntercept) for d in slices])


def ref_sitk(folder: Path) -> np.ndarray:
    import SimpleITK as sitk

    reader = sitk.ImageSeriesReader()
    reader.SetFileNames(reader.GetGDCMSeriesFileNames(str(folder)))
    return sitk.GetArrayFromImage(reader.Execute()).astype(np.float32)


def _rle_ref(rle: str, h: int, w: int) -> np.ndarray:
    """The usual Kaggle notebook decoder."""
    s = np.asarray(rle.split(), dtype=int)
    starts, lengths = s[0::2] - 1, s[1::2]
    img = np.zeros(h * w, dtype=np.uint8)
    for lo, n in zip(starts, lengths, strict=True):
        img[lo : lo + n] = 1
    return img.reshape(h, w)


def ref_gi(root: Path) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    import pandas as pd
    from PIL import Image

    df = pd.read_csv(root / "train.csv")
    pngs = {}
    for p in root.rglob("slice_*.png"):
        pngs[f"{p.parent.parent.name}_slice_{p.name.split('_')[1]}"] = p
    df["day"] = df["id"].str.rsplit("_slice_", n=1).str[0]
    classes = ["large_bowel", "small_bowel", "stomach"]
    out = {}
    for day, g in df.groupby("day", sort=True):
        ids = sorted(g["id"].unique())
        imgs, labs = [], []
        for sid in ids:
            im = np.asarray(Image.open(pngs[sid]), dtype=np.float32)
            h, w = im.shape
            lab = np.zeros((3, h, w), bool)
            for _, row in g[g["id"] == sid].iterrows():
                if isinstance(row["segmentation"], str):
                    lab[classes.index(row["class"])] = _rle_ref(row["segmentation"], h, w) > 0
            imgs.append(im)
            labs.append(lab)
        out[day] = (np.stack(imgs)[None], np.stack(labs, axis=1))
    return out


# ---------------------------------------------------------------- medseg


def medseg_read(fmt: str, path: Path) -> int:
    from medseg.data.formats import FORMATS

    n = 0
    for case in FORMATS.get(fmt)(path).cases:
        n += int(case.image.size > 0)
    return n


def medseg_import(fmt: str, path: Path, out: Path) -> int:
    from medseg.data.formats import import_dataset

    return len(import_dataset(fmt, path, out, overwrite=True))


def median_time(fn: Callable[[], object], repeat: int) -> float:
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


# ---------------------------------------------------------------- memory (child process)


def child(kind: str, n_cases: int, work: Path) -> None:
    src = work / f"{kind}_{n_cases}"
    if kind == "rle":
        write_gi(src, n_days=n_cases, slices=40)
        fmt = "kaggle-gi"
    else:
        for i in range(n_cases):
            write_dicom_series(src / f"P{i}", n=40, size=256, seed=i, patient=f"P{i}")
        fmt = "dicom"
    import medseg.data.formats  # noqa: F401  (imports counted in the baseline)

    base = _reset_peak()
    medseg_import(fmt, src, work / f"out_{kind}_{n_cases}")
    print(json.dumps({"kind": kind, "cases": n_cases, "peak_rss_mb": _peak_mb(), "baseline_mb": base}))


def _status_mb(key: str) -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return float(line.split()[1]) / 1024
    return float("nan")


def _reset_peak() -> float:
    """Reset the RSS high-water mark (Linux ``clear_refs``) and return the current RSS in MB."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        pass
    return _status_mb("VmRSS")


def _peak_mb() -> float:
    """Peak RSS since the last reset (VmHWM; ``ru_maxrss`` on systems without /proc)."""
    if Path("/proc/self/status").is_file():
        return _status_mb("VmHWM")
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def rss_curve(kind: str, counts: list[int], work: Path) -> list[dict]:
    rows = []
    for n in counts:
        res = subprocess.run([sys.executable, __file__, "--child", kind, str(n), str(work)], capture_output=True, text=True, check=True)
        rows.append(json.loads(res.stdout.strip().splitlines()[-1]))
    return rows


# ---------------------------------------------------------------- main


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--size", type=int, default=256, help="DICOM rows/columns")
    ap.add_argument("--quick", action="store_true", help="smaller inputs (a smoke run)")
    ap.add_argument("--child", nargs=3, metavar=("KIND", "N", "WORK"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        child(args.child[0], int(args.child[1]), Path(args.child[2]))
        return
    n_slices, n_days, per_day = (20, 2, 20) if args.quick else (100, 10, 100)
    work = Path(tempfile.mkdtemp(prefix="medseg-bench-"))
    try:
        dcm = work / "dicom" / "P1"
        write_dicom_series(dcm, n_slices, args.size)
        gi = work / "gi"
        write_gi(gi, n_days, per_day)
        # correctness first: same voxels as the references
        from medseg.data.formats import FORMATS

        case = next(iter(FORMATS.get("dicom")(dcm.parent).cases))
        assert np.array_equal(case.image[0], ref_pydicom(dcm)) and np.array_equal(case.image[0], ref_sitk(dcm))
        ref = ref_gi(gi)
        for c in FORMATS.get("kaggle-gi")(gi).cases:
            img, lab = ref.pop(c.case_id)
            assert np.array_equal(c.image, img) and np.array_equal(c.label, lab)
        assert not ref
        del ref

        rows = []
        t_ref = median_time(lambda: ref_pydicom(dcm), args.repeat)
        t_sitk = median_time(lambda: ref_sitk(dcm), args.repeat)
        t_read = median_time(lambda: medseg_read("dicom", dcm.parent), args.repeat)
        t_imp = median_time(lambda: medseg_import("dicom", dcm.parent, work / "out_dcm"), args.repeat)
        rows.append(("DICOM series", f"{n_slices} slices {args.size}²", 1, t_ref, t_sitk, t_read, t_imp))
        t_ref = median_time(lambda: ref_gi(gi), args.repeat)
        t_read = median_time(lambda: medseg_read("kaggle-gi", gi), args.repeat)
        t_imp = median_time(lambda: medseg_import("kaggle-gi", gi, work / "out_gi"), args.repeat)
        rows.append(("RLE CSV + PNG", f"{n_days * per_day} slices, {n_days} case-days", n_days, t_ref, None, t_read, t_imp))

        print(f"\nImport speed, seconds per case (median of {args.repeat} runs)\n")
        head = f"{'input':15} {'size':28} {'reference':>10} {'SimpleITK':>10} {'medseg read':>12} {'ratio':>6} {'full import':>12} {'ratio':>6}"
        print(head)
        print("-" * len(head))
        for name, size, n, ref, sitk_t, read, imp in rows:
            sitk_s = f"{sitk_t / n:10.3f}" if sitk_t is not None else f"{'':>10}"
            print(f"{name:15} {size:28} {ref / n:10.3f} {sitk_s} {read / n:12.3f} {read / ref:6.2f} {imp / n:12.3f} {imp / ref:6.2f}")
        print("\nreference: pydicom read + sort + rescale (DICOM); pandas + PIL + NumPy RLE decode (RLE).")
        print("ratio = medseg / reference (target ≤ 1.5 for the read); full import adds validation and the .npz write.\n")

        counts = [1, 2, 4] if args.quick else [2, 8, 32]
        print("Peak RSS of a full import in a fresh process, MB (RSS just before the import in brackets): should stay flat as cases grow")
        for kind, cs in (("rle", counts), ("dicom", counts[:-1] if not args.quick else counts)):
            curve = rss_curve(kind, cs, work)
            print(f"  {kind:6} " + "  ".join(f"{r['cases']:>3} cases: {r['peak_rss_mb']:6.0f} ({r['baseline_mb']:.0f})" for r in curve))
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
