"""Control maps: saliency maps that carry no information about the black box.

A faithfulness metric that a map with no information about the model can win is not evidence
for a method (Poppi et al., "Revisiting the evaluation of class activation mapping for
explainability: a novel metric and experimental analysis", CVPRW 2021, introduced Fake-CAM for
this reason). Each control is a registered method of role ``control`` (:data:`paperlib.cam.ROLES`):
it is evaluated like every CAM -- Tables 3-4, deletion / insertion, every read-out, the figures --
but the claim check never counts it as a baseline; :func:`paperlib.tables.control_check` says,
for every other method, whether it beats every control on each metric.

* ``fakecam``: Fake-CAM (Poppi et al. 2021): 1 everywhere except the top-left pixel, 0. Its soft
  map keeps the whole image but one pixel.
* ``random-map``: a seeded uniform random map at the target layer's resolution, upsampled like a
  CAM (one pattern per (seed, size): the same for every image, so that it cannot depend on the
  batch an image falls in).
* ``centre-prior``: an isotropic Gaussian centred on the image, standard deviation
  ``centre_std`` times the image's side (objects in ImageNet photos tend to be central).
* ``edge-map``: the Sobel gradient magnitude of the image's luminance (image structure, no model).

They use the shared gradient pass only for its images and shapes.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from .cam import NoOptions, Pass, register_method
from .checks import check_fields, checked

__all__ = ["CentrePriorOptions", "CONTROLS", "centre_prior", "edge_map", "fake_map",
           "random_map"]

#: The control methods, in registration order.
CONTROLS = ("fakecam", "random-map", "centre-prior", "edge-map")
#: Luminance weights (ITU-R BT.601) of the edge map.
LUMA = (0.299, 0.587, 0.114)


def _size(p: Pass) -> tuple[int, int, int]:
    return int(p.images.shape[0]), int(p.images.shape[-2]), int(p.images.shape[-1])


def fake_map(batch: int, height: int, width: int, device: torch.device | str = "cpu",
             dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """(B, H, W) Fake-CAM maps: ones, the top-left pixel zero."""
    out = torch.ones(batch, height, width, device=device, dtype=dtype)
    out[:, 0, 0] = 0
    return out


def random_map(batch: int, height: int, width: int, seed: int,
               device: torch.device | str = "cpu", dtype: torch.dtype = torch.float32
               ) -> torch.Tensor:
    """(B, h, w): one uniform [0, 1) pattern drawn from a CPU generator seeded with ``seed``
    (the same on every device), repeated for the ``batch`` images."""
    gen = torch.Generator().manual_seed(int(seed))
    pattern = torch.rand(height, width, generator=gen, dtype=torch.float64)
    return pattern.to(device=device, dtype=dtype).expand(batch, height, width).clone()


def centre_prior(batch: int, height: int, width: int, std: float,
                 device: torch.device | str = "cpu", dtype: torch.dtype = torch.float32
                 ) -> torch.Tensor:
    """(B, H, W): exp(-d^2 / 2 s^2) with d the distance (in pixels) from the image's centre and
    s = ``std`` x the image's shorter side."""
    s = std * min(height, width)
    y = torch.arange(height, device=device, dtype=torch.float64) - (height - 1) / 2
    x = torch.arange(width, device=device, dtype=torch.float64) - (width - 1) / 2
    d2 = y[:, None] ** 2 + x[None, :] ** 2
    return torch.exp(-d2 / (2 * s * s)).to(dtype).expand(batch, height, width).clone()


def edge_map(images: torch.Tensor) -> torch.Tensor:
    """(B, H, W): |Sobel| of the luminance of (B, 3, H, W) images, replicate-padded (so the
    border gets no false edge)."""
    w = torch.tensor(LUMA, device=images.device, dtype=images.dtype).view(1, 3, 1, 1)
    lum = (images * w).sum(dim=1, keepdim=True)
    kx = torch.tensor([[-1.0, 0.0, 1.0], [-2.0, 0.0, 2.0], [-1.0, 0.0, 1.0]],
                      device=images.device, dtype=images.dtype)
    kernels = torch.stack([kx, kx.t()])[:, None]           # (2, 1, 3, 3)
    g = F.conv2d(F.pad(lum, (1, 1, 1, 1), mode="replicate"), kernels)
    return g.pow(2).sum(dim=1).sqrt()


@dataclass
class CentrePriorOptions:
    """The centre prior's parameter.

    Attributes:
        centre_std: the Gaussian's standard deviation as a fraction of the image's shorter side
            (> 0).
    """

    centre_std: float = checked(0.25, low=0, low_open=True)

    def __post_init__(self) -> None:
        check_fields(self)


@register_method("fakecam", label="Fake-CAM (control)", role="control")
def _fakecam(p: Pass, o: NoOptions) -> torch.Tensor:
    """Fake-CAM (Poppi et al., CVPRW 2021): 1 at every pixel but the top-left one, which is 0.

    Masking by it keeps the image intact but one pixel: its Average Drop is near 0 and its %
    Increase near the share of images whose score a one-pixel change raises, without any
    information about the black box.
    """
    B, H, W = _size(p)
    return fake_map(B, H, W, p.images.device, p.A.dtype)


@register_method("random-map", label="random map (control)", role="control")
def _random_map(p: Pass, o: NoOptions) -> torch.Tensor:
    """A seeded uniform random map at the target layer's resolution (h, w), upsampled like a
    CAM: one pattern per (``seed``, size), the same for every image."""
    B = int(p.images.shape[0])
    h, w = int(p.A.shape[-2]), int(p.A.shape[-1])
    return random_map(B, h, w, p.options.seed, p.images.device, p.A.dtype)


@register_method("centre-prior", label="centre prior (control)", role="control",
                 options=CentrePriorOptions)
def _centre_prior(p: Pass, o: CentrePriorOptions) -> torch.Tensor:
    """A centred isotropic Gaussian, standard deviation ``centre_std`` x the shorter side."""
    B, H, W = _size(p)
    return centre_prior(B, H, W, o.centre_std, p.images.device, p.A.dtype)


@register_method("edge-map", label="edge map (control)", role="control")
def _edge_map(p: Pass, o: NoOptions) -> torch.Tensor:
    """The Sobel gradient magnitude of the image's luminance (0.299 R + 0.587 G + 0.114 B)."""
    return edge_map(p.images.to(p.A.dtype))
