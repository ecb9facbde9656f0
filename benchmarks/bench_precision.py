#!/usr/bin/env python
"""Speed of the metrics' fast forwards (paperlib.forward) against fp32 eager, in the same run.

Two rows per mode: the **metric forwards** alone (``paperlib.metrics.score_inputs`` over a set of
masked copies of the batch in chunks of ``chunk_size``, as ``evaluate_batch`` sends them) and a
**full** ``paperlib.metrics.evaluate_batch`` of the batch (masks, masked copies, every forward,
the rows' arrays) with the maps of ``--methods``. Modes: fp32 eager (the reference), bf16
autocast, fp32 + ``torch.compile``, bf16 + compile; on CUDA also tf32 and fp16 (each eager and
compiled). ``--dynamic`` adds the compiled fp32 forwards with ``dynamic=True`` (no padding), the
alternative to padding the last chunk.

Every configuration runs once to warm up (a compiled mode compiles there; that time is
recorded), then the configurations are interleaved repetition by repetition
(``benchmarks/harness.py``), and each row's median is compared with the fp32 eager row of the same
kind. The outputs' largest per-image |delta O| against fp32 eager is recorded beside the speed.

    .venv/bin/python benchmarks/bench_precision.py [--device auto|cpu|cuda] [--batch-size 16]
        [--methods gradcam attention-fixed] [--repeats 5] [--threads N] [--dynamic]
        [--out benchmarks/]

Writes ``<out>/precision_<device>.json`` and ``<out>/PRECISION_<device>.md``.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

if str(Path(__file__).resolve().parent) not in sys.path:  # the sibling modules, run as a script
    sys.path.insert(0, str(Path(__file__).resolve().parent))

import harness  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402

import paperlib  # noqa: E402
from paperlib import forward, masking, metrics, precision  # noqa: E402
from paperlib.perf import CHUNK_SIZE  # noqa: E402

#: The modes timed on every device, then the CUDA-only ones.
MODES = [precision.Mode("fp32"), precision.Mode("bf16"), precision.Mode("fp32", True),
         precision.Mode("bf16", True)]
CUDA_MODES = [precision.Mode("tf32"), precision.Mode("fp16"), precision.Mode("tf32", True),
              precision.Mode("fp16", True)]
FORWARDS, EVALUATE, PARTIAL = "forwards", "evaluate", "forwards-partial"


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """The command line (see benchmarks/README.md)."""
    ap = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    ap.add_argument("--batch-size", type=int, default=16,
                    help="images of the evaluate_batch row (default 16, the evaluation's)")
    ap.add_argument("--methods", nargs="*", default=["gradcam", "attention-fixed"],
                    help="maps scored by the evaluate_batch row")
    ap.add_argument("--copies", type=int, default=4 * CHUNK_SIZE,
                    help="masked copies of the forwards rows (default 4 full chunks, as most of "
                         "evaluate_batch's chunks are)")
    ap.add_argument("--partial", type=int, default=4,
                    help="the padding diagnostic: fp32 eager and compiled forwards of "
                         "copies + PARTIAL masked copies, the last chunk padded to the chunk "
                         "size when compiled (0: no such rows)")
    ap.add_argument("--curve-steps", type=int, default=metrics.MetricConfig().curve_steps)
    ap.add_argument("--repeats", type=int, default=10)
    ap.add_argument("--threads", type=int, default=None,
                    help="torch.set_num_threads (default: the CPUs this process may use)")
    ap.add_argument("--dynamic", action="store_true",
                    help="also time compiled fp32 forwards with a symbolic batch size (no "
                         "padding) in the padding diagnostic; compiling it takes minutes on a CPU")
    ap.add_argument("--malloc", default="keep", choices=["keep", "system"])
    ap.add_argument("--out", type=Path, default=harness.REPO / "benchmarks")
    ap.add_argument("--model", default="efficientnet_lite0", choices=paperlib.MODEL_NAMES)
    args = ap.parse_args(argv)
    if args.batch_size < 1 or args.repeats < 1 or args.copies < 1 or args.partial < 0:
        ap.error("--batch-size, --copies and --repeats must be >= 1, --partial >= 0")
    return args


def modes_for(device: torch.device) -> list[precision.Mode]:
    """The modes timed on ``device``: bf16 where the device has it, the CUDA ones on CUDA."""
    out = [m for m in MODES if m.precision != "bf16" or device.type == "cpu"
           or torch.cuda.is_bf16_supported()]
    return out + (CUDA_MODES if device.type == "cuda" else [])


def masked_copies(bb: paperlib.BlackBox, x: torch.Tensor, maps: torch.Tensor,
                  n: int) -> torch.Tensor:
    """``n`` masked copies of the batch like the metrics' (top-k kept, deleted, inserted onto
    the blurred image), cycling over images and fractions."""
    H, W = x.shape[-2:]
    ranks = masking.pixel_ranks(maps)
    fill, blur = masking.fill_images(x, "black", bb.mean), masking.blurred(x)
    imgs, masks, fills = [], [], []
    for i in range(n):
        b, k = i % x.shape[0], (5, 10, 20, 25, 50, 75)[i % 6]
        keep = masking.keep_top(ranks[b: b + 1], masking.n_pixels(k, H * W), (H, W))[0]
        kind = i % 3
        imgs.append(x[b])
        masks.append(1 - keep if kind == 1 else keep)
        fills.append(blur[b] if kind == 2 else fill[b])
    return masking.masked_inputs(torch.stack(imgs), torch.stack(masks), torch.stack(fills))


def build(bb: paperlib.BlackBox, x: torch.Tensor, args: argparse.Namespace,
          device: torch.device, outputs: dict[str, Any]) -> list[harness.Config]:
    """The rows: per mode the forwards and the evaluate_batch calls (and the padding diagnostic
    and the dynamic-shape row when asked); ``outputs`` gets each call's last result (to compare
    the numbers with fp32 eager)."""
    ex = paperlib.explain(bb, x, args.methods)
    targets = ex.targets
    n_all = args.copies + args.partial
    copies = masked_copies(bb, x, ex.maps[args.methods[0]], n_all)
    copy_targets = targets[torch.arange(n_all, device=device) % x.shape[0]]
    B = x.shape[0]
    rows: list[harness.Config] = []

    def forwards_row(kind: str, label: str, mode: precision.Mode, n: int,
                     dynamic: bool = False) -> harness.Config:
        cfg = metrics.MetricConfig(precision=mode.precision, compile=mode.compile)
        name = mode.name + (" dynamic=True" if dynamic else "")
        key = f"{kind}:{name}"

        def forwards() -> torch.Tensor:
            probs = []
            with torch.no_grad():
                for s in range(0, n, cfg.chunk_size):
                    sl = slice(s, min(s + cfg.chunk_size, n))
                    if dynamic:
                        p = forward.fast_probabilities(bb.model, copies[sl], cfg.precision,
                                                       True, cfg.chunk_size, dynamic=True)
                        probs.append(p.gather(1, copy_targets[sl].view(-1, 1)).view(-1))
                    else:
                        probs.append(metrics.score_inputs(bb, copies[sl], copy_targets[sl],
                                                          cfg)[0])
            outputs[key] = out = torch.cat(probs)
            return out

        return harness.Config(key, f"{label}, {name}", kind, forwards, n, args.repeats, 1.0,
                              reference=f"{kind}:fp32", ref_label="fp32 eager")

    for mode in modes_for(device):
        cfg = metrics.MetricConfig(precision=mode.precision, compile=mode.compile,
                                   curve_steps=args.curve_steps)
        rows.append(forwards_row(FORWARDS, "metric forwards", mode, args.copies))

        def evaluate(cfg: metrics.MetricConfig = cfg,
                     key: str = f"{EVALUATE}:{mode.name}") -> metrics.BatchScores:
            outputs[key] = out = metrics.evaluate_batch(bb, x, ex.maps, targets, cfg,
                                                        clean_logits=ex.logits)
            return out

        per_image = len(args.methods) * (1 + len(cfg.fractions) + 2 * max(cfg.curve_steps - 1, 0))
        rows.append(harness.Config(f"{EVALUATE}:{mode.name}", f"evaluate_batch, {mode.name}",
                                   EVALUATE, evaluate, B, args.repeats, per_image + 2.0,
                                   reference=f"{EVALUATE}:fp32", ref_label="fp32 eager"))
    if args.partial:  # the padding's cost: a last chunk of `partial` copies padded to chunk_size
        label = f"metric forwards, {n_all} copies (last chunk {args.partial})"
        rows.append(forwards_row(PARTIAL, label, precision.Mode("fp32"), n_all))
        rows.append(forwards_row(PARTIAL, label, precision.Mode("fp32", True), n_all))
        if args.dynamic:
            rows.append(forwards_row(PARTIAL, label, precision.Mode("fp32", True), n_all,
                                     dynamic=True))
    return rows


def max_abs_delta(a: Any, b: Any) -> float:
    """Largest |a - b| over the probabilities of two outputs (tensors or BatchScores)."""
    if isinstance(a, metrics.BatchScores):
        cols = [c for c in next(iter(a.per_method.values())) if c.startswith("O_")
                or c in ("deletion", "insertion")]
        return max(float(np.abs(a.per_method[m][c] - b.per_method[m][c]).max())
                   for m in a.per_method for c in cols)
    return float((a - b).abs().max())


def analyse(rows: list[harness.Config], first_call: dict[str, float],
            outputs: dict[str, Any]) -> list[dict[str, Any]]:
    """One JSON row per configuration: times, ratio to its fp32 eager row, first-call seconds,
    the largest |delta O| against fp32 eager."""
    by = {r.key: r for r in rows}
    out = []
    for r in rows:
        ref = by[r.reference] if r.reference else r
        med, ref_med = r.ms_per_image("median"), ref.ms_per_image("median")
        out.append({"key": r.key, "label": r.label, "kind": r.group, "images": r.images,
                    "times_s": r.times, "ms_per_image_median": med,
                    "ms_per_image_min": r.ms_per_image("min"),
                    "speedup_vs_fp32_eager": ref_med / med,
                    "speedup_vs_fp32_eager_min": ref.ms_per_image("min") / r.ms_per_image("min"),
                    "first_call_s": first_call[r.key],
                    "max_abs_delta_O_vs_fp32": max_abs_delta(outputs[r.key],
                                                             outputs[ref.key])})
    return out


def report_md(facts: dict[str, Any], rows: list[dict[str, Any]], args: argparse.Namespace,
              notes: list[str]) -> str:
    """The Markdown report."""
    lines = [f"# Fast metric forwards on {facts['device']}: speed against fp32 eager", "",
             f"`benchmarks/bench_precision.py`, {facts['date_utc']}: "
             f"{facts.get('gpu') or facts['cpu_model']}, torch {facts['torch']}, "
             f"{facts['torch_threads']} threads, {facts['model']}, batch {facts['batch_size']}; "
             f"load average {facts['load_average_at_start']} at start, "
             f"{facts['load_average_at_end']} at end; malloc {facts['malloc']}.", "",
             f"**metric forwards**: `paperlib.metrics.score_inputs` over {args.copies} masked "
             f"copies in chunks of {CHUNK_SIZE} (ms per masked copy; the padding diagnostic: "
             f"{args.copies + args.partial} copies). **evaluate_batch**: the "
             f"whole metric evaluation of {facts['batch_size']} images with the maps of "
             f"{', '.join(args.methods)}, curve steps {args.curve_steps} (ms per image). "
             f"Medians over {args.repeats} interleaved repetitions after one warm-up call "
             "(`first call s`: where a compiled mode compiles); `x fp32` = fp32 eager median / "
             "this median, same kind of row. `max |dO|`: largest change of a probability (the "
             "rows' O and curve points) against fp32 eager on the same inputs.", "",
             "| row | ms median | ms min | x fp32 (median) | x fp32 (min) | first call s "
             "| max abs dO |",
             "|---|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        lines.append(f"| {r['label']} | {r['ms_per_image_median']:.2f} | "
                     f"{r['ms_per_image_min']:.2f} | {r['speedup_vs_fp32_eager']:.2f} | "
                     f"{r['speedup_vs_fp32_eager_min']:.2f} | {r['first_call_s']:.1f} | "
                     f"{r['max_abs_delta_O_vs_fp32']:.2e} |")
    lines += [""] + [f"- {n}" for n in notes] + [""]
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    s = harness.setup(args.threads, args.malloc, args.device, args.model, args.batch_size)
    threads, device, bb, facts = s.threads, s.device, s.black_box, s.facts
    x = s.batch.images
    print(f"bench_precision: {facts.get('gpu') or facts['cpu_model']}, torch {facts['torch']}, "
          f"{threads} threads, batch {x.shape[0]}, load average {facts['load_average_at_start']}")
    outputs: dict[str, Any] = {}
    rows = build(bb, x, args, device, outputs)
    first_call: dict[str, float] = {}
    t0 = time.perf_counter()
    for r in rows:  # first calls (compilation), timed; run_all's own warm-up then costs little
        start = time.perf_counter()
        harness.time_once(r, device, record=False)
        first_call[r.key] = time.perf_counter() - start
        print(f"  first call {r.label:<48s} {first_call[r.key]:8.1f} s")
    harness.run_all(rows, device)
    total = time.perf_counter() - t0
    facts["wall_seconds"] = total
    facts["load_average_at_end"] = harness.loadavg()
    result = analyse(rows, first_call, outputs)
    notes = [f"Benchmark wall time {total:.0f} s.",
             "The clean forward (Y) and the explanations are fp32 in every mode; only the "
             "masked copies' forwards change.",
             "Compiled modes pad the last chunk of masked copies to the chunk size, so one "
             "graph serves every call. The `forwards-partial` rows show what that costs when "
             f"the last chunk holds {args.partial} copies (evaluate_batch's chunks are nearly "
             "all full: 36 copies per image and method, so only the curve ends and a batch "
             "whose copies are no multiple of the chunk size pad); `--dynamic` adds the "
             "symbolic-batch graph there.",
             "`first call s` depends on inductor's on-disk cache (`TORCHINDUCTOR_CACHE_DIR`, "
             "default under /tmp): with a cold cache, compiling Lite0 took ~25 s (fp32) and "
             "~60 s (bf16) here; with a warm one, seconds."]
    if device.type == "cpu":
        notes.append("tf32 and fp16 are CUDA-only (an error on a CPU): not timed here; the rows "
                     "exist on CUDA (`--device cuda`).")
    args.out.mkdir(parents=True, exist_ok=True)
    tag = device.type
    json_path, md_path = args.out / f"precision_{tag}.json", args.out / f"PRECISION_{tag}.md"
    settings = {"batch_size": x.shape[0], "methods": args.methods, "copies": args.copies,
                "partial": args.partial,
                "curve_steps": args.curve_steps, "repeats": args.repeats,
                "chunk_size": CHUNK_SIZE, "dynamic": args.dynamic, "malloc": args.malloc,
                "modes": [r["label"] for r in result]}
    json_path.write_text(json.dumps({"facts": facts, "settings": settings, "rows": result,
                                     "notes": notes}, indent=1, default=str) + "\n")
    text = report_md(facts, result, args, notes)
    md_path.write_text(text)
    print()
    print(text)
    print(f"wrote {json_path} and {md_path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
