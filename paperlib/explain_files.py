"""What ``paperlib explain`` does: class activation maps of image files, written to a folder.

The command line itself (its flags) is :mod:`paperlib.cli`; this module is the run::

    paperlib explain photo.jpg my_folder/ --model efficientnet_lite0 --out maps/
    paperlib explain cats/ --model timm:resnet18 --weights resnet18.pth \\
        --methods gradcam scorecam --metrics --device cuda

Per image ``<out>/<name>/`` gets, for each method, the overlay ``<method>.png`` (the heat map on the
model's input: resized and centre-cropped) and the raw map ``<method>.npy`` ((S, S) float32 in
[0, 1]), and ``grid.png``, the image beside every method's overlay. ``<name>`` is the image's path
below the folder given (or its file name) without the extension. ``<out>/explanations.json`` and
``<out>/explanations.csv`` (one row per image and method) hold the explained class (its name when
the model's classes are known), its probability and, with ``--metrics``, the image's metric terms
(:mod:`paperlib.metrics`). Existing files are never overwritten without ``--force``.

Inputs follow the kit's rules (:mod:`paperlib.data`): a folder is read recursively, names starting
with ``.`` are ignored, and a file that cannot be decoded is skipped with a warning and listed in
the JSON's ``skipped``.
"""

from __future__ import annotations

import argparse
import csv
import difflib
import io
import json
import os
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

import numpy as np
import torch

from .atomic import atomic_write_text
from .blackbox import BlackBox
from .cam import (
    METHODS,
    ExplainOptions,
    check_methods,
    default_methods,
    explain,
    method_label,
    missing_files,
    quick_methods,
)
from .data import ImageDataset, Record, iter_batches
from .errors import UsageError
from .metrics import MetricConfig, evaluate_batch, image_rows
from .models import MODEL_NAMES, load_model
from .progress import progress
from .wrap import TIMM_PREFIX

__all__ = ["SUMMARY_CSV", "SUMMARY_JSON", "ExplainRun", "UsageError", "run_explain"]

SUMMARY_JSON = "explanations.json"
SUMMARY_CSV = "explanations.csv"
GRID = "grid"


# ---------------------------------------------------------------------------------------------
# Inputs and outputs


def list_inputs(paths: Sequence[str | os.PathLike]) -> tuple[Path, list[Path]]:
    """The image files named or found (recursively) in ``paths``, and their common folder.

    Names starting with ``.`` are ignored inside folders; a path that does not exist is an error.
    """
    files: list[Path] = []
    tops: list[Path] = []
    for given in paths:
        path = Path(given).expanduser().absolute()
        if path.is_dir():
            tops.append(path)
            files += sorted(f for f in path.rglob("*") if (f.is_file() or (
                f.is_symlink() and not f.exists())) and not any(  # broken links: skipped, read
                part.startswith(".") for part in f.relative_to(path).parts))
        elif path.is_file():
            tops.append(path.parent)
            files.append(path)
        else:
            raise UsageError(f"no such file or folder: {given}")
    unique = list(dict.fromkeys(files))
    if not unique:
        raise UsageError(f"no files in {', '.join(str(p) for p in paths)}")
    root = Path(os.path.commonpath([str(t) for t in tops]))
    return root, unique


def output_names(files: Sequence[Path], root: Path) -> list[str]:
    """Each file's output folder name: its path below ``root`` without the extension; a name
    taken by an earlier file gets ``-<extension>`` (``cat.jpg``, ``cat.png`` -> ``cat``,
    ``cat-png``), then a number."""
    names: list[str] = []
    taken: set[str] = set()
    for f in files:
        rel = f.relative_to(root)
        base = rel.with_suffix("").as_posix()
        name = base
        if name in taken:
            name = f"{base}-{f.suffix.lstrip('.') or 'file'}"
        k = 2
        while name in taken:
            name, k = f"{base}-{k}", k + 1
        taken.add(name)
        names.append(name)
    return names


def planned_files(out: Path, names: Sequence[str], methods: Sequence[str]) -> list[Path]:
    """Every file the run may write (checked before any work, see ``--force``)."""
    paths = [out / SUMMARY_JSON, out / SUMMARY_CSV]
    for name in names:
        folder = out / name
        paths += [folder / f"{GRID}.png"]
        paths += [folder / f"{m}{ext}" for m in methods for ext in (".png", ".npy")]
    return paths


def check_overwrite(paths: Sequence[Path], force: bool) -> None:
    """Refuse to overwrite existing files without ``force``: the error names the first one."""
    existing = [p for p in paths if p.exists()]
    if existing and not force:
        more = f" (and {len(existing) - 1} more of the files this run writes)" \
            if len(existing) > 1 else ""
        raise UsageError(f"{existing[0]} exists{more}; pass --force to overwrite, or choose "
                         "another --out")


# ---------------------------------------------------------------------------------------------
# Model, methods, targets


def open_model(spec: str, weights: str | None, target_layer: str | None, device: str,
               class_names_file: str | None) -> tuple[BlackBox, tuple[str, ...] | None]:
    """The black box for ``--model`` and its class names (``--class-names`` wins)."""
    if spec not in MODEL_NAMES and not spec.startswith(TIMM_PREFIX):
        close = difflib.get_close_matches(spec, MODEL_NAMES, n=3)
        raise UsageError(f"unknown --model {spec!r}; expected one of {', '.join(MODEL_NAMES)} "
                         f"or {TIMM_PREFIX}<architecture> with --weights"
                         + (f" (did you mean {', '.join(close)}?)" if close else ""))
    bb = load_model(spec, device=device, weights=weights, target_layer=target_layer)
    names = bb.class_names
    if class_names_file is not None:
        lines = Path(class_names_file).read_text(encoding="utf-8").splitlines()
        names = tuple(line.strip() for line in lines if line.strip())
        n = bb.num_classes
        if len(names) != n:
            raise UsageError(f"--class-names {class_names_file} holds {len(names)} names; "
                             f"{bb.name} has {n} outputs")
    return bb, names


def choose_methods(requested: Sequence[str] | None, bb: BlackBox,
                   options: ExplainOptions) -> tuple[tuple[str, ...], list[str]]:
    """The methods to run and notes for the user.

    Default: the quick methods (:func:`paperlib.cam.quick_methods`: one shared pass, no control
    maps); ``["all"]``: every registered method. Either way less those whose declared files
    (their records' :class:`paperlib.cam.MethodFiles`, e.g. a trained checkpoint) are missing
    for the black box and which cannot run without them; asking for one of those by name is an
    error naming the path looked at.
    """
    if requested is None:
        methods = quick_methods()
    elif list(requested) == ["all"]:
        methods = default_methods()
    else:
        try:
            methods = check_methods(requested)
        except ValueError as exc:
            raise UsageError(str(exc)) from exc
    notes: list[str] = []
    kept = []
    missing = missing_files(methods, bb, options)
    for m in methods:
        files = METHODS[m].files
        if m not in missing or files is None:
            kept.append(m)
            continue
        where = ", ".join(str(p) for p in missing[m])
        if files.without is not None:
            notes.append(f"{m}: {files.what} is missing ({where}); {files.without}")
            kept.append(m)
        elif requested is None or list(requested) == ["all"]:
            notes.append(f"{m} left out: it needs {files.what} for {bb.name} "
                         f"({bb.target_layer_name}), none at {where}; {files.how}")
        else:
            raise UsageError(f"{m} needs {files.what} for {bb.name} ({bb.target_layer_name}); "
                             f"none at {where}. To run it: {files.how}")
    return tuple(kept), notes


def parse_target(value: str | None, names: tuple[str, ...] | None) -> int | None:
    """``--target-class``: a class index, or a class name when the names are known."""
    if value is None:
        return None
    if value.lstrip("-").isdigit():
        return int(value)
    if names is None:
        raise UsageError(f"--target-class {value!r}: the model's class names are unknown; give "
                         "a class index (or --class-names FILE)")
    if value in names:
        return names.index(value)
    close = difflib.get_close_matches(value, names, n=5)
    raise UsageError(f"--target-class {value!r} is not a class name of the model"
                     + (f"; closest: {', '.join(repr(c) for c in close)}" if close else ""))


def readout_columns(config: MetricConfig) -> list[str]:
    """The per-image metric columns written with ``--metrics``: every registered read-out's
    columns with a table cell (:meth:`paperlib.metrics.Readout.cells`), in row order."""
    return [c.name for c in config.columns() if c.table is not None]


# ---------------------------------------------------------------------------------------------
# The run


@dataclass
class ExplainRun:
    """What :func:`run_explain` did: per-image records, skipped files, where the outputs are."""

    out: Path
    images: list[dict[str, Any]] = field(default_factory=list)
    rows: list[dict[str, Any]] = field(default_factory=list)
    skipped: list[tuple[str, str]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def _write_figures(folder: Path, image: torch.Tensor, maps: dict[str, torch.Tensor],
                   title: str) -> None:
    import matplotlib.pyplot as plt

    from .plots import method_grid, overlay

    for m, cam in maps.items():
        fig, ax = plt.subplots(figsize=(3.2, 3.4))
        overlay(ax, image, cam, title=f"{method_label(m)}\n{title}")
        fig.savefig(folder / f"{m}.png", dpi=100, bbox_inches="tight")
        plt.close(fig)
    fig = method_grid(image[None], {m: cam[None] for m, cam in maps.items()}, [title])
    fig.savefig(folder / f"{GRID}.png", dpi=120, bbox_inches="tight")
    plt.close(fig)


def run_explain(args: argparse.Namespace, log: TextIO | None = None) -> ExplainRun:
    """``paperlib explain`` with parsed arguments; raises :class:`UsageError` for bad inputs."""
    log = log or sys.stdout
    # the options first: a bad value is refused before any file is listed or model loaded
    flat_options: dict[str, Any] = {"seed": args.seed}
    for key in ExplainOptions.option_fields():
        if getattr(args, key, None) is not None:
            flat_options[key] = getattr(args, key)
    options = ExplainOptions.build(**flat_options)
    given = {"fill": args.fill, "curve_steps": args.curve_steps}
    mconfig = (MetricConfig(**{k: v for k, v in given.items() if v is not None})
               if args.metrics else None)
    root, files = list_inputs(args.inputs)
    out = Path(args.out).expanduser()
    if out.exists() and not out.is_dir():
        raise UsageError(f"--out {out} exists and is not a folder")
    bb, names = open_model(args.model, args.weights, args.target_layer, args.device,
                           args.class_names)
    methods, notes = choose_methods(args.methods, bb, options)
    out_names = output_names(files, root)
    check_overwrite(planned_files(out, out_names, methods), args.force)
    target = parse_target(args.target_class, names)
    dataset = ImageDataset(root, [Record(f, -1, "") for f in files], "inputs")
    name_of = dict(zip(dataset.files, out_names))
    run = ExplainRun(out, notes=notes)
    for note in notes:
        print(f"note: {note}", file=log)
    print(f"{bb.name} (target layer {bb.target_layer_name}, input {bb.input_size}px, "
          f"{bb.device.type}): {len(methods)} method(s) on {len(files)} file(s) -> {out}",
          file=log, flush=True)
    done = 0
    with progress(len(files), "explaining", disable=len(files) == 1) as bar:
        for batch in iter_batches(dataset, bb.preprocess, args.batch_size, device=bb.device):
            targets = None if target is None else [target] * len(batch)
            ex = explain(bb, batch.images, methods, targets=targets, options=options)
            probs = ex.logits.float().softmax(dim=1)
            p_target = probs.gather(1, ex.targets.view(-1, 1)).view(-1).tolist()
            predicted = probs.argmax(dim=1).tolist()
            readouts: dict[tuple[str, str], dict[str, float]] = {}
            if mconfig is not None:
                scores = evaluate_batch(bb, batch.images, ex.maps, ex.targets, mconfig,
                                        clean_logits=ex.logits)
                flat = {m: ex.flat_images[m].cpu().numpy() for m in methods}
                cols = readout_columns(mconfig)
                for r in image_rows(batch.files, batch.labels.cpu().numpy(), scores, flat,
                                    mconfig):
                    readouts[(r["file"], r["method"])] = {c: float(r[c]) for c in cols}
            for i, file in enumerate(batch.files):
                name = name_of[file]
                folder = out / name
                folder.mkdir(parents=True, exist_ok=True)
                t = int(ex.targets[i])
                t_name = names[t] if names is not None and t < len(names) else None
                maps = {m: ex[m][i].detach().cpu() for m in methods}
                for m, cam in maps.items():
                    np.save(folder / f"{m}.npy", cam.numpy().astype(np.float32))
                title = f"{t_name or f'class {t}'}: {p_target[i]:.1%}"
                _write_figures(folder, batch.images[i].detach().cpu(), maps, title)
                record: dict[str, Any] = {
                    "file": file, "path": str(root / file), "output": name, "target": t,
                    "target_name": t_name, "probability": p_target[i],
                    "predicted": predicted[i],
                    "predicted_name": names[predicted[i]] if names is not None else None,
                    "maps": {m: f"{name}/{m}.npy" for m in methods},
                    "overlays": {m: f"{name}/{m}.png" for m in methods},
                    "grid": f"{name}/{GRID}.png",
                    "flat_map": {m: bool(ex.flat_images[m][i]) for m in methods}}
                if mconfig is not None:
                    record["metrics"] = {m: readouts[(file, m)] for m in methods}
                run.images.append(record)
                for m in methods:
                    row = {"file": file, "output": name, "method": m, "target": t,
                           "target_name": t_name, "probability": p_target[i],
                           "flat_map": record["flat_map"][m]}
                    if mconfig is not None:
                        row.update(readouts[(file, m)])
                    run.rows.append(row)
            bar.update(batch.indices[-1] + 1 - done)
            done = batch.indices[-1] + 1
        bar.update(len(files) - done)
    run.skipped = list(dataset.report.skipped)
    _write_summary(run, args, bb, methods, options, mconfig)
    return run


def _write_summary(run: ExplainRun, args: argparse.Namespace, bb: BlackBox,
                   methods: Sequence[str], options: ExplainOptions,
                   mconfig: MetricConfig | None) -> None:
    run.out.mkdir(parents=True, exist_ok=True)
    summary = {
        "model": bb.name, "model_spec": args.model, "weights": bb.weights,
        "target_layer": bb.target_layer_name, "input_size": bb.input_size,
        "device": str(bb.device), "methods": list(methods),
        "options": options.flat(methods),
        "metrics": mconfig.key() if mconfig is not None else None,
        "images": run.images, "skipped": [list(s) for s in run.skipped], "notes": run.notes}
    atomic_write_text(run.out / SUMMARY_JSON, json.dumps(summary, indent=1) + "\n")
    buf = io.StringIO()
    if run.rows:
        writer = csv.DictWriter(buf, fieldnames=list(run.rows[0]), lineterminator="\n")
        writer.writeheader()
        writer.writerows(run.rows)
    atomic_write_text(run.out / SUMMARY_CSV, buf.getvalue())
