"""The kit's one hook mechanism: capture a layer's output so gradients can be taken with respect
to it.

:func:`capture_layer` registers a forward hook on ``layer``; inside the ``with`` block every forward
of the model stores that layer's output in :attr:`Capture.activations`. Inside the block every
parameter of the model has ``requires_grad=False`` (:func:`frozen_parameters`), whatever its owner
set: a user's classifier (:func:`paperlib.wrap_model`) is explained exactly like the kit's frozen
black boxes. The layer's output then does not require grad (the inputs need none), and the hook
stores a detached leaf that does as the activations and hands the rest of the network a copy of it
(so that an in-place operation after the layer, e.g. ``ReLU(inplace=True)``, changes neither the
captured activations nor a leaf). The forward below the layer builds no autograd graph at all, and
:func:`layer_gradients` -- ``torch.autograd.grad`` of the target scores with respect to the
activations -- back-propagates only through the head. Parameters' ``.grad`` are never touched.

On exit, always (exceptions included), the hook is removed, every parameter's ``requires_grad``
flag and every module's train/eval flag are restored to what they were on entry.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import torch
from torch import nn

__all__ = ["Capture", "capture_layer", "eval_mode", "frozen_parameters", "layer_gradients"]


@dataclass
class Capture:
    """Holds the captured activations of the last forward inside :func:`capture_layer`."""

    activations: torch.Tensor | None = None


@contextmanager
def eval_mode(model: nn.Module) -> Iterator[nn.Module]:
    """Put every module of ``model`` in eval mode; restore each module's own flag on exit."""
    training = [m for m in model.modules() if m.training]
    for m in training:  # nothing to do (and nothing to restore) for a model already in eval mode
        m.training = False
    try:
        yield model
    finally:
        for m in training:
            m.training = True


@contextmanager
def frozen_parameters(model: nn.Module) -> Iterator[nn.Module]:
    """``requires_grad=False`` for every parameter of ``model``; on exit (exceptions included)
    exactly the parameters that required grad on entry require it again."""
    trainable = [p for p in model.parameters() if p.requires_grad]
    for p in trainable:
        p.requires_grad_(False)
    try:
        yield model
    finally:
        for p in trainable:
            p.requires_grad_(True)


@contextmanager
def capture_layer(model: nn.Module, layer: nn.Module) -> Iterator[Capture]:
    """Capture ``layer``'s output during forwards of ``model`` (in eval mode, parameters frozen)
    within the block."""
    capture = Capture()

    def hook(module: nn.Module, inputs: tuple, output: torch.Tensor) -> torch.Tensor:
        if not isinstance(output, torch.Tensor):
            raise TypeError(f"target layer {type(module).__name__} returned "
                            f"{type(output).__name__}; expected a tensor (B, C, h, w)")
        if torch.is_grad_enabled() and not output.requires_grad:
            leaf = output.detach().requires_grad_()
            capture.activations = leaf
            return leaf.clone()  # the network goes on with a copy: in-place ops stay legal
        capture.activations = output
        return output

    with eval_mode(model), frozen_parameters(model):
        handle = layer.register_forward_hook(hook)
        try:
            yield capture
        finally:
            handle.remove()


def layer_gradients(logits: torch.Tensor, targets: torch.Tensor,
                    activations: torch.Tensor) -> torch.Tensor:
    """d logit[b, targets[b]] / d activations[b] for every b, in one ``autograd.grad`` call.

    Images in a batch are independent (eval mode), so the gradient of the summed target logits is
    each image's own gradient.
    """
    score = logits.gather(1, targets.view(-1, 1)).sum()
    (grad,) = torch.autograd.grad(score, activations)
    return grad
