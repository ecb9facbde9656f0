"""The evaluation without a notebook: ``paperlib evaluate``, also under ``torchrun``.

It does what notebook 04 does for the paper's tables -- open the black box and the images, run
(or resume) the evaluation, write Table 3, Table 4 (and its trend check), deletion / insertion,
the paired Wilcoxon tests and the claim check with :mod:`paperlib.tables`, plus
``eval_speed.json`` and ``eval_split.json`` -- from flat command-line parameters (the same names
as the notebooks' parameters, read by :meth:`paperlib.evaluation.EvalSettings.from_parameters`;
the flags are declared in :mod:`paperlib.cli`)::

    paperlib evaluate --data-dir /data/imagenet/val --split all --n-images 2000 \\
        --methods gradcam xgradcam --out results/val2000

Several processes, one GPU each, on one or several machines (:mod:`paperlib.distributed`)::

    torchrun --nproc_per_node=8 -m paperlib evaluate --data-dir ... --out ...
    torchrun --nnodes=2 --node_rank=0 --nproc_per_node=8 --rdzv_backend=c10d \\
        --rdzv_endpoint=host0:29500 -m paperlib evaluate ...      # and node_rank=1 on host1

Rank r computes batches r, r + world, ... of the pending images into its own shard of the results
store; rank 0 merges them and writes the tables. A batch holds the same images whatever the
number of processes, so with the same threads per process (``--threads``; torchrun sets
``OMP_NUM_THREADS=1``) the tables are identical to a single process's, to the last digit. A
killed run (any rank) loses only the batches in flight: rerun the same command, on any number of
processes, and it resumes from every shard.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

from . import distributed, tables
from .data import load_images
from .evaluation import EvalSettings, Evaluation, paper_baselines, run_evaluation, variants
from .model_selection import chosen_model
from .models import load_model
from .paths import results_dir

__all__ = ["main", "write_tables"]


def _where(evaluation: Evaluation, data_root: Path) -> str:
    s = evaluation.settings
    n = evaluation.frame["file"].nunique()
    return (f"{evaluation.model}, {n} images of {data_root} (split {s.split}), "
            f"fill={s.metrics.fill}, target={s.target}")


def write_tables(evaluation: Evaluation, out: str | Path, where: str) -> list[Path]:
    """Write the run's tables into ``out`` (as notebook 04 does) and return their paths:
    ``table3``, ``table4``, ``table4_trend``, ``deletion_insertion`` (when the run has curves),
    ``wilcoxon`` and ``claims`` (when it has a baseline and a variant) as CSV / Markdown / LaTeX;
    ``eval_speed.json`` and ``eval_split.json``."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    s, frame = evaluation.settings, evaluation.frame
    methods, fractions, seed = list(s.methods), s.metrics.fractions, s.seed
    paths: list[Path] = []
    t3 = tables.table3(frame, methods, seed=seed)
    paths += tables.write_table(t3, out / "table3",
                                caption=f"Table 3 (kit): {where}; 95% bootstrap intervals")
    t4 = tables.table4(frame, methods, fractions, seed=seed)
    paths += tables.write_table(t4, out / "table4", caption=f"Table 4 (kit): top-k% kept, "
                                                            f"{where}; 95% bootstrap intervals")
    trend = tables.trend_check(t4, fractions)
    if len(trend):
        paths += tables.write_table(trend, out / "table4_trend", display=trend.round(3),
                                    caption="Grad-CAM: each read-out against the paper's "
                                            "Table 4 row")
    if s.metrics.curve_steps:
        tc = tables.curves_table(frame, methods, seed=seed)
        paths += tables.write_table(tc, out / "deletion_insertion",
                                    caption="Deletion AUC (lower is better), insertion AUC "
                                            f"(higher is better); {where}")
    claims_columns = [c for c in tables.CLAIMS if c in frame.columns]
    wt = tables.wilcoxon_table(frame, paper_baselines(), variants(), columns=claims_columns)
    if len(wt):
        paths += tables.write_table(wt, out / "wilcoxon", display=wt.round(4),
                                    caption=f"Paired Wilcoxon tests; {where}")
        claims = tables.claim_check(wt)
        paths += tables.write_table(claims, out / "claims", display=claims.round(4),
                                    caption=f"The paper's claims, variant vs baseline; {where}")
    speed, split = out / "eval_speed.json", out / "eval_split.json"
    speed.write_text(json.dumps(evaluation.speed(), indent=1) + "\n")
    split.write_text(json.dumps({"split": s.split, "n_images": s.n_images,
                                 "store": str(evaluation.store), "run": evaluation.run_key,
                                 "files": sorted(frame["file"].unique())}, indent=1) + "\n")
    return [*paths, speed, split]


def main(args: argparse.Namespace) -> int:
    """``paperlib evaluate`` with its parsed flags (see the module docstring); 0 on success.

    The flags' names are the notebooks' parameters (``--target-mode`` is ``target``), except
    ``--model`` and ``--out`` (``model_name`` and ``output_dir`` there)."""
    params = {k: v for k, v in vars(args).items() if v is not None}
    distributed.init(args.device)
    try:
        device = distributed.device(args.device)
        if args.threads:
            torch.set_num_threads(args.threads)
        torch.manual_seed(args.seed)
        black_box = load_model(args.model or chosen_model(args.out), device=device)
        dataset = load_images(args.data_dir)
        settings = EvalSettings.from_parameters(params)
        main_rank = distributed.is_main()
        if main_rank:
            print(f"black box: {black_box.name} on {device}; {len(dataset)} images in "
                  f"{dataset.root} ({dataset.layout}); {distributed.world_size()} process(es)",
                  flush=True)
        evaluation = run_evaluation(black_box, dataset, settings, args.out,
                                    progress=not args.no_progress and main_rank,
                                    max_batches=args.max_batches, num_workers=args.workers)
        if main_rank:
            out = results_dir(args.out)
            paths = write_tables(evaluation, out, _where(evaluation,
                                                         Path(dataset.root).resolve()))
            speed = evaluation.speed()
            print(f"{speed['images']} images x {len(settings.methods)} methods "
                  f"({len(evaluation.frame)} rows, store {evaluation.store}, run "
                  f"{evaluation.run_key}); wrote {len(paths)} files to {out}")
            print(tables.formatted(tables.table3(evaluation.frame, settings.methods,
                                                 seed=settings.seed)).to_string(index=False))
        distributed.barrier()
    finally:
        distributed.shutdown()
    return 0
