"""Performance: keep freed memory in the process (glibc); a device-aware clock.

By default glibc hands large freed blocks back to the kernel (blocks above a dynamic mmap threshold
of at most 32 MB, and a heap top above the trim threshold), and the next forward page-faults them
back in, zeroed. An EfficientNet-Lite0 forward of 16 images allocates buffers of ~25 MB each, so
every forward of the evaluation paid that again: measured here, 18.4 ms/image with glibc's
defaults against 9.3 ms/image with freed memory kept (batch 16, 2 threads). The long-running
commands therefore call :func:`configure_malloc` first thing, before torch allocates:
``paperlib evaluate``, ``reproduce``, ``matrix``, ``train-attention`` and ``precision``
(:mod:`paperlib.cli`). ``paperlib reproduce`` also sets ``$PAPERLIB_MALLOC`` for its notebook
kernels, whose ``import paperlib`` then calls it (the package changes nothing when the variable
is unset). The mode is ``$PAPERLIB_MALLOC`` (default ``keep``); ``PAPERLIB_MALLOC=system`` leaves
glibc alone. The cost: the process keeps its peak memory instead of returning it. Where glibc is
absent (macOS, Windows) nothing changes. This module imports no torch at import time.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import platform
import time
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch

__all__ = ["CHUNK_SIZE", "MALLOC_ENV", "clock", "configure_malloc", "malloc_mode"]

#: Environment variable: the allocator mode, ``keep`` (default) or ``system``.
MALLOC_ENV = "PAPERLIB_MALLOC"


def clock(device: torch.device) -> float:
    """Wall time, after waiting for queued CUDA work on ``device`` so that timings are real."""
    if device.type == "cuda":
        import torch

        torch.cuda.synchronize(device)
    return time.perf_counter()

M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3  # glibc mallopt parameters
_INT_MAX = 2 ** 31 - 1
_state = {"mode": "system (not configured)"}


def configure_malloc(mode: str | None = None) -> str:
    """``keep``: glibc keeps freed memory for reuse; ``system``: leave glibc's defaults; ``None``:
    ``$PAPERLIB_MALLOC``, else ``keep``.

    Returns a description of what is in effect (recorded by the benchmark)."""
    if mode is None:
        mode = os.environ.get(MALLOC_ENV, "keep")
    if mode not in ("keep", "system"):
        raise ValueError(f"malloc mode ({MALLOC_ENV}) must be 'keep' or 'system', got {mode!r}")
    if mode == "system":
        return _state["mode"]
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        ok = (libc.mallopt(M_TRIM_THRESHOLD, ctypes.c_int(_INT_MAX)) == 1
              and libc.mallopt(M_MMAP_THRESHOLD, ctypes.c_int(_INT_MAX)) == 1)
    except (OSError, AttributeError):
        ok = False
    if ok:
        _state["mode"] = ("keep (glibc mallopt M_TRIM_THRESHOLD = M_MMAP_THRESHOLD = 2^31-1: "
                          "freed memory reused)")
    return _state["mode"]


def malloc_mode() -> str:
    """What :func:`configure_malloc` put in effect."""
    return _state["mode"]


#: At most this many images per forward of masked or noisy copies (SmoothGrad-CAM++, Score-CAM,
#: attention fitting, every metric): the kit's one default for it.
CHUNK_SIZE = 16


def loadavg() -> str | None:
    """The 1, 5 and 15 minute load averages (``/proc/loadavg``), or None."""
    try:
        return " ".join(Path("/proc/loadavg").read_text().split()[:3])
    except OSError:
        return None


def cpu_model() -> str:
    """The CPU's model name (``/proc/cpuinfo``), else what :mod:`platform` knows."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()
