"""Shared fixtures: everything is made by code, in temporary folders."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch

torch.set_num_threads(2)

try:  # property-based tests: 1,000–1,500 examples per parser by default (about 25 s in all), 20,000 with MEDSEG_FUZZ=thorough (make test-all)
    from hypothesis import HealthCheck, settings

    _common = {"deadline": None, "database": None, "suppress_health_check": [HealthCheck.too_slow, HealthCheck.function_scoped_fixture]}
    settings.register_profile("medseg", max_examples=1500, **_common)
    settings.register_profile("thorough", max_examples=20000, **_common)
    settings.load_profile(os.environ.get("MEDSEG_FUZZ", "medseg"))
except ModuleNotFoundError:  # the dev extra is not installed: the property-based tests skip themselves
    pass


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Built-in data sets are written to a per-session temporary cache, never the user's."""
    cache = tmp_path_factory.getbasetemp() / "medseg-cache"
    monkeypatch.setenv("MEDSEG_CACHE", str(cache))
    return cache


@pytest.fixture(scope="module")
def one_torch_thread():
    """Tiny tensors: one intra-op thread is fastest, and avoids OpenMP spin-waits on a busy machine."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(1234)


@pytest.fixture(scope="session")
def slices_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 2D U-Net trained on slices of phantom3d volumes (4 patients, 8 slices of 32²), evaluated on its test split."""
    from helpers import tiny_config
    from medseg.config import config_from_dict
    from medseg.engine.train import train
    from medseg.workflows.evaluate import evaluate_run

    root = tmp_path_factory.mktemp("slices")
    cfg = tiny_config(
        data={"dataset": "phantom3d", "builtin": {"n_patients": 4, "size": 32, "depth": 8}, "slices": True, "batch_size": 4, "cache_dir": str(root / "cache")},
        train={"epochs": 3},
    )
    run = train(config_from_dict(cfg), root / "runs" / "slices", progress=False)
    evaluate_run(run, split="test", progress=False)
    return run
