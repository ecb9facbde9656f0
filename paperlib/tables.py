"""Tables 3 and 4 (and the paired tests) from the per-image rows, written as CSV, Markdown, LaTeX.

The CSV holds every number with its interval bounds (``<col>``, ``<col>_lo``, ``<col>_hi``);
Markdown and LaTeX show ``mean [lo, hi]``. Every cell is a mean over images with a 95% percentile
bootstrap interval (:func:`paperlib.stats.bootstrap_ci`, seeded).

The cells, their scale and the claim directions come from the read-out records
(:data:`paperlib.metrics.READOUTS`): :func:`readout_table` shows any read-out, Tables 3 and 4 and
:func:`curves_table` are the kit's three read-outs' tables, :data:`CLAIMS` is derived from the
columns each read-out marks as a claim.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from . import schema
from .atomic import atomic_write_csv, atomic_write_text
from .cam import METHODS
from .formatting import formatted
from .metrics import READOUTS as READOUT_RECORDS
from .metrics import Column, MetricConfig
from .paper_reference import PAPER_TABLE3, PAPER_TABLE4
from .schema import READOUTS
from .stats import bootstrap_ci, holm, paired_wilcoxon
from .verdicts import ALPHA

__all__ = ["CLAIMS", "claim_check", "control_check", "curves_table", "paper_column",
           "readout_table", "scale_verdict", "table3", "table4", "table4_scale", "trend_check",
           "verdict_metrics", "wilcoxon_table", "write_table"]


def paper_column(method: str) -> str | None:
    """The paper's column a method stands beside (its registry record), or ``None``."""
    spec = METHODS.get(method)
    return spec.paper if spec is not None else None


def _cells(values: np.ndarray, name: str, seed: int, scale: float = 1.0) -> dict[str, float]:
    ci = bootstrap_ci(np.asarray(values, dtype=float) * scale, seed=seed)
    return {name: ci.mean, f"{name}_lo": ci.low, f"{name}_hi": ci.high}


def _by_method(frame: pd.DataFrame, methods: Sequence[str]):
    for m in methods:
        sub = frame[frame["method"] == m].sort_values("file")
        if len(sub):
            yield m, sub


def _readout_cells(sub: pd.DataFrame, cells: Sequence[Column], seed: int) -> dict[str, float]:
    row: dict[str, float] = {}
    for c in cells:
        row.update(_cells(sub[c.name], c.cell_name, seed, c.scale))
    return row


def readout_table(frame: pd.DataFrame, methods: Sequence[str], readout: str,
                  config: MetricConfig | None = None, seed: int = 0) -> pd.DataFrame:
    """Any registered read-out's table: per method, ``n_images`` and the mean of each of its
    columns with a table cell (:meth:`paperlib.metrics.Readout.cells`, in its scale), with
    intervals. ``config`` (default :class:`MetricConfig`'s) gives the read-out's options, e.g.
    the fractions; :func:`formatted` / :func:`write_table` show it."""
    if readout not in READOUT_RECORDS:
        raise ValueError(f"unknown read-out {readout!r}; expected one of {list(READOUT_RECORDS)}")
    cells = READOUT_RECORDS[readout].cells(config or MetricConfig())
    rows = []
    for m, sub in _by_method(frame, methods):
        rows.append({"method": m, "n_images": len(sub), **_readout_cells(sub, cells, seed)})
    return pd.DataFrame(rows)


def table3(frame: pd.DataFrame, methods: Sequence[str], seed: int = 0) -> pd.DataFrame:
    """Average Drop (Eq. 8), % Increase (Eq. 9) and Average Gain of the soft map, per method,
    with intervals, and the paper's cells beside (it publishes no Average Gain: ``n/a``)."""
    cells = [c for c in READOUT_RECORDS["soft"].cells(MetricConfig()) if c.table == "Table 3"]
    rows = []
    for m, sub in _by_method(frame, methods):
        row = {"method": m, "n_images": len(sub), "flat_maps": int(sub["flat_map"].sum())}
        row.update(_readout_cells(sub, cells, seed))
        paper = PAPER_TABLE3.get(paper_column(m) or "", {})
        row["paper_avg_drop"] = paper.get("avg_drop")
        row["paper_increase"] = paper.get("increase")
        row["paper_avg_gain"] = paper.get("avg_gain")     # the paper has none: "n/a"
        rows.append(row)
    return pd.DataFrame(rows)


def table4(frame: pd.DataFrame, methods: Sequence[str], fractions: Sequence[int],
           seed: int = 0) -> pd.DataFrame:
    """Percentage-in: for each k, mean O (%), Average Drop, % Increase, top-1 agreement."""
    cells = READOUT_RECORDS["top"].cells(MetricConfig(fractions=tuple(fractions)))
    rows = []
    for m, sub in _by_method(frame, methods):
        row: dict = {"method": m, "n_images": len(sub)}
        row.update(_readout_cells(sub, cells, seed))
        for k in fractions:
            row[f"paper_top{k}"] = PAPER_TABLE4.get(paper_column(m) or "", {}).get(k)
        rows.append(row)
    return pd.DataFrame(rows)


def curves_table(frame: pd.DataFrame, methods: Sequence[str], seed: int = 0) -> pd.DataFrame:
    """Deletion AUC (lower is better) and insertion AUC (higher is better), with intervals."""
    return readout_table(frame, methods, "curves", MetricConfig(curve_steps=1), seed)


def _check_paired(per: Mapping[str, pd.DataFrame], a: str, b: str) -> None:
    """A paired test of ``a`` against ``b`` needs both evaluated on the same images (rows
    sorted by file, :func:`_by_method`); never paired by position."""
    fa, fb = per[a]["file"].to_numpy(), per[b]["file"].to_numpy()
    if len(fa) != len(fb) or (fa != fb).any():
        raise ValueError(f"{a} and {b} were evaluated on different images "
                         f"({len(set(fa) ^ set(fb))} not shared); a paired test "
                         "needs the same images for both")


def wilcoxon_table(frame: pd.DataFrame, baselines: Sequence[str], variants: Sequence[str],
                   columns: Sequence[str] = (schema.drop(schema.SOFT),
                                             schema.increase(schema.SOFT))) -> pd.DataFrame:
    """Paired two-sided Wilcoxon signed-rank test, each baseline vs each variant, per column.

    Images are paired by file; two methods evaluated on different images are an error (never
    paired by position). ``mean_diff`` is variant minus baseline; p-values are also
    Holm-adjusted over the table.
    """
    rows = []
    per = {m: sub for m, sub in _by_method(frame, list(baselines) + list(variants))}
    for col in columns:
        for b in baselines:
            for v in variants:
                if b not in per or v not in per:
                    continue
                _check_paired(per, v, b)
                x, y = per[v][col].to_numpy(), per[b][col].to_numpy()
                stat, p = paired_wilcoxon(x, y)
                rows.append({"metric": col, "baseline": b, "variant": v,
                             "mean_diff": float(np.mean(x - y)), "statistic": stat, "p": p})
    out = pd.DataFrame(rows)
    if len(out):
        out["p_holm"] = holm(out["p"])
    return out


class _Claims(Mapping[str, tuple[str, int]]):
    """``{column: (label, direction)}`` of every column a registered read-out marks as a claim
    (:attr:`paperlib.metrics.Column.claim`), under the default settings, in the records' order;
    read from the registry on every access, so a read-out registered later is in it."""

    def _now(self) -> dict[str, tuple[str, int]]:
        return {c.name: (c.label, c.direction) for c in MetricConfig().columns() if c.claim}

    def __getitem__(self, column: str) -> tuple[str, int]:
        return self._now()[column]

    def __iter__(self) -> Iterator[str]:
        return iter(self._now())

    def __len__(self) -> int:
        return len(self._now())

    def __repr__(self) -> str:
        return f"CLAIMS({self._now()!r})"


#: The claims, per Wilcoxon column: the direction in which the variant should beat the baseline
#: (variant - baseline < 0 for Average Drop and deletion AUC, > 0 for the others): Table 3's two,
#: Average Drop with the top 20% kept, deletion and insertion AUC (the read-outs' claim columns).
CLAIMS: Mapping[str, tuple[str, int]] = _Claims()


def verdict_metrics(columns: Sequence[str] | None = None, config: MetricConfig | None = None
                    ) -> dict[str, tuple[str, int]]:
    """``{column: (label, direction)}`` of the columns the verdict shows: every claim column and
    those the read-outs mark :attr:`paperlib.metrics.Column.verdict` (Average Gain; ROAD's means
    when ``config`` turns it on), in the records' order; only those in ``columns`` when given (a
    run's frame). ``config``: the run's metric configuration (default :class:`MetricConfig`'s)."""
    out = {c.name: (c.label, c.direction) for c in (config or MetricConfig()).columns()
           if c.claim or c.verdict}
    return {k: v for k, v in out.items() if columns is None or k in columns}


def control_check(frame: pd.DataFrame, methods: Sequence[str], controls: Sequence[str],
                  alpha: float = ALPHA, config: MetricConfig | None = None,
                  columns: Sequence[str] | None = None) -> pd.DataFrame:
    """Does each method beat every control map on each verdict metric (:func:`verdict_metrics`
    of ``config``; only ``columns`` when given)?

    Per (method, metric): the method's mean over images, the best control's (by the metric's
    direction) and a paired two-sided Wilcoxon test against that control, Holm-adjusted over the
    table. ``beats_every_control`` is ``True`` when the method's mean is better than every
    control's mean; ``significantly`` when, in addition, the test against the best control is
    significant at ``alpha``. Images are paired by file.
    """
    per = dict(_by_method(frame, list(methods) + list(controls)))
    ctrl = [c for c in controls if c in per]
    rows = []
    metrics = verdict_metrics(list(frame.columns), config)
    for col, (label, sign) in metrics.items():
        if columns is not None and col not in columns:
            continue
        if not ctrl:
            break
        means = {c: float(per[c][col].mean()) for c in ctrl}
        best = max(ctrl, key=lambda c: sign * means[c])
        for m in methods:
            if m not in per or m in ctrl:
                continue
            _check_paired(per, m, best)
            value = float(per[m][col].mean())
            _, p = paired_wilcoxon(per[m][col].to_numpy(), per[best][col].to_numpy())
            rows.append({"method": m, "role": METHODS[m].role if m in METHODS else "",
                         "metric": label, "column": col, "value": value, "best_control": best,
                         "control_value": means[best],
                         "beats_every_control": bool(sign * (value - means[best]) > 0),
                         "p": p})
    out = pd.DataFrame(rows)
    if len(out):
        out["p_holm"] = holm(out["p"].fillna(1.0))
        out["significantly"] = out["beats_every_control"] & (out["p_holm"] < alpha)
    return out


def claim_check(wt: pd.DataFrame, alpha: float = ALPHA) -> pd.DataFrame:
    """Does each variant beat each baseline as the paper claims? From :func:`wilcoxon_table`.

    Verdict per comparison, on Holm-adjusted p-values: ``better`` (significant, in the claimed
    direction), ``worse`` (significant, against it) or ``no significant difference``.
    """
    rows = []
    for _, r in wt.iterrows():
        if r["metric"] not in CLAIMS:
            continue
        label, sign = CLAIMS[r["metric"]]
        if r["p_holm"] >= alpha:
            verdict = "no significant difference"
        else:
            verdict = "better" if np.sign(r["mean_diff"]) == sign else "worse"
        rows.append({"variant": r["variant"], "baseline": r["baseline"], "metric": label,
                     "variant - baseline": r["mean_diff"], "p (Holm)": r["p_holm"],
                     "verdict": verdict})
    return pd.DataFrame(rows)


def trend_check(t4: pd.DataFrame, fractions: Sequence[int], method: str = "gradcam"
                ) -> pd.DataFrame:
    """Which read-out follows the paper's Table 4 trend for ``method``?

    For each read-out: Spearman and Pearson correlation of our values with the paper's over k,
    whether ours increase with k like the paper's, and the largest absolute difference.
    """
    from scipy.stats import pearsonr, spearmanr

    paper = PAPER_TABLE4.get(paper_column(method) or "", {})
    ks = [k for k in fractions if paper.get(k) is not None]
    row = t4[t4["method"] == method]
    if len(ks) < 3 or not len(row):
        return pd.DataFrame()
    p = np.array([paper[k] for k in ks])
    out = []
    for prefix, label in READOUTS.items():
        ours = np.array([float(row[schema.readout(prefix, k)].iloc[0]) for k in ks])
        same = bool(np.all(np.diff(ours) * np.sign(np.diff(p)) >= 0))
        out.append({"readout": label, "ours": np.round(ours, 2).tolist(), "paper": p.tolist(),
                    "spearman": float(spearmanr(ours, p)[0]) if np.ptp(ours) else np.nan,
                    "pearson": float(pearsonr(ours, p)[0]) if np.ptp(ours) else np.nan,
                    "same_direction_every_step": same,
                    "max_abs_diff": float(np.max(np.abs(ours - p)))})
    return pd.DataFrame(out)


def table4_scale(t4: pd.DataFrame, fractions: Sequence[int]) -> pd.DataFrame:
    """Each read-out's distance in scale to the paper's Table 4, per kit method with a paper
    column (its registry record): mean absolute difference over k and mean ratio kit / paper.

    Every read-out rises with k, so rank correlation cannot tell them apart; scale can.
    """
    rows = []
    for _, r in t4.iterrows():
        column = paper_column(r["method"])
        paper = PAPER_TABLE4.get(column or "")
        if not paper:
            continue
        ks = [k for k in fractions if k in paper]
        p = np.array([paper[k] for k in ks])
        for prefix, label in READOUTS.items():
            ours = np.array([float(r[schema.readout(prefix, k)]) for k in ks])
            rows.append({"readout": label, "method": r["method"], "paper column": column,
                         "mean_abs_diff": float(np.mean(np.abs(ours - p))),
                         "mean_ratio": float(np.mean(ours / p))})
    return pd.DataFrame(rows)


def scale_verdict(scale: pd.DataFrame) -> str:
    """One sentence, from :func:`table4_scale`: which read-out is closest to the paper's scale."""
    if not len(scale):
        return "No method with a paper column was evaluated: Table 4's scale is not compared."
    by = scale.groupby("readout", sort=False).agg(mad=("mean_abs_diff", "mean"),
                                                  ratio=("mean_ratio", "median"))
    best = by["mad"].idxmin()
    within2 = [r for r, row in by.iterrows() if 0.5 <= row["ratio"] <= 2.0]
    text = (f"Closest to the paper's Table 4 in scale: {best} (mean |kit - paper| "
            f"{by.loc[best, 'mad']:.2f} points, median ratio kit/paper "
            f"{by.loc[best, 'ratio']:.2f}, over {scale['method'].nunique()} methods x 5 k).")
    if within2:
        text += f" Within a factor of 2 of the paper's values: {', '.join(within2)}."
    else:
        text += (" No read-out comes within a factor of 2 of the paper's values: its read-out "
                 "remains unidentified.")
    return text


def write_table(table: pd.DataFrame, stem: str | Path, caption: str = "",
                display: pd.DataFrame | None = None) -> list[Path]:
    """``stem.csv`` (all numbers, 10 significant digits: :data:`paperlib.atomic.CSV_FLOAT_FORMAT`),
    ``stem.md`` and ``stem.tex`` (formatted), caption on top; each written atomically (a full
    disk leaves the old file, never a truncated one)."""
    stem = Path(stem)
    stem.parent.mkdir(parents=True, exist_ok=True)
    display = formatted(table) if display is None else display
    csv, md, tex = stem.with_suffix(".csv"), stem.with_suffix(".md"), stem.with_suffix(".tex")
    atomic_write_csv(table, csv)
    atomic_write_text(md, (f"{caption}\n\n" if caption else "")
                      + display.to_markdown(index=False) + "\n")
    atomic_write_text(tex, display.to_latex(index=False, caption=caption or None, escape=True))
    return [csv, md, tex]
