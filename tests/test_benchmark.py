"""The speed benchmark's parts (benchmarks/harness.py, configs.py, report.py, bench_cam.py) on a
tiny run: configurations built, a few cheap ones timed once, the report written. Nothing here
asserts anything about times."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import paperlib
from paperlib.cam import GRADIENT_METHODS, METHODS

BENCH = Path(__file__).resolve().parent.parent / "benchmarks"
if str(BENCH) not in sys.path:
    sys.path.insert(0, str(BENCH))

import bench_cam  # noqa: E402
import configs  # noqa: E402
import harness  # noqa: E402
import report  # noqa: E402

TABLE_HEADER = ("| Configuration | ms/image median | ms/image min | x floor | compared with "
                "| ratio | goal | met? |")
CPU = torch.device("cpu")


@pytest.fixture(scope="module")
def built(lite0, lite0_batch):
    """The configurations of a 2-image run (repeats 1, no full Score-CAM) and their notes."""
    pytest.importorskip("pytorch_grad_cam")
    pytest.importorskip("torchcam")
    x = lite0_batch.images[:2]
    with torch.no_grad():
        targets = lite0.model(x).argmax(dim=1)
    settings = configs.Settings(repeats=1, slow_repeats=1, smooth_samples=2,
                                scorecam_channels=4, full_scorecam="no")
    notes: list[str] = []
    rows = configs.build_configs(settings, lite0, x, targets, CPU, notes)
    return lite0, x, targets, rows, notes


def test_cli_defaults_are_paperlibs():
    args = bench_cam.parse_args([])
    opts = paperlib.ExplainOptions()
    assert args.smooth_samples == opts.of("smoothgradcampp").smooth_samples
    assert args.smooth_sigma == opts.of("smoothgradcampp").smooth_sigma
    assert args.scorecam_channels == opts.of("scorecam").scorecam_channels
    assert (args.batch_size, args.repeats, args.slow_repeats) == (8, 15, 3)
    assert args.out == BENCH and args.full_scorecam == "auto" and args.malloc == "keep"
    assert not hasattr(configs, "PRETTY")


def test_script_runs_standalone():
    """Run as a script, bench_cam.py finds its sibling modules."""
    out = subprocess.run([sys.executable, str(BENCH / "bench_cam.py"), "--help"],
                         capture_output=True, text=True, timeout=900)
    assert out.returncode == 0, out.stderr
    assert "--full-scorecam" in out.stdout and "--malloc" in out.stdout


def test_configurations_follow_the_registry(built):
    _, _, _, rows, notes = built
    by = {c.key: c for c in rows}
    assert list(by)[0] == "floor"
    for m in GRADIENT_METHODS:
        assert by[f"ours:{m}"].label == f"paperlib {paperlib.method_label(m)}"
        assert by[f"ours:{m}"].goal == configs.GOAL_GRADIENT_ALONE
    for v in paperlib.cam.method_names("variant"):
        row = by.get(f"ours:gradcam+{v}") or by.get(f"ours:{v}")
        assert row is not None, v
        assert paperlib.method_label(v) in row.label
    per_image = by["ours:attention-per-image"]
    steps = paperlib.ExplainOptions().of("attention-per-image").per_image_steps
    assert f"({steps} steps" in per_image.label and per_image.forwards_per_image == 1 + steps
    for key, c in by.items():  # peers are compared with paperlib's row of the same method
        library, _, m = key.partition(":")
        if library in ("pgc", "tc") and m in METHODS and c.reference == f"ours:{m}":
            assert c.ref_label == f"paperlib {paperlib.method_label(m)}"
    assert "ours:smoothgradcampp-chunkB" in by  # batch 2 != chunk_size
    assert "ours:scorecam-all" not in by and any("ScoreCAM not timed" in n for n in notes)


@pytest.fixture
def one_thread():
    """One torch thread while timing: with another process on the CPUs, a thread per core makes
    every small operation wait for a descheduled thread (see benchmarks/README.md)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def test_harness_and_report_on_a_tiny_run(built, tmp_path, one_thread):
    bb, x, targets, rows, notes = built
    by = {c.key: c for c in rows}
    keys = ["floor", "ours:gradcam", "ours:gradcam+attention-fixed"]
    chosen = [by[k] for k in keys]
    log: list[str] = []
    harness.run_all(chosen, CPU, log=log.append)
    assert len(log) == len(chosen) + 1  # warm-ups and one repetition
    assert all(len(c.times) == 1 for c in chosen)
    assert by["floor"].seconds == []  # a plain tensor, not Explanations
    assert set(by["ours:gradcam"].seconds[0]) == {"pass", "gradcam"}

    table, reasons = report.analyse(chosen, smooth_n=2)
    assert [r["key"] for r in table] == keys
    assert all("met" in r for r in table[1:]) and len(reasons) == 2
    facts = harness.machine_facts(CPU, torch.get_num_threads(), x.shape[0], bb)
    facts.update(malloc=paperlib.perf.malloc_mode(), images=[])
    text = report.write_report(tmp_path / "REPORT_cpu.md", facts, table, reasons, notes, 1, 1)
    lines = text.splitlines()
    assert TABLE_HEADER in lines
    main_table = lines[lines.index(TABLE_HEADER):lines.index("## Goals")]
    for c in chosen:
        assert sum(line.startswith(f"| {c.label} |") for line in main_table) == 1
    assert [line for line in lines if line.startswith("#")] == [
        "# CAM speed benchmark (cpu)", "## Goals",
        "## Where paperlib's time goes (medians of `Explanations.seconds`)", "## Notes"]
    gradcam, fixed = (paperlib.method_label(m) for m in ("gradcam", "attention-fixed"))
    assert f"- **paperlib {gradcam}**:" in text
    assert f"- **paperlib {gradcam} + {fixed}**:" in text
    assert "The attention step's own time" in text

    report.write_json(tmp_path / "results_cpu.json", facts, {"repeats": 1}, configs.GOALS,
                      table, reasons, notes)
    saved = json.loads((tmp_path / "results_cpu.json").read_text())
    assert list(saved) == ["machine", "settings", "goals", "rows", "goal_reasons", "notes"]
    assert saved["goal_reasons"] == reasons


def _config(key: str, times: list[float], seconds: dict[str, float] | None = None,
            **kw) -> harness.Config:
    c = harness.Config(key, key, "paperlib", lambda: None, 1, len(times), 1.0, **kw)
    c.times = list(times)
    c.seconds = [dict(seconds)] * len(times) if seconds else []
    return c


def test_goal_rules_explain_a_miss():
    """The rules pick the clause that fits: a wall-clock miss whose own step is cheap is noise."""
    rows = [
        _config("floor", [0.010, 0.010]),
        _config("ours:gradcam", [0.010, 0.010], {"pass": 0.0095, "gradcam": 0.0002},
                reference="floor", goal=1.15, kind=configs.KIND_GRADIENT),
        _config("ours:gradcam+attention-fixed", [0.0110, 0.0110],
                {"pass": 0.0105, "gradcam": 0.0002, "attention-fixed": 0.0002},
                reference="ours:gradcam", goal=1.05, kind=configs.KIND_ON_GRADCAM),
        _config("ours:smoothgradcampp", [0.030, 0.030], {"pass": 0.01, "smoothgradcampp": 0.02},
                reference="floor", ref_factor=3.0, goal=1.15, kind=configs.KIND_NOISY),
    ]
    _, reasons = report.analyse(rows, smooth_n=2)
    assert "-> **met**" in reasons[0] and "Paired per-repetition ratio 1.000x." in reasons[0]
    assert "-> **NOT met**" in reasons[1] and "it is timing noise." in reasons[1]
    assert "-> **met**" in reasons[2] and "diagnostic" not in reasons[2]


def test_bench_road_writes_its_json_and_report(tmp_path):
    """benchmarks/bench_road.py on one image, one repeat: the JSON and ROAD_<device>.md from it
    (every row of the table, the goals' verdicts derived from the ratios)."""
    pytest.importorskip("pytorch_grad_cam")
    import bench_road  # noqa: E402

    out = bench_road.main(["--images", "1", "--repeats", "1", "--device", "cpu",
                           "--out", str(tmp_path)])
    assert json.loads((tmp_path / "road_cpu.json").read_text()) == json.loads(json.dumps(out))
    text = (tmp_path / "ROAD_cpu.md").read_text()
    assert out["copies_per_method_image"] == 18 and out["peer_units"] == 1
    met = "yes" if out["kit_over_floor"] <= 1.3 else "no"
    assert f"| {out['kit_over_floor']:.2f} x the floor | <= 1.3 x | {met} |" in text
    assert f"{out['peer_over_kit']:.1f} x the kit" in text
    assert "What limits it" in text and "{{" not in text


def test_gpu_check_dry_run_runs_every_step_on_the_cpu(tmp_path):
    """benchmarks/gpu_check.py --dry-run: every step of the one-shot GPU check (agreement,
    tests, benchmarks, torchrun, the estimate with the measured floor) on the CPU, tiny; it
    writes its own report and never the committed CUDA files; without CUDA the real run refuses
    in one line."""
    import gpu_check

    before = {p.name: p.read_bytes() for p in BENCH.iterdir() if p.is_file()}
    done = subprocess.run([sys.executable, str(BENCH / "gpu_check.py"), "--dry-run", "--out",
                           str(tmp_path)], capture_output=True, text=True, timeout=900)
    report_md = (tmp_path / "GPU_CHECK_dry-run.md").read_text()
    assert done.returncode == 0, report_md + done.stderr[-2000:]
    results = json.loads((tmp_path / "gpu_check_dry-run.json").read_text())
    assert list(results["steps"]) == ["agreement", "tests", "bench", "torchrun", "estimate"]
    assert all(s["status"] == "passed" for s in results["steps"].values())
    # CPU against CPU: the same numbers
    a = results["agreement"]
    assert a["methods"] == list(gpu_check.DRY_METHODS) and max(a["maps"].values()) == 0.0
    assert max(a["table"].values()) == 0.0
    assert results["estimate"]["gpu_ms_source"].startswith("measured: the floor of")
    assert "| torchrun | passed |" in report_md
    assert {p.name: p.read_bytes() for p in BENCH.iterdir() if p.is_file()} == before
    if not torch.cuda.is_available():
        refused = subprocess.run([sys.executable, str(BENCH / "gpu_check.py"), "--out",
                                  str(tmp_path)], capture_output=True, text=True, timeout=120)
        assert refused.returncode == 2
        assert refused.stderr.strip() == ("gpu_check: no CUDA device here; --dry-run checks "
                                          "the script on the CPU")
