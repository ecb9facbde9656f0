"""Do the metrics agree on which method is best? Rank agreement between metrics over methods.

Tomsett et al. (AAAI 2020, "Sanity checks for saliency metrics") ask whether saliency metrics rank
methods consistently, and whether one metric ranks them consistently with itself. Here, from the
per-image rows (one row per (file, method), :mod:`paperlib.schema`'s columns):

* each metric column scores each method by its mean over images, signed by the metric's direction
  (-1: lower is better, e.g. ``drop_soft``, ``deletion_auc``; +1: higher is better, e.g.
  ``increase_soft``, ``insertion_auc``, ``gain_soft``) so that higher is always better;
* :func:`metric_agreement`: Kendall's tau-b between every two metrics' method scores, with a
  percentile bootstrap interval over images (the same resample of images for every method and
  metric, so the methods stay paired);
* :func:`split_half_reliability`: per metric, tau-b between the method rankings of two random
  halves of the images (a metric that cannot agree with itself cannot be expected to agree with
  another);
* :func:`agreement_facts`, :func:`agreement_sentence`, :func:`agreement_heatmap`: plain data, one
  sentence, one figure.

Only the files present for every method count (a method evaluated on other images cannot be
paired); method means are rounded to :data:`DECIMALS` decimals before ranking, so methods equal up
to floating-point noise (Grad-CAM and HiResCAM at some layers) tie rather than rank at random.
The bootstraps are vectorised: resample counts times the (image x method) matrix gives every
resample's method means at once, and tau-b is computed from the pairwise sign matrices.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from itertools import combinations
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
from scipy import stats as sps

if TYPE_CHECKING:
    from matplotlib.figure import Figure

__all__ = ["DECIMALS", "agreement_facts", "agreement_heatmap", "agreement_sentence",
           "metric_agreement", "split_half_reliability"]

#: Method means are rounded to this many decimals before ranking (ties up to float noise).
DECIMALS = 9


def _values(frame: pd.DataFrame, methods: Sequence[str], metrics: Mapping[str, int]
            ) -> tuple[np.ndarray, list[str]]:
    """(signed values ``[metric, method, image]``, the common files): the checked input."""
    metrics = dict(metrics)
    if len(metrics) < 1:
        raise ValueError("no metrics given; expected a mapping of metric column -> direction")
    for m in ("file", "method"):
        if m not in frame.columns:
            raise ValueError(f"rows have no {m!r} column; expected the per-image rows frame")
    for col, direction in metrics.items():
        if col not in frame.columns:
            raise ValueError(f"unknown metric column {col!r}; expected one of the rows' columns "
                             f"{[c for c in frame.columns if c not in ('file', 'method')][:12]}")
        if direction not in (-1, 1):
            raise ValueError(f"direction {direction!r} of {col!r}; expected -1 (lower is better) "
                             "or +1 (higher is better)")
    methods = list(methods)
    if len(methods) < 2 or len(set(methods)) != len(methods):
        raise ValueError(f"methods {methods}; expected at least two distinct method names")
    absent = [m for m in methods if m not in set(frame["method"])]
    if absent:
        raise ValueError(f"method(s) {absent} have no rows; expected methods of the frame "
                         f"{sorted(set(frame['method']))}")
    rows = frame[frame["method"].isin(methods)]
    dup = rows.duplicated(["file", "method"])
    if dup.any():
        raise ValueError(f"{int(dup.sum())} duplicate (file, method) rows; expected one row per "
                         "(file, method): pass one protocol's rows")
    per = rows.groupby("method")["file"].agg(set)
    files = sorted(set.intersection(*(per[m] for m in methods)))
    if len(files) < 2:
        raise ValueError(f"{len(files)} file(s) shared by every method; expected at least two")
    out = np.empty((len(metrics), len(methods), len(files)))
    indexed = rows.set_index(["method", "file"])
    for i, (col, direction) in enumerate(metrics.items()):
        for j, m in enumerate(methods):
            v = indexed.loc[m, col].reindex(files).to_numpy(dtype=np.float64)
            if np.isnan(v).any():
                raise ValueError(f"metric {col!r} of {m!r} has NaN values; expected every "
                                 "per-image value defined")
            out[i, j] = direction * v
    return out, files


def _signs(scores: np.ndarray) -> np.ndarray:
    """Pairwise signs sign(s_i - s_j), i < j, over the last axis (methods) of rounded scores."""
    i, j = np.triu_indices(scores.shape[-1], k=1)
    s = np.round(scores, DECIMALS)
    return np.sign(s[..., i] - s[..., j])


def _tau_b(sa: np.ndarray, sb: np.ndarray) -> np.ndarray:
    """Kendall's tau-b from two pairwise sign arrays (last axis: method pairs); NaN when either
    ranking is all ties."""
    num = (sa * sb).sum(axis=-1)
    den = np.sqrt((sa * sa).sum(axis=-1) * (sb * sb).sum(axis=-1))
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(den > 0, num / np.where(den > 0, den, 1.0), np.nan)


def _kendall(a: np.ndarray, b: np.ndarray) -> float:
    a, b = np.round(a, DECIMALS), np.round(b, DECIMALS)
    if np.ptp(a) == 0 or np.ptp(b) == 0:
        return float("nan")
    return float(sps.kendalltau(a, b, variant="b").statistic)


def _resampled_means(values: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """Means ``[resample, metric, method]`` from ``weights`` ``[resample, image]`` (each row sums
    to 1): one matrix product."""
    k, m, n = values.shape
    return (weights @ values.reshape(k * m, n).T).reshape(len(weights), k, m)


def metric_agreement(frame: pd.DataFrame, methods: Sequence[str], metrics: Mapping[str, int],
                     n_boot: int = 1000, seed: int = 0, level: float = 0.95) -> pd.DataFrame:
    """Kendall's tau-b between every two metrics' method scores, with a bootstrap interval.

    ``metrics`` maps a per-image column to its direction (-1 lower is better, +1 higher is
    better). One row per unordered pair of metrics (in ``metrics``' order): ``metric_a``,
    ``metric_b``, ``kendall_tau`` (:func:`scipy.stats.kendalltau`, tau-b, of the per-method means;
    NaN when a metric ties every method), ``tau_lo`` / ``tau_hi`` (percentile bootstrap at
    ``level``: the image files resampled with replacement, the same resample for every method and
    metric, ``numpy.random.default_rng(seed)``), ``n_methods``, ``n_images`` (the files present for
    every method: only those count).
    """
    if len(metrics) < 2:
        raise ValueError(f"metrics {list(metrics)}; expected at least two metric columns")
    if n_boot < 1:
        raise ValueError(f"n_boot {n_boot}; expected a positive number of resamples")
    values, files = _values(frame, methods, metrics)
    names = list(metrics)
    n = len(files)
    scores = values.mean(axis=2)
    rng = np.random.default_rng(seed)
    signs = np.empty((n_boot, len(names), len(methods) * (len(methods) - 1) // 2))
    for start in range(0, n_boot, 256):  # bounded memory for many images
        stop = min(n_boot, start + 256)
        idx = rng.integers(0, n, size=(stop - start, n))
        counts = np.bincount((idx + n * np.arange(stop - start)[:, None]).ravel(),
                             minlength=(stop - start) * n).reshape(stop - start, n)
        signs[start:stop] = _signs(_resampled_means(values, counts / n))
    alpha = (1.0 - level) / 2.0
    rows = []
    for a, b in combinations(range(len(names)), 2):
        taus = _tau_b(signs[:, a], signs[:, b])
        finite = taus[np.isfinite(taus)]
        lo, hi = (np.quantile(finite, [alpha, 1.0 - alpha]) if finite.size
                  else (np.nan, np.nan))
        rows.append({"metric_a": names[a], "metric_b": names[b],
                     "kendall_tau": _kendall(scores[a], scores[b]),
                     "tau_lo": float(lo), "tau_hi": float(hi),
                     "n_methods": len(methods), "n_images": n})
    return pd.DataFrame(rows, columns=["metric_a", "metric_b", "kendall_tau", "tau_lo", "tau_hi",
                                       "n_methods", "n_images"])


def split_half_reliability(frame: pd.DataFrame, methods: Sequence[str],
                           metrics: Mapping[str, int], n_splits: int = 100, seed: int = 0
                           ) -> pd.DataFrame:
    """Per metric, Kendall's tau-b between the method rankings of two random halves of the images.

    The same ``n_splits`` random splits (``numpy.random.default_rng(seed)``) serve every metric;
    with an odd number of images the second half has one more. One row per metric: ``metric``,
    ``direction``, ``mean_tau`` (over the splits where both halves rank the methods with some
    order; NaN when none does), ``tau_lo`` / ``tau_hi`` (2.5 and 97.5 percentiles over splits),
    ``n_splits``, ``n_methods``, ``n_images`` (the files present for every method).
    """
    if n_splits < 1:
        raise ValueError(f"n_splits {n_splits}; expected a positive number of splits")
    values, files = _values(frame, methods, metrics)
    n = len(files)
    half = n // 2
    rng = np.random.default_rng(seed)
    order = rng.random((n_splits, n)).argsort(axis=1)
    first = np.zeros((n_splits, n))
    np.put_along_axis(first, order[:, :half], 1.0, axis=1)
    second = 1.0 - first
    sa = _signs(_resampled_means(values, first / half))
    sb = _signs(_resampled_means(values, second / (n - half)))
    taus = _tau_b(sa, sb)  # [split, metric]
    rows = []
    for i, (col, direction) in enumerate(metrics.items()):
        t = taus[:, i][np.isfinite(taus[:, i])]
        lo, hi = np.percentile(t, [2.5, 97.5]) if t.size else (np.nan, np.nan)
        rows.append({"metric": col, "direction": direction,
                     "mean_tau": float(t.mean()) if t.size else float("nan"),
                     "tau_lo": float(lo), "tau_hi": float(hi), "n_splits": n_splits,
                     "n_methods": len(methods), "n_images": n})
    return pd.DataFrame(rows)


def _pair(row: pd.Series) -> dict[str, Any]:
    return {"metric_a": row["metric_a"], "metric_b": row["metric_b"],
            "kendall_tau": float(row["kendall_tau"]), "tau_lo": float(row["tau_lo"]),
            "tau_hi": float(row["tau_hi"])}


def agreement_facts(agreement: pd.DataFrame, reliability: pd.DataFrame | None = None
                    ) -> dict[str, Any]:
    """Plain data from :func:`metric_agreement` (and :func:`split_half_reliability`): ``n_pairs``,
    ``n_methods``, ``n_images``, ``most_agreeing`` / ``least_agreeing`` (the pairs with the
    highest / lowest tau, ``None`` when no tau is defined), ``negative_pairs`` (every pair with
    tau < 0, lowest first), ``undefined_pairs`` (NaN tau), ``reliability`` (metric -> mean
    split-half tau; empty without ``reliability``)."""
    needed = ["metric_a", "metric_b", "kendall_tau", "tau_lo", "tau_hi"]
    missing = [c for c in needed if c not in agreement.columns]
    if missing:
        raise ValueError(f"agreement table lacks column(s) {missing}; expected "
                         "metric_agreement's output")
    defined = agreement[agreement["kendall_tau"].notna()].sort_values(
        "kendall_tau", ascending=False, kind="stable")
    facts: dict[str, Any] = {
        "n_pairs": len(agreement),
        "n_methods": int(agreement["n_methods"].iloc[0]) if len(agreement) else 0,
        "n_images": int(agreement["n_images"].iloc[0]) if len(agreement) else 0,
        "most_agreeing": _pair(defined.iloc[0]) if len(defined) else None,
        "least_agreeing": _pair(defined.iloc[-1]) if len(defined) else None,
        "negative_pairs": [_pair(r) for _, r in defined[defined["kendall_tau"] < 0]
                           .sort_values("kendall_tau", kind="stable").iterrows()],
        "undefined_pairs": [(r["metric_a"], r["metric_b"]) for _, r in
                            agreement[agreement["kendall_tau"].isna()].iterrows()],
        "reliability": {},
    }
    if reliability is not None and len(reliability):
        if not {"metric", "mean_tau"} <= set(reliability.columns):
            raise ValueError("reliability table lacks 'metric' / 'mean_tau'; expected "
                             "split_half_reliability's output")
        facts["reliability"] = {str(m): float(t) for m, t in
                                zip(reliability["metric"], reliability["mean_tau"])}
    return facts


def agreement_sentence(facts: Mapping[str, Any], labels: Mapping[str, str] | None = None) -> str:
    """One sentence from :func:`agreement_facts`; ``labels`` names the metric columns."""
    def name(column: str) -> str:
        return (labels or {}).get(column, column)

    most, least = facts.get("most_agreeing"), facts.get("least_agreeing")
    if most is None or least is None:
        return (f"No two metrics give a defined rank agreement over {facts.get('n_methods', 0)} "
                "methods (every metric ties the methods or fewer than two metrics were given).")

    def pair(p: Mapping[str, Any]) -> str:
        return (f"{name(p['metric_a'])} and {name(p['metric_b'])} (Kendall tau "
                f"{p['kendall_tau']:.2f} [{p['tau_lo']:.2f}, {p['tau_hi']:.2f}])")

    text = (f"Over {facts['n_methods']} methods and {facts['n_images']} images, the metrics agree "
            f"most between {pair(most)} and least between {pair(least)}")
    negative = len(facts.get("negative_pairs", []))
    if negative:
        text += (f"; {negative} of {facts['n_pairs']} pairs rank the methods in opposite orders "
                 "on balance (tau < 0)")
    else:
        text += f"; none of the {facts['n_pairs']} pairs has a negative tau"
    rel = {m: t for m, t in facts.get("reliability", {}).items() if np.isfinite(t)}
    if rel:
        lo, hi = min(rel, key=rel.__getitem__), max(rel, key=rel.__getitem__)
        text += (f"; split-half reliability ranges from {rel[lo]:.2f} ({name(lo)}) to "
                 f"{rel[hi]:.2f} ({name(hi)})")
    return text + "."


def agreement_heatmap(agreement: pd.DataFrame, labels: Mapping[str, str] | None = None
                      ) -> Figure:
    """The symmetric matrix of Kendall's tau between metrics (1 on the diagonal), the values
    written in the cells; from :func:`metric_agreement`."""
    from matplotlib.figure import Figure

    names: list[str] = []
    for c in list(agreement["metric_a"]) + list(agreement["metric_b"]):
        if c not in names:
            names.append(c)
    k = len(names)
    tau = np.full((k, k), np.nan)
    np.fill_diagonal(tau, 1.0)
    for a, b, t in zip(agreement["metric_a"], agreement["metric_b"], agreement["kendall_tau"]):
        i, j = names.index(a), names.index(b)
        tau[i, j] = tau[j, i] = t
    shown = [(labels or {}).get(c, c) for c in names]
    size = max(3.5, 0.7 * k + 2.0)
    fig = Figure(figsize=(size + 1.0, size))
    ax = fig.add_subplot()
    image = ax.imshow(np.ma.masked_invalid(tau), cmap="RdBu_r", vmin=-1.0, vmax=1.0)
    ax.set_xticks(range(k), shown, rotation=45, ha="right")
    ax.set_yticks(range(k), shown)
    for i in range(k):
        for j in range(k):
            text = "n/a" if np.isnan(tau[i, j]) else f"{tau[i, j]:.2f}"
            ax.text(j, i, text, ha="center", va="center", fontsize=8,
                    color="white" if np.isfinite(tau[i, j]) and abs(tau[i, j]) > 0.6 else "black")
    n_m = int(agreement["n_methods"].iloc[0]) if len(agreement) else 0
    n_i = int(agreement["n_images"].iloc[0]) if len(agreement) else 0
    ax.set_title(f"Kendall tau between metrics' method rankings\n({n_m} methods, {n_i} images)")
    fig.colorbar(image, ax=ax, label="Kendall tau-b")
    fig.tight_layout()
    return fig
