"""The evaluation without a notebook: ``paperlib evaluate``, also under ``torchrun``.

It does what notebook 04 does -- open the black box and the images, run (or resume) the
evaluation and the two studies (the untrained module over seeds, the protocol sensitivity), and
write every file notebook 04 writes through the same writer,
:func:`paperlib.outputs.write_evaluation` (Tables 3 and 4 with the trend and scale checks,
deletion / insertion, the Wilcoxon tests, the claim check and its heat map, power, the studies'
tables, ``eval_speed.json``, ``eval_split.json``) -- from flat command-line parameters (the same
names as the notebooks' parameters, read by
:meth:`paperlib.evaluation.EvalSettings.from_parameters`; the flags are declared in
:mod:`paperlib.cli`)::

    paperlib evaluate --data-dir /data/imagenet/val --split all --n-images 2000 \\
        --methods gradcam xgradcam --out results/val2000

Several processes, one GPU each, on one or several machines (:mod:`paperlib.distributed`)::

    torchrun --nproc_per_node=8 -m paperlib evaluate --data-dir ... --out ...
    torchrun --nnodes=2 --node_rank=0 --nproc_per_node=8 --rdzv_backend=c10d \\
        --rdzv_endpoint=host0:29500 -m paperlib evaluate ...      # and node_rank=1 on host1

Rank r computes batches r, r + world, ... of the pending images (of the evaluation and of each
study run) into its own shard of the results store; rank 0 merges them and writes the files (the
claims heat map into the output folder too). A batch holds the same images whatever the
number of processes, so with the same threads per process (``--threads``; torchrun sets
``OMP_NUM_THREADS=1``) the tables are identical to a single process's, to the last digit. A
killed run (any rank) loses only the batches in flight: rerun the same command, on any number of
processes, and it resumes from every shard.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

from . import distributed, tables
from .data import load_images
from .evaluation import EvalSettings, Evaluation, run_evaluation
from .model_selection import chosen_model
from .models import load_model
from .outputs import run_studies, write_evaluation
from .paths import results_dir

__all__ = ["main"]


def _where(evaluation: Evaluation, data_root: Path) -> str:
    s = evaluation.settings
    n = evaluation.frame["file"].nunique()
    return (f"{evaluation.model}, {n} images of {data_root} (split {s.split}), "
            f"fill={s.metrics.fill}, target={s.target}")


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
        black_box = load_model(args.model or chosen_model(args.out), device=device,
                               target_layer=args.target_layer)
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
        studies = run_studies(black_box, dataset, settings, args.out,
                              untrained_seeds=args.untrained_seeds,
                              protocol_study=not args.no_protocol,
                              road_images=args.road_images, study_images=args.study_images,
                              progress=not args.no_progress and main_rank)
        if main_rank:
            out = results_dir(args.out)
            written = write_evaluation(evaluation, out,
                                       _where(evaluation, Path(dataset.root).resolve()),
                                       figures=out, studies=studies)
            paths = written.paths
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
