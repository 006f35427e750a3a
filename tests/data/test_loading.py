"""Sampling and the DataModule: foreground oversampling, slices / 2.5D, the cache path, bad input."""

from __future__ import annotations

import csv
import re
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from helpers import REPO, tiny_config
from medseg.cli import app
from medseg.config import config_from_dict
from medseg.core.errors import DatasetError, MedsegError
from medseg.data.batches import EpochsOfOneStream, case_batches
from medseg.data.loading import CaseItems, SegDataModule
from medseg.data.sampling import PatchSampler, crop_pad
from medseg.data.source import open_dataset, resolve_splits
from medseg.engine.train import train


def _item(fg: bool = True, shape=(8, 40, 40)) -> dict:
    img = np.random.default_rng(0).normal(size=(1, *shape)).astype(np.float32)
    lab = np.zeros((1, *shape), np.int64)
    if fg:
        lab[0, 3:5, 30:34, 2:5] = 1
        lab[0, 4, 5:25, 5:25] = 2
    return {"image": img, "label": lab, "case_id": "c"}


def test_crop_pad_reads_the_box_and_pads_outside() -> None:
    a = np.arange(2 * 4 * 5).reshape(2, 4, 5)
    out = crop_pad(a, [-1, 3], [3, 4])
    assert out.shape == (2, 3, 4) and (out[:, 0] == 0).all() and np.array_equal(out[:, 1:, :2], a[:, :2, 3:])


def test_foreground_oversampling_and_class_balance() -> None:
    item = _item()
    full = PatchSampler([2, 8, 8], foreground_oversample=1.0)
    hits = {1: 0, 2: 0}
    for s in range(60):
        _, lab = full(item, np.random.default_rng(s))
        assert lab.shape == (1, 2, 8, 8) and lab.max() > 0
        hits[1] += int((lab == 1).any())
        hits[2] += int((lab == 2).any())
    assert hits[2] > hits[1]  # class 2 has 400 voxels, class 1 only 24
    balanced = PatchSampler([2, 8, 8], foreground_oversample=1.0, class_balanced=True)
    ones = sum(int((balanced(item, np.random.default_rng(s))[1] == 1).any()) for s in range(60))
    assert ones > hits[1] and ones > 15
    none = PatchSampler([2, 8, 8], foreground_oversample=0.0)
    assert sum(int(none(item, np.random.default_rng(s))[1].max() > 0) for s in range(60)) < 40


def test_empty_label_samples_background_and_warns_once() -> None:
    sampler = PatchSampler([2, 8, 8], foreground_oversample=1.0)
    with pytest.warns(UserWarning, match="empty label") as rec:
        for s in range(5):
            _, lab = sampler(_item(fg=False), np.random.default_rng(s))
            assert lab.shape == (1, 2, 8, 8) and lab.max() == 0
    assert len(rec) == 1


def test_patch_larger_than_every_case_is_padded() -> None:
    img, lab = PatchSampler([16, 64, 64])(_item(), np.random.default_rng(0))
    assert img.shape == (1, 16, 64, 64) and lab.shape == (1, 16, 64, 64) and lab.max() == 2


def test_slices_and_25d_context() -> None:
    item = _item()
    img, lab = PatchSampler([16, 16], foreground_oversample=1.0, slices=True, slice_axis=0, context_slices=1)(item, np.random.default_rng(0))
    assert img.shape == (3, 16, 16) and lab.shape == (1, 16, 16) and lab.max() > 0
    img, lab = PatchSampler(None, foreground_oversample=0.0, slices=True)(item, np.random.default_rng(0), slice_index=4)
    assert img.shape == (1, 40, 40) and np.array_equal(img[0], item["image"][0, 4]) and np.array_equal(lab[0], item["label"][0, 4])


def _cfg(tmp_path: Path, **data) -> dict:
    base = {
        "dataset": "phantom3d",
        "builtin": {"n_patients": 5, "size": 32, "depth": 8},
        "patch_size": [4, 24, 24],
        "batch_size": 2,
        "preprocess": {"enabled": True, "orientation": "RAS", "crop": "nonzero", "spacing": "plan", "cache_dir": str(tmp_path / "cache")},
    }
    base.update(data)
    return tiny_config(data=base, model={"params": {"channels": [4, 8], "num_res_units": 0}})


def test_datamodule_reads_only_the_memory_mapped_cache(tmp_path: Path) -> None:
    cfg = config_from_dict(_cfg(tmp_path, augment="default"))
    ds = open_dataset(cfg)
    dm = SegDataModule(cfg, ds, resolve_splits(cfg, ds))
    items = dm.items("train")
    assert isinstance(items[0]["image"], np.memmap) and (tmp_path / "cache" / "cache.json").is_file()
    torch.manual_seed(0)
    a = next(iter(dm.train_dataloader()))
    torch.manual_seed(0)
    b = next(iter(dm.train_dataloader()))
    assert a["image"].shape == (2, 1, 4, 24, 24) and a["label"].dtype == torch.int64
    assert torch.equal(a["image"], b["image"]) and torch.equal(a["label"], b["label"])  # deterministic under a seed
    v = next(iter(dm.val_dataloader()))
    assert v["image"].shape[2:] == v["label"].shape[2:]


def test_a_patch_over_the_largest_case_warns_only_when_it_is_more_than_rounding(tmp_path: Path) -> None:
    """A plan's patch is rounded up to its poolings' multiple (96 for a 95-voxel axis): no warning for that; a patch
    well over the largest case (a mistake: mostly padding) warns, naming the largest case."""
    cfg = config_from_dict(_cfg(tmp_path, preprocess={"enabled": False}, patch_size=[8, 32, 32]))
    ds = open_dataset(cfg)
    dm = SegDataModule(cfg, ds, resolve_splits(cfg, ds))
    items = dm.items("train")
    big = np.max([np.shape(it["image"])[1:] for it in items], axis=0).tolist()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        dm._warn_large_patch(items, [big[0], big[1] + 2, big[2] + 2])  # 34 for 32: rounding, not a mistake
    with pytest.warns(UserWarning, match=re.escape(f"larger than the training cases (largest {big})")):
        dm._warn_large_patch(items, [big[0], 2 * big[1], big[2]])


def test_slices_datamodule_shapes(tmp_path: Path) -> None:
    cfg = config_from_dict(_cfg(tmp_path, patch_size=[24, 24], slices=True, context_slices=1, preprocess={"enabled": False}))
    ds = open_dataset(cfg)
    dm = SegDataModule(cfg, ds, resolve_splits(cfg, ds))
    assert dm.spatial_dims == 2 and dm.in_channels == 3
    batch = next(iter(dm.train_dataloader()))
    assert batch["image"].shape == (2, 3, 24, 24) and batch["label"].shape == (2, 1, 24, 24)
    val = next(iter(dm.val_dataloader()))
    assert val["image"].shape[1:] == (3, 32, 32)


def test_slice_validation_batches_never_mix_cases_of_different_sizes(tmp_path: Path) -> None:
    """Resampled volumes differ in-plane (here 27² to 38²): a batch of whole slices must hold one case's slices only."""
    raw = _cfg(tmp_path, patch_size=[24, 24], slices=True, batch_size=5, split={"ratios": [0.4, 0.6, 0.0]})
    raw["data"]["builtin"]["n_patients"] = 10
    cfg = config_from_dict(raw)
    ds = open_dataset(cfg)
    dm = SegDataModule(cfg, ds, resolve_splits(cfg, ds))
    shapes = dm.items("val").shapes()
    assert len({tuple(s) for s in shapes}) > 1  # else the test proves nothing
    batches = list(dm.val_dataloader())
    assert sum(b["image"].shape[0] for b in batches) == sum(s[0] for s in shapes)
    for b in batches:
        assert b["image"].shape[0] <= 5 and len(set(b["case_id"])) == 1
    assert case_batches([(0, 0), (0, 1), (0, 2), (1, 0), (1, 1), (2, 0)], 2) == [[0, 1], [2], [3, 4], [5]]


def test_epochs_with_workers_come_from_one_stream(tmp_path: Path) -> None:
    """With loader processes, every epoch continues one iterator (its prefetch stays full); training runs on it."""
    cfg = config_from_dict(_cfg(tmp_path, num_workers=1))
    ds = open_dataset(cfg)
    dm = SegDataModule(cfg, ds, resolve_splits(cfg, ds))
    dm.batches_per_epoch = 3
    loader = dm.train_dataloader()
    assert isinstance(loader, EpochsOfOneStream) and len(loader) == 3
    calls = []

    class Counting:  # counts how often an iterator is asked of the loader (a persistent one resets, even if reused)
        def __iter__(self, real=loader.loader):
            calls.append(1)
            return iter(real)

    loader.loader = Counting()
    first = list(loader)
    second = list(loader)
    assert len(calls) == 1 and len(first) == len(second) == 3  # one iterator for both epochs, not a restarted one
    assert all(b["image"].shape == (2, 1, 4, 24, 24) for b in first + second)
    assert not torch.equal(first[0]["image"], second[0]["image"])
    dm.config = config_from_dict(_cfg(tmp_path, num_workers=0))
    assert not isinstance(dm.train_dataloader(), EpochsOfOneStream)  # no workers: no pipeline to keep full
    raw = _cfg(tmp_path, num_workers=1) | {"train": {"epochs": 2, "iterations_per_epoch": 3, "min_iterations": 0}}
    run = train(config_from_dict(raw), tmp_path / "run", progress=False)
    assert [int(r["step"]) for r in csv.DictReader((run / "history.csv").open())] == [3, 6]


def test_worker_crash_names_the_case(tmp_path: Path) -> None:
    cfg = config_from_dict(_cfg(tmp_path, num_workers=1))
    ds = open_dataset(cfg)
    dm = SegDataModule(cfg, ds, resolve_splits(cfg, ds))
    cid = dm.ids("train")[0]
    (tmp_path / "cache" / dm.cache.info["cases"][cid]["image"]).write_bytes(b"not an npy file")
    ds_train = dm.train_dataset()
    loader = torch.utils.data.DataLoader(ds_train, batch_size=len(ds_train), num_workers=1, timeout=60)
    with pytest.raises(MedsegError) as e:
        next(iter(loader))
    msg = str(e.value)
    assert cid in msg and "\n" not in msg and "Traceback" not in msg
    with pytest.raises(DatasetError, match=cid):
        CaseItems(ds_train.items, ds_train.transform, ds_train.sampler)[dm.ids("train").index(cid)]


def test_train_on_the_cache_and_prepare_cli(tmp_path: Path) -> None:
    small = ["--set", "data.builtin={n_patients: 4, size: 24, depth: 6}", "--set", f"data.preprocess.cache_dir={tmp_path / 'c'}"]
    r = CliRunner().invoke(app, ["prepare", "phantom3d", "--no-progress", *small])
    assert r.exit_code == 0, r.output
    assert "recommended" in r.output and (tmp_path / "c" / "cache.json").is_file()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        run = train(config_from_dict(_cfg(tmp_path)), tmp_path / "run", progress=False)
    assert (run / "checkpoints" / "last.ckpt").is_file()
    r = CliRunner().invoke(app, ["prepare", "phantom2d", "--no-progress", "--plan", str(tmp_path / "missing.json")])
    assert r.exit_code == 2 and "plan file not found" in r.output


def test_reference_pipelines_in_the_recipes_are_valid_config() -> None:
    import re

    import yaml

    from medseg.data.augment import resolve_augmentation

    text = (REPO / "docs" / "recipes.md").read_text().split("## Preprocessing")[1]
    blocks = re.findall(r"```yaml\n(.*?)```", text, re.S)
    assert len(blocks) == 3
    got = []
    for block in blocks:
        d = config_from_dict(yaml.safe_load(block)).data
        got.append((d.preprocess.resize, d.preprocess.pad_to, sorted(resolve_augmentation(d.augmentation.preset or d.augment, d.augmentation.overrides))))
    assert got[0] == ([384, 384], None, [])  # 000 names no augmentation; its 2D slices of volumes resize in-plane
    assert config_from_dict(yaml.safe_load(blocks[0])).data.slices
    assert got[1] == (None, [96, 96, 96], ["rotate", "scale"])
    assert got[2] == ([128, 128, 64], None, ["flip", "noise", "rotate"])
