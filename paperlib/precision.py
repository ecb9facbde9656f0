"""The precision study: what the metrics' opt-in fast forwards do to the numbers.

The fast forwards themselves (``precision`` and ``compile`` of
:class:`paperlib.metrics.MetricConfig`: autocast, TF32, ``torch.compile``) are
:mod:`paperlib.forward`; this module sits above the evaluation and measures them.

:func:`compare_runs` measures the effect on the numbers from the per-image rows of an fp32 run
and a fast run over the same images and methods: per-image ``|delta|`` of every row column
(median, 99th percentile, max), the change of every table cell (Table 3, Table 4, deletion /
insertion AUC) beside the fp32 bootstrap interval's width, and the claim-check verdicts
(:func:`paperlib.tables.claim_check`) of both runs. :func:`measure` runs the evaluation in several
modes, interleaved batch by batch and on the same explanations; ``paperlib precision``
writes ``results/precision.csv`` and ``.md``.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
import torch

from . import schema, tables
from .atomic import atomic_write_csv, atomic_write_text
from .forward import check_precision
from .goals import SAFE_WIDTH_FRACTION
from .metrics import READOUTS, MetricConfig
from .report import render

if TYPE_CHECKING:
    from .blackbox import BlackBox
    from .cam import Explanations
    from .data import ImageDataset

__all__ = ["Measurement", "Mode", "ModeRun", "PrecisionComparison", "compare_runs", "measure",
           "mode_name", "per_column", "summary", "write_report"]


# ---------------------------------------------------------------------------------------------
# The effect on the numbers


@dataclass(frozen=True)
class Mode:
    """One way of running the metric forwards: a precision and whether they are compiled."""

    precision: str = "fp32"
    compile: bool = False

    def __post_init__(self) -> None:
        check_precision(self.precision)

    @property
    def name(self) -> str:
        return mode_name(self.precision, self.compile)

    @property
    def exact(self) -> bool:
        """The default path: fp32, eager."""
        return self.precision == "fp32" and not self.compile


def mode_name(precision: str, compile: bool) -> str:
    """``"bf16"``, ``"fp32+compile"``, ...: a mode's label in tables and reports."""
    return precision + ("+compile" if compile else "")


def per_column(fractions: Sequence[int], curves: bool) -> dict[str, tuple[str, float]]:
    """``{row column: (table, scale)}``: every per-image column a table cell is the mean of
    (each registered read-out's :meth:`paperlib.metrics.Readout.cells`), the table it belongs
    to and the factor the table shows it with (O_top as a percentage)."""
    config = MetricConfig(fractions=tuple(fractions), curve_steps=1 if curves else 0)
    return {c.name: (c.table or "", c.scale) for r in READOUTS.values() for c in r.cells(config)}


def _cell_table(frame: pd.DataFrame, methods: Sequence[str], fractions: Sequence[int],
                curves: bool, seed: int) -> pd.DataFrame:
    """Every table cell with its interval, one frame indexed by method (tables' own functions)."""
    parts = [tables.table3(frame, methods, seed).set_index("method"),
             tables.table4(frame, methods, fractions, seed).set_index("method")]
    if curves:
        parts.append(tables.curves_table(frame, methods, seed).set_index("method"))
    return pd.concat([p.drop(columns=["n_images"]) for p in parts], axis=1)


#: The per-image row column behind each table's cell name where they differ (Table 3 renames its
#: two), from the read-outs' records.
_CELL_NAME = {c.name: c.cell_name for r in READOUTS.values() for c in r.cells(MetricConfig())
              if c.cell_name != c.name}


def _verdicts(frame: pd.DataFrame, baselines: Sequence[str], variants: Sequence[str],
              curves: bool) -> pd.DataFrame:
    columns = [schema.drop(schema.SOFT), schema.increase(schema.SOFT)]
    if schema.drop(schema.top(20)) in frame.columns:
        columns.append(schema.drop(schema.top(20)))
    if curves:
        columns += [schema.DELETION_AUC, schema.INSERTION_AUC]
    wt = tables.wilcoxon_table(frame, baselines, variants, columns)
    return tables.claim_check(wt) if len(wt) else pd.DataFrame()


@dataclass
class PrecisionComparison:
    """What a fast mode did to the numbers of an fp32 run (:func:`compare_runs`).

    ``columns``: one row per (method, per-image column): the per-image ``|fast - fp32|`` median,
    99th percentile and max; the table cell (mean, in the table's scale) of both runs, their
    difference, the fp32 95% interval's width and ``|delta| / width``. ``verdicts``: the
    claim-check verdicts of both runs side by side (``changed``)."""

    mode: str
    n_images: int
    columns: pd.DataFrame
    verdicts: pd.DataFrame

    @property
    def verdicts_changed(self) -> int:
        return int(self.verdicts["changed"].sum()) if len(self.verdicts) else 0

    def worst(self, column: str) -> pd.Series:
        """The row of ``column`` (e.g. ``drop_soft``) with the largest ``|delta| / width``."""
        sub = self.columns[self.columns["column"] == column]
        return sub.loc[sub["delta_over_width"].idxmax()]

    def max_delta_over_width(self, column: str | None = None) -> float:
        """The largest ``|cell change| / fp32 interval width`` (of ``column``, or of all)."""
        sub = self.columns if column is None else self.columns[self.columns["column"] == column]
        return float(sub["delta_over_width"].max())

    def max_abs_O(self) -> float:
        """The largest per-image ``|delta O|`` (a probability) over the soft map and every top-k
        mask (the table's O_top read-outs are in percent: divided back by their scale)."""
        sub = self.columns[self.columns["column"].str.startswith("O_")]
        return float((sub["abs_max"] / sub["scale"]).max())


def compare_runs(exact: pd.DataFrame, fast: pd.DataFrame, methods: Sequence[str] | None = None,
                 fractions: Sequence[int] | None = None, mode: str = "fast", seed: int = 0,
                 baselines: Sequence[str] | None = None,
                 variants: Sequence[str] | None = None) -> PrecisionComparison:
    """The effect of a fast mode on the numbers, from the per-image rows of an fp32 run
    (``exact``) and of a fast run (``fast``) over the same images and methods.

    Rows are paired by (file, method); a pair missing on either side is an error (never compared
    by position), and so is a different Y (the clean forward is fp32 in every mode) or target.
    ``methods`` default to those of ``exact``, ``fractions`` to its ``O_top{k}`` columns;
    ``baselines`` / ``variants`` (for the claim check) to
    :func:`paperlib.evaluation.paper_baselines` / :func:`~paperlib.evaluation.variants`, keeping
    those evaluated. Interval widths are the fp32 run's (:func:`paperlib.tables.table3` etc.,
    bootstrap seeded with ``seed``).
    """
    from .evaluation import paper_baselines
    from .evaluation import variants as all_variants

    methods = list(dict.fromkeys(exact["method"])) if methods is None else list(methods)
    if fractions is None:
        fractions = sorted(int(c[len("O_top"):]) for c in exact.columns
                           if c.startswith("O_top"))
    curves = schema.DELETION_AUC in exact.columns and schema.DELETION_AUC in fast.columns
    keys = ["file", "method"]
    e = exact[exact["method"].isin(methods)].set_index(keys).sort_index()
    f = fast[fast["method"].isin(methods)].set_index(keys).sort_index()
    if not e.index.equals(f.index):
        only = e.index.symmetric_difference(f.index)
        raise ValueError(f"the fp32 and {mode} runs hold different (file, method) rows "
                         f"({len(only)} not shared, e.g. {list(only[:3])}); compare runs over "
                         "the same images and methods")
    if not np.array_equal(e["target"].to_numpy(), f["target"].to_numpy()):
        raise ValueError(f"the fp32 and {mode} runs explain different target classes")
    if not np.allclose(e["Y"].to_numpy(), f["Y"].to_numpy(), rtol=0, atol=1e-6):
        raise ValueError(f"the fp32 and {mode} runs have different Y (the clean forward is fp32 in "
                         "every mode): were they evaluated with the same model and images?")
    cells_e = _cell_table(exact, methods, fractions, curves, seed)
    cells_f = _cell_table(fast, methods, fractions, curves, seed)
    rows = []
    for m in methods:
        em, fm = e.xs(m, level="method"), f.xs(m, level="method")
        for col, (table, scale) in per_column(fractions, curves).items():
            d = np.abs(fm[col].to_numpy(float) - em[col].to_numpy(float)) * scale
            name = _CELL_NAME.get(col, col)
            row: dict[str, Any] = {"mode": mode, "method": m, "column": col, "table": table,
                                   "scale": scale, "n_images": len(em),
                                   "abs_median": float(np.median(d)),
                                   "abs_p99": float(np.percentile(d, 99)),
                                   "abs_max": float(d.max()),
                                   "changed_images": int((d > 0).sum())}
            if name in cells_e.columns:
                lo, hi = cells_e.loc[m, f"{name}_lo"], cells_e.loc[m, f"{name}_hi"]
                fp32, fastv = float(cells_e.loc[m, name]), float(cells_f.loc[m, name])
                width = float(hi - lo)
                row.update({"fp32": fp32, "fast": fastv, "delta": fastv - fp32,
                            "fp32_ci_width": width,
                            "delta_over_width": (abs(fastv - fp32) / width if width > 0
                                                 else (0.0 if fastv == fp32 else np.inf))})
            else:  # O_soft: a per-image quantity with no table cell of its own
                mean_e, mean_f = float(em[col].mean()) * scale, float(fm[col].mean()) * scale
                row.update({"fp32": mean_e, "fast": mean_f, "delta": mean_f - mean_e,
                            "fp32_ci_width": np.nan, "delta_over_width": np.nan})
            rows.append(row)
    evaluated = set(methods)
    base = [b for b in (paper_baselines() if baselines is None else baselines) if b in evaluated]
    var = [v for v in (all_variants() if variants is None else variants) if v in evaluated]
    ve, vf = _verdicts(exact, base, var, curves), _verdicts(fast, base, var, curves)
    if len(ve):
        verdicts = ve[["variant", "baseline", "metric", "p (Holm)", "verdict"]].rename(
            columns={"p (Holm)": "p_fp32", "verdict": "verdict_fp32"})
        verdicts["p_fast"] = vf["p (Holm)"].to_numpy()
        verdicts["verdict_fast"] = vf["verdict"].to_numpy()
        verdicts["changed"] = verdicts["verdict_fp32"] != verdicts["verdict_fast"]
        verdicts.insert(0, "mode", mode)
    else:
        verdicts = pd.DataFrame()
    return PrecisionComparison(mode, int(e.index.get_level_values("file").nunique()),
                               pd.DataFrame(rows), verdicts)


# ---------------------------------------------------------------------------------------------
# One measurement: the evaluation in several modes, interleaved, on the same explanations


@dataclass
class ModeRun:
    """One mode's evaluation in :func:`measure`: its rows and its batch records."""

    mode: Mode
    frame: pd.DataFrame
    batches: list[dict[str, Any]]

    @property
    def metric_seconds(self) -> list[float]:
        return [float(b["metric_seconds"]) for b in self.batches]

    @property
    def images(self) -> list[int]:
        return [int(b["n_images"]) for b in self.batches]


@dataclass
class Measurement:
    """:func:`measure`'s result: per mode its run (the first is fp32 eager), and the settings."""

    runs: dict[str, ModeRun]
    settings: dict[str, Any]

    @property
    def reference(self) -> ModeRun:
        return next(iter(self.runs.values()))

    def other_seconds(self) -> list[float]:
        """Per batch, what the evaluation spends besides the metric forwards (explanations,
        the floor, masks and rows): the fp32 run's ``batch_seconds - metric_seconds``; every
        mode scores the fp32 run's maps, so only that run computed them."""
        return [float(b["batch_seconds"] - b["metric_seconds"]) for b in self.reference.batches]

    def evaluation_seconds(self, mode: str, skip_first: bool = False) -> float:
        """Estimated full-evaluation time in ``mode``: :meth:`other_seconds` + that mode's metric
        seconds; ``skip_first`` leaves out the first batch (where a compiled mode compiles)."""
        s = 1 if skip_first else 0
        return float(sum(self.other_seconds()[s:]) + sum(self.runs[mode].metric_seconds[s:]))

    def speed(self) -> pd.DataFrame:
        """Per mode: metric ms per image and speed-up over fp32 eager, estimated full-evaluation
        speed-up; all batches, and without the first (where a compiled mode compiles); and the
        median over batches of the per-batch speed-up (robust to a batch slowed by machine
        load)."""
        ref = self.reference
        rows = []
        for name, r in self.runs.items():
            n, metric, rest = sum(r.images), sum(r.metric_seconds), sum(r.metric_seconds[1:])
            many = len(r.batches) > 1
            rows.append({
                "mode": name, "images": n, "batches": len(r.batches),
                "metric_forwards": sum(int(b["metric_forwards"]) for b in r.batches),
                "metric_s": metric, "first_batch_metric_s": r.metric_seconds[0],
                "metric_ms_per_image": 1000 * metric / n,
                "metric_speedup": sum(ref.metric_seconds) / metric,
                "metric_speedup_after_first_batch": (sum(ref.metric_seconds[1:]) / rest
                                                     if many else np.nan),
                "metric_speedup_batch_median": float(np.median(
                    np.array(ref.metric_seconds) / np.array(r.metric_seconds))),
                "evaluation_s": self.evaluation_seconds(name),
                "evaluation_speedup": (self.evaluation_seconds(ref.mode.name)
                                       / self.evaluation_seconds(name)),
                "evaluation_speedup_after_first_batch": (
                    self.evaluation_seconds(ref.mode.name, True)
                    / self.evaluation_seconds(name, True) if many else np.nan)})
        return pd.DataFrame(rows)


def measure(black_box: BlackBox, dataset: ImageDataset, modes: Sequence[Mode],
            parameters: Mapping[str, Any] | None = None, results_root: str | Path | None = None,
            log: Callable[[str], object] | None = print,
            max_rounds: int | None = None) -> Measurement:
    """The evaluation (:func:`paperlib.evaluation.run_evaluation`) in every mode of ``modes``
    (the first must be fp32 eager), interleaved batch by batch on the same explanations.

    ``parameters``: evaluation settings as for
    :meth:`paperlib.evaluation.EvalSettings.from_parameters` (``precision`` / ``compile`` are
    each mode's). Every mode's run has its own entry in the results store
    ``<results>/cache/precision.sqlite`` (the key holds the mode) and resumes like any
    evaluation. Round by round, each mode computes one batch (``max_batches=1``), the fp32 run
    first: it computes the explanations and the other modes score the same maps
    (``explainer=``), so the runs differ by their metric forwards alone, and machine-load drifts
    hit every mode alike. ``max_rounds`` stops after that many rounds (the first batches of the
    split: a documented subset; resuming later completes the runs). A results key that changes
    between rounds (the package's code edited meanwhile: the key holds its fingerprint) restarts
    the runs, and is logged.
    """
    from .cam import explain
    from .evaluation import EvalSettings, Evaluation, run_evaluation

    if not modes or not modes[0].exact:
        raise ValueError("the first mode must be fp32 eager (the reference)")
    if len({m.name for m in modes}) != len(modes):
        raise ValueError(f"modes repeat: {[m.name for m in modes]}")
    params = {k: v for k, v in (parameters or {}).items() if k not in ("precision", "compile")}
    settings = {m.name: EvalSettings.from_parameters({**params, "precision": m.precision,
                                                      "compile": m.compile}) for m in modes}
    kept: dict[tuple[str, ...], Explanations] = {}

    def explainer(bb: BlackBox, images: torch.Tensor, methods: Sequence[str],
                  targets: torch.Tensor | None = None, options: Any = None,
                  files: Sequence[str] = ()) -> Explanations:
        key = tuple(files)
        if key not in kept:
            kept[key] = explain(bb, images, methods, targets=targets, options=options)
        return kept[key]

    def run(m: Mode, batches: int) -> Evaluation:
        return run_evaluation(black_box, dataset, settings[m.name], results_root, progress=False,
                              name="precision", max_batches=batches, explainer=explainer)

    evaluations = {m.name: run(m, 0) for m in modes}  # what the store holds already
    target = np.inf if max_rounds is None else max_rounds
    while True:
        progressed = False
        for m in modes:
            before = len(evaluations[m.name].batches)
            if before >= target:
                continue
            ev = evaluations[m.name] = run(m, 1)
            if len(ev.batches) < before and log is not None:
                log(f"  {m.name}: the results key changed (code edited?); the run restarts")
            if len(ev.batches) != before:
                progressed = True
                if log is not None:
                    log(f"  {m.name:<14s} batch {len(ev.batches)}: "
                        f"{ev.batches[-1]['metric_seconds']:.1f} s of metric forwards")
        kept.clear()  # every mode has scored this round's batch
        if not progressed:
            break
    # the batches every mode has (by their files), in the fp32 run's order
    def files(b: Mapping[str, Any]) -> tuple[str, ...]:
        return tuple(b["files"])

    common = set.intersection(*({files(b) for b in ev.batches} for ev in evaluations.values()))
    order = [files(b) for b in evaluations[modes[0].name].batches if files(b) in common]
    if max_rounds is not None:
        order = order[:max_rounds]
    kept_files = {f for fs in order for f in fs}
    runs = {}
    for m in modes:
        ev = evaluations[m.name]
        by = {files(b): b for b in ev.batches}
        runs[m.name] = ModeRun(m, ev.frame[ev.frame["file"].isin(kept_files)]
                               .reset_index(drop=True), [by[fs] for fs in order])
    info = {**{k: v for k, v in settings[modes[0].name].describe().items()
               if k not in ("precision", "compile")},
            "threads": torch.get_num_threads(), "device": str(black_box.device),
            "model": black_box.name, "modes": [m.name for m in modes], "max_rounds": max_rounds}
    return Measurement(runs, info)


# ---------------------------------------------------------------------------------------------
# The report: results/precision.csv and .md


def summary(measurement: Measurement, comparisons: Sequence[PrecisionComparison]) -> pd.DataFrame:
    """Per mode: speed-ups, the largest effects, verdicts changed, and whether it is *safe*
    (every claim-check verdict unchanged and every method's Average Drop (Table 3) moved by
    less than a tenth of its fp32 95% interval's width)."""
    speed = measurement.speed().set_index("mode")
    rows = []
    for c in comparisons:
        ad = c.columns[c.columns["column"] == schema.drop(schema.SOFT)]
        worst = c.columns.loc[c.columns["delta_over_width"].idxmax()]
        n_verdicts = len(c.verdicts)
        rows.append({
            "mode": c.mode, **speed.loc[c.mode].to_dict(),
            "max_abs_delta_O": c.max_abs_O(),
            "max_abs_delta_avg_drop": float(ad["delta"].abs().max()),
            "max_avg_drop_delta_over_width": float(ad["delta_over_width"].max()),
            "max_delta_over_width": float(worst["delta_over_width"]),
            "max_delta_over_width_at": f"{worst['method']} {worst['column']}",
            "verdicts": n_verdicts, "verdicts_changed": c.verdicts_changed,
            "safe": bool(c.verdicts_changed == 0
                         and float(ad["delta_over_width"].max()) < SAFE_WIDTH_FRACTION)})
    return pd.DataFrame(rows)


def write_report(measurement: Measurement, comparisons: Sequence[PrecisionComparison],
                 out: str | Path, facts: Mapping[str, Any] | None = None) -> list[Path]:
    """``<out>/precision.csv`` (every compared column of every method, per mode),
    ``<out>/precision_summary.csv`` (one row per mode: speed-ups, largest effects, ``safe``) and
    ``<out>/precision.md`` (how it was run, speed, safety per mode, the changes per method)."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    csv, md = out / "precision.csv", out / "precision.md"
    columns = pd.concat([c.columns for c in comparisons], ignore_index=True)
    atomic_write_csv(columns, csv)
    s = measurement.settings
    summ = summary(measurement, comparisons)
    summary_csv = out / "precision_summary.csv"
    atomic_write_csv(summ.assign(threads=s["threads"], device=s["device"], model=s["model"],
                                 split=s["split"]), summary_csv)
    atomic_write_text(md, render("precision.md.j2", **_report_facts(summ, comparisons, s, facts)))
    return [csv, summary_csv, md]


#: The summary's columns in the report, with their headers.
_SHOWN = {"mode": "mode", "metric_ms_per_image": "metric ms/image", "metric_speedup": "metric x",
          "metric_speedup_after_first_batch": "metric x (after 1st batch)",
          "metric_speedup_batch_median": "metric x (median batch)",
          "evaluation_speedup": "evaluation x",
          "evaluation_speedup_after_first_batch": "evaluation x (after 1st batch)",
          "first_batch_metric_s": "1st batch metric s", "max_abs_delta_O": "max |dO|",
          "max_abs_delta_avg_drop": "max |dAD|",
          "max_avg_drop_delta_over_width": "max |dAD|/width",
          "max_delta_over_width": "max |d|/width", "max_delta_over_width_at": "at",
          "verdicts_changed": "verdicts changed", "verdicts": "verdicts", "safe": "safe"}


def _per_method(c: PrecisionComparison) -> pd.DataFrame:
    """One row per method: the per-image changes of O, the table cells' changes and widths."""
    per = []
    for m, sub in c.columns.groupby("method", sort=False):
        r = sub.set_index("column")
        o = [x for x in r.index if x.startswith("O_top")]
        row = {"method": m,
               "|dO_soft| med / p99 / max": (
                   f"{r.loc['O_soft', 'abs_median']:.2e} / {r.loc['O_soft', 'abs_p99']:.2e}"
                   f" / {r.loc['O_soft', 'abs_max']:.2e}"),
               "|dO_top| p99 / max": (f"{r.loc[o, 'abs_p99'].max() / 100:.2e} / "
                                      f"{r.loc[o, 'abs_max'].max() / 100:.2e}"),
               "AD fp32": r.loc["drop_soft", "fp32"], "dAD": r.loc["drop_soft", "delta"],
               "AD width": r.loc["drop_soft", "fp32_ci_width"],
               "dAD/width": r.loc["drop_soft", "delta_over_width"],
               "d%Inc": r.loc["increase_soft", "delta"],
               "%Inc width": r.loc["increase_soft", "fp32_ci_width"]}
        if schema.DELETION_AUC in r.index:
            row.update({"d del AUC": r.loc[schema.DELETION_AUC, "delta"],
                        "del width": r.loc[schema.DELETION_AUC, "fp32_ci_width"],
                        "d ins AUC": r.loc[schema.INSERTION_AUC, "delta"],
                        "ins width": r.loc[schema.INSERTION_AUC, "fp32_ci_width"]})
        worst = sub.loc[sub["delta_over_width"].idxmax()]
        row["max |d|/width (cell)"] = f"{worst['delta_over_width']:.3f} ({worst['column']})"
        per.append(row)
    return pd.DataFrame(per)


def _report_facts(summ: pd.DataFrame, comparisons: Sequence[PrecisionComparison],
                  settings: Mapping[str, Any], facts: Mapping[str, Any] | None
                  ) -> dict[str, Any]:
    """The facts of ``precision.md``: the settings, the machine, the summary table, the fastest
    safe mode, per unsafe mode the methods whose Average Drop moved too far, per mode the
    per-method changes and the changed verdicts."""
    safe = summ[summ["safe"]].sort_values("evaluation_speedup", ascending=False)
    by_mode = summ.set_index("mode")
    unsafe = []
    for c in comparisons:
        if c.mode in set(safe["mode"]):
            continue
        ad = c.columns[c.columns["column"] == schema.drop(schema.SOFT)]
        over = ad[ad["delta_over_width"] >= SAFE_WIDTH_FRACTION]
        unsafe.append({"mode": c.mode, "row": by_mode.loc[c.mode].to_dict(),
                       "over": [r._asdict() for r in over.itertuples()], "methods": len(ad),
                       "verdicts_changed": c.verdicts_changed, "verdicts": len(c.verdicts)})
    modes = [{"mode": c.mode, "per_method": _per_method(c), "verdicts": len(c.verdicts),
              "changed": c.verdicts[c.verdicts["changed"]].drop(columns=["mode", "changed"])
              if len(c.verdicts) else None} for c in comparisons]
    return {"s": settings, "images": int(summ["images"].iloc[0]),
            "date": facts.get("date_utc", "") if facts else "",
            "machine": [(k, v) for k, v in facts.items() if k != "date_utc"] if facts else None,
            "shown": summ[list(_SHOWN)].rename(columns=_SHOWN),
            "best": safe.iloc[0].to_dict() if len(safe) else None, "unsafe": unsafe,
            "modes": modes, "safe_width": SAFE_WIDTH_FRACTION}


def _mode(text: str) -> Mode:
    precision, _, rest = text.partition("+")
    if rest not in ("", "compile"):
        raise SystemExit(f"mode {text!r}: expected precision or precision+compile")
    return Mode(precision, rest == "compile")


def main(args: argparse.Namespace) -> int:
    """``paperlib precision``: one measurement, written as precision.csv / .md."""
    import datetime as dt
    import pickle

    from .data import load_images
    from .models import load_model
    from .paths import results_dir
    from .perf import cpu_model, loadavg

    if args.from_saved:
        with open(args.from_saved, "rb") as f:
            result, facts = pickle.load(f)
    else:
        if args.threads:
            torch.set_num_threads(args.threads)
        modes = [_mode(m) for m in args.modes]
        bb = load_model(args.model, device=args.device)
        for m in modes:
            check_precision(m.precision, bb.device)
        dataset = load_images(args.data_dir)
        params: dict[str, Any] = {"n_images": args.n_images, "split": args.split,
                                  "batch_size": args.batch_size, "methods": args.methods,
                                  "curve_steps": args.curve_steps}
        load = loadavg()
        start = time.perf_counter()
        result = measure(bb, dataset, modes, params, max_rounds=args.max_rounds)
        facts = {"date_utc": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
                 "cpu": cpu_model(), "torch": torch.__version__,
                 "load average at start": load, "load average at end": loadavg(),
                 "wall time": f"{(time.perf_counter() - start) / 60:.1f} min"}
        if args.save:
            with open(args.save, "wb") as f:
                pickle.dump((result, facts), f)
    comparisons = [compare_runs(result.reference.frame, r.frame, mode=name)
                   for name, r in list(result.runs.items())[1:]]
    for path in write_report(result, comparisons, args.out or results_dir(), facts):
        print(f"wrote {path}")
    print(summary(result, comparisons).to_string())
    return 0
