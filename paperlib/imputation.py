"""Noisy linear imputation (Rong et al., "A Consistent and Efficient Evaluation Strategy for
Attribution Methods", ICML 2022, Sec. 4): batched, on the images' device, in torch only.

Every removed pixel becomes the weighted mean of its 8 neighbours -- weight 1/6 for the 4 edge
neighbours, 1/12 for the 4 corner neighbours -- whether those neighbours are known (their value)
or removed too (their imputed value); known pixels keep their value. Neighbours outside the image
are dropped and the pixel's weights renormalised over those inside (the reference
``NoisyLinearImputer`` of pytorch-grad-cam / Rong et al.'s ``road_evaluation``: its diagonal is
the sum of the in-image weights). Then Gaussian noise of standard deviation ``noise`` is added to
the removed pixels only.

The linear part is, per image and channel, the sparse system over the removed pixels R

    D_i x_i - sum_{j in R, j ~ i} w_ij x_j = sum_{j not in R, j ~ i} w_ij v_j,   i in R,

with w_ij in {1/6, 1/12} and D_i = sum_{j ~ i, j in the image} w_ij: the weighted graph Laplacian
L = D - A restricted to R. A is symmetric, so the system is symmetric positive definite whenever
some pixel is known (every connected set of removed pixels then touches a known one; with every
pixel removed it is singular and the imputed image is 0, plus noise). It is the same system as
the reference's (which writes it with the signs flipped), solved here by conjugate gradients in
float64 with a Jacobi (1/D) preconditioner, all images, masks and channels at once, each stopping
when its relative residual ||b - Lx|| / ||b|| is below ``tol``.

Speed: the start of the fine solve is the solution of the same problem on a 2x2-pooled pyramid
(a coarse pixel is known when any of its fine pixels is, with their mean value; removed when
all are), solved coarsest first and upsampled bilinearly level by level (nested iteration). The
smooth part of the solution, which plain CG needs hundreds of iterations for at 90% removal on
224 x 224, is then already there; the fine level only corrects the detail near the known pixels.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

__all__ = ["CORNER_WEIGHT", "EDGE_WEIGHT", "ImputeInfo", "linear_impute", "noisy_linear_impute",
           "stencil_system"]

#: Rong et al.'s neighbour weights.
EDGE_WEIGHT, CORNER_WEIGHT = 1.0 / 6.0, 1.0 / 12.0
#: Levels stop when the coarser grid would be smaller than this on a side.
_MIN_SIDE = 8


@dataclass
class ImputeInfo:
    """What a solve did: CG iterations per pyramid level (finest first), and whether every system
    reached ``tol`` at the finest level (its final relative residuals, per image x channel)."""

    iterations: list[int] = field(default_factory=list)
    converged: bool = True
    residual: torch.Tensor | None = None


def _neighbour_sum(u: torch.Tensor) -> torch.Tensor:
    """sum_j w_ij u_j over the 8 neighbours (zero outside): (n, H, W) -> (n, H, W).

    The stencil [[1, 2, 1], [2, 0, 2], [1, 2, 1]] / 12 is the separable [1, 2, 1] x [1, 2, 1]
    minus 4 times the centre, so 4 shifted adds instead of 8."""
    p = F.pad(u, (1, 1, 1, 1))
    v = p[:, :-2, :] + 2.0 * p[:, 1:-1, :] + p[:, 2:, :]
    s = v[:, :, :-2] + 2.0 * v[:, :, 1:-1] + v[:, :, 2:]
    return (s - 4.0 * u) * CORNER_WEIGHT


def stencil_system(values: torch.Tensor, removed: torch.Tensor
                   ) -> tuple[torch.Tensor, torch.Tensor]:
    """The diagonal D (n, H, W) and right-hand side b (n, H, W, zero at known pixels) of the
    system for ``values`` (n, H, W) with ``removed`` (n, H, W) in {0, 1}."""
    ones = torch.ones_like(values[:1])
    D = _neighbour_sum(ones).expand_as(values)
    b = removed * _neighbour_sum((1.0 - removed) * values)
    return D, b


def _cg(values: torch.Tensor, removed: torch.Tensor, x0: torch.Tensor, tol: float,
        max_iter: int) -> tuple[torch.Tensor, int, torch.Tensor]:
    """Jacobi-preconditioned CG on every (n,) system at once; x0 (n, H, W) is the start at the
    removed pixels. Returns the solution at the removed pixels (zero elsewhere), the iterations
    and the final relative residuals (n,)."""
    D, b = stencil_system(values, removed)
    inv_d = removed / D

    def apply(x: torch.Tensor) -> torch.Tensor:
        return removed * (D * x - _neighbour_sum(x))

    dims = (1, 2)
    b_norm = torch.linalg.vector_norm(b, dim=dims)
    scale = torch.where(b_norm > 0, b_norm, torch.ones_like(b_norm))
    x = removed * x0
    r = b - apply(x)
    z = inv_d * r
    p = z
    rz = (r * z).sum(dim=dims)
    res = torch.linalg.vector_norm(r, dim=dims) / scale
    it = 0
    while it < max_iter and bool((res > tol).any()):
        q = apply(p)
        pq = (p * q).sum(dim=dims)
        active = (res > tol) & (pq > 0)
        alpha = torch.where(active, rz / torch.where(pq > 0, pq, torch.ones_like(pq)),
                            torch.zeros_like(pq))
        x = x + alpha[:, None, None] * p
        r = r - alpha[:, None, None] * q
        z = inv_d * r
        rz_new = (r * z).sum(dim=dims)
        beta = torch.where(rz > 0, rz_new / torch.where(rz > 0, rz, torch.ones_like(rz)),
                           torch.zeros_like(rz))
        p = z + beta[:, None, None] * p
        rz = rz_new
        res = torch.linalg.vector_norm(r, dim=dims) / scale
        it += 1
    return x, it, res


def _coarsen(values: torch.Tensor, removed: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """2x2 pooling (odd sides padded): a coarse pixel is known when any of its in-image fine
    pixels is, with their mean value."""
    H, W = values.shape[-2:]
    known = 1.0 - removed
    pad = (0, W % 2, 0, H % 2)
    k = F.avg_pool2d(F.pad(known, pad)[:, None], 2)[:, 0] * 4.0
    s = F.avg_pool2d(F.pad(known * values, pad)[:, None], 2)[:, 0] * 4.0
    coarse_removed = (k == 0).to(values.dtype)
    coarse_values = torch.where(k > 0, s / torch.where(k > 0, k, torch.ones_like(k)),
                                torch.zeros_like(s))
    return coarse_values, coarse_removed


def _solve(values: torch.Tensor, removed: torch.Tensor, tol: float, max_iter: int,
           coarse_tol: float, info: ImputeInfo, level: int = 0) -> torch.Tensor:
    """The full imputed image (n, H, W): known values kept, removed ones solved."""
    H, W = values.shape[-2:]
    if not bool(removed.any()):
        if level == 0:
            info.iterations.insert(0, 0)
        return values
    if min(H, W) >= 2 * _MIN_SIDE:
        cv, cr = _coarsen(values, removed)
        coarse = _solve(cv, cr, coarse_tol, max_iter, coarse_tol, info, level + 1)
        x0 = F.interpolate(coarse[:, None], size=(H, W), mode="bilinear",
                           align_corners=False)[:, 0]
    else:
        x0 = torch.zeros_like(values)
    x, it, res = _cg(values, removed, x0, tol, max_iter)
    info.iterations.insert(0, it)
    if level == 0:
        info.converged = bool((res <= tol).all())
        info.residual = res
    return torch.where(removed > 0, x, values)


def _check(images: torch.Tensor, removed: torch.Tensor) -> torch.Tensor:
    if images.dim() != 4:
        raise ValueError(f"images must be (N, C, H, W), got shape {tuple(images.shape)}")
    if removed.dim() == 2:
        removed = removed.expand(images.shape[0], *removed.shape)
    if removed.shape != (images.shape[0], *images.shape[2:]):
        raise ValueError(f"removed must be (N, H, W) = {(images.shape[0], *images.shape[2:])} "
                         f"(1 = pixel removed), got shape {tuple(removed.shape)}")
    return removed


def linear_impute(images: torch.Tensor, removed: torch.Tensor, tol: float = 1e-6,
                  max_iter: int = 2000, coarse_tol: float | None = None
                  ) -> tuple[torch.Tensor, ImputeInfo]:
    """The noise-free linear imputation of ``images`` (N, C, H, W) where ``removed`` (N, H, W;
    or (H, W) for every image) is 1 (or True), on the images' device; returns the imputed images
    in the images' dtype and an :class:`ImputeInfo`. ``tol``: relative residual of every
    (image, channel) system at the finest level; ``max_iter``: CG iterations per level at most
    (not reaching ``tol`` is reported in ``info.converged``, not raised); ``coarse_tol``: the
    coarse levels' tolerance (default ``max(tol, 1e-4)``: they only give the start)."""
    removed = _check(images, removed)
    N, C, H, W = images.shape
    v = images.detach().to(torch.float64).reshape(N * C, H, W)
    r = (removed.detach().to(device=images.device, dtype=torch.float64) > 0.5).to(torch.float64)
    r = r[:, None].expand(N, C, H, W).reshape(N * C, H, W)
    info = ImputeInfo()
    out = _solve(v, r, tol, max_iter, max(tol, 1e-4) if coarse_tol is None else coarse_tol, info)
    return out.reshape(N, C, H, W).to(images.dtype), info


def noisy_linear_impute(images: torch.Tensor, removed: torch.Tensor, noise: float = 0.01,
                        generator: torch.Generator | None = None, tol: float = 1e-6,
                        max_iter: int = 2000) -> torch.Tensor:
    """Rong et al.'s noisy linear imputation: :func:`linear_impute`, then N(0, ``noise``^2)
    added to the removed pixels only (each channel its own draw; known pixels untouched).

    The noise is drawn on the CPU from ``generator`` (a CPU ``torch.Generator``; ``None``:
    torch's default one) and moved to the images' device, so a seed gives the same images on
    every device. ``noise=0`` draws nothing. The reference's default is ``noise=0.01``, on
    whatever tensor it is given (pytorch-grad-cam: the normalised input)."""
    out, _ = linear_impute(images, removed, tol=tol, max_iter=max_iter)
    if noise:
        removed = _check(images, removed)
        eps = torch.randn(out.shape, generator=generator, dtype=out.dtype, device="cpu")
        m = (removed.to(device=out.device) > 0.5)[:, None].to(out.dtype)
        out = out + noise * eps.to(out.device) * m
    return out
