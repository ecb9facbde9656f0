"""``paperlib``: the kit's one command line (also ``python -m paperlib``, ``torchrun -m paperlib``).

::

    paperlib explain photo.jpg my_folder/ --model efficientnet_lite0 --out maps/
    paperlib evaluate --data-dir /data/imagenet/val --split all --n-images 2000 --out results/val
    torchrun --nproc_per_node=8 -m paperlib evaluate --data-dir ... --out ...
    paperlib reproduce [--device cuda] [--model efficientnet_lite1 --target-layer blocks.6]
    paperlib matrix --model efficientnet_lite0 --layers last
    paperlib train-attention --model efficientnet_lite0
    paperlib precision --n-images 64
    paperlib readme [--check]
    paperlib data [--data-dir DIR]

Every command's flags are declared here, and a flag has one name and one meaning in all of them:
``--model`` (several with ``--model A B`` where a command takes several), ``--out`` (the output
folder), ``--data-dir``, ``--device``, ``--n-images`` (a number or ``all``), ``--seed``,
``--batch-size``, ``--target-layer``, ``--methods``, ``--compile`` (a flag), ``--target-class``
(explain: a class index or name) and ``--target-mode`` (evaluate: ``predicted`` or ``label``).
The methods' options and the metric settings come from their registries
(:func:`paperlib.cam.add_option_arguments`, :class:`paperlib.metrics.MetricConfig`).

Imports are lazy: this module imports no torch, and a command's module is imported only when that
command runs, so ``paperlib --help`` answers at once. The parsers of ``explain`` and ``evaluate``
(their ``--help`` too) import the method registry (:mod:`paperlib.cam`, hence torch), because
their options are the registered methods' own: declaring them a second time without torch would
make two records of one method.

A failure is one line, ``paperlib <command>: error: <what>``, with exit status 2 for bad input
(a usage error, a wrong value, a missing file or folder: :data:`BAD_INPUT`) and 1 otherwise;
``--debug`` shows the traceback instead. The long-running commands (evaluate, reproduce, matrix,
train-attention, precision) first set the allocator (:func:`paperlib.perf.configure_malloc`).
"""

from __future__ import annotations

import argparse
import sys
import warnings
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import NoReturn, TextIO

from .errors import UsageError
from .perf import configure_malloc

__all__ = ["COMMANDS", "Command", "build_parser", "main"]

PROG = "paperlib"


class Parser(argparse.ArgumentParser):
    """An argument parser whose usage errors are one line: ``paperlib <command>: error: ...``."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


# ---------------------------------------------------------------------------------------------
# Value types and the flags several commands share


def _whole(text: str, low: int, expected: str) -> int:
    """``text`` as a whole number >= ``low``, else the argparse error naming what was expected."""
    try:
        n = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected {expected}, got {text!r}") from None
    if n < low:
        raise argparse.ArgumentTypeError(f"expected {expected}, got {n}")
    return n


def n_images(text: str) -> int | None:
    """``--n-images``: a positive number, or ``all`` (None: every image)."""
    return None if text.lower() == "all" else _whole(text, 1, "a positive integer or 'all'")


def positive_int(text: str) -> int:
    """A number >= 1 (``--batch-size``, ``--epochs``...)."""
    return _whole(text, 1, "a positive integer")


def _count(text: str) -> int:
    """A number >= 0 (``--untrained-seeds``)."""
    return _whole(text, 0, "a count >= 0")


def _model(p: argparse.ArgumentParser, default: str | None, what: str) -> None:
    p.add_argument("--model", default=default, metavar="NAME", help=what)


def _data_dir(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data-dir", default=None, metavar="DIR",
                   help="image folder (sample or imagenet-val layout); default $PAPERLIB_DATA, "
                        "else data/imagenet-sample")


def _out(p: argparse.ArgumentParser, default: str | None, what: str) -> None:
    p.add_argument("--out", default=default, metavar="DIR", help=what)


def _device(p: argparse.ArgumentParser, default: str = "auto") -> None:
    p.add_argument("--device", default=default,
                   help="auto (CUDA when present), cpu, cuda, cuda:1...; default %(default)s")


def _n_images(p: argparse.ArgumentParser, what: str) -> None:
    p.add_argument("--n-images", type=n_images, default=None, metavar="N",
                   help=f"{what}: a number, or 'all' (default)")


def _seed(p: argparse.ArgumentParser, default: int | None = 0, what: str = "") -> None:
    p.add_argument("--seed", type=int, default=default,
                   help=what or "seed of torch and of the methods' random parts (default 0)")


def _batch_size(p: argparse.ArgumentParser, default: int | None, what: str) -> None:
    p.add_argument("--batch-size", type=positive_int, default=default, metavar="N", help=what)


def _target_layer(p: argparse.ArgumentParser, what: str | None = None) -> None:
    p.add_argument("--target-layer", default=None, metavar="MODULE",
                   help=what or "the module to explain, by name, e.g. blocks.6 (default: the "
                                "model's last convolutional stage)")


def _split(p: argparse.ArgumentParser, default: str | None = None) -> None:
    p.add_argument("--split", default=default,
                   help="images: eval (default; class index 2 mod 4, never seen by the trained "
                        "attention module), train, or all (e.g. ImageNet's validation set)")


def add_metric_arguments(p: argparse.ArgumentParser, skip: Iterable[str] = ()) -> list[str]:
    """One flag per field of :class:`paperlib.metrics.MetricConfig` (default None: the field's
    own), except ``skip``; a boolean field is a flag (``--compile``). Returns the names added."""
    import dataclasses

    from .cam import option_type
    from .metrics import MetricConfig

    added, skip = [], set(skip)
    for f in dataclasses.fields(MetricConfig):
        if f.name in skip:
            continue
        value = getattr(MetricConfig(), f.name)
        flag = "--" + f.name.replace("_", "-")
        if isinstance(value, bool):
            p.add_argument(flag, dest=f.name, action="store_true", default=None,
                           help=f"metric setting (default: {'on' if value else 'off'})")
        else:
            p.add_argument(flag, dest=f.name, type=option_type(value), default=None,
                           help=f"metric setting (default {value!r})")
        added.append(f.name)
    return added


def _registered_methods() -> list[str]:
    from .cam import default_methods

    return list(default_methods())


# ---------------------------------------------------------------------------------------------
# explain


EXPLAIN_DESCRIPTION = """\
Class activation maps of your images with the quick methods (those computed from one shared
forward and backward pass), or those given (--methods all: every registered method; the slow
ones, marked + below, cost tens of extra forwards per image each).

Per image, <out>/<name>/ gets <method>.png (the heat map over the model's input, resized and
centre-cropped), <method>.npy (the raw (S, S) map in [0, 1], float32) and grid.png (the image
beside every method's overlay); <name> is the image's path below the folder given (or its file
name) without the extension. <out>/explanations.json and <out>/explanations.csv (one row per
image and method) hold the explained class (its name when known), its probability and, with
--metrics, the image's metric terms. Existing files are never overwritten without --force.

Folders are read recursively; names starting with '.' are ignored; a file that cannot be read as
an image is skipped with a warning and listed under "skipped" in the JSON."""


def _explain_arguments(p: argparse.ArgumentParser) -> None:
    from .cam import METHODS, add_option_arguments, default_methods, method_label, quick_methods
    from .masking import FILLS
    from .metrics import READOUTS
    from .models import MODEL_NAMES
    from .wrap import TIMM_PREFIX

    p.formatter_class = argparse.RawDescriptionHelpFormatter
    p.description = EXPLAIN_DESCRIPTION
    quick = quick_methods()
    p.epilog = ("methods (registered; * the default, quick ones; + slow: extra forwards per "
                "image):\n"
                + "\n".join(f"  {'*' if m in quick else '+' if METHODS[m].extra_forwards else ' '}"
                            f" {m:<22} {method_label(m)}" for m in default_methods())
                + "\n\n--metrics read-outs (registered; their per-image columns in "
                  "explanations.csv):\n"
                + "\n".join(f"  {r.name:<22} {r.label}" for r in READOUTS.values()))
    p.add_argument("inputs", nargs="+", metavar="IMAGE_OR_FOLDER",
                   help="image files and/or folders (read recursively)")
    _model(p, "efficientnet_lite0",
           f"a kit black box ({', '.join(MODEL_NAMES)}) or {TIMM_PREFIX}<arch> for any timm "
           "architecture (with --weights); default %(default)s")
    p.add_argument("--weights", default=None,
                   help="a state-dict file for the model, or 'random' (untrained, for trying "
                        "things out); required with timm:<arch>")
    _target_layer(p)
    p.add_argument("--class-names", default=None, metavar="FILE",
                   help="a text file with one class name per line, in output order (default: "
                        "ImageNet's for 1000-class models)")
    p.add_argument("--methods", nargs="+", default=None, metavar="METHOD",
                   help="methods to run, or 'all' (default: the quick ones, marked * below; "
                        "less those whose files, e.g. a trained checkpoint, are missing)")
    p.add_argument("--target-class", default=None, metavar="CLASS",
                   help="explain this class (index or name) in every image (default: each "
                        "image's predicted class)")
    _out(p, "explanations", "output folder (default %(default)s)")
    p.add_argument("--force", action="store_true",
                   help="overwrite files left by an earlier run (default: refuse, naming one)")
    _device(p)
    _batch_size(p, 8, "images per batch (default 8)")
    p.add_argument("--metrics", action="store_true",
                   help="also score each map (Average Drop, %% Increase, top-k read-outs, "
                        "deletion / insertion AUC); more forwards per image")
    p.add_argument("--fill", default="black", choices=FILLS,
                   help="with --metrics: what removed pixels become (default black)")
    p.add_argument("--curve-steps", type=int, default=None,
                   help="with --metrics: deletion / insertion steps, 0 for none (default: the "
                        "metric settings', paperlib.metrics.MetricConfig)")
    add_option_arguments(p, skip={"seed", "chunk_size"})  # --checkpoint, --smooth-samples...
    _seed(p)


def _show_warning(message: Warning | str, category: type[Warning], filename: str, lineno: int,
                  file: TextIO | None = None, line: str | None = None) -> None:
    from tqdm import tqdm

    tqdm.write(f"warning: {message}", file=sys.stderr)


def _explain(args: argparse.Namespace) -> int:
    from .data import BadImageWarning
    from .explain_files import SUMMARY_CSV, SUMMARY_JSON, run_explain

    with warnings.catch_warnings():
        warnings.simplefilter("always", BadImageWarning)
        warnings.showwarning = _show_warning
        run = run_explain(args)
    if run.skipped:
        print(f"{len(run.skipped)} file(s) skipped (listed in {run.out / SUMMARY_JSON})")
    if not run.images:
        raise RuntimeError("no file could be read as an image")
    print(f"{len(run.images)} image(s) explained: {run.out}/<image>/ (overlays, maps, grid), "
          f"{run.out / SUMMARY_JSON}, {run.out / SUMMARY_CSV}")
    return 0


# ---------------------------------------------------------------------------------------------
# evaluate


EVALUATE_DESCRIPTION = """\
Evaluate explanation methods and write the paper's tables (Tables 3 and 4, deletion/insertion,
paired Wilcoxon tests, claim check), eval_speed.json and eval_split.json, as notebook 04 does.
Runs as is under torchrun (torchrun --nproc_per_node=N -m paperlib evaluate ...): each process
takes a share of the batches, rank 0 writes the tables. A killed run resumes from its store."""


def _evaluate_arguments(p: argparse.ArgumentParser) -> None:
    from . import attention  # noqa: F401  (registers the attention methods)
    from .cam import METHODS, add_option_arguments

    p.description = EVALUATE_DESCRIPTION
    _data_dir(p)
    _out(p, None, "tables and the results store (cache/); default $PAPERLIB_RESULTS, else "
                  "results/")
    _model(p, None, "black box; default: notebook 01's choice (results/chosen_model.json)")
    _target_layer(p, "module explained (default: the last stage, the paper's layer), e.g. "
                     "blocks.6")
    _device(p)
    _n_images(p, "images of the split, spread evenly")
    p.add_argument("--methods", nargs="+", choices=sorted(METHODS), default=None,
                   metavar="METHOD", help="methods to evaluate; default: every registered method")
    _split(p)
    p.add_argument("--target-mode", dest="target", choices=("predicted", "label"), default=None,
                   help="the class explained and scored: the predicted one (default) or the "
                        "label")
    p.add_argument("--fill", default=None, help="removed pixels: black (default), mean, blur...")
    p.add_argument("--curve-steps", type=int, default=None,
                   help="deletion / insertion steps (0: no curves)")
    p.add_argument("--fractions", type=int, nargs="+", default=None,
                   help="Table 4's top-k%% masks (default: 5 10 20 25 50)")
    _batch_size(p, None, "images per batch")
    p.add_argument("--chunk-size", type=positive_int, default=None,
                   help="images per forward of masked copies")
    _seed(p)
    p.add_argument("--workers", type=int, default=None,
                   help="decoding processes per rank (default: 0 on CPU, up to 8 on CUDA)")
    p.add_argument("--threads", type=positive_int, default=None,
                   help="torch threads per process (default: torch's; OMP_NUM_THREADS)")
    p.add_argument("--max-batches", type=positive_int, default=None,
                   help="stop each process after this many new batches (the store keeps them)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--untrained-seeds", type=_count, default=None, metavar="N",
                   help="seeds of attention-untrained in the seed sweep (0: no sweep; default: "
                        "the kit's, paperlib.protocol.UNTRAINED_SEEDS)")
    p.add_argument("--no-protocol", action="store_true",
                   help="skip the protocol sensitivity study (fills x targets)")
    p.add_argument("--road-images", type=_count, default=None, metavar="N",
                   help="images of the ROAD study (0: no study; default: the kit's, "
                        "paperlib.protocol.ROAD_IMAGES)")
    p.add_argument("--study-images", type=positive_int, default=None, metavar="N",
                   help="images of the seed sweep and the protocol study (default: the kit's, "
                        "paperlib.protocol.STUDY_IMAGES)")
    taken = {"seed", "chunk_size", "fill", "fractions", "curve_steps"}
    taken |= set(add_metric_arguments(p, skip=taken))  # --precision, --compile
    add_option_arguments(p, skip=taken)                 # --smooth-samples, --scorecam-channels..


def _evaluate(args: argparse.Namespace) -> int:
    from .evaluate import main as evaluate

    return evaluate(args)


# ---------------------------------------------------------------------------------------------
# reproduce, matrix, train-attention, precision


def _reproduce_arguments(p: argparse.ArgumentParser) -> None:
    p.description = ("Reproduce the paper's tables and figures: execute notebooks 01-06 with "
                     "full-size parameters (papermill) into results/notebooks/, then write "
                     "results/RESULTS.md and the README's blocks. Resumable.")
    _device(p)
    _data_dir(p)
    _model(p, None, "black box of notebooks 02-05 (default: notebook 01's choice)")
    _target_layer(p, "module explained by notebooks 02-05 (default: the last stage), e.g. "
                     "blocks.6; a missing attention checkpoint for it is trained first")
    p.add_argument("--processes", type=positive_int, default=None, metavar="N",
                   help="processes of notebook 04's evaluation and studies, computed first by "
                        "torchrun -m paperlib evaluate (1 thread each) and then read by the "
                        "notebook from the results store; default: the CPU cores (at most 8) "
                        "on CPU, 1 on CUDA; 1: in the notebook's kernel")
    _n_images(p, "images of notebooks 01, 04 and 05")
    _seed(p)
    _split(p)
    p.add_argument("--precision", default=None,
                   help="metric forwards of notebooks 04 and 05: fp32 (default), bf16; on CUDA "
                        "also tf32, fp16 (results/precision.md measures what each changes)")
    p.add_argument("--compile", action="store_true",
                   help="torch.compile the black box for the metric forwards of notebooks 04, 05")
    p.add_argument("--only", nargs="+", default=None, metavar="NOTEBOOK",
                   help="run only these notebooks (e.g. 04_tables)")
    p.add_argument("--refresh-committed", action="store_true",
                   help="developers: re-execute the committed notebooks with their own small "
                        "defaults (outputs to temporary folders) and sanitise them in place")


def _reproduce(args: argparse.Namespace) -> int:
    from .reproduce import main as reproduce

    return reproduce(args)


def _matrix_arguments(p: argparse.ArgumentParser) -> None:
    p.description = ("The claim matrix: every black box x layer cell evaluated like the main "
                     "run (resumable); writes results/matrix/, claim_matrix.* and, with the "
                     "default --out, refreshes the README. Cells may run in parallel processes "
                     "(--model X --layers Y each).")
    p.add_argument("--model", nargs="+", default=None, metavar="NAME",
                   help="black boxes (default: the matrix's three, EfficientNet-Lite0/1/2)")
    p.add_argument("--layers", nargs="+", default=None, metavar="ROLE",
                   help="layer roles: last, earlier (default: both)")
    _data_dir(p)
    _n_images(p, "evaluation images per cell")
    _batch_size(p, None, "images per batch (default: the evaluation's)")
    _device(p)
    _seed(p)
    _out(p, None, "results folder (default $PAPERLIB_RESULTS, else results/)")
    p.add_argument("--figures-dir", default=None, metavar="DIR",
                   help="figures folder (default $PAPERLIB_FIGURES, else figures/)")
    p.add_argument("--no-train", action="store_true",
                   help="never train a missing checkpoint (a missing one is then an error)")


def _matrix(args: argparse.Namespace) -> int:
    from .matrix import main as matrix

    return matrix(args)


def _train_attention_arguments(p: argparse.ArgumentParser) -> None:
    p.description = ("Train the attention-trained module of a black box at a layer (classifier "
                     "frozen, its own prediction as target) on the training split, and save the "
                     "checkpoint.")
    _model(p, "efficientnet_lite0", "black box (default %(default)s)")
    _target_layer(p)
    _data_dir(p)
    _device(p)
    p.add_argument("--epochs", type=positive_int, default=None,
                   help="epochs per candidate (default: TrainConfig's, 6)")
    _seed(p, None, "seed of the training (default: TrainConfig's, 0)")
    _n_images(p, "training images used (for a quick try)")


def _train_attention(args: argparse.Namespace) -> int:
    from .attention_training import main as train

    return train(args)


def _precision_arguments(p: argparse.ArgumentParser) -> None:
    p.description = ("Evaluate in fp32 and in fast modes (interleaved, same explanations) and "
                     "write precision.csv / .md: the speed-up and the effect on the numbers.")
    _model(p, "efficientnet_lite0", "black box (default %(default)s)")
    _device(p, "cpu")
    _data_dir(p)
    _n_images(p, "images of the split")
    _split(p, "eval")
    _batch_size(p, 16, "images per batch (default 16)")
    p.add_argument("--methods", nargs="+", default=None, metavar="METHOD",
                   help="default: every method")
    p.add_argument("--curve-steps", type=int, default=None, help="default: the kit's")
    p.add_argument("--modes", nargs="+", default=["fp32", "bf16", "fp32+compile",
                                                  "bf16+compile"],
                   help="precision[+compile]; the first must be fp32")
    p.add_argument("--threads", type=positive_int, default=None)
    p.add_argument("--max-rounds", type=positive_int, default=None,
                   help="stop after this many batches per mode (a subset: the first batches)")
    _out(p, None, "folder of precision.csv/.md (default: results)")
    p.add_argument("--save", default=None, metavar="FILE",
                   help="also pickle the measurement (rows and timings of every mode) here")
    p.add_argument("--from-saved", default=None, metavar="FILE",
                   help="write the report from a measurement pickled by --save (no evaluation)")


def _precision(args: argparse.Namespace) -> int:
    from .precision import main as precision

    return precision(args)


# ---------------------------------------------------------------------------------------------
# readme, data


def _readme_arguments(p: argparse.ArgumentParser) -> None:
    p.description = ("Write results/RESULTS.md and refresh the README's generated blocks from a "
                     "run's files.")
    p.add_argument("--results-dir", default=None, metavar="DIR",
                   help="folder of a run's files (default: $PAPERLIB_RESULTS, else results/)")
    p.add_argument("--readme", default=None, metavar="FILE",
                   help="the README to refresh (default: the repository's README.md)")
    p.add_argument("--check", action="store_true",
                   help="write nothing; exit 1 when README.md or RESULTS.md differs from what "
                        "the results render (CI runs it)")


def _readme(args: argparse.Namespace) -> int:
    from .readme import main as readme

    return readme(args.results_dir, args.readme, args.check)


def _data_arguments(p: argparse.ArgumentParser) -> None:
    p.description = ("Fetch the public ImageNet sample (1000 images, pinned commit, checked "
                     "hashes) when the folder holds no images.")
    p.add_argument("--data-dir", default=None, metavar="DIR",
                   help="folder for the images (default: $PAPERLIB_DATA, else "
                        "data/imagenet-sample)")


def _data(args: argparse.Namespace) -> int:
    from .download import fetch_sample

    fetch_sample(args.data_dir)
    return 0


def _book_arguments(p: argparse.ArgumentParser) -> None:
    from .book import SOURCES

    p.description = ("Build the rendered book (static HTML, Jupyter Book 1, offline) from the "
                     "executed notebooks and results/RESULTS.md.")
    p.add_argument("--out", default=None, metavar="DIR",
                   help="folder of the build (default build/book; the site is "
                        "DIR/_build/html/index.html)")
    p.add_argument("--source", default="auto", choices=SOURCES,
                   help="notebooks shown: full (make reproduce's results/notebooks/), committed "
                        "(the small runs), auto (full where present; default)")
    p.add_argument("--check", action="store_true",
                   help="exit 1 when a page the book must have is missing (CI)")


def _book(args: argparse.Namespace) -> int:
    from .book import main as book

    return book(args.out, args.source, args.check)


def _verify_store_arguments(p: argparse.ArgumentParser) -> None:
    p.description = ("Check results stores: SQLite's integrity check and every stored batch's "
                     "checksum (a value edited in a store is named by run and batch); exit 1 "
                     "on any finding.")
    p.add_argument("stores", nargs="*", metavar="FILE",
                   help="the stores (default: every cache/*.sqlite of the results folder, "
                        "$PAPERLIB_RESULTS, else results/)")


def _verify_store(args: argparse.Namespace) -> int:
    from pathlib import Path

    from .paths import results_dir
    from .store import ResultsStore

    paths = ([Path(p) for p in args.stores] if args.stores
             else sorted((results_dir() / "cache").glob("*.sqlite")))
    if not paths:
        raise FileNotFoundError(f"no results store in {results_dir() / 'cache'}")
    findings = 0
    for path in paths:
        if not path.is_file():
            raise FileNotFoundError(f"no results store at {path}")
        with ResultsStore(path) as store:
            report = store.verify()
        bad = [f"run {run} ({name}), batch starting at {first}: its rows differ from their "
               "checksum (changed after they were stored)"
               for run, name, first in report["mismatched"]]
        if report["integrity"] != ["ok"]:
            bad.insert(0, f"PRAGMA integrity_check: {'; '.join(report['integrity'][:3])}")
        for line in bad:
            print(f"{path}: {line}")
        print(f"{path}: {report['checked']} batches checked, {len(report['mismatched'])} "
              f"differ, {report['unchecked']} stored before checksums (unchecked); integrity "
              f"{'ok' if report['integrity'] == ['ok'] else 'FAILED'}")
        findings += len(bad)
    return 1 if findings else 0


# ---------------------------------------------------------------------------------------------
# The command group


@dataclass(frozen=True)
class Command:
    """One subcommand: its help line, the function declaring its flags, the one running it, and
    whether it sets the allocator first (the long runs, :mod:`paperlib.perf`)."""

    help: str
    arguments: Callable[[argparse.ArgumentParser], None]
    run: Callable[[argparse.Namespace], int]
    long_run: bool = False


COMMANDS: dict[str, Command] = {
    "explain": Command("class activation maps of your images: overlays, raw maps, a JSON/CSV "
                       "summary", _explain_arguments, _explain),
    "evaluate": Command("evaluate methods and write the paper's tables (also under torchrun)",
                        _evaluate_arguments, _evaluate, long_run=True),
    "reproduce": Command("execute notebooks 01-06 at full size and write every table and figure "
                         "(make reproduce)", _reproduce_arguments, _reproduce, long_run=True),
    "matrix": Command("the claim matrix over black boxes x layers (make reproduce-matrix)",
                      _matrix_arguments, _matrix, long_run=True),
    "readme": Command("write results/RESULTS.md and the README's generated blocks (make readme)",
                      _readme_arguments, _readme),
    "train-attention": Command("train the attention-trained checkpoint of a black box and layer",
                               _train_attention_arguments, _train_attention, long_run=True),
    "data": Command("fetch the pinned ImageNet sample images when missing (make data)",
                    _data_arguments, _data),
    "precision": Command("measure the fast metric forwards (bf16, compile) against fp32",
                         _precision_arguments, _precision, long_run=True),
    "book": Command("build the rendered book of the run's notebooks and results (make book)",
                    _book_arguments, _book),
    "verify-store": Command("check a results store's integrity and its rows' checksums",
                            _verify_store_arguments, _verify_store),
}


def build_parser(commands: Iterable[str] | None = None) -> argparse.ArgumentParser:
    """The ``paperlib`` parser. Every subcommand is listed; the flags are declared for
    ``commands`` only (default: all), so that parsing one command imports only what its flags
    need (``explain`` and ``evaluate``: the method registry)."""
    wanted = set(COMMANDS if commands is None else commands)
    parser = Parser(prog=PROG, description="paperlib: the reproduction kit for An & Joe (2022), "
                                           "attention-guided Grad-CAM. One command per job; "
                                           "`paperlib COMMAND --help` for its flags.")
    parser.add_argument("--debug", action="store_true", default=argparse.SUPPRESS,
                        help="show the traceback of a failure")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=Parser)
    for name, command in COMMANDS.items():
        p = sub.add_parser(name, help=command.help, description=command.help)
        if name in wanted:
            command.arguments(p)
            p.add_argument("--debug", action="store_true", default=argparse.SUPPRESS,
                           help="show the traceback of a failure instead of one line")
    return parser


def _command_of(argv: Sequence[str]) -> str | None:
    """The subcommand named in ``argv``: its first word that is not an option."""
    return next((a for a in argv if not a.startswith("-")), None)


#: Exceptions that mean bad input (exit status 2): a wrong value or name, a missing file or folder.
BAD_INPUT = (UsageError, ValueError, FileNotFoundError)


def _message(exc: BaseException) -> str:
    text = str(exc).strip() or type(exc).__name__
    if isinstance(exc, (UsageError, ValueError, OSError, RuntimeError)):
        return text
    return f"{type(exc).__name__}: {text}"


def main(argv: Sequence[str] | None = None) -> int:
    """The ``paperlib`` console script; returns the exit status (0 ok, 1 failed, 2 bad input)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    name = _command_of(argv)
    parser = build_parser([name] if name in COMMANDS else [])
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help(sys.stderr)
        return 2
    command = COMMANDS[args.command]
    debug = getattr(args, "debug", False)
    try:
        if command.long_run:
            configure_malloc()  # before torch allocates: $PAPERLIB_MALLOC, default keep
        return command.run(args)
    except KeyboardInterrupt:
        print(f"{PROG} {args.command}: interrupted", file=sys.stderr)
        return 130
    except SystemExit as exc:
        if debug or not isinstance(exc.code, str):
            raise
        print(f"{PROG} {args.command}: error: {exc.code}", file=sys.stderr)
        return 1
    except Exception as exc:
        if debug:
            raise
        status = 2 if isinstance(exc, BAD_INPUT) else 1
        print(f"{PROG} {args.command}: error: {_message(exc)}", file=sys.stderr)
        return status

