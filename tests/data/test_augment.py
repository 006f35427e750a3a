"""Augmentation presets: overrides, image/label kept aligned, reproducibility, the preview command."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from medseg.cli import app
from medseg.core.errors import ConfigError
from medseg.data.augment import PRESETS, RandRotateScaled, augmentation_pipeline, resolve_augmentation


def test_presets_and_overrides() -> None:
    assert resolve_augmentation("none") == {}
    assert set(resolve_augmentation("light")) == {"flip", "rot90"}
    t = resolve_augmentation("default", {"rotate": {"prob": 0.0}, "elastic": {"prob": 0.5}})
    assert "rotate" not in t and t["elastic"]["prob"] == 0.5 and "sigma" in t["elastic"]
    assert set(PRESETS["heavy"]) >= set(PRESETS["default"])
    with pytest.raises(ConfigError, match="unknown augmentation 'twist'"):
        resolve_augmentation("default", {"twist": {"prob": 1}})
    with pytest.raises(ConfigError, match="rotate has no parameter 'angle'"):
        resolve_augmentation("default", {"rotate": {"angle": 3}})
    with pytest.raises(ConfigError, match="unknown augmentation preset"):
        resolve_augmentation("wild")


@pytest.mark.parametrize("dims", [2, 3])
def test_spatial_transforms_move_image_and_label_together(dims: int) -> None:
    shape = (24,) * dims
    lab = np.zeros((1, *shape), np.int64)
    lab[(0, *[slice(6, 15)] * dims)] = 1
    lab[(0, *[slice(8, 11)] * dims)] = 2
    tf = RandRotateScaled(("image", "label"), dims, rotate_prob=1.0, rotate_range=40, scale_prob=1.0, scale_range=(0.8, 1.2))
    for seed in range(4):
        tf.set_random_state(seed)
        out = tf({"image": torch.as_tensor(lab.astype(np.float32)), "label": torch.as_tensor(lab)})
        img, y = np.asarray(out["image"]), np.asarray(out["label"])
        assert y.dtype == np.int64 and set(np.unique(y)) <= {0, 1, 2} and img.shape == y.shape == lab.shape
        assert (np.rint(img) == y).mean() > 0.97  # the linear image and the nearest label agree


def test_multilabel_channels_and_reproducibility() -> None:
    rng = np.random.default_rng(0)
    img = rng.normal(size=(1, 16, 32, 32)).astype(np.float32)
    lab = np.zeros((2, 16, 32, 32), np.float32)
    lab[0, 4:12, 8:24, 8:24] = 1
    lab[1, 6:10, 10:20, 10:20] = 1
    tf = augmentation_pipeline("heavy", 3, {"rotate": {"prob": 1.0}})
    tf.set_random_state(7)
    a = tf({"image": img, "label": lab})
    tf.set_random_state(7)
    b = tf({"image": img, "label": lab})
    assert torch.equal(torch.as_tensor(a["image"]), torch.as_tensor(b["image"]))
    out = np.asarray(a["label"])
    assert out.shape == (2, 16, 32, 32) and set(np.unique(out)) <= {0.0, 1.0}


def test_augment_preview_writes_a_png(tmp_path: Path) -> None:
    out = tmp_path / "grid.png"
    small = "data.builtin={n_patients: 4, slices_per_patient: 1, size: 32}"
    r = CliRunner().invoke(app, ["augment-preview", "phantom2d", "--out", str(out), "--preset", "heavy", "--cases", "2", "--samples", "2", "--set", small])
    assert r.exit_code == 0, r.output
    assert out.is_file() and out.read_bytes()[:4] == b"\x89PNG"
    r = CliRunner().invoke(app, ["augment-preview", "phantom2d", "--out", str(out), "--preset", "wild"])
    assert r.exit_code == 2 and "\n" not in r.output.strip()


@pytest.mark.parametrize("size", [(5, 7, 9), (6, 11)])
def test_separable_affine_grid_equals_torch(size: tuple[int, ...]) -> None:
    from torch.nn.functional import affine_grid as torch_grid

    from medseg.data.augment import affine_grid

    theta = torch.randn(len(size), len(size) + 1, generator=torch.Generator().manual_seed(0))
    assert torch.allclose(affine_grid(theta, size), torch_grid(theta[None], [1, 1, *size], align_corners=False), atol=1e-5)


def test_flips_hit_each_axis_about_half_the_time() -> None:
    from medseg.data.augment import RandFlipAxesd

    x = torch.arange(8.0).reshape(1, 2, 2, 2)
    tf = RandFlipAxesd(("image", "label"), prob=0.5, axes=[0, 1, 2])
    tf.set_random_state(0)
    flipped = [0, 0, 0]
    for _ in range(200):
        out = tf({"image": x, "label": x.long()})
        assert torch.equal(out["image"].long(), out["label"])
        v = int(out["image"][0, 0, 0, 0])  # arange: the corner value spells which axes were flipped
        for a, bit in enumerate((4, 2, 1)):
            flipped[a] += int(bool(v & bit))
    assert all(60 < f < 140 for f in flipped), flipped


def test_quarter_turns_keep_a_non_square_patch_stackable() -> None:
    """A 112 × 128 patch rotated by 90° would be 128 × 112 and could not join its batch: only 180° turns for it."""
    from medseg.data.augment import RandRot90d

    rot = RandRot90d(keys=("image", "label"), prob=1.0, axes=(0, 1))
    rot.set_random_state(0)
    img = torch.arange(112 * 128, dtype=torch.float32).reshape(1, 112, 128)
    turned = [rot({"image": img, "label": img.clone()}) for _ in range(8)]
    assert all(t["image"].shape == (1, 112, 128) for t in turned)
    assert all(torch.equal(t["image"], torch.rot90(img, 2, (1, 2))) and torch.equal(t["label"], t["image"]) for t in turned)
    sq = torch.arange(32 * 32, dtype=torch.float32).reshape(1, 32, 32)
    ks = set()
    for _ in range(30):
        out = rot({"image": sq, "label": sq})["image"]
        ks |= {k for k in (1, 2, 3) if torch.equal(out, torch.rot90(sq, k, (1, 2)))}
    assert ks == {1, 2, 3}  # a square patch gets every quarter turn
    batch = torch.utils.data.default_collate(turned)
    assert batch["image"].shape == (8, 1, 112, 128)
