"""Your own classifier as a black box: :func:`wrap_model` for any ``nn.Module``, ``timm:<name>``.

:func:`wrap_model` turns a classifier -- torchvision, timm or your own -- into a
:class:`paperlib.BlackBox` exactly like the kit's own: the normalisation becomes the first module
(``nn.Sequential(normalize, net)``), so the black box takes [0, 1] images and the metrics mask
before normalising; ``preprocess`` resizes, centre-crops and gives [0, 1] tensors; the network is
put in eval mode and moved to the device. Its parameters' ``requires_grad`` flags are left as they
are: explaining never depends on them (:func:`paperlib.hooks.capture_layer` switches them off for
the pass and restores each one), so a wrapped, trainable network is explained as fast as a frozen
one. Every method of :data:`paperlib.METHODS` and every metric works on the result.

Settings and their defaults:

* target layer: a module name (``"layer4"``) or the module itself; ``None`` picks the last module
  (in execution order) whose output is a feature map of the square dry-run image, (B, C, h, h)
  with 1 < h < S -- the last convolutional stage (``layer4`` of a ResNet, ``bn2`` of an
  EfficientNet); when token outputs (B, N, C) follow it (a vision transformer) the choice is left
  to you. A wrong name is an error listing the closest valid names.
* input size, mean, std, resize (crop fraction) and interpolation: the model's own from timm's
  ``pretrained_cfg`` when it has one (its test-time size), else ImageNet's (224 px, the ImageNet
  mean and std, resize to 256 and centre-crop 224, bilinear). Anything passed wins.
* class names: optional, for labels (their number must equal the model's outputs).

At wrap time one dry forward of a zero image, then one gradient of a logit with respect to the
target layer, check what the methods need: a single (B, num_classes) logits tensor (a model
returning a tuple, a dict or an output object is an error saying how to wrap it), a target layer
that runs once per forward and outputs a 4-D map, and logits that depend on it.

``load_model("timm:<name>", weights=path)`` builds any timm architecture (``pretrained=False``)
through :func:`wrap_model`, its weights from a local state-dict file; ``weights="random"`` must be
asked for explicitly. The kit never downloads timm weights.
"""

from __future__ import annotations

import difflib
import hashlib
import math
import os
import warnings
from collections import OrderedDict
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from .blackbox import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    INTERPOLATIONS,
    BlackBox,
    BlackBoxSpec,
    Normalize,
    WeightsNotFoundError,
    channel_values,
    read_state_dict,
    resolve_device,
)
from .hooks import capture_layer, eval_mode, layer_gradients

__all__ = [
    "TIMM_PREFIX",
    "cascade_of",
    "load_timm",
    "state_fingerprint",
    "wrap_model",
]

#: ``load_model`` names starting with this build a timm architecture (``timm:resnet18``).
TIMM_PREFIX = "timm:"
_DEFAULT_SIZE = 224
_DEFAULT_CROP_PCT = 0.875  # resize 256, crop 224: torchvision's ImageNet evaluation transform


def cascade_of(net: nn.Module) -> tuple[tuple[str, ...], ...]:
    """A randomisation cascade for any network: its top-level children that hold parameters, one
    per step, from the output end (the last registered child) down."""
    return tuple((name,) for name, child in reversed(list(net.named_children()))
                 if any(True for _ in child.parameters()))


# ---------------------------------------------------------------------------------------------
# The dry forward


@dataclass
class _Seen:
    """What one module returned during the dry forward (the last call) and how often it ran."""

    order: int
    calls: int
    kind: str                       # "tensor" or the output's type name
    shape: tuple[int, ...] = ()


def _describe(value: Any) -> str:
    """A short description of a forward's output, for error messages."""
    if isinstance(value, torch.Tensor):
        return f"a tensor of shape {tuple(value.shape)}"
    if isinstance(value, (tuple, list)):
        parts = ", ".join(_describe(v) for v in value[:4]) + (", ..." if len(value) > 4 else "")
        return f"a {type(value).__name__} of {len(value)} outputs ({parts})"
    if isinstance(value, dict):
        return f"a dict with keys {list(value)[:6]}"
    return f"a {type(value).__name__}"


@contextmanager
def _record_outputs(net: nn.Module) -> Iterator[dict[str, _Seen]]:
    """Record every submodule's output during forwards within the block (hooks always removed)."""
    seen: dict[str, _Seen] = {}
    counter = iter(range(10 ** 9))

    def make_hook(name: str):
        def hook(module: nn.Module, inputs: tuple, output: Any) -> None:
            prev = seen.get(name)
            kind = "tensor" if isinstance(output, torch.Tensor) else type(output).__name__
            shape = tuple(output.shape) if isinstance(output, torch.Tensor) else ()
            seen[name] = _Seen(next(counter), (prev.calls if prev else 0) + 1, kind, shape)
        return hook

    handles = [m.register_forward_hook(make_hook(n)) for n, m in net.named_modules() if n]
    try:
        yield seen
    finally:
        for h in handles:
            h.remove()


def _is_map(s: _Seen, size: int) -> bool:
    """A feature map of the square dry-run image: (B, C, h, h) with 1 < h < S."""
    return s.kind == "tensor" and len(s.shape) == 4 and s.shape[2] == s.shape[3] and \
        1 < s.shape[2] < size


def _feature_maps(seen: dict[str, _Seen], size: int) -> list[str]:
    """The modules whose output is a feature map (:func:`_is_map`), in execution order."""
    return sorted((n for n, s in seen.items() if _is_map(s, size)), key=lambda n: seen[n].order)


def _layer_name(net: nn.Module, target_layer: str | nn.Module | None, seen: dict[str, _Seen],
                size: int, what: str) -> str:
    """The qualified name of the target layer inside ``net`` (see :func:`wrap_model`)."""
    names = [n for n, _ in net.named_modules() if n]
    maps = _feature_maps(seen, size)
    if target_layer is None:
        if not maps:
            raise ValueError(f"{what}: no module outputs a (B, C, h, h) feature map with "
                             f"1 < h < {size} for a {size} x {size} image, so there is no layer "
                             "for a class activation map; pass target_layer= a module whose "
                             "output is a 4-D feature map")
        last = seen[maps[-1]].order
        tokens = sorted((n for n, s in seen.items() if s.order > last and s.kind == "tensor"
                         and len(s.shape) == 3), key=lambda n: seen[n].order)
        if tokens:
            raise ValueError(f"{what}: its last feature map, {maps[-1]!r}, is followed by layers "
                             f"with token outputs ({tokens[-1]!r}: {seen[tokens[-1]].shape}): a "
                             "transformer? wrap_model does not reshape tokens into maps; pass "
                             "target_layer= explicitly to explain a 4-D layer anyway")
        return maps[-1]
    if isinstance(target_layer, nn.Module):
        for n, m in net.named_modules():
            if m is target_layer and n:
                return n
        raise ValueError(f"{what}: the target layer given ({type(target_layer).__name__}) is not "
                         "a submodule of the model; pass one of its modules or a module name")
    if not isinstance(target_layer, str):
        raise TypeError(f"{what}: target_layer must be a module name, an nn.Module or None, got "
                        f"{type(target_layer).__name__}")
    if target_layer not in names:
        close = difflib.get_close_matches(target_layer, names, n=5, cutoff=0.5)
        hint = (f"closest names: {', '.join(repr(n) for n in close)}" if close else
                f"layers with a 4-D output: {', '.join(repr(n) for n in maps[-5:]) or 'none'}")
        raise ValueError(f"{what} has no module {target_layer!r}; {hint}")
    return target_layer


def _dry_run(net: nn.Module, target_layer: str | nn.Module | None, size: int,
             device: torch.device, what: str) -> tuple[str, int]:
    """One forward of a zero image: the target layer's name and the number of classes.

    Raises ``ValueError`` for several outputs, a layer that does not run once or has no 4-D
    output, and ``RuntimeError`` when the logits do not depend on the layer.
    """
    x = torch.zeros(1, 3, size, size, device=device)
    with eval_mode(net), torch.no_grad(), _record_outputs(net) as seen:
        out = net(x)
    if not isinstance(out, torch.Tensor):
        logits_hint = " (it has .logits: return that)" if hasattr(out, "logits") else ""
        raise ValueError(
            f"{what} returns {_describe(out)}{logits_hint}; explaining needs one (B, num_classes) "
            "logits tensor. Wrap it in a module whose forward returns the logits, e.g. "
            "forward(self, x): return self.model(x)[0]")
    if out.ndim != 2 or out.shape[0] != 1:
        raise ValueError(f"{what} returns a tensor of shape {tuple(out.shape)} for one image; "
                         "expected (1, num_classes) logits")
    name = _layer_name(net, target_layer, seen, size, what)
    s = seen.get(name)
    if s is None:
        raise ValueError(f"{what}: target layer {name!r} did not run in a forward pass")
    if s.calls != 1:
        raise ValueError(f"{what}: target layer {name!r} runs {s.calls} times per forward; a CAM "
                         "needs a layer that runs once (choose one of the calls' own modules)")
    if s.kind != "tensor" or len(s.shape) != 4:
        got = f"shape {s.shape}" if s.kind == "tensor" else f"a {s.kind}"
        maps = _feature_maps(seen, size)
        raise ValueError(f"{what}: target layer {name!r} outputs {got}; a CAM needs a 4-D "
                         f"(B, C, h, w) feature map; layers with one: "
                         f"{', '.join(repr(n) for n in maps[-5:]) or 'none'}")
    layer = net.get_submodule(name)
    with capture_layer(net, layer) as cap, torch.enable_grad():
        logits = net(x)
        assert cap.activations is not None
        try:
            layer_gradients(logits, logits.argmax(dim=1), cap.activations)
        except RuntimeError as exc:
            raise RuntimeError(f"{what}: the logits do not depend on target layer {name!r} "
                               f"({exc})") from exc
    return name, int(out.shape[1])


# ---------------------------------------------------------------------------------------------


def state_fingerprint(module: nn.Module) -> str:
    """``sha256:<12 hex digits>`` over the names and bytes of ``module``'s state dict (memory
    format and device do not change it): the weights a wrapped model had when it was wrapped."""
    h = hashlib.sha256()
    for name, t in module.state_dict().items():
        h.update(name.encode())
        h.update(str(t.dtype).encode() + str(tuple(t.shape)).encode())
        h.update(t.detach().cpu().contiguous().flatten().view(torch.uint8).numpy().tobytes())
    return f"sha256:{h.hexdigest()[:12]}"


def _timm_config(module: nn.Module) -> dict[str, Any]:
    """timm's data config (test-time size, mean, std, crop_pct, interpolation) or ``{}``."""
    if not isinstance(getattr(module, "pretrained_cfg", None), dict):
        return {}
    from timm.data import resolve_data_config

    return dict(resolve_data_config({}, model=module, use_test_size=True))


def _triple(values: Sequence[float], what: str) -> tuple[float, float, float]:
    if isinstance(values, (str, bytes)) or not hasattr(values, "__iter__"):
        raise ValueError(f"{what} must hold 3 values (R, G, B), got {values!r}")
    v = channel_values(what, values)
    if len(v) != 3:
        raise ValueError(f"{what} must hold 3 values (R, G, B), got {values!r}")
    return v[0], v[1], v[2]


def wrap_model(module: nn.Module, target_layer: str | nn.Module | None = None,
               input_size: int | None = None, mean: Sequence[float] | None = None,
               std: Sequence[float] | None = None, class_names: Sequence[str] | None = None,
               name: str | None = None, device: str | torch.device | None = "auto", *,
               crop_pct: float | None = None, interpolation: str | None = None,
               weights: str | None = None,
               cascade: Sequence[Sequence[str]] | None = None) -> BlackBox:
    """Your classifier as a black box, ready for :func:`paperlib.explain` and the metrics.

    Args:
        module: any ``nn.Module`` mapping (B, 3, S, S) normalised images to (B, K) logits. It is
            put in eval mode and moved to ``device`` (channels-last) in place; its parameters'
            ``requires_grad`` flags are left alone (explaining never depends on them).
        target_layer: a module name inside ``module`` (``"layer4"``), the module itself, or
            ``None`` for the last module whose output is a (B, C, h, h) feature map, 1 < h < S.
        input_size: S; default the timm model's test size, else 224.
        mean, std: the normalisation (applied inside the black box, on [0, 1] images); default
            the timm model's, else ImageNet's. Pass ``(0, 0, 0)`` / ``(1, 1, 1)`` when the
            module normalises itself.
        class_names: one name per output (for labels); default ``None``.
        name: the black box's name (results keys, file names); default the module's class name
            in lower case.
        device: ``"auto"`` (CUDA when present, else CPU), ``"cpu"``, ``"cuda"``...
        crop_pct: resize the short side to ``floor(S / crop_pct)`` before the centre crop;
            default the timm model's, else 0.875 (256 -> 224).
        interpolation: ``"bilinear"``, ``"bicubic"`` or ``"nearest"``; default the timm
            model's, else ``"bilinear"``.
        weights: where the weights came from, for the record (part of the results cache's
            key); default ``"user module (sha256:...)"``, a fingerprint of the state dict at
            wrap time (:func:`state_fingerprint`): re-wrap a network after changing its weights.
        cascade: the sanity check's randomisation steps (names inside ``module``, output end
            first); default :func:`cascade_of` (its top-level children with parameters).

    Returns a :class:`BlackBox` whose record (:attr:`BlackBox.spec`, a
    :class:`paperlib.blackbox.BlackBoxSpec`) is built for the wrapped module, as the zoo's are.

    Raises ``ValueError`` for a wrong layer name (listing the closest names), a model with
    several outputs, a target layer without a 4-D output, and ``RuntimeError`` when the logits
    do not depend on the target layer (see the module docstring).
    """
    if not isinstance(module, nn.Module):
        raise TypeError(f"wrap_model needs an nn.Module, got {type(module).__name__}")
    what = name or type(module).__name__
    cfg = _timm_config(module)
    size = int(input_size if input_size is not None else cfg.get("input_size", (3, _DEFAULT_SIZE,
                                                                               _DEFAULT_SIZE))[-1])
    if size < 1:
        raise ValueError(f"{what}: input_size must be a positive number of pixels, got {size}")
    mean_t = _triple(mean if mean is not None else cfg.get("mean", IMAGENET_MEAN), "mean")
    std_t = _triple(std if std is not None else cfg.get("std", IMAGENET_STD), "std")
    pct = float(crop_pct if crop_pct is not None else cfg.get("crop_pct", _DEFAULT_CROP_PCT))
    if not 0 < pct <= 1:
        raise ValueError(f"crop_pct must be in (0, 1], got {pct}")
    interp = interpolation if interpolation is not None else cfg.get("interpolation", "bilinear")
    if interp not in INTERPOLATIONS:
        raise ValueError(f"interpolation must be one of {sorted(INTERPOLATIONS)}, got {interp!r}")
    dev = resolve_device(device)
    source = weights if weights is not None else f"user module ({state_fingerprint(module)})"
    model = nn.Sequential(OrderedDict(normalize=Normalize(mean_t, std_t), net=module)).eval()
    model.to(dev, memory_format=torch.channels_last)  # type: ignore[call-overload]
    layer, num_classes = _dry_run(module, target_layer, size, dev, what)
    if class_names is not None:
        class_names = tuple(str(c) for c in class_names)
        if len(class_names) != num_classes:
            raise ValueError(f"{what} returns {num_classes} logits but {len(class_names)} class "
                             "names were given; expected one name per output")
    names = class_names
    steps = tuple(tuple(step) for step in cascade) if cascade is not None else cascade_of(module)
    spec = BlackBoxSpec(name=name or type(module).__name__.lower(),
                        build=lambda weights, download: (module, source), target_layer=layer,
                        input_size=size, resize_size=math.floor(size / pct), interpolation=interp,
                        mean=mean_t, std=std_t, weights_source=source, cascade=steps,
                        num_classes=num_classes,
                        class_names=(lambda: names) if names is not None else None)
    return BlackBox(name=spec.name, model=model, preprocess=spec.preprocess(),
                    target_layer=model.get_submodule(f"net.{layer}"),
                    target_layer_name=f"net.{layer}", input_size=size, mean=mean_t, std=std_t,
                    weights=source, device=dev, spec=spec)


# ---------------------------------------------------------------------------------------------
# timm:<name>


def _classifier_outputs(arch: str, state: dict[str, torch.Tensor]) -> int | None:
    """The number of classes of a state dict's classifier (timm's ``pretrained_cfg``), if found."""
    import timm

    cfg = timm.get_pretrained_cfg(arch)
    heads = getattr(cfg, "classifier", None) if cfg is not None else None
    for head in ([heads] if isinstance(heads, str) else list(heads or [])):
        w = state.get(f"{head}.weight")
        if w is not None and w.ndim >= 1:
            return int(w.shape[0])
    return None


def load_timm(arch: str, weights: str | os.PathLike | None = None,
              device: str | torch.device | None = "auto",
              target_layer: str | None = None) -> BlackBox:
    """A timm architecture by name (``pretrained=False``) wrapped by :func:`wrap_model`.

    Args:
        arch: a timm model name (``resnet18``, ``convnext_atto``...).
        weights: a state-dict file (its classifier's size sets the number of classes), or
            ``"random"`` for an untrained network (a warning says so). ``None`` is an error: the
            kit never downloads timm weights.
        device, target_layer: as for :func:`wrap_model`.

    The class names are ImageNet's when the network has 1000 outputs, else ``None``.
    """
    import timm

    what = f"{TIMM_PREFIX}{arch}"
    if not timm.is_model(arch):
        close = difflib.get_close_matches(arch, timm.list_models(), n=5, cutoff=0.6)
        raise ValueError(f"unknown timm model {arch!r}" + (
            f"; closest names: {', '.join(close)}" if close else
            "; timm.list_models() lists the valid names"))
    if weights is None:
        raise WeightsNotFoundError(
            f"{what}: pass weights='path/to/file.pth' (a state dict saved with torch.save, e.g. "
            "by timm's train.py or your fine-tuning) or weights='random' for an untrained "
            "network; the kit never downloads timm weights")
    if weights == "random":
        warnings.warn(f"{what}: weights='random' gives an UNTRAINED network; use it for tests "
                      "only", stacklevel=3)
        net, source = timm.create_model(arch, pretrained=False), "random"
    else:
        state = read_state_dict(weights, what)
        kwargs: dict[str, Any] = {}
        n = _classifier_outputs(arch, state)
        if n is not None:
            kwargs["num_classes"] = n
        net = timm.create_model(arch, pretrained=False, **kwargs)
        try:
            net.load_state_dict(state)
        except RuntimeError as exc:  # missing / unexpected keys, shape mismatches
            detail = " ".join(str(exc).split())
            raise ValueError(f"{what}: {weights} does not fit the architecture: "
                             f"{detail[:400]}{' ...' if len(detail) > 400 else ''}") from exc
        source = str(weights)
    names = None
    if getattr(net, "num_classes", None) == 1000:
        from .data import imagenet_classes

        names = imagenet_classes()[1]
    return wrap_model(net, target_layer, class_names=names, name=f"timm-{arch}", device=device,
                      weights=source)
