"""What the notebooks' first cells share: the black box, the images, the evaluation settings.

Notebooks narrate and plot; this module turns their papermill parameters into objects, so that a
parameter means the same in every notebook and its default is declared once (in the settings
classes, never in a notebook).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
import torch

from .blackbox import BlackBox
from .checks import check_number
from .data import ImageDataset, load_images
from .evaluation import EvalSettings, Evaluation, run_evaluation
from .model_selection import chosen_model
from .models import load_model
from .outputs import split_description
from .paths import REPO_ROOT, figures_dir, results_dir

__all__ = ["EvalRun", "open_black_box", "open_evaluation", "output_folders"]

#: Where a notebook run by hand writes when no folder is named: beside, never over, the full run.
SCRATCH = "scratch"


def output_folders(output_dir: str | os.PathLike | None, figures: str | os.PathLike | None
                   ) -> tuple[Path, Path]:
    """A notebook's tables-and-caches folder and its figures folder.

    A folder named by the parameter, else by ``$PAPERLIB_RESULTS`` / ``$PAPERLIB_FIGURES`` (which
    ``make reproduce`` sets to ``results/`` and ``figures/`` for its kernels, and ``make test`` to
    temporary folders), is used as given. A notebook run by hand with neither (JupyterLab "Run
    all", a bare papermill call) writes into ``results/scratch/`` and ``figures/scratch/``
    (git-ignored) and says so in one line, so that an 8-image rerun never replaces the tables and
    figures of the full run."""
    out, scratch = [], []
    for given, var, top in ((output_dir, "PAPERLIB_RESULTS", "results"),
                            (figures, "PAPERLIB_FIGURES", "figures")):
        if given is not None or os.environ.get(var):
            out.append(results_dir(given) if top == "results" else figures_dir(given))
        else:
            folder = REPO_ROOT / top / SCRATCH
            folder.mkdir(parents=True, exist_ok=True)
            out.append(folder)
            scratch.append(f"{top}/{SCRATCH}")
    if scratch:
        print(f"run by hand: writing into {' and '.join(scratch)} (the full run's results/ and "
              "figures/ stay as make reproduce wrote them; set output_dir / figures_dir to "
              "choose)")
    return out[0], out[1]


def open_black_box(params: Mapping[str, Any]) -> tuple[BlackBox, ImageDataset]:
    """The black box (``model_name``, else notebook 01's choice, at ``target_layer``, else its
    last stage) and the images (``data_dir``).

    Seeds torch with ``seed`` and prints one line describing the black box.
    """
    torch.manual_seed(check_number("seed", params.get("seed", 0), integer=True, low=0))
    name = params.get("model_name") or chosen_model(params.get("output_dir"))
    bb = load_model(name, device=params.get("device", "auto"),
                    target_layer=params.get("target_layer"))
    dataset = load_images(params.get("data_dir"))
    print(f"black box: {bb.name} (target layer {bb.target_layer_name}, input {bb.input_size}px) "
          f"on {bb.device.type}")
    return bb, dataset


@dataclass
class EvalRun:
    """An evaluation opened from a notebook's parameters (notebooks 04 and 05)."""

    black_box: BlackBox
    dataset: ImageDataset
    settings: EvalSettings
    evaluation: Evaluation
    results: Path
    figures: Path

    @property
    def frame(self) -> pd.DataFrame:
        return self.evaluation.frame

    @property
    def methods(self) -> list[str]:
        return list(self.settings.methods)

    @property
    def where(self) -> str:
        """The tables' caption: black box, images, protocol."""
        n = self.frame["file"].nunique()
        m = self.settings.metrics
        fast = ("" if m.exact else
                f", metric forwards {m.precision}{'+compile' if m.compile else ''}")
        return (f"{self.black_box.name}, {n} images of split {self.settings.split} "
                f"({split_description(self.settings.split)}), "
                f"fill={m.fill}, target={self.settings.target}{fast}")


def open_evaluation(params: Mapping[str, Any]) -> EvalRun:
    """Black box, images, :meth:`EvalSettings.from_parameters` and the (resumed) evaluation.

    ``params`` is the notebook's namespace (``globals()``): the parameters cell's names are read
    from it, anything else is ignored.
    """
    bb, dataset = open_black_box(params)
    settings = EvalSettings.from_parameters(params)
    evaluation = run_evaluation(bb, dataset, settings, params.get("output_dir"))
    run = EvalRun(bb, dataset, settings, evaluation, results_dir(params.get("output_dir")),
                  figures_dir(params.get("figures_dir")))
    print(f"{run.frame['file'].nunique()} evaluation images x "
          f"{run.frame['method'].nunique()} methods")
    return run
