"""Load on the web demo: rounds of concurrent upload predictions through gradio_client on loopback.

Starts ``medseg demo`` in a background process over a runs folder (by default a tiny phantom3d (sliced)
run trained here in a few seconds). Each round sends ``--identical`` requests of the SAME file at
once, then ``--distinct`` requests of different files at once (default 20 + 20, 5 rounds), each a
NIfTI volume predicted slice by slice, through ``gradio_client`` as a script would. The server
queues them and runs ``--max-concurrent`` at a time.

A warm-up round of each kind comes first and is not counted. Reports per round: requests that completed with a mask (and those that failed), latency
percentiles (p50 / p99, submit → result, queueing included), the server's resident memory after
the round (``VmRSS``; Linux) and its peak (``VmHWM``), and the server's own error lines (e.g. h11
"Content-Length" errors). The last line says whether every request succeeded and whether memory
levelled off (growth over the last rounds below ``--level-mb`` per round).
No reference pipeline exists for this; compare ``--max-concurrent`` settings instead.

Run:  python benchmarks/demo_load.py [--rounds 5] [--identical 20] [--distinct 20] [--max-concurrent 2] [--size 96 --depth 12]
      python benchmarks/demo_load.py --runs runs --run quickstart
"""

from __future__ import annotations

import argparse
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

import numpy as np

from medseg.core.signals import stop_process_group


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def make_run(root: Path) -> tuple[Path, str]:
    """A one-epoch 2D U-Net on slices of small phantom3d volumes (seconds on a CPU; the demo predicts uploaded
    volumes with a 2D network trained on slices of volumes, not with one trained on pictures)."""
    from medseg.config import config_from_dict
    from medseg.engine.train import train

    cfg = config_from_dict(
        {
            "name": "bench",
            "data": {"dataset": "phantom3d", "builtin": {"n_patients": 4, "size": 64, "depth": 8}, "slices": True, "cache_dir": str(root / ".cache")},
            "model": {"name": "unet", "params": {"channels": [8, 16, 32], "num_res_units": 0}},
            "train": {"epochs": 1, "device": "cpu", "iterations_per_epoch": None},
        }
    )
    train(cfg, root / "runs" / "bench", progress=False)
    return root / "runs", "bench"


def make_input(path: Path, size: int, depth: int, seed: int) -> Path:
    import nibabel as nib

    vol = np.random.default_rng(seed).normal(100, 30, size=(size, size, depth)).astype(np.float32)
    nib.save(nib.Nifti1Image(vol, np.diag([0.8, 0.8, 4.0, 1.0])), str(path))
    return path


def memory_mb(pid: int, key: str) -> float:
    """``VmRSS`` (now) or ``VmHWM`` (peak) of a process in MB; NaN where /proc is absent."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(f"{key}:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return float("nan")


def start_server(runs: Path, port: int, max_concurrent: int, log: Path) -> subprocess.Popen:
    env = {**os.environ, "GRADIO_ANALYTICS_ENABLED": "False"}
    cmd = [sys.executable, "-m", "medseg.cli", "demo", str(runs), "--port", str(port), "--max-concurrent", str(max_concurrent)]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=log.open("wb"), env=env, start_new_session=True)
    deadline = time.time() + 180
    while time.time() < deadline:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=2):
                return proc
        except OSError:
            if proc.poll() is not None:
                raise SystemExit(f"the demo server exited during start-up:\n{log.read_text(errors='replace')[-2000:]}") from None
            time.sleep(0.3)
    proc.kill()
    raise SystemExit("the demo server did not start in 180 s")


def burst(url: str, run: str, images: list[Path]) -> tuple[int, list[float], list[str]]:
    """One request per image, released at once; returns (completed with a mask, latencies in s, failures)."""
    from gradio_client import Client, handle_file

    n = len(images)
    clients = [Client(url, verbose=False, httpx_kwargs={"timeout": 600}) for _ in range(n)]  # a busy machine is no lost request
    latencies: list[float] = [float("nan")] * n
    ok = [False] * n
    failures: list[str] = []
    gate = threading.Barrier(n + 1)

    def one(i: int) -> None:
        gate.wait()
        t0 = time.perf_counter()
        try:
            out = clients[i].predict(handle_file(str(images[i])), run, 0.45, api_name="/predict")
            ok[i] = bool(out[1]) and "Predicted" in str(out[2])
            if not ok[i]:
                failures.append(f"request {i}: {str(out[2])[:200]}")
        except Exception as e:  # a failed request is reported, not raised
            failures.append(f"request {i}: {type(e).__name__}: {str(e)[:200]}")
        latencies[i] = time.perf_counter() - t0

    threads = [threading.Thread(target=one, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    gate.wait()
    for t in threads:
        t.join()
    for c in clients:
        c.close()
    return sum(ok), latencies, failures


def server_errors(log: Path, seen: int) -> tuple[list[str], int]:
    """New error lines of the server's log since ``seen`` bytes."""
    data = log.read_bytes()
    lines = data[seen:].decode(errors="replace").splitlines()
    keys = ("Error", "error", "Exception", "Traceback", "Content-Length")
    return [ln for ln in lines if any(k in ln for k in keys)], len(data)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", type=Path, help="runs folder (default: a tiny run trained now)")
    ap.add_argument("--run", default=None, help="run name inside --runs")
    ap.add_argument("--identical", type=int, default=20, help="concurrent uploads of the same file per round")
    ap.add_argument("--distinct", type=int, default=20, help="concurrent uploads of different files per round")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--max-concurrent", type=int, default=2)
    ap.add_argument("--size", type=int, default=96, help="in-plane size of the uploaded volumes")
    ap.add_argument("--depth", type=int, default=12, help="slices of the uploaded volumes")
    ap.add_argument("--level-mb", type=float, default=4.0, help="memory has levelled off when it grows less than this per round over the last rounds")
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
        same = make_input(tmp / "scan.nii.gz", args.size, args.depth, 0)
        distinct = [make_input(tmp / f"scan_{i:02d}.nii.gz", args.size, args.depth, i + 1) for i in range(args.distinct)]
        print(f"input: {args.size}×{args.size}×{args.depth} NIfTI ({same.stat().st_size / 1024:.0f} KB), run {run!r}, --max-concurrent {args.max_concurrent}")
        port = free_port()
        log = tmp / "server.log"
        proc = start_server(runs, port, args.max_concurrent, log)
        url = f"http://127.0.0.1:{port}/"
        try:
            # warm-up, not counted: one round of each kind (model loaded, imports done, gradio's worker
            # threads and their memory arenas created: the server's steady state)
            warm = [burst(url, run, images)[0] for images in ([same] * args.identical, distinct)]
            print(f"warm-up: {sum(warm)}/{args.identical + len(distinct)} done, RSS {memory_mb(proc.pid, 'VmRSS'):.0f} MB")
            seen = 0
            _, seen = server_errors(log, seen)
            print(f"{'round':>5} {'kind':>9} {'done':>7} {'p50 s':>7} {'p99 s':>7} {'RSS MB':>8} {'peak MB':>8} {'server errors':>13}")
            rss: list[float] = []
            all_ok = True
            for r in range(args.rounds):
                for kind, images in (("identical", [same] * args.identical), ("distinct", distinct)):
                    done, lat, failures = burst(url, run, images)
                    errors, seen = server_errors(log, seen)
                    all_ok &= done == len(images) and not errors
                    now, peak = memory_mb(proc.pid, "VmRSS"), memory_mb(proc.pid, "VmHWM")
                    p50, p99 = np.percentile(lat, 50), np.percentile(lat, 99)
                    print(f"{r + 1:>5} {kind:>9} {done:>3}/{len(images):<3} {p50:>7.2f} {p99:>7.2f} {now:>8.0f} {peak:>8.0f} {len(errors):>13}", flush=True)
                    for line in failures[:3] + errors[:3]:
                        print(f"      {line}")
                rss.append(now)
            tail = rss[len(rss) // 2 :]
            growth = (tail[-1] - tail[0]) / max(len(tail) - 1, 1) if len(tail) > 1 else float("nan")
            level = growth < args.level_mb
            print(
                f"all requests succeeded: {'yes' if all_ok else 'NO'}; RSS per round {', '.join(f'{v:.0f}' for v in rss)} MB; "
                f"growth over the last {len(tail)} rounds {growth:+.1f} MB/round (--level-mb {args.level_mb:g}): {'levelled off' if level else 'STILL GROWING'}"
            )
        finally:
            stop_process_group(proc, 10)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
