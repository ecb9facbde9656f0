#!/usr/bin/env python
"""Speed benchmark of paperlib's CAM pipeline against a plain forward and two peer libraries.

Every number is a ratio to a *floor* measured in the same run on the same batch: one plain
``torch.no_grad()`` forward of the batch through the black box (``bb.model``). Absolute times
depend on the machine; the ratios say what an explanation costs relative to just classifying.

Method: every configuration runs once to warm up, then the configurations are interleaved
(``for r in range(R): for each config: time it once``) so that drifts in machine load hit all of
them alike; the table gives the median and the minimum over the repetitions, in milliseconds per
image. ``torch.set_num_threads`` is fixed and reported; on CUDA every timing is bracketed by
``torch.cuda.synchronize()``.

    .venv/bin/python benchmarks/bench_cam.py [--device auto|cpu|cuda] [--batch-size 8]
        [--repeats 15] [--slow-repeats 3] [--threads N] [--out benchmarks/]
        [--full-scorecam auto|yes|no] [--malloc keep|system]

Writes ``<out>/results_<device>.json`` and ``<out>/REPORT_<device>.md`` and prints the table.
This file wires the benchmark's parts: ``harness.py`` (machine facts, allocator, timing loop),
``configs.py`` (the rows and goals) and ``report.py`` (ratios, verdicts, report, JSON).
See benchmarks/README.md for what each row means.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Sequence
from pathlib import Path

if str(Path(__file__).resolve().parent) not in sys.path:  # the sibling modules, run as a script
    sys.path.insert(0, str(Path(__file__).resolve().parent))

import configs  # noqa: E402
import harness  # noqa: E402
import report  # noqa: E402
import torch  # noqa: E402

import paperlib  # noqa: E402


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """The command line (see benchmarks/README.md for the options)."""
    defaults = configs.Settings()
    ap = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--repeats", type=int, default=defaults.repeats,
                    help=f"timed repetitions (default {defaults.repeats})")
    ap.add_argument("--slow-repeats", type=int, default=defaults.slow_repeats,
                    help="repetitions of Score-CAM and attention-per-image "
                         f"(default {defaults.slow_repeats})")
    ap.add_argument("--threads", type=int, default=None,
                    help="torch.set_num_threads (default: the CPUs this process may use)")
    ap.add_argument("--out", type=Path, default=harness.REPO / "benchmarks")
    ap.add_argument("--model", default="efficientnet_lite0", choices=paperlib.MODEL_NAMES)
    ap.add_argument("--smooth-samples", type=int, default=defaults.smooth_samples)
    ap.add_argument("--scorecam-channels", type=int, default=defaults.scorecam_channels)
    ap.add_argument("--full-scorecam", default=defaults.full_scorecam,
                    choices=["auto", "yes", "no"],
                    help="also time Score-CAM with every channel (paperlib and pytorch-grad-cam) "
                         "on 1 image; auto: only on CUDA")
    ap.add_argument("--full-scorecam-repeats", type=int, default=defaults.full_scorecam_repeats)
    ap.add_argument("--malloc", default="keep", choices=["keep", "system"],
                    help="keep: glibc keeps freed memory, so no row pays page faults that depend "
                         "on the rows before it (default); system: glibc defaults")
    args = ap.parse_args(argv)
    args.smooth_sigma = defaults.smooth_sigma
    if args.batch_size < 1 or args.repeats < 1 or args.slow_repeats < 1:
        ap.error("--batch-size, --repeats and --slow-repeats must be >= 1")
    return args


def settings_of(args: argparse.Namespace) -> configs.Settings:
    """The options that shape the rows."""
    return configs.Settings(repeats=args.repeats, slow_repeats=args.slow_repeats,
                            smooth_samples=args.smooth_samples, smooth_sigma=args.smooth_sigma,
                            scorecam_channels=args.scorecam_channels,
                            full_scorecam=args.full_scorecam,
                            full_scorecam_repeats=args.full_scorecam_repeats)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    s = harness.setup(args.threads, args.malloc, args.device, args.model, args.batch_size)
    threads, device, bb, facts = s.threads, s.device, s.black_box, s.facts
    x = s.batch.images
    with torch.no_grad():
        targets = bb.model(x).argmax(dim=1)  # the predicted classes, for every library
    print(f"bench_cam: {facts.get('gpu') or facts['cpu_model']}, torch {facts['torch']}, "
          f"{threads} threads, batch {x.shape[0]}, load average {facts['load_average_at_start']}, "
          f"malloc {args.malloc}")

    notes: list[str] = []
    settings = settings_of(args)
    rows_to_time = configs.build_configs(settings, bb, x, targets, device, notes)
    t0 = time.perf_counter()
    harness.run_all(rows_to_time, device)
    total = time.perf_counter() - t0

    rows, reasons = report.analyse(rows_to_time, args.smooth_samples)
    notes.append(f"Benchmark wall time {total:.0f} s; load average at the end {harness.loadavg()}.")
    facts["wall_seconds"] = total
    facts["load_average_at_end"] = harness.loadavg()

    args.out.mkdir(parents=True, exist_ok=True)
    tag = device.type
    json_path = args.out / f"results_{tag}.json"
    md_path = args.out / f"REPORT_{tag}.md"
    report.write_json(json_path, facts, {
        "repeats": args.repeats, "slow_repeats": args.slow_repeats,
        "smooth_samples": args.smooth_samples, "smooth_sigma": args.smooth_sigma,
        "scorecam_channels": args.scorecam_channels, "full_scorecam": args.full_scorecam,
        "full_scorecam_repeats": args.full_scorecam_repeats, "malloc": args.malloc,
        "targets": [int(t) for t in targets]}, configs.GOALS, rows, reasons, notes)
    text = report.write_report(md_path, facts, rows, reasons, notes, args.repeats,
                               args.slow_repeats)
    print()
    print(text)
    print(f"wrote {json_path} and {md_path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
