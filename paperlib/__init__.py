"""paperlib: the reproduction kit for An & Joe (2022), "Attention Map-Guided Visual Explanations
for Deep Neural Networks" (Applied Sciences 12, 3846).

Data flows one way: black box -> images -> one hooked pass -> maps -> masked inputs -> scores ->
tables and figures. Each step is a module:

- :mod:`paperlib.models`    -- :func:`load_model` (EfficientNet-Lite0/1/2 offline; ResNet-50, VGG19,
  GoogLeNet with their weights)
- :mod:`paperlib.data`      -- :func:`load_images` (sample and ImageNet-val layouts,
  bad files skipped)
- :mod:`paperlib.hooks`     -- the one context manager capturing a layer's activations
- :mod:`paperlib.masking`   -- the one masking routine (x * M + fill * (1 - M)), top-k masks
- :mod:`paperlib.cam`       -- the method registry and :func:`explain`: every method from one pass
- :mod:`paperlib.attention` -- the paper's channel + spatial attention over Grad-CAM's terms
- :mod:`paperlib.schema`    -- the per-image row: one definition of the result columns
- :mod:`paperlib.forward`   -- the metrics' opt-in fast forwards (bf16 / TF32 / fp16, compiled)
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
- :mod:`paperlib.precision` -- the precision study: what the fast forwards do to the numbers
- :mod:`paperlib.matrix`    -- the claim matrix over black boxes x layers
- :mod:`paperlib.evaluate`, :mod:`paperlib.distributed` -- the evaluation without a notebook,
  under ``torchrun``
- :mod:`paperlib.wrap`, :mod:`paperlib.userdata`, :mod:`paperlib.cli` -- your own model, images
  and the ``paperlib explain`` command
- :mod:`paperlib.reproduce`, :mod:`paperlib.readme` -- ``make reproduce`` and the generated README

A method is one record: a function decorated with :func:`paperlib.cam.register_method` (its
label, role, options dataclass, cost). Everything downstream reads the registry.
"""

import os as _os
from importlib import import_module as _import_module
from typing import Any as _Any

__version__ = "0.1.0"

#: public name -> the module that defines it (imported on first use, PEP 562: ``import
#: paperlib.readme`` and ``paperlib --help`` import no torch)
_PUBLIC = {
    "METHODS": "cam", "ExplainOptions": "cam", "Explanations": "cam", "MethodSpec": "cam",
    "explain": "cam", "gradient_pass": "cam", "method_label": "cam", "register_method": "cam",
    "imagenet_classes": "data", "iter_batches": "data", "load_images": "data",
    "MODEL_NAMES": "models", "BlackBox": "models", "WeightsNotFoundError": "models",
    "load_model": "models", "wrap_model": "wrap",
}


def __getattr__(name: str) -> _Any:
    if name not in _PUBLIC:
        raise AttributeError(f"module 'paperlib' has no attribute {name!r}")
    from .perf import configure_malloc

    # the allocator must be configured before torch allocates (see paperlib.perf)
    configure_malloc(_os.environ.get("PAPERLIB_MALLOC", "keep"))
    _import_module(".attention", __name__)  # registers the attention methods
    value = getattr(_import_module(f".{_PUBLIC[name]}", __name__), name)
    globals()[name] = value
    return value


__all__ = [
    "BlackBox",
    "ExplainOptions",
    "Explanations",
    "METHODS",
    "MethodSpec",
    "MODEL_NAMES",
    "WeightsNotFoundError",
    "explain",
    "gradient_pass",
    "imagenet_classes",
    "iter_batches",
    "load_images",
    "load_model",
    "method_label",
    "register_method",
    "wrap_model",
]
