"""The claim matrix: does any verdict on the paper depend on the black box or the layer?

Every verdict of the main run comes from one classifier at one layer (EfficientNet-Lite0's last
stage), where the gradient is one number per channel and Grad-CAM = XGrad-CAM = HiResCAM. The
matrix repeats the evaluation (Tables 3-4, deletion/insertion, the paired tests and the claim
check) for every black box x layer *cell*: :data:`MATRIX_MODELS` x :data:`LAYER_ROLES` (the
last stage, and each black box's record's earlier layer, where the baselines differ:
:attr:`paperlib.blackbox.BlackBoxSpec.earlier_layer`), with the paper's baselines and every
reading of its method (:func:`matrix_methods`), on the evaluation split.

Each cell is an ordinary evaluation (:func:`paperlib.evaluation.run_evaluation`) with its own
results store under ``<results>/matrix/<model>_<layer>/``: a killed run resumes where it stopped,
cell by cell and batch by batch. A cell whose methods' files are missing makes them first with
the maker their records declare (:func:`paperlib.cam.make_missing_files`: the attention
checkpoint is trained on the training split only). Each
cell's compute time is recorded (``matrix/cells.json``).

:func:`claim_matrix` turns the cells' claim checks into one table (rows variant x baseline x
metric, one column per cell, cells better / worse / no significant difference, Holm-adjusted
within each cell); :func:`holds` and :func:`matrix_sentence` say where, if anywhere, the paper's
claim (a better Average Drop *and* % Increase than every baseline) holds.

CLI: ``paperlib matrix [--model ...] [--layers last earlier] [--n-images N]`` (``make
reproduce-matrix``). Cells may run in parallel processes (``--model X --layers Y`` each, e.g. one
thread each on a small CPU); ``cells.json`` is updated under a lock, and the last process to finish
writes the matrix of every finished cell.
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from .atomic import atomic_write_text
from .cam import make_missing_files
from .evaluation import EvalSettings, paper_baselines, run_evaluation, variants
from .models import MODEL_NAMES, black_box_spec, load_model
from .tables import write_table
from .verdicts import HEADLINE, claim_holds, tally_verdicts

__all__ = ["LAYER_ROLES", "MATRIX_MODELS", "Cell", "cells", "layer_for", "matrix_methods",
           "run_cell", "record_cell", "claim_matrix", "holds", "matrix_sentence", "tally_table",
           "write_matrix", "main"]

#: The black boxes of the matrix: the three available offline.
MATRIX_MODELS = ("efficientnet_lite0", "efficientnet_lite1", "efficientnet_lite2")

#: The layers the claim matrix explains: ``last`` is each black box's default (the last
#: convolutional stage, the paper's choice); ``earlier`` is its record's earlier layer.
LAYER_ROLES = ("last", "earlier")


def layer_for(name: str, role: str) -> str | None:
    """The target layer of black box ``name`` for a layer role (:data:`LAYER_ROLES`): ``None``
    for ``last`` (the default), the record's :attr:`~paperlib.blackbox.BlackBoxSpec.earlier_layer`
    for ``earlier``."""
    if role not in LAYER_ROLES:
        raise ValueError(f"unknown layer role {role!r}; expected one of {', '.join(LAYER_ROLES)}")
    if role == "last":
        return None
    earlier = black_box_spec(name).earlier_layer
    if earlier is None:
        raise ValueError(f"no earlier layer is defined for {name!r}; pass target_layer= a module "
                         "name instead")
    return earlier


@dataclass(frozen=True)
class Cell:
    """One black box at one layer role (``last`` or ``earlier``)."""

    model: str
    layer: str

    @property
    def name(self) -> str:
        """The column name: ``efficientnet_lite0 @ last``."""
        return f"{self.model} @ {self.layer}"

    @property
    def folder(self) -> str:
        return f"{self.model}_{self.layer}"

    @property
    def target_layer(self) -> str | None:
        return layer_for(self.model, self.layer)


def cells(models: Sequence[str] = MATRIX_MODELS, layers: Sequence[str] = LAYER_ROLES
          ) -> list[Cell]:
    """Every (model, layer) cell, model-major; unknown names are errors naming them."""
    bad = [m for m in models if m not in MODEL_NAMES] + [r for r in layers if r not in LAYER_ROLES]
    if bad:
        raise ValueError(f"unknown black box or layer role {bad}; models: "
                         f"{', '.join(MODEL_NAMES)}; layers: {', '.join(LAYER_ROLES)}")
    return [Cell(m, r) for m in models for r in layers]


def matrix_methods() -> list[str]:
    """The paper's baselines (both SmoothGrad-CAM++ definitions) and every variant."""
    return [*paper_baselines(), *variants()]


def _compute_seconds(batches: Sequence[Mapping[str, Any]]) -> float:
    """Compute time stored with a run's batches (shared pass + methods + metric forwards)."""
    return float(sum(b["pass_seconds"] + sum(b["method_seconds"].values()) + b["metric_seconds"]
                     for b in batches))


def run_cell(cell: Cell, dataset: Any, params: Mapping[str, Any], out: str | Path,
             device: str = "auto", train: bool = True, progress: bool = True) -> dict[str, Any]:
    """Evaluate one cell (resuming its store) and write its tables into ``out/<cell.folder>``.

    ``params``: evaluation parameters as :meth:`EvalSettings.from_parameters` reads them
    (``methods`` defaults to :func:`matrix_methods`). ``train``: make the methods' missing files
    first (:func:`paperlib.cam.make_missing_files`: the ``attention-trained`` checkpoint is
    trained; else a missing one is the method's error). Returns the cell's record: images, rows,
    compute seconds (summed over every batch, across resumptions), the wall seconds of this
    call.
    """
    from .outputs import CELL_GROUPS, write_evaluation

    start = time.perf_counter()
    bb = load_model(cell.model, device=device, target_layer=cell.target_layer)
    settings = EvalSettings.from_parameters({"methods": matrix_methods(), "split": "eval",
                                             **params})
    if train:
        make_missing_files(settings.methods, bb, dataset, settings.explain)
    folder = Path(out) / cell.folder
    evaluation = run_evaluation(bb, dataset, settings, folder, progress=progress)
    n = evaluation.frame["file"].nunique()
    where = (f"{bb.name} at {bb.target_layer_name} ({cell.layer} layer), {n} images of split "
             f"{settings.split}, fill={settings.metrics.fill}, target={settings.target}")
    write_evaluation(evaluation, folder, where, groups=CELL_GROUPS)
    return {"cell": cell.name, "model": cell.model, "layer": cell.layer,
            "target_layer": bb.target_layer_name, "images": int(n),
            "methods": list(settings.methods), "rows": len(evaluation.frame),
            "compute_seconds": round(_compute_seconds(evaluation.batches), 1),
            "wall_seconds_last_call": round(time.perf_counter() - start, 1)}


# ---------------------------------------------------------------------------------------------
# The matrix from the cells' claim checks

def claim_matrix(claims: Mapping[str, pd.DataFrame]) -> pd.DataFrame:
    """One table from each cell's :func:`paperlib.tables.claim_check` (``{cell name: claims}``):
    columns ``variant``, ``baseline``, ``metric`` and one per cell (in the given order) holding
    the verdict; a comparison a cell lacks is empty (NaN)."""
    frames = [c[["variant", "baseline", "metric", "verdict"]].assign(cell=name)
              for name, c in claims.items() if len(c)]
    if not frames:
        return pd.DataFrame(columns=["variant", "baseline", "metric", *claims])
    long = pd.concat(frames, ignore_index=True)
    wide = long.pivot_table(index=["variant", "baseline", "metric"], columns="cell",
                            values="verdict", aggfunc="first", sort=False)
    wide = wide.reindex(columns=[c for c in claims if c in wide.columns])
    wide.columns.name = None
    return wide.reset_index()


def _cell_columns(matrix: pd.DataFrame) -> list[str]:
    return [c for c in matrix.columns if c not in ("variant", "baseline", "metric")]


def holds(matrix: pd.DataFrame, metrics: Sequence[str] = HEADLINE) -> pd.DataFrame:
    """Per variant and cell: does the paper's claim hold (:func:`paperlib.verdicts.claim_holds`:
    *better* than every baseline on every one of ``metrics``, Average Drop and % Increase)? Rows
    variant, columns the cells, values True / False (NaN where the cell lacks the variant)."""
    out = {}
    for cell in _cell_columns(matrix):
        claims = matrix[["variant", "baseline", "metric", cell]].rename(
            columns={cell: "verdict"}).dropna(subset=["verdict"])
        out[cell] = claim_holds(claims, metrics)
    return pd.DataFrame(out).reindex(list(dict.fromkeys(matrix["variant"])))


def tally_table(matrix: pd.DataFrame, metrics: Sequence[str] = HEADLINE) -> pd.DataFrame:
    """The compact view: one row per variant, one column per cell, each entry the tally of
    verdicts over the baselines per metric (``metrics``), e.g. ``AD worse x5; %Inc n.s. x5``."""
    short = {HEADLINE[0]: "AD", HEADLINE[1]: "%Inc"}
    rows = []
    for v, g in matrix.groupby("variant", sort=False):
        row = {"variant": v}
        for c in _cell_columns(matrix):
            row[c] = "; ".join(f"{short.get(m, m)} "
                               f"{tally_verdicts(g.loc[g['metric'] == m, c]) or '-'}"
                               for m in metrics)
        rows.append(row)
    return pd.DataFrame(rows)


def _in_cells(chosen: Sequence[str], cells_: Sequence[str]) -> str:
    """``chosen`` cells in words: all of them, all but a few, or the list."""
    if list(chosen) == list(cells_) and len(cells_) > 1:
        return "both cells" if len(cells_) == 2 else f"all {len(cells_)} cells"
    rest = [c for c in cells_ if c not in chosen]
    if rest and len(rest) < len(chosen):
        return f"{len(chosen)} of {len(cells_)} cells (all but {', '.join(rest)})"
    return ", ".join(chosen)


def matrix_sentence(matrix: pd.DataFrame, metrics: Sequence[str] = HEADLINE) -> str:
    """Where, if anywhere, the paper's claim holds, in two or three sentences: the cells where a
    variant beats every baseline on both headline metrics, and, for each variant for which that
    happens nowhere, the cells where it comes closest (most comparisons better)."""
    cells_ = _cell_columns(matrix)
    if not len(matrix) or not cells_:
        return "No cell of the claim matrix has been evaluated yet."
    h = holds(matrix, metrics)

    def yes(v: str, c: str) -> bool:
        value = h.loc[v, c]
        return False if pd.isna(value) else bool(value)

    n_base = matrix["baseline"].nunique()
    claim = (f"better than all {n_base} baselines on both Average Drop and % Increase, "
             "Holm-adjusted paired Wilcoxon tests, alpha 0.05")
    where = {v: [c for c in cells_ if yes(v, c)] for v in h.index}
    where = {v: cs for v, cs in where.items() if cs}
    scope = f"{len(cells_)} cell{'s' if len(cells_) != 1 else ''} ({', '.join(cells_)})"
    if not where:
        text = (f"In none of the {scope} does any reading of the paper's method beat all "
                f"{n_base} baselines on both Average Drop and % Increase (Holm-adjusted paired "
                "Wilcoxon tests, alpha 0.05): the negative verdict does not depend on the black "
                "box or the layer.")
    else:
        text = (f"Of the {scope}, the paper's claim ({claim}) holds for "
                + "; ".join(f"`{v}` in {_in_cells(cs, cells_)}" for v, cs in where.items())
                + ("; for no other variant in any cell." if len(where) < len(h) else "."))
    never = [v for v in h.index if v not in where]
    if never:
        head = matrix[matrix["metric"].isin(metrics)]
        closest = []
        for v in never:
            rows = head[head["variant"] == v]
            won = (rows[cells_] == "better").sum()
            best = [c for c in cells_ if won[c] == won.max()]
            closest.append(f"`{v}` {int(won.max())} of {len(rows)} in {_in_cells(best, cells_)}"
                           if won.max() else f"`{v}` none in any cell")
        text += (" Where each other variant comes closest (the Average Drop and % Increase "
                 "comparisons it wins, of those in one cell): " + "; ".join(closest) + ".")
    return text


def matrix_figure(matrix: pd.DataFrame):
    """Heat map per variant: rows baseline x metric, columns the cells, coloured better (blue) /
    n.s. (grey) / worse (red)."""
    import matplotlib.pyplot as plt
    import seaborn as sns
    from matplotlib.colors import ListedColormap

    from .cam import method_label as label
    from .plots import VERDICT_SCORE

    cells_ = _cell_columns(matrix)
    var = list(dict.fromkeys(matrix["variant"]))
    per = [matrix[matrix["variant"] == v] for v in var]
    height = max(len(p) for p in per) if per else 1
    fig, axes = plt.subplots(1, max(len(var), 1), squeeze=False,
                             figsize=(1.1 * len(cells_) * max(len(var), 1) + 3,
                                      0.22 * height + 2.2))
    cmap = ListedColormap(["#d6604d", "#e0e0e0", "#4393c3"])
    for i, (v, sub) in enumerate(zip(var, per)):
        ax = axes[0, i]
        score = sub[cells_].apply(lambda col: col.map(VERDICT_SCORE)).astype(float)
        score.index = [f"{label(b)}: {m}" for b, m in zip(sub["baseline"], sub["metric"])]
        sns.heatmap(score, ax=ax, cmap=cmap, vmin=-1.5, vmax=1.5, cbar=i == len(var) - 1,
                    linewidths=0.5, yticklabels=i == 0,
                    cbar_kws={"ticks": [-1, 0, 1], "shrink": 0.5})
        ax.set_title(label(v), fontsize=8)
        ax.set_xticklabels([c.replace("efficientnet_", "").replace(" @ ", "\n")
                            for c in cells_], fontsize=6, rotation=0)
        ax.tick_params(axis="y", labelsize=6)
    colorbar = axes[0, -1].collections[0].colorbar if len(var) else None
    if colorbar is not None:
        colorbar.set_ticklabels(["worse", "n.s.", "better"])
    fig.suptitle("Claim matrix: each reading of the paper's method vs each baseline, per black box "
                 "and layer (Holm, alpha 0.05)", fontsize=9)
    fig.tight_layout()
    return fig


# ---------------------------------------------------------------------------------------------
# The command

def write_matrix(out: str | Path, order: Sequence[Cell], figures: str | Path | None = None
                 ) -> pd.DataFrame:
    """Build the matrix from every finished cell under ``out/matrix`` (their ``claims.csv``) and
    write ``claim_matrix.*``, ``claim_matrix_tally.*``, ``claim_matrix_verdict.txt`` into ``out``
    and ``claim_matrix.png`` into ``figures``."""
    from .plots import save

    out = Path(out)
    claims = {c.name: pd.read_csv(out / "matrix" / c.folder / "claims.csv") for c in order
              if (out / "matrix" / c.folder / "claims.csv").is_file()}
    matrix = claim_matrix(claims)
    caption = ("Claim matrix: verdict of each variant vs each baseline per black box @ layer "
               "(Holm-adjusted paired Wilcoxon tests within each cell, alpha 0.05)")
    write_table(matrix, out / "claim_matrix", caption=caption, display=matrix.fillna("-"))
    write_table(tally_table(matrix), out / "claim_matrix_tally",
                caption="Claim matrix, Average Drop (AD) and % Increase (%Inc): verdicts against "
                        "the baselines per variant and cell")
    atomic_write_text(out / "claim_matrix_verdict.txt", matrix_sentence(matrix) + "\n")
    if len(matrix):
        save(matrix_figure(matrix), "claim_matrix", figures)
    return matrix


def record_cell(path: Path, record: Mapping[str, Any]) -> dict[str, Any]:
    """Add a cell's record to ``cells.json`` under an exclusive lock (read, merge, write), so that
    several matrix processes (e.g. one per cell, ``--models X --layers Y``) keep every entry."""
    import fcntl

    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path.with_suffix(".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        records = json.loads(path.read_text()) if path.is_file() else {}
        records[record["cell"]] = dict(record)
        atomic_write_text(path, json.dumps(records, indent=1) + "\n")
    return records


def main(args: argparse.Namespace) -> int:
    """``paperlib matrix``: run every cell (resuming), record its time, then write the matrix and
    refresh the README (when writing into the default results folder)."""
    import torch

    from .data import load_images
    from .paths import results_dir

    order = cells(args.model or MATRIX_MODELS, args.layers or LAYER_ROLES)
    out = results_dir(args.out)
    torch.manual_seed(args.seed)
    dataset = load_images(args.data_dir)
    params = {"n_images": args.n_images, "batch_size": args.batch_size, "seed": args.seed}
    record_path = out / "matrix" / "cells.json"
    for i, cell in enumerate(order, 1):
        print(f"[{i}/{len(order)}] {cell.name}", flush=True)
        record = run_cell(cell, dataset, params, out / "matrix", args.device,
                          train=not args.no_train)
        record_cell(record_path, record)
        print(f"    {record['images']} images, compute {record['compute_seconds'] / 60:.1f} min",
              flush=True)
    # every finished cell, also those other processes ran (the default cells first)
    everything = cells() + [c for c in order if c not in cells()]
    matrix = write_matrix(out, everything, args.figures_dir)
    print(matrix_sentence(matrix))
    if args.out is None:
        from .readme import main as readme_main

        readme_main()
    return 0
