"""The evaluation run behind Tables 3 and 4: explain, mask, score, cache -- batch by batch.

:func:`run_evaluation` walks the dataset in batches. Per batch: one :func:`paperlib.explain` call
gives every method's maps; :func:`paperlib.metrics.evaluate_batch` scores them; the per-image rows
and the batch's timings go to the results store (the run ledger :class:`paperlib.runs.ResultsCache`
over :mod:`paperlib.store`, SQLite, one transaction per batch) before the next batch starts. A rerun
with the same settings and the same image files resumes where the last one stopped; under
``torchrun`` every rank takes its share of the batches (:mod:`paperlib.distributed`,
:mod:`paperlib.evaluate`). :func:`pending_batches` decodes the batches the ledger says are still to
do and draws the progress bar (the accuracy table's run uses it too).

The speed floor is measured in the same run, on every batch: a plain ``torch.no_grad()`` forward
of ``chunk_size`` of the batch's images (best of three). The evaluation's cost is reported as
``metric seconds / (metric forwards x floor seconds per image)``.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
import torch

from . import distributed
from .blackbox import BlackBox
from .cam import (
    ExplainOptions,
    Explanations,
    check_methods,
    default_methods,
    explain,
    method_files,
    method_names,
)
from .checks import check_fields, checked
from .data import Batch, ImageDataset, default_workers, iter_batches
from .fingerprint import code_fingerprint
from .metrics import MetricConfig, evaluate_batch, image_rows
from .paths import results_dir
from .perf import clock
from .progress import progress as progress_bar
from .runs import ResultsCache

__all__ = ["EvalSettings", "Evaluation", "control_methods", "measure_floor", "paper_baselines",
           "pending_batches", "run_evaluation", "variants"]

TARGETS = ("predicted", "label")


def paper_baselines() -> tuple[str, ...]:
    """The paper's four baselines (registered with role ``baseline``)."""
    return method_names("baseline")


def variants() -> tuple[str, ...]:
    """Every registered reading of the paper's method (role ``variant``)."""
    return method_names("variant")


def control_methods() -> tuple[str, ...]:
    """Every registered control map (role ``control``, :mod:`paperlib.controls`)."""
    return method_names("control")


@dataclass
class EvalSettings:
    """Everything that determines an evaluation's numbers, composed of the explain options and
    the metric configuration; the results key is derived from it (:meth:`key`).

    Every default is declared once: the methods' options on their dataclasses in
    :mod:`paperlib.cam` / :mod:`paperlib.attention`, the metrics' in
    :class:`paperlib.metrics.MetricConfig`, the run's here. ``batch_size`` and the chunk sizes
    change no number and are not part of the key.
    """

    methods: tuple[str, ...] = field(default_factory=default_methods)
    split: str = "eval"
    n_images: int | None = checked(None, integer=True, low=1, optional=True)
    target: str = "predicted"           # or "label" (ground truth)
    explain: ExplainOptions = field(default_factory=ExplainOptions)
    metrics: MetricConfig = field(default_factory=MetricConfig)
    batch_size: int = checked(16, integer=True, low=1)

    def __post_init__(self) -> None:
        check_fields(self)
        self.methods = check_methods(self.methods)
        if self.target not in TARGETS:
            raise ValueError(f"target must be one of {TARGETS}, got {self.target!r}")

    @property
    def seed(self) -> int:
        return self.explain.seed

    @classmethod
    def from_parameters(cls, params: Mapping[str, Any]) -> EvalSettings:
        """Settings from flat parameters, e.g. a notebook's parameters cell (``globals()``).

        Recognised names: this class's fields (``methods``, ``split``, ``n_images``, ``target``,
        ``batch_size``), :class:`MetricConfig`'s (``fill``, ``fractions``, ``curve_steps``) and
        :class:`ExplainOptions`' flat options (``seed``, ``chunk_size``, every method's option
        such as ``smooth_samples``). A value of ``None`` means the default (except ``n_images``,
        where ``None`` is "all"); other names are ignored.
        """
        own = {f.name for f in dataclasses.fields(cls)} - {"explain", "metrics"}
        metric_names = {f.name for f in dataclasses.fields(MetricConfig)}
        explain_names = ({"seed", "chunk_size"} | set(ExplainOptions.option_fields()))
        given = {k: v for k, v in params.items() if v is not None or k == "n_images"}
        run = {k: v for k, v in given.items() if k in own}
        metrics = MetricConfig(**{k: v for k, v in given.items() if k in metric_names})
        options = ExplainOptions.build(**{k: v for k, v in given.items() if k in explain_names})
        return cls(**run, explain=options, metrics=metrics)

    def key(self) -> dict[str, Any]:
        """The results key: the run's settings, and the options of its methods only."""
        return {"methods": list(self.methods), "split": self.split, "n_images": self.n_images,
                "target": self.target, "explain": self.explain.key(self.methods),
                "metrics": self.metrics.key()}

    def describe(self) -> dict[str, Any]:
        """Every value in effect, flat (what a notebook prints)."""
        return {"methods": list(self.methods), "split": self.split, "n_images": self.n_images,
                "target": self.target, "batch_size": self.batch_size,
                **{k: v for k, v in dataclasses.asdict(self.metrics).items()},
                **self.explain.flat(self.methods)}


@dataclass
class Evaluation:
    """Per-image rows of a finished (or resumed) run, its batch records and settings; ``store``
    is the results store file and ``run_key`` the run's key in it."""

    frame: pd.DataFrame
    batches: list[dict[str, Any]]
    settings: EvalSettings
    store: Path
    run_key: str
    model: str
    skipped: list[tuple[str, str]] = field(default_factory=list)

    def speed(self) -> dict[str, float]:
        """Totals over the run: metric forwards, their time against the floor, per-method time.

        Per-image figures are NaN for a run without a stored batch (never a division by zero).
        """
        b = self.batches
        n = sum(x["n_images"] for x in b)
        forwards = sum(x["metric_forwards"] for x in b)
        seconds = sum(x["metric_seconds"] for x in b)
        floor = sum(x["metric_forwards"] * x["floor_seconds_per_image"] for x in b)

        def per_image(total: float) -> float:
            return total / n if n else float("nan")

        out = {"images": n, "metric_forwards": forwards, "metric_seconds": seconds,
               "floor_seconds": floor, "ratio_to_floor": seconds / floor if floor else float("nan"),
               "floor_ms_per_image": 1000 * floor / forwards if forwards else float("nan")}
        for m in self.settings.methods:
            out[f"explain_ms_per_image[{m}]"] = per_image(
                1000 * sum(x["method_seconds"][m] for x in b))
            out[f"extra_forwards_per_image[{m}]"] = per_image(
                sum(x["method_forwards"][m] for x in b))
        out["explain_ms_per_image[shared pass]"] = per_image(
            1000 * sum(x["pass_seconds"] for x in b))
        return out


@torch.no_grad()
def measure_floor(black_box: BlackBox, images: torch.Tensor, chunk_size: int,
                  repeats: int = 3) -> float:
    """Seconds per image of one plain ``no_grad`` forward of ``chunk_size`` images (best of n,
    after one untimed warm-up forward)."""
    x = images[:chunk_size]
    if x.shape[0] < chunk_size:  # same batch shape as the metric forwards
        x = x.repeat((chunk_size + x.shape[0] - 1) // x.shape[0], 1, 1, 1)[:chunk_size]
    black_box.model(x)  # warm-up: the first forward after the gradient pass runs slow
    best = float("inf")
    for _ in range(repeats):
        start = clock(black_box.device)
        black_box.model(x)
        best = min(best, clock(black_box.device) - start)
    return best / chunk_size


def pending_batches(cache: ResultsCache, dataset: ImageDataset, preprocess: Callable,
                    batch_size: int, device: torch.device | str | None = None, desc: str = "",
                    progress: bool = True, num_workers: int = 0) -> Iterator[Batch]:
    """The decoded batches of ``dataset`` that ``cache``'s run still needs from this process.

    Which images, in which batches: :meth:`paperlib.runs.ResultsCache.pending` (the resumption;
    under torch.distributed this rank's share); they are decoded by
    :func:`paperlib.data.iter_batches` and a batch that another process stored meanwhile
    (:meth:`~paperlib.runs.ResultsCache.stored_elsewhere`) is skipped. The progress bar
    (:func:`paperlib.progress.progress`, rank 0's share) counts a batch when the next one is
    asked for, i.e. once the caller has written it.
    """
    mine = cache.pending(dataset, batch_size)
    label = f"{desc} (rank 0 of {cache.world})" if cache.world > 1 else desc
    show = progress and bool(mine) and cache.rank == 0
    with progress_bar(len(mine), label, unit="img", disable=not show) as bar:
        for batch in iter_batches(dataset, preprocess, batch_size, indices=mine,
                                  num_workers=num_workers, device=device):
            if cache.stored_elsewhere(batch.files):
                bar.update(len(batch))  # another process stored it meanwhile
                continue
            yield batch
            bar.update(len(batch))


def run_evaluation(black_box: BlackBox, dataset: ImageDataset, settings: EvalSettings,
                   results_root: str | Path | None = None, progress: bool = True,
                   name: str = "eval", max_batches: int | None = None,
                   num_workers: int | None = None,
                   explainer: Callable[..., Explanations] | None = None) -> Evaluation:
    """Evaluate ``settings.methods`` on ``settings.split`` / ``n_images`` of ``dataset``, resuming.

    Rows go to the results store ``<results>/cache/<name>.sqlite``
    (:class:`paperlib.runs.ResultsCache`), one transaction per batch; the run's key holds the
    settings, the code and the exact file list. Under ``torchrun`` (:mod:`paperlib.distributed`)
    each rank computes every world-th batch into its own shard and every rank returns the merged
    rows. ``max_batches`` stops after that many new batches (for tests of resumption); the store
    keeps what was finished. ``num_workers``: decoding processes (default
    :func:`paperlib.data.default_workers`). ``explainer``: called instead of
    :func:`paperlib.explain` as ``explainer(black_box, images, methods, targets=, options=,
    files=)`` (e.g. to reuse a batch's explanations across runs that differ only in the metrics).

    Raises ``ValueError`` when the split holds no image, and when every image of the run is
    unreadable (naming the folder, with the skip report) -- no batch is then computed.
    """
    subset = dataset.split(settings.split).subset(settings.n_images)
    root = Path(dataset.root).resolve()
    if not len(subset):
        raise ValueError(f"no image of split {settings.split!r} among the {len(dataset)} images of "
                         f"{root} ({dataset.layout} layout); choose another split (or 'all')")
    key = {"model": black_box.name, "target_layer": black_box.target_layer_name,
           "weights": black_box.weights, "data": str(root),
           "code": code_fingerprint(*method_files(settings.methods, black_box, settings.explain)),
           **settings.key()}
    workers = default_workers(black_box.device) if num_workers is None else num_workers
    options, mconfig = settings.explain, settings.metrics
    with ResultsCache(Path(results_dir(results_root)) / "cache", name, key, dataset=subset,
                      methods=settings.methods) as cache:
        new_batches = 0
        for batch in pending_batches(cache, subset, black_box.preprocess, settings.batch_size,
                                     black_box.device, f"{black_box.name}: evaluating", progress,
                                     num_workers=workers):
            if max_batches is not None and new_batches >= max_batches:
                break
            begin = time.perf_counter()
            targets = batch.labels if settings.target == "label" else None
            if explainer is None:
                ex = explain(black_box, batch.images, settings.methods, targets=targets,
                             options=options)
            else:
                ex = explainer(black_box, batch.images, settings.methods, targets=targets,
                               options=options, files=batch.files)
            start = clock(black_box.device)
            scores = evaluate_batch(black_box, batch.images, ex.maps, ex.targets, mconfig,
                                    clean_logits=ex.logits)
            metric_seconds = clock(black_box.device) - start
            # the floor in the state the metric forwards ran in (measured before them, right
            # after the explanations' gradient passes, it read up to 1.4x slow: ratios < 1)
            floor = measure_floor(black_box, batch.images, mconfig.chunk_size)
            flat = {m: ex.flat_images[m].cpu().numpy() for m in settings.methods}
            rows = image_rows(batch.files, batch.labels.cpu().numpy(), scores, flat, mconfig)
            stats = {"n_images": len(batch), "files": batch.files,
                     "pass_seconds": ex.seconds["pass"],
                     "method_seconds": {m: ex.seconds[m] for m in settings.methods},
                     "method_forwards": ex.forwards, "metric_seconds": metric_seconds,
                     "metric_forwards": scores.forwards, "floor_seconds_per_image": floor,
                     "batch_seconds": time.perf_counter() - begin,
                     "device": str(black_box.device), "threads": torch.get_num_threads(),
                     "workers": workers, "time": time.strftime("%Y-%m-%d %H:%M:%S")}
            cache.write_batch(rows, stats)
            new_batches += 1
        frame, batches = cache.gather()
        store, run_key = cache.path, cache.key
    skipped: list[tuple[str, str]] = []   # every rank's skip report (each read its shard)
    seen: set[str] = set()
    for report in distributed.all_gather_object(list(subset.report.skipped)):
        for file, reason in report:
            if file not in seen:
                seen.add(file)
                skipped.append((file, reason))
    unreadable = seen & set(subset.files)
    if frame.empty and len(unreadable) == len(subset):
        lines = "\n".join(f"  skipped {f}: {r}" for f, r in skipped)
        raise ValueError(f"no usable image in {root}: all {len(subset)} image(s) of split "
                         f"{settings.split!r} (n_images={settings.n_images}) were skipped, so "
                         f"nothing was evaluated; fix or replace them:\n{lines}")
    if len(frame):
        columns = list(mconfig.row_schema.columns())
        frame = mconfig.row_schema.validate(frame, where=f"{store} (run {run_key})")[columns]
    return Evaluation(frame, batches, settings, store, run_key, black_box.name, skipped)
