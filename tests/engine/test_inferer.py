"""The Inferer against independent computations: mirroring done by hand, ensembles as the mean of each
network's probabilities, the sliding window against MONAI's (odd paddings too), 2D networks on volumes
slice by slice in the recorded plane."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch
from monai.inferers import sliding_window_inference

from medseg.core.case import Case, make_affine
from medseg.core.errors import ModelError
from medseg.engine.inferer import Inferer, tta_axes
from medseg.engine.sliding import sliding_window
from medseg.runs import Resolved

NAMES = ["background", "a", "b"]


def _net(dims: int, seed: int, channels: int = 1) -> torch.nn.Module:
    """A small network that is not mirror-symmetric (random 3-wide kernels, a bias per class)."""
    torch.manual_seed(seed)
    conv = torch.nn.Conv2d if dims == 2 else torch.nn.Conv3d
    return torch.nn.Sequential(conv(channels, 4, 3, padding=1), torch.nn.Tanh(), conv(4, len(NAMES), 3, padding=1)).eval()


def _case(shape: tuple[int, ...], seed: int = 0, affine: np.ndarray | None = None) -> Case:
    rng = np.random.default_rng(seed)
    image = (rng.normal(size=(1, *shape)) * 40 + 100).astype(np.float32)
    return Case(image, None, np.eye(len(shape) + 1) if affine is None else affine, "c")


def _zscore(image: np.ndarray) -> np.ndarray:
    return ((image - image.mean()) / image.std()).astype(np.float32)


def _softmax(net: torch.nn.Module, x: np.ndarray) -> np.ndarray:
    with torch.no_grad():
        return torch.softmax(net(torch.from_numpy(np.ascontiguousarray(x))[None]), 1)[0].numpy()


def test_mirroring_equals_flipping_the_input_by_hand() -> None:
    case = _case((23, 30))
    net = _net(2, 0)
    rec = Resolved(spatial_dims=2, in_channels=1, class_names=NAMES, data_dims=2)
    x = _zscore(case.image)
    by_hand = []
    for k in range(3):
        for axes in itertools.combinations((1, 2), k):  # the image's spatial axes (after the channel axis)
            flipped = np.flip(x, axes) if axes else x
            p = _softmax(net, flipped)
            by_hand.append(np.flip(p, axes) if axes else p)
    expected = np.mean(by_hand, axis=0)
    got = Inferer(net, rec, tta="all").probabilities(case)
    np.testing.assert_allclose(got, expected, atol=1e-6)
    plain = Inferer(net, rec).probabilities(case)
    assert np.abs(plain - expected).max() > 1e-3  # mirroring changes the result: the comparison can tell
    np.testing.assert_array_equal(Inferer(net, rec, tta="all").predict(case), expected.argmax(0))


def test_mirroring_inside_sliding_windows_equals_monai_with_a_hand_made_predictor() -> None:
    case = _case((37, 29))
    net = _net(2, 1)
    rec = Resolved(spatial_dims=2, in_channels=1, class_names=NAMES, data_dims=2, patch_size=[16, 16])

    def mirrored(t: torch.Tensor) -> torch.Tensor:
        ps = [torch.flip(torch.softmax(net(torch.flip(t, d)), 1), d) for d in ([], [2], [3], [2, 3])]
        return sum(ps) / 4

    with torch.no_grad():
        ref = sliding_window_inference(torch.from_numpy(_zscore(case.image))[None], [16, 16], 4, mirrored, overlap=0.5, mode="gaussian")[0].numpy()
    got = Inferer(net, rec, tta="all").probabilities(case)
    np.testing.assert_allclose(got, ref, atol=1e-5)


def test_ensemble_of_two_different_networks_is_the_mean_of_their_probabilities() -> None:
    case = _case((26, 19), seed=3)
    a, b = _net(2, 10), _net(2, 11)
    rec = Resolved(spatial_dims=2, in_channels=1, class_names=NAMES, data_dims=2)
    x = _zscore(case.image)
    pa, pb = _softmax(a, x), _softmax(b, x)
    assert np.abs(pa - pb).max() > 1e-2  # two really different members
    got = Inferer([a, b], rec).probabilities(case)
    np.testing.assert_allclose(got, (pa + pb) / 2, atol=1e-6)
    np.testing.assert_allclose(got.sum(0), 1.0, atol=1e-5)
    np.testing.assert_array_equal(Inferer([a, b], rec).predict(case), ((pa + pb) / 2).argmax(0))


def test_ensemble_members_must_share_their_training_record() -> None:
    a, b = _net(2, 0), _net(2, 1)
    a.resolved = Resolved(spatial_dims=2, in_channels=1, class_names=NAMES, patch_size=[16, 16])  # type: ignore[assignment]
    b.resolved = Resolved(spatial_dims=2, in_channels=1, class_names=NAMES, patch_size=[32, 32])  # type: ignore[assignment]
    with pytest.raises(ModelError, match=r"ensemble member 2 was trained with another patch_size \(\[32, 32\] vs \[16, 16\]\)"):
        Inferer([a, b])


#: (image shape, window, overlap): bigger than the window, smaller by odd amounts (odd paddings), mixed
SW_CASES = [
    ((40, 50, 37), (16, 32, 32), 0.5),
    ((10, 20, 20), (16, 32, 32), 0.5),
    ((9, 21, 40), (16, 32, 32), 0.5),
    ((33, 64, 30), (32, 32, 16), 0.25),
    ((19, 27), (32, 32), 0.5),
    ((45, 7), (16, 16), 0.5),
]


@pytest.mark.parametrize(("shape", "roi", "overlap"), SW_CASES)
def test_sliding_window_equals_monai(shape: tuple[int, ...], roi: tuple[int, ...], overlap: float) -> None:
    from monai.networks.nets import UNet

    torch.manual_seed(0)
    net = UNet(len(shape), 1, 3, (4, 8), (2,), num_res_units=0).eval()

    def pred(t: torch.Tensor) -> torch.Tensor:
        return torch.softmax(net(t), 1)

    x = torch.randn(1, 1, *shape)
    with torch.no_grad():
        ref = sliding_window_inference(x, roi, 4, pred, overlap=overlap, mode="gaussian")[0]
        probs = sliding_window(x, pred, roi, 3, overlap=overlap)
        labels = sliding_window(x, pred, roi, 3, overlap=overlap, reduce=lambda b: b.argmax(0))
    torch.testing.assert_close(probs, ref, atol=1e-6, rtol=1e-6)
    assert torch.equal(labels.long(), ref.argmax(0))
    assert labels.shape == shape


def test_a_2d_network_predicts_a_volume_slice_by_slice_in_its_training_plane() -> None:
    """Trained on slices along array axis 0 of volumes whose axis 0 is the x (sagittal) axis: a volume
    stored with x last is cut along its last axis, each slice z-scored with the whole volume."""
    net = _net(2, 4)
    rec = Resolved(spatial_dims=2, in_channels=1, class_names=NAMES, data_dims=3, slices=True, slice_axis=0, slice_plane="sagittal")
    stored = _case((7, 12, 9), seed=5, affine=make_affine((2.0, 0.8, 0.9), (10.0, -4.0, 3.0)))
    x = _zscore(stored.image)[0]
    expected = np.stack([_softmax(net, x[i][None]).argmax(0) for i in range(x.shape[0])])
    inferer = Inferer(net, rec, sw_batch_size=3)
    np.testing.assert_array_equal(inferer.predict(stored), expected)
    # the same volume with the x axis moved last (affine columns moved alike): sliced along axis 2
    moved_aff = stored.affine.copy()
    moved_aff[:, :3] = stored.affine[:, [1, 2, 0]]
    moved = Case(np.moveaxis(stored.image, 1, 3), None, moved_aff, "moved")
    assert inferer.slice_axis(moved) == 2
    np.testing.assert_array_equal(inferer.predict(moved), np.moveaxis(expected, 0, 2))


def test_a_network_trained_on_2d_images_slices_volumes_axially() -> None:
    net = _net(2, 6)
    rec = Resolved(spatial_dims=2, in_channels=1, class_names=NAMES, data_dims=2)
    vol = _case((11, 10, 5), seed=2, affine=make_affine((0.7, 0.7, 3.0)))  # z last
    x = _zscore(vol.image)[0]
    expected = np.stack([_softmax(net, x[:, :, k][None]).argmax(0) for k in range(5)], axis=2)
    inferer = Inferer(net, rec)
    assert inferer.slice_axis(vol) == 2
    np.testing.assert_array_equal(inferer.predict(vol), expected)


def test_validation_scores_are_the_networks_logits_or_the_log_of_the_blend() -> None:
    net = _net(2, 7)
    x = torch.randn(2, 1, 20, 20)
    whole = Inferer(net, Resolved(spatial_dims=2, in_channels=1, class_names=NAMES))
    with torch.no_grad():
        torch.testing.assert_close(whole.scores(x, log=True), net(x))
    windowed = Inferer(net, Resolved(spatial_dims=2, in_channels=1, class_names=NAMES, patch_size=[12, 12]))
    probs = windowed.scores(x)
    with torch.no_grad():
        ref = sliding_window_inference(x[:1], [12, 12], 4, lambda t: torch.softmax(net(t), 1), overlap=0.5, mode="gaussian")
    torch.testing.assert_close(probs[:1], ref, atol=1e-6, rtol=1e-6)
    torch.testing.assert_close(torch.softmax(windowed.scores(x, log=True), 1), probs, atol=1e-6, rtol=1e-5)


def test_tta_axes_and_bad_inputs() -> None:
    assert tta_axes("none", 3) == [()]
    assert len(tta_axes("all", 3)) == 8 and len(tta_axes([0, 2], 3)) == 4
    with pytest.raises(ModelError, match="out of range"):
        tta_axes([3], 3)
    inferer = Inferer(_net(2, 0), Resolved(spatial_dims=2, in_channels=1, class_names=NAMES))
    with pytest.raises(ModelError, match=r"3 channel\(s\); the model takes 2D images with 1"):
        inferer.predict(Case(np.zeros((3, 8, 8), np.float32), None, np.eye(3), "rgb"))
    with pytest.raises(ModelError, match="context slices"):
        Inferer(_net(2, 0), Resolved(spatial_dims=2, in_channels=3, class_names=NAMES, context_slices=1))
