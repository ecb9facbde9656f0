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
- :mod:`paperlib.results`   -- the SQLite results store (resumable, one transaction per batch)
- :mod:`paperlib.tables`, :mod:`paperlib.plots` -- tables and figures
- :mod:`paperlib.paper_reference` -- every cell of the paper's Tables 2-4
- :mod:`paperlib.protocol`, :mod:`paperlib.power` -- protocol sensitivity, seed sweeps, power
- :mod:`paperlib.precision` -- opt-in bf16 / compiled metric forwards and their measured effect
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

from .perf import configure_malloc as _configure_malloc

_configure_malloc(_os.environ.get("PAPERLIB_MALLOC", "keep"))  # see paperlib.perf

# the allocator must be configured before torch allocates: these imports come after it
from . import attention as _attention  # noqa: E402, F401  (registers the attention methods)
from .blackbox import BlackBox, WeightsNotFoundError  # noqa: E402
from .cam import (  # noqa: E402
    METHODS,
    ExplainOptions,
    Explanations,
    MethodSpec,
    explain,
    gradient_pass,
    method_label,
    register_method,
)
from .data import imagenet_classes, iter_batches, load_images  # noqa: E402
from .models import MODEL_NAMES, load_model  # noqa: E402
from .wrap import wrap_model  # noqa: E402

__version__ = "0.1.0"

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
