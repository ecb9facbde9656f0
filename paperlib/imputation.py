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
the reference's (which writes it with the signs flipped), solved by conjugate gradients in
float64, all images, masks and channels at once, each system stopping when its relative residual
||b - Lx|| / ||b|| is below ``tol`` (default 1e-6: about 2e-6 max abs from a converged solve on
224 x 224 images).

Speed: CG is preconditioned by one multigrid V(1, 1)-cycle (float32; damped Jacobi smoothing,
bilinear prolongation and its transpose as restriction, Galerkin coarse operators R L P computed
by probing them with 9 colourings, an exact dense Cholesky solve on the coarsest grid of at most
9 x 9; the image is embedded in a grid of m * 2**L + 1 pixels a side whose extra pixels are not
unknowns, which changes nothing). That is a symmetric positive definite preconditioner that does
not degrade with the size of the removed regions: 7 iterations for the 18 ROAD masks of a
224 x 224 Grad-CAM map (10..90% removed, most and least salient first), where Jacobi-CG needs
~500. The preconditioner works in float32, so CG uses the flexible (Polak-Ribiere) beta; a
float32 CG (``dtype=torch.float32``) is faster but its errors reach ~1e-4.

Pixels: ``removed`` is 1 where a pixel is removed (the reference's mask is the opposite: 1 =
kept). A system with every pixel removed has no known value; its solution here is 0.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

__all__ = ["CORNER_WEIGHT", "EDGE_WEIGHT", "ImputeInfo", "linear_impute", "noisy_linear_impute"]

#: Rong et al.'s neighbour weights.
EDGE_WEIGHT, CORNER_WEIGHT = 1.0 / 6.0, 1.0 / 12.0


@dataclass
class ImputeInfo:
    """What a solve did: the preconditioned CG iterations (a one-element list), whether every
    (image, channel) system reached ``tol``, and their final relative residuals (N, C)."""

    iterations: list[int] = field(default_factory=list)
    converged: bool = True
    residual: torch.Tensor | None = None


def _separable_sum(u: torch.Tensor) -> torch.Tensor:
    """sum over the 3 x 3 neighbourhood with weights [1, 2, 1] x [1, 2, 1] (zero outside), over
    the last two dims: 12 times the weighted neighbour sum plus 4 times the centre."""
    v = u * 2.0
    v[..., 1:, :].add_(u[..., :-1, :])
    v[..., :-1, :].add_(u[..., 1:, :])
    s = v * 2.0
    s[..., 1:].add_(v[..., :-1])
    s[..., :-1].add_(v[..., 1:])
    return s


def _neighbour_sum(u: torch.Tensor) -> torch.Tensor:
    """sum_j w_ij u_j over the 8 neighbours (zero outside), over the last two dims.

    The stencil [[1, 2, 1], [2, 0, 2], [1, 2, 1]] / 12 is the separable [1, 2, 1] x [1, 2, 1]
    minus 4 times the centre: 4 shifted adds, in place."""
    return _separable_sum(u).add_(u, alpha=-4.0).mul_(CORNER_WEIGHT)


def _fine_operator(m: torch.Tensor, D: torch.Tensor):
    """x -> m * (D x - S x) for x (n, C, H, W) zero outside the removed pixels m (n, 1, H, W):
    the system's matrix (D (1, 1, H, W): the in-image weight sums). With S x = (sep(x) - 4x)/12:
    (D + 1/3) x - sep(x) / 12."""
    D3 = D + 4.0 * CORNER_WEIGHT

    def apply(x: torch.Tensor) -> torch.Tensor:
        return _separable_sum(x).mul_(-CORNER_WEIGHT).addcmul_(D3, x).mul_(m)
    return apply


class _Level:
    """One grid of the multigrid hierarchy: its operator (the finest: the stencil with the
    masks; coarser: Galerkin 9-point coefficients), its active (unknown) pixels and 1/diagonal."""

    def __init__(self, apply, active: torch.Tensor, diag: torch.Tensor,
                 coefs: torch.Tensor | None = None) -> None:
        self.apply, self.active, self.coefs = apply, active, coefs
        safe = torch.where(active > 0, diag, torch.ones_like(diag))
        self.inv_diag = active / safe
        self.chol: torch.Tensor | None = None


#: Damped Jacobi weights (finest level, coarser levels) and sweeps before / after the coarse
#: correction: measured fastest on Grad-CAM masks of 224 x 224 images (benchmarks/bench_road.py).
_OMEGA, _SWEEPS = (1.0, 0.9), 1
#: The 9 offsets of a coefficient stencil, row-major; index 4 is the centre.
_OFFSETS = [(dr, dc) for dr in (-1, 0, 1) for dc in (-1, 0, 1)]


def _stencil_operator(coefs: torch.Tensor):
    """x -> y, y_K = sum_off c_off(K) x_{K + off} (zero outside), x (n, C, H, W), c (n, 9, H, W)."""
    H, W = coefs.shape[-2:]

    def apply(x: torch.Tensor) -> torch.Tensor:
        p = F.pad(x, (1, 1, 1, 1))
        y = x * coefs[:, 4:5]
        for k, (dr, dc) in enumerate(_OFFSETS):
            if k != 4:
                y.addcmul_(coefs[:, k: k + 1], p[..., 1 + dr: 1 + dr + H, 1 + dc: 1 + dc + W])
        return y
    return apply


def _prolong(x: torch.Tensor, fine_active: torch.Tensor) -> torch.Tensor:
    """Bilinear interpolation, vertex-centred (coarse I is fine 2I): (.., h, w) -> (.., 2h-1,
    2w-1), zero outside the fine active pixels."""
    *lead, h, w = x.shape
    t = x.new_empty(*lead, 2 * h - 1, w)
    t[..., ::2, :] = x
    torch.add(x[..., :-1, :], x[..., 1:, :], out=t[..., 1::2, :])
    t[..., 1::2, :].mul_(0.5)
    y = x.new_empty(*lead, 2 * h - 1, 2 * w - 1)
    y[..., ::2] = t
    torch.add(t[..., :-1], t[..., 1:], out=y[..., 1::2])
    y[..., 1::2].mul_(0.5)
    return y.mul_(fine_active)


def _restrict(r: torch.Tensor, fine_active: torch.Tensor) -> torch.Tensor:
    """The transpose of :func:`_prolong`: (.., 2h-1, 2w-1) -> (.., h, w)."""
    r = r * fine_active
    t = r[..., ::2, :].clone()
    odd = r[..., 1::2, :].mul(0.5)
    t[..., :-1, :].add_(odd)
    t[..., 1:, :].add_(odd)
    y = t[..., ::2].clone()
    odd = t[..., 1::2].mul(0.5)
    y[..., :-1].add_(odd)
    y[..., 1:].add_(odd)
    return y


def _probe(apply, n: int, H: int, W: int, like: torch.Tensor) -> torch.Tensor:
    """The 9 coefficients (n, 9, H, W) of a 9-point operator known only by ``apply`` (on
    (n, 9, H, W)): one probe per colour (r mod 3, c mod 3), all 9 at once as channels."""
    rr = torch.arange(H, device=like.device)[:, None] % 3
    cc = torch.arange(W, device=like.device)[None, :] % 3
    colour = rr * 3 + cc
    probes = (colour[None] == torch.arange(9, device=like.device)[:, None, None]).to(like.dtype)
    y = apply(probes[None].expand(n, 9, H, W).contiguous())
    coefs = []
    for dr, dc in _OFFSETS:
        idx = ((rr + dr) % 3) * 3 + (cc + dc) % 3
        c = y.gather(1, idx[None, None].expand(n, 1, H, W))
        if dr:
            c[..., 0 if dr < 0 else H - 1, :] = 0
        if dc:
            c[..., 0 if dc < 0 else W - 1] = 0
        coefs.append(c)
    return torch.cat(coefs, dim=1)


def _cholesky(coefs: torch.Tensor, active: torch.Tensor) -> torch.Tensor:
    """Dense float64 Cholesky factors (n, HW, HW) of the coarsest operator (inactive pixels:
    identity)."""
    n, _, H, W = coefs.shape
    N = H * W
    coefs, active = coefs.double(), active.double()
    A = coefs.new_zeros(n, N, N)
    rows = torch.arange(N, device=coefs.device).view(H, W)
    for k, (dr, dc) in enumerate(_OFFSETS):
        r0, r1 = max(0, -dr), H - max(0, dr)
        c0, c1 = max(0, -dc), W - max(0, dc)
        i = rows[r0:r1, c0:c1].reshape(-1)
        j = rows[r0 + dr:r1 + dr, c0 + dc:c1 + dc].reshape(-1)
        A[:, i, j] = coefs[:, k, r0:r1, c0:c1].reshape(n, -1)
    act = active.reshape(n, N)
    A = 0.5 * (A + A.transpose(1, 2)) * act[:, :, None] * act[:, None, :]
    scale = A.diagonal(dim1=1, dim2=2).abs().amax(dim=1).clamp_min(1.0)
    # the coefficients are float32 (preconditioner precision): a shift of 1e-5 keeps a singular
    # (all removed) or barely definite system factorable; CG corrects the inexact solve
    A = A + torch.diag_embed((1.0 - act) + 1e-5 * scale[:, None])
    return torch.linalg.cholesky(A)


def _hierarchy(m: torch.Tensor, D: torch.Tensor, levels: int) -> list[_Level]:
    """The levels, finest first, for masks ``m`` (n, 1, H, W) on a grid whose sides are
    m * 2**levels + 1 (pixels outside the image are inactive), in ``m``'s dtype."""
    out = [_Level(_fine_operator(m, D), m, D.expand_as(m))]
    for _ in range(levels):
        f = out[-1]
        n, _, H, W = f.active.shape

        def galerkin(x: torch.Tensor, f: _Level = f) -> torch.Tensor:
            return _restrict(f.apply(_prolong(x, f.active)), f.active)

        coefs = _probe(galerkin, n, (H + 1) // 2, (W + 1) // 2, m)
        diag = coefs[:, 4:5]
        tiny = 1e-6 * diag.amax(dim=(2, 3), keepdim=True).clamp_min(1e-30)
        active = (diag > tiny).to(m.dtype)
        coefs.mul_(active)
        out.append(_Level(_stencil_operator(coefs), active, diag, coefs))
    last = out[-1]
    if last.coefs is None:
        n, _, H, W = m.shape
        last.coefs = _probe(last.apply, n, H, W, m)
    last.chol = _cholesky(last.coefs, last.active)
    return out


def _vcycle(levels: list[_Level], r: torch.Tensor, l: int = 0) -> torch.Tensor:
    """One V(1, 1)-cycle from zero, damped Jacobi smoothing, exact coarsest solve: a symmetric
    positive definite preconditioner."""
    lv = levels[l]
    if lv.chol is not None:
        n, C, H, W = r.shape
        rhs = (r * lv.active).reshape(n, C, H * W).transpose(1, 2).double()
        x = torch.cholesky_solve(rhs, lv.chol).transpose(1, 2).reshape(n, C, H, W)
        return x.to(r.dtype).mul_(lv.active)
    w = _OMEGA[0] if l == 0 else _OMEGA[1]
    x = r * lv.inv_diag
    if w != 1.0:
        x.mul_(w)
    for _ in range(_SWEEPS - 1):
        x.addcmul_(lv.inv_diag, r - lv.apply(x), value=w)
    x.add_(_prolong(_vcycle(levels, _restrict(r - lv.apply(x), lv.active), l + 1), lv.active))
    for _ in range(_SWEEPS):
        x.addcmul_(lv.inv_diag, r - lv.apply(x), value=w)
    return x


def _pcg(apply, levels: list[_Level], b: torch.Tensor, tol: float, max_iter: int
         ) -> tuple[torch.Tensor, int, torch.Tensor]:
    """Multigrid-preconditioned CG (float64; the preconditioner in the levels' dtype, hence
    the flexible Polak-Ribiere beta) on every (mask, channel) system at once, each stopping when
    its relative residual is below ``tol``. Returns x, the iterations, the residuals (n, C)."""
    dims = (2, 3)
    b_norm = torch.linalg.vector_norm(b, dim=dims)
    scale = torch.where(b_norm > 0, b_norm, torch.ones_like(b_norm))
    low = levels[0].active.dtype

    def precondition(r: torch.Tensor) -> torch.Tensor:
        return _vcycle(levels, r.to(low)).to(r.dtype)

    x = torch.zeros_like(b)
    r = b.clone()
    res = b_norm / scale
    z = precondition(r)
    p = z.clone()
    rz = (r * z).sum(dim=dims)
    it = 0
    while it < max_iter and bool((res > tol).any()):
        q = apply(p)
        pq = (p * q).sum(dim=dims)
        go = (res > tol) & (pq > 0)
        alpha = torch.where(go, rz / torch.where(pq > 0, pq, torch.ones_like(pq)),
                            torch.zeros_like(pq))[..., None, None]
        x.addcmul_(alpha, p)
        r.addcmul_(alpha, q, value=-1.0)
        res = torch.linalg.vector_norm(r, dim=dims) / scale
        it += 1
        if not bool((res > tol).any()):
            break
        z_new = precondition(r)
        rz_new = (r * z_new).sum(dim=dims)
        pr = rz_new - (r * z).sum(dim=dims)
        beta = torch.where(rz > 0, pr / torch.where(rz > 0, rz, torch.ones_like(rz)),
                           torch.zeros_like(rz)).clamp_min(0.0)[..., None, None]
        p.mul_(beta).add_(z_new)
        z, rz = z_new, rz_new
    return x, it, res


def _levels_and_size(H: int, W: int) -> tuple[int, int, int]:
    """Halvings and the padded grid (sides m * 2**L + 1 >= the image's) so that the coarsest
    grid has at most about 8 pixels a side."""
    L = 0
    while (max(H, W) - 1) / 2 ** L > 8:
        L += 1
    step = 2 ** L
    return L, -(-(H - 1) // step) * step + 1, -(-(W - 1) // step) * step + 1


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
                  max_iter: int = 200, dtype: torch.dtype = torch.float64,
                  precond_dtype: torch.dtype = torch.float32
                  ) -> tuple[torch.Tensor, ImputeInfo]:
    """The noise-free linear imputation of ``images`` (N, C, H, W) where ``removed`` (N, H, W;
    or (H, W) for every image) is 1 (or True), on the images' device; returns the imputed images
    in the images' dtype and an :class:`ImputeInfo`. ``tol``: relative residual of every
    (image, channel) system; ``max_iter``: preconditioned CG iterations at most (not reaching
    ``tol`` is reported in ``info.converged``, not raised); ``dtype``: the CG's (float64; float32
    is faster, with errors up to ~1e-4); ``precond_dtype``: the multigrid preconditioner's."""
    removed = _check(images, removed)
    N, C, H, W = images.shape
    dev = images.device
    v = images.detach().to(dtype)
    m = (removed.detach().to(dev) > 0.5).to(dtype)[:, None]
    info = ImputeInfo()
    if not bool(m.any()):
        info.iterations = [0]
        return images.clone(), info
    L, Hp, Wp = _levels_and_size(H, W)
    pad = (0, Wp - W, 0, Hp - H)
    D = _neighbour_sum(torch.ones(1, H, W, dtype=dtype, device=dev))[:, None]
    b = m * _neighbour_sum(((1.0 - m) * v).reshape(N * C, H, W)).reshape(N, C, H, W)
    mp, Dp, bp = F.pad(m, pad), F.pad(D, pad, value=1.0), F.pad(b, pad)
    levels = _hierarchy(mp.to(precond_dtype), Dp.to(precond_dtype), L)
    x, it, res = _pcg(_fine_operator(mp, Dp), levels, bp, tol, max_iter)
    info.iterations = [it]
    info.converged = bool((res <= tol).all())
    info.residual = res
    out = torch.where(m > 0, x[..., :H, :W], v)
    return out.to(images.dtype), info


def noisy_linear_impute(images: torch.Tensor, removed: torch.Tensor, noise: float = 0.01,
                        generator: torch.Generator | None = None, tol: float = 1e-6,
                        max_iter: int = 200) -> torch.Tensor:
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
