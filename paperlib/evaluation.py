"""The evaluation run behind Tables 3 and 4: explain, mask, score, cache -- batch by batch.

:func:`run_evaluation` walks the dataset in batches. Per batch: one :func:`paperlib.explain` call
gives every method's maps; :func:`paperlib.metrics.evaluate_batch` scores them; the per-image rows
and the batch's timings go to the :class:`paperlib.results.ResultsCache` before the next batch
starts. A rerun with the same settings resumes where the last one stopped.

The speed floor is measured in the same run, on every batch: a plain ``torch.no_grad()`` forward
of ``chunk_size`` of the batch's images (best of three). The evaluation's cost is reported as
``metric seconds / (metric forwards x floor seconds per image)``.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from .attention import ATTENTION_METHODS, checkpoint_path
from .cam import ExplainOptions, explain
from .data import ImageDataset
from .metrics import MetricConfig, evaluate_batch
from .models import BlackBox
from .paths import PACKAGE_DIR, results_dir
from .perf import clock
from .results import ResultsCache, fingerprint

__all__ = ["ALL_METHODS", "PAPER_BASELINES", "EvalSettings", "Evaluation", "measure_floor",
           "run_evaluation"]

#: The paper's four baselines.
PAPER_BASELINES = ("gradcam", "gradcampp", "smoothgradcampp", "xgradcam")
#: Every method of Tables 3-4: the baselines, the paper's method (three variants), and beyond.
ALL_METHODS = PAPER_BASELINES + ATTENTION_METHODS + ("scorecam", "layercam", "hirescam")


@dataclass
class EvalSettings:
    """Everything that determines the numbers (it names the cache) -- plus batch sizes, which don't.

    Defaults are the ones ``make reproduce`` uses on the CPU (see the README for their cost).
    """

    methods: tuple[str, ...] = ALL_METHODS
    split: str = "eval"
    n_images: int | None = None
    seed: int = 0
    target: str = "predicted"           # or "label" (ground truth)
    fill: str = "black"
    fractions: tuple[int, ...] = (5, 10, 20, 25, 50)
    curve_steps: int = 16
    smooth_samples: int = 8
    smooth_sigma: float = 0.15
    scorecam_channels: int | None = 64
    per_image_steps: int = 10
    per_image_lr: float = 0.01
    batch_size: int = 16                # not part of the cache key
    chunk_size: int = 16                # not part of the cache key

    def __post_init__(self) -> None:
        self.methods = tuple(self.methods)
        self.fractions = tuple(self.fractions)
        if self.target not in ("predicted", "label"):
            raise ValueError(f"target must be 'predicted' or 'label', got {self.target!r}")
        MetricConfig(self.fill, self.fractions, self.curve_steps)  # validates

    def key(self) -> dict[str, Any]:
        d = asdict(self)
        d.pop("batch_size")
        d.pop("chunk_size")
        return d

    def explain_options(self) -> ExplainOptions:
        return ExplainOptions(smooth_samples=self.smooth_samples, smooth_sigma=self.smooth_sigma,
                              scorecam_channels=self.scorecam_channels, seed=self.seed,
                              chunk_size=self.chunk_size,
                              attention={"steps": self.per_image_steps, "lr": self.per_image_lr})

    def metric_config(self) -> MetricConfig:
        return MetricConfig(self.fill, self.fractions, self.curve_steps, self.chunk_size)


@dataclass
class Evaluation:
    """Per-image rows of a finished (or resumed) run, its batch records and settings."""

    frame: pd.DataFrame
    batches: list[dict[str, Any]]
    settings: EvalSettings
    cache_dir: Path
    model: str
    skipped: list[tuple[str, str]] = field(default_factory=list)

    def speed(self) -> dict[str, float]:
        """Totals over the run: metric forwards, their time against the floor, per-method time."""
        b = self.batches
        n = sum(x["n_images"] for x in b)
        forwards = sum(x["metric_forwards"] for x in b)
        seconds = sum(x["metric_seconds"] for x in b)
        floor = sum(x["metric_forwards"] * x["floor_seconds_per_image"] for x in b)
        out = {"images": n, "metric_forwards": forwards, "metric_seconds": seconds,
               "floor_seconds": floor, "ratio_to_floor": seconds / floor if floor else float("nan"),
               "floor_ms_per_image": 1000 * floor / forwards if forwards else float("nan")}
        for m in self.settings.methods:
            out[f"explain_ms_per_image[{m}]"] = 1000 * sum(x["method_seconds"][m] for x in b) / n
            out[f"extra_forwards_per_image[{m}]"] = sum(x["method_forwards"][m] for x in b) / n
        out["explain_ms_per_image[shared pass]"] = 1000 * sum(x["pass_seconds"] for x in b) / n
        return out


@torch.no_grad()
def measure_floor(black_box: BlackBox, images: torch.Tensor, chunk_size: int,
                  repeats: int = 3) -> float:
    """Seconds per image of one plain ``no_grad`` forward of ``chunk_size`` images (best of n)."""
    x = images[:chunk_size]
    if x.shape[0] < chunk_size:  # same batch shape as the metric forwards
        x = x.repeat((chunk_size + x.shape[0] - 1) // x.shape[0], 1, 1, 1)[:chunk_size]
    best = float("inf")
    for _ in range(repeats):
        start = clock(black_box.device)
        black_box.model(x)
        best = min(best, clock(black_box.device) - start)
    return best / chunk_size


def _rows(files: list[str], labels: np.ndarray, scores, flat: dict[str, torch.Tensor],
          settings: EvalSettings) -> list[dict[str, Any]]:
    rows = []
    Y = scores.Y
    for m, r in scores.per_method.items():
        for b, file in enumerate(files):
            row: dict[str, Any] = {"file": file, "label": int(labels[b]),
                                   "target": int(scores.target[b]), "method": m, "Y": Y[b],
                                   "flat_map": bool(flat[m][b])}
            for key in ["O_soft"] + [f"O_top{k}" for k in settings.fractions]:
                tag = key[2:]
                O = r[key][b]
                row[key] = O
                row[f"drop_{tag}"] = max(0.0, Y[b] - O) / Y[b] * 100.0
                row[f"increase_{tag}"] = 100.0 * float(Y[b] < O)
            for k in settings.fractions:
                row[f"agree_top{k}"] = 100.0 * r[f"agree_top{k}"][b]
            row["deletion_auc"] = r["deletion_auc"][b]
            row["insertion_auc"] = r["insertion_auc"][b]
            for t, v in enumerate(r["deletion"][b]):
                row[f"del_{t}"] = v
            for t, v in enumerate(r["insertion"][b]):
                row[f"ins_{t}"] = v
            rows.append(row)
    return rows


def run_evaluation(black_box: BlackBox, dataset: ImageDataset, settings: EvalSettings,
                   results_root: str | Path | None = None, progress: bool = True,
                   name: str = "eval", max_batches: int | None = None) -> Evaluation:
    """Evaluate ``settings.methods`` on ``settings.split`` / ``n_images`` of ``dataset``, resuming.

    ``max_batches`` stops after that many new batches (for tests of resumption); the cache keeps
    what was finished.
    """
    subset = dataset.split(settings.split).subset(settings.n_images)
    code = [PACKAGE_DIR / f for f in ("models.py", "data.py", "hooks.py", "cam.py",
                                      "attention.py", "metrics.py", "evaluation.py")]
    key = {"model": black_box.name, "target_layer": black_box.target_layer_name,
           "weights": black_box.weights, "data": str(Path(dataset.root).resolve()),
           "n_listed": len(subset), "code": fingerprint(code + [checkpoint_path(black_box)]),
           **settings.key()}
    cache = ResultsCache(Path(results_dir(results_root)) / "cache", name, key)
    options, mconfig = settings.explain_options(), settings.metric_config()
    new_batches = 0
    for batch in cache.pending(subset, black_box.preprocess, settings.batch_size,
                               black_box.device, f"{black_box.name}: evaluating", progress):
        if max_batches is not None and new_batches >= max_batches:
            break
        targets = batch.labels if settings.target == "label" else None
        ex = explain(black_box, batch.images, settings.methods, targets=targets, options=options)
        floor = measure_floor(black_box, batch.images, settings.chunk_size)
        start = clock(black_box.device)
        scores = evaluate_batch(black_box, batch.images, dict(ex), ex.targets, mconfig,
                                clean_logits=ex.logits)
        metric_seconds = clock(black_box.device) - start
        flat = {m: ex.flat_images[m].cpu().numpy() for m in settings.methods}
        rows = _rows(batch.files, batch.labels.cpu().numpy(), scores, flat, settings)
        stats = {"n_images": len(batch), "files": batch.files, "pass_seconds": ex.seconds["pass"],
                 "method_seconds": {m: ex.seconds[m] for m in settings.methods},
                 "method_forwards": ex.forwards, "metric_seconds": metric_seconds,
                 "metric_forwards": scores.forwards, "floor_seconds_per_image": floor,
                 "device": str(black_box.device), "threads": torch.get_num_threads(),
                 "time": time.strftime("%Y-%m-%d %H:%M:%S")}
        cache.write_batch(rows, stats)
        new_batches += 1
    return Evaluation(cache.load(), cache.batch_stats(), settings, cache.dir, black_box.name,
                      list(subset.report.skipped))

