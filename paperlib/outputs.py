"""The one writer of an evaluation's files: notebook 04, ``paperlib evaluate`` and the
claim matrix's cells all write through :func:`write_evaluation`.

Files (``out`` is the results folder; tables as CSV / Markdown / LaTeX, :func:`tables.write_table`),
by group (:data:`GROUPS`):

================  ============================================================================
group             files
================  ============================================================================
``table3``        ``table3``
``table4``        ``table4``, ``table4_trend`` (when the run has Grad-CAM)
``table4_scale``  ``table4_scale`` (when a method has a paper column), its ``_verdict.txt``
``curves``        ``deletion_insertion`` (when the run has curves)
``readouts``      ``readouts.json`` (the run's read-out records as data, which the reports read:
                  :func:`paperlib.metrics.readout_facts`) and a ``readout_<name>`` table for
                  each registered read-out beyond the kit's three (:func:`tables.readout_table`)
``claims``        ``wilcoxon``, ``claims`` (when the run has a baseline and a variant)
``controls``      ``controls``: every other method against the control maps on each verdict
                  metric (:func:`tables.control_check`; when the run has a control)
``agreement``     ``metric_agreement`` (Kendall's tau between every two verdict metrics' method
                  rankings, image bootstrap), ``metric_reliability`` (split-half),
                  ``metric_agreement.txt`` (the sentence) and, with ``figures``, the heat map
                  ``metric_agreement.png`` / ``.pdf`` (:mod:`paperlib.agreement`; when the run
                  has at least three methods)
``calibration``   ``calibration``: other papers' published cells beside the kit's under the
                  matching protocol (:mod:`paperlib.calibration`; the protocol study's rows
                  when given, else the main run's)
``power``         ``power`` (same condition)
``run``           ``eval_speed.json``, ``eval_split.json`` (:func:`split_record`)
================  ============================================================================

Every call ends with :func:`paperlib.manifest.settle`: ``evaluation_manifest.json`` in ``out``
names the run and the SHA-256 of every file it wrote, and the files of another run that this call
did not rewrite are moved aside (an output folder holds one run's files).

and, when given: the claims heat map (``claims_heatmap.png`` / ``.pdf`` under ``figures``) and the
three studies that run evaluations of their own (:func:`run_studies`, run on every rank under
``torchrun`` before the main rank writes): ``untrained_seeds`` (attention-untrained over seeds,
:func:`paperlib.protocol.run_seed_sweep`), ``protocol`` + ``protocol_verdicts`` (fills x targets,
:func:`paperlib.protocol.run_protocol`) and ``road`` + ``road_controls`` (ROAD on a named subset,
:func:`paperlib.protocol.run_road`).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import matplotlib.pyplot as plt
import pandas as pd

from . import agreement, calibration, literature, manifest, plots, power, protocol, tables
from .atomic import atomic_write_text
from .data import SPLITS, ImageDataset
from .evaluation import EvalSettings, Evaluation, control_methods, paper_baselines, variants
from .metrics import readout_facts
from .models import BlackBox
from .report import READOUTS_FILE, readout_table_name

__all__ = ["CELL_GROUPS", "GROUPS", "Outputs", "Studies", "run_studies", "split_description",
           "split_record", "write_evaluation"]

#: Every file group :func:`write_evaluation` knows, in the order it writes them.
GROUPS = ("table3", "table4", "table4_scale", "curves", "readouts", "claims", "controls",
          "agreement", "calibration", "power", "run")
#: The groups a claim-matrix cell writes (:func:`paperlib.matrix.run_cell`).
CELL_GROUPS = ("table3", "table4", "curves", "claims", "run")


def split_description(split: str | None) -> str:
    """What a split holds, in words, from :data:`paperlib.data.SPLITS`."""
    if split in (None, "all"):
        return "every image of the folder"
    mod, rest = SPLITS[split]
    return f"class index = {rest} (mod {mod})"


def split_record(split: str, files: Sequence[str]) -> dict[str, Any]:
    """``eval_split.json``: the split evaluated, what the trained module learned from, and the
    exact files (derived from the parameters, never typed)."""
    trained_on = split_description("train")
    overlap = "no image" if split == "eval" else (
        "these images include the module's training images" if split in ("train", None, "all")
        else "unknown")
    return {"split": f"{split}: {split_description(split)}",
            "attention-trained trained on": trained_on,
            "overlap with the training images": overlap, "files": sorted(files)}


@dataclass
class Studies:
    """Rows of the studies that run evaluations of their own (``None``: not run)."""

    seed_sweep: pd.DataFrame | None = None   # protocol.run_seed_sweep
    protocol: pd.DataFrame | None = None     # protocol.run_protocol
    road: pd.DataFrame | None = None         # protocol.run_road


def run_studies(black_box: BlackBox, dataset: ImageDataset, settings: EvalSettings,
                results_root: str | Path | None = None, untrained_seeds: int | None = None,
                protocol_study: bool = True, road_images: int | None = None,
                progress: bool = True, study_images: int | None = None) -> Studies:
    """Run (or resume) the seed sweep of ``attention-untrained`` (``untrained_seeds`` seeds;
    ``None``: :data:`paperlib.protocol.UNTRAINED_SEEDS`; 0: no sweep), with ``protocol_study``
    the protocol sensitivity study, both on ``study_images`` images (``None``:
    :data:`paperlib.protocol.STUDY_IMAGES`), and the ROAD study on the first ``road_images``
    images (``None``: :data:`paperlib.protocol.ROAD_IMAGES`; 0: no ROAD study), of ``settings``'
    images. Every process of a ``torchrun`` job calls it (the runs are sharded like the
    evaluation's)."""
    for name, value in (("untrained_seeds", untrained_seeds), ("road_images", road_images)):
        if value is not None and (isinstance(value, bool) or not isinstance(value, int)
                                  or value < 0):
            raise ValueError(f"{name} must be a count >= 0 or None, got {value!r}")
    sweep = None
    if untrained_seeds != 0:
        sweep = protocol.run_seed_sweep(black_box, dataset, settings, seeds=untrained_seeds,
                                        results_root=results_root, progress=progress,
                                        n_images=study_images)
    rows = (protocol.run_protocol(black_box, dataset, settings, results_root=results_root,
                                  progress=progress, n_images=study_images)
            if protocol_study else None)
    road = (protocol.run_road(black_box, dataset, settings, n_images=road_images,
                              results_root=results_root, progress=progress)
            if road_images != 0 else None)
    return Studies(sweep, rows, road)


@dataclass
class Outputs:
    """What :func:`write_evaluation` wrote: the tables by file stem (``"table3"``, ...), every
    path, and the other records (for a notebook to display)."""

    tables: dict[str, pd.DataFrame] = field(default_factory=dict)
    paths: list[Path] = field(default_factory=list)
    scale_verdict: str | None = None
    speed: dict[str, float] | None = None
    split: dict[str, Any] | None = None
    claims_figure: plt.Figure | None = None

    def table(self, stem: str, frame: pd.DataFrame, out: Path, caption: str,
              display: pd.DataFrame | None = None) -> None:
        self.tables[stem] = frame
        self.paths += tables.write_table(frame, out / stem, caption=caption, display=display)

    def text(self, path: Path, text: str) -> None:
        atomic_write_text(path, text)
        self.paths.append(path)


def _table3(ev: Evaluation, out: Path, where: str, written: Outputs) -> None:
    s = ev.settings
    t3 = tables.table3(ev.frame, list(s.methods), seed=s.seed)
    written.table("table3", t3, out, f"Table 3 (kit): {where}; 95% bootstrap intervals")


def _table4(ev: Evaluation, out: Path, where: str, written: Outputs) -> pd.DataFrame:
    s = ev.settings
    t4 = tables.table4(ev.frame, list(s.methods), s.metrics.fractions, seed=s.seed)
    written.table("table4", t4, out,
                  f"Table 4 (kit): top-k% kept, {where}; 95% bootstrap intervals")
    trend = tables.trend_check(t4, s.metrics.fractions)
    if len(trend):
        written.table("table4_trend", trend, out,
                      "Grad-CAM: each read-out against the paper's Table 4 row",
                      display=trend.round(3))
    return t4


def _table4_scale(t4: pd.DataFrame, ev: Evaluation, out: Path, where: str,
                  written: Outputs) -> None:
    scale = tables.table4_scale(t4, ev.settings.metrics.fractions)
    if len(scale):
        written.table("table4_scale", scale, out,
                      f"Table 4: each read-out against the paper's rows, by scale; {where}",
                      display=scale.round(3))
    written.scale_verdict = tables.scale_verdict(scale)
    written.text(out / "table4_scale_verdict.txt", written.scale_verdict + "\n")


def _curves(ev: Evaluation, out: Path, where: str, written: Outputs) -> None:
    s = ev.settings
    if s.metrics.curve_steps:
        tc = tables.curves_table(ev.frame, list(s.methods), seed=s.seed)
        written.table("deletion_insertion", tc, out,
                      f"Deletion AUC (lower is better), insertion AUC (higher is better); {where}")


def _readouts(ev: Evaluation, out: Path, where: str, written: Outputs) -> None:
    s = ev.settings
    facts = readout_facts(s.metrics)
    written.text(out / READOUTS_FILE, json.dumps({"readouts": facts}, indent=1) + "\n")
    for r in facts:
        if not r["kit"]:
            frame = tables.readout_table(ev.frame, list(s.methods), r["name"], s.metrics,
                                         seed=s.seed)
            written.table(readout_table_name(r["name"]), frame, out,
                          f"{r['label']}: {where}; 95% bootstrap intervals")


def _claims(ev: Evaluation, out: Path, where: str, figures: Path | None,
            written: Outputs) -> None:
    columns = [c for c in tables.CLAIMS if c in ev.frame.columns]
    wt = tables.wilcoxon_table(ev.frame, paper_baselines(), variants(), columns=columns)
    if not len(wt):
        return
    written.table("wilcoxon", wt, out, f"Paired Wilcoxon tests; {where}", display=wt.round(4))
    claims = tables.claim_check(wt)
    written.table("claims", claims, out, f"The paper's claims, variant vs baseline; {where}",
                  display=claims.round(4))
    if figures is not None:
        fig = plots.claims_heatmap(claims)
        written.paths += plots.save(fig, "claims_heatmap", figures)
        plt.close(fig)
        written.claims_figure = fig


def _controls(ev: Evaluation, out: Path, where: str, written: Outputs) -> None:
    methods = list(ev.settings.methods)
    controls = [m for m in methods if m in control_methods()]
    others = [m for m in methods if m not in controls]
    if not controls or not others:
        return
    check = tables.control_check(ev.frame, others, controls)
    written.table("controls", check, out,
                  f"Each method against the control maps (best control per metric); {where}",
                  display=check.round(4))


def _agreement(ev: Evaluation, out: Path, where: str, figures: Path | None,
               written: Outputs) -> None:
    methods = [m for m in ev.settings.methods if m in set(ev.frame["method"])]
    metrics = tables.verdict_metrics(list(ev.frame.columns))
    if len(methods) < 3 or len(metrics) < 2:
        return
    directions = {c: d for c, (_, d) in metrics.items()}
    labels = {c: label for c, (label, _) in metrics.items()}
    seed = ev.settings.seed
    tau = agreement.metric_agreement(ev.frame, methods, directions, seed=seed)
    reliability = agreement.split_half_reliability(ev.frame, methods, directions, seed=seed)
    written.table("metric_agreement", tau, out,
                  f"Kendall tau-b between the metrics' rankings of {len(methods)} methods, 95% "
                  f"image-bootstrap intervals; {where}", display=tau.round(3))
    written.table("metric_reliability", reliability, out,
                  f"Split-half reliability of each metric's method ranking; {where}",
                  display=reliability.round(3))
    sentence = agreement.agreement_sentence(agreement.agreement_facts(tau, reliability), labels)
    written.text(out / "metric_agreement.txt", sentence + "\n")
    if figures is not None:
        fig = agreement.agreement_heatmap(tau, labels)
        written.paths += plots.save(fig, "metric_agreement", figures)


def _calibration(ev: Evaluation, out: Path, where: str, studies: Studies | None,
                 written: Outputs) -> None:
    s = ev.settings
    main = ev.frame if (s.metrics.fill, s.target) == calibration.MAIN_PROTOCOL else None
    rows = studies.protocol if studies is not None else None
    kit = calibration.kit_cells(main, rows)
    table = calibration.calibration_table(literature.literature_cells(), kit,
                                          kit_model=ev.model)
    written.table("calibration", table, out,
                  f"Other papers' published cells beside the kit's (matching protocol; the "
                  f"black box differs); {where}", display=table.round(2))


def _power(ev: Evaluation, out: Path, where: str, written: Outputs) -> None:
    methods = list(ev.settings.methods)
    pw = power.power_table(ev.frame, paper_baselines(), variants(),
                           {m: tables.paper_column(m) for m in methods})
    if len(pw):
        written.table("power", pw, out, f"Power ({pw.attrs['method']}); {where}",
                      display=pw.round(3))


def _run_records(ev: Evaluation, out: Path, written: Outputs) -> None:
    written.speed = ev.speed()
    written.text(out / "eval_speed.json", json.dumps(written.speed, indent=1) + "\n")
    written.split = split_record(ev.settings.split, list(ev.frame["file"].unique()))
    written.text(out / "eval_split.json", json.dumps(written.split, indent=1) + "\n")


def _studies(studies: Studies, out: Path, where: str, written: Outputs) -> None:
    if studies.seed_sweep is not None:
        sweep = protocol.seed_sweep_table(studies.seed_sweep)
        written.table("untrained_seeds", sweep, out,
                      f"attention-untrained over {sweep['seeds'].max()} seeds vs Grad-CAM; "
                      f"{where}", display=sweep.round(3))
    if studies.protocol is not None:
        means, claims = protocol.protocol_table(studies.protocol, paper_baselines(), variants())
        written.table("protocol", means, out,
                      f"Table 3 and top-20% Average Drop per protocol; {where}",
                      display=means.round(3))
        if len(claims):
            changes = protocol.protocol_verdicts(claims)
            written.table("protocol_verdicts", changes, out,
                          "Claim-check verdicts per protocol (target/fill)", display=changes)
    if studies.road is not None and len(studies.road):
        road, against = protocol.road_table(studies.road)
        n = studies.road["file"].nunique()
        written.table("road", road, out,
                      f"ROAD (Rong et al. 2022; {len(protocol.ROAD_PERCENTILES)} percentages "
                      f"removed, noisy linear imputation), {n} images; 95% bootstrap intervals; "
                      f"{where}")
        if len(against):
            written.table("road_controls", against, out,
                          f"ROAD: each method against the control maps, {n} images; {where}",
                          display=against.round(4))


def write_evaluation(evaluation: Evaluation, out: str | Path, where: str, *,
                     figures: str | Path | None = None, studies: Studies | None = None,
                     groups: Sequence[str] = GROUPS) -> Outputs:
    """Write ``evaluation``'s files into ``out`` (created if missing) and return them.

    ``where`` ends every caption (black box, images, protocol). ``figures``: the folder for the
    claims heat map (``None``: no figure). ``studies``: rows from :func:`run_studies` (their
    tables are written after the evaluation's). ``groups``: the file groups to write (see the
    module docstring), default every one.
    """
    unknown = [g for g in groups if g not in GROUPS]
    if unknown:
        raise ValueError(f"unknown output group(s) {unknown}; expected some of {list(GROUPS)}")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    figures = Path(figures) if figures is not None else None
    if figures is not None:
        figures.mkdir(parents=True, exist_ok=True)
    written = Outputs()
    if "table3" in groups:
        _table3(evaluation, out, where, written)
    if "table4" in groups or "table4_scale" in groups:
        s = evaluation.settings
        t4 = (_table4(evaluation, out, where, written) if "table4" in groups else
              tables.table4(evaluation.frame, list(s.methods), s.metrics.fractions, seed=s.seed))
        if "table4_scale" in groups:
            _table4_scale(t4, evaluation, out, where, written)
    if "curves" in groups:
        _curves(evaluation, out, where, written)
    if "readouts" in groups:
        _readouts(evaluation, out, where, written)
    if "claims" in groups:
        _claims(evaluation, out, where, figures, written)
    if "controls" in groups:
        _controls(evaluation, out, where, written)
    if "agreement" in groups:
        _agreement(evaluation, out, where, figures, written)
    if "calibration" in groups:
        _calibration(evaluation, out, where, studies, written)
    if "power" in groups:
        _power(evaluation, out, where, written)
    if "run" in groups:
        _run_records(evaluation, out, written)
    if studies is not None:
        _studies(studies, out, where, written)
    written.paths.append(manifest.settle(out, evaluation.run_key, Path(evaluation.store),
                                         evaluation.settings.describe(), written.paths))
    return written
