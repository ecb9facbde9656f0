"""The kit's one masking routine and the masks it is given: below explanations and metrics alike.

An explanation input is ``E = x * M + fill * (1 - M)`` on the image **in [0, 1], before
normalisation** (the black boxes normalise inside). Score-CAM's channel masks, the attention
objective, the held-out criterion and every metric call :func:`masked_inputs`; nothing else
multiplies images by masks.

* fills (:func:`fill_images`): ``black`` (0: ``E = x * M``, the paper's words), ``normalised``
  (the black box's normalisation mean: what multiplying the *normalised* tensor by M does, as the
  public Average Drop implementations -- torchcam, pytorch-grad-cam, ADCC -- do), ``mean`` (the
  image's own mean colour) or ``blur`` (the image blurred, RISE's insertion baseline); or a
  value (a float, or a tensor broadcastable to the images) or a callable
  ``(images, normalisation_mean) -> fill images`` (:data:`Fill`, :func:`fill_key`);
* top-k masks (:func:`keep_top`): exactly ``round(k/100 * H*W)`` pixels kept, ranked by
  :func:`pixel_ranks` (most salient first, ties broken by pixel index, lower first).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
import torchvision.transforms.functional as TF

__all__ = ["FILLS", "Fill", "blurred", "check_fill", "fill_images", "fill_key", "keep_top",
           "masked_inputs", "n_pixels", "pixel_ranks"]

FILLS = ("black", "normalised", "mean", "blur")
#: A fill: a named one (:data:`FILLS`), a value, or ``(images, normalisation_mean) -> fills``.
Fill = str | float | torch.Tensor | Callable[[torch.Tensor, Sequence[float] | None],
                                            torch.Tensor]
_BLUR_KERNEL, _BLUR_SIGMA = 11, 5.0  # RISE's insertion baseline


def masked_inputs(images: torch.Tensor, masks: torch.Tensor,
                  fills: torch.Tensor | None = None) -> torch.Tensor:
    """``x * M + fill * (1 - M)`` with M (B, H, W) in [0, 1].

    ``fills=None`` is the black fill: ``x * M`` (differentiable in M, as training needs).
    """
    m = masks[:, None].to(images.dtype)
    if fills is None:
        return images * m
    return images * m + fills * (1 - m)


def blurred(images: torch.Tensor) -> torch.Tensor:
    """Gaussian blur (kernel 11, sigma 5, reflect padding): RISE's insertion baseline.

    Images smaller than 6 pixels get the largest kernel reflect padding allows (2 * size - 1).
    """
    kernel = min(_BLUR_KERNEL, 2 * min(images.shape[-2:]) - 1)
    return TF.gaussian_blur(images, kernel_size=kernel, sigma=_BLUR_SIGMA)


def check_fill(fill: object) -> Fill:
    """``fill`` if it is a :data:`Fill`, else a ``ValueError`` naming it."""
    if isinstance(fill, str):
        if fill not in FILLS:
            raise ValueError(f"unknown fill {fill!r}; expected one of {FILLS}, a value or a "
                             "callable (images, normalisation_mean) -> fill images")
        return fill
    if isinstance(fill, bool) or not (isinstance(fill, (int, float, torch.Tensor))
                                      or callable(fill)):
        raise ValueError(f"unknown fill {fill!r}; expected one of {FILLS}, a value or a "
                         "callable (images, normalisation_mean) -> fill images")
    return fill


def fill_key(fill: Fill) -> str | float | list:
    """How a fill enters a results key: its name, its value (a float, a tensor's values as a
    nested list), or a callable's qualified name ``module.qualname`` (its code is not
    fingerprinted: rename a callable fill whose code changes)."""
    check_fill(fill)
    if isinstance(fill, str):
        return fill
    if isinstance(fill, torch.Tensor):
        return fill.detach().cpu().tolist()
    if isinstance(fill, (int, float)):
        return float(fill)
    return f"{getattr(fill, '__module__', '?')}.{getattr(fill, '__qualname__', repr(fill))}"


def fill_images(images: torch.Tensor, fill: Fill,
                normalisation_mean: Sequence[float] | None = None) -> torch.Tensor:
    """What removed pixels become: black (0), the black box's normalisation mean, the image's
    mean colour, the image blurred; a value; or what a callable makes of the images.

    ``normalised``: with N(x) = (x - mu) / sigma the black box's normalisation,
    N(x * M + mu * (1 - M)) = N(x) * M, i.e. the fill that multiplying the normalised tensor by
    M amounts to; it needs ``normalisation_mean`` (mu, one value per channel). A value: a float,
    or a tensor broadcastable to the images (a 1-D one of one value per channel is taken per
    channel). A callable: ``fill(images, normalisation_mean)`` must return the images' shape.
    """
    check_fill(fill)
    if isinstance(fill, str):
        if fill == "black":
            return torch.zeros_like(images)
        if fill == "normalised":
            if normalisation_mean is None:
                raise ValueError("fill='normalised' needs the black box's normalisation mean")
            mu = torch.as_tensor(normalisation_mean, dtype=images.dtype, device=images.device)
            if mu.numel() != images.shape[1]:
                raise ValueError(f"normalisation mean {tuple(normalisation_mean)} has "
                                 f"{mu.numel()} values for {images.shape[1]} channels")
            return mu.view(1, -1, 1, 1).expand_as(images)
        if fill == "mean":
            return images.mean(dim=(2, 3), keepdim=True).expand_as(images)
        return blurred(images)
    if isinstance(fill, (int, float, torch.Tensor)):
        value = torch.as_tensor(fill, dtype=images.dtype, device=images.device)
        if value.dim() == 1 and value.numel() == images.shape[1]:
            value = value.view(1, -1, 1, 1)
        try:
            return value.expand_as(images)
        except RuntimeError:
            raise ValueError(f"fill tensor of shape {tuple(value.shape)} does not broadcast to "
                             f"the images' shape {tuple(images.shape)}") from None
    out = fill(images, normalisation_mean)
    if not isinstance(out, torch.Tensor) or out.shape != images.shape:
        shape = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
        raise ValueError(f"fill {fill_key(fill)} returned {shape}; expected a tensor of the "
                         f"images' shape {tuple(images.shape)}")
    return out.to(device=images.device, dtype=images.dtype)


def pixel_ranks(maps: torch.Tensor) -> torch.Tensor:
    """(B, H, W) -> (B, H*W) rank of each pixel, 0 = most salient; ties: lower index first."""
    flat = maps.flatten(1)
    order = torch.argsort(flat, dim=1, descending=True, stable=True)
    ranks = torch.empty_like(order)
    ranks.scatter_(1, order, torch.arange(flat.shape[1], device=flat.device).expand_as(order))
    return ranks


def keep_top(ranks: torch.Tensor, n: int | torch.Tensor, shape: tuple[int, int]) -> torch.Tensor:
    """Binary (B, H, W) masks keeping the ``n`` top-ranked pixels of each map."""
    n = torch.as_tensor(n, device=ranks.device).view(-1, 1)
    return (ranks < n).view(-1, *shape).to(torch.float32)


def n_pixels(fraction_percent: float, total: int) -> int:
    """How many pixels k% of ``total`` is: ``round(k/100 * total)``."""
    return int(round(fraction_percent / 100.0 * total))
