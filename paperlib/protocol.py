"""Readings of the paper's protocol: how the verdict moves with the choices the paper leaves open.

Two cheap studies (no deletion / insertion curves: ``curve_steps=0``; soft map and the top-20%
read-out only; the first :data:`STUDY_IMAGES` images of the run, spread evenly over its split),
each a set of ordinary evaluation runs, cached and resumable like Table 3's:

* **protocol sensitivity** (:func:`run_protocol`): fill in {black, normalised, mean, blur} x
  target in {predicted, label}, on every method whose record allows the studies. The
  explanations of a batch are computed once per target and reused for every fill (they do not
  depend on it); :func:`protocol_table` gives Table 3 and the top-20% Average Drop with the claim
  check per protocol, and :func:`protocol_verdicts` says whether any verdict changes.
* **untrained module, many seeds** (:func:`run_seed_sweep`): ``attention-untrained`` for S seeds
  and each initialisation against Grad-CAM (computed once); :func:`seed_sweep_table` reports
  mean, min and max over seeds and for how many seeds the module is significantly better /
  worse / not different.
* **ROAD** (:func:`run_road`): the ROAD read-out (:class:`paperlib.metrics.Road`, percentages
  :data:`ROAD_PERCENTILES` removed and imputed) on a named subset, :func:`road_methods` (the
  paper's baselines, every reading of its method, the controls) and the first
  :data:`ROAD_IMAGES` images: 18 imputed copies per (method, image) cost ~20 forwards' worth of
  work each, too much for every method and image of the main run on a CPU. :func:`road_table`
  gives the means with intervals and the check against the controls.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import pandas as pd
import torch

from . import schema
from .attention import UNTRAINED_INITS
from .blackbox import BlackBox
from .cam import METHODS, ExplainOptions, Explanations, explain
from .data import ImageDataset
from .evaluation import EvalSettings, run_evaluation
from .masking import FILLS
from .metrics import MetricConfig
from .road import COMBINED, ORDERS, road_column
from .stats import holm, paired_wilcoxon
from .tables import CLAIMS, claim_check, control_check, readout_table, wilcoxon_table

__all__ = ["PROTOCOL_FRACTION", "ROAD_IMAGES", "ROAD_PERCENTILES", "ROAD_ROLES", "STUDY_IMAGES",
           "TARGET_MODES", "UNTRAINED_SEEDS", "protocol_table", "protocol_verdicts",
           "road_methods", "road_settings", "road_table", "run_protocol", "run_road",
           "run_seed_sweep", "seed_sweep_table", "study_images"]

TARGET_MODES = ("predicted", "label")
#: Seeds of the untrained module in :func:`run_seed_sweep` (0 .. S-1).
UNTRAINED_SEEDS = 10
#: The top-k% read-out of the cheap studies (the regime the paper highlights).
PROTOCOL_FRACTION = 20
#: Images of the ROAD study (the first of the run's split; fewer when the run has fewer).
ROAD_IMAGES = 24
#: Images of the seed sweep and the protocol sensitivity study (spread evenly over the run's
#: split like the run's own; fewer when the run has fewer): 20 sweep runs and 8 protocols over
#: every image of the main run would cost more than the main run itself on a 2-core CPU.
STUDY_IMAGES = 96
#: Percentages of pixels removed in the ROAD study (Rong et al.; pytorch-grad-cam's default).
ROAD_PERCENTILES = tuple(range(10, 100, 10))
#: The roles of the methods the ROAD study runs (:func:`road_methods`).
ROAD_ROLES = ("baseline", "variant", "control")


def study_images(base: EvalSettings, n_images: int | None, default: int, study: str) -> int:
    """How many images a study runs on: ``n_images`` (``None``: ``default``), never more than
    ``base``'s; a bad count refused in one line naming the ``study``."""
    if n_images is not None and (isinstance(n_images, bool) or not isinstance(n_images, int)
                                 or n_images < 1):
        raise ValueError(f"the {study}'s n_images must be a count >= 1 or None, got "
                         f"{n_images!r}")
    n = default if n_images is None else n_images
    return n if base.n_images is None else min(n, base.n_images)


class _MemoExplainer:
    """``explain`` with the batch's explanations kept for the next run over the same images."""

    def __init__(self) -> None:
        self.memo: dict[tuple[Any, ...], Explanations] = {}
        self.hits = 0

    def __call__(self, black_box: BlackBox, images: torch.Tensor, methods: Sequence[str],
                 targets: Any = None, options: ExplainOptions | None = None,
                 files: Sequence[str] = ()) -> Explanations:
        key = (tuple(files), tuple(methods), targets is None)
        if files and key in self.memo:
            self.hits += 1
            return self.memo[key]
        ex = explain(black_box, images, methods, targets=targets, options=options)
        if files:
            self.memo[key] = ex
        return ex


def run_protocol(black_box: BlackBox, dataset: ImageDataset, base: EvalSettings,
                 fills: Sequence[str] = FILLS, targets: Sequence[str] = TARGET_MODES,
                 results_root: str | Path | None = None, progress: bool = True,
                 n_images: int | None = None) -> pd.DataFrame:
    """Rows of every (fill, target) run of ``base``'s methods (those whose record allows the
    studies: :attr:`paperlib.cam.MethodSpec.studies`) on ``n_images`` of its images (``None``:
    :data:`STUDY_IMAGES`), with ``fill`` and ``target_mode`` columns; soft map and top-20%
    only."""
    methods = tuple(m for m in base.methods if METHODS[m].studies)
    n = study_images(base, n_images, STUDY_IMAGES, "protocol study")
    frames = []
    for target in targets:
        memo = _MemoExplainer()  # explanations depend on the target, never on the fill
        for fill in fills:
            settings = EvalSettings(methods=methods, split=base.split,
                                    n_images=n, target=target, explain=base.explain,
                                    metrics=MetricConfig(fill=fill,
                                                         fractions=(PROTOCOL_FRACTION,),
                                                         curve_steps=0),
                                    batch_size=base.batch_size)
            run = run_evaluation(black_box, dataset, settings, results_root, progress=progress,
                                 name="protocol", explainer=memo)
            frames.append(run.frame.assign(fill=fill, target_mode=target))
    return pd.concat(frames, ignore_index=True)


def protocol_table(frame: pd.DataFrame, baselines: Sequence[str], variants: Sequence[str],
                   alpha: float = 0.05) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Per protocol: each method's Average Drop, % Increase, Average Gain and top-20% Average
    Drop (means), and the claim check of every variant against every baseline (Holm within the
    protocol)."""
    drop_top = schema.drop(schema.top(PROTOCOL_FRACTION))
    columns = [schema.drop(schema.SOFT), schema.increase(schema.SOFT), drop_top]
    gain = schema.gain(schema.SOFT)
    means, verdicts = [], []
    for (target, fill), sub in frame.groupby(["target_mode", "fill"], sort=False):
        for m, rows in sub.groupby("method", sort=False):
            means.append({"target": target, "fill": fill, "method": m, "n_images": len(rows),
                          "avg_drop": rows[columns[0]].mean(), "increase": rows[columns[1]].mean(),
                          "avg_gain": (rows[gain].mean() if gain in rows else float("nan")),
                          f"avg_drop_top{PROTOCOL_FRACTION}": rows[drop_top].mean()})
        wt = wilcoxon_table(sub, baselines, variants, columns=[c for c in columns if c in CLAIMS])
        if len(wt):
            verdicts.append(claim_check(wt, alpha).assign(target=target, fill=fill))
    verdict_frame = pd.concat(verdicts, ignore_index=True) if verdicts else pd.DataFrame()
    return pd.DataFrame(means), verdict_frame


def protocol_verdicts(verdicts: pd.DataFrame, reference: tuple[str, str] = ("predicted", "black")
                      ) -> pd.DataFrame:
    """One row per variant x baseline x metric: the verdict under the kit's protocol
    (``reference`` = (target, fill)), the verdicts under every protocol, and whether it changes."""
    rows = []
    for (v, b, metric), sub in verdicts.groupby(["variant", "baseline", "metric"], sort=False):
        by = {f"{t}/{f}": verdict for t, f, verdict in
              zip(sub["target"], sub["fill"], sub["verdict"])}
        ref = by.get(f"{reference[0]}/{reference[1]}")
        rows.append({"variant": v, "baseline": b, "metric": metric, "kit protocol": ref, **by,
                     "changes": len(set(by.values())) > 1})
    return pd.DataFrame(rows)


def run_seed_sweep(black_box: BlackBox, dataset: ImageDataset, base: EvalSettings,
                   seeds: int | Sequence[int] | None = None,
                   inits: Sequence[str] = UNTRAINED_INITS,
                   results_root: str | Path | None = None, progress: bool = True,
                   on_run: Callable[[str, int], None] | None = None,
                   n_images: int | None = None) -> pd.DataFrame:
    """Rows of Grad-CAM and ``attention-untrained`` for every (init, seed) on ``n_images`` of
    ``base``'s images (``None``: :data:`STUDY_IMAGES`), soft map and top-20% only, with
    ``untrained_init`` and ``untrained_seed`` columns. ``seeds``: a count S (seeds 0 .. S-1), a
    list, or ``None`` for :data:`UNTRAINED_SEEDS`. Grad-CAM depends on neither the seed nor the
    initialisation: it is computed once (its own run) and its rows stand beside every seed's."""
    if seeds is None:
        seeds = UNTRAINED_SEEDS
    if isinstance(seeds, int):
        seeds = range(seeds)
    n = study_images(base, n_images, STUDY_IMAGES, "seed sweep")

    def run(method: str, explain_options: ExplainOptions) -> pd.DataFrame:
        settings = EvalSettings(methods=(method,), split=base.split, n_images=n,
                                target=base.target, explain=explain_options,
                                metrics=MetricConfig(fill=base.metrics.fill,
                                                     fractions=(PROTOCOL_FRACTION,),
                                                     curve_steps=0),
                                batch_size=base.batch_size)
        return run_evaluation(black_box, dataset, settings, results_root, progress=progress,
                              name="untrained").frame

    reference = run("gradcam", base.explain)
    frames = []
    for init in inits:
        for seed in seeds:
            if on_run is not None:
                on_run(init, seed)
            options = ExplainOptions.build(base.explain, untrained_init=init, untrained_seed=seed)
            frames += [reference.assign(untrained_init=init, untrained_seed=seed),
                       run("attention-untrained", options).assign(untrained_init=init,
                                                                  untrained_seed=seed)]
    return pd.concat(frames, ignore_index=True)


def seed_sweep_table(frame: pd.DataFrame, alpha: float = 0.05) -> pd.DataFrame:
    """Per initialisation and metric: the untrained module's mean / min / max over seeds, Grad-CAM's
    value, and the number of seeds significantly better / worse / not different from Grad-CAM
    (paired Wilcoxon per seed, Holm-adjusted over the seeds)."""
    metrics = {schema.drop(schema.SOFT): ("Average Drop", -1),
               schema.increase(schema.SOFT): ("% Increase", +1),
               schema.drop(schema.top(PROTOCOL_FRACTION)): (
                   f"Average Drop, top {PROTOCOL_FRACTION}% kept", -1)}
    rows = []
    for init, sub in frame.groupby("untrained_init", sort=False):
        for col, (label, sign) in metrics.items():
            values, diffs, pvals = [], [], []
            reference = None
            for _, one in sub.groupby("untrained_seed"):
                g = one[one["method"] == "gradcam"].sort_values("file")
                u = one[one["method"] == "attention-untrained"].sort_values("file")
                if list(g["file"]) != list(u["file"]):
                    raise ValueError("Grad-CAM and attention-untrained rows cover other images")
                values.append(u[col].mean())
                reference = g[col].mean()
                d = u[col].to_numpy() - g[col].to_numpy()
                diffs.append(d.mean())
                pvals.append(paired_wilcoxon(u[col].to_numpy(), g[col].to_numpy())[1])
            adjusted = holm(pvals)
            better = sum(1 for d, p in zip(diffs, adjusted) if p < alpha and d * sign > 0)
            worse = sum(1 for d, p in zip(diffs, adjusted) if p < alpha and d * sign < 0)
            rows.append({"init": init, "metric": label, "seeds": len(values),
                         "n_images": int(sub["file"].nunique()),
                         "gradcam": reference, "mean": float(pd.Series(values).mean()),
                         "min": float(min(values)), "max": float(max(values)),
                         "better": better, "worse": worse,
                         "no significant difference": len(values) - better - worse})
    return pd.DataFrame(rows)


def road_methods(methods: Sequence[str]) -> tuple[str, ...]:
    """The ROAD study's methods among ``methods``, in their order: those with a role in
    :data:`ROAD_ROLES` whose record allows the studies (:attr:`paperlib.cam.MethodSpec.studies`)."""
    return tuple(m for m in methods if METHODS[m].role in ROAD_ROLES and METHODS[m].studies)


def road_settings(base: EvalSettings, n_images: int | None = None,
                  percentiles: Sequence[int] = ROAD_PERCENTILES) -> EvalSettings:
    """``base`` turned into the ROAD study's run: :func:`road_methods`, the first ``n_images``
    (``None``: :data:`ROAD_IMAGES`; never more than ``base``'s), ROAD at ``percentiles`` with
    ``base``'s noise and seed, top-20% kept (no curves)."""
    n = study_images(base, n_images, ROAD_IMAGES, "ROAD study")
    m = base.metrics
    return EvalSettings(methods=road_methods(base.methods), split=base.split, n_images=n,
                        target=base.target, explain=base.explain,
                        metrics=MetricConfig(fill=m.fill, fractions=(PROTOCOL_FRACTION,),
                                             curve_steps=0, road_percentiles=tuple(percentiles),
                                             road_noise=m.road_noise, road_seed=m.road_seed,
                                             precision=m.precision, compile=m.compile),
                        batch_size=base.batch_size)


def run_road(black_box: BlackBox, dataset: ImageDataset, base: EvalSettings,
             n_images: int | None = None, percentiles: Sequence[int] = ROAD_PERCENTILES,
             results_root: str | Path | None = None, progress: bool = True) -> pd.DataFrame:
    """Rows of the ROAD study (:func:`road_settings`), cached and resumable like every run."""
    settings = road_settings(base, n_images, percentiles)
    if not settings.methods:
        return pd.DataFrame()
    return run_evaluation(black_box, dataset, settings, results_root, progress=progress,
                          name="road").frame


def road_table(frame: pd.DataFrame, percentiles: Sequence[int] = ROAD_PERCENTILES,
               seed: int = 0) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The ROAD study's tables: per method (and its role), MoRF, LeRF and combined (means over
    the percentages) with 95% bootstrap intervals; and each non-control method against the best
    control on those three (:func:`paperlib.tables.control_check`)."""
    config = MetricConfig(fractions=(PROTOCOL_FRACTION,), curve_steps=0,
                          road_percentiles=tuple(percentiles))
    methods = list(dict.fromkeys(frame["method"]))
    table = readout_table(frame, methods, "road", config, seed=seed)
    table.insert(1, "role", [METHODS[m].role for m in table["method"]])
    controls = [m for m in methods if METHODS[m].role == "control"]
    others = [m for m in methods if m not in controls]
    check = (control_check(frame, others, controls, config=config,
                           columns=[road_column(o) for o in ORDERS] + [COMBINED])
             if controls and others else pd.DataFrame())
    return table, check
