"""Statistics the paper does not report: bootstrap intervals and paired tests over images.

Every table cell of the kit is a mean of per-image values (Average Drop's per-image term
max(0, Y - O) / Y * 100, % Increase's indicator 1[Y < O] * 100, a probability, an AUC...), so one
bootstrap routine serves them all.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy import stats as sps

__all__ = ["Interval", "bootstrap_ci", "holm", "paired_wilcoxon"]


@dataclass(frozen=True)
class Interval:
    """A mean with its percentile-bootstrap interval."""

    mean: float
    low: float
    high: float
    n: int

    def format(self, digits: int = 2) -> str:
        return f"{self.mean:.{digits}f} [{self.low:.{digits}f}, {self.high:.{digits}f}]"


def bootstrap_ci(values: Sequence[float] | np.ndarray, n_boot: int = 2000, level: float = 0.95,
                 seed: int = 0) -> Interval:
    """Mean of ``values`` and its percentile bootstrap interval (resampling images).

    Deterministic for a given ``seed``. NaNs are an error (a metric must be defined per image).
    """
    x = np.asarray(values, dtype=np.float64).ravel()
    if x.size == 0:
        raise ValueError("bootstrap_ci needs at least one value")
    if np.isnan(x).any():
        raise ValueError("bootstrap_ci got NaN values; every per-image value must be defined")
    rng = np.random.default_rng(seed)
    means = np.empty(n_boot)
    for start in range(0, n_boot, 256):  # bounded memory for large n
        stop = min(n_boot, start + 256)
        idx = rng.integers(0, x.size, size=(stop - start, x.size))
        means[start:stop] = x[idx].mean(axis=1)
    alpha = (1.0 - level) / 2.0
    low, high = np.quantile(means, [alpha, 1.0 - alpha])
    return Interval(float(x.mean()), float(low), float(high), int(x.size))


def paired_wilcoxon(a: Sequence[float], b: Sequence[float]) -> tuple[float, float]:
    """Two-sided Wilcoxon signed-rank test of the paired per-image differences a - b.

    Returns (statistic, p-value); zero differences are dropped (Wilcoxon's convention); when every
    difference is zero the p-value is 1.
    """
    x, y = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if x.shape != y.shape:
        raise ValueError(f"paired test needs equal lengths, got {x.shape} and {y.shape}")
    d = x - y
    if np.all(d == 0):
        return 0.0, 1.0
    res = sps.wilcoxon(x, y, zero_method="wilcox", alternative="two-sided")
    return float(res.statistic), float(res.pvalue)


def holm(p_values: Sequence[float]) -> np.ndarray:
    """Holm-Bonferroni adjusted p-values (family-wise error over the given tests)."""
    p = np.asarray(p_values, dtype=np.float64)
    order = np.argsort(p)
    m = p.size
    adjusted = np.empty(m)
    running = 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (m - rank) * p[i]))
        adjusted[i] = running
    return adjusted
