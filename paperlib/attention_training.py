"""Training the ``attention-trained`` module: classifier frozen, its own prediction as target.

Data: the training split only (:data:`paperlib.data.SPLITS`: class index = 0 mod 4 on the sample
data). Evaluation images (class index = 2 mod 4) are never read here.

Choosing l_area and l_tv on the training split only: the training images are divided into a fit
part and a held-out part (every fifth image, in file order). Each (l_area, l_tv) of the grid is
trained on the fit part; the held-out criterion is the mean target probability when only the top
10, 25 and 50% of the map are kept (black fill) -- a fixed-area faithfulness score that, unlike the
objective, does not depend on the l's. The best candidate's module is the checkpoint.

Everything is seeded: the same seed, data and grid give the same checkpoint.

Each checkpoint's record also stores the trained module's saliency (at the layer's resolution)
for the first :data:`REFERENCE_IMAGES` held-out images, so that a test can check that the committed
file still reproduces the maps it made (:func:`reference_saliency`).

A black box or layer without a checkpoint is trained on demand by :func:`ensure_trained` (``make
reproduce``, the claim matrix), with a message saying so and roughly how long it takes.

CLI: ``paperlib train-attention --model efficientnet_lite0 [--target-layer blocks.6]``
(``--help`` for the options; declared in :mod:`paperlib.cli`).
"""

from __future__ import annotations

import argparse
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch

from .attention import (
    AttentionModule,
    attention_objective,
    checkpoint_path,
    differentiable_map,
    save_checkpoint,
)
from .blackbox import BlackBox
from .cam import gradient_pass
from .data import SPLITS, ImageDataset, iter_batches, load_images
from .hooks import eval_mode, frozen_parameters
from .masking import keep_top, masked_inputs, n_pixels, pixel_ranks
from .metrics import score_inputs
from .models import load_model

__all__ = ["TrainConfig", "TrainingData", "prepare", "train_module", "train_attention",
           "reference_saliency", "estimate_seconds", "ensure_trained", "main"]

#: Held-out images whose trained saliency a checkpoint's record keeps (the regression reference).
REFERENCE_IMAGES = 2
#: Training cost in plain forwards of the black box per training-split image, measured on the
#: committed Lite0 checkpoint (722 s for 250 images at 8.0 ms per image forward on the 2-core
#: CPU: ~360): 8 candidates x 6 epochs of forward + backward, and the held-out criterion.
FORWARDS_PER_TRAINING_IMAGE = 360


@dataclass
class TrainConfig:
    """Everything that determines a checkpoint (saved beside it)."""

    epochs: int = 6
    batch_size: int = 8
    lr: float = 0.01
    reduction: int = 16
    seed: int = 0
    grid_l_area: tuple[float, ...] = (1.0, 2.0, 4.0, 8.0)
    grid_l_tv: tuple[float, ...] = (0.0, 1000.0)  # TV of a bilinear 224-px map is ~1e-4
    holdout_every: int = 5
    criterion_fractions: tuple[int, ...] = (10, 25, 50)


@dataclass
class TrainingData:
    """Images, the classifier's predictions and Grad-CAM's terms F for the training split."""

    images: torch.Tensor
    targets: torch.Tensor
    terms: torch.Tensor
    files: list[str] = field(default_factory=list)

    def part(self, idx: list[int]) -> TrainingData:
        return TrainingData(self.images[idx], self.targets[idx], self.terms[idx],
                            [self.files[i] for i in idx])


def prepare(black_box: BlackBox, dataset: ImageDataset, batch_size: int = 16) -> TrainingData:
    """One gradient pass per batch: predictions (the targets) and F = w_k A_k, kept in memory."""
    images, targets, terms, files = [], [], [], []
    for batch in iter_batches(dataset, black_box.preprocess, batch_size, device=black_box.device):
        p = gradient_pass(black_box, batch.images)
        images.append(p.images)
        targets.append(p.targets)
        terms.append(p.gradcam_terms)
        files += batch.files
    return TrainingData(torch.cat(images), torch.cat(targets), torch.cat(terms), files)


def heldout_criterion(black_box: BlackBox, module: AttentionModule, data: TrainingData,
                      fractions: tuple[int, ...], batch_size: int = 16) -> float:
    """Mean target probability keeping the top k% of the map, averaged over ``fractions``."""
    scores = []
    with torch.no_grad():
        for start in range(0, len(data.targets), batch_size):
            sl = slice(start, start + batch_size)
            x = data.images[sl]
            size = (int(x.shape[-2]), int(x.shape[-1]))
            maps = differentiable_map(module(data.terms[sl]).saliency, size)
            ranks = pixel_ranks(maps)
            for k in fractions:
                mask = keep_top(ranks, n_pixels(k, ranks.shape[1]), size)
                prob, _ = score_inputs(black_box, masked_inputs(x, mask), data.targets[sl])
                scores.append(prob.cpu())
    return float(torch.cat(scores).mean())


def train_module(black_box: BlackBox, data: TrainingData, l_area: float, l_tv: float,
                 config: TrainConfig, progress: bool = False) -> tuple[AttentionModule, list[dict]]:
    """Adam on the objective over ``data`` for ``config.epochs`` epochs; returns module and
    history."""
    torch.manual_seed(config.seed)
    module = AttentionModule(data.terms.shape[1], config.reduction).to(black_box.device)
    opt = torch.optim.Adam(module.parameters(), lr=config.lr)
    gen = torch.Generator().manual_seed(config.seed)
    n = len(data.targets)
    size = (int(data.images.shape[-2]), int(data.images.shape[-1]))
    history = []
    # the classifier is never trained: its parameters frozen, eval mode (restored after)
    with frozen_parameters(black_box.model), eval_mode(black_box.model):
        for epoch in range(config.epochs):
            order = torch.randperm(n, generator=gen).tolist()
            sums = {"loss": 0.0, "ce": 0.0, "area": 0.0, "tv": 0.0}
            for start in range(0, n, config.batch_size):
                idx = order[start: start + config.batch_size]
                opt.zero_grad(set_to_none=True)
                maps = differentiable_map(module(data.terms[idx]).saliency, size)
                loss, parts = attention_objective(black_box, data.images[idx], maps,
                                                  data.targets[idx], l_area, l_tv)
                loss.mean().backward()
                opt.step()
                sums["loss"] += float(loss.detach().sum())
                for key, value in parts.items():
                    sums[key] += float(value.detach().sum())
            record = {"epoch": epoch + 1, **{k: v / n for k, v in sums.items()}}
            history.append(record)
            if progress:
                print(f"  l_area={l_area} l_tv={l_tv} epoch {epoch + 1}: "
                      + " ".join(f"{k}={v:.4f}" for k, v in record.items() if k != "epoch"),
                      flush=True)
    return module.eval(), history


def train_attention(black_box: BlackBox, dataset: ImageDataset, config: TrainConfig | None = None,
                    save: bool = True, progress: bool = True) -> tuple[AttentionModule, dict]:
    """Grid over (l_area, l_tv) on the fit part, choose on the held-out part, save the best."""
    config = config or TrainConfig()
    started = time.time()
    data = prepare(black_box, dataset)
    heldout = [i for i in range(len(data.targets)) if i % config.holdout_every == 0]
    fit = [i for i in range(len(data.targets)) if i % config.holdout_every != 0]
    fit_data, heldout_data = data.part(fit), data.part(heldout)
    candidates = []
    best = None
    for l_area in config.grid_l_area:
        for l_tv in config.grid_l_tv:
            module, history = train_module(black_box, fit_data, l_area, l_tv, config, progress)
            score = heldout_criterion(black_box, module, heldout_data, config.criterion_fractions)
            candidates.append({"l_area": l_area, "l_tv": l_tv, "heldout_criterion": score,
                               "history": history})
            if progress:
                print(f"l_area={l_area} l_tv={l_tv}: held-out criterion {score:.4f}", flush=True)
            if best is None or score > best[0]:
                best = (score, module, l_area, l_tv)
    assert best is not None
    _, module, l_area, l_tv = best
    mod, rest = SPLITS["train"]
    ref = list(range(min(REFERENCE_IMAGES, len(heldout_data.targets))))
    with torch.no_grad():
        saliency = module(heldout_data.terms[ref]).saliency
    record = {
        "model": black_box.name, "target_layer": black_box.target_layer_name,
        "channels": module.channels, "reduction": module.reduction,
        "l_area": l_area, "l_tv": l_tv, "config": asdict(config),
        "split": f"train (class index = {rest} mod {mod})", "n_fit": len(fit),
        "n_heldout": len(heldout),
        "reference": {"files": [heldout_data.files[i] for i in ref],
                      "saliency": [[round(float(v), 7) for v in m.flatten()] for m in saliency]},
        "fit_files": fit_data.files, "heldout_files": heldout_data.files,
        "candidates": candidates, "seconds": round(time.time() - started, 1),
        "torch": torch.__version__,
    }
    if save:
        save_checkpoint(module, checkpoint_path(black_box), record)
    return module, record


def reference_saliency(black_box: BlackBox, dataset: ImageDataset, files: list[str],
                       module: AttentionModule) -> torch.Tensor:
    """The module's saliency (B, h, w) for the named files of ``dataset`` (the images a record's
    ``reference`` holds), computed afresh."""
    subset = dataset.subset_files(files)
    batch = next(iter_batches(subset, black_box.preprocess, len(files), device=black_box.device))
    with torch.no_grad():
        return module(gradient_pass(black_box, batch.images).gradcam_terms).saliency


def estimate_seconds(black_box: BlackBox, n_images: int, batch_size: int = 8) -> float:
    """Rough training time on this machine: one timed forward of ``batch_size`` random images
    (after a warm-up) x :data:`FORWARDS_PER_TRAINING_IMAGE` x ``n_images``."""
    x = torch.rand(batch_size, 3, black_box.input_size, black_box.input_size,
                   device=black_box.device)
    with torch.no_grad():
        black_box.model(x)
        start = time.perf_counter()
        black_box.model(x)
        per_image = (time.perf_counter() - start) / batch_size
    return per_image * FORWARDS_PER_TRAINING_IMAGE * n_images


def ensure_trained(black_box: BlackBox, dataset: ImageDataset,
                   config: TrainConfig | None = None) -> Path:
    """The ``attention-trained`` checkpoint of this black box and target layer: the existing file,
    or one trained now on ``dataset``'s training split (with a message and a time estimate)."""
    path = checkpoint_path(black_box)
    if path.is_file():
        return path
    train = dataset.split("train")
    if not len(train):
        raise FileNotFoundError(f"no trained attention checkpoint at {path}, and no training-split "
                                f"image in {dataset.root} to train one on")
    minutes = estimate_seconds(black_box, len(train)) / 60
    print(f"no trained attention checkpoint for {black_box.name} at {black_box.target_layer_name}"
          f" ({path.name}): training one now on the {len(train)} training-split images "
          f"(roughly {minutes:.0f} min on this machine); it is saved and reused", flush=True)
    _, record = train_attention(black_box, train, config, progress=False)
    print(f"trained {path.name} in {record['seconds'] / 60:.1f} min (l_area={record['l_area']}, "
          f"l_tv={record['l_tv']})", flush=True)
    return path


def main(args: argparse.Namespace) -> int:
    """``paperlib train-attention`` with its parsed flags (None: :class:`TrainConfig`'s)."""
    bb = load_model(args.model, device=args.device, target_layer=args.target_layer)
    dataset = load_images(args.data_dir).split("train").subset(args.n_images)
    print(f"training the attention module of {bb.name} ({bb.target_layer_name}) on "
          f"{len(dataset)} training-split images", flush=True)
    given = {"epochs": args.epochs, "seed": args.seed}
    config = TrainConfig(**{k: v for k, v in given.items() if v is not None})
    _, record = train_attention(bb, dataset, config)
    print(f"chose l_area={record['l_area']} l_tv={record['l_tv']}; saved "
          f"{checkpoint_path(bb)} ({record['seconds']} s)")
    if dataset.report.n_skipped:
        print(dataset.report.summary())
    return 0
