"""Fitted scikit-learn tree ensembles as plain arrays: exported once, evaluated with numpy (no pickle, no scikit-learn needed to predict)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from medseg.core.errors import ModelError


# ----------------------------------------------------------------------------- portable models
def _tree_arrays(trees: Sequence[Any], values: Sequence[np.ndarray]) -> dict[str, np.ndarray]:
    """Concatenate trees (``left, right, feature, threshold`` per node) with leaves pointing to themselves."""
    left, right, feat, thr, val, roots, depth = [], [], [], [], [], [], 0
    offset = 0
    for (lft, rgt, f, t, leaf, d), v in zip(trees, values, strict=True):
        n = len(lft)
        idx = np.arange(n)
        left.append(np.where(leaf, idx, lft) + offset)
        right.append(np.where(leaf, idx, rgt) + offset)
        feat.append(np.where(leaf, 0, f))
        thr.append(np.where(leaf, np.inf, t))
        val.append(v)
        roots.append(offset)
        depth = max(depth, int(d))
        offset += n
    return {
        "left": np.concatenate(left).astype(np.int32),
        "right": np.concatenate(right).astype(np.int32),
        "feature": np.concatenate(feat).astype(np.int32),
        "threshold": np.concatenate(thr).astype(np.float64),
        "value": np.concatenate(val).astype(np.float64),
        "roots": np.asarray(roots, dtype=np.int64),
        "depth": np.asarray([depth], dtype=np.int64),
    }


def export_estimator(est: Any) -> dict[str, np.ndarray]:
    """A fitted scikit-learn classifier as plain arrays (``kind`` + what :func:`portable_proba` needs)."""
    from sklearn.ensemble import HistGradientBoostingClassifier, RandomForestClassifier
    from sklearn.linear_model import LogisticRegression

    classes = np.asarray(est.classes_, dtype=np.int64)
    if isinstance(est, LogisticRegression):
        return {"kind": np.array("linear"), "classes": classes, "coef": est.coef_.astype(np.float64), "intercept": est.intercept_.astype(np.float64)}
    if isinstance(est, RandomForestClassifier):
        trees, values = [], []
        for e in est.estimators_:
            t = e.tree_
            trees.append((t.children_left, t.children_right, t.feature, t.threshold, t.children_left < 0, t.max_depth))
            v = t.value[:, 0, :].astype(np.float64)
            values.append(v / np.maximum(v.sum(1, keepdims=True), 1e-300))
        return {"kind": np.array("forest"), "classes": classes, **_tree_arrays(trees, values)}
    if isinstance(est, HistGradientBoostingClassifier):
        trees, values, outputs = [], [], []
        for per_iter in est._predictors:
            for k, pred in enumerate(per_iter):
                n = pred.nodes
                trees.append((n["left"], n["right"], n["feature_idx"], n["num_threshold"], n["is_leaf"].astype(bool), n["depth"].max()))
                values.append(n["value"].astype(np.float64)[:, None])
                outputs.append(k)
        arrays = _tree_arrays(trees, values)
        return {
            "kind": np.array("boosting"),
            "classes": classes,
            "baseline": np.asarray(est._baseline_prediction, dtype=np.float64).reshape(-1),
            "tree_output": np.asarray(outputs, dtype=np.int64),
            **arrays,
        }
    raise ModelError(f"cannot export a {type(est).__name__}", fix="use random_forest, logistic_regression or gradient_boosting")


def _leaf(m: dict[str, np.ndarray], xt: np.ndarray, root: int) -> np.ndarray:
    """The leaf one tree sends every pixel to: one array step per tree level, over the pixels not
    yet at a leaf (leaves point to themselves). ``xt`` is ``(F, N)`` float32."""
    left, right, feature, threshold = m["left"], m["right"], m["feature"], m["threshold"]
    node = np.full(xt.shape[1], root, dtype=left.dtype)
    active = np.arange(xt.shape[1]) if left[root] != root else np.zeros(0, dtype=np.int64)
    while active.size:
        n = node[active]
        nxt = np.where(xt[feature[n], active] <= threshold[n], left[n], right[n])
        node[active] = nxt
        active = active[left[nxt] != nxt]
    return node


def portable_proba(m: dict[str, np.ndarray], x: np.ndarray) -> np.ndarray:
    """Class probabilities ``(N, len(classes))`` of an exported model for float32 features ``x`` ``(N, F)``.

    Trees are walked one at a time over all pixels (cache-friendly, memory ``O(N·K)``); this
    reproduces scikit-learn's ``predict_proba`` (same float32 features, same ``x <= threshold``).
    """
    kind = str(m["kind"])
    if kind == "linear":
        z = x.astype(np.float64) @ m["coef"].T + m["intercept"]
        if z.shape[1] == 1:
            p = 1 / (1 + np.exp(-z[:, 0]))
            return np.stack([1 - p, p], axis=1)
        z -= z.max(1, keepdims=True)
        e = np.exp(z)
        return e / e.sum(1, keepdims=True)
    xt = np.ascontiguousarray(x.T)
    roots = m["roots"]
    if kind == "forest":
        acc = np.zeros((len(x), m["value"].shape[1]))
        for r in roots:
            acc += m["value"][_leaf(m, xt, int(r))]
        return acc / len(roots)
    raw = np.repeat(m["baseline"][None, :], len(x), axis=0)
    for r, k in zip(roots, m["tree_output"], strict=True):
        raw[:, k] += m["value"][_leaf(m, xt, int(r)), 0]
    if raw.shape[1] == 1:
        p = 1 / (1 + np.exp(-raw[:, 0]))
        return np.stack([1 - p, p], axis=1)
    raw -= raw.max(1, keepdims=True)
    e = np.exp(raw)
    return e / e.sum(1, keepdims=True)


# ----------------------------------------------------------------------------- the model
def to_numpy(a: Any) -> np.ndarray:
    if isinstance(a, torch.Tensor):
        return a.detach().cpu().numpy()
    return np.asarray(a)
