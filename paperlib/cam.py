"""Class activation maps: every method from one hooked pass, batched and on the images' device.

Pipeline (:func:`explain`): one forward of the batch with the target layer captured gives its
activations A (B, C, h, w) and logits; one ``autograd.grad`` of the target logits gives
g = dy^c/dA. Every gradient method is a function of (A, g) -- a per-channel weighting or an
element-wise product -- evaluated on that single pass. SmoothGrad-CAM++ and Score-CAM need extra
forwards; they put them in the batch dimension, chunked to ``chunk_size`` images per forward.

Each method returns a low-resolution saliency ``S`` (B, h, w); the pipeline makes the map
``L = ReLU(S)``, upsamples it bilinearly to the input size and min-max normalises it per image to
[0, 1]. An all-zero or constant map becomes all zeros (never NaN) and is counted in
:attr:`Explanations.flat`.

No constant is added to any formula: where a denominator is zero the affected term is defined as
0 (documented per method), so the maps are exactly the published formulas.
"""

from __future__ import annotations

import dataclasses
import functools
import inspect
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F

from .hooks import capture_layer, layer_gradients
from .masking import masked_inputs
from .models import BlackBox
from .perf import CHUNK_SIZE, clock

__all__ = [
    "ExplainOptions",
    "Explanations",
    "GRADIENT_METHODS",
    "METHODS",
    "MethodSpec",
    "NoOptions",
    "Pass",
    "default_methods",
    "explain",
    "gradient_pass",
    "method_label",
    "method_names",
    "normalize_maps",
    "register_method",
    "safe_divide",
    "upsample",
]


def safe_divide(num: torch.Tensor, den: torch.Tensor) -> torch.Tensor:
    """``num / den`` where ``den != 0``, else exactly 0 (no epsilon, no NaN, no inf)."""
    nonzero = den != 0
    return torch.where(nonzero, num / torch.where(nonzero, den, torch.ones_like(den)),
                       torch.zeros_like(num))


# ---------------------------------------------------------------------------------------------
# The registry: one record per method

@dataclass
class NoOptions:
    """The options of a method that has none."""


#: A method's role in the paper's comparison: one of its four baselines, a reading of its
#: method (compared against every baseline by the claim check), or a method beyond the paper.
ROLES = ("baseline", "variant", "extra")


@dataclass(frozen=True)
class MethodSpec:
    """Everything the kit knows about one method; :func:`register_method` makes it.

    Attributes:
        name: the name :func:`explain` takes.
        fn: ``fn(p: Pass, options) -> (B, h, w)`` saliency before the pipeline's ReLU.
        options: the dataclass of the method's own parameters, with their defaults
            (:class:`NoOptions` when it has none). Its field names are the method's keywords of
            :func:`explain` and of the evaluation settings, so they are unique across methods
            (a field two methods share, like ``checkpoint``, must mean the same for both).
        label: display name (tables, figures, benchmark).
        role: ``baseline`` / ``variant`` / ``extra`` (:data:`ROLES`).
        gradient_only: computed from the single pass's (A, g) alone.
        extra_forwards: needs image forwards beyond the shared pass (they are counted).
    """

    name: str
    fn: Callable[[Pass, Any], torch.Tensor]
    options: type
    label: str
    role: str
    gradient_only: bool
    extra_forwards: bool

    @property
    def doc(self) -> str:
        """The method's docstring: its reference and formula."""
        return inspect.getdoc(self.fn) or ""


#: name -> :class:`MethodSpec`, in registration order.
METHODS: dict[str, MethodSpec] = {}
#: the methods computed from (A, g) alone, with no extra forward (kept in step with METHODS).
GRADIENT_METHODS: list[str] = []


def register_method(name: str, *, label: str, role: str = "extra", options: type = NoOptions,
                    gradient_only: bool = False, extra_forwards: bool = False
                    ) -> Callable[[Callable[[Pass, Any], torch.Tensor]],
                                  Callable[[Pass, Any], torch.Tensor]]:
    """Decorator adding a method to :data:`METHODS`. Registering a name twice is an error.

    Adding a method to the kit is this decorator on one function (plus its options dataclass):
    :func:`explain`, the evaluation settings, the tables, figures and benchmark read the registry.
    """
    if name in METHODS:
        raise ValueError(f"method {name!r} is already registered (by "
                         f"{METHODS[name].fn.__module__}.{METHODS[name].fn.__qualname__})")
    if role not in ROLES:
        raise ValueError(f"role must be one of {ROLES}, got {role!r}")
    if not dataclasses.is_dataclass(options) or not isinstance(options, type):
        raise TypeError(f"options of {name!r} must be a dataclass type, got {options!r}")
    reserved = {f.name for f in dataclasses.fields(ExplainOptions)}
    for f in dataclasses.fields(options):
        if f.name in reserved:
            raise ValueError(f"option {f.name!r} of {name!r} clashes with ExplainOptions.{f.name}")
        for other in METHODS.values():
            theirs = {g.name: g for g in dataclasses.fields(other.options)}
            if f.name in theirs and other.options is not options and \
                    theirs[f.name].default != f.default:
                raise ValueError(f"option {f.name!r} of {name!r} is also an option of "
                                 f"{other.name!r} with another default")
        if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
            raise ValueError(f"option {f.name!r} of {name!r} needs a default")

    def deco(fn: Callable[[Pass, Any], torch.Tensor]) -> Callable[[Pass, Any], torch.Tensor]:
        METHODS[name] = MethodSpec(name, fn, options, label, role, gradient_only, extra_forwards)
        if gradient_only:
            GRADIENT_METHODS.append(name)
        return fn

    return deco


def unregister_method(name: str) -> None:
    """Remove a method (for tests that register toy methods)."""
    METHODS.pop(name)
    if name in GRADIENT_METHODS:
        GRADIENT_METHODS.remove(name)


def method_names(role: str | None = None) -> tuple[str, ...]:
    """Registered method names (of one role), in registration order."""
    return tuple(n for n, s in METHODS.items() if role is None or s.role == role)


def default_methods() -> tuple[str, ...]:
    """Every registered method, the paper's baselines first, then its variants, then the rest."""
    return tuple(n for role in ROLES for n in method_names(role))


def method_label(name: str) -> str:
    """The display name of a method (its name when it is not registered)."""
    spec = METHODS.get(name)
    return spec.label if spec is not None else name


def check_methods(methods: Iterable[str]) -> tuple[str, ...]:
    """``methods`` as a tuple; an unknown name is an error listing the registered ones."""
    if isinstance(methods, str):
        methods = (methods,)
    methods = tuple(methods)
    unknown = [m for m in methods if m not in METHODS]
    if unknown:
        raise ValueError(f"unknown method(s) {unknown}; expected names from {sorted(METHODS)}")
    return methods


@dataclass
class ExplainOptions:
    """The options of an :func:`explain` call: shared ones, and each method's own.

    Attributes:
        seed: seeds anything random in a method (SmoothGrad's noise, initialisations).
        chunk_size: at most this many images per extra forward (SmoothGrad, Score-CAM, attention).
        methods: ``{method name: its options dataclass instance}``; a method not listed uses its
            defaults (:meth:`of`).

    :meth:`build` makes one from flat keywords (``smooth_samples=4``), each routed to the
    method(s) whose options declare it.
    """

    seed: int = 0
    chunk_size: int = CHUNK_SIZE
    methods: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for name, opts in self.methods.items():
            check_methods([name])
            if not isinstance(opts, METHODS[name].options):
                raise TypeError(f"options of {name!r} must be a {METHODS[name].options.__name__}, "
                                f"got {type(opts).__name__}")

    def of(self, method: str) -> Any:
        """The options instance of ``method`` (its defaults when none was given)."""
        opts = self.methods.get(method)
        return opts if opts is not None else METHODS[method].options()

    @staticmethod
    def option_fields() -> dict[str, list[str]]:
        """``{flat option name: methods that declare it}`` over every registered method."""
        out: dict[str, list[str]] = {}
        for name, spec in METHODS.items():
            for f in dataclasses.fields(spec.options):
                out.setdefault(f.name, []).append(name)
        return out

    @classmethod
    def build(cls, base: ExplainOptions | None = None, **flat: Any) -> ExplainOptions:
        """Options from flat keywords: ``seed``, ``chunk_size`` and any method's option field.

        A keyword no method declares is an error that lists the valid ones. ``base`` supplies the
        values not given.
        """
        base = base or cls()
        shared = {f.name for f in dataclasses.fields(cls)} - {"methods"}
        owners = cls.option_fields()
        unknown = [k for k in flat if k not in shared and k not in owners]
        if unknown:
            raise TypeError(f"unknown option(s) {unknown}; expected {sorted(shared)} or a "
                            f"method's option: {sorted(owners)}")
        per_method: dict[str, dict[str, Any]] = {}
        for k, v in flat.items():
            for m in owners.get(k, []):
                per_method.setdefault(m, {})[k] = v
        methods = dict(base.methods)
        for m, values in per_method.items():
            methods[m] = dataclasses.replace(base.of(m), **values)
        return cls(seed=flat.get("seed", base.seed),
                   chunk_size=flat.get("chunk_size", base.chunk_size), methods=methods)

    def key(self, methods: Sequence[str]) -> dict[str, Any]:
        """What determines the maps of ``methods``: the seed and each method's options."""
        return {"seed": self.seed,
                **{m: dataclasses.asdict(self.of(m)) for m in methods
                   if dataclasses.fields(METHODS[m].options)}}

    def flat(self, methods: Sequence[str]) -> dict[str, Any]:
        """The options of ``methods`` as flat keywords (what :meth:`build` takes)."""
        out: dict[str, Any] = {"seed": self.seed, "chunk_size": self.chunk_size}
        for m in methods:
            out.update(dataclasses.asdict(self.of(m)))
        return out


@dataclass
class Pass:
    """One hooked forward/backward on a batch: what every method is computed from."""

    black_box: BlackBox
    images: torch.Tensor          # (B, 3, H, W) in [0, 1]
    targets: torch.Tensor         # (B,) class indices
    logits: torch.Tensor          # (B, K), clean images
    A: torch.Tensor               # (B, C, h, w) target-layer activations (detached)
    g: torch.Tensor               # (B, C, h, w) d logit_target / dA
    options: ExplainOptions = field(default_factory=ExplainOptions)
    forwards: dict[str, int] = field(default_factory=dict)  # extra image forwards per method

    @functools.cached_property
    def gradcam_terms(self) -> torch.Tensor:
        """Grad-CAM's per-channel contributions w_k A_k (B, C, h, w); the paper's F."""
        return gradcam_weights(self.A, self.g)[:, :, None, None] * self.A


def _weighted_sum(weights: torch.Tensor, A: torch.Tensor) -> torch.Tensor:
    return torch.einsum("bc,bchw->bhw", weights, A)


# ---------------------------------------------------------------------------------------------
# Channel-weight functions of (A, g)

def gradcam_weights(A: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
    """Grad-CAM (Selvaraju et al. 2017, Eq. 1): w_k = (1/Z) sum_ij g_kij."""
    return g.mean(dim=(2, 3))


def gradcampp_weights(A: torch.Tensor, g1: torch.Tensor, g2: torch.Tensor,
                      g3: torch.Tensor) -> torch.Tensor:
    """Grad-CAM++ (Chattopadhyay et al. 2018, Eq. 19) from first/second/third gradient terms.

    alpha_kij = g2_kij / (2 g2_kij + sum_ab A_kab g3_kij), alpha = 0 where the denominator is 0;
    w_k = sum_ij alpha_kij ReLU(g1_kij). For Grad-CAM++ itself g1 = g, g2 = g^2, g3 = g^3;
    SmoothGrad-CAM++ passes their means over noisy copies.

    pytorch-grad-cam adds 1e-6 to the denominator (where it is non-zero); at EfficientNet-Lite0's
    last layer g^2 is of that order, so that constant changes its maps (see the tests).
    """
    sum_A = A.sum(dim=(2, 3), keepdim=True)
    alpha = safe_divide(g2, 2 * g2 + sum_A * g3)
    return (alpha * g1.clamp(min=0)).sum(dim=(2, 3))


def xgradcam_weights(A: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
    """XGrad-CAM (Fu et al. 2020, Eq. 10): w_k = sum_ij (A_kij / sum_ab A_kab) g_kij.

    A channel whose activations sum to zero (a dead channel) gets w_k = 0.
    """
    return safe_divide((A * g).sum(dim=(2, 3)), A.sum(dim=(2, 3)))


# ---------------------------------------------------------------------------------------------
# The methods. Registration order is the tables' order within a role.

@register_method("gradcam", label="Grad-CAM", role="baseline", gradient_only=True)
def _gradcam(p: Pass, o: NoOptions) -> torch.Tensor:
    """Grad-CAM (Selvaraju et al. 2017): L = ReLU(sum_k w_k A_k), w_k = mean_ij g_kij."""
    return p.gradcam_terms.sum(dim=1)


@register_method("gradcampp", label="Grad-CAM++", role="baseline", gradient_only=True)
def _gradcampp(p: Pass, o: NoOptions) -> torch.Tensor:
    """Grad-CAM++ (Chattopadhyay et al. 2018): L = ReLU(sum_k w_k A_k) with Eq. 19's weights
    (:func:`gradcampp_weights`, g1 = g, g2 = g^2, g3 = g^3)."""
    g = p.g
    return _weighted_sum(gradcampp_weights(p.A, g, g * g, g * g * g), p.A)


def _chunks(n: int, size: int) -> Iterable[slice]:
    for start in range(0, n, size):
        yield slice(start, min(n, start + size))


@dataclass
class SmoothGradOptions:
    """SmoothGrad-CAM++'s parameters.

    Attributes:
        smooth_samples: number of noisy copies n (default 8).
        smooth_sigma: noise standard deviation as a fraction of each image's value range
            (max - min); default 0.15, inside SmoothGrad's recommended 10-20%.
    """

    smooth_samples: int = 8
    smooth_sigma: float = 0.15


@register_method("smoothgradcampp", label="SmoothGrad-CAM++", role="baseline",
                 options=SmoothGradOptions, extra_forwards=True)
def _smoothgradcampp(p: Pass, o: SmoothGradOptions) -> torch.Tensor:
    """SmoothGrad-CAM++ (Omeiza et al. 2019).

    n noisy copies x + N(0, (sigma * (max x - min x))^2) of each image go through the network (in
    the batch dimension, ``chunk_size`` images per forward); with g^(s) the gradient at the target
    layer for copy s, the averaged terms are G1 = mean_s g, G2 = mean_s g^2, G3 = mean_s g^3 and
    alpha = G2 / (2 G2 + sum_ab A_ab G3) (0 where the denominator is 0),
    w_k = sum_ij alpha ReLU(G1), L = ReLU(sum_k w_k A_k) with A from the clean image.

    The n noise patterns are drawn once from a generator seeded with ``options.seed`` and shared by
    every image of the batch (each scaled by its image's range), so the map of an image does not
    depend on the batch it is computed in.
    """
    n = o.smooth_samples
    if n < 1:
        raise ValueError(f"smooth_samples must be >= 1, got {n}")
    B = p.images.shape[0]
    gen = torch.Generator(device=p.images.device).manual_seed(p.options.seed)
    noise = torch.randn((n, *p.images.shape[1:]), generator=gen, device=p.images.device)
    flat = p.images.flatten(1)
    scale = (o.smooth_sigma * (flat.max(1).values - flat.min(1).values)).view(B, 1, 1, 1, 1)
    noisy = (p.images[:, None] + scale * noise[None]).flatten(0, 1)  # (B*n, 3, H, W), image-major
    targets = p.targets.repeat_interleave(n)
    g1 = torch.zeros_like(p.A)
    g2 = torch.zeros_like(p.A)
    g3 = torch.zeros_like(p.A)
    bb = p.black_box
    per_chunk = max(1, p.options.chunk_size)
    with capture_layer(bb.model, bb.target_layer) as cap, torch.enable_grad():
        for sl in _chunks(B * n, per_chunk):
            logits = bb.model(noisy[sl])
            assert cap.activations is not None
            g = layer_gradients(logits, targets[sl], cap.activations).detach()
            idx = torch.arange(sl.start, sl.stop, device=g.device) // n
            g1.index_add_(0, idx, g)
            g2.index_add_(0, idx, g * g)
            g3.index_add_(0, idx, g * g * g)
    p.forwards["smoothgradcampp"] = B * n
    return _weighted_sum(gradcampp_weights(p.A, g1 / n, g2 / n, g3 / n), p.A)


@register_method("xgradcam", label="XGrad-CAM", role="baseline", gradient_only=True)
def _xgradcam(p: Pass, o: NoOptions) -> torch.Tensor:
    """XGrad-CAM (Fu et al. 2020): L = ReLU(sum_k w_k A_k) with :func:`xgradcam_weights`."""
    return _weighted_sum(xgradcam_weights(p.A, p.g), p.A)


def _minmax(x: torch.Tensor, dims: tuple[int, ...]) -> torch.Tensor:
    lo = x.amin(dim=dims, keepdim=True)
    hi = x.amax(dim=dims, keepdim=True)
    return safe_divide(x - lo, hi - lo)


@dataclass
class ScoreCAMOptions:
    """Score-CAM's parameters.

    Attributes:
        scorecam_channels: channel budget: the k channels of largest mean activation per image
            (default 64 of Lite0's 1280); ``None`` uses every channel.
    """

    scorecam_channels: int | None = 64


@register_method("scorecam", label="Score-CAM", options=ScoreCAMOptions, extra_forwards=True)
def _scorecam(p: Pass, o: ScoreCAMOptions) -> torch.Tensor:
    """Score-CAM (Wang et al. 2020): w_k = softmax probability of the target for x * H_k.

    H_k is channel k upsampled (bilinear) to the input and min-max normalised to [0, 1] (a flat
    channel gives H_k = 0); the mask multiplies the [0, 1] image. L = ReLU(sum_k w_k A_k), as in
    the authors' implementation. Cost: one forward per channel and image, so only the
    ``scorecam_channels`` channels of largest mean activation per image are scored (default 64;
    ``None``: all); the others get w_k = 0.
    """
    A = p.A
    B, C = A.shape[:2]
    k = C if o.scorecam_channels is None else min(C, o.scorecam_channels)
    chosen = A.mean(dim=(2, 3)).topk(k, dim=1).indices  # (B, k)
    size = (int(p.images.shape[-2]), int(p.images.shape[-1]))
    scores = torch.empty(B * k, device=A.device, dtype=A.dtype)
    bb = p.black_box
    with torch.no_grad():
        for sl in _chunks(B * k, max(1, p.options.chunk_size)):
            j = torch.arange(sl.start, sl.stop, device=A.device)
            b, c = j // k, chosen.flatten()[j]
            masks = _minmax(upsample(A[b, c], size), dims=(1, 2))  # (n, H, W)
            probs = bb.model(masked_inputs(p.images[b], masks)).softmax(dim=1)
            scores[sl] = probs.gather(1, p.targets[b].view(-1, 1)).view(-1).to(A.dtype)
    weights = torch.zeros(B, C, device=A.device, dtype=A.dtype)
    weights.scatter_(1, chosen, scores.view(B, k))
    p.forwards["scorecam"] = B * k
    return _weighted_sum(weights, A)


@register_method("layercam", label="Layer-CAM", gradient_only=True)
def _layercam(p: Pass, o: NoOptions) -> torch.Tensor:
    """Layer-CAM (Jiang et al. 2021, Eq. 4-5): L = ReLU(sum_k ReLU(g_k) * A_k), element-wise."""
    return (p.g.clamp(min=0) * p.A).sum(dim=1)


@register_method("hirescam", label="HiResCAM", gradient_only=True)
def _hirescam(p: Pass, o: NoOptions) -> torch.Tensor:
    """HiResCAM (Draelos & Carin 2020): L = ReLU(sum_k g_k * A_k), element-wise."""
    return (p.g * p.A).sum(dim=1)


# ---------------------------------------------------------------------------------------------
# The pipeline

def upsample(maps: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """(B, h, w) -> (B, H, W), bilinear, ``align_corners=False`` (identity when sizes match)."""
    if tuple(maps.shape[-2:]) == tuple(size):
        return maps
    return F.interpolate(maps[:, None], size=size, mode="bilinear", align_corners=False)[:, 0]


def normalize_maps(maps: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Min-max normalise each map to [0, 1]; constant maps become zeros. Returns (maps, is_flat)."""
    flat_view = maps.flatten(1)
    lo = flat_view.min(dim=1).values.view(-1, 1, 1)
    hi = flat_view.max(dim=1).values.view(-1, 1, 1)
    is_flat = (hi == lo).view(-1)
    return safe_divide(maps - lo, hi - lo), is_flat


@dataclass
class Explanations(Mapping[str, torch.Tensor]):
    """``{method: (B, H, W) maps in [0, 1]}`` (a read-only mapping) plus what the pass saw.

    ``ex["gradcam"]``, ``list(ex)``, ``dict(ex)`` give the maps; the attributes stay on ``ex``.

    Attributes:
        maps: ``{method: (B, H, W)}`` in [0, 1].
        targets: (B,) explained classes.
        logits: (B, K) logits of the clean images.
        flat_images: ``{method: (B,) bool}``, the images whose map was all zero or constant.
        forwards: ``{method: extra image forwards it needed}`` (the shared pass not counted).
        low_res: ``{method: (B, h, w)}`` maps after the ReLU, before upsampling.
        seconds: ``{method: wall seconds}``, plus ``"pass"`` for the shared forward/backward.
    """

    maps: dict[str, torch.Tensor]
    targets: torch.Tensor
    logits: torch.Tensor
    flat_images: dict[str, torch.Tensor]
    forwards: dict[str, int]
    low_res: dict[str, torch.Tensor]
    seconds: dict[str, float]

    def __getitem__(self, method: str) -> torch.Tensor:
        return self.maps[method]

    def __iter__(self) -> Iterator[str]:
        return iter(self.maps)

    def __len__(self) -> int:
        return len(self.maps)

    @property
    def flat(self) -> dict[str, int]:
        """``{method: number of images whose map was all zero or constant}``."""
        return {m: int(v.sum()) for m, v in self.flat_images.items()}


def _as_targets(targets, batch: int, device: torch.device, logits: torch.Tensor) -> torch.Tensor:
    if targets is None:
        return logits.argmax(dim=1)
    t = torch.as_tensor(targets, device=device).long().view(-1)
    if t.numel() != batch:
        raise ValueError(f"got {t.numel()} targets for a batch of {batch} images; give exactly one "
                         "class index per image (or targets=None for the predicted classes)")
    n_classes = logits.shape[1]
    if (t < 0).any() or (t >= n_classes).any():
        raise ValueError(f"targets must be class indices in [0, {n_classes}); got {t.tolist()}")
    return t


def gradient_pass(black_box: BlackBox, images: torch.Tensor,
                  targets: Sequence[int] | torch.Tensor | None = None,
                  options: ExplainOptions | None = None) -> Pass:
    """The single hooked forward + ``autograd.grad`` every gradient method is computed from."""
    if images.ndim != 4:
        raise ValueError(f"images must be a (B, 3, H, W) batch, got shape {tuple(images.shape)}")
    images = images.to(black_box.device)
    with capture_layer(black_box.model, black_box.target_layer) as cap, torch.enable_grad():
        logits = black_box.model(images)
        if cap.activations is None:
            raise RuntimeError(f"target layer {black_box.target_layer_name} of {black_box.name} "
                               "was not run by the forward pass")
        t = _as_targets(targets, images.shape[0], images.device, logits)
        g = layer_gradients(logits, t, cap.activations)
    return Pass(black_box, images, t, logits.detach(), cap.activations.detach(), g.detach(),
                options or ExplainOptions())


def explain(black_box: BlackBox, images: torch.Tensor, methods: Sequence[str] | str = ("gradcam",),
            targets: Sequence[int] | torch.Tensor | None = None,
            options: ExplainOptions | None = None, **option_kwargs: Any) -> Explanations:
    """Maps of every method in ``methods`` for a batch, from one shared pass.

    Args:
        black_box: from :func:`paperlib.load_model` (or any :class:`BlackBox`).
        images: (B, 3, H, W) in [0, 1], as the black box's ``preprocess`` gives them.
        methods: names from :data:`METHODS` (or one name).
        targets: one class index per image; ``None``: the predicted class. A list of the wrong
            length is an error (never silently truncated).
        options / option_kwargs: :class:`ExplainOptions`, and/or flat option keywords
            (``seed``, ``chunk_size``, any method's option such as ``smooth_samples=4``) applied
            on top of it (:meth:`ExplainOptions.build`).
    """
    methods = check_methods(methods)
    if option_kwargs:
        options = ExplainOptions.build(options, **option_kwargs)
    options = options or ExplainOptions()
    device = black_box.device
    start = clock(device)
    p = gradient_pass(black_box, images, targets, options)
    seconds = {"pass": clock(device) - start}
    size = (int(p.images.shape[-2]), int(p.images.shape[-1]))
    maps, low_res, flat_images = {}, {}, {}
    for name in methods:
        start = clock(device)
        spec = METHODS[name]
        low = spec.fn(p, options.of(name)).clamp(min=0)
        maps[name], flat_images[name] = normalize_maps(upsample(low, size))
        low_res[name] = low
        seconds[name] = clock(device) - start
    return Explanations(maps=maps, targets=p.targets, logits=p.logits, flat_images=flat_images,
                        forwards={m: p.forwards.get(m, 0) for m in methods}, low_res=low_res,
                        seconds=seconds)
