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
import importlib
import inspect
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from .blackbox import BlackBox
from .checks import check_fields, checked
from .hooks import capture_layer, eval_mode, layer_gradients
from .masking import masked_inputs
from .perf import CHUNK_SIZE, clock

__all__ = [
    "ExplainOptions",
    "Explanations",
    "GRADIENT_METHODS",
    "METHODS",
    "MethodFiles",
    "MethodSpec",
    "NoOptions",
    "Pass",
    "default_methods", "quick_methods",
    "explain",
    "gradient_pass",
    "make_missing_files",
    "method_files",
    "method_label",
    "method_names",
    "missing_files",
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
#: method (compared against every baseline by the claim check), a method beyond the paper, or a
#: control map with no information about the black box (:mod:`paperlib.controls`: evaluated
#: like every method, never counted as a baseline; every other method is checked against them).
ROLES = ("baseline", "variant", "extra", "control")


@dataclass(frozen=True)
class MethodFiles:
    """The files a method's maps depend on (a trained checkpoint...), declared on its record.

    Attributes:
        paths: ``paths(black_box, options) -> [Path, ...]``: the files whose content determines
            the method's maps for that black box (and target layer) and the method's options
            instance. Their bytes are part of the evaluation's results key.
        what: what they are, for messages (``"a trained attention checkpoint"``).
        how: how to provide them, for messages (an option naming a file, a trainer...).
        without: ``None`` when the method cannot run without them; else what it does instead
            (for messages: ``"it starts from a seeded random initialisation"``).
        make: ``"module:function"`` naming ``make(black_box, dataset)``, which creates the
            black box's default files when they are missing (e.g. trains on the dataset's
            training split); ``None`` when they cannot be made. Named, not imported: the maker
            usually sits above the method (training runs the metrics).
    """

    paths: Callable[[BlackBox, Any], Sequence[Path]]
    what: str
    how: str
    without: str | None = None
    make: str | None = None


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
        role: ``baseline`` / ``variant`` / ``extra`` / ``control`` (:data:`ROLES`).
        gradient_only: computed from the single pass's (A, g) alone.
        extra_forwards: needs image forwards beyond the shared pass (they are counted).
        paper: the column of the paper's tables this method stands beside
            (:data:`paperlib.paper_reference.PAPER_COLUMNS`; every reading of the paper's method
            stands beside ``ours``), or ``None``.
        files: the files its maps depend on (:class:`MethodFiles`), or ``None``.
        studies: the cheap studies that rerun the evaluation under other protocols
            (:mod:`paperlib.protocol`: fills x targets, ROAD) and notebook 03's sanity check
            run it too; ``False`` for a method whose cost would dominate them (a per-image
            optimisation such as Opti-CAM).
    """

    name: str
    fn: Callable[[Pass, Any], torch.Tensor]
    options: type
    label: str
    role: str
    gradient_only: bool
    extra_forwards: bool
    paper: str | None = None
    files: MethodFiles | None = None
    studies: bool = True

    @property
    def doc(self) -> str:
        """The method's docstring: its reference and formula."""
        return inspect.getdoc(self.fn) or ""


#: Modules whose import registers the kit's methods beyond this module's own (the paper's
#: readings). They import this module, so it cannot import them at its top; the registry imports
#: them on its first read instead, so that ``from paperlib.cam import METHODS`` (or
#: :func:`default_methods`) sees every method whatever was imported before.
BUILTIN_METHOD_MODULES = ("paperlib.attention", "paperlib.opticam", "paperlib.controls")


class _Registry(dict[str, "MethodSpec"]):
    """:data:`METHODS`: a dict that imports :data:`BUILTIN_METHOD_MODULES` before its first read
    (once this module has finished loading)."""

    ready = False       # set at the end of this module
    complete = False
    loading = False

    def _complete(self) -> None:
        if _Registry.ready and not (_Registry.complete or _Registry.loading):
            _Registry.loading = True
            try:
                for module in BUILTIN_METHOD_MODULES:
                    importlib.import_module(module)
                _Registry.complete = True
            finally:
                _Registry.loading = False

    def __getitem__(self, name: str) -> MethodSpec:
        self._complete()
        return super().__getitem__(name)

    def __contains__(self, name: object) -> bool:
        self._complete()
        return super().__contains__(name)

    def __iter__(self) -> Iterator[str]:
        self._complete()
        return super().__iter__()

    def __len__(self) -> int:
        self._complete()
        return super().__len__()

    def get(self, name: str, default: Any = None) -> Any:
        self._complete()
        return super().get(name, default)

    def keys(self) -> Any:
        self._complete()
        return super().keys()

    def values(self) -> Any:
        self._complete()
        return super().values()

    def items(self) -> Any:
        self._complete()
        return super().items()


#: name -> :class:`MethodSpec`, in registration order (the kit's own methods first).
METHODS: dict[str, MethodSpec] = _Registry()
#: the methods computed from (A, g) alone, with no extra forward (kept in step with METHODS).
GRADIENT_METHODS: list[str] = []


def register_method(name: str, *, label: str, role: str = "extra", options: type = NoOptions,
                    gradient_only: bool = False, extra_forwards: bool = False,
                    paper: str | None = None, files: MethodFiles | None = None,
                    studies: bool = True) -> Callable[[Callable[[Pass, Any], torch.Tensor]],
                                  Callable[[Pass, Any], torch.Tensor]]:
    """Decorator adding a method to :data:`METHODS`. Registering a name twice is an error.

    Adding a method to the kit is this decorator on one function (plus its options dataclass):
    :func:`explain`, the evaluation settings, the tables, figures and benchmark read the registry.
    """
    if name in METHODS:  # (a first read: the kit's own methods register before any other)
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

    if paper is not None and paper not in ("gradcam", "gradcampp", "smoothgradcampp",
                                           "xgradcam", "ours"):
        raise ValueError(f"paper column of {name!r} must be one of the paper's columns, "
                         f"got {paper!r}")
    if files is not None and not isinstance(files, MethodFiles):
        raise TypeError(f"files of {name!r} must be a MethodFiles, got {type(files).__name__}")
    if files is not None and files.make is not None and files.make.count(":") != 1:
        raise ValueError(f"files.make of {name!r} must be 'module:function', got {files.make!r}")

    def deco(fn: Callable[[Pass, Any], torch.Tensor]) -> Callable[[Pass, Any], torch.Tensor]:
        column = "ours" if paper is None and role == "variant" else paper
        METHODS[name] = MethodSpec(name, fn, options, label, role, gradient_only, extra_forwards,
                                   column, files, bool(studies))
        if gradient_only:
            GRADIENT_METHODS.append(name)
        return fn

    return deco


def unregister_method(name: str) -> None:
    """Remove a method (for tests that register toy methods)."""
    METHODS.pop(name)
    if name in GRADIENT_METHODS:
        GRADIENT_METHODS.remove(name)


def method_files(methods: Iterable[str], black_box: BlackBox,
                 options: ExplainOptions | None = None) -> list[Path]:
    """The files the maps of ``methods`` depend on (their records' :class:`MethodFiles`), each
    once, in order: for the results key."""
    options = options or ExplainOptions()
    out: list[Path] = []
    for m in check_methods(methods):
        files = METHODS[m].files
        for path in files.paths(black_box, options.of(m)) if files is not None else ():
            if Path(path) not in out:
                out.append(Path(path))
    return out


def missing_files(methods: Iterable[str], black_box: BlackBox,
                  options: ExplainOptions | None = None) -> dict[str, list[Path]]:
    """``{method: its declared files that do not exist}`` for the methods missing any."""
    options = options or ExplainOptions()
    out: dict[str, list[Path]] = {}
    for m in check_methods(methods):
        files = METHODS[m].files
        absent = [Path(p) for p in (files.paths(black_box, options.of(m)) if files else ())
                  if not Path(p).is_file()]
        if absent:
            out[m] = absent
    return out


def make_missing_files(methods: Iterable[str], black_box: BlackBox, dataset: Any,
                       options: ExplainOptions | None = None) -> list[str]:
    """Create the missing files of ``methods`` with their records' makers
    (:attr:`MethodFiles.make`, each maker once); returns the methods whose files were made.
    A missing file with no maker is left to the method (which raises or falls back)."""
    made: list[str] = []
    called: set[str] = set()
    for m in missing_files(methods, black_box, options):
        files = METHODS[m].files
        if files is None or files.make is None:
            continue
        if files.make not in called:
            module, _, function = files.make.partition(":")
            getattr(importlib.import_module(module), function)(black_box, dataset)
            called.add(files.make)
        made.append(m)
    return made


def method_names(role: str | None = None) -> tuple[str, ...]:
    """Registered method names (of one role), in registration order."""
    return tuple(n for n, s in METHODS.items() if role is None or s.role == role)


def default_methods() -> tuple[str, ...]:
    """Every registered method, the paper's baselines first, then its variants, then the rest,
    then the controls (:data:`ROLES`' order)."""
    return tuple(n for role in ROLES for n in method_names(role))


def quick_methods() -> tuple[str, ...]:
    """:func:`default_methods` whose maps come from the one shared pass (no extra forwards) and
    which explain the model (no control maps): ``paperlib explain``'s default (the others cost
    tens of extra forwards per image each)."""
    return tuple(m for m in default_methods()
                 if not METHODS[m].extra_forwards and METHODS[m].role != "control")


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

    seed: int = checked(0, integer=True, low=0)
    chunk_size: int = checked(CHUNK_SIZE, integer=True, low=1)
    methods: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        check_fields(self)
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

@register_method("gradcam", label="Grad-CAM", role="baseline", gradient_only=True,
                 paper="gradcam")
def _gradcam(p: Pass, o: NoOptions) -> torch.Tensor:
    """Grad-CAM (Selvaraju et al. 2017): L = ReLU(sum_k w_k A_k), w_k = mean_ij g_kij."""
    return p.gradcam_terms.sum(dim=1)


@register_method("gradcampp", label="Grad-CAM++", role="baseline", gradient_only=True,
                 paper="gradcampp")
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

    smooth_samples: int = checked(8, integer=True, low=1)
    smooth_sigma: float = checked(0.15, low=0)

    def __post_init__(self) -> None:
        check_fields(self)


@register_method("smoothgradcampp", label="SmoothGrad-CAM++", role="baseline",
                 options=SmoothGradOptions, extra_forwards=True, paper="smoothgradcampp")
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
    B = p.images.shape[0]
    noisy, targets = _noisy_copies(p, o)
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


def _noisy_copies(p: Pass, o: SmoothGradOptions) -> tuple[torch.Tensor, torch.Tensor]:
    """SmoothGrad's n noisy copies of each image (B*n, 3, H, W), image-major, and their targets.

    The n noise patterns come from a generator seeded with ``options.seed`` and are shared by
    every image of the batch (each scaled by sigma times its image's value range).
    """
    n = o.smooth_samples
    if n < 1:
        raise ValueError(f"smooth_samples must be >= 1, got {n}")
    B = p.images.shape[0]
    gen = torch.Generator(device=p.images.device).manual_seed(p.options.seed)
    noise = torch.randn((n, *p.images.shape[1:]), generator=gen, device=p.images.device)
    flat = p.images.flatten(1)
    scale = (o.smooth_sigma * (flat.max(1).values - flat.min(1).values)).view(B, 1, 1, 1, 1)
    noisy = (p.images[:, None] + scale * noise[None]).flatten(0, 1)
    return noisy, p.targets.repeat_interleave(n)


@register_method("smoothgradcampp-maps", label="SmoothGrad-CAM++ (map mean)", role="baseline",
                 options=SmoothGradOptions, extra_forwards=True, paper="smoothgradcampp")
def _smoothgradcampp_maps(p: Pass, o: SmoothGradOptions) -> torch.Tensor:
    """SmoothGrad-CAM++ as the widely used public implementations compute it: the mean over the
    n noisy copies of each copy's own Grad-CAM++ map.

    For copy s, with its own activations A^(s) and gradients g^(s) at the target layer,
    L_s = minmax(ReLU(sum_k w_k^(s) A_k^(s))) at the layer's resolution (Eq. 19's weights from
    g^(s), g^(s)^2, g^(s)^3; a flat map is 0); the saliency is mean_s L_s. Same noise as
    ``smoothgradcampp`` (:func:`_noisy_copies`), so the two definitions differ only in what is
    averaged: the gradient terms there (with the clean image's A), the maps here.
    """
    n = o.smooth_samples
    B = p.images.shape[0]
    noisy, targets = _noisy_copies(p, o)
    total = torch.zeros(B, *p.A.shape[2:], device=p.A.device, dtype=p.A.dtype)
    bb = p.black_box
    with capture_layer(bb.model, bb.target_layer) as cap, torch.enable_grad():
        for sl in _chunks(B * n, max(1, p.options.chunk_size)):
            logits = bb.model(noisy[sl])
            assert cap.activations is not None
            g = layer_gradients(logits, targets[sl], cap.activations).detach()
            A = cap.activations.detach()
            cam = _weighted_sum(gradcampp_weights(A, g, g * g, g * g * g), A).clamp(min=0)
            idx = torch.arange(sl.start, sl.stop, device=g.device) // n
            total.index_add_(0, idx, _minmax(cam, dims=(1, 2)))
    p.forwards["smoothgradcampp-maps"] = B * n
    return total / n


@register_method("xgradcam", label="XGrad-CAM", role="baseline", gradient_only=True,
                 paper="xgradcam")
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

    scorecam_channels: int | None = checked(64, integer=True, low=1, optional=True)

    def __post_init__(self) -> None:
        check_fields(self)


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


#: An input error lists at most this many image indices or target values.
_MAX_LISTED = 10


def _listed(values: Sequence[object]) -> str:
    """``[a, b, ...]`` with at most :data:`_MAX_LISTED` entries, then how many there are."""
    shown = ", ".join(str(v) for v in values[:_MAX_LISTED])
    more = f", ... ({len(values)} in all)" if len(values) > _MAX_LISTED else ""
    return f"[{shown}{more}]"


def _model_dtype(black_box: BlackBox) -> torch.dtype:
    """The floating dtype of the black box's parameters (float32 for every kit black box)."""
    for p in black_box.model.parameters():
        if p.is_floating_point():
            return p.dtype
    return torch.float32


def _check_images(images: object, black_box: BlackBox) -> torch.Tensor:
    """``images`` on the black box's device and dtype, after checking the black boxes' contract.

    The contract: a floating-point (B, 3, H, W) batch with B >= 1 and every value finite and in
    [0, 1] -- what ``black_box.preprocess`` gives (the black box normalises internally). A
    floating dtype other than the model's (float64, float16) is converted to it without warning
    (float32 for the kit's black boxes). Anything else raises ``TypeError`` (not a tensor) or
    ``ValueError`` saying what is wrong and how to fix it: non-finite pixels (naming the images),
    values outside [0, 1] (0..255 or already-normalised input), integer or bool dtypes, a
    channel count other than 3, an empty batch, a tensor that is not 4-D.

    Cost on a valid batch: one reduction (``aminmax``) and one host sync. The per-image
    diagnosis runs only to word an error.
    """
    if not isinstance(images, torch.Tensor):
        raise TypeError(f"images must be a torch.Tensor (B, 3, H, W) in [0, 1], got "
                        f"{type(images).__name__}; build the batch with "
                        "torch.stack([black_box.preprocess(im) for im in pil_images])")
    shape = tuple(images.shape)
    if images.ndim != 4:
        hint = "; for a single (3, H, W) image pass images[None]" if images.ndim == 3 else ""
        raise ValueError(f"images must be a (B, 3, H, W) batch, got shape {shape}{hint}")
    if shape[0] == 0 or images.numel() == 0:
        raise ValueError(f"images is an empty batch (shape {shape}); give at least one image "
                         "of at least 1x1 pixels")
    if shape[1] != 3:
        raise ValueError(f"images must have 3 (RGB) channels: expected (B, 3, H, W), got shape "
                         f"{shape}; convert grayscale (or RGBA) images to RGB first, as the "
                         "kit's loader does before black_box.preprocess "
                         "(PIL: image.convert('RGB'))")
    if not images.is_floating_point():
        if images.dtype == torch.bool or images.is_complex():
            hint = "build the batch with black_box.preprocess"
        else:
            hint = ("0..255 pixel values must be divided by 255 (images.float() / 255), or build "
                    "the batch with black_box.preprocess")
        raise ValueError(f"images have dtype {images.dtype}; the black box takes floating-point "
                         f"images in [0, 1] (its preprocess output): {hint}")
    images = images.to(device=black_box.device, dtype=_model_dtype(black_box))
    lo, hi = torch.aminmax(images)  # NaN propagates; inf is out of range: one check for all
    lo_v, hi_v = torch.stack([lo, hi]).tolist()
    if 0.0 <= lo_v and hi_v <= 1.0:
        return images
    batch = shape[0]
    nonfinite = (~torch.isfinite(images)).flatten(1).any(dim=1)
    if bool(nonfinite.any()):
        idx = nonfinite.nonzero().flatten().tolist()
        raise ValueError(f"images hold non-finite values (NaN or inf) in image(s) {_listed(idx)} "
                         f"(indices in the batch of {batch}); the black box would give them NaN "
                         "logits and NaN maps. Fix or drop those images")
    outside = ((images < 0) | (images > 1)).flatten(1).any(dim=1).nonzero().flatten().tolist()

    def shown(v: float) -> str:  # 4 digits, more where 4 would make it look in range (1.0001)
        text = f"{v:.4g}"
        return f"{v:.8g}" if (v < 0 or v > 1) and 0 <= float(text) <= 1 else text

    raise ValueError(f"images must be in [0, 1]: the black box expects its preprocess output "
                     f"(it normalises internally), but the values range over [{shown(lo_v)}, "
                     f"{shown(hi_v)}] (image(s) {_listed(outside)} of the batch of {batch}). "
                     "0..255 images need dividing by 255; already-normalised images need "
                     "un-normalising (x * std + mean); or build the batch with "
                     "black_box.preprocess")


def _as_targets(targets: Sequence[int] | torch.Tensor | None, batch: int,
                device: torch.device) -> torch.Tensor | None:
    """``targets`` as a (B,) int64 tensor on ``device``; ``None`` stays ``None`` (predicted).

    Strict: only integer class indices -- a tensor or array of an integer dtype, or a sequence of
    ints. Floats (even whole-valued ones), bools and anything else raise ``ValueError`` naming
    the values; a tensor on another device is moved. The range [0, K) is checked after the
    forward, which gives K.
    """
    if targets is None:
        return None
    if isinstance(targets, (str, bytes)):
        raise ValueError(f"targets must be integer class indices, got the string {targets!r}")
    if isinstance(targets, (list, tuple)):
        odd = [v for v in targets if isinstance(v, bool) or isinstance(v, float)]
        if odd:
            raise ValueError(f"targets must be integer class indices, got {_listed(odd)} among "
                             f"{_listed(list(targets))}; pass ints")
    try:
        t = torch.as_tensor(targets)
    except (TypeError, ValueError, RuntimeError) as exc:
        raise ValueError(f"targets must be integer class indices (a sequence of ints or an "
                         f"integer tensor), got {targets!r} ({exc})") from exc
    if t.dtype == torch.bool or t.is_floating_point() or t.is_complex():
        raise ValueError(f"targets must be integer class indices, got a tensor of dtype "
                         f"{t.dtype} with values {_listed(t.flatten().tolist())}; pass an "
                         "integer tensor (targets.long() only if they are whole numbers)")
    if t.ndim > 1:
        raise ValueError(f"targets must be one class index per image, shape (B,), got shape "
                         f"{tuple(t.shape)}")
    if t.numel() != batch:
        raise ValueError(f"got {t.numel()} targets for a batch of {batch} images; give exactly one "
                         "class index per image (or targets=None for the predicted classes)")
    return t.to(device=device, dtype=torch.long).view(-1)


def gradient_pass(black_box: BlackBox, images: torch.Tensor,
                  targets: Sequence[int] | torch.Tensor | None = None,
                  options: ExplainOptions | None = None) -> Pass:
    """The single hooked forward + ``autograd.grad`` every gradient method is computed from.

    ``images`` and ``targets`` are checked first (see :func:`explain`): a bad input is a
    ``ValueError`` before any forward, never NaN maps or silently changed classes.
    """
    images = _check_images(images, black_box)
    given = _as_targets(targets, images.shape[0], images.device)
    with capture_layer(black_box.model, black_box.target_layer) as cap, torch.enable_grad():
        logits = black_box.model(images)
        if cap.activations is None:
            raise RuntimeError(f"target layer {black_box.target_layer_name} of {black_box.name} "
                               "was not run by the forward pass")
        if given is None:
            t = logits.argmax(dim=1)
        else:
            t = given
            n_classes = logits.shape[1]
            if bool(((t < 0) | (t >= n_classes)).any()):
                raise ValueError(f"targets must be class indices in [0, {n_classes}); "
                                 f"got {_listed(t.tolist())}")
        g = layer_gradients(logits, t, cap.activations)
    return Pass(black_box, images, t, logits.detach(), cap.activations.detach(), g.detach(),
                options or ExplainOptions())


def explain(black_box: BlackBox, images: torch.Tensor, methods: Sequence[str] | str = ("gradcam",),
            targets: Sequence[int] | torch.Tensor | None = None,
            options: ExplainOptions | None = None, **option_kwargs: Any) -> Explanations:
    """Maps of every method in ``methods`` for a batch, from one shared pass.

    Args:
        black_box: from :func:`paperlib.load_model` (or any :class:`BlackBox`).
        images: (B, 3, H, W) in [0, 1], as the black box's ``preprocess`` gives them. Checked
            before any forward: a non-4-D tensor, an empty batch, a channel count other than 3,
            an integer or bool dtype (uint8 0..255: divide by 255), a non-finite pixel (the
            error names the images) or a value outside [0, 1] (0..255 or already-normalised
            input; the error shows the observed min/max) is a ``ValueError``. A float64 (or
            float16) batch is converted to the model's dtype (float32) without warning.
        methods: names from :data:`METHODS` (or one name).
        targets: one integer class index per image (a sequence of ints or an integer tensor,
            on any device); ``None``: the predicted class. A wrong length, an index outside
            [0, K) or a non-integer value (floats, even whole-valued ones, and bools) is a
            ``ValueError`` (never silently truncated or rounded).
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
    with eval_mode(black_box.model):  # extra forwards (Score-CAM...) never update BN statistics
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


def option_type(default: Any) -> Any:
    """The command-line parser of a setting whose default is ``default`` (booleans accept
    1/true/yes/on; other scalars their own type; ``None`` a string; anything else JSON)."""
    import json

    if isinstance(default, bool):
        return lambda text: text.lower() in ("1", "true", "yes", "on")
    if isinstance(default, (int, float, str)):
        return type(default)
    return str if default is None else json.loads


def add_option_arguments(parser: Any, skip: Iterable[str] = ()) -> list[str]:
    """One ``--option-name`` (default ``None``: the method's own) per option field of every
    registered method, except ``skip``; returns the option names added. A new method's options
    reach every command line this way, with no edit there."""
    added, skip = [], set(skip)
    for option, owners in sorted(ExplainOptions.option_fields().items()):
        if option in skip:
            continue
        value = getattr(METHODS[owners[0]].options(), option)
        parser.add_argument("--" + option.replace("_", "-"), dest=option,
                            type=option_type(value), default=None,
                            help=f"option of {', '.join(owners)} (default {value!r})")
        added.append(option)
    return added


_Registry.ready = True
