"""Faithfulness metrics: one masking routine, many masked copies per forward, one record per
read-out.

Conventions (every table states them):

* Y is the softmax probability of the target class on the full image; the target is the class the
  black box predicts on the full image unless ground-truth labels are passed.
* An explanation input is ``E = x * M + fill * (1 - M)`` on the image **in [0, 1], before
  normalisation** (:mod:`paperlib.masking`, the kit's one masking routine). ``fill="black"``
  (default) gives ``E = x * M``; ``"mean"`` fills with the image's mean colour; ``"blur"`` with
  the image blurred; a value or a callable is accepted too (:class:`MaskingOptions`). O is the
  target's probability on E.

A **read-out** is one record (:class:`Readout`, registered with :func:`register_readout`, in
:data:`READOUTS`): its name, label, options dataclass, the per-image columns it writes (with
dtype, direction, label: :class:`Column`), the masked copies it needs per (method, image) and
per image, and how it scores them into per-image values; its docstring holds its formula and
reference. :func:`evaluate_batch` loops over the records; the row schema
(:attr:`MetricConfig.row_schema`), :func:`image_rows`, the claim directions
(:data:`paperlib.tables.CLAIMS`), the tables' cells, the command line's and the precision study's
columns read them. The kit's read-outs:

* :class:`SoftMap` (Table 3), :class:`TopK` (Table 4), :class:`Curves` (RISE's deletion /
  insertion) and :class:`Road` (ROAD, Rong et al. 2022; off unless ``road_percentiles`` are
  given), registered in that order.

Each formula is implemented once, here, per image (:func:`drop_terms`, :func:`increase_terms`,
:func:`curve_auc`); the tables average these per-image terms, and the tests check them.
Column names come from :mod:`paperlib.schema`.
"""

from __future__ import annotations

import dataclasses
import inspect
from collections.abc import Hashable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np
import torch

from . import schema
from .blackbox import BlackBox
from .checks import check_fields, checked
from .forward import check_precision, fast_probabilities
from .masking import (
    Fill,
    blurred,
    check_fill,
    fill_images,
    fill_key,
    keep_top,
    masked_inputs,
    n_pixels,
    pixel_ranks,
)
from .perf import CHUNK_SIZE
from .road import (
    COMBINED,
    LERF,
    MORF,
    RoadOptions,
    check_road_options,
    road_column,
    road_copies,
    road_prepare,
    road_removed,
    road_scores,
)
from .road import TABLE as ROAD_TABLE

__all__ = [
    "FRACTIONS",
    "KIT_READOUTS",
    "NO_NUMBER",
    "READOUTS",
    "BatchScores",
    "Column",
    "CurveOptions",
    "Curves",
    "MaskingOptions",
    "MetricConfig",
    "Readout",
    "Road",
    "RoadOptions",
    "ScoringContext",
    "SoftMap",
    "TopK",
    "TopOptions",
    "average_drop",
    "average_gain",
    "curve_auc",
    "drop_terms",
    "evaluate_batch",
    "gain_terms",
    "image_rows",
    "increase",
    "increase_terms",
    "readout_facts",
    "register_readout",
    "score_inputs",
    "unregister_readout",
]

#: Table 4's percentages.
FRACTIONS = (5, 10, 20, 25, 50)
#: The top-k% fraction whose Average Drop the claim check compares (beside Table 3's two).
CLAIM_FRACTION = 20


def drop_terms(Y: np.ndarray | torch.Tensor, O: np.ndarray | torch.Tensor) -> np.ndarray:
    """Average Drop's per-image term (Eq. 8): max(0, Y - O) / Y * 100, in float64."""
    Y, O = np.asarray(Y, dtype=np.float64), np.asarray(O, dtype=np.float64)
    return np.maximum(0.0, Y - O) / Y * 100.0


def increase_terms(Y: np.ndarray | torch.Tensor, O: np.ndarray | torch.Tensor) -> np.ndarray:
    """% Increase's per-image term (Eq. 9): 1[Y < O] * 100, in float64."""
    Y, O = np.asarray(Y, dtype=np.float64), np.asarray(O, dtype=np.float64)
    return 100.0 * (Y < O).astype(np.float64)


def gain_terms(Y: np.ndarray | torch.Tensor, O: np.ndarray | torch.Tensor) -> np.ndarray:
    """Average Gain's per-image term: max(0, O - Y) / (1 - Y) * 100, in float64.

    Average Gain (Zhang et al., "Opti-CAM: Optimizing saliency maps for interpretability",
    CVIU 248, 2024, Sec. 5) is Average Drop's counterpart: the gain in the target's probability
    that the masked image brings, relative to the room left above Y. A map that keeps the whole
    image (Fake-CAM) has O close to Y and a gain close to 0. Y = 1 (no room) gives 0.
    """
    Y, O = np.asarray(Y, dtype=np.float64), np.asarray(O, dtype=np.float64)
    room = 1.0 - Y
    with np.errstate(divide="ignore", invalid="ignore"):
        out = np.where(room > 0, np.maximum(0.0, O - Y) / np.where(room > 0, room, 1.0), 0.0)
    return out * 100.0


def average_drop(Y: np.ndarray | torch.Tensor, O: np.ndarray | torch.Tensor) -> float:
    """Eq. 8: mean(max(0, Y - O) / Y) * 100 (the mean of :func:`drop_terms`)."""
    return float(np.mean(drop_terms(Y, O)))


def increase(Y: np.ndarray | torch.Tensor, O: np.ndarray | torch.Tensor) -> float:
    """Eq. 9: mean(1[Y < O]) * 100 (the mean of :func:`increase_terms`)."""
    return float(np.mean(increase_terms(Y, O)))


def average_gain(Y: np.ndarray | torch.Tensor, O: np.ndarray | torch.Tensor) -> float:
    """Average Gain: mean(max(0, O - Y) / (1 - Y)) * 100 (the mean of :func:`gain_terms`)."""
    return float(np.mean(gain_terms(Y, O)))


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


# ---------------------------------------------------------------------------------------------
# The settings: the masking's and the forwards' own, composed with the read-outs' options


#: Field metadata of a setting that changes no number (left out of :meth:`MetricConfig.key`).
NO_NUMBER = {"changes_no_number": True}


@dataclass
class MaskingOptions:
    """What removed pixels become, for every read-out (:func:`paperlib.masking.fill_images`).

    ``fill``: a named fill (:data:`paperlib.masking.FILLS`), a value (a float, or a tensor
    broadcastable to the images, e.g. one value per channel) or a callable
    ``(images, black_box_mean) -> fill images``. In the results key a callable is its qualified
    name (``module.qualname``: rename it and the results are recomputed), a tensor its values.
    """

    fill: Fill = "black"


@dataclass
class TopOptions:
    """Options of the top-k% read-out: Table 4's percentages."""

    fractions: tuple[int, ...] = FRACTIONS


@dataclass
class CurveOptions:
    """Options of the deletion / insertion read-out: the curves' steps (0: no curves)."""

    curve_steps: int = checked(16, integer=True, low=0)


@dataclass
class MetricConfig(RoadOptions, CurveOptions, TopOptions, MaskingOptions):
    """How explanations are scored (recorded with every result).

    Composed like :class:`paperlib.cam.ExplainOptions` composes the methods' options: its fields
    are the masking's (:class:`MaskingOptions`: ``fill``), each read-out's options dataclass
    (:class:`TopOptions`: ``fractions``, :class:`CurveOptions`: ``curve_steps``,
    :class:`paperlib.road.RoadOptions`: ``road_percentiles``, ``road_noise``, ``road_seed``; a
    read-out's options dataclass is a base of this class, so its fields are flat settings,
    unique across read-outs: a new read-out with options adds its dataclass to these bases) and
    the forwards' own below. :meth:`key` is derived from the fields: every field
    is in it except those marked :data:`NO_NUMBER` (``chunk_size``).

    ``precision`` and ``compile`` choose how the masked copies go through the black box
    (:mod:`paperlib.forward`): ``fp32`` eager by default; ``bf16`` autocast (CPU or CUDA),
    ``tf32`` / ``fp16`` (CUDA only: an error on other devices when a batch is scored), each
    optionally through ``torch.compile``. The clean forward (Y) and the explanations' gradient
    pass stay fp32. Both are in the key: fast and exact never mix.
    """

    chunk_size: int = checked(CHUNK_SIZE, integer=True, low=1, metadata=NO_NUMBER)
    precision: str = "fp32"
    compile: bool = False

    def __post_init__(self) -> None:

        self.fractions = tuple(self.fractions)
        check_precision(self.precision)
        if not isinstance(self.compile, (bool, np.bool_)):
            raise ValueError(f"compile must be True or False, got {self.compile!r}")
        self.compile = bool(self.compile)
        check_fields(self)   # chunk_size, curve_steps (0: no curves), road_noise, road_seed
        check_fill(self.fill)
        bad = [k for k in self.fractions if not 0 < k <= 100]
        if bad:
            raise ValueError(f"fractions are percentages in (0, 100]; got {bad}")
        check_road_options(self)   # road_percentiles in (0, 100), each once

    def key(self) -> dict[str, Any]:
        """What determines the numbers: every field not marked :data:`NO_NUMBER`, as JSON
        values (tuples as lists, a fill by :func:`paperlib.masking.fill_key`); plus
        ``readouts`` (their names) when the registered read-outs are not the kit's own. The
        fields of a read-out that is off (:meth:`Readout.active`; ROAD with
        ``road_percentiles=()``) are left out, so that the keys of results without it are what
        they were before it."""
        off = {f.name for r in READOUTS.values() if r.options is not None and not r.active(self)
               for f in dataclasses.fields(r.options)}
        out = {f.name: _key_value(getattr(self, f.name)) for f in dataclasses.fields(self)
               if not f.metadata.get("changes_no_number") and f.name not in off}
        if tuple(READOUTS) != KIT_READOUTS:
            out["readouts"] = list(READOUTS)
        return out

    @property
    def exact(self) -> bool:
        """The default forward: fp32, eager (no autocast, no compilation)."""
        return self.precision == "fp32" and not self.compile

    def columns(self) -> list[Column]:
        """Every registered read-out's per-image columns under these settings, in row order."""
        out: dict[str, tuple[str, Column]] = {}
        for r in READOUTS.values():
            for c in r.columns(self):
                if c.name in out or c.name in schema.KEY_COLUMNS:
                    other = out[c.name][0] if c.name in out else "the row's keys"
                    raise ValueError(f"read-out {r.name!r} writes column {c.name!r}, which "
                                     f"{other} already writes")
                out[c.name] = (r.name, c)
        return [c for _, c in out.values()]

    @property
    def row_schema(self) -> schema.RowSchema:
        """The per-image row columns these settings produce: the keys, then the read-outs'."""
        return schema.RowSchema({**schema.KEY_COLUMNS,
                                 **{c.name: c.dtype for c in self.columns()}})


def _key_value(value: Any) -> Any:
    if isinstance(value, tuple):
        return list(value)
    if isinstance(value, (str, bool, int, float)) or value is None:
        return value
    return fill_key(value)


# ---------------------------------------------------------------------------------------------
# The read-out records

#: A read-out column's direction: lower is better, higher is better, or neither.
LOWER, HIGHER, NEITHER = -1, +1, 0


@dataclass(frozen=True)
class Column:
    """One per-image column a read-out writes.

    Attributes:
        name: the row column (:mod:`paperlib.schema`'s names).
        label: what tables and the claim check call it.
        direction: :data:`LOWER` / :data:`HIGHER` is better, or :data:`NEITHER`.
        dtype: the row dtype (:class:`paperlib.schema.RowSchema`).
        claim: the claim check compares variants and baselines on it (:data:`tables.CLAIMS`;
            needs a direction).
        table: the table whose cell is this column's mean over images (``None``: no cell, e.g.
            a curve's points); the precision study groups by it.
        scale: the table shows the mean times this (probabilities as percentages).
        cell: the table's name for the cell (default: the column's name).
        verdict: the verdict (the control check, the agreement between metrics, the README)
            shows it beside the claims; every claim column is shown (needs a direction).
    """

    name: str
    label: str
    direction: int = NEITHER
    dtype: str = "float64"
    claim: bool = False
    table: str | None = None
    scale: float = 1.0
    cell: str | None = None
    verdict: bool = False

    def __post_init__(self) -> None:
        if self.direction not in (LOWER, HIGHER, NEITHER):
            raise ValueError(f"direction of column {self.name!r} must be -1, +1 or 0, got "
                             f"{self.direction!r}")
        if (self.claim or self.verdict) and not self.direction:
            raise ValueError(f"claim or verdict column {self.name!r} needs a direction "
                             "(-1 or +1)")

    @property
    def cell_name(self) -> str:
        return self.cell or self.name


@dataclass
class ScoringContext:
    """One batch as the read-outs see it: the images on the black box's device, the run's fill
    and blurred images, the targets, Y, each method's maps and pixel ranks, the settings."""

    images: torch.Tensor                   # (B, 3, H, W) in [0, 1]
    fill: torch.Tensor                     # (B, 3, H, W) the run's fill images
    blur: torch.Tensor                     # (B, 3, H, W) blurred images (RISE's baseline)
    targets: torch.Tensor                  # (B,)
    Y: np.ndarray                          # (B,) float64
    maps: Mapping[str, torch.Tensor]       # method -> (B, H, W)
    ranks: Mapping[str, torch.Tensor]      # method -> (B, H*W), 0 = most salient
    config: MetricConfig
    black_box_mean: Sequence[float] | None = None
    #: what each read-out's :meth:`Readout.prepare` computed for this batch, by read-out name
    prepared: dict[str, Any] = field(default_factory=dict)

    @property
    def shape(self) -> tuple[int, int]:
        return (int(self.images.shape[2]), int(self.images.shape[3]))

    @property
    def total(self) -> int:
        return self.shape[0] * self.shape[1]

    def top_mask(self, method: str, b: int, n: int) -> torch.Tensor:
        """(H, W) binary mask keeping the ``n`` most salient pixels of ``method``'s map ``b``."""
        return keep_top(self.ranks[method][b: b + 1], n, self.shape)[0]


#: Per (method, image): ``copy -> (probability (B,), top-1 agreement (B,))`` of its masked copies.
Scored = Mapping[Hashable, tuple[np.ndarray, np.ndarray]]


class Readout:
    """A metric read-out: one record (subclass, instantiate, :func:`register_readout`).

    A read-out declares:

    * ``name``, ``label`` and ``options`` (its options dataclass, a base of
      :class:`MetricConfig` so that its fields are flat settings in the results key; ``None``
      when it has none); its class docstring holds its formula and reference (:attr:`doc`);
    * :meth:`columns`: the per-image row columns it writes, given the settings;
    * :meth:`copies`: the masked copies it needs per (method, image), one hashable id each, in
      the order they are forwarded, and :meth:`mask`: each copy's mask (and its fill, ``None``
      for the run's fill); :meth:`prepare`: batch-wide work before the copies are built;
      :meth:`shared`: images it needs scored once per image, whatever the method (e.g. the
      curves' endpoints);
    * :meth:`score`: the copies' probabilities -> per-method arrays (``BatchScores.per_method``)
      and :meth:`rows`: those arrays -> the per-image values of :meth:`columns`.
    """

    name: ClassVar[str]
    label: ClassVar[str]
    options: ClassVar[type | None] = None

    @property
    def doc(self) -> str:
        """The read-out's docstring: its formula and reference."""
        return inspect.getdoc(type(self)) or ""

    def columns(self, config: MetricConfig) -> list[Column]:
        raise NotImplementedError

    def active(self, config: MetricConfig) -> bool:
        """Whether the read-out runs under ``config`` (default: always). While it does not, its
        options' fields are left out of :meth:`MetricConfig.key`: a read-out off by default
        leaves the keys of results made before it as they were."""
        return True

    def cells(self, config: MetricConfig) -> list[Column]:
        """The columns with a table cell, in the table's order (default: the row order)."""
        return [c for c in self.columns(config) if c.table is not None]

    def shared(self, ctx: ScoringContext) -> list[torch.Tensor]:
        """Images (each (B, 3, H, W)) scored in one forward per batch, before the copies."""
        return []

    def copies(self, config: MetricConfig) -> Sequence[Hashable]:
        return ()

    def prepare(self, ctx: ScoringContext) -> Any:
        """Work done once per batch before any copy is built (e.g. every copy's fill image at
        once, batched on the images' device); the result is ``ctx.prepared[name]`` (default:
        ``None``, nothing)."""
        return None

    def mask(self, ctx: ScoringContext, method: str, b: int,
             copy: Hashable) -> tuple[torch.Tensor, torch.Tensor | None]:
        raise NotImplementedError

    def score(self, ctx: ScoringContext, method: str, scored: Scored,
              shared: np.ndarray | None) -> dict[str, np.ndarray]:
        """Per-method arrays from the copies' ``scored`` values and the probabilities of the
        :meth:`shared` forward (float64, the image sets one after the other; ``None``: none)."""
        raise NotImplementedError

    def rows(self, Y: np.ndarray, r: Mapping[str, np.ndarray],
             config: MetricConfig) -> dict[str, np.ndarray]:
        """``{column: (B,) values}`` of :meth:`columns`, in their order, from :meth:`score`'s
        arrays ``r`` (all read-outs' arrays of the method)."""
        raise NotImplementedError


#: name -> registered :class:`Readout`, in registration (= forwarding and column) order.
READOUTS: dict[str, Readout] = {}


def register_readout(readout: Readout) -> Readout:
    """Add a read-out to :data:`READOUTS` (at the end: its copies are forwarded after, and its
    columns written after, the others'). Registering a name twice is an error; two read-outs
    writing one column is one when the columns are listed (:meth:`MetricConfig.columns`)."""
    name = getattr(readout, "name", None)
    if not isinstance(name, str) or not name:
        raise ValueError(f"a read-out needs a name, got {name!r}")
    if not isinstance(readout, Readout):
        raise TypeError(f"read-out {name!r} must be a Readout instance, got {readout!r}")
    if name in READOUTS:
        raise ValueError(f"read-out {name!r} is already registered")
    opts = readout.options
    if opts is not None and not (isinstance(opts, type) and issubclass(MetricConfig, opts)):
        raise TypeError(f"options of read-out {name!r} must be a dataclass that MetricConfig "
                        f"derives from (its fields are flat settings), got {opts!r}")
    READOUTS[name] = readout
    return readout


def unregister_readout(name: str) -> None:
    """Remove a read-out (for tests that register toy read-outs)."""
    if name not in READOUTS:
        raise ValueError(f"unknown read-out {name!r}; expected one of {list(READOUTS)}")
    READOUTS.pop(name)


def _o_drop_increase(tag: str, what: str, table: str, scale: float = 1.0,
                     claim_drop: bool = False) -> list[Column]:
    return [Column(schema.score(tag), f"mean O, {what}", table=table, scale=scale),
            Column(schema.drop(tag), f"Average Drop, {what}", LOWER, claim=claim_drop,
                   table=table),
            Column(schema.increase(tag), f"% Increase, {what}", HIGHER, table=table),
            Column(schema.gain(tag), f"Average Gain, {what}", HIGHER, table=table,
                   verdict=claim_drop)]


class SoftMap(Readout):
    """Table 3: the soft map itself as the mask (M = the [0, 1] map).

    Per image: O_soft = p(target | x * M + fill * (1 - M)); drop_soft = max(0, Y - O) / Y * 100
    (Average Drop, Eq. 8, Chattopadhyay et al. 2018) and increase_soft = 1[Y < O] * 100
    (% Increase, Eq. 9) and gain_soft = max(0, O - Y) / (1 - Y) * 100 (Average Gain, Zhang et
    al. 2024: the counterpart that a map keeping the whole image fails); the table's cells are
    their means over images.
    """

    name = "soft"
    label = "soft map (Table 3)"
    #: Its columns (they depend on no setting); the two claims are the paper's headline.
    COLUMNS = (Column(schema.score(schema.SOFT), "mean O, soft map", table="O (soft map)"),
               Column(schema.drop(schema.SOFT), "Average Drop", LOWER, claim=True,
                      table="Table 3", cell="avg_drop"),
               Column(schema.increase(schema.SOFT), "% Increase", HIGHER, claim=True,
                      table="Table 3", cell="increase"),
               Column(schema.gain(schema.SOFT), "Average Gain", HIGHER, table="Table 3",
                      cell="avg_gain", verdict=True))

    def columns(self, config: MetricConfig) -> list[Column]:
        return list(self.COLUMNS)

    def copies(self, config: MetricConfig) -> Sequence[Hashable]:
        return (0,)

    def mask(self, ctx: ScoringContext, method: str, b: int,
             copy: Hashable) -> tuple[torch.Tensor, torch.Tensor | None]:
        return ctx.maps[method][b].to(ctx.images.device), None

    def score(self, ctx: ScoringContext, method: str, scored: Scored,
              shared: np.ndarray | None) -> dict[str, np.ndarray]:
        return {schema.score(schema.SOFT): scored[0][0]}

    def rows(self, Y: np.ndarray, r: Mapping[str, np.ndarray],
             config: MetricConfig) -> dict[str, np.ndarray]:
        return _terms(Y, r, schema.SOFT)


def _terms(Y: np.ndarray, r: Mapping[str, np.ndarray], tag: str) -> dict[str, np.ndarray]:
    O = r[schema.score(tag)]
    return {schema.score(tag): O, schema.drop(tag): drop_terms(Y, O),
            schema.increase(tag): increase_terms(Y, O), schema.gain(tag): gain_terms(Y, O)}


class TopK(Readout):
    """Table 4 (percentage-in): M keeps exactly the top k% pixels of the map, for each k of
    ``fractions`` (:class:`TopOptions`).

    ``round(k/100 * H*W)`` pixels are kept; ties are broken by pixel index (row-major, lower
    first). Per image and k: O_top<k>, drop_top<k> (Eq. 8's term), increase_top<k> (Eq. 9's
    term), gain_top<k> (Average Gain's term, :func:`gain_terms`) and
    agree_top<k> = 100 * 1[argmax p(. | E) = target] (top-1 agreement).
    """

    name = "top"
    label = "top-k% kept (Table 4)"
    options = TopOptions

    def columns(self, config: MetricConfig) -> list[Column]:
        cols: list[Column] = []
        for k in config.fractions:
            cols += _o_drop_increase(schema.top(k), f"top {k}% kept", "Table 4",
                                     schema.readout_scale("O_top"), k == CLAIM_FRACTION)
        cols += [Column(schema.agree(k), f"top-1 agreement, top {k}% kept", HIGHER,
                        table="Table 4") for k in config.fractions]
        return cols

    def cells(self, config: MetricConfig) -> list[Column]:
        """Table 4's order: read-out by read-out (:data:`paperlib.schema.READOUTS`, Average
        Gain after % Increase), k by k."""
        by_name = {c.name: c for c in self.columns(config)}
        names = [[schema.readout(prefix, k) for k in config.fractions]
                 for prefix in schema.READOUTS]
        names.insert(3, [schema.gain(schema.top(k)) for k in config.fractions])
        return [by_name[n] for group in names for n in group]

    def copies(self, config: MetricConfig) -> Sequence[Hashable]:
        return tuple(config.fractions)

    def mask(self, ctx: ScoringContext, method: str, b: int,
             copy: Hashable) -> tuple[torch.Tensor, torch.Tensor | None]:
        assert isinstance(copy, int)
        return ctx.top_mask(method, b, n_pixels(copy, ctx.total)), None

    def score(self, ctx: ScoringContext, method: str, scored: Scored,
              shared: np.ndarray | None) -> dict[str, np.ndarray]:
        r: dict[str, np.ndarray] = {}
        for k in ctx.config.fractions:
            r[schema.score(schema.top(k))] = scored[k][0]
            r[schema.agree(k)] = scored[k][1].astype(np.float64)
        return r

    def rows(self, Y: np.ndarray, r: Mapping[str, np.ndarray],
             config: MetricConfig) -> dict[str, np.ndarray]:
        out: dict[str, np.ndarray] = {}
        for k in config.fractions:
            out.update(_terms(Y, r, schema.top(k)))
        for k in config.fractions:
            out[schema.agree(k)] = 100.0 * r[schema.agree(k)]
        return out


class Curves(Readout):
    """Deletion and insertion curves and their AUC (RISE, Petsiuk et al. 2018).

    Pixels are removed (set to the fill) or inserted (onto a blurred copy of the image) most
    salient first, in ``curve_steps`` equal steps (:class:`CurveOptions`; step t moves
    ``round(t / steps * H*W)`` pixels); the AUC is the trapezoidal area under probability vs
    fraction on [0, 1] (lower is better for deletion, higher for insertion). The curves' shared
    endpoints -- the full image (Y), the all-fill image and the blurred image -- are computed once
    per image, not once per method (the last two as one forward of [fill, blur]).
    """

    name = "curves"
    label = "deletion / insertion (RISE)"
    options = CurveOptions

    def columns(self, config: MetricConfig) -> list[Column]:
        steps = config.curve_steps
        if not steps:                       # a run without deletion / insertion curves
            return []
        return ([Column(schema.DELETION_AUC, "deletion AUC", LOWER, claim=True, table="curves"),
                 Column(schema.INSERTION_AUC, "insertion AUC", HIGHER, claim=True,
                        table="curves")]
                + [Column(schema.deletion(t), f"deletion curve, step {t}")
                   for t in range(steps + 1)]
                + [Column(schema.insertion(t), f"insertion curve, step {t}")
                   for t in range(steps + 1)])

    def shared(self, ctx: ScoringContext) -> list[torch.Tensor]:
        # everything deleted (= fill), nothing inserted (= blurred)
        return [ctx.fill, ctx.blur] if ctx.config.curve_steps else []

    def copies(self, config: MetricConfig) -> Sequence[Hashable]:
        inner = range(1, config.curve_steps)
        return tuple([("del", s) for s in inner] + [("ins", s) for s in inner])

    @staticmethod
    def _n_step(config: MetricConfig, total: int) -> list[int]:
        steps = config.curve_steps
        return [n_pixels(100.0 * s / steps, total) for s in range(steps + 1)]

    def mask(self, ctx: ScoringContext, method: str, b: int,
             copy: Hashable) -> tuple[torch.Tensor, torch.Tensor | None]:
        assert isinstance(copy, tuple)
        kind, s = copy
        steps = ctx.config.curve_steps
        kept = ctx.top_mask(method, b, n_pixels(100.0 * s / steps, ctx.total))
        if kind == "del":
            return 1 - kept, None
        return kept, ctx.blur[b]

    def score(self, ctx: ScoringContext, method: str, scored: Scored,
              shared: np.ndarray | None) -> dict[str, np.ndarray]:
        steps = ctx.config.curve_steps
        if not steps:
            return {}
        assert shared is not None
        B = len(ctx.Y)
        del_end, ins_start = shared[:B], shared[B:]
        deletion = np.column_stack([ctx.Y] + [scored[("del", s)][0] for s in range(1, steps)]
                                   + [del_end])
        insertion = np.column_stack([ins_start] + [scored[("ins", s)][0]
                                                   for s in range(1, steps)] + [ctx.Y])
        x = np.array(self._n_step(ctx.config, ctx.total), dtype=np.float64) / ctx.total
        return {"deletion": deletion, "insertion": insertion,
                schema.DELETION_AUC: curve_auc(deletion, x),
                schema.INSERTION_AUC: curve_auc(insertion, x)}

    def rows(self, Y: np.ndarray, r: Mapping[str, np.ndarray],
             config: MetricConfig) -> dict[str, np.ndarray]:
        if not config.curve_steps:
            return {}
        out = {schema.DELETION_AUC: r[schema.DELETION_AUC],
               schema.INSERTION_AUC: r[schema.INSERTION_AUC]}
        out.update({schema.deletion(t): r["deletion"][:, t]
                    for t in range(config.curve_steps + 1)})
        out.update({schema.insertion(t): r["insertion"][:, t]
                    for t in range(config.curve_steps + 1)})
        return out


class Road(Readout):
    """ROAD (RemOve And Debias; Rong et al., "A Consistent and Efficient Evaluation Strategy
    for Attribution Methods", ICML 2022): pixels are removed by rank and *imputed* -- noisy
    linear imputation (:func:`paperlib.imputation.linear_impute`: each removed pixel is the
    1/6-edge, 1/12-corner weighted mean of its 8 neighbours, known pixels kept; then
    N(0, ``road_noise``^2) on the removed pixels) -- so that the removal's shape leaks no class
    information, and the black box is asked again.

    Defaults (:class:`RoadOptions`): ``road_percentiles=()`` (off: no columns, no copies; Rong
    et al. and pytorch-grad-cam use 10, 20, ..., 90), ``road_noise=0.01``, ``road_seed=0``.

    For each p of ``road_percentiles`` and each order: ``road_morf_<p>`` = p(target | the
    ``round(p/100 * H*W)`` most salient pixels removed and imputed) (most relevant first: lower
    is better) and ``road_lerf_<p>`` the same with the least salient removed (higher is better);
    ranks by :func:`paperlib.masking.pixel_ranks` (ties by pixel index). ``road_morf`` and
    ``road_lerf`` are their means over p, and ``road_combined = (road_lerf - road_morf) / 2``
    (higher is better): pytorch-grad-cam's ``ROADCombined`` (its mean over p of the LeRF minus
    the MoRF probability change, halved; the clean probability Y cancels). Rong et al. report
    MoRF and LeRF separately (accuracy against the fraction removed); the combination is
    pytorch-grad-cam's.

    Differences from pytorch-grad-cam's ``ROADMostRelevantFirst`` / ``LeastRelevantFirst``:
    its "percentile p" removes the pixels at or above the map's p-th percentile, i.e. (100 - p)%
    of them (ties: all of them); here p is the percentage removed, exactly (over 10..90 the means
    are the same set). It imputes the normalised tensor, so its noise 0.01 is about 0.0023 in
    [0, 1] units (ImageNet std ~0.225); the linear part is the same (the weights of a row sum to
    one, so it commutes with a per-channel affine normalisation). It scores with the target
    function it is given; here the softmax probability, as every read-out of the kit.

    The noise of copy (order, p) is one field per copy (:func:`road_noise_fields`,
    ``road_seed``), the same for every image and method (common random numbers: reproducible
    whatever the batch, and method differences are not noise). :meth:`prepare` imputes every
    copy of every method's maps of the batch (:func:`road_prepare`, batched solves of
    :data:`IMPUTE_CHUNK` images); they are held until the batch is scored: B x methods x 2 x
    len(percentiles) float32 images (16 images x 5 methods x 18 copies of 224 x 224: 0.87 GB).
    """

    name = "road"
    label = "ROAD (Rong et al. 2022)"
    options = RoadOptions

    def columns(self, config: MetricConfig) -> list[Column]:
        ps = tuple(getattr(config, "road_percentiles", ()))
        if not ps:
            return []
        cols = [Column(road_column(MORF, p), f"ROAD MoRF, {p}% removed", LOWER) for p in ps]
        cols += [Column(road_column(LERF, p), f"ROAD LeRF, {p}% removed", HIGHER) for p in ps]
        return cols + [
            Column(road_column(MORF), "ROAD MoRF (mean over %)", LOWER, table=ROAD_TABLE,
                   verdict=True),
            Column(road_column(LERF), "ROAD LeRF (mean over %)", HIGHER, table=ROAD_TABLE,
                   verdict=True),
            Column(COMBINED, "ROAD combined ((LeRF - MoRF) / 2)", HIGHER, table=ROAD_TABLE,
                   verdict=True)]

    def active(self, config: MetricConfig) -> bool:
        return bool(getattr(config, "road_percentiles", ()))

    def copies(self, config: MetricConfig) -> Sequence[Hashable]:
        return road_copies(getattr(config, "road_percentiles", ()))

    def prepare(self, ctx: ScoringContext) -> dict[tuple[str, int, tuple[str, int]],
                                                    torch.Tensor] | None:
        cfg = ctx.config
        copies = road_copies(getattr(cfg, "road_percentiles", ()))
        if not copies:
            return None
        return road_prepare(ctx.images, ctx.ranks, copies, float(cfg.road_noise),
                            int(cfg.road_seed))

    def mask(self, ctx: ScoringContext, method: str, b: int,
             copy: Hashable) -> tuple[torch.Tensor, torch.Tensor | None]:
        """The kept pixels as the mask and the imputed image as the copy's own fill:
        ``x * M + imputed * (1 - M)`` is the imputed image exactly (they agree where M = 1)."""
        assert isinstance(copy, tuple)
        order, p = copy
        imputed = ctx.prepared[self.name][(method, b, copy)]
        removed = road_removed(ctx.ranks[method][b: b + 1], order, p, ctx.shape)[0]
        return (1.0 - removed).to(ctx.images.device), imputed

    def score(self, ctx: ScoringContext, method: str, scored: Scored,
              shared: np.ndarray | None) -> dict[str, np.ndarray]:
        ps = tuple(getattr(ctx.config, "road_percentiles", ()))
        if not ps:
            return {}
        probs: dict[tuple[str, int], np.ndarray] = {}
        for c, v in scored.items():
            assert isinstance(c, tuple)
            probs[(str(c[0]), int(c[1]))] = v[0]
        return road_scores(ps, probs)

    def rows(self, Y: np.ndarray, r: Mapping[str, np.ndarray],
             config: MetricConfig) -> dict[str, np.ndarray]:
        return {c.name: r[c.name] for c in self.columns(config)}


register_readout(SoftMap())
register_readout(TopK())
register_readout(Curves())
register_readout(Road())
#: The kit's own read-outs (a results key names the read-outs only when they differ).
KIT_READOUTS = tuple(READOUTS)

def readout_facts(config: MetricConfig | None = None) -> list[dict[str, Any]]:
    """The registered read-outs as data, for readers without torch (the reports, which read them
    from :data:`paperlib.report.READOUTS_FILE` beside a run's tables): per record its
    name, label, whether it is one of the kit's, and each column's name, label, direction
    (-1 lower is better, +1 higher, 0 neither), claim flag and table, under ``config``."""
    cfg = config or MetricConfig()
    return [{"name": name, "label": r.label, "kit": name in KIT_READOUTS,
             "columns": [{"name": c.name, "label": c.label, "direction": c.direction,
                          "claim": c.claim, "verdict": c.claim or c.verdict,
                          "table": c.table} for c in r.columns(cfg)]}
            for name, r in READOUTS.items()]


# ---------------------------------------------------------------------------------------------
# Scoring a batch: every read-out's copies, in chunked forwards


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
    """Every registered read-out for every method's maps on one batch, in chunked forwards of
    masked copies.

    First each read-out's :meth:`Readout.shared` images (one forward per read-out, e.g. the
    curves' endpoints), then the masked copies: for each method, for each image, for each
    read-out in :data:`READOUTS` order, its :meth:`Readout.copies`, in forwards of ``chunk_size``
    copies. Returns per method the read-outs' arrays (:meth:`Readout.score`): ``O_soft`` (B,),
    ``O_top{k}`` and ``agree_top{k}`` (B,, 0 or 1) for each k, ``deletion`` and ``insertion``
    curves (B, steps+1) with their ``deletion_auc`` and ``insertion_auc`` (B,). ``forwards``
    counts every image forward made (clean one included unless ``clean_logits`` were given).
    """

    cfg = config or MetricConfig()
    check_precision(cfg.precision, black_box.device)
    images = images.to(black_box.device)
    B, _, H, W = images.shape
    forwards = 0
    readouts = list(READOUTS.values())
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
        ctx = ScoringContext(images=images, fill=fill, blur=blurred(images), targets=t,
                             Y=Y.cpu().numpy().astype(np.float64), maps=maps, ranks={},
                             config=cfg, black_box_mean=black_box.mean)
        shared: dict[str, np.ndarray] = {}
        for ro in readouts:
            extra = ro.shared(ctx)
            if extra:
                p, _ = score_inputs(black_box, torch.cat(extra), torch.cat([t] * len(extra)),
                                    cfg)
                forwards += len(extra) * B
                shared[ro.name] = p.cpu().numpy().astype(np.float64)
        ctx.ranks = {m: pixel_ranks(mp.to(images.device)) for m, mp in maps.items()}
        for ro in readouts:
            ctx.prepared[ro.name] = ro.prepare(ctx)
        copies = {ro.name: ro.copies(cfg) for ro in readouts}
        jobs = [(ro, m, b, c) for m in maps for b in range(B) for ro in readouts
                for c in copies[ro.name]]

        def build(chunk: list[tuple[Readout, str, int, Hashable]]
                  ) -> tuple[torch.Tensor, torch.Tensor]:
            bs = torch.tensor([b for _, _, b, _ in chunk], device=images.device)
            masks = torch.empty(len(chunk), H, W, device=images.device)
            fills = fill[bs].clone()
            for i, (ro, m, b, c) in enumerate(chunk):
                mask, own_fill = ro.mask(ctx, m, b, c)
                masks[i] = mask
                if own_fill is not None:
                    fills[i] = own_fill
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
    result = BatchScores(Y=ctx.Y, target=t.cpu().numpy(), forwards=forwards)
    index = {(ro.name, m, c, b): i for i, (ro, m, b, c) in enumerate(jobs)}
    for m in maps:
        r: dict[str, np.ndarray] = {}
        for ro in readouts:
            at = {c: [index[(ro.name, m, c, b)] for b in range(B)] for c in copies[ro.name]}
            scored = {c: (np.array([prob_np[i] for i in ii]), np.array([agree_np[i] for i in ii]))
                      for c, ii in at.items()}
            r.update(ro.score(ctx, m, scored, shared.get(ro.name)))
        result.per_method[m] = r
    return result


def image_rows(files: Sequence[str], labels: np.ndarray, scores: BatchScores,
               flat: Mapping[str, np.ndarray], config: MetricConfig) -> list[dict[str, Any]]:
    """The per-image rows of a scored batch (:attr:`MetricConfig.row_schema`'s columns): the
    keys, then each read-out's :meth:`Readout.rows`, in :data:`READOUTS` order.

    Average Drop and % Increase enter as their per-image terms (:func:`drop_terms`,
    :func:`increase_terms`): a table's cell is their mean over images.
    """
    Y = scores.Y
    rows = []
    for m, r in scores.per_method.items():
        values: dict[str, np.ndarray] = {}
        for ro in READOUTS.values():
            values.update(ro.rows(Y, r, config))
        for b, file in enumerate(files):
            row: dict[str, Any] = {"file": file, "label": int(labels[b]),
                                   "target": int(scores.target[b]), "method": m, "Y": Y[b],
                                   "flat_map": bool(flat[m][b])}
            row.update({c: v[b] for c, v in values.items()})
            rows.append(row)
    return rows
