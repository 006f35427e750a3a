"""Load on the web demo: concurrent upload predictions through gradio_client on loopback.

Starts ``medseg demo`` in a background process over a runs folder (by default a tiny phantom2d
run trained here in a few seconds), then sends N prediction requests at once (default 20), each a
NIfTI volume predicted slice by slice by the run, through ``gradio_client`` as a script would. The
server queues them and runs ``--max-concurrent`` at a time.

Reports, per round and as the median over rounds: how many requests completed with a mask, the
latency percentiles (p50 / p90 / p99, submit → result, so queueing is included), the wall time of
the burst, and the server's peak resident memory (``VmHWM`` of the server process, Linux).
No reference pipeline exists for this; compare ``--max-concurrent`` settings instead.

Run:  python benchmarks/demo_load.py [--requests 20] [--rounds 3] [--max-concurrent 1 2 4] [--size 96 --depth 12]
      python benchmarks/demo_load.py --runs runs --run quickstart
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

import numpy as np


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def make_run(root: Path) -> tuple[Path, str]:
    """A one-epoch U-Net on a small phantom2d (seconds on a CPU)."""
    from medseg.config import config_from_dict
    from medseg.engine.train import train

    cfg = config_from_dict(
        {
            "name": "bench",
            "data": {"dataset": "phantom2d", "builtin": {"n_patients": 6, "slices_per_patient": 2, "size": 64}, "cache_dir": str(root / ".cache")},
            "model": {"name": "unet", "params": {"channels": [8, 16, 32], "num_res_units": 0}},
            "train": {"epochs": 1, "device": "cpu"},
        }
    )
    train(cfg, root / "runs" / "bench", progress=False)
    return root / "runs", "bench"


def make_input(folder: Path, size: int, depth: int) -> Path:
    import nibabel as nib

    vol = np.random.default_rng(0).normal(100, 30, size=(size, size, depth)).astype(np.float32)
    path = folder / "scan.nii.gz"
    nib.save(nib.Nifti1Image(vol, np.diag([0.8, 0.8, 4.0, 1.0])), str(path))
    return path


def peak_rss_mb(pid: int) -> float:
    """Peak resident set (VmHWM) of a process in MB; NaN where /proc is absent."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return float("nan")


def start_server(runs: Path, port: int, max_concurrent: int) -> subprocess.Popen:
    env = {**os.environ, "GRADIO_ANALYTICS_ENABLED": "False"}
    cmd = [sys.executable, "-m", "medseg.cli", "demo", str(runs), "--port", str(port), "--max-concurrent", str(max_concurrent)]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env, start_new_session=True)
    deadline = time.time() + 120
    while time.time() < deadline:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=2):
                return proc
        except OSError:
            if proc.poll() is not None:
                raise SystemExit("the demo server exited during start-up") from None
            time.sleep(0.3)
    proc.kill()
    raise SystemExit("the demo server did not start in 120 s")


def burst(url: str, run: str, image: Path, n: int) -> tuple[int, list[float], float]:
    """N requests released at once; returns (completed with a mask, latencies in s, wall time)."""
    from gradio_client import Client, handle_file

    clients = [Client(url, verbose=False) for _ in range(n)]
    latencies: list[float] = [float("nan")] * n
    ok = [False] * n
    gate = threading.Barrier(n + 1)

    def one(i: int) -> None:
        gate.wait()
        t0 = time.perf_counter()
        try:
            out = clients[i].predict(handle_file(str(image)), run, 0.45, api_name="/predict")
            ok[i] = bool(out[1]) and "Predicted" in str(out[2])
        except Exception as e:  # a failed request is reported, not raised
            print(f"  request {i} failed: {type(e).__name__}: {e}", file=sys.stderr)
        latencies[i] = time.perf_counter() - t0

    threads = [threading.Thread(target=one, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    gate.wait()
    t0 = time.perf_counter()
    for t in threads:
        t.join()
    return sum(ok), latencies, time.perf_counter() - t0


def line(conc: int, label: str, done: str, values: list[float] | tuple[float, ...]) -> str:
    p50, p90, p99, wall, rate, rss = values
    return f"{conc:>8} {label:>5} {done:>7} {p50:>7.2f} {p90:>7.2f} {p99:>7.2f} {wall:>7.2f} {rate:>6.2f} {rss:>11.0f}"


def percentile(values: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(values), q))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", type=Path, help="runs folder (default: a tiny run trained now)")
    ap.add_argument("--run", default=None, help="run name inside --runs")
    ap.add_argument("--requests", type=int, default=20)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--max-concurrent", type=int, nargs="+", default=[2])
    ap.add_argument("--size", type=int, default=96, help="in-plane size of the uploaded volume")
    ap.add_argument("--depth", type=int, default=12, help="slices of the uploaded volume")
    args = ap.parse_args()

    tmp = Path(tempfile.mkdtemp(prefix="medseg-demo-load-"))
    try:
        if args.runs is None:
            print("training a tiny run ...", flush=True)
            runs, run = make_run(tmp)
        else:
            runs, run = args.runs, args.run
            if run is None:
                raise SystemExit("--run NAME is needed with --runs")
        image = make_input(tmp, args.size, args.depth)
        print(f"input: {args.size}×{args.size}×{args.depth} NIfTI ({image.stat().st_size / 1024:.0f} KB), run {run!r}, {args.requests} concurrent requests")
        print(f"{'max-conc':>8} {'round':>5} {'done':>7} {'p50 s':>7} {'p90 s':>7} {'p99 s':>7} {'wall s':>7} {'req/s':>6} {'peak RSS MB':>11}")
        for conc in args.max_concurrent:
            port = free_port()
            proc = start_server(runs, port, conc)
            url = f"http://127.0.0.1:{port}/"
            try:
                burst(url, run, image, 2)  # warm-up: model loaded, imports done
                rows = []
                for r in range(args.rounds):
                    done, lat, wall = burst(url, run, image, args.requests)
                    rss = peak_rss_mb(proc.pid)
                    row = (done, percentile(lat, 50), percentile(lat, 90), percentile(lat, 99), wall, args.requests / wall, rss)
                    rows.append(row)
                    print(line(conc, str(r + 1), f"{done}/{args.requests}", row[1:]))
                med = [statistics.median(v) for v in zip(*rows, strict=True)]
                all_done = all(r[0] == args.requests for r in rows)
                print(line(conc, "med", "all" if all_done else "NOT all", med[1:]))
            finally:
                os.killpg(proc.pid, signal.SIGTERM)
                try:
                    proc.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    os.killpg(proc.pid, signal.SIGKILL)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
