"""Model zoo benchmark: parameters, MACs, CPU forward latency and peak memory per model.

For each registered model (and each dimensionality it supports) at a reference input size — 2D
``1×1×256×256``, 3D ``1×1×64×64×64`` by default, 1 input channel, 3 classes, the published
configuration — it prints:

* ``params``: parameter count;
* ``MACs``: multiply-accumulates of one forward pass (``torch.utils.flop_counter``: convolutions
  and matrix products; element-wise ops not counted);
* ``CPU ms``: median forward latency (eval mode, no gradient, batch 1) over ``--repeats`` runs
  after one warm-up run, with the torch threads available to this process;
* ``peak MB``: peak resident memory added during one forward pass (Linux ``VmHWM``, reset before
  the pass; needs ``/proc/self/clear_refs``, else ``n/a``) — activations and temporaries on top
  of the weights;
* ``×unet P / M / ms``: parameters, MACs and CPU latency as multiples of the baseline model's
  (``--baseline``, default ``unet``) at the same dimensionality, when it is benchmarked too; the latency
  ratio is the median over ``--repeats`` rounds of the two forward passes timed back to back;
* on a CUDA machine also ``GPU img/s`` (forward, AMP, batch 8 in 2D / 2 in 3D) and ``GPU MB``
  (peak allocated).

The classical baselines are fitted on one synthetic image first; their latency is ``predict``.

    python benchmarks/models.py                      # every model, both dims
    python benchmarks/models.py --models unet,segformer_b2 --dims 2 --repeats 10
    python benchmarks/models.py --models modern-cnns --repeats 5   # ResEnc, MedNeXt, SegResNet beside the U-Net
    python benchmarks/models.py --models "unet,mednext_l(kernel_size=5)" --dims 3
    python benchmarks/models.py --json bench.json    # also write the rows
"""

from __future__ import annotations

import argparse
import ctypes
import gc
import json
import re
import statistics
import sys
import time
from pathlib import Path

import torch
import yaml

from medseg.models import MODELS, count_parameters, create_model, list_models, macs
from medseg.models.complexity import format_count

IN_CH, N_CLS = 1, 3
#: named sets of models for ``--models``
GROUPS = {
    "modern-cnns": [
        "unet", "resenc_unet_m", "resenc_unet_l", "mednext_s", "mednext_b", "mednext_m", "mednext_l", "mednext_l(kernel_size=5)", "segresnet"
    ],
}  # fmt: skip


def _hwm_kb() -> int | None:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM"):
                return int(line.split()[1])
    except OSError:
        return None
    return None


def _reset_hwm() -> bool:
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def _rss_kb() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS"):
            return int(line.split()[1])
    return 0


def _mmap_threshold(nbytes: int) -> None:
    """glibc serves allocations ≥ ``nbytes`` with mmap, returned to the OS on free. Low (64 kB) for
    the memory pass, so the resident high-water mark measures what a forward pass holds; high
    (32 MB, glibc's maximum) for the timed runs, so they reuse the heap as usual."""
    try:
        ctypes.CDLL("libc.so.6").mallopt(-3, nbytes)  # M_MMAP_THRESHOLD
    except (OSError, AttributeError):
        pass


def _malloc_trim() -> None:
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


def bench_cpu(model: torch.nn.Module, x: torch.Tensor, repeats: int) -> tuple[float, float | None]:
    """Median latency (ms) and peak added memory (MB) of ``model(x)`` on the CPU."""
    times = []
    with torch.no_grad():
        _mmap_threshold(32 * 2**20)
        model(x)  # warm-up (lazy init, oneDNN primitives)
        for _ in range(max(1, repeats)):
            t0 = time.perf_counter()
            model(x)
            times.append(time.perf_counter() - t0)
        _mmap_threshold(64 * 2**10)
        gc.collect()
        _malloc_trim()  # give cached free heap memory back, so reusing it shows up in the high-water mark
        base = _rss_kb()
        hwm = None
        if _reset_hwm():
            model(x)
            hwm = _hwm_kb()
    peak = None if hwm is None else max(0.0, (hwm - base) / 1024)
    return 1000 * statistics.median(times), peak


def paired_ratio(model: torch.nn.Module, baseline: torch.nn.Module, x: torch.Tensor, repeats: int) -> float:
    """Median over ``repeats`` rounds of (model time / baseline time), the two timed back to back in each
    round: on a shared machine both see the same load, so the ratio is steadier than a ratio of medians."""
    ratios = []
    with torch.no_grad():
        for _ in range(max(1, repeats)):
            t0 = time.perf_counter()
            baseline(x)
            t1 = time.perf_counter()
            model(x)
            ratios.append((time.perf_counter() - t1) / (t1 - t0))
    return statistics.median(ratios)


def bench_gpu(model: torch.nn.Module, shape: tuple[int, ...], repeats: int) -> tuple[float, float]:
    """Forward images/s with AMP and peak allocated MB on the current CUDA device."""
    dev = torch.device("cuda")
    model = model.to(dev).eval()
    x = torch.randn(shape, device=dev)
    dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    torch.cuda.reset_peak_memory_stats()
    with torch.no_grad(), torch.autocast("cuda", dtype=dtype):
        for _ in range(2):
            model(x)
        torch.cuda.synchronize()
        t0 = time.perf_counter()
        for _ in range(repeats):
            model(x)
        torch.cuda.synchronize()
    dt = time.perf_counter() - t0
    return shape[0] * repeats / dt, torch.cuda.max_memory_allocated() / 2**20


def parse_models(spec: str) -> list[tuple[str, dict]]:
    """``"unet,mednext_l(kernel_size=5)"`` → ``[("unet", {}), ("mednext_l", {"kernel_size": 5})]``; a group
    name (``GROUPS``) stands for its models."""
    out: list[tuple[str, dict]] = []
    for item in re.findall(r"[^,(]+(?:\([^)]*\))?", spec):
        item = item.strip()
        if not item:
            continue
        if item in GROUPS:
            out += parse_models(",".join(GROUPS[item]))
            continue
        name, _, args = item.partition("(")
        kwargs = {}
        for pair in filter(None, args.rstrip(")").split(";")):
            key, _, value = pair.partition("=")
            kwargs[key.strip()] = yaml.safe_load(value)
        out.append((name.strip(), kwargs))
    return out


def _label(name: str, kwargs: dict) -> str:
    return name + ("(" + ";".join(f"{k}={v}" for k, v in kwargs.items()) + ")" if kwargs else "")


def run(
    models: list[tuple[str, dict]], dims_filter: int | None, size2d: int, size3d: int, repeats: int, *, threads: int | None = None, baseline: str | None = None
) -> list[dict]:
    if threads:
        torch.set_num_threads(threads)
    if baseline and any(n == baseline for n, _ in models):  # the baseline first, so every other row can show its ratio
        models = sorted(models, key=lambda m: m[0] != baseline or bool(m[1]))
    rows = []
    base: dict[int, tuple[dict, torch.nn.Module]] = {}
    gpu = torch.cuda.is_available()
    for name, kwargs in models:
        meta = MODELS.meta(name)
        for dims in meta["dims"]:
            if dims_filter and dims != dims_filter:
                continue
            spatial = (size2d,) * 2 if dims == 2 else (size3d,) * 3
            row: dict = {"model": _label(name, kwargs), "dims": dims, "input": "×".join(map(str, (1, IN_CH, *spatial)))}
            torch.manual_seed(0)
            x = torch.randn(1, IN_CH, *spatial)
            try:
                model = create_model(name, dims, IN_CH, N_CLS, **kwargs)
                if meta["training"] == "fit":
                    small = torch.randn(1, IN_CH, *((64,) * dims))
                    model.fit(small, (small > 0.5).long() + (small > 1.5).long())
                    row.update(params=0, macs=None)
                else:
                    model.eval()
                    row.update(params=count_parameters(model), macs=macs(model, x.shape))
                row["cpu_ms"], row["peak_mb"] = bench_cpu(model, x, repeats)
                if gpu and meta["training"] == "gradient":
                    row["gpu_img_s"], row["gpu_mb"] = bench_gpu(model, (8 if dims == 2 else 2, IN_CH, *spatial), max(repeats, 10))
            except Exception as e:  # a benchmark reports, it does not stop at the first failure
                row["error"] = f"{type(e).__name__}: {str(e).splitlines()[0][:80]}"
            if baseline and name == baseline and not kwargs and "error" not in row:
                base[dims] = (row, model)
            elif dims in base and "error" not in row:
                ref, ref_model = base[dims]
                row["x_params"] = row["params"] / ref["params"] if ref["params"] else None
                row["x_macs"] = row["macs"] / ref["macs"] if row["macs"] and ref["macs"] else None
                row["x_cpu"] = paired_ratio(model, ref_model, x, repeats)
            rows.append(row)
            print(_format_row(row, gpu), flush=True)
            del x
            model = None
            gc.collect()
            if gpu:
                torch.cuda.empty_cache()
    return rows


def _ratio(v: float | None) -> str:
    return f"{v:>8.1f}×" if v is not None else f"{'':>9}"


def _format_row(r: dict, gpu: bool) -> str:
    if "error" in r:
        return f"{r['model']:<28} {r['dims']}D  {r['input']:<16} ERROR {r['error']}"
    cells = [
        f"{r['model']:<28}",
        f"{r['dims']}D",
        f"{r['input']:<16}",
        f"{format_count(r['params']) if r['params'] else '—':>9}",
        f"{format_count(r['macs']) if r['macs'] else '—':>9}",
        f"{r['cpu_ms']:>10.1f}",
        f"{r['peak_mb']:>9.0f}" if r.get("peak_mb") is not None else f"{'n/a':>9}",
        _ratio(r.get("x_params")),
        _ratio(r.get("x_macs")),
        _ratio(r.get("x_cpu")),
    ]
    if gpu:
        cells += [f"{r.get('gpu_img_s', float('nan')):>10.1f}", f"{r.get('gpu_mb', float('nan')):>8.0f}"]
    return " ".join(cells)


def header(gpu: bool, baseline: str | None = None) -> str:
    b = "×" + (baseline or "base")[:5]
    h = f"{'model':<28} {'dims':<2} {'input':<16} {'params':>9} {'MACs':>9} {'CPU ms':>10} {'peak MB':>9} {b + ' P':>9} {b + ' M':>9} {b + ' ms':>9}"
    return h + (f" {'GPU img/s':>10} {'GPU MB':>8}" if gpu else "")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", help="comma-separated names, NAME(key=value;...) for non-default parameters, or a group: " + ", ".join(GROUPS))
    ap.add_argument("--dims", type=int, choices=(2, 3))
    ap.add_argument("--size2d", type=int, default=256)
    ap.add_argument("--size3d", type=int, default=64)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, help="torch CPU threads (default: torch's)")
    ap.add_argument("--baseline", default="unet", help="ratios of params, MACs and CPU time to this model (same dims); '' for none")
    ap.add_argument("--json", type=Path, help="also write the rows as JSON")
    a = ap.parse_args(argv)
    models = parse_models(a.models) if a.models else [(n, {}) for n in list_models()]
    for n, _ in models:
        MODELS.get(n)  # unknown names fail before any work
    gpu = torch.cuda.is_available()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} CPU threads" + (f", GPU {torch.cuda.get_device_name()}" if gpu else ", no GPU"))
    print(header(gpu, a.baseline))
    t0 = time.perf_counter()
    rows = run(models, a.dims, a.size2d, a.size3d, a.repeats, threads=a.threads, baseline=a.baseline or None)
    print(f"{len(rows)} rows in {time.perf_counter() - t0:.0f} s")
    if a.json:
        a.json.write_text(json.dumps(rows, indent=2))
    return 1 if any("error" in r for r in rows) else 0


if __name__ == "__main__":
    sys.exit(main())
