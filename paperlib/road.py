"""ROAD: RemOve And Debias (Rong et al., "A Consistent and Efficient Evaluation Strategy for
Attribution Methods", ICML 2022), a read-out record for :mod:`paperlib.metrics`.

The read-out record itself, :class:`paperlib.metrics.Road`, lives with the kit's other read-outs
(registered after :class:`paperlib.metrics.Curves`; off by default, ``road_percentiles=()``: no
columns, no copies); here are its options (a base of :class:`paperlib.metrics.MetricConfig`)
and the work it does, which imports nothing above :mod:`paperlib.imputation` and
:mod:`paperlib.masking`.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from .checks import check_fields, checked
from .imputation import linear_impute
from .masking import n_pixels

__all__ = ["COMBINED", "IMPUTE_CHUNK", "LERF", "MORF", "ORDERS", "RoadOptions",
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
    """Options of the ROAD read-out (:class:`paperlib.metrics.Road`).

    ``road_percentiles``: the percentages of pixels removed (each in (0, 100)); ``()`` (default):
    no ROAD. Rong et al. and pytorch-grad-cam use 10, 20, ..., 90. ``road_noise``: the standard
    deviation of the Gaussian noise added to the imputed pixels, in the kit's image units
    ([0, 1], before normalisation). ``road_seed``: the noise's seed.
    """

    road_percentiles: tuple[int, ...] = ()
    road_noise: float = checked(0.01, low=0)
    road_seed: int = checked(0, integer=True, low=0)

    def check_road(self) -> None:
        """Normalise ``road_percentiles`` to a tuple of ints and validate the three fields
        (a one-line ``ValueError`` naming the value and what was expected)."""
        check_fields(self)   # road_noise, road_seed
        check_road_options(self)


def check_road_options(opts: Any) -> None:
    """Validate (and normalise) ``opts.road_percentiles`` (a :class:`RoadOptions`, or a
    :class:`paperlib.metrics.MetricConfig`); the numeric fields are its :func:`checked` ones,
    which the owner's :func:`paperlib.checks.check_fields` checks."""
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
