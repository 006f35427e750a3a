"""The sliding window's positions and Gaussian weights are MONAI's, written out (importing MONAI costs seconds)."""

from __future__ import annotations

import pytest
import torch
from monai.data.utils import compute_importance_map, dense_patch_slices
from monai.inferers import sliding_window_inference
from monai.inferers.utils import _get_scan_interval

from medseg.engine.sliding import importance_map, scan_interval, sliding_window, window_slices


@pytest.mark.parametrize(
    ("size", "roi", "overlap"),
    [((64, 64), (32, 32), 0.5), ((70, 33), (32, 32), 0.25), ((32, 100), (32, 40), 0.5), ((17, 40, 23), (16, 16, 8), 0.625), ((40,), (7,), 0.9)],
)
def test_windows_equal_monai(size: tuple[int, ...], roi: tuple[int, ...], overlap: float) -> None:
    ours = scan_interval(size, roi, overlap)
    assert ours == _get_scan_interval(size, roi, len(size), [overlap] * len(size))
    assert window_slices(size, roi, ours) == dense_patch_slices(size, roi, ours)


@pytest.mark.parametrize("mode", ["gaussian", "constant"])
@pytest.mark.parametrize("roi", [(32, 32), (16, 24, 8), (5,)])
def test_importance_map_equals_monai(mode: str, roi: tuple[int, ...]) -> None:
    ref = compute_importance_map(roi, mode=mode, sigma_scale=0.125, device="cpu")
    assert torch.allclose(importance_map(roi, mode, 0.125, torch.device("cpu")), ref, atol=1e-7)


def test_blended_scores_equal_monai() -> None:
    torch.manual_seed(0)
    conv = torch.nn.Conv3d(1, 3, 3, padding=1)
    x = torch.randn(1, 1, 37, 29, 20)
    with torch.no_grad():
        ref = sliding_window_inference(x, (16, 16, 16), 2, conv, overlap=0.5, mode="gaussian")[0]
        ours = sliding_window(x, conv, (16, 16, 16), 3, overlap=0.5, sw_batch_size=2)
    assert torch.allclose(ours.float(), ref, atol=1e-5)
