"""Training the ``attention-trained`` module: classifier frozen, its own prediction as target.

Data: the training split only (:data:`paperlib.data.SPLITS`: class index = 0 mod 4 on the sample
data). Evaluation images (class index = 2 mod 4) are never read here.

Choosing l_area and l_tv on the training split only: the training images are divided into a fit
part and a held-out part (every fifth image, in file order). Each (l_area, l_tv) of the grid is
trained on the fit part; the held-out criterion is the mean target probability when only the top
10, 25 and 50% of the map are kept (black fill) -- a fixed-area faithfulness score that, unlike the
objective, does not depend on the l's. The best candidate's module is the checkpoint.

Everything is seeded: the same seed, data and grid give the same checkpoint.

CLI: ``paperlib-train-attention --model efficientnet_lite0`` (``--help`` for the options).
"""

from __future__ import annotations

import argparse
import time
from dataclasses import asdict, dataclass, field

import torch

from .attention import (
    AttentionModule,
    attention_objective,
    checkpoint_path,
    differentiable_map,
    save_checkpoint,
)
from .cam import gradient_pass
from .data import ImageDataset, iter_batches, load_images
from .hooks import eval_mode, frozen_parameters
from .masking import keep_top, masked_inputs, n_pixels, pixel_ranks
from .metrics import score_inputs
from .models import BlackBox, load_model

__all__ = ["TrainConfig", "TrainingData", "prepare", "train_module", "train_attention", "main"]


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
    record = {
        "model": black_box.name, "target_layer": black_box.target_layer_name,
        "channels": module.channels, "reduction": module.reduction,
        "l_area": l_area, "l_tv": l_tv, "config": asdict(config),
        "split": "train (class index = 0 mod 4)", "n_fit": len(fit), "n_heldout": len(heldout),
        "fit_files": fit_data.files, "heldout_files": heldout_data.files,
        "candidates": candidates, "seconds": round(time.time() - started, 1),
        "torch": torch.__version__,
    }
    if save:
        save_checkpoint(module, checkpoint_path(black_box), record)
    return module, record


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="efficientnet_lite0")
    parser.add_argument("--data-dir", default=None, help="images (default: $PAPERLIB_DATA)")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--epochs", type=int, default=TrainConfig.epochs)
    parser.add_argument("--seed", type=int, default=TrainConfig.seed)
    parser.add_argument("--n-images", type=int, default=None,
                        help="use only this many training images (for a quick try)")
    args = parser.parse_args(argv)
    bb = load_model(args.model, device=args.device)
    dataset = load_images(args.data_dir).split("train").subset(args.n_images)
    print(f"training the attention module of {bb.name} ({bb.target_layer_name}) on "
          f"{len(dataset)} training-split images", flush=True)
    _, record = train_attention(bb, dataset, TrainConfig(epochs=args.epochs, seed=args.seed))
    print(f"chose l_area={record['l_area']} l_tv={record['l_tv']}; saved "
          f"{checkpoint_path(bb)} ({record['seconds']} s)")
    if dataset.report.n_skipped:
        print(dataset.report.summary())


if __name__ == "__main__":
    main()
