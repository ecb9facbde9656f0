"""Opt-in fast forwards for the metrics' masked copies: precision, autocast, compiled forwards.

The evaluation's cost is the black box's forwards of masked copies (soft map, top-k, deletion,
insertion: :func:`paperlib.metrics.score_inputs`), about 360 per evaluated image. Two settings of
:class:`paperlib.metrics.MetricConfig` make those forwards cheaper; both are part of the results
key, so fast and exact results never share a store entry:

* ``precision``: ``fp32`` (default: the forward exactly as before, no autocast), ``bf16``
  (``torch.autocast`` to bfloat16, CPU or CUDA), and on CUDA only ``tf32`` (float32 tensors, TF32
  tensor-core matmuls and convolutions) and ``fp16`` (``torch.autocast`` to float16). ``tf32`` and
  ``fp16`` on a CPU are an error (:func:`check_precision`). The probabilities are always taken in
  float32 (``logits.float().softmax(1)``). On CUDA, "fp32" means torch's defaults, under which
  cuDNN convolutions may already use TF32 (``torch.backends.cudnn.conv.fp32_precision``).
* ``compile``: the forward goes through ``torch.compile`` (inductor). The compiled callable is
  cached per black-box model (:func:`compiled_forward`, a ``WeakKeyDictionary`` whose values hold
  no reference to the model, so a dropped black box is freed with its compiled code). Inductor
  specialises on the batch shape, so every compiled forward gets exactly ``chunk_size`` images:
  the last chunk is padded by repeating its last image and the padded outputs are dropped
  (:func:`fast_probabilities`). The alternative, a graph with a symbolic batch size
  (``dynamic=True`` here: ``torch._dynamo.mark_dynamic`` on the batch dimension), was measured
  on the development CPU (2-core EPYC, loaded) and rejected: 354 s to compile, and another 202 s
  for a second batch size, against ~25 s once for the padded static graph; with
  ``torch.compile(dynamic=True)`` (every dimension symbolic) compiling had not finished after
  23 min. Padding costs at most ``chunk_size - 1`` wasted copies per call.

What stays exact: the gradient pass of every method (:func:`paperlib.explain`), and Y, the target's
probability on the full image (the clean forward), so a fast mode moves O only. What a fast mode
does to the numbers is measured by the study in :mod:`paperlib.precision`.
"""

from __future__ import annotations

import contextlib
import weakref
from collections.abc import Callable, Iterator
from typing import Any

import torch
from torch import nn

__all__ = ["CUDA_ONLY", "PRECISIONS", "autocast", "check_precision", "compiled_forward",
           "fast_probabilities"]

#: The forward precisions, default first.
PRECISIONS = ("fp32", "bf16", "tf32", "fp16")
#: Valid only on a CUDA device.
CUDA_ONLY = ("tf32", "fp16")


def check_precision(precision: str, device: torch.device | str | None = None) -> str:
    """``precision`` if it is one of :data:`PRECISIONS` and usable on ``device``, else a
    ``ValueError`` saying why (``tf32`` / ``fp16`` on a CPU; ``bf16`` on a GPU without it).

    ``device=None`` checks the name only."""
    if precision not in PRECISIONS:
        raise ValueError(f"unknown precision {precision!r}; expected one of {PRECISIONS}")
    if device is None:
        return precision
    dev = torch.device(device)
    if precision in CUDA_ONLY and dev.type != "cuda":
        raise ValueError(f"precision={precision!r} is only valid on a CUDA device (TF32 and "
                         f"float16 forwards are GPU features); this black box is on "
                         f"{str(dev)!r}. On a CPU use 'bf16' (or 'fp32', the default)")
    if precision == "bf16" and dev.type == "cuda" and not torch.cuda.is_bf16_supported():
        raise ValueError(f"precision='bf16': {torch.cuda.get_device_name(dev)} does not support "
                         "bfloat16; use 'fp16' or 'tf32' on this GPU")
    return precision


@contextlib.contextmanager
def _tf32() -> Iterator[None]:
    """TF32 matmuls and cuDNN convolutions inside, the previous settings restored after."""
    matmul = torch.backends.cuda.matmul
    conv: Any = getattr(torch.backends.cudnn, "conv", None)  # torch >= 2.9
    if hasattr(conv, "fp32_precision"):  # torch >= 2.9: the fp32_precision API
        saved = (matmul.fp32_precision, conv.fp32_precision)
        matmul.fp32_precision, conv.fp32_precision = "tf32", "tf32"
        try:
            yield
        finally:
            matmul.fp32_precision, conv.fp32_precision = saved
    else:  # pragma: no cover - older torch
        saved_legacy = (matmul.allow_tf32, torch.backends.cudnn.allow_tf32)
        matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = True, True
        try:
            yield
        finally:
            matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved_legacy


def autocast(precision: str, device: torch.device | str) -> contextlib.AbstractContextManager[Any]:
    """The context a forward in ``precision`` runs under on ``device`` (checked first):
    nothing for ``fp32``, ``torch.autocast`` to bfloat16 / float16, TF32 flags for ``tf32``."""
    dev = torch.device(device)
    check_precision(precision, dev)
    if precision == "bf16":
        return torch.autocast(dev.type, dtype=torch.bfloat16)
    if precision == "fp16":
        return torch.autocast(dev.type, dtype=torch.float16)
    if precision == "tf32":
        return _tf32()
    return contextlib.nullcontext()


def _forward(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """``model(x)``; compiled by :func:`compiled_forward` with the model as an argument."""
    out: torch.Tensor = model(x)
    return out


def _forward_dynamic(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """``model(x)``: a separate code object (dynamo caches per code object) for the graph with a
    symbolic batch size."""
    out: torch.Tensor = model(x)
    return out


#: model -> its compiled forward ``fn(model, x)``. The values do not reference the model (it is
#: an argument, and dynamo guards on it weakly), so an entry goes when its model is freed.
_COMPILED: weakref.WeakKeyDictionary[nn.Module, dict[bool, Callable[..., torch.Tensor]]] = (
    weakref.WeakKeyDictionary())


def compiled_forward(model: nn.Module, dynamic: bool = False) -> Callable[[torch.Tensor],
                                                                          torch.Tensor]:
    """``x -> model(x)`` through ``torch.compile`` (inductor), created once per model.

    ``dynamic=False`` (what the metrics use): specialised on the batch shape, so call it with one
    batch size (:func:`fast_probabilities` pads to ``chunk_size``); ``dynamic=True``: the batch
    dimension is marked dynamic (``torch._dynamo.mark_dynamic``), one graph for every batch
    size, slow to compile (see the module's docstring). Compiling happens on the first call
    (~25 s for Lite0 on a CPU, where it needs a C++ compiler; a new shape compiles again).
    """
    per_model = _COMPILED.setdefault(model, {})
    if dynamic not in per_model:
        # static: dynamic=False also stops dynamo from turning a second batch size into a
        # (slow) dynamic recompilation; it recompiles for that shape instead
        per_model[dynamic] = (torch.compile(_forward_dynamic) if dynamic
                              else torch.compile(_forward, dynamic=False))
    fn = per_model[dynamic]
    ref = weakref.ref(model)

    def call(x: torch.Tensor) -> torch.Tensor:
        m = ref()
        if m is None:  # pragma: no cover - the caller keeps the model alive
            raise ReferenceError("the model of this compiled forward was freed")
        if dynamic:
            torch._dynamo.mark_dynamic(x, 0)
        return fn(m, x)

    return call


def _pad_rows(x: torch.Tensor, size: int) -> torch.Tensor:
    """``x`` with its last row repeated up to ``size`` rows."""
    if x.shape[0] == size:
        return x
    return torch.cat([x, x[-1:].expand(size - x.shape[0], *x.shape[1:])])


@torch.no_grad()
def fast_probabilities(model: nn.Module, inputs: torch.Tensor, precision: str = "fp32",
                       compile: bool = False, chunk_size: int = 16,
                       dynamic: bool = False) -> torch.Tensor:
    """Softmax probabilities (float32, (N, classes)) of ``model`` on ``inputs`` in a fast mode.

    Eager (``compile=False``): one forward of all ``inputs`` under :func:`autocast`. Compiled:
    forwards of exactly ``chunk_size`` inputs (the last chunk padded with copies of its last
    input, whose outputs are dropped), so the compiled graph never sees a new batch shape;
    ``dynamic=True`` uses one graph with a symbolic batch size instead and does not pad.
    """
    with autocast(precision, inputs.device):
        if not compile:
            return model(inputs).float().softmax(dim=1)
        fn = compiled_forward(model, dynamic)
        if dynamic:
            return fn(inputs).float().softmax(dim=1)
        parts = []
        for start in range(0, inputs.shape[0], chunk_size):
            chunk = inputs[start: start + chunk_size]
            n = chunk.shape[0]
            parts.append(fn(_pad_rows(chunk, chunk_size))[:n].float().softmax(dim=1))
        return torch.cat(parts)
