#!/usr/bin/env python
"""The one-shot GPU check: everything the kit claims about CUDA, in one script of < 8 minutes.

For a session that is lent a GPU for a few minutes (run it once, commit what it writes):

    .venv/bin/python benchmarks/gpu_check.py                # on the GPU machine
    .venv/bin/python benchmarks/gpu_check.py --dry-run      # anywhere: the same steps, tiny, on CPU

Steps (each in its own process with its own time limit, so that one hang or failure costs only
its own minutes; the report says which passed):

1. ``agreement``: every registered method's maps and every read-out's per-image numbers on
   ``--images`` images (default 32), computed on CUDA and on the CPU through the same
   :func:`paperlib.run_evaluation`; the largest difference per method (maps) and per column
   family (scores) against stated tolerances (:data:`TOLERANCES`). Top-k masks are ranks of the
   map, so a map difference near a tie may flip pixels: the scores are compared as the table's
   means (Average Drop, % Increase, Average Gain per method), not per image.
2. ``tests``: the CUDA tests of the suite (those skipped without a device).
3. ``bench``: ``bench_cam.py --device cuda`` (the CAM rows against the floor and the peers;
   writes ``results_cuda.json`` / ``REPORT_cuda.md``) and ``bench_precision.py --device cuda``
   (fp32 / tf32 / fp16 / bf16, with and without ``torch.compile``).
4. ``torchrun``: a one-GPU ``torchrun`` evaluation (NCCL) whose Table 3 equals the same
   evaluation run in one process.
5. ``estimate``: the ImageNet estimate of ``benchmarks/scale_cpu.json`` recomputed with the
   **measured** CUDA floor (ms per image forward, ``results_cuda.json``) instead of the assumed
   one, into ``scale_estimate_cuda.json``; once committed, the README's cost block says
   "measured".

Writes ``<out>/GPU_CHECK_<device>.md`` (and ``gpu_check_<device>.json``); exit status 1 when a step
failed. ``--dry-run`` runs every step on the CPU with 2 images, 3 methods and 1 repetition (the
tests use it); its report is ``GPU_CHECK_dry-run.md`` and it never touches the committed CUDA files.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent

#: Largest differences accepted between CUDA and CPU (fp32 both; cuDNN sums in another order):
#: maps are in [0, 1]; the table's means are percentages.
TOLERANCES = {"map": 1e-3, "table_mean": 0.5}
#: Seconds each step may take on the GPU machine (8 minutes in all, with the start).
LIMITS = {"agreement": 150, "tests": 60, "bench": 150, "torchrun": 60, "estimate": 20}
DRY_METHODS = ("gradcam", "attention-fixed", "fakecam")


def _python() -> str:
    return sys.executable


def _run(argv: Sequence[str], limit: float, env: dict[str, str] | None = None) -> dict:
    """Run one step's command; its status, seconds and the tail of its output."""
    start = time.perf_counter()
    try:
        done = subprocess.run(list(argv), cwd=REPO, capture_output=True, text=True,
                              timeout=limit, env={**os.environ, **(env or {})})
        status = "passed" if done.returncode == 0 else f"failed (exit {done.returncode})"
        tail = (done.stdout + done.stderr)[-3000:]
    except subprocess.TimeoutExpired as exc:
        status = f"timed out after {limit:.0f} s"
        out = exc.stdout or b""
        tail = (out.decode() if isinstance(out, bytes) else out)[-3000:]
    return {"status": status, "seconds": round(time.perf_counter() - start, 1), "tail": tail}


# ---------------------------------------------------------------------------------------------
# 1. agreement (run in a child process: python gpu_check.py --agreement-step)


def agreement(device: str, n_images: int, methods: Sequence[str] | None, out: Path) -> dict:
    """Maps and the table's means on ``device`` against the CPU (module docstring, step 1)."""
    import torch

    import paperlib
    from paperlib import tables
    from paperlib.cam import default_methods, explain
    from paperlib.evaluation import EvalSettings, run_evaluation

    methods = tuple(methods or default_methods())
    data = paperlib.load_images()
    subset = data.split("eval").subset(n_images)
    report: dict = {"device": device, "images": n_images, "methods": list(methods),
                    "tolerances": TOLERANCES, "maps": {}, "table": {}}
    boxes = {d: paperlib.load_model("efficientnet_lite0", device=d) for d in ("cpu", device)}
    images = next(paperlib.iter_batches(subset, boxes["cpu"].preprocess,
                                        batch_size=n_images)).images
    maps = {}
    for d, bb in boxes.items():
        torch.manual_seed(0)
        ex = explain(bb, images.to(bb.device), methods)
        maps[d] = {m: ex.maps[m].float().cpu() for m in methods}
    for m in methods:
        report["maps"][m] = float((maps["cpu"][m] - maps[device][m]).abs().max())
    settings = EvalSettings.from_parameters({"methods": methods, "n_images": n_images,
                                             "batch_size": 8})
    frames = {}
    for d, bb in boxes.items():
        torch.manual_seed(0)
        frames[d] = run_evaluation(bb, data, settings, out / d, progress=False).frame
    t3 = {d: tables.table3(f, list(methods)).set_index("method") for d, f in frames.items()}
    for column in ("avg_drop", "increase", "avg_gain"):
        if column in t3["cpu"]:
            report["table"][column] = float((t3["cpu"][column] - t3[device][column]).abs().max())
    report["passed"] = (max(report["maps"].values()) <= TOLERANCES["map"]
                        and max(report["table"].values(), default=0.0)
                        <= TOLERANCES["table_mean"])
    return report


# ---------------------------------------------------------------------------------------------
# 4. torchrun


def torchrun_step(device: str, n_images: int, methods: Sequence[str], out: Path,
                  limit: float) -> dict:
    """A one-process torchrun evaluation (NCCL on CUDA, gloo on CPU) and the same run in a plain
    process: their Table 3 CSVs must be byte-identical."""
    common = ["-m", "paperlib", "evaluate", "--model", "efficientnet_lite0", "--device", device,
              "--n-images", str(n_images), "--methods", *methods, "--curve-steps", "2",
              "--untrained-seeds", "0", "--no-protocol", "--road-images", "0", "--no-progress",
              "--threads", "1"]
    plain = _run([_python(), *common, "--out", str(out / "plain")], limit / 2)
    ranked = _run([_python(), "-m", "torch.distributed.run", "--standalone",
                   "--nproc_per_node=1", *common, "--out", str(out / "torchrun")], limit / 2)
    same = (plain["status"] == ranked["status"] == "passed"
            and (out / "plain" / "table3.csv").read_bytes()
            == (out / "torchrun" / "table3.csv").read_bytes())
    return {"status": "passed" if same else "failed (Table 3 differs or a run failed)",
            "seconds": plain["seconds"] + ranked["seconds"],
            "tail": ranked["tail"] if ranked["status"] != "passed" else plain["tail"][-800:]}


# ---------------------------------------------------------------------------------------------
# 5. the ImageNet estimate with the measured floor


def measured_estimate(bench: Path) -> dict:
    """``scale_cpu.json``'s ImageNet estimate with the CUDA floor of ``results_cuda.json``."""
    sys.path.insert(0, str(HERE))
    import bench_scale

    cuda = json.loads((bench / "results_cuda.json").read_text())
    floor = next(r for r in cuda["rows"] if r["key"] == "floor")["ms_per_image_median"]
    scale_path = HERE / "scale_cpu.json"
    scale = json.loads(scale_path.read_text())
    old = scale["imagenet"]
    est = bench_scale.imagenet_estimate(
        old["cpu_seconds_per_image"], old["cpu_floor_ms_per_forward"], old["forwards_per_image"],
        floor, cpu_images_per_s=old["cpu_images_per_s"])
    merge = old.get("merge_hours", 0.0)  # the shards' merge, measured on the CPU: unchanged
    for g in est["gpus"]:
        g["hours"] += merge if g["devices"] > 1 else 0.0
    for g in est["gpus"]:
        g["speedup"] = est["gpus"][0]["hours"] / g["hours"]
    est["merge_hours"] = merge
    gpu = cuda.get("machine", {}).get("gpu") or cuda.get("machine", {}).get("device", "CUDA")
    est.update(base=old.get("base"), gpu_ms_source=f"measured: the floor of "
               f"benchmarks/results_cuda.json on {gpu}")
    return est


# ---------------------------------------------------------------------------------------------
# The script


def render(results: dict) -> str:
    flag = " --dry-run" if results["dry_run"] else ""
    lines = [f"# GPU check ({results['device']})", "",
             f"Run {results['finished']} on {results['machine']}; {results['seconds']:.0f} s in "
             f"all. Written by `benchmarks/gpu_check.py{flag}`.",
             "", "| step | status | seconds |", "|---|---|---|"]
    lines += [f"| {name} | {s['status']} | {s['seconds']:.1f} |"
              for name, s in results["steps"].items()]
    a = results.get("agreement")
    if a:
        lines += ["", f"## Agreement with the CPU ({a['images']} images)", "",
                  f"Tolerances: maps {TOLERANCES['map']:g} (largest absolute difference), the "
                  f"table's means {TOLERANCES['table_mean']:g} points.", "",
                  "| method | largest map difference |", "|---|---|"]
        lines += [f"| `{m}` | {v:.2e} |" for m, v in a["maps"].items()]
        lines += ["", "| Table 3 column | largest difference of a method's mean |", "|---|---|"]
        lines += [f"| {c} | {v:.3g} |" for c, v in a["table"].items()]
    e = results.get("estimate")
    if e:
        lines += ["", "## ImageNet estimate with the measured floor", "",
                  f"{e['gpu_ms_per_forward']:.3f} ms per image forward ({e['gpu_ms_source']}): "
                  + ", ".join(f"{g['hours']:.2f} h on {g['devices']}" for g in e["gpus"]) + "."]
    failed = [n for n, s in results["steps"].items() if s["status"] != "passed"]
    for name in failed:
        lines += ["", f"## {name}: {results['steps'][name]['status']}", "", "```",
                  results["steps"][name]["tail"].strip()[-2000:], "```"]
    return "\n".join(lines) + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    p.add_argument("--dry-run", action="store_true",
                   help="every step on the CPU, tiny (2 images, 3 methods): checks the script")
    p.add_argument("--images", type=int, default=32, help="images of the agreement step")
    p.add_argument("--out", type=Path, default=HERE, help="folder of the report")
    p.add_argument("--agreement-step", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--device", default="cuda", help=argparse.SUPPRESS)
    p.add_argument("--work", type=Path, default=None, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.agreement_step:  # the child process of step 1
        methods = DRY_METHODS if args.dry_run else None
        report = agreement(args.device, args.images, methods, args.work)
        (args.work / "agreement.json").write_text(json.dumps(report, indent=1))
        return 0 if report["passed"] else 1

    import torch

    dry = args.dry_run
    if not dry and not torch.cuda.is_available():
        print("gpu_check: no CUDA device here; --dry-run checks the script on the CPU",
              file=sys.stderr)
        return 2
    device = "cpu" if dry else "cuda"
    tag = "dry-run" if dry else "cuda"
    n = 2 if dry else args.images
    scale = 0.5 if dry else 1.0
    start = time.perf_counter()
    steps: dict[str, dict] = {}
    results: dict = {"device": tag, "dry_run": dry, "steps": steps,
                     "machine": (torch.cuda.get_device_name(0) if not dry else "CPU (dry run)")}
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        steps["agreement"] = _run(
            [_python(), str(Path(__file__)), "--agreement-step", "--device",
             "cpu" if dry else "cuda", "--images", str(n), "--work", str(work)]
            + (["--dry-run"] if dry else []), LIMITS["agreement"] / scale)
        if (work / "agreement.json").is_file():
            results["agreement"] = json.loads((work / "agreement.json").read_text())
        tests = ["tests/test_guards.py", "-k", "cuda"] if not dry else [
            "tests/test_guards.py", "-k", "cuda or device"]
        steps["tests"] = _run([_python(), "-m", "pytest", "-q", "-p", "no:cacheprovider",
                               *tests], LIMITS["tests"] / scale,
                              env={"PAPERLIB_OFFLINE": "1", "PAPERLIB_RESULTS": str(work / "r"),
                                   "PAPERLIB_FIGURES": str(work / "f")})
        if steps["tests"]["status"] == "failed (exit 5)":  # no test selected: nothing to fail
            steps["tests"]["status"] = "passed"
        bench_out = work / "bench" if dry else args.out
        reps = ["--repeats", "1", "--slow-repeats", "1", "--batch-size", "2"] if dry else [
            "--repeats", "7", "--slow-repeats", "2"]
        cam = _run([_python(), str(HERE / "bench_cam.py"), "--device", device, *reps,
                    "--out", str(bench_out)], LIMITS["bench"] * 0.6 / scale)
        prec = _run([_python(), str(HERE / "bench_precision.py"), "--device", device,
                     "--repeats", "1" if dry else "5", "--batch-size", "2" if dry else "16",
                     "--out", str(bench_out)], LIMITS["bench"] * 0.4 / scale)
        steps["bench"] = {"status": ("passed" if cam["status"] == prec["status"] == "passed"
                                     else f"cam {cam['status']}; precision {prec['status']}"),
                          "seconds": cam["seconds"] + prec["seconds"],
                          "tail": cam["tail"][-1500:] + "\n" + prec["tail"][-1500:]}
        steps["torchrun"] = torchrun_step(device, n, DRY_METHODS if dry else
                                          ("gradcam", "gradcampp", "attention-fixed"),
                                          work / "torchrun", LIMITS["torchrun"] / scale)
        t = time.perf_counter()
        try:
            if dry:
                results_file = bench_out / f"results_{device}.json"
                if results_file.is_file():  # the dry run's CPU rows stand in for CUDA's
                    (bench_out / "results_cuda.json").write_text(results_file.read_text())
            est = measured_estimate(bench_out)
            results["estimate"] = est
            # the README's cost block reads it (paperlib.report.GPU_ESTIMATE) once committed
            (bench_out / "scale_estimate_cuda.json").write_text(
                json.dumps(est, indent=1, default=str) + "\n")
            steps["estimate"] = {"status": "passed", "seconds": time.perf_counter() - t,
                                 "tail": ""}
        except (OSError, KeyError, StopIteration, ValueError) as exc:
            steps["estimate"] = {"status": f"failed ({type(exc).__name__}: {exc})",
                                 "seconds": time.perf_counter() - t, "tail": ""}
    results["seconds"] = time.perf_counter() - start
    results["finished"] = time.strftime("%Y-%m-%d %H:%M:%S")
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / f"gpu_check_{tag}.json").write_text(json.dumps(results, indent=1, default=str))
    text = render(results)
    (args.out / f"GPU_CHECK_{tag}.md").write_text(text)
    print(text)
    return 0 if all(s["status"] == "passed" for s in steps.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
