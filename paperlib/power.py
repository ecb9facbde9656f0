"""Statistical power of the paired comparisons: what difference a run can detect, and how many
images would detect the paper's own gaps.

Method (closed form, stated in every table): the per-image paired differences d = variant -
baseline of a metric (Average Drop's or % Increase's per-image terms) are summarised by their
standard deviation s. For a two-sided paired t-test at level ``alpha`` with n images the power
against a true mean difference delta is computed exactly from the noncentral t distribution
(df = n - 1, noncentrality delta * sqrt(n) / s). The **minimum detectable difference** (MDD) at
the run's n is the delta with power ``power``; the **images needed** for a difference delta is the
smallest n with that power. The kit's tests are Wilcoxon signed-rank tests, whose asymptotic
relative efficiency against the t-test is 3/pi = 0.955 for normal differences and never below
0.864 (Hodges & Lehmann 1956): ``n_needed_wilcoxon`` = ceil(n_needed / 0.864) is the
conservative bound given beside it.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import pandas as pd
from scipy import optimize
from scipy import stats as sps

from . import schema
from .paper_reference import PAPER_TABLE3

__all__ = ["WILCOXON_MIN_ARE", "detectable_difference", "images_needed", "paired_t_power",
           "power_table"]

#: The Wilcoxon signed-rank test's lowest asymptotic relative efficiency against the t-test.
WILCOXON_MIN_ARE = 0.864


def paired_t_power(delta: float, sd: float, n: int | float, alpha: float = 0.05) -> float:
    """Power of the two-sided paired t-test with ``n`` pairs against a mean difference ``delta``
    when the differences have standard deviation ``sd`` (noncentral t, exact)."""
    if n < 2:
        return float("nan")
    if sd <= 0:
        return 1.0 if delta != 0 else alpha
    df = n - 1
    crit = sps.t.ppf(1 - alpha / 2, df)
    ncp = abs(delta) * math.sqrt(n) / sd
    if ncp - crit > 40:  # power is 1 to double precision
        return 1.0
    value = float(sps.nct.sf(crit, df, ncp) + sps.nct.cdf(-crit, df, ncp))
    if math.isnan(value):  # scipy's nct fails far in the tail: the normal limit is exact there
        value = float(sps.norm.sf(crit - ncp) + sps.norm.cdf(-crit - ncp))
    return value


def detectable_difference(sd: float, n: int, alpha: float = 0.05, power: float = 0.8) -> float:
    """The smallest |mean difference| the paired t-test detects with ``power`` at ``n`` pairs."""
    if n < 2:
        return float("nan")
    if sd <= 0:
        return 0.0
    hi = sd * 20 / math.sqrt(n - 1) + sd
    return float(optimize.brentq(lambda d: paired_t_power(d, sd, n, alpha) - power, 0.0, hi,
                                 xtol=1e-12 * sd))


def images_needed(delta: float, sd: float, alpha: float = 0.05, power: float = 0.8,
                  limit: int = 10_000_000) -> int | None:
    """The smallest n whose paired t-test detects ``delta`` with ``power`` (None beyond
    ``limit`` or for delta = 0)."""
    if delta == 0:
        return None
    if sd <= 0:
        return 2
    hi = 2
    while paired_t_power(delta, sd, hi, alpha) < power:  # power increases with n
        hi *= 2
        if hi > limit:
            return None
    lo = 2
    while lo < hi:
        mid = (lo + hi) // 2
        if paired_t_power(delta, sd, mid, alpha) >= power:
            hi = mid
        else:
            lo = mid + 1
    return lo


def _paper_gap(metric: str, variant_column: str | None, baseline_column: str | None
               ) -> float | None:
    key = {schema.drop(schema.SOFT): "avg_drop", schema.increase(schema.SOFT): "increase"}[metric]
    if variant_column not in PAPER_TABLE3 or baseline_column not in PAPER_TABLE3:
        return None
    return PAPER_TABLE3[variant_column][key] - PAPER_TABLE3[baseline_column][key]


def power_table(frame: pd.DataFrame, baselines: Sequence[str], variants: Sequence[str],
                paper_columns: dict[str, str | None], alpha: float = 0.05, power: float = 0.8
                ) -> pd.DataFrame:
    """For each variant x baseline x Table-3 metric: n, the mean and sd of the paired per-image
    differences, the MDD at n, the paper's gap (its "ours" minus its baseline) and the images
    needed to detect that gap (t-test, and the conservative Wilcoxon bound).

    ``paper_columns`` maps a method to the paper's column it stands beside (``None``: none).
    """
    rows = []
    metrics = (schema.drop(schema.SOFT), schema.increase(schema.SOFT))
    per = {m: frame[frame["method"] == m].sort_values("file") for m in (*baselines, *variants)}
    for v in variants:
        for b in baselines:
            if not len(per[v]) or not len(per[b]):
                continue
            if list(per[v]["file"]) != list(per[b]["file"]):
                raise ValueError(f"{v} and {b} were evaluated on different images")
            for metric in metrics:
                d = per[v][metric].to_numpy(dtype=float) - per[b][metric].to_numpy(dtype=float)
                n = d.size
                sd = float(np.std(d, ddof=1)) if n > 1 else float("nan")
                gap = _paper_gap(metric, paper_columns.get(v), paper_columns.get(b))
                need = images_needed(gap, sd, alpha, power) if gap is not None else None
                rows.append({
                    "variant": v, "baseline": b, "metric": metric, "n_images": n,
                    "mean_diff": float(d.mean()), "sd_diff": sd,
                    "mdd": detectable_difference(sd, n, alpha, power),
                    "paper_gap": gap,
                    "n_needed": need,
                    "n_needed_wilcoxon": (math.ceil(need / WILCOXON_MIN_ARE)
                                          if need is not None else None),
                    "detectable_at_n": (need is not None and n >= need),
                })
    out = pd.DataFrame(rows)
    out.attrs["method"] = (f"paired t-test power (noncentral t), alpha {alpha} two-sided, power "
                           f"{power}; Wilcoxon bound: n / {WILCOXON_MIN_ARE}")
    return out
