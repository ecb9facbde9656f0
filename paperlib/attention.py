"""The paper's method: channel + spatial attention (CBAM-style) over Grad-CAM's per-channel terms.

An & Joe (2022), Sections 3.2-3.3. With F = (w_k A_k)_k (C x h x w), Grad-CAM's per-channel
contributions at the target layer (from the same pass as every baseline):

* channel attention (Eq. 6):  Mc = sigmoid(MLP(AvgPool(F)) + MLP(MaxPool(F))),  F' = Mc * F,
  one MLP C -> C/r -> C (ReLU between, r = 16) shared by both pooled vectors;
* spatial attention (Eq. 7):  Ms = sigmoid(conv7x7([AvgPool_c(F'); MaxPool_c(F')])), padding 3,
  F'' = Ms * F';
* map: ReLU(sum_k F''_k), then the pipeline's upsampling and per-image min-max normalisation.

The paper does not say where the module's parameters come from. The kit offers three explicit
answers, each a method of :func:`paperlib.explain`:

``attention-fixed``
    Parameter-free: the MLP is the identity and the 7x7 kernel a plain average of the two pooled
    maps over the cells inside the map (no zero padding, which would add a centre prior). F is
    tiny (gradients at Lite0's last layer are ~1e-3), so raw sigmoids would all sit at ~0.5 and
    the variant would collapse into Grad-CAM. The gates are made scale-free by standardising each
    descriptor before its sigmoid: with z(v) = (v - mean v) / std v (population std over the C
    channels, resp. the h*w positions; z = 0 where v is constant),
    Mc = sigmoid(z(AvgPool F) + z(MaxPool F)) and
    Ms = sigmoid(z(mean7x7([AvgPool_c F'; MaxPool_c F']))).
``attention-trained``
    A learned MLP and 7x7 convolution, trained once per black box and target layer with the
    classifier frozen (:mod:`paperlib.attention_training`). Its inputs are standardised the same
    way (z of each pooled descriptor, z of each pooled spatial map) so training does not depend on
    F's scale. Checkpoints ship in ``paperlib/checkpoints/``.
``attention-per-image``
    The same learned module, its parameters fitted to each image for a fixed number of Adam steps
    with the training objective, starting from the trained checkpoint (or a seeded initialisation
    when the black box has none). Per-image parameters are batched: each image has its own copy
    and its own gradient, so a batch equals single calls.

Training objective (L-CAM / TAME style), on the [0, 1] map M at input resolution:
``CE(f(x * M), y_hat) + l_area * mean(M ** 0.3) + l_tv * TV(M)``, TV(M) the mean squared
difference of vertically and horizontally adjacent pixels; y_hat is the classifier's prediction.
"""

from __future__ import annotations

import functools
import json
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from .blackbox import BlackBox
from .cam import (
    MethodFiles,
    NoOptions,
    Pass,
    method_names,
    normalize_maps,
    register_method,
    safe_divide,
    upsample,
)
from .checks import check_fields, checked
from .hooks import eval_mode, frozen_parameters
from .masking import masked_inputs
from .paths import PACKAGE_DIR

__all__ = [
    "ATTENTION_METHODS",
    "AttentionModule",
    "PerImageOptions",
    "TrainedOptions",
    "AttentionOutput",
    "attention_objective",
    "checkpoint_path",
    "differentiable_map",
    "fixed_attention",
    "load_trained",
    "standardize",
]

KERNEL = 7
CHECKPOINT_DIR = PACKAGE_DIR / "checkpoints"


def standardize(v: torch.Tensor, dims: tuple[int, ...]) -> torch.Tensor:
    """z(v) = (v - mean) / std over ``dims`` (population std); exactly 0 where v is constant.

    "Constant" includes a spread at the level of float rounding (std <= 8 machine epsilons of
    max |v|): dividing such noise by itself would turn rounding errors into +-1 gates.
    """
    mean = v.mean(dim=dims, keepdim=True)
    std = v.var(dim=dims, keepdim=True, unbiased=False).sqrt()
    noise = 8 * torch.finfo(v.dtype).eps * v.abs().amax(dim=dims, keepdim=True)
    return safe_divide(v - mean, torch.where(std <= noise, torch.zeros_like(std), std))


def _channel_pool(F_: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """AvgPool and MaxPool over space: two (B, C) descriptors."""
    return F_.mean(dim=(2, 3)), F_.amax(dim=(2, 3))


def _spatial_pool(F_: torch.Tensor) -> torch.Tensor:
    """AvgPool_c and MaxPool_c over channels: (B, 2, h, w)."""
    return torch.cat([F_.mean(dim=1, keepdim=True), F_.amax(dim=1, keepdim=True)], dim=1)


@dataclass
class AttentionOutput:
    """F'' (B, C, h, w) with the gates that made it: Mc (B, C) and Ms (B, h, w)."""

    refined: torch.Tensor
    channel: torch.Tensor
    spatial: torch.Tensor

    @property
    def saliency(self) -> torch.Tensor:
        """sum_k F''_k (B, h, w), before the pipeline's ReLU."""
        return self.refined.sum(dim=1)


def fixed_attention(F_: torch.Tensor) -> AttentionOutput:
    """The parameter-free variant (module docstring): identity MLP, 7x7 mean, z-scored gates."""
    avg, mx = _channel_pool(F_)
    Mc = torch.sigmoid(standardize(avg, (1,)) + standardize(mx, (1,)))
    F1 = Mc[:, :, None, None] * F_
    # mean over the 7x7 window and both pooled maps, counting only cells inside the map: zero
    # padding would make central positions average more cells and give the gate a centre prior
    window = F.avg_pool2d(_spatial_pool(F1), KERNEL, stride=1, padding=KERNEL // 2,
                          count_include_pad=False)
    s = window.mean(dim=1, keepdim=True)  # (B, 1, h, w)
    Ms = torch.sigmoid(standardize(s, (1, 2, 3)))
    return AttentionOutput(Ms * F1, Mc, Ms[:, 0])


class AttentionModule(nn.Module):
    """The learned CBAM module over F (module docstring), with parameters batched over images.

    Every parameter has a leading dimension P: P = 1 shares one module across a batch (the
    ``trained`` variant), P = B gives each image its own (the ``per-image`` variant, see
    :meth:`per_image_copy`).
    """

    def __init__(self, channels: int, reduction: int = 16, copies: int = 1) -> None:
        super().__init__()
        hidden = max(1, channels // reduction)
        self.channels, self.reduction = channels, reduction
        self.w1 = nn.Parameter(torch.empty(copies, channels, hidden))
        self.b1 = nn.Parameter(torch.zeros(copies, hidden))
        self.w2 = nn.Parameter(torch.empty(copies, hidden, channels))
        self.b2 = nn.Parameter(torch.zeros(copies, channels))
        self.conv_w = nn.Parameter(torch.empty(copies, 2, KERNEL, KERNEL))
        self.conv_b = nn.Parameter(torch.zeros(copies))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        # nn.Linear / nn.Conv2d's default (Kaiming-uniform with a = sqrt(5)) bound: 1/sqrt(fan_in)
        for w, fan_in in ((self.w1, self.w1.shape[1]), (self.w2, self.w2.shape[1]),
                          (self.conv_w, 2 * KERNEL * KERNEL)):
            nn.init.uniform_(w, -1 / fan_in ** 0.5, 1 / fan_in ** 0.5)
        for b in (self.b1, self.b2, self.conv_b):
            nn.init.zeros_(b)

    @property
    def copies(self) -> int:
        return self.w1.shape[0]

    def _mlp(self, v: torch.Tensor) -> torch.Tensor:
        h = torch.relu(torch.matmul(v[:, None, :], self.w1)[:, 0] + self.b1)
        return torch.matmul(h[:, None, :], self.w2)[:, 0] + self.b2

    def forward(self, F_: torch.Tensor) -> AttentionOutput:
        B, C, h, w = F_.shape
        if C != self.channels:
            raise ValueError(f"attention module expects {self.channels} channels, got {C}")
        if self.copies not in (1, B):
            raise ValueError(f"module holds {self.copies} parameter copies for a batch of {B}")
        avg, mx = _channel_pool(F_)
        Mc = torch.sigmoid(self._mlp(standardize(avg, (1,))) + self._mlp(standardize(mx, (1,))))
        F1 = Mc[:, :, None, None] * F_
        pooled = standardize(_spatial_pool(F1), (2, 3))  # (B, 2, h, w)
        weight = self.conv_w.expand(B, -1, -1, -1)        # (B, 2, k, k): one group per image
        bias = self.conv_b.expand(B)
        s = F.conv2d(pooled.reshape(1, B * 2, h, w), weight, bias, padding=KERNEL // 2, groups=B)
        Ms = torch.sigmoid(s.view(B, 1, h, w))
        return AttentionOutput(Ms * F1, Mc, Ms[:, 0])

    def per_image_copy(self, batch: int) -> AttentionModule:
        """A module with ``batch`` independent copies of this one's (single) parameter set."""
        if self.copies != 1:
            raise ValueError("per_image_copy expects a module with one parameter copy")
        out = AttentionModule(self.channels, self.reduction, copies=batch).to(self.w1.device)
        with torch.no_grad():
            for (_, dst), (_, src) in zip(out.named_parameters(), self.named_parameters()):
                dst.copy_(src.expand_as(dst))
        return out


# ---------------------------------------------------------------------------------------------
# Objective shared by training and per-image fitting

def differentiable_map(saliency: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """The pipeline's map (ReLU, bilinear upsampling, per-image min-max), differentiable."""
    maps, _ = normalize_maps(upsample(saliency.clamp(min=0), size))
    return maps


def _area(M: torch.Tensor) -> torch.Tensor:
    """mean(M ** 0.3) per image; the power's infinite slope at 0 is kept out of the graph."""
    positive = M > 0
    safe = torch.where(positive, M, torch.ones_like(M))
    return torch.where(positive, safe ** 0.3, torch.zeros_like(M)).flatten(1).mean(dim=1)


def _tv(M: torch.Tensor) -> torch.Tensor:
    """Mean squared difference of vertically and of horizontally adjacent pixels, per image."""
    dv = (M[:, 1:, :] - M[:, :-1, :]).pow(2).flatten(1).mean(dim=1)
    dh = (M[:, :, 1:] - M[:, :, :-1]).pow(2).flatten(1).mean(dim=1)
    return dv + dh


def attention_objective(black_box: BlackBox, images: torch.Tensor, maps: torch.Tensor,
                        targets: torch.Tensor, l_area: float,
                        l_tv: float) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Per-image loss CE(f(x * M), y_hat) + l_area mean(M^0.3) + l_tv TV(M), and its parts."""
    logits = black_box.model(masked_inputs(images, maps))
    ce = F.cross_entropy(logits.float(), targets, reduction="none")
    area, tv = _area(maps), _tv(maps)
    return ce + l_area * area + l_tv * tv, {"ce": ce, "area": area, "tv": tv}


# ---------------------------------------------------------------------------------------------
# Checkpoints

def checkpoint_path(black_box: BlackBox) -> Path:
    """Where the ``trained`` checkpoint of this black box and target layer lives."""
    return CHECKPOINT_DIR / f"attention_{black_box.name}_{black_box.target_layer_name}.pt"


def save_checkpoint(module: AttentionModule, path: Path, config: dict) -> None:
    """State dict (``.pt``) plus its config, split, seed and record (``.json`` beside it)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({k: v.detach().cpu() for k, v in module.state_dict().items()}, path)
    path.with_suffix(".json").write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")


@functools.lru_cache(maxsize=8)
def _load_cached(path: str, device: str, mtime_ns: int) -> tuple[AttentionModule, str]:
    """The module at ``path`` (cached by path, device and modification time: a checkpoint
    retrained in place is read again)."""
    file = Path(path)
    if not file.is_file():
        raise FileNotFoundError(
            f"no trained attention checkpoint at {file}; train one with "
            "`paperlib train-attention --model <name>` (or pass checkpoint=path)")
    state = torch.load(file, map_location="cpu", weights_only=True)
    config = json.loads(file.with_suffix(".json").read_text())
    module = AttentionModule(config["channels"], config["reduction"])
    module.load_state_dict(state)
    module.requires_grad_(False)
    return module.to(device).eval(), json.dumps(config)


def load_trained(black_box: BlackBox, checkpoint: str | Path | None = None
                 ) -> tuple[AttentionModule, dict]:
    """The ``trained`` module for this black box (cached) and its config."""
    path = Path(checkpoint) if checkpoint is not None else checkpoint_path(black_box)
    mtime = path.stat().st_mtime_ns if path.is_file() else -1
    module, config = _load_cached(str(path.resolve()), str(black_box.device), mtime)
    return module, json.loads(config)


# ---------------------------------------------------------------------------------------------
# The three methods, registered with the CAM pipeline

@register_method("attention-fixed", label="Attention (fixed)", role="variant")
def _attention_fixed(p: Pass, o: NoOptions) -> torch.Tensor:
    """An & Joe (2022), Eq. 6-7, parameter-free: identity MLP, 7x7 window mean, z-scored gates
    (:func:`fixed_attention`) over Grad-CAM's terms F."""
    return fixed_attention(p.gradcam_terms).saliency


@dataclass
class TrainedOptions:
    """``attention-trained``'s parameters.

    Attributes:
        checkpoint: a checkpoint file; ``None``: the one shipped for the black box and layer
            (:func:`checkpoint_path`).
    """

    checkpoint: str | None = None


def _checkpoint_files(black_box: BlackBox, o: TrainedOptions | PerImageOptions) -> list[Path]:
    """The checkpoint a method reads: its ``checkpoint`` option, else :func:`checkpoint_path`."""
    return [Path(o.checkpoint) if o.checkpoint is not None else checkpoint_path(black_box)]


#: The trainer that makes a black box's missing checkpoint (on its dataset's training split).
_TRAINER = "paperlib.attention_training:ensure_trained"
_HOW = ("pass checkpoint=FILE (--checkpoint FILE); train one with "
        "paperlib.attention_training.train_attention and save it with "
        "paperlib.attention.save_checkpoint")


@register_method("attention-trained", label="Attention (trained)", role="variant",
                 options=TrainedOptions,
                 files=MethodFiles(_checkpoint_files, "a trained attention checkpoint", _HOW,
                                   make=_TRAINER))
def _attention_trained(p: Pass, o: TrainedOptions) -> torch.Tensor:
    """An & Joe (2022), Eq. 6-7, with a learned MLP and 7x7 convolution (checkpoint per black box
    and layer, :mod:`paperlib.attention_training`) over Grad-CAM's terms F."""
    module, _ = load_trained(p.black_box, o.checkpoint)
    with torch.no_grad():
        return module(p.gradcam_terms).saliency


@dataclass
class PerImageOptions:
    """``attention-per-image``'s parameters.

    Attributes:
        per_image_steps: Adam steps per image (default 10).
        per_image_lr: their learning rate (default 0.01).
        checkpoint: the starting point, as for ``attention-trained``.
    """

    per_image_steps: int = checked(10, integer=True, low=0)
    per_image_lr: float = checked(0.01, low=0, low_open=True)
    checkpoint: str | None = None

    def __post_init__(self) -> None:
        check_fields(self)


@register_method("attention-per-image", label="Attention (per-image)", role="variant",
                 options=PerImageOptions, extra_forwards=True,
                 files=MethodFiles(_checkpoint_files, "a trained attention checkpoint", _HOW,
                                   without="it starts from a seeded random initialisation",
                                   make=_TRAINER))
def _attention_per_image(p: Pass, o: PerImageOptions) -> torch.Tensor:
    """An & Joe (2022), Eq. 6-7, the module fitted to each image: ``per_image_steps`` Adam steps
    (lr ``per_image_lr``) on the training objective (:func:`attention_objective`).

    Starts from the trained checkpoint and uses its l_area / l_tv; without a checkpoint, from the
    seeded default initialisation with l_area = 1, l_tv = 0 (a warning says so).
    """
    bb, F_ = p.black_box, p.gradcam_terms
    B, C = F_.shape[:2]
    l_area: Any
    l_tv: Any
    try:
        base, config = load_trained(bb, o.checkpoint)
        l_area, l_tv = config["l_area"], config["l_tv"]
    except FileNotFoundError:
        warnings.warn(f"{bb.name}: no trained attention checkpoint; attention-per-image starts "
                      "from a seeded random initialisation with l_area=1, l_tv=0", stacklevel=2)
        torch.manual_seed(p.options.seed)
        base, l_area, l_tv = AttentionModule(C).to(F_.device), 1.0, 0.0
    size = (int(p.images.shape[-2]), int(p.images.shape[-1]))
    saliency = torch.empty(B, *F_.shape[2:], device=F_.device, dtype=F_.dtype)
    chunk = max(1, p.options.chunk_size)
    for start in range(0, B, chunk):
        sl = slice(start, min(B, start + chunk))
        n = sl.stop - sl.start
        module = base.per_image_copy(n).requires_grad_(True)
        opt = torch.optim.Adam(module.parameters(), lr=o.per_image_lr)
        # the classifier's own parameters are never trained: frozen (and in eval mode) for the
        # loop, whatever flags a user's model has, and restored afterwards
        with torch.enable_grad(), frozen_parameters(bb.model), eval_mode(bb.model):
            for _ in range(o.per_image_steps):
                opt.zero_grad(set_to_none=True)
                maps = differentiable_map(module(F_[sl]).saliency, size)
                loss, _ = attention_objective(bb, p.images[sl], maps, p.targets[sl], l_area, l_tv)
                loss.sum().backward()
                opt.step()
        with torch.no_grad():
            saliency[sl] = module(F_[sl]).saliency
    p.forwards["attention-per-image"] = B * o.per_image_steps
    return saliency


@dataclass
class UntrainedOptions:
    """``attention-untrained``'s parameters.

    Attributes:
        untrained_init: ``pytorch`` (plain ``nn.Linear`` / ``nn.Conv2d`` defaults, conv with
            bias, pooled spatial maps ordered [mean, max] as in Eq. 7) or ``cbam-reference``
            (the CBAM authors' public code: conv without bias followed by BatchNorm whose weight
            and bias are initialised to 0, so Ms = sigmoid(0) = 0.5 everywhere; pooled maps
            ordered [max, mean]). The MLP (reduction 16) keeps ``nn.Linear``'s default init in
            both.
        untrained_seed: seeds the initialisation (``torch.manual_seed`` inside a forked RNG).
    """

    untrained_init: str = "pytorch"
    untrained_seed: int = 0


UNTRAINED_INITS = ("pytorch", "cbam-reference")


class UntrainedAttention(nn.Module):
    """Eq. 6-7 as a plain PyTorch module over the raw F (no standardisation), never trained."""

    def __init__(self, channels: int, init: str, reduction: int = 16) -> None:
        super().__init__()
        if init not in UNTRAINED_INITS:
            raise ValueError(f"untrained_init must be one of {UNTRAINED_INITS}, got {init!r}")
        hidden = max(1, channels // reduction)
        self.init = init
        self.mlp = nn.Sequential(nn.Linear(channels, hidden), nn.ReLU(),
                                 nn.Linear(hidden, channels))
        reference = init == "cbam-reference"
        self.conv = nn.Conv2d(2, 1, KERNEL, padding=KERNEL // 2, bias=not reference)
        self.bn = nn.BatchNorm2d(1, eps=1e-5, momentum=0.01) if reference else None
        if self.bn is not None:  # the reference code zeroes the spatial gate's BN
            nn.init.zeros_(self.bn.weight)
            nn.init.zeros_(self.bn.bias)

    def forward(self, F_: torch.Tensor) -> AttentionOutput:
        avg, mx = _channel_pool(F_)
        Mc = torch.sigmoid(self.mlp(avg) + self.mlp(mx))
        F1 = Mc[:, :, None, None] * F_
        pooled = _spatial_pool(F1)                           # [mean, max]
        if self.init == "cbam-reference":
            pooled = pooled.flip(1)                          # [max, mean]
        s = self.conv(pooled)
        if self.bn is not None:
            s = self.bn(s)
        Ms = torch.sigmoid(s)
        return AttentionOutput(Ms * F1, Mc, Ms[:, 0])


@functools.lru_cache(maxsize=64)
def untrained_module(channels: int, init: str, seed: int, device: str) -> UntrainedAttention:
    """The untrained module for (channels, init, seed), built reproducibly (cached, eval mode)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        module = UntrainedAttention(channels, init)
    return module.requires_grad_(False).eval().to(device)


@register_method("attention-untrained", label="Attention (untrained)", role="variant",
                 options=UntrainedOptions)
def _attention_untrained(p: Pass, o: UntrainedOptions) -> torch.Tensor:
    """An & Joe (2022), Eq. 6-7, as a plain implementation with no training step would run it:
    an :class:`UntrainedAttention` module (seeded initialisation ``untrained_init``) over
    Grad-CAM's raw terms F. At the last layer F is tiny, so the MLP's output is close to its
    biases: Grad-CAM with seeded random channel gates (and, for ``cbam-reference``, Ms = 0.5)."""
    module = untrained_module(p.gradcam_terms.shape[1], o.untrained_init, o.untrained_seed,
                              str(p.gradcam_terms.device))
    with torch.no_grad():
        return module(p.gradcam_terms).saliency


#: The paper's method, every reading the kit registers (role "variant").
ATTENTION_METHODS = method_names("variant")
