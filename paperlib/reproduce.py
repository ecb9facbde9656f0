"""``make reproduce``: execute notebooks 01-06 with papermill, full-size parameters, and report.

Each notebook runs with its committed defaults overridden by :data:`FULL_RUN` (all images of the
sample, the documented method defaults) and by what the command line passes through. The executed
notebooks are saved under ``results/notebooks/``; each step's wall time goes to
``results/reproduce_summary.json`` with the commit, the package versions and the machine
(:mod:`paperlib.provenance`), and a summary of where the tables and figures are is printed.
A step that fails stops the run with the notebook's error; finished per-image results stay cached,
so a rerun resumes. While a notebook runs, the progress lines its kernel writes
(:mod:`paperlib.progress`, to ``results/logs/progress-<time>.log``) are printed in the terminal.

CLI: ``paperlib reproduce [--device cuda] [--n-images N] [--model NAME] [--target-layer blocks.6]
[--data-dir DIR] [--split eval|all] [--precision fp32|bf16|tf32|fp16] [--compile]
[--only 04_tables ...]`` (``make reproduce ARGS=...``; the flags are declared in
:mod:`paperlib.cli`). The notebook kernels get ``$PAPERLIB_MALLOC`` (default ``keep``), so that
their ``import paperlib`` sets the allocator as this process did (:mod:`paperlib.perf`).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch

from .atomic import atomic_write_text
from .paths import REPO_ROOT, figures_dir, results_dir
from .perf import MALLOC_ENV
from .progress import LOG_ENV
from .provenance import record
from .saved_notebook import sanitise

NOTEBOOKS = ("01_model_selection", "02_gradcam", "03_attention", "04_tables", "05_figures",
             "06_your_model")
KERNEL = "paperlib"


def choose_kernel() -> str:
    """The kit's Jupyter kernel when it is registered (``make env``), else ``python3``, the
    running interpreter's own (ipykernel's native spec), so that a conda or plain-pip install never
    dies with papermill's ``NoSuchKernel``; one line says which."""
    from jupyter_client.kernelspec import KernelSpecManager

    specs = KernelSpecManager()
    if KERNEL in specs.find_kernel_specs():
        print(f"kernel: '{KERNEL}' (the kit's, registered by make env)", flush=True)
        return KERNEL
    python = specs.get_kernel_spec("python3").argv[0]
    print(f"kernel: '{KERNEL}' is not registered; the notebooks run in 'python3' ({python}). "
          f"Register the kit's with: {sys.executable} -m ipykernel install --user --name {KERNEL}",
          flush=True)
    return "python3"

#: Parameters of the full run, per notebook (the committed notebooks hold a small run).
FULL_RUN: dict[str, dict] = {
    "01_model_selection": {"n_images": None},
    "02_gradcam": {"n_images": 6},
    "03_attention": {"n_images": 16},
    "04_tables": {"n_images": None, "untrained_seeds": None, "road_images": None,
                  "study_images": None},
    "05_figures": {"n_images": None},
    "06_your_model": {"n_images": 8},
}


def refresh_committed(names: list[str]) -> None:
    """Execute ``notebooks/*.ipynb`` with their committed defaults into themselves, sanitised
    (offline, outputs to temporary folders, as ``make test`` runs them)."""
    import os
    import tempfile

    import papermill as pm

    kernel = choose_kernel()
    with tempfile.TemporaryDirectory() as tmp:
        os.environ["PAPERLIB_RESULTS"] = str(Path(tmp) / "results")
        os.environ["PAPERLIB_FIGURES"] = str(Path(tmp) / "figures")
        os.environ["PAPERLIB_OFFLINE"] = "1"  # as under `make test`: no weight downloads
        for name in names:
            path = REPO_ROOT / "notebooks" / f"{name}.ipynb"
            print(f"refreshing {path.name}", flush=True)
            pm.execute_notebook(str(path), str(path), kernel_name=kernel, progress_bar=False,
                                cwd=str(path.parent))
            sanitise(path)


#: Notebooks that use the ``attention-trained`` checkpoint of the black box and layer.
NEEDS_CHECKPOINT = ("03_attention", "04_tables", "05_figures")


def ensure_checkpoint(args: argparse.Namespace) -> None:
    """Make the files the methods declare when they are missing (the black box's attention
    checkpoint at the run's layer is trained, with a message and an estimate), so that notebooks
    03-05 never stop halfway for want of them."""
    from .cam import default_methods, make_missing_files, missing_files
    from .data import load_images
    from .model_selection import chosen_model
    from .models import load_model

    name = args.model or chosen_model(None)
    bb = load_model(name, device=args.device, target_layer=args.target_layer)
    if missing_files(default_methods(), bb):
        make_missing_files(default_methods(), bb, load_images(args.data_dir))


def parameters_for(name: str, args: argparse.Namespace) -> dict:
    params = dict(FULL_RUN[name])
    params.update({"device": args.device, "seed": args.seed})
    if args.data_dir is not None:
        params["data_dir"] = str(Path(args.data_dir).resolve())
    if args.model is not None:
        params["model_name"] = args.model
    if args.n_images is not None and name in ("01_model_selection", "04_tables", "05_figures"):
        params["n_images"] = args.n_images
    if args.target_layer is not None and name in NEEDS_CHECKPOINT + ("02_gradcam",):
        params["target_layer"] = args.target_layer
    if name in ("04_tables", "05_figures"):
        if args.split is not None:
            params["split"] = args.split
        if args.precision is not None:
            params["precision"] = args.precision
        if args.compile:
            params["compile"] = True
    return params


def default_processes(device: str) -> int:
    """Processes for notebook 04's evaluation: one per GPU on CUDA, else one per CPU core (at
    most 8), each with one thread -- on a 2-core CPU two 1-thread processes computed 3.3 x the
    images per second of one 2-thread process (benchmarks/SCALE_cpu.md)."""
    wants_cuda = device.startswith("cuda") or (device == "auto" and torch.cuda.is_available())
    if wants_cuda:
        return 1 if device not in ("auto", "cuda") else max(1, torch.cuda.device_count())
    return max(1, min(8, os.cpu_count() or 1))


def evaluate_command(args: argparse.Namespace, processes: int, log_dir: Path) -> list[str]:
    """``torchrun -m paperlib evaluate`` computing what notebook 04 computes at full size -- the
    same black box, images, settings (its parameters for this run, its own ``batch_size``) and
    studies -- into ``results/``'s store, one thread per process; the notebook then reads every
    row from the store (paperlib.evaluation resumes) and writes the tables as always."""
    import papermill as pm

    params = parameters_for("04_tables", args)
    notebook = pm.inspect_notebook(str(REPO_ROOT / "notebooks" / "04_tables.ipynb"))
    argv = [sys.executable, "-m", "torch.distributed.run", "--standalone",
            f"--nproc_per_node={processes}", "--log-dir", str(log_dir), "--redirects", "3",
            "-m", "paperlib", "evaluate", "--out", str(results_dir()), "--threads", "1",
            "--batch-size", str(int(notebook["batch_size"]["default"]))]
    # evaluate's flags are the notebook's parameter names (paperlib.evaluate), but --model
    for name, value in params.items():
        flag = "--model" if name == "model_name" else "--" + name.replace("_", "-")
        if value is True:
            argv.append(flag)
        elif value is not None and value is not False:
            argv += [flag, str(value)]
    return argv


def run_evaluation_in_processes(args: argparse.Namespace, processes: int) -> None:
    """Notebook 04's evaluation and studies in ``processes`` torchrun processes (see
    :func:`evaluate_command`); a failure stops the run naming each rank's log folder."""
    import subprocess

    log_dir = results_dir() / "logs" / f"torchrun-{time.strftime('%Y%m%d-%H%M%S')}"
    print(f"    notebook 04's evaluation in {processes} processes x 1 thread (torchrun; each "
          f"rank's output under {log_dir})", flush=True)
    done = subprocess.run(evaluate_command(args, processes, log_dir), stdout=subprocess.DEVNULL,
                          check=False)
    if done.returncode != 0:
        raise RuntimeError(f"the {processes}-process evaluation failed (exit "
                           f"{done.returncode}); each rank's output: {log_dir}; rerun to resume")


def tail_progress(path: Path, stop: threading.Event, start: int = 0,
                  interval: float = 0.5) -> None:
    """Print the lines appended to ``path`` after byte ``start``, indented by 4 spaces, until
    ``stop`` is set; then print what is left and return (the body of :func:`show_progress`'s
    thread). A line is printed once whole (up to its newline); a missing file counts as empty.
    Lines go through ``tqdm.write`` so that papermill's bar in this terminal is redrawn below."""
    from tqdm import tqdm

    offset, pending = start, b""

    def drain() -> None:
        nonlocal offset, pending
        try:
            with open(path, "rb") as f:
                f.seek(offset)
                chunk = f.read()
        except FileNotFoundError:
            return
        offset += len(chunk)
        *lines, pending = (pending + chunk).split(b"\n")
        for line in lines:
            tqdm.write("    " + line.decode("utf-8", errors="replace"))

    while not stop.wait(interval):
        drain()
    drain()


@contextlib.contextmanager
def show_progress(path: Path) -> Iterator[None]:
    """While the block runs, a daemon thread prints the lines the kernel appends to the progress
    log ``path`` (:mod:`paperlib.progress`); on exit it prints the rest and is joined."""
    stop = threading.Event()
    start = path.stat().st_size if path.exists() else 0
    thread = threading.Thread(target=tail_progress, args=(path, stop, start), daemon=True,
                              name="progress-tail")
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join(timeout=10)


def main(args: argparse.Namespace) -> int:
    """``paperlib reproduce`` with its parsed flags; 0 on success."""
    import papermill as pm

    if args.refresh_committed:
        refresh_committed([n for n in NOTEBOOKS if args.only is None or n in args.only])
        return 0
    out_nb = results_dir() / "notebooks"
    out_nb.mkdir(parents=True, exist_ok=True)
    names = [n for n in NOTEBOOKS if args.only is None or n in args.only]
    # the kernels inherit the environment: their progress bars (paperlib.progress) append to
    # this log, and show_progress prints it here while papermill shows only "Executing k/n"
    progress_log = results_dir() / "logs" / f"progress-{time.strftime('%Y%m%d-%H%M%S')}.log"
    progress_log.parent.mkdir(parents=True, exist_ok=True)
    progress_log.write_text("")
    previous = {name: os.environ.get(name)
                for name in (LOG_ENV, MALLOC_ENV, "PAPERLIB_RESULTS", "PAPERLIB_FIGURES")}
    os.environ[LOG_ENV] = str(progress_log)
    # named folders: the notebooks write the full run here, never into their by-hand scratch
    # folders (paperlib.notebook.output_folders)
    os.environ["PAPERLIB_RESULTS"] = str(results_dir())
    os.environ["PAPERLIB_FIGURES"] = str(figures_dir())
    os.environ.setdefault(MALLOC_ENV, "keep")  # the kernels' allocator (paperlib.perf)
    timings: dict[str, float] = {}
    kernel = choose_kernel()
    started = time.time()
    try:
        checked = False
        for i, name in enumerate(names, start=1):
            if name in NEEDS_CHECKPOINT and not checked:
                t0 = time.time()
                ensure_checkpoint(args)
                checked = True
                if time.time() - t0 > 60:
                    timings["attention checkpoint"] = round(time.time() - t0, 1)
            params = parameters_for(name, args)
            print(f"[{i}/{len(names)}] {name} with {params}", flush=True)
            t0 = time.time()
            processes = (args.processes if args.processes is not None
                         else default_processes(args.device))
            if name == "04_tables" and processes > 1:
                with show_progress(progress_log):
                    run_evaluation_in_processes(args, processes)
            with show_progress(progress_log):
                pm.execute_notebook(str(REPO_ROOT / "notebooks" / f"{name}.ipynb"),
                                    str(out_nb / f"{name}.ipynb"), parameters=params,
                                    kernel_name=kernel, progress_bar=True,
                                    cwd=str(REPO_ROOT / "notebooks"), log_output=False)
            timings[name] = round(time.time() - t0, 1)
            if (out_nb / f"{name}.ipynb").is_file():
                sanitise(out_nb / f"{name}.ipynb", keep_records=True)
            print(f"    done in {timings[name]:.0f} s", flush=True)
    finally:
        for name, value in previous.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
    summary: dict[str, Any] = {
        "steps_seconds": timings, "total_seconds": round(time.time() - started, 1),
        "arguments": {k: v for k, v in vars(args).items() if k not in ("command", "debug")},
        "torch": torch.__version__, "threads": torch.get_num_threads(),
        "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        "kernel": kernel, "finished": time.strftime("%Y-%m-%d %H:%M:%S"),
        **record(REPO_ROOT)}
    atomic_write_text(results_dir() / "reproduce_summary.json",
                      json.dumps(summary, indent=2) + "\n")
    from . import readme

    written = readme.write_results(results_dir())
    if results_dir().resolve() == (REPO_ROOT / "results").resolve():
        readme.update(REPO_ROOT / "README.md", results_dir())
        print(f"README.md blocks and {written.name} refreshed from {results_dir()}")
    print("\nSummary")
    for name, sec in timings.items():
        print(f"  {name:<20} {sec / 60:6.1f} min")
    print(f"  {'total':<20} {summary['total_seconds'] / 60:6.1f} min")
    print(f"tables:    {results_dir()}/RESULTS.md (all of them; each also as .csv, .md, .tex)")
    print(f"figures:   {figures_dir()}/ (PNG and PDF)")
    print(f"notebooks: {out_nb}/")
    return 0
