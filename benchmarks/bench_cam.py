#!/usr/bin/env python
"""Speed benchmark of paperlib's CAM pipeline against a plain forward and against two peer libraries.

Every number is a ratio to a *floor* measured in the same run on the same batch: one plain
``torch.no_grad()`` forward of the batch through the black box (``bb.model``). Absolute times
depend on the machine; the ratios say what an explanation costs relative to just classifying.

Method: every configuration runs once to warm up, then the configurations are interleaved
(``for r in range(R): for each config: time it once``) so that drifts in machine load hit all of
them alike; the table gives the median and the minimum over the repetitions, in milliseconds per
image. ``torch.set_num_threads`` is fixed and reported; on CUDA every timing is bracketed by
``torch.cuda.synchronize()``.

    .venv/bin/python benchmarks/bench_cam.py [--device auto|cpu|cuda] [--batch-size 8]
        [--repeats 15] [--slow-repeats 3] [--threads N] [--out benchmarks/] [--full-scorecam auto|yes|no]

Writes ``<out>/results_<device>.json`` and ``<out>/REPORT_<device>.md`` and prints the table.
See benchmarks/README.md for what each row means.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import datetime as _dt
import gc
import io
import json
import os
import platform
import statistics
import subprocess
import sys
import time
import warnings
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any, Callable

import torch

import paperlib
from paperlib import attention as pl_attention
from paperlib.cam import GRADIENT_METHODS
from paperlib.perf import clock

REPO = Path(__file__).resolve().parent.parent

# Goals (ratios, never absolute times).
GOAL_GRADIENT_ALONE = 1.15   # each gradient method <= 1.15x the floor
GOAL_GRADIENT_ALL = 1.30     # the five together, one call <= 1.3x the floor
GOAL_SMOOTH = 1.15           # SmoothGrad-CAM++ with n samples <= 1.15x (n+1) floors
GOAL_ATTENTION = 1.05        # attention-fixed / -trained add <= 5% to a Grad-CAM call

PRETTY = {"gradcam": "Grad-CAM", "gradcampp": "Grad-CAM++", "xgradcam": "XGrad-CAM",
          "hirescam": "HiResCAM", "layercam": "Layer-CAM", "smoothgradcampp": "SmoothGrad-CAM++",
          "scorecam": "Score-CAM", "attention-fixed": "attention-fixed",
          "attention-trained": "attention-trained", "attention-per-image": "attention-per-image"}


# ---------------------------------------------------------------------------------------------
# Machine facts

def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


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


def _loadavg() -> str | None:
    try:
        return " ".join(Path("/proc/loadavg").read_text().split()[:3])
    except OSError:
        return None


def machine_facts(device: torch.device, threads: int, batch: int, bb) -> dict:
    facts = {
        "date_utc": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "device": str(device),
        "cpu_model": _cpu_model(),
        "cpu_count": os.cpu_count(),
        "cpus_usable": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
        "load_average_at_start": _loadavg(),
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
        facts["cudnn"] = torch.backends.cudnn.version()
    return facts


# ---------------------------------------------------------------------------------------------
# The C allocator

def configure_malloc(mode: str) -> str:
    """The C allocator setting (:mod:`paperlib.perf`): ``keep`` is paperlib's default on import;
    ``system`` must be chosen before paperlib is imported (``PAPERLIB_MALLOC=system``)."""
    from paperlib.perf import configure_malloc as configure, malloc_mode

    if mode == "system" and malloc_mode().startswith("keep"):
        raise SystemExit("--malloc system: set PAPERLIB_MALLOC=system in the environment too "
                         "(paperlib configures the allocator when it is imported)")
    return configure(mode)


# ---------------------------------------------------------------------------------------------
# Configurations and the timing loop

@dataclass
class Config:
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
    times: list[float] = field(default_factory=list)           # seconds per call
    seconds: list[dict[str, float]] = field(default_factory=list)  # Explanations.seconds

    def ms_per_image(self, how: str) -> float:
        t = statistics.median(self.times) if how == "median" else min(self.times)
        return 1000.0 * t / self.images


def time_once(cfg: Config, device: torch.device, record: bool) -> None:
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
        if isinstance(out, dict) and hasattr(out, "seconds"):
            cfg.seconds.append(dict(out.seconds))
    del out


def run_all(configs: list[Config], device: torch.device, log=print) -> None:
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


# ---------------------------------------------------------------------------------------------
# Peers

@contextlib.contextmanager
def _quiet():
    """pytorch-grad-cam's ScoreCAM draws tqdm bars on stderr; keep them out of the log."""
    with contextlib.redirect_stderr(io.StringIO()):
        yield


def pgc_call(cls, model, layer, x, targets: list[int], batch_size: int | None = None):
    """pytorch-grad-cam as its README runs it: a CAM object, targets, one call (numpy maps)."""
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    with cls(model=model, target_layers=[layer]) as cam:
        if batch_size is not None:
            cam.batch_size = batch_size
        return cam(input_tensor=x, targets=[ClassifierOutputTarget(t) for t in targets])


def torchcam_call(cls, model, layer, x, targets: list[int], **kwargs):
    """torchcam as its README runs it: hook, forward, extractor(class_idx, scores)."""
    with cls(model, target_layer=layer, **kwargs) as extractor:
        scores = model(x)
        return extractor(class_idx=targets, scores=scores)


# ---------------------------------------------------------------------------------------------

def build_configs(args, bb, x: torch.Tensor, targets: torch.Tensor, device: torch.device,
                  notes: list[str]) -> list[Config]:
    import pytorch_grad_cam as pgc
    import torchcam.methods as tcm

    B = x.shape[0]
    R, RS = args.repeats, min(args.slow_repeats, args.repeats)
    n, k = args.smooth_samples, args.scorecam_channels
    tlist = [int(t) for t in targets]
    model = bb.model
    explain = paperlib.explain
    opts = {"smooth_samples": n, "scorecam_channels": k}

    def ours(methods, xx=x, tt=targets, **extra):
        return lambda: explain(bb, xx, methods=list(methods), targets=tt, **{**opts, **extra})

    def floor():
        with torch.no_grad():
            return model(x)

    C: list[Config] = [Config("floor", "floor: plain no_grad forward", "floor", floor, B, R, 1.0)]

    # paperlib: each gradient method alone, then all five in one call
    grad_methods = [m for m in ("gradcam", "gradcampp", "xgradcam", "hirescam", "layercam")
                    if m in GRADIENT_METHODS]
    for m in grad_methods:
        C.append(Config(f"ours:{m}", f"paperlib {PRETTY[m]}", "paperlib", ours([m]), B, R, 1.0,
                        "floor", 1.0, "floor", GOAL_GRADIENT_ALONE))
    C.append(Config("ours:five", "paperlib the five gradient methods, one call", "paperlib",
                    ours(grad_methods), B, R, 1.0, "floor", 1.0, "floor", GOAL_GRADIENT_ALL))
    tc_four = ["gradcam", "gradcampp", "xgradcam", "layercam"]
    C.append(Config("ours:four", "paperlib the four torchcam has, one call", "paperlib",
                    ours(tc_four), B, R, 1.0, "floor", 1.0, "floor", None,
                    note="reference for torchcam's four"))

    # attention variants on top of a Grad-CAM call
    C.append(Config("ours:gradcam+attention-fixed", "paperlib Grad-CAM + attention-fixed",
                    "paperlib", ours(["gradcam", "attention-fixed"]), B, R, 1.0,
                    "ours:gradcam", 1.0, "Grad-CAM call", GOAL_ATTENTION))
    ckpt = pl_attention.checkpoint_path(bb)
    have_ckpt = ckpt.is_file() and ckpt.with_suffix(".json").is_file()
    if have_ckpt:
        C.append(Config("ours:gradcam+attention-trained", "paperlib Grad-CAM + attention-trained",
                        "paperlib", ours(["gradcam", "attention-trained"]), B, R, 1.0,
                        "ours:gradcam", 1.0, "Grad-CAM call", GOAL_ATTENTION))
    else:
        notes.append(f"attention-trained: row skipped, no checkpoint at "
                     f"{ckpt.relative_to(REPO) if ckpt.is_relative_to(REPO) else ckpt} "
                     "(train it with `make train-attention`).")

    # SmoothGrad-CAM++
    C.append(Config("ours:smoothgradcampp", f"paperlib SmoothGrad-CAM++ (n={n})", "paperlib",
                    ours(["smoothgradcampp"]), B, R, 1.0 + n, "floor", n + 1.0,
                    f"(n+1)={n + 1} floors", GOAL_SMOOTH))

    # diagnostic: the same, with its noisy copies in chunks of B (the floor's batch) instead of
    # paperlib's default chunk_size; per-image forward cost depends on the batch size
    chunk = paperlib.ExplainOptions().chunk_size
    if B != chunk:
        C.append(Config("ours:smoothgradcampp-chunkB",
                        f"paperlib SmoothGrad-CAM++ (n={n}, chunk_size={B})", "paperlib",
                        ours(["smoothgradcampp"], chunk_size=B), B, R, 1.0 + n, "floor", n + 1.0,
                        f"(n+1)={n + 1} floors", None,
                        note=f"diagnostic: default chunk_size is {chunk}"))

    # the slow ones
    C.append(Config("ours:scorecam", f"paperlib Score-CAM (k={k} channels)", "paperlib",
                    ours(["scorecam"]), B, RS, 1.0 + k, "floor", k + 1.0,
                    f"(k+1)={k + 1} floors", None))
    steps = pl_attention.PER_IMAGE_DEFAULTS["steps"]
    C.append(Config("ours:attention-per-image",
                    f"paperlib attention-per-image ({steps} steps, with its Grad-CAM pass)",
                    "paperlib", ours(["attention-per-image"]), B, RS, 1.0 + steps, "floor", 1.0,
                    "floor", None))
    if not have_ckpt:
        notes.append("attention-per-image: no trained checkpoint, so it starts from paperlib's "
                     "seeded random initialisation (same cost per step as from a checkpoint).")

    # ---- peers: a copy of the same model with trainable parameters, as users run them
    peer = copy.deepcopy(model).requires_grad_(True).eval()
    layer = peer.get_submodule(bb.target_layer_name)

    def add_peer(key: str, library: str, classes: dict, call: Callable, together: str,
                 together_label: str, ours_together: str, ours_label: str) -> None:
        """One row per peer class (against the same paperlib method), and one row for all of
        them called one after another (against paperlib computing them in one call)."""
        for m, cls in classes.items():
            C.append(Config(f"{key}:{m}", f"{library} {cls.__name__}", library,
                            lambda cls=cls: call(cls, peer, layer, x, tlist), B, R, 1.0,
                            f"ours:{m}", 1.0, f"paperlib {PRETTY[m]}"))

        def all_calls():
            for cls in classes.values():
                call(cls, peer, layer, x, tlist)

        C.append(Config(f"{key}:{together}", together_label, library, all_calls, B, R,
                        float(len(classes)), ours_together, 1.0, ours_label))

    pgc_classes = {"gradcam": pgc.GradCAM, "gradcampp": pgc.GradCAMPlusPlus,
                   "xgradcam": pgc.XGradCAM, "hirescam": pgc.HiResCAM, "layercam": pgc.LayerCAM}
    add_peer("pgc", "pytorch-grad-cam", pgc_classes, pgc_call, "five",
             "pytorch-grad-cam the five, one call each", "ours:five", "paperlib five, one call")
    tc_classes = {"gradcam": tcm.GradCAM, "gradcampp": tcm.GradCAMpp, "xgradcam": tcm.XGradCAM,
                  "layercam": tcm.LayerCAM}
    add_peer("tc", "torchcam", tc_classes, torchcam_call, "four",
             "torchcam the four it has, one call each", "ours:four", "paperlib four, one call")
    notes.append("torchcam 0.5.0 has no HiResCAM, so its row covers four gradient methods "
                 "(Grad-CAM, Grad-CAM++, XGrad-CAM, Layer-CAM) and is compared with paperlib "
                 "computing the same four in one call.")

    # torchcam SmoothGrad-CAM++: absolute noise std; ours is sigma x (max - min) per image
    flat = x.flatten(1)
    tc_std = float(args.smooth_sigma * (flat.max(1).values - flat.min(1).values).mean())
    C.append(Config("tc:smoothgradcampp", f"torchcam SmoothGradCAMpp (n={n})", "torchcam",
                    lambda: torchcam_call(tcm.SmoothGradCAMpp, peer, layer, x, tlist,
                                          num_samples=n, std=tc_std),
                    B, R, 1.0 + n, "ours:smoothgradcampp", 1.0, "paperlib SmoothGrad-CAM++"))
    notes.append(
        f"torchcam SmoothGradCAMpp: same n={n}; its noise std is absolute, set to "
        f"{args.smooth_sigma} x the batch's mean value range = {tc_std:.4f} (paperlib: "
        f"{args.smooth_sigma} x each image's own range); torchcam draws independent noise per "
        "image and per sample, paperlib draws n patterns shared by the batch; torchcam runs n "
        "forward+backward passes of the whole batch after the user's clean forward, paperlib "
        f"puts the B*n noisy images in chunks of {paperlib.ExplainOptions().chunk_size}.")

    # Score-CAM with every channel: one image, optional (1280 forwards per image on Lite0)
    full = args.full_scorecam == "yes" or (args.full_scorecam == "auto" and device.type == "cuda")
    channels = int(paperlib.gradient_pass(bb, x[:1], targets[:1]).A.shape[1])
    if full:
        x1, t1 = x[:1], targets[:1]
        chunk = paperlib.ExplainOptions().chunk_size
        C.append(Config("ours:scorecam-all", "paperlib Score-CAM, all channels, 1 image",
                        "paperlib", ours(["scorecam"], x1, t1, scorecam_channels=None), 1,
                        args.full_scorecam_repeats, 1.0 + channels, "floor",
                        1.0 + channels, f"(C+1)={1 + channels} floors", None))
        C.append(Config("pgc:scorecam", f"pytorch-grad-cam ScoreCAM (all channels, 1 image, "
                        f"batch_size={chunk})", "pytorch-grad-cam",
                        lambda: _quiet_call(pgc_call, pgc.ScoreCAM, peer, layer, x1, tlist[:1],
                                            batch_size=chunk),
                        1, args.full_scorecam_repeats, 1.0 + channels,
                        "ours:scorecam-all", 1.0, "paperlib Score-CAM, all channels"))
        notes.append(f"Score-CAM with all {channels} channels is timed on 1 image "
                     f"({args.full_scorecam_repeats} repetition(s)) for paperlib and "
                     f"pytorch-grad-cam (which always scores every channel), both in batches of "
                     f"{chunk} masked images; the per-image floor is the batch-{B} one.")
    else:
        notes.append(f"pytorch-grad-cam ScoreCAM not timed (it scores all {channels} channels: "
                     f"{channels} forwards per image); run with --full-scorecam yes to time it "
                     "and paperlib's all-channel Score-CAM on 1 image.")
    return C


def _quiet_call(fn, *a, **kw):
    with _quiet():
        return fn(*a, **kw)


# ---------------------------------------------------------------------------------------------
# Results: ratios, goals, table

def _fmt(v: float | None, spec: str = ".2f") -> str:
    return "—" if v is None else format(v, spec)


def analyse(configs: list[Config], smooth_n: int) -> tuple[list[dict], list[str]]:
    by = {c.key: c for c in configs}
    floor_med = by["floor"].ms_per_image("median")
    floor_min = by["floor"].ms_per_image("min")
    rows, reasons = [], []
    for c in configs:
        med, mn = c.ms_per_image("median"), c.ms_per_image("min")
        row = {"key": c.key, "label": c.label, "group": c.group, "images_per_call": c.images,
               "repeats": len(c.times), "ms_per_image_median": med, "ms_per_image_min": mn,
               "ratio_to_floor": med / floor_med, "ratio_to_floor_min": mn / floor_min,
               "forwards_per_image": c.forwards_per_image, "times_s": c.times, "note": c.note,
               "reference": c.reference, "reference_label": c.ref_label,
               "reference_factor": c.ref_factor, "goal": c.goal}
        if c.reference is not None:
            ref = by[c.reference]
            row["ratio_to_reference"] = med / (c.ref_factor * ref.ms_per_image("median"))
            row["ratio_to_reference_min"] = mn / (c.ref_factor * ref.ms_per_image("min"))
            # paired per-repetition ratio (same repetition, adjacent in time): robust to drift
            if c.images == ref.images and c.times and ref.times:
                pairs = [a / (c.ref_factor * b) for a, b in zip(c.times, ref.times)]
                row["ratio_to_reference_paired_median"] = statistics.median(pairs)
        if c.seconds:
            keys = c.seconds[0].keys()
            row["explain_seconds_median"] = {
                k: statistics.median(s[k] for s in c.seconds) for k in keys}
        if c.goal is not None:
            row["met"] = row["ratio_to_reference"] <= c.goal
            row["met_on_min"] = row["ratio_to_reference_min"] <= c.goal
            reasons.append(_reason(c, row, by, floor_med, smooth_n))
        rows.append(row)
    return rows, reasons


def _breakdown(c: Config, floor_med: float) -> tuple[float, float, dict[str, float]]:
    """(pass ms/image, methods ms/image, {method: ms/image}) from Explanations.seconds medians."""
    if not c.seconds:
        return float("nan"), float("nan"), {}
    med = {k: 1000 * statistics.median(s[k] for s in c.seconds) / c.images for k in c.seconds[0]}
    methods = {k: v for k, v in med.items() if k != "pass"}
    return med.get("pass", float("nan")), sum(methods.values()), methods


def _reason(c: Config, row: dict, by: dict, floor_med: float, smooth_n: int) -> str:
    ratio, goal = row["ratio_to_reference"], c.goal
    verdict = "met" if row["met"] else "NOT met"
    head = (f"- **{c.label}**: {ratio:.3f}x {c.ref_label} (median; min-based "
            f"{row['ratio_to_reference_min']:.3f}x; goal <= {goal:.2f}x) -> **{verdict}**. ")
    p, meth, per = _breakdown(c, floor_med)
    if c.key.startswith("ours:gradcam+attention"):
        v = c.key.split("+", 1)[1]
        grad = by["ours:gradcam"].ms_per_image("median")
        own = per.get(v, float("nan"))
        why = (f"The attention step's own time inside the call (Explanations.seconds) is "
               f"{own:.2f} ms/image = {100 * own / grad:.1f}% of a Grad-CAM call "
               f"({grad:.1f} ms/image); paired per-repetition ratio "
               f"{row.get('ratio_to_reference_paired_median', float('nan')):.3f}x.")
        p_grad, _, _ = _breakdown(by["ours:gradcam"], floor_med)
        why += (f" The shared pass took {p:.2f} ms/image in this row and {p_grad:.2f} in the "
                "Grad-CAM row.")
        if not row["met"] and own / grad <= goal - 1:
            why += (" The attention step itself is within the goal; the rest of the wall-clock "
                    "difference is spent outside the attention code (the same pass timed "
                    "differently in the two rows), i.e. it is timing noise.")
        elif not row["met"]:
            why += " The attention step itself costs more than the goal allows."
    elif c.key == "ours:smoothgradcampp":
        extra = per.get("smoothgradcampp", float("nan"))
        chunk = paperlib.ExplainOptions().chunk_size
        why = (f"Shared pass {p / floor_med:.2f}x floor; the {smooth_n} noisy forward+backward "
               f"passes take {extra / floor_med:.2f} floors per image "
               f"({extra / floor_med / smooth_n:.2f} floors per noisy copy), run in chunks of "
               f"chunk_size={chunk} images while the floor is a batch of {c.images}.")
        diag = by.get("ours:smoothgradcampp-chunkB")
        if diag is not None and diag.times:
            d = diag.ms_per_image("median") / ((smooth_n + 1) * floor_med)
            why += (f" With chunk_size={c.images} (the floor's batch size) it takes {d:.3f}x "
                    "(n+1) floors (diagnostic row)")
            if ratio <= goal:
                why += "."
            elif d <= goal:
                why += (f": the miss comes from the chunk size, a forward costs more per image "
                        f"in batches of {chunk} than of {c.images} on this machine (with glibc's "
                        "default allocator, `--malloc system`, the larger batches' buffers are "
                        "page-faulted in on every forward; see benchmarks/README.md).")
            elif d < ratio:
                why += ": the chunk size accounts for part of the difference."
            else:
                why += ": the chunk size does not explain the difference."
    else:
        why = (f"Shared pass (forward + backward to the target layer) {p / floor_med:.3f}x floor; "
               f"the maps' own computation {meth:.2f} ms/image "
               f"({100 * meth / floor_med:.1f}% of the floor: "
               + ", ".join(f"{k} {v:.2f}" for k, v in per.items()) + " ms/image).")
        if "ratio_to_reference_paired_median" in row:
            why += (f" Paired per-repetition ratio "
                    f"{row['ratio_to_reference_paired_median']:.3f}x.")
        if not row["met"] and p / floor_med > goal:
            why += (" The shared pass alone (one forward and a backward through the head only) "
                    "is over the goal.")
    if row["met"] != row["met_on_min"]:
        why += (" Median and min disagree on the verdict: the difference is within this run's "
                "timing noise.")
    return head + why


def markdown_table(rows: list[dict]) -> str:
    out = ["| Configuration | ms/image median | ms/image min | x floor | compared with "
           "| ratio | goal | met? |",
           "|---|---:|---:|---:|---|---:|---|---|"]
    for r in rows:
        ref = r.get("ratio_to_reference")
        goal = f"<= {r['goal']:.2f}x" if r["goal"] is not None else ""
        met = "" if r["goal"] is None else ("met" if r["met"] else "**not met**")
        label = r["label"] + (f" ({r['note']})" if r["note"] else "")
        out.append(f"| {label} | {r['ms_per_image_median']:.2f} | {r['ms_per_image_min']:.2f} "
                   f"| {r['ratio_to_floor']:.2f} | {r['reference_label'] if ref is not None else ''} "
                   f"| {_fmt(ref, '.3f') if ref is not None else ''} | {goal} | {met} |")
    return "\n".join(out)


def breakdown_table(rows: list[dict], floor_med: float) -> str:
    out = ["| paperlib configuration | shared pass ms/image (x floor) | methods' own ms/image |",
           "|---|---:|---|"]
    for r in rows:
        s = r.get("explain_seconds_median")
        if not s:
            continue
        n = r["images_per_call"]
        p = 1000 * s.get("pass", float("nan")) / n
        meth = ", ".join(f"{k} {1000 * v / n:.2f}" for k, v in s.items() if k != "pass")
        out.append(f"| {r['label']} | {p:.2f} ({p / floor_med:.3f}) | {meth} |")
    return "\n".join(out)


def write_report(path: Path, facts: dict, rows: list[dict], reasons: list[str],
                 notes: list[str], args) -> str:
    floor = next(r for r in rows if r["key"] == "floor")
    fm = floor["ms_per_image_median"]
    hw = facts.get("gpu") or facts["cpu_model"]
    lines = [
        f"# CAM speed benchmark ({facts['device']})",
        "",
        f"Generated by `benchmarks/bench_cam.py` on {facts['date_utc']}. "
        "Ratios are to the floor measured in this run (one plain `torch.no_grad()` forward of "
        "the same batch); absolute milliseconds are only meaningful on this machine.",
        "",
        f"- hardware: {hw}" + (f" (CPU: {facts['cpu_model']})" if facts.get("gpu") else "")
        + f"; {facts['cpus_usable']} usable CPUs; load average at start {facts['load_average_at_start']}",
        f"- torch {facts['torch']}, torch threads {facts['torch_threads']}, python {facts['python']}; "
        f"grad-cam {facts['grad-cam']}, torchcam {facts['torchcam']}, timm {facts['timm']}",
        f"- model {facts['model']} (target layer `{facts['target_layer']}`), batch size "
        f"{facts['batch_size']} images of the eval split; repetitions {args.repeats} "
        f"(slow rows {min(args.slow_repeats, args.repeats)}), each configuration warmed up once",
        f"- C allocator: {facts['malloc']}",
        f"- paperlib commit {facts['git_commit']}",
        f"- floor: {fm:.2f} ms/image (median), {floor['ms_per_image_min']:.2f} (min)",
        "",
        markdown_table(rows),
        "",
        "## Goals",
        "",
        *reasons,
        "",
        "## Where paperlib's time goes (medians of `Explanations.seconds`)",
        "",
        breakdown_table(rows, fm),
        "",
        "## Notes",
        "",
        *[f"- {n}" for n in notes],
        "",
    ]
    text = "\n".join(lines)
    path.write_text(text)
    return text


# ---------------------------------------------------------------------------------------------

def parse_args(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--repeats", type=int, default=15, help="timed repetitions (default 15)")
    ap.add_argument("--slow-repeats", type=int, default=3,
                    help="repetitions of Score-CAM and attention-per-image (default 3)")
    ap.add_argument("--threads", type=int, default=None,
                    help="torch.set_num_threads (default: the CPUs this process may use)")
    ap.add_argument("--out", type=Path, default=REPO / "benchmarks")
    ap.add_argument("--model", default="efficientnet_lite0", choices=paperlib.MODEL_NAMES)
    ap.add_argument("--smooth-samples", type=int, default=paperlib.ExplainOptions().smooth_samples)
    ap.add_argument("--scorecam-channels", type=int,
                    default=paperlib.ExplainOptions().scorecam_channels)
    ap.add_argument("--full-scorecam", default="auto", choices=["auto", "yes", "no"],
                    help="also time Score-CAM with every channel (paperlib and pytorch-grad-cam) "
                         "on 1 image; auto: only on CUDA")
    ap.add_argument("--full-scorecam-repeats", type=int, default=1)
    ap.add_argument("--malloc", default="keep", choices=["keep", "system"],
                    help="keep: glibc keeps freed memory, so no row pays page faults that depend "
                         "on the rows before it (default); system: glibc defaults")
    args = ap.parse_args(argv)
    args.smooth_sigma = paperlib.ExplainOptions().smooth_sigma
    if args.batch_size < 1 or args.repeats < 1 or args.slow_repeats < 1:
        ap.error("--batch-size, --repeats and --slow-repeats must be >= 1")
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    threads = args.threads or (len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity")
                                else os.cpu_count() or 1)
    malloc = configure_malloc(args.malloc)
    torch.set_num_threads(threads)
    device = paperlib.models.resolve_device(args.device)
    warnings.filterwarnings("once")

    bb = paperlib.load_model(args.model, device=device)
    data = paperlib.load_images().split("eval").subset(args.batch_size)
    batch = next(paperlib.iter_batches(data, bb.preprocess, batch_size=args.batch_size,
                                       device=device))
    x = batch.images
    with torch.no_grad():
        targets = bb.model(x).argmax(dim=1)  # the predicted classes, for every library
    facts = machine_facts(device, threads, x.shape[0], bb)
    facts["malloc"] = malloc
    facts["images"] = batch.files
    print(f"bench_cam: {facts.get('gpu') or facts['cpu_model']}, torch {facts['torch']}, "
          f"{threads} threads, batch {x.shape[0]}, load average {facts['load_average_at_start']}, "
          f"malloc {args.malloc}")

    notes: list[str] = []
    configs = build_configs(args, bb, x, targets, device, notes)
    t0 = time.perf_counter()
    run_all(configs, device)
    total = time.perf_counter() - t0

    rows, reasons = analyse(configs, args.smooth_samples)
    notes.append(f"Benchmark wall time {total:.0f} s; load average at the end {_loadavg()}.")
    facts["wall_seconds"] = total
    facts["load_average_at_end"] = _loadavg()

    args.out.mkdir(parents=True, exist_ok=True)
    tag = device.type
    json_path = args.out / f"results_{tag}.json"
    md_path = args.out / f"REPORT_{tag}.md"
    json_path.write_text(json.dumps({
        "machine": facts,
        "settings": {"repeats": args.repeats, "slow_repeats": args.slow_repeats,
                     "smooth_samples": args.smooth_samples, "smooth_sigma": args.smooth_sigma,
                     "scorecam_channels": args.scorecam_channels,
                     "full_scorecam": args.full_scorecam,
                     "full_scorecam_repeats": args.full_scorecam_repeats,
                     "malloc": args.malloc,
                     "targets": [int(t) for t in targets]},
        "goals": {"gradient_method_alone": GOAL_GRADIENT_ALONE,
                  "five_gradient_methods_one_call": GOAL_GRADIENT_ALL,
                  "smoothgradcampp_vs_n_plus_1_floors": GOAL_SMOOTH,
                  "attention_over_gradcam": GOAL_ATTENTION},
        "rows": rows,
        "goal_reasons": reasons,
        "notes": notes,
    }, indent=2) + "\n")
    report = write_report(md_path, facts, rows, reasons, notes, args)
    print()
    print(report)
    print(f"wrote {json_path} and {md_path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
