"""The benchmark's timing harness: machine facts, the C allocator setting, and the interleaved loop.

Generic: a :class:`Config` is a labelled zero-argument callable with the bookkeeping the report
needs (reference row, goal); nothing here knows which CAM method a row runs. When a call returns
:class:`paperlib.Explanations`, its per-step ``seconds`` are kept beside the wall-clock time.
"""

from __future__ import annotations

import datetime as _dt
import gc
import os
import platform
import statistics
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

import torch

import paperlib
from paperlib.perf import clock, cpu_model, loadavg

REPO = Path(__file__).resolve().parent.parent

# ---------------------------------------------------------------------------------------------
# Machine facts


def _version(dist: str) -> str | None:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return None


def _git_commit() -> str | None:
    try:
        out = subprocess.run(["git", "-C", str(REPO), "rev-parse", "HEAD"], capture_output=True,
                             text=True, timeout=10)
        dirty = subprocess.run(["git", "-C", str(REPO), "status", "--porcelain", "paperlib"],
                               capture_output=True, text=True, timeout=10)
        return out.stdout.strip() + (" (paperlib/ has uncommitted changes)"
                                     if dirty.stdout.strip() else "")
    except (OSError, subprocess.SubprocessError):
        return None


def usable_cpus() -> int:
    """The CPUs this process may run on."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def machine_facts(device: torch.device, threads: int, batch: int,
                  bb: paperlib.BlackBox) -> dict[str, Any]:
    """Hardware, software versions, load and the black box: the report's header and JSON."""
    facts: dict[str, Any] = {
        "date_utc": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
        "device": str(device),
        "cpu_model": cpu_model(),
        "cpu_count": os.cpu_count(),
        "cpus_usable": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
        "load_average_at_start": loadavg(),
        "torch_threads": threads,
        "batch_size": batch,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "torch": torch.__version__,
        "paperlib": paperlib.__version__,
        "grad-cam": _version("grad-cam"),
        "torchcam": _version("torchcam"),
        "timm": _version("timm"),
        "git_commit": _git_commit(),
        "model": bb.name,
        "target_layer": bb.target_layer_name,
        "weights": bb.weights,
    }
    if device.type == "cuda":
        facts["gpu"] = torch.cuda.get_device_name(device)
        facts["cuda"] = torch.version.cuda
        cudnn_version: Callable[[], int | None] = torch.backends.cudnn.version  # untyped in torch
        facts["cudnn"] = cudnn_version()
    return facts


# ---------------------------------------------------------------------------------------------
# The C allocator


def configure_malloc(mode: str) -> str:
    """The C allocator setting (:mod:`paperlib.perf`): ``keep`` is paperlib's default on import;
    ``system`` must be chosen before paperlib is imported (``PAPERLIB_MALLOC=system``)."""
    from paperlib.perf import configure_malloc as configure
    from paperlib.perf import malloc_mode

    if mode == "system" and malloc_mode().startswith("keep"):
        raise SystemExit("--malloc system: set PAPERLIB_MALLOC=system in the environment too "
                         "(paperlib configures the allocator when it is imported)")
    return configure(mode)


# ---------------------------------------------------------------------------------------------
# Configurations and the timing loop


@dataclass
class Config:
    """One row of the benchmark: a call to time and what its time is compared with."""

    key: str                          # short id, used in the JSON
    label: str                        # table text
    group: str                        # "floor" | "paperlib" | "pytorch-grad-cam" | "torchcam"
    fn: Callable[[], Any]             # one call; returns paperlib Explanations or anything
    images: int                       # images per call
    repeats: int
    forwards_per_image: float         # image forwards per image (informative)
    reference: str | None = None      # key of the configuration this row is compared with
    ref_factor: float = 1.0           # compared with ref_factor x the reference's ms/image
    ref_label: str = ""
    goal: float | None = None         # max allowed ratio to the reference
    note: str = ""
    kind: str = ""                    # which of the report's rules explains the verdict
    times: list[float] = field(default_factory=list)               # seconds per call
    seconds: list[dict[str, float]] = field(default_factory=list)  # Explanations.seconds

    def ms_per_image(self, how: str) -> float:
        """Median (``how="median"``) or minimum time per call, in milliseconds per image."""
        t = statistics.median(self.times) if how == "median" else min(self.times)
        return 1000.0 * t / self.images


def time_once(cfg: Config, device: torch.device, record: bool) -> None:
    """One call of ``cfg``, garbage collector run before and off during it; recorded if asked."""
    gc.collect()
    gc.disable()
    try:
        start = clock(device)
        out = cfg.fn()
        elapsed = clock(device) - start
    finally:
        gc.enable()
    if record:
        cfg.times.append(elapsed)
        if isinstance(out, paperlib.Explanations):
            cfg.seconds.append(dict(out.seconds))
    del out


def run_all(configs: list[Config], device: torch.device,
            log: Callable[[str], object] = print) -> None:
    """Warm every configuration up once, then time them interleaved, repetition by repetition."""
    # Everything alive now (torch, the models, the images) goes to the permanent generation, so
    # the collection before each timed call only scans what the previous calls left behind
    # (pytorch-grad-cam's CAM objects sit in reference cycles with their retained graphs).
    gc.collect()
    gc.freeze()
    for cfg in configs:  # warm-up: every configuration once
        t0 = time.perf_counter()
        time_once(cfg, device, record=False)
        log(f"  warm-up  {cfg.label:<62s} {time.perf_counter() - t0:8.2f} s")
    rounds = max(c.repeats for c in configs)
    for r in range(rounds):  # interleaved repetitions
        t0 = time.perf_counter()
        for cfg in configs:
            if r < cfg.repeats:
                time_once(cfg, device, record=True)
        log(f"  repetition {r + 1}/{rounds} done in {time.perf_counter() - t0:.1f} s")
    gc.unfreeze()


@dataclass
class Setup:
    """The common start of a benchmark: threads and malloc set, the black box, one batch of
    evaluation-split images, and the machine facts (with the batch's files)."""

    threads: int
    malloc: str
    device: torch.device
    black_box: Any
    batch: Any
    facts: dict[str, Any]


def setup(threads: int | None, malloc: str, device: str, model: str, batch_size: int) -> Setup:
    """Set torch's threads (default: :func:`usable_cpus`) and the allocator, load ``model`` and
    the first ``batch_size`` images of the evaluation split (spread over it)."""
    import warnings

    threads = threads or usable_cpus()
    malloc_note = configure_malloc(malloc)
    torch.set_num_threads(threads)
    dev = paperlib.blackbox.resolve_device(device)
    warnings.filterwarnings("once")
    bb = paperlib.load_model(model, device=dev)
    data = paperlib.load_images().split("eval").subset(batch_size)
    batch = next(paperlib.iter_batches(data, bb.preprocess, batch_size=batch_size, device=dev))
    facts = machine_facts(dev, threads, batch.images.shape[0], bb)
    facts["malloc"] = malloc_note
    facts["images"] = batch.files
    return Setup(threads, malloc_note, dev, bb, batch, facts)
