"""``paperlib explain``: class activation maps of your images, from the command line.

::

    python -m paperlib explain photo.jpg my_folder/ --model efficientnet_lite0 --out maps/
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
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

import numpy as np
import torch

from .attention import checkpoint_path
from .cam import (
    ExplainOptions,
    add_option_arguments,
    check_methods,
    default_methods,
    explain,
    method_label,
)
from .data import BadImageWarning, ImageDataset, Record, iter_batches
from .masking import FILLS
from .metrics import MetricConfig, evaluate_batch, image_rows
from .models import MODEL_NAMES, BlackBox, WeightsNotFoundError, load_model
from .progress import progress
from .results import atomic_write_text
from .wrap import TIMM_PREFIX, WrappedModel, class_names_of

__all__ = ["ExplainRun", "build_parser", "main", "run_explain"]

SUMMARY_JSON = "explanations.json"
SUMMARY_CSV = "explanations.csv"
GRID = "grid"
#: Methods that read a trained attention checkpoint (``checkpoint`` option).
_CHECKPOINT_METHODS = ("attention-trained", "attention-per-image")


class UsageError(Exception):
    """A problem with the command line's inputs, reported as ``error: ...`` with exit status 2."""


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
    names = class_names_of(bb)
    if class_names_file is not None:
        lines = Path(class_names_file).read_text(encoding="utf-8").splitlines()
        names = tuple(line.strip() for line in lines if line.strip())
        n = bb.num_classes if isinstance(bb, WrappedModel) else 1000
        if len(names) != n:
            raise UsageError(f"--class-names {class_names_file} holds {len(names)} names; "
                             f"{bb.name} has {n} outputs")
    return bb, names


def choose_methods(requested: Sequence[str] | None, bb: BlackBox,
                   checkpoint: str | None) -> tuple[tuple[str, ...], list[str]]:
    """The methods to run and notes for the user.

    Default: every registered method, except ``attention-trained`` when no checkpoint exists
    for the black box (asking for it then is an error naming the path looked at).
    """
    ckpt = Path(checkpoint) if checkpoint is not None else checkpoint_path(bb)
    have = ckpt.is_file()
    notes: list[str] = []
    if requested is None:
        methods = default_methods()
        if not have:
            methods = tuple(m for m in methods if m != "attention-trained")
            notes.append(f"attention-trained left out: no checkpoint for {bb.name} "
                         f"({bb.target_layer_name}) at {ckpt}; pass --checkpoint FILE")
    else:
        try:
            methods = check_methods(requested)
        except ValueError as exc:
            raise UsageError(str(exc)) from exc
        if "attention-trained" in methods and not have:
            raise UsageError(
                f"attention-trained needs a trained attention checkpoint for {bb.name} "
                f"({bb.target_layer_name}); none at {ckpt}. Pass --checkpoint FILE (train one "
                "with paperlib.attention_training.train_attention and save it with "
                "paperlib.attention.save_checkpoint)")
    if "attention-per-image" in methods and not have:
        notes.append("attention-per-image: no checkpoint, it starts from a seeded random "
                     "initialisation")
    return methods, notes


def parse_target(value: str | None, names: tuple[str, ...] | None) -> int | None:
    """``--target``: a class index, or a class name when the names are known."""
    if value is None:
        return None
    if value.lstrip("-").isdigit():
        return int(value)
    if names is None:
        raise UsageError(f"--target {value!r}: the model's class names are unknown; give a class "
                         "index (or --class-names FILE)")
    if value in names:
        return names.index(value)
    close = difflib.get_close_matches(value, names, n=5)
    raise UsageError(f"--target {value!r} is not a class name of the model"
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
    root, files = list_inputs(args.inputs)
    out = Path(args.out).expanduser()
    if out.exists() and not out.is_dir():
        raise UsageError(f"--out {out} exists and is not a folder")
    bb, names = open_model(args.model, args.weights, args.target_layer, args.device,
                           args.class_names)
    methods, notes = choose_methods(args.methods, bb, args.checkpoint)
    out_names = output_names(files, root)
    check_overwrite(planned_files(out, out_names, methods), args.force)
    target = parse_target(args.target, names)
    flat_options: dict[str, Any] = {"seed": args.seed}
    for key in ExplainOptions.option_fields():
        if getattr(args, key, None) is not None:
            flat_options[key] = getattr(args, key)
    options = ExplainOptions.build(**flat_options)
    mconfig = MetricConfig(fill=args.fill, curve_steps=args.curve_steps) if args.metrics else None
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


# ---------------------------------------------------------------------------------------------
# Command line


_DESCRIPTION = """\
Class activation maps of your images with every registered method (or those given).

Per image, <out>/<name>/ gets <method>.png (the heat map over the model's input, resized and
centre-cropped), <method>.npy (the raw (S, S) map in [0, 1], float32) and grid.png (the image
beside every method's overlay); <name> is the image's path below the folder given (or its file
name) without the extension. <out>/explanations.json and <out>/explanations.csv (one row per
image and method) hold the explained class (its name when known), its probability and, with
--metrics, the image's metric terms. Existing files are never overwritten without --force.

Folders are read recursively; names starting with '.' are ignored; a file that cannot be read as
an image is skipped with a warning and listed under "skipped" in the JSON."""


def _methods_help() -> str:
    from . import attention  # noqa: F401  (registers the attention methods)

    return "\n".join(f"  {m:<22} {method_label(m)}" for m in default_methods())


def build_parser() -> argparse.ArgumentParser:
    """The ``paperlib`` command line (one subcommand, ``explain``)."""
    parser = argparse.ArgumentParser(
        prog="paperlib", description="paperlib: class activation maps and their metrics.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    p = sub.add_parser(
        "explain", formatter_class=argparse.RawDescriptionHelpFormatter,
        help="explain images with CAM methods: overlays, raw maps, a JSON/CSV summary",
        description=_DESCRIPTION,
        epilog="methods (registered):\n" + _methods_help() + "\n\n--metrics columns (one "
               "per registered read-out column, paperlib.metrics.READOUTS): O_<tag> "
               "probability of the target on the masked image (tag soft: the map itself; "
               "top<k>: the top k%% pixels kept), drop_<tag> Average Drop's per-image term "
               "(%%), increase_<tag> %% Increase's per-image term (0 or 100), agree_top<k> 100 "
               "when the top-1 class on the top-k%% image is the target, deletion_auc and "
               "insertion_auc.")
    p.add_argument("inputs", nargs="+", metavar="IMAGE_OR_FOLDER",
                   help="image files and/or folders (read recursively)")
    p.add_argument("--model", default="efficientnet_lite0",
                   help=f"a kit black box ({', '.join(MODEL_NAMES)}) or {TIMM_PREFIX}<arch> for "
                        "any timm architecture (with --weights); default %(default)s")
    p.add_argument("--weights", default=None,
                   help="a state-dict file for the model, or 'random' (untrained, for trying "
                        "things out); required with timm:<arch>")
    p.add_argument("--target-layer", default=None,
                   help="the module to explain, by name (default: the model's last "
                        "convolutional stage)")
    p.add_argument("--class-names", default=None, metavar="FILE",
                   help="a text file with one class name per line, in output order (default: "
                        "ImageNet's for 1000-class models)")
    p.add_argument("--methods", nargs="+", default=None, metavar="METHOD",
                   help="methods to run (default: every registered one; attention-trained only "
                        "with a checkpoint)")
    p.add_argument("--target", default=None,
                   help="explain this class (index or name) in every image (default: each "
                        "image's predicted class)")
    p.add_argument("--out", default="explanations", help="output folder (default %(default)s)")
    p.add_argument("--force", action="store_true",
                   help="overwrite files left by an earlier run (default: refuse, naming one)")
    p.add_argument("--device", default="auto",
                   help="auto (CUDA when present), cpu, cuda, cuda:1...; default %(default)s")
    p.add_argument("--batch-size", type=int, default=8, help="images per batch (default 8)")
    p.add_argument("--metrics", action="store_true",
                   help="also score each map (Average Drop, %% Increase, top-k read-outs, "
                        "deletion / insertion AUC); more forwards per image")
    p.add_argument("--fill", default="black", choices=FILLS,
                   help="with --metrics: what removed pixels become (default black)")
    p.add_argument("--curve-steps", type=int, default=MetricConfig.curve_steps,
                   help="with --metrics: deletion / insertion steps, 0 for none (default "
                        "%(default)s)")
    add_option_arguments(p, skip={"seed", "chunk_size"})  # --checkpoint, --smooth-samples...
    p.add_argument("--seed", type=int, default=0, help="seed of the random parts (default 0)")
    return parser


def _show_warning(message: Warning | str, category: type[Warning], filename: str, lineno: int,
                  file: TextIO | None = None, line: str | None = None) -> None:
    from tqdm import tqdm

    tqdm.write(f"warning: {message}", file=sys.stderr)


def main(argv: Sequence[str] | None = None) -> int:
    """The ``paperlib`` console script; returns the exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help(sys.stderr)
        return 2
    if args.batch_size < 1:
        parser.error(f"--batch-size must be >= 1, got {args.batch_size}")
    with warnings.catch_warnings():
        warnings.simplefilter("always", BadImageWarning)
        warnings.showwarning = _show_warning
        try:
            run = run_explain(args)
        except (UsageError, WeightsNotFoundError, FileNotFoundError, ValueError) as exc:
            print(f"paperlib explain: error: {exc}", file=sys.stderr)
            return 2
    if run.skipped:
        print(f"{len(run.skipped)} file(s) skipped (listed in {run.out / SUMMARY_JSON})")
    if not run.images:
        print("paperlib explain: error: no file could be read as an image", file=sys.stderr)
        return 1
    print(f"{len(run.images)} image(s) explained: {run.out}/<image>/ (overlays, maps, grid), "
          f"{run.out / SUMMARY_JSON}, {run.out / SUMMARY_CSV}")
    return 0
