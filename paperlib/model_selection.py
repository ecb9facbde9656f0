"""Table 2: top-1 / top-5 accuracy of every candidate black box, and the choice of one.

Per-image correctness goes through the results cache (a rerun does not recompute). Candidates
whose weights are not on this machine are listed as unavailable with the reason, never replaced by
a random network.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from scipy.stats import binomtest

from .atomic import atomic_write_text
from .blackbox import BlackBox, WeightsNotFoundError
from .data import ImageDataset, default_workers
from .evaluation import pending_batches
from .fingerprint import code_fingerprint
from .models import MODEL_NAMES, load_model
from .paper_reference import PAPER_TABLE2
from .paths import results_dir
from .runs import ResultsCache
from .stats import bootstrap_ci

__all__ = ["Candidate", "accuracy_rows", "choose_model", "chosen_model", "load_candidates",
           "mcnemar_exact", "record_choice", "table2"]

CHOICE_FILE = "chosen_model.json"


@dataclass
class Candidate:
    name: str
    black_box: BlackBox | None
    reason: str = ""

    @property
    def short_reason(self) -> str:
        """The reason without the machine-specific paths and instructions."""
        return short_reason(self.reason)


def short_reason(reason: str) -> str:
    return reason.split(". To use")[0].split(" (")[0].split(": ", 1)[-1]


def load_candidates(names: Sequence[str] | None = None, device: str = "auto",
                    download: bool | None = None) -> list[Candidate]:
    """Load each candidate (default: every black box of the zoo, :data:`paperlib.MODEL_NAMES`);
    one without weights here is kept with the reason it is unavailable."""
    out = []
    for name in (MODEL_NAMES if names is None else names):
        try:
            out.append(Candidate(name, load_model(name, device=device, download=download)))
        except WeightsNotFoundError as exc:
            out.append(Candidate(name, None, str(exc)))
    return out


def accuracy_rows(black_box: BlackBox, dataset: ImageDataset, batch_size: int = 32,
                  results_root: str | Path | None = None, progress: bool = True) -> pd.DataFrame:
    """Per image: label, top-1 prediction, top-1 and top-5 correctness (stored, resumable).

    The run's key holds the exact file list; under ``torchrun`` every rank scores its share of
    the batches and every rank returns all the rows (:class:`paperlib.runs.ResultsCache`).
    """
    key = {"model": black_box.name, "weights": black_box.weights,
           "data": str(Path(dataset.root).resolve()), "code": code_fingerprint()}
    with ResultsCache(Path(results_dir(results_root)) / "cache", "accuracy", key,
                      dataset=dataset) as cache:
        for batch in pending_batches(cache, dataset, black_box.preprocess, batch_size,
                                     black_box.device, f"{black_box.name}: accuracy", progress,
                                     num_workers=default_workers(black_box.device)):
            with torch.no_grad():
                top5 = black_box.model(batch.images).topk(5, dim=1).indices
            hits = top5 == batch.labels.view(-1, 1)
            # one copy to the host per batch, none per image
            top1, labels = top5[:, 0].tolist(), batch.labels.tolist()
            hit1, hit5 = hits[:, 0].tolist(), hits.any(dim=1).tolist()
            rows = [{"file": f, "model": black_box.name, "label": l, "pred": p, "top1": h1,
                     "top5": h5}
                    for f, l, p, h1, h5 in zip(batch.files, labels, top1, hit1, hit5)]
            cache.write_batch(rows, {"n_images": len(rows)})
        frame, _ = cache.gather()
    return frame


def table2(rows: dict[str, pd.DataFrame], unavailable: dict[str, str] | None = None,
           seed: int = 0) -> pd.DataFrame:
    """One row per candidate: accuracies in % with 95% bootstrap intervals, and the paper's
    Table 2 cells beside them where it has the model (``paper_mean_accuracy`` in %, its
    undefined "mean accuracy"; ``paper_top5_err`` in %)."""
    records = []
    for name, frame in rows.items():
        rec: dict = {"model": name, "n_images": len(frame), "available": True}
        for col, values in (("top1_acc", frame["top1"]), ("top5_acc", frame["top5"]),
                            ("top5_err", ~frame["top5"].astype(bool))):
            ci = bootstrap_ci(100.0 * np.asarray(values, dtype=float), seed=seed)
            rec[col], rec[f"{col}_lo"], rec[f"{col}_hi"] = ci.mean, ci.low, ci.high
        records.append(rec)
    for name, reason in (unavailable or {}).items():
        records.append({"model": name, "n_images": 0, "available": False,
                        "note": short_reason(reason)})
    for rec in records:
        paper = PAPER_TABLE2.get(rec["model"])
        rec["paper_mean_accuracy"] = 100 * paper["mean_accuracy"] if paper else None
        rec["paper_top5_err"] = paper["top5_error"] if paper else None
    return pd.DataFrame(records)


def mcnemar_exact(a: Sequence[bool], b: Sequence[bool]) -> float:
    """Exact (binomial) McNemar p-value for paired correctness of two classifiers on the same
    images: only the discordant images count; p = 1 when there are none."""
    x, y = np.asarray(a, dtype=bool), np.asarray(b, dtype=bool)
    only_a, only_b = int((x & ~y).sum()), int((~x & y).sum())
    if only_a + only_b == 0:
        return 1.0
    return float(binomtest(min(only_a, only_b), only_a + only_b, 0.5).pvalue)


def choose_model(rows: dict[str, pd.DataFrame], costs: dict[str, int], alpha: float = 0.05
                 ) -> dict:
    """The kit's choice rule: the most accurate candidate (top-1), unless a cheaper one (fewer
    parameters) is not significantly less accurate on the same images (exact McNemar test,
    p >= ``alpha``); then the cheapest such one. Returns the choice with its evidence."""
    acc = {m: float(np.mean(f.sort_values("file")["top1"])) for m, f in rows.items()}
    best = max(acc, key=lambda m: (acc[m], -costs[m]))
    best_rows = rows[best].sort_values("file")
    tests = {}
    for m, f in rows.items():
        f = f.sort_values("file")
        if list(f["file"]) != list(best_rows["file"]):
            raise ValueError(f"{m} and {best} were not scored on the same images")
        tests[m] = mcnemar_exact(best_rows["top1"], f["top1"]) if m != best else 1.0
    equivalent = [m for m in rows if tests[m] >= alpha and costs[m] <= costs[best]]
    choice = min(equivalent, key=lambda m: (costs[m], -acc[m]))
    return {"model": choice, "most_accurate": best,
            "top1_acc": {m: 100 * a for m, a in acc.items()},
            "mcnemar_p_vs_most_accurate": tests, "parameters": costs, "alpha": alpha,
            "rule": "most accurate top-1, unless a cheaper candidate is not significantly less "
                    "accurate (exact McNemar, p >= alpha): then the cheapest such candidate"}


def record_choice(choice: dict, results_root: str | Path | None = None) -> str:
    """Write the choice for the later notebooks (``results/chosen_model.json``)."""
    atomic_write_text(Path(results_dir(results_root)) / CHOICE_FILE,
                      json.dumps(choice, indent=2, sort_keys=True) + "\n")
    return choice["model"]


def chosen_model(results_root: str | Path | None = None, default: str = "efficientnet_lite0"
                 ) -> str:
    """The black box notebook 01 chose, or ``default`` when it has not run yet."""
    path = Path(results_dir(results_root)) / CHOICE_FILE
    if not path.is_file():
        return default
    return json.loads(path.read_text())["model"]
