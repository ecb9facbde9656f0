#!/usr/bin/env python
"""Speed of the kit's ROAD (paperlib.road, paperlib.imputation) against a plain-forward floor and
pytorch-grad-cam's ROADCombined, on the same real images and Grad-CAM-family maps of Lite0.

Rows (seconds per (method, image), i.e. per 2 x 9 = 18 imputed copies at percentiles 10..90):

* **kit**: :meth:`paperlib.road.Road.prepare` (every copy of every method imputed, batched) plus
  the copies' forwards (``paperlib.metrics.score_inputs`` in chunks of ``chunk_size``);
  also the imputation alone, with its CG iterations;
* **floor**: the same number of plain ``torch.no_grad()`` forwards of the (unimputed) images, in
  the same chunks: what scoring 18 copies costs without any imputation;
* **peer**: pytorch-grad-cam's ``ROADCombined`` (scipy ``spsolve`` per copy) on
  ``--peer-images`` images and ``--peer-methods`` methods (it is slow), with the same black box
  (which normalises inside, so both impute the [0, 1] image) and softmax targets.

The kit and floor rows run once to warm up, then ``--repeats`` times interleaved; medians are
reported. Goals: kit / floor <= 1.3, peer / kit >= 10.

    .venv/bin/python benchmarks/bench_road.py [--images 4] [--threads 1] [--repeats 3]
        [--peer-images 1] [--peer-methods gradcam] [--device auto|cpu|cuda] [--json PATH]

Prints a JSON summary and writes it to ``<out>/road_<device>.json`` with the report
``<out>/ROAD_<device>.md`` (``--out`` default: this folder; ``--json``: one more copy).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

import paperlib
from paperlib.cam import GRADIENT_METHODS
from paperlib.imputation import linear_impute
from paperlib.masking import masked_inputs, pixel_ranks
from paperlib.metrics import MetricConfig, Road, ScoringContext, score_inputs
from paperlib.perf import CHUNK_SIZE, clock, configure_malloc
from paperlib.report import render as render_template
from paperlib.road import road_removed

PERCENTILES = tuple(range(10, 100, 10))


_Config = MetricConfig      # ROAD is one of its read-outs (off unless road_percentiles)


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--images", type=int, default=4)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--peer-images", type=int, default=1)
    ap.add_argument("--peer-methods", nargs="*", default=["gradcam"])
    ap.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    ap.add_argument("--chunk-size", type=int, default=CHUNK_SIZE)
    ap.add_argument("--malloc", default="keep", choices=["keep", "system"])
    ap.add_argument("--out", type=Path, default=Path(__file__).resolve().parent,
                    help="folder for road_<device>.json and ROAD_<device>.md "
                         "(default: benchmarks/)")
    ap.add_argument("--json", type=Path, default=None, help="also write the JSON here")
    return ap.parse_args(argv)


def _context(bb, images, maps, targets, cfg) -> ScoringContext:
    return ScoringContext(images=images, fill=torch.zeros_like(images), blur=images,
                          targets=targets, Y=np.zeros(len(images)), maps=maps,
                          ranks={m: pixel_ranks(mp) for m, mp in maps.items()}, config=cfg,
                          black_box_mean=bb.mean)


def kit_road(bb, images, maps, targets, cfg) -> dict[str, Any]:
    """Road.prepare + every copy's forward; returns seconds and per-method road_combined."""
    road = Road()
    start = clock(images.device)
    with torch.no_grad():
        ctx = _context(bb, images, maps, targets, cfg)
        ctx.prepared[road.name] = road.prepare(ctx)
        t_impute = clock(images.device) - start
        copies = road.copies(cfg)
        jobs = [(m, b, c) for m in maps for b in range(len(images)) for c in copies]
        probs = []
        for s in range(0, len(jobs), cfg.chunk_size):
            chunk = jobs[s: s + cfg.chunk_size]
            ms, fs = zip(*(road.mask(ctx, m, b, c) for m, b, c in chunk))
            bs = torch.tensor([b for _, b, _ in chunk], device=images.device)
            x = masked_inputs(images[bs], torch.stack(ms), torch.stack(fs))
            probs.append(score_inputs(bb, x, targets[bs], cfg)[0])
        p = torch.cat(probs).cpu().numpy().astype(np.float64)
    seconds = clock(images.device) - start
    idx = {j: i for i, j in enumerate(jobs)}
    combined = {}
    for m in maps:
        scored = {c: (np.array([p[idx[(m, b, c)]] for b in range(len(images))]),
                      np.zeros(len(images), dtype=bool)) for c in copies}
        combined[m] = road.score(ctx, m, scored, None)["road_combined"].tolist()
    return {"seconds": seconds, "impute_seconds": t_impute, "forwards": len(jobs),
            "combined": combined}


def floor(bb, images, n_forwards: int, chunk_size: int) -> float:
    """The same number of plain no_grad forwards of the images, in the same chunks."""
    reps = -(-n_forwards // len(images))
    x = images.repeat(reps, 1, 1, 1)[:n_forwards]
    start = clock(images.device)
    with torch.no_grad():
        for s in range(0, n_forwards, chunk_size):
            bb.model(x[s: s + chunk_size])
    return clock(images.device) - start


def peer_road(bb, images, maps, targets, methods, n_images) -> dict[str, Any]:
    from pytorch_grad_cam.metrics.road import ROADCombined
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputSoftmaxTarget

    metric = ROADCombined(percentiles=list(PERCENTILES))
    x = images[:n_images]
    tg = [ClassifierOutputSoftmaxTarget(int(t)) for t in targets[:n_images]]
    out, start = {}, clock(images.device)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        for m in methods:
            cams = maps[m][:n_images].cpu().numpy().astype(np.float32)
            out[m] = np.asarray(metric(x, cams, tg, bb.model)).tolist()
    return {"seconds": clock(images.device) - start, "units": len(methods) * n_images,
            "combined": out}


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    load_start = os.getloadavg()[0]
    malloc = configure_malloc(args.malloc)
    torch.set_num_threads(args.threads)
    device = ("cuda" if torch.cuda.is_available() else "cpu") if args.device == "auto" \
        else args.device
    bb = paperlib.load_model("efficientnet_lite0", device=device)
    ds = paperlib.load_images()
    batch = next(iter(paperlib.iter_batches(ds.subset(args.images), bb.preprocess,
                                            batch_size=args.images)))
    images = batch.images.to(bb.device)
    methods = list(GRADIENT_METHODS)
    ex = paperlib.explain(bb, images, methods)
    maps = {m: ex.maps[m].to(bb.device) for m in methods}
    targets = torch.as_tensor(ex.targets).to(bb.device)
    cfg = _Config(road_percentiles=PERCENTILES, chunk_size=args.chunk_size)
    units = len(methods) * len(images)

    # the imputation alone, with its iterations (one image's 18 masks, then all at once)
    ranks = pixel_ranks(maps[methods[0]][:1])
    size = (int(images.shape[-2]), int(images.shape[-1]))
    removed = torch.cat([road_removed(ranks, o, p, size)
                         for o in ("morf", "lerf") for p in PERCENTILES])
    linear_impute(images[:1].expand(len(removed), -1, -1, -1), removed)      # warm-up
    t0 = clock(images.device)
    _, info = linear_impute(images[:1].expand(len(removed), -1, -1, -1), removed)
    one_image = {"seconds": clock(images.device) - t0, "iterations": info.iterations,
                 "converged": info.converged, "copies": len(removed)}

    floor(bb, images, units * 2 * len(PERCENTILES), args.chunk_size)
    kit_t: list[float] = []
    kit_imp: list[float] = []
    floor_t: list[float] = []
    kit = kit_road(bb, images, maps, targets, cfg)                 # warm-up
    for _ in range(args.repeats):
        kit = kit_road(bb, images, maps, targets, cfg)
        kit_t.append(kit["seconds"])
        kit_imp.append(kit["impute_seconds"])
        floor_t.append(floor(bb, images, kit["forwards"], args.chunk_size))
    kit_s = statistics.median(kit_t) / units
    floor_s = statistics.median(floor_t) / units
    peer = peer_road(bb, images.cpu() if device == "cpu" else images, maps, targets,
                     args.peer_methods, min(args.peer_images, len(images)))
    peer_s = peer["seconds"] / peer["units"]
    out = {
        "machine": {"platform": platform.platform(), "python": sys.version.split()[0],
                    "torch": torch.__version__, "device": str(bb.device),
                    "threads": torch.get_num_threads(), "malloc": malloc,
                    "load_average_at_start": load_start,
                    "load_average_at_end": os.getloadavg()[0]},
        "images": len(images), "methods": methods, "percentiles": list(PERCENTILES),
        "repeats": args.repeats, "peer_units": peer["units"],
        "copies_per_method_image": 2 * len(PERCENTILES),
        "imputation_one_image_18_masks": one_image,
        "kit_seconds_per_method_image": kit_s,
        "kit_impute_seconds_per_method_image": statistics.median(kit_imp) / units,
        "floor_seconds_per_method_image": floor_s,
        "peer_seconds_per_method_image": peer_s,
        "kit_over_floor": kit_s / floor_s, "kit_over_floor_goal": 1.3,
        "peer_over_kit": peer_s / kit_s, "peer_over_kit_goal": 10.0,
        "road_combined": {"kit (noise 0.01 in [0, 1] units)":
                          {m: kit["combined"][m][:peer["units"] // len(args.peer_methods)]
                           for m in args.peer_methods},
                          "peer (its own noise)": peer["combined"]},
    }
    text = json.dumps(out, indent=2)
    print(text)
    if args.json:
        args.json.write_text(text + "\n")
    args.out.mkdir(parents=True, exist_ok=True)
    kind = bb.device.type
    (args.out / f"road_{kind}.json").write_text(text + "\n")
    (args.out / f"ROAD_{kind}.md").write_text(report(out))
    return out


def report(results: dict[str, Any]) -> str:
    """``ROAD_<device>.md`` from the JSON (template ``paperlib/templates/bench_road.md.j2``)."""
    return render_template("bench_road.md.j2", m=results["machine"], r=results)


if __name__ == "__main__":
    main()
