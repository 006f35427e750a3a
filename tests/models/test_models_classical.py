"""The classical per-pixel baselines: features, fit/predict, exactness of the exported arrays, safe files."""

from __future__ import annotations

import json
import pathlib

import numpy as np
import pytest
import torch

from medseg.core.errors import ModelError
from medseg.models import PixelClassifier, create_model
from medseg.models.classical import export_estimator, feature_names, filter_bank, portable_proba

pytest.importorskip("sklearn")


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _phantoms(n: int, size: int = 32, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Bright discs (class 1) and dark squares (class 2) on a noisy mid-grey background."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:size, :size]
    images = np.zeros((n, 1, size, size), np.float32)
    labels = np.zeros((n, 1, size, size), np.int64)
    for i in range(n):
        cy, cx = rng.integers(8, size - 8, 2).tolist()
        r = int(rng.integers(4, 7))
        disc = (yy - cy) ** 2 + (xx - cx) ** 2 <= r**2
        sy, sx = rng.integers(2, size - 8, 2)
        square = np.zeros_like(disc)
        square[sy : sy + 6, sx : sx + 6] = True
        square &= ~disc
        labels[i, 0][disc], labels[i, 0][square] = 1, 2
        images[i, 0] = 0.5 + 0.4 * disc - 0.4 * square + rng.normal(0, 0.15, (size, size))
    return images, labels


def test_filter_bank_shapes_and_names() -> None:
    img = np.random.default_rng(0).normal(size=(2, 20, 24)).astype(np.float32)
    f = filter_bank(img, (1.0, 2.0))
    assert f.shape == (len(feature_names(2, 2, (1.0, 2.0))), 20, 24) == (2 * (1 + 2 * 5), 20, 24)
    assert f.dtype == np.float32 and np.isfinite(f).all()
    np.testing.assert_array_equal(f[0], img[0])
    vol = np.random.default_rng(0).normal(size=(1, 8, 9, 10))
    f3 = filter_bank(vol, (1.0,))
    assert f3.shape == (1 + 6, 8, 9, 10)
    assert (f3[4] >= f3[5] - 1e-6).all() and (f3[5] >= f3[6] - 1e-6).all()  # structure-tensor eigenvalues, descending


@pytest.mark.parametrize("name", ["classical_rf", "classical_logreg", "classical_gbm"])
def test_fit_predict_and_round_trip(name: str, tmp_path: pathlib.Path) -> None:
    x, y = _phantoms(6)
    params = {"max_iter": 30} if name == "classical_gbm" else {}
    model = create_model(name, 2, 1, 3, max_samples=4000, sigmas=(1.0, 2.0), params=params, threads=1)
    assert isinstance(model, PixelClassifier) and sum(p.numel() for p in model.parameters()) == 0
    with pytest.raises(ModelError, match="not fitted"):
        model.predict(x)
    model.fit(x, y)
    xt, yt = _phantoms(3, seed=1)
    pred = model.predict(xt)
    assert pred.shape == (3, 32, 32)
    assert (pred == yt[:, 0]).mean() > 0.85
    proba = model.predict_proba(xt)
    np.testing.assert_allclose(proba.sum(1), 1, atol=1e-5)
    logits = model(torch.from_numpy(xt))
    assert logits.shape == (3, 3, 32, 32) and torch.isfinite(logits).all()
    np.testing.assert_allclose(torch.softmax(logits, 1).numpy(), proba, atol=1e-5)
    path = model.save(tmp_path / "model.npz")
    loaded = PixelClassifier.load(path)
    np.testing.assert_array_equal(loaded.predict_proba(xt), proba)
    with np.load(path, allow_pickle=False) as z:  # plain arrays only
        assert json.loads(str(z["meta"]))["classifier"] == model.classifier


@pytest.mark.parametrize("kind", ["rf", "logreg", "hgb", "rf_binary", "logreg_binary", "hgb_binary"])
def test_exported_arrays_reproduce_scikit_learn(kind: str) -> None:
    from sklearn.ensemble import HistGradientBoostingClassifier, RandomForestClassifier
    from sklearn.linear_model import LogisticRegression
    from threadpoolctl import threadpool_limits

    rng = np.random.default_rng(0)
    x = rng.normal(size=(3000, 6)).astype(np.float32)
    y = (x[:, 0] + 0.5 * x[:, 1] ** 2 > 0.3).astype(int) + (0 if kind.endswith("binary") else (x[:, 2] > 1).astype(int))
    est = {
        "rf": RandomForestClassifier(n_estimators=8, max_depth=10, random_state=0),
        "logreg": LogisticRegression(max_iter=500),
        "hgb": HistGradientBoostingClassifier(max_iter=15, random_state=0),
    }[kind.split("_")[0]]
    with threadpool_limits(limits=1):  # OpenMP spin-waits crawl on a busy test machine
        est.fit(x, y)
    xt = rng.normal(size=(500, 6)).astype(np.float32)
    np.testing.assert_allclose(
        portable_proba(export_estimator(est), xt), est.predict_proba(xt), rtol=1e-5, atol=1e-6
    )  # scikit-learn's linear models compute in float32


def test_multi_label_fit() -> None:
    x, y = _phantoms(4)
    multi = np.concatenate([y == 1, y == 2], axis=1).astype(np.int64)  # two overlapping-capable labels
    model = create_model("classical_rf", 2, 1, 2, max_samples=3000, sigmas=(1.0,), threads=1).fit(x, multi)
    assert model.multi_label
    pred = model.predict(x)
    assert pred.shape == (4, 2, 32, 32) and pred.dtype == bool
    logits = model(torch.from_numpy(x))
    np.testing.assert_array_equal((logits > 0).numpy(), pred)


def test_3d_volume() -> None:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(2, 1, 12, 12, 12)).astype(np.float32)
    y = (x[:, :1] > 0.5).astype(np.int64)
    model = create_model("classical_logreg", 3, 1, 2, sigmas=(1.0,), max_samples=2000, threads=1).fit(x, y)
    assert model.predict(x).shape == (2, 12, 12, 12)


def test_bad_inputs(tmp_path: pathlib.Path) -> None:
    x, y = _phantoms(2)
    model = create_model("classical_logreg", 2, 1, 3)
    with pytest.raises(ModelError, match=r"expected images of shape \(B, 1, H, W\)"):
        model.fit(x[:, :, None], y)
    with pytest.raises(ModelError, match=r"class indices in \[0, 2\]"):
        model.fit(x, y + 5)
    with pytest.raises(ModelError, match="contain only class 0"):
        model.fit(x, np.zeros_like(y))
    with pytest.raises(ModelError, match="not fitted"):
        model.save(tmp_path / "m.npz")
    np.savez(tmp_path / "evil.npz", meta=np.array([{"format": "medseg-pixel-classifier"}], dtype=object))
    with pytest.raises(ModelError, match="not a readable pixel-classifier file") as e:
        PixelClassifier.load(tmp_path / "evil.npz")
    assert "\n" not in str(e.value)
    (tmp_path / "junk.npz").write_bytes(b"junk")
    with pytest.raises(ModelError, match="not a readable"):
        PixelClassifier.load(tmp_path / "junk.npz")
    with pytest.raises(ModelError, match="not found"):
        PixelClassifier.load(tmp_path / "absent.npz")
