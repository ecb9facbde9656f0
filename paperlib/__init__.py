"""paperlib: the reproduction kit for An & Joe (2022), "Attention Map-Guided Visual Explanations
for Deep Neural Networks" (Applied Sciences 12, 3846).

Data flows one way: black box -> images -> one hooked pass -> maps -> masked inputs -> scores ->
tables and figures. Each step is a module:

- :mod:`paperlib.blackbox`  -- the black box: its record (builder, layers, cascade, input size and
  normalisation) and the loaded classifier
- :mod:`paperlib.models`    -- the zoo of records and :func:`load_model` (EfficientNet-Lite0/1/2
  offline; ResNet-50, VGG19, GoogLeNet with their weights)
- :mod:`paperlib.data`      -- :func:`load_images` (sample and ImageNet-val layouts,
  bad files skipped)
- :mod:`paperlib.hooks`     -- the one context manager capturing a layer's activations
- :mod:`paperlib.masking`   -- the one masking routine (x * M + fill * (1 - M)), top-k masks
- :mod:`paperlib.cam`       -- the method registry and :func:`explain`: every method from one pass
- :mod:`paperlib.attention` -- the paper's channel + spatial attention over Grad-CAM's terms
- :mod:`paperlib.schema`    -- the per-image row: one definition of the result columns
- :mod:`paperlib.metrics`   -- Average Drop, % Increase, percentage-in, deletion/insertion
- :mod:`paperlib.evaluation` -- the settings (explain options + metric config) and the run
- :mod:`paperlib.stats`     -- bootstrap intervals, paired Wilcoxon tests
- :mod:`paperlib.fingerprint`, :mod:`paperlib.atomic` -- results keys (config and code hashes),
  atomic file writes
- :mod:`paperlib.store`     -- the SQLite results store (one transaction per batch)
- :mod:`paperlib.runs`      -- the run ledger: a run's key, what is still to do, torchrun shards
- :mod:`paperlib.tables`, :mod:`paperlib.plots` -- tables and figures
- :mod:`paperlib.paper_reference` -- every cell of the paper's Tables 2-4
- :mod:`paperlib.protocol`, :mod:`paperlib.power` -- protocol sensitivity, seed sweeps, power
- :mod:`paperlib.forward`   -- the metrics' opt-in fast forwards (bf16 / TF32 / fp16, compiled)
- :mod:`paperlib.precision` -- the precision study: what the fast forwards do to the numbers
- :mod:`paperlib.matrix`    -- the claim matrix over black boxes x layers
- :mod:`paperlib.evaluate`, :mod:`paperlib.distributed` -- the evaluation without a notebook,
  under ``torchrun``
- :mod:`paperlib.wrap`, :mod:`paperlib.userdata` -- your own model and images
- :mod:`paperlib.cli` -- the one ``paperlib`` command (explain, evaluate, reproduce, matrix, ...)
- :mod:`paperlib.reproduce`, :mod:`paperlib.readme` -- ``make reproduce`` and the generated README

A method is one record: a function decorated with :func:`paperlib.cam.register_method` (its
label, role, options dataclass, cost). Everything downstream reads the registry.

``import paperlib`` is cheap: the names above are imported on first use, and the package changes
nothing process-wide (the allocator setting of :mod:`paperlib.perf` is made by the long-running
commands, or on import when ``$PAPERLIB_MALLOC`` asks for it).
"""

from __future__ import annotations

import importlib as _importlib
import os as _os
from typing import TYPE_CHECKING as _TYPE_CHECKING
from typing import Any as _Any

from .perf import MALLOC_ENV as _MALLOC_ENV
from .perf import configure_malloc as _configure_malloc

__version__ = "0.1.0"

#: The public API, by module. ``import paperlib`` imports none of them (no torch, no allocator
#: setting): each name is imported on first use (PEP 562), e.g. ``paperlib.load_model``.
_API = {
    "cam": ("METHODS", "ExplainOptions", "Explanations", "MethodSpec", "explain",
            "gradient_pass", "method_label", "register_method"),
    "data": ("imagenet_classes", "iter_batches", "load_images"),
    "blackbox": ("BlackBox", "WeightsNotFoundError"),
    "models": ("MODEL_NAMES", "load_model"),
    "wrap": ("wrap_model",),
}
if _TYPE_CHECKING:  # what the names are, for type checkers (nothing is imported at run time)
    from .blackbox import BlackBox as BlackBox
    from .blackbox import WeightsNotFoundError as WeightsNotFoundError
    from .cam import METHODS as METHODS
    from .cam import ExplainOptions as ExplainOptions
    from .cam import Explanations as Explanations
    from .cam import MethodSpec as MethodSpec
    from .cam import explain as explain
    from .cam import gradient_pass as gradient_pass
    from .cam import method_label as method_label
    from .cam import register_method as register_method
    from .data import imagenet_classes as imagenet_classes
    from .data import iter_batches as iter_batches
    from .data import load_images as load_images
    from .models import MODEL_NAMES as MODEL_NAMES
    from .models import load_model as load_model
    from .wrap import wrap_model as wrap_model

_HOME = {name: module for module, names in _API.items() for name in names}

__all__ = sorted(_HOME)

if _MALLOC_ENV in _os.environ:  # an entry point asked for it for its child processes (perf)
    _configure_malloc()


def __getattr__(name: str) -> _Any:
    module = _HOME.get(name)
    if module is None:
        raise AttributeError(f"module 'paperlib' has no attribute {name!r}")
    value = getattr(_importlib.import_module(f".{module}", __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_HOME))
