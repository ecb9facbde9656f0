"""The evaluation without a notebook: ``python -m paperlib.evaluate``, also under ``torchrun``.

It does what notebook 04 does -- open the black box and the images, run (or resume) the
evaluation and the two studies (the untrained module over seeds, the protocol sensitivity), and
write every file notebook 04 writes through the same writer,
:func:`paperlib.outputs.write_evaluation` (Tables 3 and 4 with the trend and scale checks,
deletion / insertion, the Wilcoxon tests, the claim check and its heat map, power, the studies'
tables, ``eval_speed.json``, ``eval_split.json``) -- from flat command-line parameters (the same
names as the notebooks' parameters, read by
:meth:`paperlib.evaluation.EvalSettings.from_parameters`)::

    python -m paperlib.evaluate --data-dir /data/imagenet/val --split all --n-images 2000 \\
        --methods gradcam xgradcam --output-dir results/val2000

Several processes, one GPU each, on one or several machines (:mod:`paperlib.distributed`)::

    torchrun --nproc_per_node=8 -m paperlib.evaluate --data-dir ... --output-dir ...
    torchrun --nnodes=2 --node_rank=0 --nproc_per_node=8 --rdzv_backend=c10d \\
        --rdzv_endpoint=host0:29500 -m paperlib.evaluate ...      # and node_rank=1 on host1

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
import dataclasses
import sys
from collections.abc import Sequence
from pathlib import Path

import torch

from . import distributed, tables
from .cam import METHODS, add_option_arguments, option_type
from .data import load_images
from .evaluation import EvalSettings, Evaluation, run_evaluation
from .metrics import MetricConfig
from .model_selection import chosen_model
from .models import MODEL_NAMES, load_model
from .outputs import run_studies, write_evaluation
from .paths import results_dir

__all__ = ["build_parser", "main"]


def _n_images(text: str) -> int | None:
    if text.lower() in ("all", "none"):
        return None
    try:
        n = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"--n-images takes a positive integer or 'all', got "
                                         f"{text!r}") from None
    if n < 1:
        raise argparse.ArgumentTypeError(f"--n-images takes a positive integer or 'all', got {n}")
    return n


def _seeds(text: str) -> int:
    try:
        n = int(text)
    except ValueError:
        n = -1
    if n < 0:
        raise argparse.ArgumentTypeError(f"--untrained-seeds takes a count >= 0, got {text!r}")
    return n


def build_parser() -> argparse.ArgumentParser:
    """The command line: run settings, metric settings (every field of
    :class:`paperlib.metrics.MetricConfig`) and every registered method's options
    (``--smooth-samples``, ``--scorecam-channels``, ...; default: the method's own)."""
    p = argparse.ArgumentParser(
        prog="python -m paperlib.evaluate",
        description="Evaluate explanation methods and write the files notebook 04 writes (Tables "
                    "3 and 4, deletion/insertion, Wilcoxon tests, claim check, power, the "
                    "untrained-seed sweep, the protocol study). Runs as is under torchrun: each "
                    "process takes a share of the images.")
    p.add_argument("--data-dir", help="image folder (sample or imagenet-val layout); default "
                                      "$PAPERLIB_DATA, else data/imagenet-sample")
    p.add_argument("--output-dir", help="tables and the results store (cache/); default "
                                        "$PAPERLIB_RESULTS, else results/")
    p.add_argument("--model-name", choices=MODEL_NAMES,
                   help="black box; default: notebook 01's choice (results/chosen_model.json)")
    p.add_argument("--device", default="auto",
                   help="auto (CUDA when present), cpu, cuda; under torchrun cuda:$LOCAL_RANK")
    p.add_argument("--n-images", type=_n_images, default=None,
                   help="images of the split, spread evenly; 'all' (default) for every one")
    p.add_argument("--methods", nargs="+", choices=sorted(METHODS), default=None,
                   help="methods to evaluate; default: every registered method")
    p.add_argument("--split", default=None,
                   help="eval (default: class index 2 mod 4), train, or all (e.g. ImageNet val)")
    p.add_argument("--target", choices=("predicted", "label"), default=None,
                   help="explained class (default: predicted)")
    p.add_argument("--fill", default=None, help="removed pixels: black (default), mean, blur...")
    p.add_argument("--curve-steps", type=int, default=None,
                   help="deletion / insertion steps (0: no curves)")
    p.add_argument("--fractions", type=int, nargs="+", default=None,
                   help="Table 4's top-k%% masks (default: 5 10 20 25 50)")
    p.add_argument("--batch-size", type=int, default=None, help="images per batch")
    p.add_argument("--chunk-size", type=int, default=None,
                   help="images per forward of masked copies")
    p.add_argument("--seed", type=int, default=0, help="seeds torch and the methods")
    p.add_argument("--workers", type=int, default=None,
                   help="decoding processes per rank (default: 0 on CPU, up to 8 on CUDA)")
    p.add_argument("--threads", type=int, default=None,
                   help="torch threads per process (default: torch's; OMP_NUM_THREADS)")
    p.add_argument("--max-batches", type=int, default=None,
                   help="stop each process after this many new batches (the store keeps them)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--untrained-seeds", type=_seeds, default=None,
                   help="seeds of attention-untrained in the seed sweep (0: no sweep; default: "
                        "the kit's, paperlib.protocol.UNTRAINED_SEEDS)")
    p.add_argument("--no-protocol", action="store_true",
                   help="skip the protocol sensitivity study (fills x targets)")
    taken = {"seed", "chunk_size", "fill", "fractions", "curve_steps"}
    for f in dataclasses.fields(MetricConfig):    # e.g. --precision, --compile
        if f.name in taken:
            continue
        taken.add(f.name)
        value = getattr(MetricConfig(), f.name)
        p.add_argument("--" + f.name.replace("_", "-"), dest=f.name, type=option_type(value),
                       default=None, help=f"metric setting (default {value!r})")
    add_option_arguments(p, skip=taken)
    return p


def _where(evaluation: Evaluation, data_root: Path) -> str:
    s = evaluation.settings
    n = evaluation.frame["file"].nunique()
    return (f"{evaluation.model}, {n} images of {data_root} (split {s.split}), "
            f"fill={s.metrics.fill}, target={s.target}")


def main(argv: Sequence[str] | None = None) -> int:
    """Run the evaluation from the command line (see the module docstring); 0 on success."""
    args = build_parser().parse_args(argv)
    params = {k: v for k, v in vars(args).items() if v is not None}
    distributed.init(args.device)
    try:
        device = distributed.device(args.device)
        if args.threads:
            torch.set_num_threads(args.threads)
        torch.manual_seed(args.seed)
        black_box = load_model(args.model_name or chosen_model(args.output_dir), device=device)
        dataset = load_images(args.data_dir)
        settings = EvalSettings.from_parameters(params)
        main_rank = distributed.is_main()
        if main_rank:
            print(f"black box: {black_box.name} on {device}; {len(dataset)} images in "
                  f"{dataset.root} ({dataset.layout}); {distributed.world_size()} process(es)",
                  flush=True)
        evaluation = run_evaluation(black_box, dataset, settings, args.output_dir,
                                    progress=not args.no_progress and main_rank,
                                    max_batches=args.max_batches, num_workers=args.workers)
        studies = run_studies(black_box, dataset, settings, args.output_dir,
                              untrained_seeds=args.untrained_seeds,
                              protocol_study=not args.no_protocol,
                              progress=not args.no_progress and main_rank)
        if main_rank:
            out = results_dir(args.output_dir)
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


if __name__ == "__main__":
    sys.exit(main())
