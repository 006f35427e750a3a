"""Memory-bounded sliding-window inference.

MONAI's ``sliding_window_inference`` blends every window into a full-size ``C × D × H × W`` float32
buffer before anything is finalised, so a 512×512×800 CT with 14 classes needs ~12 GB for that buffer
alone. Here windows are visited in order of their start along the axis with the most window
positions; slices that no later window touches are finalised at once (argmax, or copied out when
probabilities are wanted), so the blending buffer — a ring — only spans one window along that axis;
``buffer_dtype=torch.float16`` halves it again. Window positions, the Gaussian importance map
and the blending follow MONAI's (``dense_patch_slices``, ``_get_scan_interval``,
``compute_importance_map``) exactly — ``tests/engine/test_sliding.py`` checks them against MONAI —
but are written out here (a dozen lines) because importing MONAI takes several seconds, which
would dominate ``medseg predict`` on a few pictures.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Sequence
from itertools import groupby

import torch


def scan_interval(image_size: Sequence[int], roi: Sequence[int], overlap: float) -> tuple[int, ...]:
    """Step between window starts per axis: ``int(roi · (1 − overlap))`` (at least 1), the whole axis when it equals ``roi``."""
    return tuple(int(r) if r == s else max(int(r * (1 - overlap)), 1) for s, r in zip(image_size, roi, strict=True))


def window_slices(image_size: Sequence[int], roi: Sequence[int], interval: Sequence[int]) -> list[tuple[slice, ...]]:
    """Every window, in C order of the start positions; the last window of an axis is shifted back to end at its edge."""
    starts = []
    for size, r, step in zip(image_size, roi, interval, strict=True):
        n = next((d for d in range(math.ceil(size / step)) if d * step + r >= size), 0) + 1
        starts.append([i * step - max(i * step + r - size, 0) for i in range(n)])
    return [tuple(slice(a, a + r) for a, r in zip(pos, roi, strict=True)) for pos in itertools.product(*starts)]


def importance_map(roi: Sequence[int], mode: str, sigma_scale: float, device: torch.device) -> torch.Tensor:
    """Blending weights of a window: a separable Gaussian (sigma = ``sigma_scale`` · size) or ones, floored at its minimum (≥ 1e-3)."""
    if mode == "constant":
        imp = torch.ones(tuple(roi), device=device)
    elif mode == "gaussian":
        imp = torch.ones((), device=device)
        for r in roi:
            x = torch.arange(-(r - 1) / 2.0, (r - 1) / 2.0 + 1, dtype=torch.float, device=device)
            imp = imp.unsqueeze(-1) * torch.exp(x**2 / (-2 * (r * sigma_scale) ** 2))
    else:
        raise ValueError(f"unknown blending mode {mode!r} (gaussian or constant)")
    return torch.clamp(imp, min=max(float(imp.min()), 1e-3))


def _pad_to(x: torch.Tensor, roi: Sequence[int]) -> tuple[torch.Tensor, list[tuple[int, int]]]:
    """Symmetric zero padding so every spatial size is at least ``roi`` (MONAI's convention)."""
    spatial = x.shape[2:]
    pads = [(max(r - s, 0) // 2, max(r - s, 0) - max(r - s, 0) // 2) for s, r in zip(spatial, roi, strict=True)]
    if any(a or b for a, b in pads):
        flat = [v for a, b in reversed(pads) for v in (a, b)]
        x = torch.nn.functional.pad(x, flat)
    return x, pads


def sliding_window(
    x: torch.Tensor,
    predictor: Callable[[torch.Tensor], torch.Tensor],
    roi_size: Sequence[int],
    num_outputs: int,
    *,
    overlap: float = 0.5,
    sw_batch_size: int = 4,
    mode: str = "gaussian",
    sigma_scale: float = 0.125,
    reduce: Callable[[torch.Tensor], torch.Tensor] | None = None,
    out_dtype: torch.dtype = torch.int16,
    buffer_dtype: torch.dtype = torch.float32,
) -> torch.Tensor:
    """Blend ``predictor`` over windows of ``x`` and return the reduced (or full) result.

    Args:
        x: ``(1, C, *spatial)`` input.
        predictor: maps ``(B, C, *roi)`` to ``(B, num_outputs, *roi)`` scores (logits or probabilities).
        roi_size: window size per spatial axis.
        num_outputs: channels the predictor returns.
        overlap: fraction of overlap between neighbouring windows.
        sw_batch_size: windows per forward pass.
        mode: ``gaussian`` or ``constant`` blending.
        sigma_scale: Gaussian sigma as a fraction of the window size.
        reduce: applied to each finalised ``(num_outputs, d, *rest)`` block (e.g. argmax over channels);
            ``None`` keeps the blended scores (then the output holds ``num_outputs`` channels).
        out_dtype: dtype of the returned array when ``reduce`` is given.
        buffer_dtype: dtype of the blending buffer (float16 halves its memory again).

    Returns:
        the ``reduce``-d output over ``spatial`` (a leading channel axis if ``reduce`` keeps one), or the
        blended scores ``(num_outputs, *spatial)`` without ``reduce``.
    """
    if x.shape[0] != 1:
        raise ValueError("sliding_window takes one image at a time")
    roi = [int(r) for r in roi_size]
    nd = len(roi)
    x, pads = _pad_to(x, roi)
    size = tuple(int(s) for s in x.shape[2:])
    windows = window_slices(size, roi, scan_interval(size, roi, overlap))
    imp = importance_map(roi, mode, sigma_scale, x.device).to(buffer_dtype)

    device = x.device
    # stream along the axis with the most window positions: the blending buffer spans one window
    # along it instead of the whole axis
    starts = [sorted({w[d].start for w in windows}) for d in range(nd)]
    ax = max(range(nd), key=lambda d: (len(starts[d]), size[d]))
    windows = sorted(windows, key=lambda w: w[ax].start)
    depth = size[ax]
    other = list(size)

    def along(lo: int, hi: int) -> tuple[slice, ...]:
        return tuple(slice(lo, hi) if d == ax else slice(None) for d in range(nd))

    out: torch.Tensor | None = None  # allocated on the first finalised block, whose shape tells the channels
    buf_start = 0
    # one buffer for the whole run, one window deep: before a window group starting at z0 is added,
    # every slice before z0 has been finalised, and everything after z0 lies inside [z0, z0 + roi)
    other[ax] = min(depth, roi[ax])
    acc = torch.zeros((num_outputs, *other), dtype=buffer_dtype, device=device)
    wsum = torch.zeros(tuple(other), dtype=buffer_dtype, device=device)

    ring = other[ax]  # the buffer is a ring along the streaming axis: global slice g sits at g % ring

    def spans(g0: int, g1: int) -> list[tuple[int, int, int, int]]:
        """Pieces of global [g0, g1) as (ring start, ring stop, offset start, offset stop), split at the wrap."""
        out_, g = [], g0
        while g < g1:
            r = g % ring
            n = min(g1 - g, ring - r)
            out_.append((r, r + n, g - g0, g - g0 + n))
            g += n
        return out_

    def finalise(upto: int) -> None:
        nonlocal buf_start, out
        for r0, r1, o0, _ in spans(buf_start, upto):
            for lo in range(r0, r1, 8):  # a few slices at a time: small temporaries
                hi = min(r1, lo + 8)
                g = buf_start + o0 + (lo - r0)
                block = acc[(slice(None), *along(lo, hi))] / wsum[along(lo, hi)].unsqueeze(0)
                block = reduce(block).to(out_dtype) if reduce is not None else block
                if out is None:
                    lead = tuple(block.shape[: block.ndim - nd])  # () for a label map, (K,) for channels
                    out = torch.empty((*lead, *size), dtype=block.dtype, device="cpu")
                out[(Ellipsis, *along(g, g + hi - lo))] = block.cpu()
                del block
            acc[(slice(None), *along(r0, r1))] = 0
            wsum[along(r0, r1)] = 0
        buf_start = max(buf_start, upto)

    for z0, group in groupby(windows, key=lambda w: w[ax].start):
        group = list(group)
        finalise(z0)  # windows come in order of their start: nothing before it will be touched again
        for i in range(0, len(group), sw_batch_size):
            chunk = group[i : i + sw_batch_size]
            batch = torch.cat([x[(slice(None), slice(None), *w)] for w in chunk])
            preds = predictor(batch).to(buffer_dtype)
            for w, p in zip(chunk, preds, strict=True):
                weighted = p * imp
                for r0, r1, o0, o1 in spans(w[ax].start, w[ax].stop):
                    dst = tuple(slice(r0, r1) if d == ax else w[d] for d in range(nd))
                    src = along(o0, o1)
                    acc[(slice(None), *dst)] += weighted[(slice(None), *src)]
                    wsum[dst] += imp[src]
    finalise(depth)
    assert out is not None
    crop = tuple(slice(a, s - b) for (a, b), s in zip(pads, size, strict=True))
    return out[(Ellipsis, *crop)]
