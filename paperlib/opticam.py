"""Opti-CAM (Zhang et al., "Opti-CAM: Optimizing saliency maps for interpretability", CVIU 248,
2024; arXiv:2301.07002): channel weights optimised per image so that the image masked by its own
saliency map scores the target class as high as possible.

With F_k = ReLU(A_k) the target layer's channels and u (C,) one image's free variables,

    S(u) = n(up(sum_k softmax(u)_k F_k)),        u* = argmax_u  f_c(x * S(u)),

where ``up`` is bilinear upsampling to the input size, ``n`` min-max normalisation to [0, 1] per
image and f_c the target's logit (``opticam_objective="logit"``, the paper's objective and the
reference code's default; ``"probability"`` uses the target's softmax probability instead). The
map is S(u*) after the last Adam step.

Defaults, from the authors' code (github.com/hanwei0912/OptiCAM, commit 964ad14):

* Adam (torch defaults: betas (0.9, 0.999), eps 1e-8) on u, learning rate 0.1 and 50 iterations:
  the defaults of ``generate_opticam.py``'s command line (``--max_iter 50``,
  ``--learning_rate 0.1``), the script the README runs (``demo.sh``). The class
  ``util.Basic_OptCAM`` itself defaults to ``max_iter=100, learning_rate=0.01``; the script
  overrides both.
* u initialised to 0.5 for every channel (``util.Basic_OptCAM.forward``): uniform weights. Softmax
  and hence every Adam update are invariant to a constant shift of u, so any constant start gives
  the same maps.
* ``name_f="logit_predict"``, ``name_loss="plain"``: loss = sum_b (f_c(x_b) - f_c(x_b * S_b)),
  summed over the batch; the constant first term has no gradient, so it maximises the masked
  logit, each image through its own u (Adam is element-wise: a batch is B independent problems).
* ``name_norm="max_min"`` and the features ReLU'd before the weighted sum, as here.
* Masking: the reference puts its normalisation layer inside the model (``Preprocessing_Layer``
  in front of the ResNet) and feeds ``ToTensor`` images, so it masks the **[0, 1] image**: a black
  fill. The kit does the same, with its one masking routine
  (:func:`paperlib.masking.masked_inputs`, ``x * M``) on the [0, 1] images the black boxes take
  (they normalise inside); it is also how the kit's metrics mask, so the objective optimised is
  the one Average Drop / Increase measures.

Where the kit departs from the reference code:

* No early stop. The reference checks every ``max_iter // 10`` steps whether the *batch-summed*
  loss rose since the last check and then returns the map of that step for the whole batch, so an
  image's map depends on the batch it was computed in. The kit always runs
  ``opticam_iterations`` steps and returns the map of the final u.
* A constant (flat) map normalises to all zeros (:func:`paperlib.cam.normalize_maps`), not NaN.
* The target is the class :func:`paperlib.explain` explains (given targets, else the predicted
  class); the reference's script passes the dataset labels.

Cost: ``opticam_iterations`` forwards and backwards of the whole network per image (counted in
``Pass.forwards["opticam"]``), in chunks of ``chunk_size`` images. The model stays in eval mode
and its parameters are frozen meanwhile (no ``requires_grad``, no ``.grad`` left on them).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from .cam import Pass, normalize_maps, register_method, upsample
from .checks import check_fields, checked
from .hooks import eval_mode, frozen_parameters
from .masking import masked_inputs

__all__ = ["OBJECTIVES", "OptiCAMOptions", "opticam_maps", "opticam_optimise",
           "opticam_saliency", "opticam_scores"]

#: The objectives Opti-CAM can maximise on the masked image: the target's logit (the paper's)
#: or its softmax probability.
OBJECTIVES = ("logit", "probability")


@dataclass
class OptiCAMOptions:
    """Opti-CAM's parameters.

    Attributes:
        opticam_iterations: Adam steps per image (default 50, the reference script's
            ``--max_iter``); 0 gives the uniform weights of the start (the mean of the ReLU'd
            channels).
        opticam_lr: Adam's learning rate (default 0.1, the reference script's
            ``--learning_rate``).
        opticam_objective: what is maximised on the masked image: ``"logit"`` (default, the
            paper's) or ``"probability"`` (the target's softmax probability).
    """

    opticam_iterations: int = checked(50, integer=True, low=0)
    opticam_lr: float = checked(0.1, low=0, low_open=True)
    opticam_objective: str = "logit"

    def __post_init__(self) -> None:
        check_fields(self)
        if self.opticam_objective not in OBJECTIVES:
            raise ValueError(f"opticam_objective must be one of {OBJECTIVES}, got "
                             f"{self.opticam_objective!r}")


def opticam_saliency(A: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
    """sum_k softmax(u)_k ReLU(A_k): (B, C, h, w), (B, C) -> (B, h, w), before upsampling."""
    return torch.einsum("bc,bchw->bhw", u.softmax(dim=1), A.clamp(min=0))


def opticam_maps(A: torch.Tensor, u: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """S(u) = n(up(sum_k softmax(u)_k ReLU(A_k))): the (B, H, W) masks, in [0, 1]."""
    return normalize_maps(upsample(opticam_saliency(A, u), size))[0]


def opticam_scores(logits: torch.Tensor, targets: torch.Tensor, objective: str) -> torch.Tensor:
    """(B,) the objective of each image: its target's logit or softmax probability."""
    if objective not in OBJECTIVES:
        raise ValueError(f"opticam_objective must be one of {OBJECTIVES}, got {objective!r}")
    scores = logits.softmax(dim=1) if objective == "probability" else logits
    return scores.gather(1, targets.view(-1, 1)).view(-1)


def opticam_optimise(model: nn.Module, images: torch.Tensor, targets: torch.Tensor,
                     A: torch.Tensor, options: OptiCAMOptions | None = None,
                     chunk_size: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Optimise Opti-CAM's u for a batch; returns (u (B, C), trace (iterations, B)).

    ``model`` takes the (B, 3, H, W) ``images`` in [0, 1] (a black box's ``model``); ``A`` is
    the (B, C, h, w) target-layer activations of the clean images. Each chunk of ``chunk_size``
    images (default: the whole batch) has one Adam over its (n, C) u, maximising the sum over its
    images of :func:`opticam_scores` of ``x * S(u)`` (so each image follows its own gradient).
    ``trace[t]`` is each image's objective at the u of step t, before that step's update. The
    model runs in eval mode with its parameters frozen; their ``.grad`` are never touched.
    """
    o = options or OptiCAMOptions()
    B, C = A.shape[:2]
    size = (int(images.shape[-2]), int(images.shape[-1]))
    step = B if chunk_size is None else max(1, int(chunk_size))
    A = A.detach()
    u_all = torch.empty(B, C, device=A.device, dtype=A.dtype)
    trace = torch.empty(o.opticam_iterations, B, device=A.device, dtype=A.dtype)
    with eval_mode(model), frozen_parameters(model), torch.enable_grad():
        for start in range(0, B, step):
            sl = slice(start, min(B, start + step))
            x, t, a = images[sl].detach(), targets[sl], A[sl]
            u = torch.full((a.shape[0], C), 0.5, device=A.device, dtype=A.dtype,
                           requires_grad=True)
            adam = torch.optim.Adam([u], lr=o.opticam_lr)
            for it in range(o.opticam_iterations):
                score = opticam_scores(model(masked_inputs(x, opticam_maps(a, u, size))), t,
                                       o.opticam_objective)
                (grad,) = torch.autograd.grad(-score.sum(), u)  # Adam minimises: -objective
                u.grad = grad
                adam.step()
                trace[it, sl] = score.detach().to(A.dtype)
            u_all[sl] = u.detach()
    return u_all, trace


@register_method("opticam", label="Opti-CAM", role="extra", options=OptiCAMOptions,
                 extra_forwards=True, studies=False)
def _opticam(p: Pass, o: OptiCAMOptions) -> torch.Tensor:
    """Opti-CAM (Zhang et al. 2024): S = n(up(sum_k softmax(u*)_k ReLU(A_k))) with u* maximising
    the target's logit of x * S by Adam (lr 0.1, 50 steps from uniform weights: the authors'
    defaults).

    Returned before upsampling (sum_k softmax(u*)_k ReLU(A_k), >= 0), so the pipeline's ReLU,
    bilinear upsampling and min-max give exactly the map that was optimised. Extra forwards:
    ``opticam_iterations`` forward+backward passes per image. See :mod:`paperlib.opticam` for
    the reference code's defaults and where the kit departs from it (no early stop).
    """
    u, _ = opticam_optimise(p.black_box.model, p.images, p.targets, p.A, o,
                            p.options.chunk_size)
    p.forwards["opticam"] = o.opticam_iterations * int(p.images.shape[0])
    return opticam_saliency(p.A, u)
