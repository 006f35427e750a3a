"""Sliding-window inference: medseg vs MONAI (time, peak memory, same masks), the whole Inferer path, and ONNX Runtime vs eager.

A 3D U-Net (MONAI, 4 levels) predicts a random volume with a Gaussian-blended sliding window. Both
sides use the same network, window size, overlap and batch of windows, in this process; peak memory
is the rise of the process's resident-set high-water mark (reset before each run through
/proc/self/clear_refs). medseg finalises slices as soon as no later window touches them, so its
blending buffer spans about one window depth instead of the whole volume. The Inferer line predicts the
same volume as a ``Case`` (z-score, window, argmax, back to NumPy): its cost over the window alone is the
price of the one inference path.

    python benchmarks/inference.py                 # 160×160×96 volume, 64³ windows
    python benchmarks/inference.py --full          # 256×256×160 volume, 96³ windows (slow on a CPU)
"""

from __future__ import annotations

import argparse
import ctypes
import gc
import re
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from monai.inferers import sliding_window_inference
from monai.networks.nets import UNet

from medseg.core.case import Case
from medseg.engine.inferer import Inferer
from medseg.engine.sliding import sliding_window
from medseg.runs import Resolved


def _status(key: str) -> int:
    text = Path("/proc/self/status").read_text()
    return int(re.search(rf"{key}:\s+(\d+) kB", text).group(1)) * 1024  # type: ignore[union-attr]


def measure(fn) -> tuple[float, float, object]:
    """(seconds, peak RSS rise in MiB, result) of ``fn()``."""
    gc.collect()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except OSError:
        pass
    Path("/proc/self/clear_refs").write_text("5")  # reset VmHWM to the current RSS
    base = _status("VmRSS")
    t0 = time.perf_counter()
    out = fn()
    dt = time.perf_counter() - t0
    return dt, (_status("VmHWM") - base) / 2**20, out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--full", action="store_true", help="256×256×160 volume with 96³ windows")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--classes", type=int, default=4)
    args = ap.parse_args()
    shape, roi = ((256, 256, 160), (96, 96, 96)) if args.full else ((160, 160, 96), (64, 64, 64))
    torch.manual_seed(0)
    net = UNet(3, 1, args.classes, (8, 16, 32, 64), (2, 2, 2), num_res_units=1).eval()

    def pred(t: torch.Tensor) -> torch.Tensor:
        return torch.softmax(net(t), 1)

    x = torch.randn(1, 1, *shape)
    print(f"volume {shape}, window {roi}, overlap 0.5, {args.classes} classes, {torch.get_num_threads()} threads")
    rows = {"monai": [], "medseg": [], "fp16": []}
    with torch.inference_mode():
        for _ in range(args.repeats):
            t, m, ref = measure(lambda: sliding_window_inference(x, roi, 2, pred, overlap=0.5, mode="gaussian")[0].argmax(0))
            rows["monai"].append((t, m))
            t, m, ours = measure(lambda: sliding_window(x, pred, roi, args.classes, overlap=0.5, sw_batch_size=2, reduce=lambda b: b.argmax(0)))
            rows["medseg"].append((t, m))
            same = bool(torch.equal(ref.to(torch.int16), ours))
            t, m, half = measure(
                lambda: sliding_window(
                    x, pred, roi, args.classes, overlap=0.5, sw_batch_size=2, reduce=lambda b: b.float().argmax(0), buffer_dtype=torch.float16
                )
            )
            rows["fp16"].append((t, m))
            agree = float((half == ref.to(torch.int16)).float().mean())
    tm, mm = (statistics.median(v[i] for v in rows["monai"]) for i in (0, 1))
    to, mo = (statistics.median(v[i] for v in rows["medseg"]) for i in (0, 1))
    print(f"MONAI  sliding_window_inference: {tm:7.2f} s   peak +{mm:7.1f} MiB")
    print(f"medseg sliding_window          : {to:7.2f} s   peak +{mo:7.1f} MiB   masks equal: {same}")
    th, mh = (statistics.median(v[i] for v in rows["fp16"]) for i in (0, 1))
    print(f"medseg sliding_window fp16 buf : {th:7.2f} s   peak +{mh:7.1f} MiB   voxels equal to MONAI: {agree:.6f}")
    print(f"time ratio medseg/MONAI = {to / tm:.3f} (target ≤ 1.0)   memory ratio = {mo / mm:.3f}, with fp16 buffer {mh / mm:.3f} (target ≤ 0.5)")

    # the whole inference path on a Case: the same network, window, overlap and batch of windows
    case = Case(x[0].numpy() * 50 + 200, None, np.eye(4), "bench")
    rec = Resolved(spatial_dims=3, in_channels=1, class_names=[str(k) for k in range(args.classes)], data_dims=3, patch_size=list(roi))
    inferer = Inferer(net, rec, sw_batch_size=2)
    inf = [measure(lambda: inferer.predict(case)) for _ in range(args.repeats)]
    ti, mi = (statistics.median(v[i] for v in inf) for i in (0, 1))
    xn = torch.from_numpy((case.image - case.image.mean()) / case.image.std())[None]
    with torch.inference_mode():
        ref_n = sliding_window_inference(xn, roi, 2, pred, overlap=0.5, mode="gaussian")[0].argmax(0).numpy()
    print(f"medseg Inferer.predict (Case)  : {ti:7.2f} s   peak +{mi:7.1f} MiB   masks equal to MONAI: {bool(np.array_equal(inf[-1][2], ref_n))}")
    print(f"  time ratio Inferer/sliding_window = {ti / to:.3f} (target ≤ 1.05)")

    # the blending alone: a 1×1×1 convolution as the network, so memory is the buffers, not activations
    big = (320, 192, 192)
    conv = torch.nn.Conv3d(1, args.classes, 1).eval()

    def cheap(t: torch.Tensor) -> torch.Tensor:
        return torch.softmax(conv(t), 1)

    xb = torch.randn(1, 1, *big)
    with torch.inference_mode():
        tb, mb, rb = measure(lambda: sliding_window_inference(xb, roi, 2, cheap, overlap=0.5, mode="gaussian")[0].argmax(0))
        to3, mo3, ob = measure(lambda: sliding_window(xb, cheap, roi, args.classes, overlap=0.5, sw_batch_size=2, reduce=lambda b: b.argmax(0)))
        eq = bool(torch.equal(rb.to(torch.int16), ob))
    print(f"blending only, volume {big}: MONAI {tb:6.2f} s peak +{mb:7.1f} MiB   medseg {to3:6.2f} s peak +{mo3:7.1f} MiB   masks equal: {eq}")
    print(f"  memory ratio medseg/MONAI = {mo3 / mb:.3f} (target ≤ 0.5)   time ratio = {to3 / tb:.3f}")

    # ONNX Runtime vs eager PyTorch on the same windows and threads
    try:
        import onnxruntime as ort
    except ImportError:
        print("onnxruntime not installed: pip install 'medseg[onnx]'")
        return
    batch = torch.randn(2, 1, *roi)
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "m.onnx"
        torch.onnx.export(net, (batch,), str(path), dynamo=True, input_names=["image"], output_names=["logits"])
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = torch.get_num_threads()
        sess = ort.InferenceSession(str(path), sess_options=opts, providers=["CPUExecutionProvider"])
        eager, onnx = [], []
        with torch.inference_mode():
            net(batch)
            sess.run(None, {"image": batch.numpy()})
            for _ in range(max(5, args.repeats)):
                t0 = time.perf_counter()
                e = net(batch)
                eager.append(time.perf_counter() - t0)
                t0 = time.perf_counter()
                o = sess.run(None, {"image": batch.numpy()})[0]
                onnx.append(time.perf_counter() - t0)
        agree = float((e.argmax(1).numpy() == o.argmax(1)).mean())
    te, to2 = statistics.median(eager), statistics.median(onnx)
    print(f"eager PyTorch {te * 1000:7.1f} ms / batch of 2 windows   ONNX Runtime {to2 * 1000:7.1f} ms   speed-up {te / to2:.2f}× (target ≥ 1.5)")
    print(f"argmax agreement ONNX vs eager: {agree:.6f}")


if __name__ == "__main__":
    np.set_printoptions(precision=3)
    main()
