"""Paired comparison of two methods over the same cases: bootstrap CI of the mean difference and the Wilcoxon signed-rank test.

Written here (numpy + ``scipy.stats.wilcoxon``) because the CI of a *paired mean difference* over cases is
three lines and no segmentation library reports it."""

from __future__ import annotations

import math
from typing import Any

import numpy as np

BOOTSTRAP_SAMPLES = 10_000


#: A difference is called only when the bootstrap CI excludes 0 and the Wilcoxon p is below this.
ALPHA = 0.05


def bootstrap_ci(diff: np.ndarray, n_boot: int = BOOTSTRAP_SAMPLES, level: float = 0.95, seed: int = 0) -> tuple[float, float]:
    """Percentile bootstrap confidence interval of the mean of paired differences.

    Args:
        diff: one difference per case (or patient).
        n_boot: resamples.
        level: coverage of the interval.
        seed: seed of the resampling (results are reproducible).

    Returns:
        ``(low, high)``; ``(nan, nan)`` for an empty input.
    """
    diff = np.asarray(diff, dtype=np.float64)
    if diff.size == 0:
        return math.nan, math.nan
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, diff.size, size=(n_boot, diff.size))
    means = diff[idx].mean(axis=1)
    a = (1 - level) / 2
    lo, hi = np.quantile(means, [a, 1 - a])
    return float(lo), float(hi)


def wilcoxon_p(diff: np.ndarray) -> float:
    """Two-sided Wilcoxon signed-rank p-value of paired differences; 1.0 when every difference is 0."""
    from scipy.stats import wilcoxon

    diff = np.asarray(diff, dtype=np.float64)
    if diff.size == 0:
        return math.nan
    if np.all(diff == 0):
        return 1.0
    return float(wilcoxon(diff).pvalue)


def paired_stats(a: dict[str, float], b: dict[str, float], seed: int = 0) -> dict[str, Any]:
    """Compare two runs' per-case values on their common keys: ``b - a``.

    Returns:
        ``n``, ``mean_a``, ``mean_b``, ``mean_diff``, ``ci_low``, ``ci_high``, ``p_wilcoxon``,
        ``min_p`` (the smallest two-sided p the signed-rank test can give with ``n`` pairs) and
        ``verdict`` (``"b better"`` / ``"a better"`` when the CI excludes 0 and p < ``ALPHA``,
        otherwise ``"no clear difference"``).
    """
    keys = sorted(set(a) & set(b))
    da = np.array([a[k] for k in keys])
    db = np.array([b[k] for k in keys])
    diff = db - da
    lo, hi = bootstrap_ci(diff, seed=seed)
    p = wilcoxon_p(diff)
    n = len(keys)
    significant = n > 0 and p < ALPHA
    if significant and lo > 0:
        verdict = "b better"
    elif significant and hi < 0:
        verdict = "a better"
    else:
        verdict = "no clear difference"
    return {
        "n": n,
        "mean_a": float(da.mean()) if n else math.nan,
        "mean_b": float(db.mean()) if n else math.nan,
        "mean_diff": float(diff.mean()) if n else math.nan,
        "ci_low": lo,
        "ci_high": hi,
        "p_wilcoxon": p,
        "min_p": 2.0 / 2**n if n else math.nan,
        "verdict": verdict,
    }
