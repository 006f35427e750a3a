"""Classical per-pixel baselines (study 001): scikit-learn on a filter-bank feature stack.

Each pixel (voxel) is described by a filter bank computed per channel — intensity, and at every
scale σ: Gaussian smoothing, gradient magnitude, Laplacian of Gaussian and the eigenvalues of the
structure tensor — and classified by a random forest, a logistic regression or gradient-boosted
trees (scikit-learn's ``HistGradientBoostingClassifier``; the classic ``GradientBoostingClassifier``
is impractically slow on hundreds of thousands of pixels) trained on class-stratified sampled pixels.

Not trained by gradient descent: call :meth:`PixelClassifier.fit` once on training images. The
fitted model is turned into plain arrays (tree nodes, thresholds, leaf values, coefficients) and
*predicted from those arrays with NumPy*, so:

* saving is ``.npz`` (``allow_pickle=False``) — no pickle, no code execution on load, and
  scikit-learn is needed only to fit, not to predict;
* predictions before and after a save/load round trip are identical by construction.

The module is an ``nn.Module`` without parameters, so ``model(x)`` fits in the same inference code
as the networks: it returns ``log p`` (single-label; softmax gives back ``p``) or ``logit p``
(multi-label; sigmoid gives back ``p``), shaped like a network's logits.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
import torch.nn as nn
from scipy import ndimage

from medseg.core.atomic import atomic_path
from medseg.core.errors import DependencyError, ModelError
from medseg.models.catalog import register_model
from medseg.models.classical_trees import export_estimator, portable_proba, to_numpy

Classifier = Literal["random_forest", "logistic_regression", "gradient_boosting"]
FORMAT = "medseg-pixel-classifier"
PAPER = "Breiman 2001 (random forests); Friedman 2001 (gradient boosting); per-pixel filter-bank features as in ilastik (Sommer et al. 2011)"
_EPS = 1e-7


# ----------------------------------------------------------------------------- features
def feature_names(in_channels: int, spatial_dims: int, sigmas: Sequence[float]) -> list[str]:
    """Names of the filter-bank features, in the order :func:`filter_bank` stacks them."""
    names = []
    for c in range(in_channels):
        names.append(f"c{c}_intensity")
        for s in sigmas:
            names += [f"c{c}_gauss_s{s:g}", f"c{c}_gradmag_s{s:g}", f"c{c}_log_s{s:g}"]
            names += [f"c{c}_st_eig{i}_s{s:g}" for i in range(spatial_dims)]
    return names


def _structure_tensor_eigenvalues(img: np.ndarray, sigma: float) -> list[np.ndarray]:
    """Eigenvalues (descending) of the structure tensor: gradients at σ/2, products smoothed at σ."""
    d = img.ndim
    grads = [ndimage.gaussian_filter(img, max(sigma / 2, 0.5), order=[int(i == a) for i in range(d)]) for a in range(d)]
    j = {(a, b): ndimage.gaussian_filter(grads[a] * grads[b], sigma) for a in range(d) for b in range(a, d)}
    if d == 2:
        a, b, c = j[0, 0], j[1, 1], j[0, 1]
        half_tr, root = (a + b) / 2, np.sqrt(((a - b) / 2) ** 2 + c**2)
        return [half_tr + root, half_tr - root]
    m = np.empty((*img.shape, d, d), dtype=np.float64)
    for (p, q), v in j.items():
        m[..., p, q] = v
        m[..., q, p] = v
    ev = np.linalg.eigvalsh(m)  # ascending
    return [ev[..., i] for i in reversed(range(d))]


def filter_bank(image: np.ndarray, sigmas: Sequence[float] = (1.0, 2.0, 4.0)) -> np.ndarray:
    """Per-pixel features of one image.

    Args:
        image: ``(C, *S)`` with 2 or 3 spatial axes.
        sigmas: Gaussian scales in pixels.

    Returns:
        ``(F, *S)`` float32, ``F = C · (1 + len(sigmas) · (3 + ndim))`` (see :func:`feature_names`).
    """
    feats: list[np.ndarray] = []
    for ch in np.asarray(image, dtype=np.float64):
        feats.append(ch)
        for s in sigmas:
            feats.append(ndimage.gaussian_filter(ch, s))
            feats.append(ndimage.gaussian_gradient_magnitude(ch, s))
            feats.append(ndimage.gaussian_laplace(ch, s))
            feats += _structure_tensor_eigenvalues(ch, s)
    return np.stack(feats).astype(np.float32)


class PixelClassifier(nn.Module):
    """A scikit-learn classifier applied to every pixel's filter-bank features.

    Args:
        spatial_dims: 2 or 3.
        in_channels: image channels.
        num_classes: classes incl. background (single-label), or labels (multi-label: one binary
            classifier per label channel).
        classifier: ``random_forest``, ``logistic_regression`` or ``gradient_boosting``.
        sigmas: filter-bank scales in pixels.
        max_samples: pixels sampled for fitting (stratified by class, spread over the images).
        seed: sampling and estimator seed.
        params: keyword arguments of the scikit-learn estimator.
        threads: cap on the OpenMP/BLAS threads used while fitting (``None``: the libraries'
            default, all cores). Gradient boosting's OpenMP threads slow down badly on a busy,
            oversubscribed machine; 1 is then much faster.

    Shape:
        ``forward``: ``(B, C, *S)`` tensor → ``(B, K, *S)`` float32 tensor (log-probabilities,
        or logits for multi-label), no gradient.
    """

    def __init__(
        self,
        spatial_dims: int,
        in_channels: int,
        num_classes: int,
        *,
        classifier: Classifier = "random_forest",
        sigmas: Sequence[float] = (1.0, 2.0, 4.0),
        max_samples: int = 200_000,
        seed: int = 0,
        params: dict[str, Any] | None = None,
        threads: int | None = None,
    ):
        super().__init__()
        if classifier not in ("random_forest", "logistic_regression", "gradient_boosting"):
            raise ModelError(
                f"unknown classifier {classifier!r}", where="model.params.classifier", fix="use random_forest, logistic_regression or gradient_boosting"
            )
        self.spatial_dims, self.in_channels, self.num_classes = spatial_dims, in_channels, num_classes
        self.classifier, self.sigmas = classifier, tuple(float(s) for s in sigmas)
        self.max_samples, self.seed, self.params = int(max_samples), int(seed), dict(params or {})
        self.threads = threads
        self.multi_label = False
        self.scaler: tuple[np.ndarray, np.ndarray] | None = None
        self.models: list[dict[str, np.ndarray]] = []

    # ------------------------------------------------------------------ helpers
    @property
    def fitted(self) -> bool:
        return bool(self.models)

    @property
    def n_features(self) -> int:
        return len(feature_names(self.in_channels, self.spatial_dims, self.sigmas))

    def _check_images(self, images: Any) -> np.ndarray:
        x = to_numpy(images).astype(np.float32, copy=False)
        if x.ndim != self.spatial_dims + 2 or x.shape[1] != self.in_channels:
            raise ModelError(
                f"expected images of shape (B, {self.in_channels}, {', '.join('DHW'[-self.spatial_dims :])}), got {tuple(x.shape)}",
                where="pixel classifier",
                fix="pass a batch of channel-first images",
            )
        return x

    def _features(self, image: np.ndarray) -> np.ndarray:
        """``(C, *S)`` → scaled ``(P, F)`` float32."""
        f = filter_bank(image, self.sigmas).reshape(self.n_features, -1).T.astype(np.float64)
        if self.scaler is not None:
            f = (f - self.scaler[0]) / self.scaler[1]
        return f.astype(np.float32)

    def _estimator(self) -> Any:
        try:
            from sklearn.ensemble import HistGradientBoostingClassifier, RandomForestClassifier
            from sklearn.linear_model import LogisticRegression
        except ImportError:
            raise DependencyError("the classical baselines need scikit-learn to fit", fix="pip install scikit-learn (or medseg[dev])") from None
        p = dict(self.params)
        if self.classifier == "random_forest":
            p = {"n_estimators": 50, "max_depth": 16, "min_samples_leaf": 5, "n_jobs": -1, **p}
            return RandomForestClassifier(random_state=self.seed, **p)
        if self.classifier == "logistic_regression":
            return LogisticRegression(**{"C": 1.0, "max_iter": 300, **p})
        return HistGradientBoostingClassifier(random_state=self.seed, **{"max_iter": 100, "learning_rate": 0.1, "max_leaf_nodes": 31, **p})

    def _fit_estimator(self, f: np.ndarray, target: np.ndarray) -> Any:
        est = self._estimator()
        if self.threads is None:
            return est.fit(f, target)
        from threadpoolctl import threadpool_limits

        with threadpool_limits(limits=self.threads):
            return est.fit(f, target)

    # ------------------------------------------------------------------ API
    def fit(self, images: Any, labels: Any) -> PixelClassifier:
        """Fit on training images.

        Args:
            images: ``(N, C, *S)`` float array or tensor.
            labels: ``(N, 1, *S)`` or ``(N, *S)`` class indices (single-label), or ``(N, K, *S)``
                {0, 1} channels with ``K = num_classes`` (multi-label; also ``num_classes == 1``).

        Returns:
            ``self``.
        """
        x = self._check_images(images)
        y = to_numpy(labels)
        if y.ndim == x.ndim - 1:
            y = y[:, None]
        if y.shape[0] != x.shape[0] or y.shape[2:] != x.shape[2:]:
            raise ModelError(f"labels {tuple(y.shape)} do not match images {tuple(x.shape)}", where="pixel classifier fit")
        self.multi_label = self.num_classes == 1 or y.shape[1] > 1
        if self.multi_label and y.shape[1] != self.num_classes:
            raise ModelError(f"multi-label targets need {self.num_classes} channels, got {y.shape[1]}", where="pixel classifier fit")
        if not self.multi_label and (y.min() < 0 or y.max() >= self.num_classes):
            raise ModelError(f"labels must be class indices in [0, {self.num_classes - 1}], got [{y.min()}, {y.max()}]", where="pixel classifier fit")
        y = y.astype(np.int64)
        rng = np.random.default_rng(self.seed)
        # stratify on the class (single-label) or on "first positive label, else none" (multi-label)
        strata = (np.where(y.any(1), y.argmax(1) + 1, 0) if self.multi_label else y[:, 0]).reshape(len(y), -1)
        n_strata = self.num_classes + 1 if self.multi_label else self.num_classes
        quota = max(1, math.ceil(self.max_samples / (len(x) * n_strata)))
        self.scaler = None
        feats, targets = [], []
        for img, lab, st in zip(x, y.reshape(len(y), y.shape[1], -1), strata, strict=True):
            idx = np.concatenate([rng.permutation(np.flatnonzero(st == k))[:quota] for k in range(n_strata)])
            feats.append(self._features(img)[idx])
            targets.append(lab[:, idx].T)
        f, t = np.concatenate(feats).astype(np.float64), np.concatenate(targets)
        mean, std = f.mean(0), f.std(0)
        self.scaler = (mean, np.where(std > 1e-12, std, 1.0))
        f = ((f - self.scaler[0]) / self.scaler[1]).astype(np.float32)
        self.models = []
        for k in range(t.shape[1]):
            target = t[:, k]
            if len(np.unique(target)) < 2:
                raise ModelError(
                    f"training pixels of {'label ' + str(k) if self.multi_label else 'the labels'} contain only class {int(target[0])}",
                    where="pixel classifier fit",
                    fix="fit on images that contain background and foreground",
                )
            self.models.append(export_estimator(self._fit_estimator(f, target)))
        return self

    def predict_proba(self, images: Any) -> np.ndarray:
        """``(B, C, *S)`` → ``(B, K, *S)`` float32 probabilities (per class; per label when multi-label)."""
        if not self.fitted:
            raise ModelError("the pixel classifier is not fitted", where="pixel classifier", fix="call model.fit(images, labels) or PixelClassifier.load(path)")
        x = self._check_images(images)
        out = np.zeros((len(x), self.num_classes, *x.shape[2:]), dtype=np.float32)
        for b, img in enumerate(x):
            f = self._features(img)
            for k, m in enumerate(self.models):
                p = portable_proba(m, f)
                if self.multi_label:
                    out[b, k] = p[:, list(m["classes"]).index(1)].reshape(x.shape[2:])
                else:
                    out[b, m["classes"]] = p.T.reshape(len(m["classes"]), *x.shape[2:])
        return out

    def predict(self, images: Any) -> np.ndarray:
        """Class indices ``(B, *S)`` (single-label) or booleans ``(B, K, *S)`` (multi-label)."""
        p = self.predict_proba(images)
        return p > 0.5 if self.multi_label else p.argmax(1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        p = torch.from_numpy(self.predict_proba(x)).clamp(_EPS, 1 - _EPS)
        logits = torch.log(p / (1 - p)) if self.multi_label else torch.log(p)
        return logits.to(x.device)

    # ------------------------------------------------------------------ persistence
    def save(self, path: str | Path) -> Path:
        """Write the fitted model as ``.npz`` (plain arrays + a JSON header; no pickle)."""
        if not self.fitted or self.scaler is None:
            raise ModelError("nothing to save: the pixel classifier is not fitted", where=path)
        meta = {
            "format": FORMAT,
            "version": 1,
            "spatial_dims": self.spatial_dims,
            "in_channels": self.in_channels,
            "num_classes": self.num_classes,
            "classifier": self.classifier,
            "sigmas": list(self.sigmas),
            "max_samples": self.max_samples,
            "seed": self.seed,
            "params": self.params,
            "threads": self.threads,
            "multi_label": self.multi_label,
            "n_models": len(self.models),
        }
        arrays = {"meta": np.array(json.dumps(meta)), "scaler_mean": self.scaler[0], "scaler_scale": self.scaler[1]}
        for i, m in enumerate(self.models):
            arrays.update({f"m{i}.{k}": v for k, v in m.items()})
        path = Path(path)
        if path.suffix != ".npz":
            path = path.with_suffix(".npz")
        with atomic_path(path) as tmp, open(tmp, "wb") as fh:
            np.savez_compressed(fh, **arrays)
        return path

    @classmethod
    def load(cls, path: str | Path) -> PixelClassifier:
        """Read a model written by :meth:`save` (``allow_pickle=False``: object arrays are refused)."""
        path = Path(path)
        if not path.is_file():
            raise ModelError("pixel-classifier file not found", where=path, fix="fit the model and save it with model.save(path)")
        try:
            with np.load(path, allow_pickle=False) as z:
                data = {k: z[k] for k in z.files}
            meta = json.loads(str(data.pop("meta")))
        except (ValueError, OSError, KeyError, json.JSONDecodeError) as e:
            raise ModelError(
                f"not a readable pixel-classifier file ({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''})",
                where=path,
                fix="re-save it with PixelClassifier.save",
            ) from None
        if meta.get("format") != FORMAT:
            raise ModelError(f"not a pixel-classifier file (format {meta.get('format')!r})", where=path)
        model = cls(
            meta["spatial_dims"],
            meta["in_channels"],
            meta["num_classes"],
            classifier=meta["classifier"],
            sigmas=meta["sigmas"],
            max_samples=meta["max_samples"],
            seed=meta["seed"],
            params=meta["params"],
            threads=meta.get("threads"),
        )
        model.multi_label = bool(meta["multi_label"])
        model.scaler = (data.pop("scaler_mean"), data.pop("scaler_scale"))
        model.models = [{k.split(".", 1)[1]: v for k, v in data.items() if k.startswith(f"m{i}.")} for i in range(meta["n_models"])]
        return model


def _register(name: str, classifier: Classifier, description: str, defaults: dict[str, Any]) -> None:
    def build(
        spatial_dims: int,
        in_channels: int,
        num_classes: int,
        *,
        sigmas: Sequence[float] = (1.0, 2.0, 4.0),
        max_samples: int = 200_000,
        seed: int = 0,
        params: dict[str, Any] | None = None,
        threads: int | None = None,
    ) -> nn.Module:
        """Pixel classifier; ``params`` go to the scikit-learn estimator (defaults in the docs)."""
        return PixelClassifier(
            spatial_dims,
            in_channels,
            num_classes,
            classifier=classifier,
            sigmas=sigmas,
            max_samples=max_samples,
            seed=seed,
            params={**defaults, **(params or {})},
            threads=threads,
        )

    register_model(
        name,
        dims=(2, 3),
        description=description,
        paper=PAPER,
        family="classical",
        tiny={
            "sigmas": (1.0,),
            "max_samples": 2000,
            "threads": 1,
            "params": {"n_estimators": 5} if classifier == "random_forest" else {"max_iter": 10} if classifier == "gradient_boosting" else {},
        },
        training="fit",
    )(build)


_register("classical_rf", "random_forest", "random forest on per-pixel filter-bank features (scikit-learn; fit, not back-prop)", {})
_register("classical_logreg", "logistic_regression", "logistic regression on per-pixel filter-bank features (scikit-learn; fit, not back-prop)", {})
_register("classical_gbm", "gradient_boosting", "gradient-boosted trees on per-pixel filter-bank features (scikit-learn; fit, not back-prop)", {})
