"""ROAD: RemOve And Debias (Rong et al., "A Consistent and Efficient Evaluation Strategy for
Attribution Methods", ICML 2022), a read-out record for :mod:`paperlib.metrics`.

Off by default (``road_percentiles=()``: no columns, no copies). Not registered here: it is
registered by :mod:`paperlib.metrics` once :class:`RoadOptions` is a base of
:class:`paperlib.metrics.MetricConfig`, or by a test with a config class that has it.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Hashable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from .imputation import linear_impute
from .masking import n_pixels
from .metrics import HIGHER, LOWER, Column, MetricConfig, Readout, Scored, ScoringContext

__all__ = ["COMBINED", "IMPUTE_CHUNK", "LERF", "MORF", "ORDERS", "Road", "RoadOptions",
           "check_road_options", "road_column", "road_copies", "road_noise_fields",
           "road_prepare", "road_removed", "road_scores"]

MORF, LERF = "morf", "lerf"
#: The two orders: most relevant first (MoRF) and least relevant first (LeRF) removed.
ORDERS = (MORF, LERF)
#: Imputed images solved together at most, by device type: a batched solve holds ~20 MB per
#: 224 x 224 image; on a CPU small batches stay in cache (measured per 18 copies on one thread:
#: ~0.5 s in batches of 3-12, 0.93 s in batches of 72), a GPU wants large ones.
IMPUTE_CHUNK = {"cpu": 8, "cuda": 128}
#: The table of the summary columns.
TABLE = "ROAD"
#: The combined column: (road_lerf - road_morf) / 2.
COMBINED = "road_combined"


@dataclass
class RoadOptions:
    """Options of the ROAD read-out (:class:`Road`).

    ``road_percentiles``: the percentages of pixels removed (each in (0, 100)); ``()`` (default):
    no ROAD. Rong et al. and pytorch-grad-cam use 10, 20, ..., 90. ``road_noise``: the standard
    deviation of the Gaussian noise added to the imputed pixels, in the kit's image units
    ([0, 1], before normalisation). ``road_seed``: the noise's seed.
    """

    road_percentiles: tuple[int, ...] = ()
    road_noise: float = 0.01
    road_seed: int = 0

    def check_road(self) -> None:
        """Normalise ``road_percentiles`` to a tuple of ints and validate the three fields
        (a one-line ``ValueError`` naming the value and what was expected)."""
        check_road_options(self)


def check_road_options(opts: Any) -> None:
    """Validate (and normalise) the ROAD fields of ``opts`` (a :class:`RoadOptions`)."""
    ps = opts.road_percentiles
    if isinstance(ps, (str, bytes)) or not isinstance(ps, Sequence):
        raise ValueError(f"road_percentiles must be a sequence of percentages in (0, 100), got "
                         f"{ps!r}")
    bad = [p for p in ps if isinstance(p, bool) or not isinstance(p, (int, np.integer))
           or not 0 < p < 100]
    if bad:
        raise ValueError(f"road_percentiles are whole percentages in (0, 100); got {bad}")
    if len(set(ps)) != len(ps):
        raise ValueError(f"road_percentiles must not repeat a percentage; got {tuple(ps)}")
    opts.road_percentiles = tuple(int(p) for p in ps)
    noise = opts.road_noise
    if (isinstance(noise, bool) or not isinstance(noise, (int, float, np.floating))
            or not math.isfinite(noise) or noise < 0):
        raise ValueError(f"road_noise must be a finite number >= 0, got {noise!r}")
    opts.road_noise = float(noise)
    seed = opts.road_seed
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f"road_seed must be an integer >= 0, got {seed!r}")
    opts.road_seed = int(seed)


def road_column(order: str, p: int | None = None) -> str:
    """``road_morf_<p>`` / ``road_lerf_<p>``; without ``p`` the mean over percentages."""
    return f"road_{order}" if p is None else f"road_{order}_{p}"


def road_removed(ranks: torch.Tensor, order: str, p: int, shape: tuple[int, int]) -> torch.Tensor:
    """(B, H, W) masks, 1 = removed: the ``n_pixels(p)`` most (MoRF) or least (LeRF) salient
    pixels by ``ranks`` (B, H*W; 0 = most salient)."""
    total = shape[0] * shape[1]
    n = n_pixels(p, total)
    removed = ranks < n if order == MORF else ranks >= total - n
    return removed.view(-1, *shape).to(torch.float32)


def road_noise_fields(copies: Sequence[tuple[str, int]], seed: int, shape: tuple[int, int],
                      channels: int = 3) -> torch.Tensor:
    """(len(copies), C, H, W) standard normal fields, one per copy (order, p), each drawn on the
    CPU from a generator seeded with ``seed`` and the copy's position: the same on every device,
    for every image and method, whatever the batch."""
    out = torch.empty(len(copies), channels, *shape)
    for i, _ in enumerate(copies):
        g = torch.Generator().manual_seed(seed * 1_000_003 + i)
        out[i] = torch.randn(channels, *shape, generator=g)
    return out


def road_copies(percentiles: Sequence[int]) -> tuple[tuple[str, int], ...]:
    """The copies per (method, image), in forwarding order: (order, p), MoRF first."""
    return tuple((o, int(p)) for o in ORDERS for p in percentiles)


def road_prepare(images: torch.Tensor, ranks: Mapping[str, torch.Tensor],
                 copies: Sequence[tuple[str, int]], noise: float, seed: int,
                 chunk: int | None = None
                 ) -> dict[tuple[str, int, tuple[str, int]], torch.Tensor]:
    """Every copy of every method's maps of the batch, imputed: ``{(method, image, copy):
    (C, H, W)}``, solved in batches of ``chunk`` images (default :data:`IMPUTE_CHUNK` of the
    images' device type) on the images' device, then ``noise`` times the copy's
    :func:`road_noise_fields` field on its removed pixels."""
    B, C, H, W = images.shape
    dev = images.device
    chunk = chunk or IMPUTE_CHUNK.get(dev.type, IMPUTE_CHUNK["cuda"])
    fields = road_noise_fields(copies, seed, (H, W), C).to(dev) if noise else None
    jobs = [(m, b, i) for m in ranks for b in range(B) for i in range(len(copies))]
    masks = {m: [road_removed(ranks[m], o, p, (H, W)) for o, p in copies] for m in ranks}
    out: dict[tuple[str, int, tuple[str, int]], torch.Tensor] = {}
    for start in range(0, len(jobs), chunk):
        part = jobs[start: start + chunk]
        bs = torch.tensor([b for _, b, _ in part], device=dev)
        removed = torch.stack([masks[m][i][b] for m, b, i in part]).to(dev)
        imputed, info = linear_impute(images[bs], removed)
        if not info.converged:
            worst = float(info.residual.max()) if info.residual is not None else float("nan")
            warnings.warn(f"ROAD imputation stopped at relative residual {worst:.2e} after "
                          f"{info.iterations} CG iterations (tolerance 1e-6)", RuntimeWarning,
                          stacklevel=2)
        if fields is not None:
            idx = torch.tensor([i for _, _, i in part], device=dev)
            imputed = imputed + noise * fields[idx] * removed[:, None].to(imputed.dtype)
        for k, (m, b, i) in enumerate(part):
            out[(m, b, copies[i])] = imputed[k]
    return out


def road_scores(percentiles: Sequence[int], probs: Mapping[tuple[str, int], np.ndarray]
                ) -> dict[str, np.ndarray]:
    """The columns' values from each copy's probabilities (B,): per p and order, their means
    over p, and road_combined = (road_lerf - road_morf) / 2."""
    r = {road_column(o, p): np.asarray(probs[(o, p)], dtype=np.float64)
         for o in ORDERS for p in percentiles}
    for o in ORDERS:
        r[road_column(o)] = np.mean([r[road_column(o, p)] for p in percentiles], axis=0)
    r[COMBINED] = (r[road_column(LERF)] - r[road_column(MORF)]) / 2.0
    return r


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
            Column(road_column(MORF), "ROAD MoRF (mean over %)", LOWER, table=TABLE),
            Column(road_column(LERF), "ROAD LeRF (mean over %)", HIGHER, table=TABLE),
            Column(COMBINED, "ROAD combined ((LeRF - MoRF) / 2)", HIGHER, table=TABLE)]

    def copies(self, config: MetricConfig) -> Sequence[Hashable]:
        return road_copies(getattr(config, "road_percentiles", ()))

    def prepare(self, ctx: ScoringContext) -> dict[tuple[str, int, Hashable], torch.Tensor] | None:
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
        return road_scores(ps, {c: v[0] for c, v in scored.items()})

    def rows(self, Y: np.ndarray, r: Mapping[str, np.ndarray],
             config: MetricConfig) -> dict[str, np.ndarray]:
        return {c.name: r[c.name] for c in self.columns(config)}
