"""paperlib: the reproduction kit for An & Joe (2022), "Attention Map-Guided Visual Explanations
for Deep Neural Networks" (Applied Sciences 12, 3846).

Data flows one way: black box -> images -> one hooked pass -> maps -> masked inputs -> scores ->
tables and figures. Each step is a module:

- :mod:`paperlib.models`    -- :func:`load_model` (EfficientNet-Lite0/1/2 offline; ResNet-50, VGG19,
  GoogLeNet with their weights)
- :mod:`paperlib.data`      -- :func:`load_images` (sample and ImageNet-val layouts, bad files skipped)
- :mod:`paperlib.hooks`     -- the one context manager capturing a layer's activations
- :mod:`paperlib.cam`       -- :func:`explain`: every CAM method from one pass
- :mod:`paperlib.attention` -- the paper's channel + spatial attention over Grad-CAM's terms
- :mod:`paperlib.metrics`   -- masking, Average Drop, % Increase, percentage-in, deletion/insertion
- :mod:`paperlib.stats`     -- bootstrap intervals, paired Wilcoxon tests
- :mod:`paperlib.results`   -- the resumable per-image results cache
- :mod:`paperlib.plots`     -- figures
"""

import os as _os

from .perf import configure_malloc as _configure_malloc

_configure_malloc(_os.environ.get("PAPERLIB_MALLOC", "keep"))  # see paperlib.perf

from . import attention as _attention  # noqa: F401  (registers the attention methods)
from .cam import METHODS, ExplainOptions, Explanations, explain, gradient_pass
from .data import imagenet_classes, iter_batches, load_images
from .models import MODEL_NAMES, BlackBox, WeightsNotFoundError, load_model

__version__ = "0.1.0"

__all__ = [
    "BlackBox",
    "ExplainOptions",
    "Explanations",
    "METHODS",
    "MODEL_NAMES",
    "WeightsNotFoundError",
    "explain",
    "gradient_pass",
    "imagenet_classes",
    "iter_batches",
    "load_images",
    "load_model",
]
