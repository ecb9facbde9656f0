"""Faithfulness metrics: one masking routine, many masked copies per forward.

Conventions (every table states them):

* Y is the softmax probability of the target class on the full image; the target is the class the
  black box predicts on the full image unless ground-truth labels are passed.
* An explanation input is ``E = x * M + fill * (1 - M)`` on the image **in [0, 1], before
  normalisation** (:mod:`paperlib.masking`, the kit's one masking routine). ``fill="black"``
  (default) gives ``E = x * M``; ``"mean"`` fills with the image's mean colour; ``"blur"`` with
  the image blurred. O is the target's probability on E.
* Soft map (Table 3): M is the [0, 1] map itself.
  Average Drop (Eq. 8) = mean_i max(0, Y_i - O_i) / Y_i * 100;
  % Increase (Eq. 9) = mean_i 1[Y_i < O_i] * 100.
* Percentage-in (Table 4): M keeps exactly the top k% pixels of the map (k in 5, 10, 20, 25, 50),
  ``round(k/100 * H*W)`` pixels; ties are broken by pixel index (row-major, lower first).
* Deletion / insertion (RISE, Petsiuk et al. 2018): pixels are removed (set to the fill) or
  inserted (onto a blurred copy of the image) most salient first, in ``steps`` equal steps; the AUC
  is the trapezoidal area under probability-vs-fraction on [0, 1]. The curves' shared endpoints
  (full image, all-fill image, blurred image) are computed once per image, not once per method.

Each formula is implemented once, here, per image (:func:`drop_terms`, :func:`increase_terms`,
:func:`curve_auc`); the tables average these per-image terms, and the tests check them.
Column names come from :mod:`paperlib.schema`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from . import schema
from .blackbox import BlackBox
from .forward import check_precision, fast_probabilities
from .masking import FILLS, blurred, fill_images, keep_top, masked_inputs, n_pixels, pixel_ranks
from .perf import CHUNK_SIZE

__all__ = [
    "FRACTIONS",
    "BatchScores",
    "MetricConfig",
    "average_drop",
    "curve_auc",
    "drop_terms",
    "evaluate_batch",
    "image_rows",
    "increase",
    "increase_terms",
    "score_inputs",
]

#: Table 4's percentages.
FRACTIONS = (5, 10, 20, 25, 50)


def drop_terms(Y: np.ndarray | torch.Tensor, O: np.ndarray | torch.Tensor) -> np.ndarray:
    """Average Drop's per-image term (Eq. 8): max(0, Y - O) / Y * 100, in float64."""
    Y, O = np.asarray(Y, dtype=np.float64), np.asarray(O, dtype=np.float64)
    return np.maximum(0.0, Y - O) / Y * 100.0


def increase_terms(Y: np.ndarray | torch.Tensor, O: np.ndarray | torch.Tensor) -> np.ndarray:
    """% Increase's per-image term (Eq. 9): 1[Y < O] * 100, in float64."""
    Y, O = np.asarray(Y, dtype=np.float64), np.asarray(O, dtype=np.float64)
    return 100.0 * (Y < O).astype(np.float64)


def average_drop(Y: np.ndarray | torch.Tensor, O: np.ndarray | torch.Tensor) -> float:
    """Eq. 8: mean(max(0, Y - O) / Y) * 100 (the mean of :func:`drop_terms`)."""
    return float(np.mean(drop_terms(Y, O)))


def increase(Y: np.ndarray | torch.Tensor, O: np.ndarray | torch.Tensor) -> float:
    """Eq. 9: mean(1[Y < O]) * 100 (the mean of :func:`increase_terms`)."""
    return float(np.mean(increase_terms(Y, O)))


def curve_auc(curves: np.ndarray, fractions: np.ndarray) -> np.ndarray:
    """Trapezoidal area under each row of ``curves`` (B, T+1) over ``fractions`` (T+1,)."""
    return np.trapezoid(curves, fractions, axis=1)


@torch.no_grad()
def score_inputs(black_box: BlackBox, inputs: torch.Tensor, targets: torch.Tensor,
                 config: MetricConfig | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """One forward: softmax probability of ``targets[i]`` for ``inputs[i]``, and whether the
    black box's top-1 class on ``inputs[i]`` is ``targets[i]``.

    ``config`` (default :class:`MetricConfig`'s) chooses the forward: fp32 eager (the default) is
    ``black_box.model(inputs)`` as is; another ``precision`` or ``compile=True`` goes through
    :func:`paperlib.forward.fast_probabilities` (autocast / compiled, in forwards of
    ``chunk_size`` when compiled). Probabilities are float32 either way.
    """
    if config is None or config.exact:
        probs = black_box.model(inputs).float().softmax(dim=1)
    else:
        probs = fast_probabilities(black_box.model, inputs, config.precision, config.compile,
                                   config.chunk_size)
    return probs.gather(1, targets.view(-1, 1)).view(-1), probs.argmax(dim=1) == targets


@dataclass
class MetricConfig:
    """How explanations are scored (recorded with every result).

    ``precision`` and ``compile`` choose how the masked copies go through the black box
    (:mod:`paperlib.forward`): ``fp32`` eager by default; ``bf16`` autocast (CPU or CUDA),
    ``tf32`` / ``fp16`` (CUDA only: an error on other devices when a batch is scored), each
    optionally through ``torch.compile``. The clean forward (Y) and the explanations' gradient
    pass stay fp32.
    """

    fill: str = "black"
    fractions: tuple[int, ...] = FRACTIONS
    curve_steps: int = 16               # 0: no deletion / insertion curves (a cheap run)
    chunk_size: int = CHUNK_SIZE       # not part of the key: it changes no number
    # the masked copies' forwards (paperlib.forward): "fp32" (exact) | "bf16" | CUDA: "tf32",
    # "fp16"; and through torch.compile or not. Both in the key: fast and exact never mix.
    precision: str = "fp32"
    compile: bool = False

    def __post_init__(self) -> None:
        self.fractions = tuple(self.fractions)
        check_precision(self.precision)
        if not isinstance(self.compile, (bool, np.bool_)):
            raise ValueError(f"compile must be True or False, got {self.compile!r}")
        self.compile = bool(self.compile)
        if self.chunk_size < 1:
            raise ValueError(f"chunk_size must be >= 1, got {self.chunk_size}")
        if self.fill not in FILLS:
            raise ValueError(f"unknown fill {self.fill!r}; expected one of {FILLS}")
        if self.curve_steps < 0:
            raise ValueError(f"curve_steps must be >= 1, or 0 for no deletion/insertion curves; "
                             f"got {self.curve_steps}")
        bad = [k for k in self.fractions if not 0 < k <= 100]
        if bad:
            raise ValueError(f"fractions are percentages in (0, 100]; got {bad}")

    def key(self) -> dict[str, Any]:
        """What determines the numbers (chunk size excluded; precision and compile always in)."""
        return {"fill": self.fill, "fractions": list(self.fractions),
                "curve_steps": self.curve_steps, "precision": self.precision,
                "compile": self.compile}

    @property
    def exact(self) -> bool:
        """The default forward: fp32, eager (no autocast, no compilation)."""
        return self.precision == "fp32" and not self.compile

    @property
    def row_schema(self) -> schema.RowSchema:
        """The per-image row columns these settings produce."""
        return schema.RowSchema(self.fractions, self.curve_steps)


@dataclass
class _Job:
    """One masked copy: image b, mask from method's map, onto base/fill images."""

    b: int
    method: str
    kind: str       # "soft" | "top" | "del" | "ins"
    param: int      # k% for "top", step t for "del"/"ins"


@dataclass
class BatchScores:
    """Per-image scores of a batch: ``Y`` (B,), and per method a dict of (B,) or (B, T) arrays."""

    Y: np.ndarray
    target: np.ndarray                  # (B,) the target (predicted class unless labels given)
    per_method: dict[str, dict[str, np.ndarray]] = field(default_factory=dict)
    forwards: int = 0


def evaluate_batch(black_box: BlackBox, images: torch.Tensor, maps: Mapping[str, torch.Tensor],
                   targets: torch.Tensor | None = None, config: MetricConfig | None = None,
                   clean_logits: torch.Tensor | None = None) -> BatchScores:
    """Every metric for every method's maps on one batch, in chunked forwards of masked copies.

    Returns per method (column names from :mod:`paperlib.schema`): ``O_soft`` (B,), ``O_top{k}``
    and ``agree_top{k}`` (B,, 0 or 1) for each k, ``deletion`` and ``insertion`` curves
    (B, steps+1) with their ``deletion_auc`` and ``insertion_auc`` (B,). ``forwards`` counts
    every image forward made (clean one included
    unless ``clean_logits`` were given).
    """
    cfg = config or MetricConfig()
    check_precision(cfg.precision, black_box.device)
    images = images.to(black_box.device)
    B, _, H, W = images.shape
    total = H * W
    forwards = 0
    with torch.no_grad():
        if clean_logits is None:
            clean_logits = black_box.model(images)
            forwards += B
        clean = clean_logits.float().softmax(dim=1)
        t = clean.argmax(dim=1) if targets is None else torch.as_tensor(targets).to(images.device)
        if t.numel() != B:
            raise ValueError(f"got {t.numel()} targets for a batch of {B} images")
        Y = clean.gather(1, t.view(-1, 1)).view(-1)
        fill = fill_images(images, cfg.fill, black_box.mean)
        blur = blurred(images)
        steps = cfg.curve_steps
        if steps:
            # shared curve endpoints: everything deleted (= fill), nothing inserted (= blurred)
            ends, _ = score_inputs(black_box, torch.cat([fill, blur]), torch.cat([t, t]),
                                   cfg)
            forwards += 2 * B
            del_end, ins_start = ends[:B], ends[B:]
        n_step = [n_pixels(100.0 * s / steps, total) for s in range(steps + 1)] if steps else []

        ranks = {m: pixel_ranks(mp.to(images.device)) for m, mp in maps.items()}
        jobs: list[_Job] = []
        for m in maps:
            for b in range(B):
                jobs.append(_Job(b, m, "soft", 0))
                jobs += [_Job(b, m, "top", k) for k in cfg.fractions]
                jobs += [_Job(b, m, "del", s) for s in range(1, steps)]
                jobs += [_Job(b, m, "ins", s) for s in range(1, steps)]

        def build(chunk: list[_Job]) -> tuple[torch.Tensor, torch.Tensor]:
            bs = torch.tensor([j.b for j in chunk], device=images.device)
            masks = torch.empty(len(chunk), H, W, device=images.device)
            fills = fill[bs].clone()
            for i, j in enumerate(chunk):
                r = ranks[j.method][j.b: j.b + 1]
                if j.kind == "soft":
                    masks[i] = maps[j.method][j.b].to(images.device)
                elif j.kind == "top":
                    masks[i] = keep_top(r, n_pixels(j.param, total), (H, W))[0]
                elif j.kind == "del":
                    masks[i] = 1 - keep_top(r, n_step[j.param], (H, W))[0]
                else:
                    masks[i] = keep_top(r, n_step[j.param], (H, W))[0]
                    fills[i] = blur[j.b]
            return masked_inputs(images[bs], masks, fills), t[bs]

        prob = torch.empty(len(jobs), device=images.device)
        agree = torch.empty(len(jobs), dtype=torch.bool, device=images.device)
        for start in range(0, len(jobs), cfg.chunk_size):
            chunk = jobs[start: start + cfg.chunk_size]
            x, tt = build(chunk)
            sl = slice(start, start + len(chunk))
            prob[sl], agree[sl] = score_inputs(black_box, x, tt, cfg)
            forwards += len(chunk)

    prob_np, agree_np = prob.cpu().numpy().astype(np.float64), agree.cpu().numpy()
    Y_np = Y.cpu().numpy().astype(np.float64)
    fractions_x = np.array(n_step, dtype=np.float64) / total
    result = BatchScores(Y=Y_np, target=t.cpu().numpy(), forwards=forwards)
    index = {(j.method, j.kind, j.param, j.b): i for i, j in enumerate(jobs)}
    for m in maps:
        def col(kind: str, param: int, values: np.ndarray = prob_np, m: str = m) -> np.ndarray:
            return np.array([values[index[(m, kind, param, b)]] for b in range(B)])

        r: dict[str, np.ndarray] = {schema.score(schema.SOFT): col("soft", 0)}
        for k in cfg.fractions:
            r[schema.score(schema.top(k))] = col("top", k)
            r[schema.agree(k)] = col("top", k, agree_np).astype(np.float64)
        if steps:
            deletion = np.column_stack([Y_np] + [col("del", s) for s in range(1, steps)]
                                       + [del_end.cpu().numpy().astype(np.float64)])
            insertion = np.column_stack([ins_start.cpu().numpy().astype(np.float64)]
                                        + [col("ins", s) for s in range(1, steps)] + [Y_np])
            r["deletion"], r["insertion"] = deletion, insertion
            r[schema.DELETION_AUC] = curve_auc(deletion, fractions_x)
            r[schema.INSERTION_AUC] = curve_auc(insertion, fractions_x)
        result.per_method[m] = r
    return result


def image_rows(files: Sequence[str], labels: np.ndarray, scores: BatchScores,
               flat: Mapping[str, np.ndarray], config: MetricConfig) -> list[dict[str, Any]]:
    """The per-image rows of a scored batch (:class:`paperlib.schema.RowSchema`'s columns).

    Average Drop and % Increase enter as their per-image terms (:func:`drop_terms`,
    :func:`increase_terms`): a table's cell is their mean over images.
    """
    Y = scores.Y
    tags = [schema.SOFT] + [schema.top(k) for k in config.fractions]
    rows = []
    for m, r in scores.per_method.items():
        terms = {tag: (r[schema.score(tag)], drop_terms(Y, r[schema.score(tag)]),
                       increase_terms(Y, r[schema.score(tag)])) for tag in tags}
        for b, file in enumerate(files):
            row: dict[str, Any] = {"file": file, "label": int(labels[b]),
                                   "target": int(scores.target[b]), "method": m, "Y": Y[b],
                                   "flat_map": bool(flat[m][b])}
            for tag, (O, d, inc) in terms.items():
                row[schema.score(tag)] = O[b]
                row[schema.drop(tag)] = d[b]
                row[schema.increase(tag)] = inc[b]
            for k in config.fractions:
                row[schema.agree(k)] = 100.0 * r[schema.agree(k)][b]
            if config.curve_steps:
                row[schema.DELETION_AUC] = r[schema.DELETION_AUC][b]
                row[schema.INSERTION_AUC] = r[schema.INSERTION_AUC][b]
                for t, v in enumerate(r["deletion"][b]):
                    row[schema.deletion(t)] = v
                for t, v in enumerate(r["insertion"][b]):
                    row[schema.insertion(t)] = v
            rows.append(row)
    return rows
