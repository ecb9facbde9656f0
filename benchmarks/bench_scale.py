#!/usr/bin/env python
"""Scaling benchmark of the evaluation: processes against threads, the results store's cost, the
decoding workers, and what ImageNet's 50,000 validation images would cost on one or N devices.

Four measurements, all on the same images (``--n-images`` of the eval split):

1. **processes vs threads**: ``torchrun --nproc_per_node=2 -m paperlib evaluate`` with one thread
   per process against ``python -m paperlib evaluate --threads 2`` (one process, two threads) and
   ``--threads 1`` (the scaling reference), interleaved ``--repeats`` times, each into a fresh
   results folder. Throughput is images per
   second of compute: the images over the slowest rank's summed batch time (from the store's
   batch records, ``batch_seconds``: explain + floor + metrics + rows, no startup, no decoding);
   the end-to-end wall time (imports, model load, merge, tables) is given beside it.
2. **store overhead**: one in-process evaluation (one thread) with the store's per-batch work
   timed (the write transaction and the "done meanwhile?" query), against the batch's compute;
   plus synthetic stores at the evaluation's row shape: a batch write into an empty and into a
   filled store, merging a shard, loading the rows.
3. **decoding workers**: ``iter_batches`` decode throughput and a cheap evaluation (Grad-CAM
   only, where decoding weighs most; one model thread) with 0 and 2 worker processes.
4. **ImageNet estimate** (:func:`imagenet_estimate`): from the measured forwards per image and
   seconds per image; the assumptions are written into the report.

    .venv/bin/python benchmarks/bench_scale.py [--n-images 8] [--batch-size 2] [--repeats 2]
        [--methods ...] [--gpu-ms-per-forward 0.2] [--out benchmarks/]

Writes ``<out>/scale_cpu.json`` and ``<out>/SCALE_cpu.md``. Images: ``$PAPERLIB_DATA``.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import torch

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
if str(BENCH) not in sys.path:
    sys.path.insert(0, str(BENCH))

import harness  # noqa: E402

from paperlib import iter_batches, load_images, load_model  # noqa: E402
from paperlib.cam import default_methods  # noqa: E402
from paperlib.evaluation import EvalSettings, run_evaluation  # noqa: E402
from paperlib.report import render as render_template  # noqa: E402
from paperlib.runs import ResultsCache  # noqa: E402
from paperlib.store import ResultsStore  # noqa: E402

#: ImageNet-1k's validation set.
IMAGENET_VAL = 50_000


# ---------------------------------------------------------------------------------------------
# 1. Processes against threads


def _cli_env(threads: int) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if k not in ("PAPERLIB_PROGRESS_LOG", "WORLD_SIZE", "RANK", "LOCAL_RANK")}
    env.update(OMP_NUM_THREADS=str(threads), PAPERLIB_OFFLINE="1")
    return env


def run_cli(nproc: int, threads: int, out: Path, args: Sequence[str]) -> dict[str, Any]:
    """One ``paperlib evaluate`` run (``nproc`` processes x ``threads`` threads) into ``out``:
    wall time, and from the store's batch records the compute time of the slowest rank."""
    evaluate = ["-m", "paperlib", "evaluate", *args, "--out", str(out), "--no-progress"]
    cmd = ([sys.executable, "-m", "torch.distributed.run", "--standalone",
            f"--nproc_per_node={nproc}", *evaluate] if nproc > 1
           else [sys.executable, *evaluate, "--threads", str(threads)])
    start = time.perf_counter()
    proc = subprocess.run(cmd, env=_cli_env(threads), cwd=REPO, capture_output=True, text=True)
    wall = time.perf_counter() - start
    if proc.returncode:
        raise RuntimeError(f"{' '.join(cmd)} failed:\n{proc.stdout[-3000:]}{proc.stderr[-3000:]}")
    with ResultsStore(out / "cache" / "eval.sqlite") as store:
        (key,) = store.runs()
        batches = store.batches(key)
        frame = store.load(key)
    per_rank: dict[int, float] = {}
    for b in batches:
        per_rank[b["rank"]] = per_rank.get(b["rank"], 0.0) + b["batch_seconds"]
    images = sum(b["n_images"] for b in batches)
    compute = max(per_rank.values())
    extra = sum(sum(b["method_forwards"].values()) for b in batches)
    return {"processes": nproc, "threads": threads, "images": images, "wall_s": wall,
            "compute_s": compute, "rank_compute_s": per_rank,
            "images_per_s": images / compute, "images_per_s_wall": images / wall,
            "seconds_per_image_one_rank": sum(per_rank.values()) / images,
            "metric_forwards_per_image": sum(b["metric_forwards"] for b in batches) / images,
            "extra_forwards_per_image": extra / images,
            "floor_ms_per_forward": 1000 * statistics.median(
                b["floor_seconds_per_image"] for b in batches),
            "table3": (out / "table3.csv").read_text(), "rows": frame}


#: The configurations: name -> (processes, threads per process).
CONFIGS = {"1x2": (1, 2), "2x1": (2, 1), "1x1": (1, 1)}
_INDICATORS = ("increase_", "agree_", "flat_map")


def row_differences(a: Any, b: Any) -> dict[str, Any]:
    """How far two runs' per-image rows differ: the largest absolute difference of the
    continuous columns (probabilities, drops, AUCs), and the share of 0/100 indicator entries
    (% Increase, top-1 agreement) that flip."""
    keys = ["file", "method"]
    ra = a.sort_values(keys).reset_index(drop=True)
    rb = b.sort_values(keys).reset_index(drop=True)
    floats = [c for c in ra.columns if ra[c].dtype.kind == "f"]
    indicators = [c for c in floats if c.startswith(_INDICATORS)]
    continuous = [c for c in floats if c not in indicators]
    flips = (ra[indicators].to_numpy() != rb[indicators].to_numpy())
    diff = (ra[continuous] - rb[continuous]).abs().max(axis=1).groupby(ra["method"]).max()
    return {"max_abs_continuous": float(diff.max()),
            "max_abs_continuous_per_method": {m: float(v) for m, v in diff.items()},
            "indicator_flips": int(flips.sum()), "indicator_entries": int(flips.size),
            "indicator_flips_per_method": {
                m: int(flips[(ra["method"] == m).to_numpy()].sum()) for m in diff.index}}


def processes_vs_threads(args: Sequence[str], repeats: int) -> dict[str, Any]:
    """1 process x 2 threads, 2 processes x 1 thread and 1 process x 1 thread, interleaved
    ``repeats`` times."""
    runs: dict[str, list[dict[str, Any]]] = {name: [] for name in CONFIGS}
    for _ in range(repeats):
        for name, (nproc, threads) in CONFIGS.items():
            with tempfile.TemporaryDirectory(prefix=f"scale-{name}-") as tmp:
                runs[name].append(run_cli(nproc, threads, Path(tmp), args))
    med = {name: {k: statistics.median(r[k] for r in rs)
                  for k in ("images_per_s", "images_per_s_wall", "wall_s", "compute_s",
                            "seconds_per_image_one_rank", "floor_ms_per_forward")}
           for name, rs in runs.items()}
    last = {name: rs[-1] for name, rs in runs.items()}
    return {
        "runs": {n: [{k: v for k, v in r.items() if k not in ("rows", "table3")} for r in rs]
                 for n, rs in runs.items()},
        "median": med,
        "ratio_2x1_over_1x2": med["2x1"]["images_per_s"] / med["1x2"]["images_per_s"],
        "ratio_wall_2x1_over_1x2": med["2x1"]["images_per_s_wall"]
        / med["1x2"]["images_per_s_wall"],
        "ratio_2x1_over_1x1": med["2x1"]["images_per_s"] / med["1x1"]["images_per_s"],
        "ratio_1x2_over_1x1": med["1x2"]["images_per_s"] / med["1x1"]["images_per_s"],
        "metric_forwards_per_image": last["1x2"]["metric_forwards_per_image"],
        "extra_forwards_per_image": last["1x2"]["extra_forwards_per_image"],
        "table3_identical_2x1_1x1": last["2x1"]["table3"] == last["1x1"]["table3"],
        "table3_identical_2x1_1x2": last["2x1"]["table3"] == last["1x2"]["table3"],
        "rows_2x1_vs_1x2": row_differences(last["2x1"]["rows"], last["1x2"]["rows"]),
    }


# ---------------------------------------------------------------------------------------------
# 2. The store's overhead


@contextmanager
def _timed(cls: type, name: str, sink: list[float],
           when: Callable[..., bool] = lambda *a, **k: True) -> Iterator[None]:
    """Time every call of ``cls.name`` (that ``when`` accepts) into ``sink``."""
    original = getattr(cls, name)

    def wrapper(*a: Any, **k: Any) -> Any:
        start = time.perf_counter()
        try:
            return original(*a, **k)
        finally:
            if when(*a, **k):
                sink.append(time.perf_counter() - start)

    setattr(cls, name, wrapper)
    try:
        yield
    finally:
        setattr(cls, name, original)


def _synthetic_batch(columns: list[str], b: int, images: int, methods: int,
                     rng: np.random.Generator) -> list[dict[str, Any]]:
    rows = []
    for m in range(methods):
        for i in range(images):
            row: dict[str, Any] = {c: float(v) for c, v in zip(columns, rng.random(len(columns)))}
            row.update(file=f"n{b:08d}_{i}.JPEG", method=f"m{m}", label=i, target=i,
                       flat_map=False)
            rows.append(row)
    return rows


def store_overhead(n_images: int, batch_size: int, methods: Sequence[str], threads: int,
                   filled_images: int) -> dict[str, Any]:
    """The store's per-batch work against the batch's compute, in one real evaluation; and
    synthetic stores of the same row shape (write, merge, load)."""
    torch.set_num_threads(threads)
    bb = load_model("efficientnet_lite0", device="cpu")
    writes: list[float] = []
    rechecks: list[float] = []
    with tempfile.TemporaryDirectory(prefix="scale-store-") as tmp:
        settings = EvalSettings.from_parameters({"methods": tuple(methods),
                                                 "n_images": n_images,
                                                 "batch_size": batch_size})
        with _timed(ResultsCache, "write_batch", writes), \
                _timed(ResultsStore, "done", rechecks,
                       when=lambda *a, **k: k.get("files") is not None or len(a) > 3):
            ev = run_evaluation(bb, load_images(), settings, tmp, progress=False)
    compute = [b["batch_seconds"] for b in ev.batches]
    store_s = [w + r for w, r in zip(writes, rechecks)]
    out: dict[str, Any] = {
        "batches": len(compute), "images_per_batch": batch_size, "methods": len(methods),
        "columns": ev.frame.shape[1], "write_ms": [1000 * w for w in writes],
        "recheck_ms": [1000 * r for r in rechecks],
        "compute_s": compute, "overhead_percent": 100 * sum(store_s) / sum(compute),
        "overhead_percent_max_batch": 100 * max(s / c for s, c in zip(store_s, compute))}

    # synthetic: the evaluation's row shape, 16 images x 12 methods per batch
    rng = np.random.default_rng(0)
    columns = [c for c in ev.frame.columns if c not in ("file", "method", "label", "target",
                                                        "flat_map")]
    per_batch, n_methods = 16, len(default_methods())
    with tempfile.TemporaryDirectory(prefix="scale-synthetic-") as tmp:
        main = ResultsStore(Path(tmp) / "eval.sqlite")
        main.register("run", "eval", {})
        empty = []
        for b in range(5):
            rows = _synthetic_batch(columns, b, per_batch, n_methods, rng)
            start = time.perf_counter()
            main.write("run", rows)
            empty.append(time.perf_counter() - start)
        shard = ResultsStore(Path(tmp) / "shard.sqlite", wal=False)
        shard.register("run", "eval", {})
        fill_start = time.perf_counter()
        n_fill = max(1, filled_images // per_batch)
        for b in range(5, 5 + n_fill):
            shard.write("run", _synthetic_batch(columns, b, per_batch, n_methods, rng))
        fill_s = time.perf_counter() - fill_start
        shard.close()
        start = time.perf_counter()
        merged = main.merge(Path(tmp) / "shard.sqlite", "run")
        merge_s = time.perf_counter() - start
        filled = []
        for b in range(10 ** 6, 10 ** 6 + 5):
            rows = _synthetic_batch(columns, b, per_batch, n_methods, rng)
            start = time.perf_counter()
            main.write("run", rows)
            filled.append(time.perf_counter() - start)
        start = time.perf_counter()
        loaded = main.load("run")
        load_s = time.perf_counter() - start
        main.close()                                  # checkpoints the WAL into the file
        size = (Path(tmp) / "eval.sqlite").stat().st_size
        start = time.perf_counter()
        ResultsStore(Path(tmp) / "eval.sqlite").close()   # open = integrity check
        open_s = time.perf_counter() - start
    n_rows = len(loaded)
    out["synthetic"] = {
        "rows_per_batch": per_batch * n_methods, "columns": len(columns) + 5,
        "write_ms_empty_store": 1000 * statistics.median(empty),
        "write_ms_filled_store": 1000 * statistics.median(filled),
        "filled_rows": n_rows, "shard_fill_rows_per_s": merged / fill_s,
        "merge_rows_per_s": merged / merge_s, "load_rows_per_s": n_rows / load_s,
        "bytes_per_row": size / n_rows, "open_check_ms": 1000 * open_s,
        "open_check_mb_per_s": size / 1e6 / open_s}
    return out


# ---------------------------------------------------------------------------------------------
# 3. Decoding workers


def decoding_workers(n_images: int, batch_size: int, threads: int) -> dict[str, Any]:
    """Decode throughput of ``iter_batches`` and a Grad-CAM-only evaluation, 0 vs 2 workers."""
    torch.set_num_threads(threads)
    bb = load_model("efficientnet_lite0", device="cpu")
    ds = load_images().split("eval")
    out: dict[str, Any] = {}
    for workers in (0, 2):
        decode = []
        for _ in range(2):
            start = time.perf_counter()
            n = sum(len(b) for b in iter_batches(ds.subset(4 * n_images), bb.preprocess,
                                                 batch_size, num_workers=workers))
            decode.append(n / (time.perf_counter() - start))
        with tempfile.TemporaryDirectory(prefix="scale-workers-") as tmp:
            settings = EvalSettings.from_parameters({"methods": ("gradcam",),
                                                     "n_images": n_images,
                                                     "batch_size": batch_size})
            start = time.perf_counter()
            run_evaluation(bb, load_images(), settings, tmp, progress=False,
                           num_workers=workers)
            wall = time.perf_counter() - start
        out[str(workers)] = {"decode_images_per_s": max(decode),
                             "gradcam_eval_images_per_s": n_images / wall}
    return out


# ---------------------------------------------------------------------------------------------
# 4. ImageNet


def imagenet_estimate(seconds_per_image: float, floor_ms_per_forward: float,
                      forwards_per_image: float, gpu_ms_per_forward: float,
                      cpu_images_per_s: float | None = None,
                      devices: Sequence[int] = (1, 2, 4, 8, 16),
                      n_images: int = IMAGENET_VAL, batch_size: int = 16,
                      merge_rows_per_s: float | None = None, rows_per_image: int = 12
                      ) -> dict[str, Any]:
    """Hours for ``n_images`` on this CPU and on 1..N GPUs, from measured costs.

    ``seconds_per_image``: one process's compute per image, measured with a floor of
    ``floor_ms_per_forward`` per image forward; ``cpu_images_per_s``: this machine's best
    throughput (default ``1 / seconds_per_image``). Assumptions: (a) the evaluation is bound by
    the black box's forwards and backwards, so its time scales with the floor -- on a GPU
    ``gpu_ms_per_forward``; (b) N devices share the batches evenly (batch r::N on rank r; the
    busiest rank has at most one batch more); (c) with N > 1 the shards' ``rows_per_image`` rows
    per image are merged at ``merge_rows_per_s`` at the end; startup and tables are ignored.
    """
    cpu_rate = cpu_images_per_s or 1 / seconds_per_image
    gpu_seconds_per_image = seconds_per_image * gpu_ms_per_forward / floor_ms_per_forward
    merge_h = (n_images * rows_per_image / merge_rows_per_s / 3600
               if merge_rows_per_s else 0.0)
    batches = -(-n_images // batch_size)
    hours = [-(-batches // n) * batch_size * gpu_seconds_per_image / 3600
             + (merge_h if n > 1 else 0.0) for n in devices]
    return {"n_images": n_images, "forwards_per_image": forwards_per_image,
            "cpu_seconds_per_image": seconds_per_image, "cpu_images_per_s": cpu_rate,
            "cpu_hours": n_images / cpu_rate / 3600,
            "cpu_floor_ms_per_forward": floor_ms_per_forward,
            "gpu_ms_per_forward": gpu_ms_per_forward,
            "gpu_seconds_per_image": gpu_seconds_per_image, "merge_hours": merge_h,
            "gpus": [{"devices": n, "hours": h, "speedup": hours[0] / h}
                     for n, h in zip(devices, hours)]}


# ---------------------------------------------------------------------------------------------
# Report


def render(results: dict[str, Any]) -> str:
    """The Markdown report of :func:`main`'s results (facts here, wording in
    ``paperlib/templates/bench_scale.md.j2``)."""
    pt, so, dw, est = (results["processes_vs_threads"], results["store_overhead"],
                       results["decoding_workers"], results["imagenet"])
    diff = pt["rows_2x1_vs_1x2"]
    per = diff["max_abs_continuous_per_method"]
    decode_ms = 1000 / dw["0"]["decode_images_per_s"]
    e0, e2 = dw["0"]["gradcam_eval_images_per_s"], dw["2"]["gradcam_eval_images_per_s"]
    workers = {"same": abs(e2 / e0 - 1) < 0.10, "faster": "0" if e0 > e2 else "2",
               "percent": abs(e2 / e0 - 1) * 100, "decode_ms": decode_ms,
               "share": decode_ms / 1000 / est["cpu_seconds_per_image"]}
    return render_template(
        "bench_scale.md.j2", f=results["facts"], pt=pt, so=so, syn=so["synthetic"], dw=dw,
        est=est, diff=diff, workers=workers,
        labels={"1x2": "1 process x 2 threads", "2x1": "2 processes x 1 thread (torchrun, gloo)",
                "1x1": "1 process x 1 thread"},
        per_method=[(m, per[m], diff["indicator_flips_per_method"][m])
                    for m in sorted(per, key=lambda k: -per[k])],
        medians={k: statistics.median(so[k]) for k in ("write_ms", "recheck_ms", "compute_s")})


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    p.add_argument("--n-images", type=int, default=8)
    p.add_argument("--batch-size", type=int, default=2)
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--methods", nargs="+", default=None,
                   help="default: every registered method")
    p.add_argument("--curve-steps", type=int, default=None)
    p.add_argument("--filled-images", type=int, default=4000,
                   help="images in the synthetic filled store")
    p.add_argument("--gpu-ms-per-forward", type=float, default=0.2,
                   help="assumed GPU time of one image forward (ms) for the estimate")
    p.add_argument("--out", type=Path, default=BENCH)
    args = p.parse_args(argv)
    methods = tuple(args.methods or default_methods())
    settings = EvalSettings.from_parameters({"methods": methods,
                                             "curve_steps": args.curve_steps})
    cli = ["--n-images", str(args.n_images), "--batch-size", str(args.batch_size),
           "--model", "efficientnet_lite0", "--methods", *methods,
           "--curve-steps", str(settings.metrics.curve_steps)]
    bb = load_model("efficientnet_lite0", device="cpu")
    facts = harness.machine_facts(torch.device("cpu"), 2, args.batch_size, bb)
    facts.update(n_images=args.n_images, methods=list(methods), repeats=args.repeats,
                 curve_steps=settings.metrics.curve_steps, cpus_usable=harness.usable_cpus())
    print("1. processes vs threads ...", flush=True)
    pt = processes_vs_threads(cli, args.repeats)
    print(f"   ratio 2x1 / 1x2 = {pt['ratio_2x1_over_1x2']:.3f}", flush=True)
    print("2. store overhead ...", flush=True)
    so = store_overhead(args.n_images, args.batch_size, methods, 1, args.filled_images)
    print(f"   {so['overhead_percent']:.4f} % of the compute", flush=True)
    print("3. decoding workers ...", flush=True)
    dw = decoding_workers(args.n_images, args.batch_size, 1)
    best = max(pt["median"], key=lambda n: pt["median"][n]["images_per_s"])
    one = pt["median"][best]
    est = imagenet_estimate(one["seconds_per_image_one_rank"], one["floor_ms_per_forward"],
                            pt["metric_forwards_per_image"] + pt["extra_forwards_per_image"] + 1,
                            args.gpu_ms_per_forward,
                            cpu_images_per_s=max(m["images_per_s"]
                                                 for m in pt["median"].values()),
                            merge_rows_per_s=so["synthetic"]["merge_rows_per_s"],
                            rows_per_image=len(methods))
    est["base"] = f"{best}: processes x threads, the fastest configuration"
    facts["load_average_at_end"] = harness.loadavg()
    results = {"facts": facts, "processes_vs_threads": pt, "store_overhead": so,
               "decoding_workers": dw, "imagenet": est}
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "scale_cpu.json").write_text(json.dumps(results, indent=1, default=str) + "\n")
    report = render(results)
    (args.out / "SCALE_cpu.md").write_text(report)
    print(report)
    return 0


if __name__ == "__main__":
    sys.exit(main())

