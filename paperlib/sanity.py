"""Sanity check (Adebayo et al. 2018): cascading model-parameter randomisation.

Starting from the classifier's output and moving down, blocks are re-initialised one after
another (cumulatively). After each step every method explains the same images for the same
classes (the trained classifier's predictions) and its maps are compared with the trained
classifier's maps by Spearman rank correlation, per image. A faithful explanation should change a
lot once the layers it explains are random. A method whose maps barely change after the whole
cascade (mean Spearman above :data:`FLAG_THRESHOLD`) is flagged: a learned module may explain
itself instead of the classifier.

A randomised map that is constant has no ranking; its correlation is reported as 0 and counted.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import torch
from scipy.stats import rankdata

from . import plots
from .atomic import atomic_write_csv
from .blackbox import BlackBox
from .cam import ExplainOptions, explain
from .paths import results_dir
from .progress import progress as progress_bar
from .tables import write_table

__all__ = ["FLAG_THRESHOLD", "cascading_randomization", "randomized", "spearman_maps", "summarize",
           "write_sanity"]

FLAG_THRESHOLD = 0.5

def randomized(black_box: BlackBox, blocks: Sequence[str], seed: int = 0) -> BlackBox:
    """A copy of ``black_box`` whose ``blocks`` (names inside ``net``) are re-initialised.

    Every sub-module with ``reset_parameters`` (convolutions, linear layers, batch norms: weights
    re-drawn, running statistics reset) is reset under ``torch.manual_seed(seed)``.
    """
    model = copy.deepcopy(black_box.model)
    torch.manual_seed(seed)
    for block in blocks:
        for module in model.get_submodule(f"net.{block}").modules():
            reset = getattr(module, "reset_parameters", None)
            if callable(reset):
                reset()
    model.requires_grad_(False)
    out = copy.copy(black_box)
    out.model = model
    out.target_layer = model.get_submodule(black_box.target_layer_name)
    out.weights = f"{black_box.weights} with {', '.join(blocks)} randomised"
    return out


def spearman_maps(a: torch.Tensor, b: torch.Tensor) -> tuple[np.ndarray, int]:
    """Per-image Spearman correlation of two (B, H, W) map batches; constant maps give 0."""
    a_np = a.flatten(1).cpu().double().numpy()
    b_np = b.flatten(1).cpu().double().numpy()
    out, undefined = np.zeros(a_np.shape[0]), 0
    for i, (x, y) in enumerate(zip(a_np, b_np)):
        if np.ptp(x) == 0 or np.ptp(y) == 0:
            undefined += 1
            continue
        rx, ry = rankdata(x), rankdata(y)
        out[i] = np.corrcoef(rx, ry)[0, 1]
    return out, undefined


def cascading_randomization(black_box: BlackBox, images: torch.Tensor, methods: Sequence[str],
                            options: ExplainOptions | None = None, seed: int = 0,
                            steps: Sequence[tuple[str, ...]] | None = None,
                            progress: bool = False) -> pd.DataFrame:
    """Rows (step, blocks randomised, method, image, spearman) for the cascade of ``black_box``.

    ``steps``: the blocks re-initialised at each step (cumulatively), names inside ``net``, top of
    the network first; default the black box's record's (:attr:`BlackBoxSpec.cascade`; a
    one-line ``ValueError`` naming the black box when it has none).
    """
    steps = list(steps) if steps is not None else list(black_box.cascade())
    reference = explain(black_box, images, methods, options=options)
    targets = reference.targets
    rows = []
    randomised: list[str] = []
    with progress_bar(len(steps), "cascading randomisation", unit="step",
                  disable=not progress) as bar:
        for step, blocks in enumerate(steps, start=1):
            randomised += list(blocks)
            bb = randomized(black_box, randomised, seed=seed)
            ex = explain(bb, images, methods, targets=targets, options=options)
            for m in methods:
                rho, _ = spearman_maps(reference[m], ex[m])
                for i, r in enumerate(rho):
                    rows.append({"step": step, "randomized": "+".join(blocks), "method": m,
                                 "image": i, "spearman": float(r),
                                 "constant_map": bool(ex[m][i].amax() == ex[m][i].amin())})
            bar.update(1)
    return pd.DataFrame(rows)


def summarize(rows: pd.DataFrame) -> pd.DataFrame:
    """Mean Spearman per method and step (wide), and a ``flagged`` column for the last step."""
    wide = rows.pivot_table(index="method", columns="step", values="spearman", aggfunc="mean")
    wide.columns = [f"step{c}" for c in wide.columns]
    last = wide.columns[-1]
    wide["flagged"] = wide[last] > FLAG_THRESHOLD
    return wide.reset_index()


def write_sanity(rows: pd.DataFrame, summary: pd.DataFrame, model: str,
                 out: str | Path | None = None, figures: str | Path | None = None
                 ) -> tuple[list[Path], plt.Figure]:
    """Write the cascade's files (notebook 03): ``sanity_rows.csv`` (every row), the summary
    table ``sanity`` (CSV / Markdown / LaTeX, rounded to 3 digits) under ``out`` (default
    :func:`paperlib.paths.results_dir`), and the figure ``sanity_cascading_randomization``
    under ``figures``. ``model`` names the black box in the caption. Returns the paths and the
    (closed) figure."""
    out = results_dir(out)
    rows_csv = out / "sanity_rows.csv"
    atomic_write_csv(rows, rows_csv)
    steps = list(dict.fromkeys(rows["randomized"]))
    paths = [rows_csv, *write_table(
        summary.round(3), out / "sanity", display=summary.round(3),
        caption=f"Cascading randomisation: mean Spearman vs the trained {model}, "
                f"{rows['image'].nunique()} images; steps: {steps}")]
    fig = plots.sanity_figure(summary, steps)
    paths += plots.save(fig, "sanity_cascading_randomization", figures)
    plt.close(fig)
    return paths, fig
