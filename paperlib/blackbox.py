"""The black box: its record (:class:`BlackBoxSpec`) and the loaded classifier (:class:`BlackBox`).

A black box's facts are one record, :class:`BlackBoxSpec`: how to build the network and where its
weights come from, the default and an earlier target layer, the randomisation cascade of the
sanity check, the input size, resize / crop and normalisation, the class names. The kit's records
are registered in :mod:`paperlib.models` (the zoo); :func:`paperlib.wrap_model` and ``timm:<arch>``
build one on the fly for the wrapped network. :class:`BlackBox` is a loaded classifier and carries
its record (:attr:`BlackBox.spec`).

Every black box takes images **in [0, 1]** (after resizing and cropping) and normalises them
itself (:class:`Normalize` is the first module of :attr:`BlackBox.model`). Masking for the
evaluation metrics therefore happens on the [0, 1] image, before normalisation, and every method
sees exactly the same model.
"""

from __future__ import annotations

import os
from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from PIL import Image
from torch import nn
from torchvision import transforms as T

from .checks import check_number

__all__ = [
    "BlackBox",
    "BlackBoxSpec",
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "INTERPOLATIONS",
    "Normalize",
    "WeightsNotFoundError",
    "channel_values",
    "make_preprocess",
    "map_state_dict_by_order",
    "read_state_dict",
    "resolve_device",
]

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
#: The resize interpolations a record may name.
INTERPOLATIONS = {"bilinear": T.InterpolationMode.BILINEAR,
                  "bicubic": T.InterpolationMode.BICUBIC,
                  "nearest": T.InterpolationMode.NEAREST}

#: ``build(weights, download) -> (net, weights source)``: the network with its weights loaded
#: (``weights``: ``None`` for the record's standard weights, a state-dict path, or ``"random"``).
Builder = Callable[[str | os.PathLike | None, bool], tuple[nn.Module, str]]


class WeightsNotFoundError(FileNotFoundError):
    """Raised when a black box's pretrained weights cannot be found or fetched."""


@dataclass(frozen=True)
class BlackBoxSpec:
    """Everything the kit knows about one black box (names inside the network, without ``net.``).

    Attributes:
        name: the kit's name for it (``efficientnet_lite0``, ``resnet50``...; results keys).
        build: ``build(weights, download) -> (net, weights source)`` (:data:`Builder`).
        target_layer: the default layer the CAM methods explain (the last convolutional stage).
        input_size: S: the black box takes (B, 3, S, S) images.
        resize_size: the short side is resized to this before the centre crop of S.
        interpolation: the resize's interpolation (a key of :data:`INTERPOLATIONS`).
        mean, std: the normalisation applied inside the black box.
        weights_source: where the standard weights come from, in words (for the record).
        earlier_layer: an earlier target layer where the class score's gradient varies in space
            (the claim matrix's ``earlier`` role), or ``None``.
        cascade: the sanity check's blocks re-initialised at each step (cumulatively), from the
            output end down, or ``None`` when none is defined.
        num_classes: the number of logits.
        class_names: ``class_names() -> one name per logit`` (called when needed), or ``None``.
    """

    name: str
    build: Builder
    target_layer: str
    input_size: int
    resize_size: int
    interpolation: str
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    weights_source: str = ""
    earlier_layer: str | None = None
    cascade: tuple[tuple[str, ...], ...] | None = None
    num_classes: int = 1000
    class_names: Callable[[], tuple[str, ...]] | None = None

    def __post_init__(self) -> None:
        if self.interpolation not in INTERPOLATIONS:
            raise ValueError(f"{self.name}: interpolation must be one of "
                             f"{sorted(INTERPOLATIONS)}, got {self.interpolation!r}")
        if self.input_size < 1 or self.resize_size < self.input_size:
            raise ValueError(f"{self.name}: expected 1 <= input_size <= resize_size, got "
                             f"input_size={self.input_size}, resize_size={self.resize_size}")

    def preprocess(self) -> Callable[[Image.Image], torch.Tensor]:
        """PIL RGB image -> (3, S, S) float tensor in [0, 1] (:func:`make_preprocess`)."""
        return make_preprocess(self.input_size, self.resize_size,
                               INTERPOLATIONS[self.interpolation])


def channel_values(name: str, values: Any) -> tuple[float, ...]:
    """``values`` (a sequence of numbers, or of 0-d tensors) as floats, one per channel: each
    finite, and for ``name == "std"`` > 0 -- a NaN or a zero there makes every map NaN."""
    if isinstance(values, (str, bytes)) or not hasattr(values, "__iter__"):
        raise ValueError(f"{name} must be one finite number per channel, got {values!r}")
    std = name == "std"
    out = tuple(check_number(name, v.item() if hasattr(v, "item") else v,
                             low=0 if std else None, low_open=std) for v in values)
    if not out:
        raise ValueError(f"{name} must be one finite number per channel, got {values!r}")
    return out


class Normalize(nn.Module):
    """``(x - mean) / std`` per channel, as a module so that the black box takes [0, 1] images."""

    mean: torch.Tensor
    std: torch.Tensor

    def __init__(self, mean: tuple[float, ...], std: tuple[float, ...]) -> None:
        super().__init__()
        mean, std = channel_values("mean", mean), channel_values("std", std)
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
        spec: the black box's record (:class:`BlackBoxSpec`); ``None`` for one assembled by hand.
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
    spec: BlackBoxSpec | None = None

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)

    @property
    def net(self) -> nn.Module:
        """The classifier without its normalisation module."""
        return self.model.get_submodule("net")

    @property
    def class_names(self) -> tuple[str, ...] | None:
        """One name per logit (index order), from the record; ``None`` when it has none."""
        if self.spec is None or self.spec.class_names is None:
            return None
        return self.spec.class_names()

    @property
    def num_classes(self) -> int | None:
        """The number of logits, from the record (``None`` without one)."""
        return self.spec.num_classes if self.spec is not None else None

    def cascade(self) -> tuple[tuple[str, ...], ...]:
        """The record's randomisation cascade; a one-line ``ValueError`` naming the black box
        when it has none."""
        steps = self.spec.cascade if self.spec is not None else None
        if not steps:
            raise ValueError(f"black box {self.name!r} has no randomisation cascade in its record; "
                             "register it with cascade=((block, ...), ...) (names inside net, "
                             "output end first) or pass steps=")
        return steps

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
