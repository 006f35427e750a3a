"""``medseg auto`` against nnU-Net v2, end to end from the shell, and against hand-tuned configs.

1. **nuclei proxy** (12 train / 4 test 128² tiles, ``tests/releases.py::nuclei_tiles``, an nnU-Net raw PNG folder):
   ``medseg auto DATA --out RUN`` with no other flag, then ``medseg predict RUN DATA/imagesTs``, each timed from the
   shell (a fresh process, start-up included); Dice on the test tiles. The nnU-Net v2 reference is
   a script that runs ``nnUNetv2_plan_and_preprocess``, ``nnUNetv2_train … 2d all -tr nnUNetTrainer_30x50 -device cpu``
   and ``nnUNetv2_predict`` and writes ``times.txt`` (``plan_s=… train_s=… predict_s=…`` and the test Dice): its
   ``times.txt`` is read when given (``--nnunet-times``), or it is run (``--run-nnunet SCRIPT``). Targets: Dice ≥
   nnU-Net's, auto end to end ≤ 180 s on a 2-core CPU, predict of 4 tiles ≤ 5 s (median of ``--repeats``).
2. **volumes** (``--volumes``): ``medseg auto --time-budget 10m`` on ``phantom3d`` and ``mni152-tissue`` against a
   hand-tuned config (``--hand NAME=CONFIG.yaml``), validation Dice of both. Target: within 2 %.
3. The estimate printed before training against the measured time (``auto.json``): target within ±30 %.

The load average is printed: timings mean something only on a quiet machine.

    python benchmarks/auto.py --data Dataset777_Nuclei --nnunet-times times.txt
    python benchmarks/auto.py --volumes --skip-nuclei    # hand configs: benchmarks/configs/hand_*.yaml
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
PATHS = [str(ROOT / "src"), str(ROOT / "tests"), os.environ.get("PYTHONPATH")]
ENV = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in PATHS if p), "PYTHONWARNINGS": "ignore"}
MEDSEG = [sys.executable, "-m", "medseg.cli"]


def shell(args: list[str], timeout: float = 3600) -> tuple[float, str]:
    """Wall seconds of a fresh process and its output; a failure stops the benchmark with the output."""
    t0 = time.perf_counter()
    res = subprocess.run(args, env=ENV, capture_output=True, text=True, timeout=timeout)
    dt = time.perf_counter() - t0
    if res.returncode != 0:
        sys.exit(f"failed ({res.returncode}): {' '.join(args)}\n{res.stdout[-3000:]}\n{res.stderr[-3000:]}")
    return dt, res.stdout + res.stderr


def dice_folder(pred: Path, ref: Path) -> float:
    """Mean foreground Dice of the PNG masks in ``pred`` against ``ref`` (read with Pillow, any value > 0 is foreground)."""
    from PIL import Image

    values = []
    for r in sorted(ref.glob("*.png")):
        p = pred / r.name
        a, b = np.asarray(Image.open(p)) > 0, np.asarray(Image.open(r)) > 0
        values.append(2 * (a & b).sum() / max(a.sum() + b.sum(), 1))
    return float(np.mean(values))


def nnunet_reference(times: Path | None, script: Path | None) -> dict[str, float] | None:
    if script is not None:
        subprocess.run(["nice", "-n", "19", str(script)], check=True)
        times = script.parent / "times.txt"
    if times is None or not times.is_file():
        return None
    text = times.read_text()
    out: dict[str, float] = {}
    for tok in text.split():
        if "=" in tok:
            k, v = tok.split("=")
            out[k] = float(v)
    if "mean" in text:
        out["dice"] = float(text.rsplit("mean", 1)[1].split()[0])
    return out


def nuclei(data: Path | None, repeats: int, work: Path) -> dict[str, float]:
    if data is None:
        from releases import nuclei_tiles

        data = nuclei_tiles(work / "raw").root
    run = work / "run"
    auto_s, log = shell([*MEDSEG, "auto", str(data), "--out", str(run)])
    pred_s = []
    for i in range(repeats):
        dt, _ = shell([*MEDSEG, "predict", str(run), str(data / "imagesTs"), "--out", str(work / f"pred{i}"), "--no-progress"])
        pred_s.append(dt)
    state = json.loads((run / "auto.json").read_text())
    dice = dice_folder(work / "pred0", data / "labelsTs")
    print(log.strip().splitlines()[-1] if log.strip() else "")
    return {
        "auto_s": auto_s,
        "predict_s": statistics.median(pred_s),
        "end_to_end_s": auto_s + pred_s[0],
        "dice": dice,
        "estimate_s": state["estimate"]["total_s"],
        "measured_s": state["measured"]["total_s"],
        "val_dice": float(next(iter(v for k, v in state["stages"].items() if k.startswith("train.")))["best_val_dice"]),
    }


def volumes(budget: str, hand: dict[str, str], work: Path, names: tuple[str, ...] = ("phantom3d", "mni152-tissue")) -> list[dict[str, object]]:
    from medseg.data.builtin import materialize

    rows: list[dict[str, object]] = []
    for name in names:
        folder = materialize(name, {}, work / "cache")
        auto_s, _ = shell([*MEDSEG, "auto", str(folder), "--out", str(work / f"auto-{name}"), "--time-budget", budget])
        state = json.loads((work / f"auto-{name}" / "auto.json").read_text())
        scores = {k: v.get("best_val_dice") for k, v in state["stages"].items() if k.startswith("train.")}
        row: dict[str, object] = {"data": name, "auto_s": round(auto_s), "auto_val_dice": scores, "chosen": state["decisions"]["configuration"]["value"]}
        if name in hand:  # trained on auto's split, so both validate on the same patients
            split = work / f"auto-{name}" / "splits.json"
            sets = ["--set", f"data.dataset={folder}", "--set", f"data.split.file={split}"]
            hand_s, _ = shell([*MEDSEG, "train", hand[name], "--out", str(work / f"hand-{name}"), "--no-progress", *sets])
            info = json.loads((work / f"hand-{name}" / "run.json").read_text())
            row.update(hand_s=round(hand_s), hand_val_dice=info["best_metric"]["value"])
        rows.append(row)
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, help="the nuclei nnU-Net raw folder (default: built by tests/releases.py)")
    ap.add_argument("--nnunet-times", type=Path, help="times.txt of an nnU-Net run on the same data")
    ap.add_argument("--run-nnunet", type=Path, help="run this nnU-Net script first (nice -n 19)")
    ap.add_argument("--repeats", type=int, default=5, help="predict timings (median)")
    ap.add_argument("--volumes", action="store_true", help="also phantom3d and mni152-tissue with --time-budget")
    ap.add_argument("--budget", default="10m")
    ap.add_argument("--work", type=Path, help="keep the runs and predictions in this (new) folder")
    ap.add_argument(
        "--hand",
        action="append",
        default=[f"phantom3d={ROOT / 'benchmarks/configs/hand_phantom3d.yaml'}", f"mni152-tissue={ROOT / 'benchmarks/configs/hand_mni152_tissue.yaml'}"],
        help="NAME=CONFIG.yaml: the hand-tuned config of a volume data set (default: benchmarks/configs/hand_*.yaml)",
    )
    ap.add_argument("--skip-nuclei", action="store_true", help="only the --volumes part")
    ap.add_argument("--datasets", default="phantom3d,mni152-tissue", help="the --volumes data sets")
    args = ap.parse_args()
    print(f"load average before: {os.getloadavg()[0]:.2f} (1 min), {os.cpu_count()} CPU(s)")
    ref = nnunet_reference(args.nnunet_times, args.run_nnunet)
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp) if args.work is None else args.work
        work.mkdir(parents=True, exist_ok=True)
        if not args.skip_nuclei:
            ours = nuclei(args.data, args.repeats, work)
            print(f"load average after: {os.getloadavg()[0]:.2f}")
            print("\nnuclei proxy                     medseg auto      nnU-Net v2")
            n = ref or {}
            print(f"test Dice                        {ours['dice']:.4f}          {n.get('dice', float('nan')):.4f}")
            nn_total = sum(n.get(k, 0.0) for k in ("plan_s", "train_s", "predict_s"))
            print(f"end to end (s)                   {ours['end_to_end_s']:.0f}              {nn_total:.0f}   ratio {nn_total / ours['end_to_end_s']:.1f}×")
            print(f"predict 4 tiles (s, median)      {ours['predict_s']:.2f}            {n.get('predict_s', float('nan')):.1f}")
            err = ours["measured_s"] / ours["estimate_s"] - 1
            print(f"estimate vs measured (s)         {ours['estimate_s']:.0f} vs {ours['measured_s']:.0f} ({100 * err:+.0f} %)")
            print(
                f"targets: Dice ≥ nnU-Net {'met' if ref and ours['dice'] >= n['dice'] else 'NOT met' if ref else '(no reference)'}; "
                f"≤ 180 s {'met' if ours['end_to_end_s'] <= 180 else 'NOT met'}; predict ≤ 5 s {'met' if ours['predict_s'] <= 5 else 'NOT met'}; "
                f"estimate ±30 % {'met' if abs(err) <= 0.3 else 'NOT met'}"
            )
        if args.volumes:
            hand = dict(h.split("=", 1) for h in args.hand)
            for row in volumes(args.budget, hand, work, tuple(args.datasets.split(","))):
                if "hand_val_dice" in row:
                    best = max(v for v in row["auto_val_dice"].values() if v is not None)  # type: ignore[union-attr]
                    row["auto_vs_hand"] = best - row["hand_val_dice"]  # type: ignore[operator]
                    row["target"] = "met" if row["auto_vs_hand"] >= -0.02 else "NOT met"  # type: ignore[operator]
                print(json.dumps(row))


if __name__ == "__main__":
    main()
