"""Sharded runs: the process-group helpers, and ``torchrun -m paperlib.evaluate`` on 2 CPU
processes (gloo) writing the same tables, to the last digit, as one process -- also after a
rank was killed and the run resumed from the shards."""

from __future__ import annotations

import datetime as dt
import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from paperlib import distributed
from paperlib.results import ResultsStore

ARGS = ["--n-images", "8", "--methods", "gradcam", "xgradcam", "--curve-steps", "2",
        "--batch-size", "2", "--model-name", "efficientnet_lite0", "--no-progress",
        "--untrained-seeds", "0", "--no-protocol"]  # the studies: tests/test_outputs.py
TABLES = ["table3.csv", "table4.csv", "deletion_insertion.csv"]
REPO = Path(__file__).resolve().parent.parent


# ---------------------------------------------------------------------------------------------
# The helpers outside a process group


def test_helpers_are_no_ops_in_one_process(monkeypatch):
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    assert distributed.init("cpu") is False
    assert (distributed.rank(), distributed.world_size()) == (0, 1)
    assert distributed.is_main() and not distributed.is_distributed()
    distributed.barrier()
    payload = {"files": ["a", "b"]}
    assert distributed.broadcast_object(payload) is payload
    assert distributed.all_gather_object(payload) == [payload]
    monkeypatch.setenv("WORLD_SIZE", "1")
    assert distributed.init("cpu") is False
    distributed.shutdown()


def test_device_per_rank(monkeypatch):
    monkeypatch.setenv("LOCAL_RANK", "3")
    assert distributed.local_rank() == 3
    assert distributed.device("cuda") == torch.device("cuda", 3)
    assert distributed.device("cuda:1") == torch.device("cuda", 1)
    assert distributed.device("cpu") == torch.device("cpu")
    expected = torch.device("cuda", 3) if torch.cuda.is_available() else torch.device("cpu")
    assert distributed.device("auto") == expected


def test_timeout_from_the_environment(monkeypatch):
    monkeypatch.delenv(distributed.TIMEOUT_ENV, raising=False)
    assert distributed.timeout() == dt.timedelta(minutes=120)
    monkeypatch.setenv(distributed.TIMEOUT_ENV, "2.5")
    assert distributed.timeout() == dt.timedelta(seconds=150)
    monkeypatch.setenv(distributed.TIMEOUT_ENV, "soon")
    with pytest.raises(ValueError, match="PAPERLIB_DIST_TIMEOUT_MIN='soon' is not a number"):
        distributed.timeout()


# ---------------------------------------------------------------------------------------------
# torchrun on two CPU processes


def _env(data_dir: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("PAPERLIB_PROGRESS_LOG",
                                                            "WORLD_SIZE", "RANK", "LOCAL_RANK")}
    # one thread per process in both runs: thread counts change float rounding (not batches)
    env.update(PAPERLIB_DATA=str(data_dir), PAPERLIB_OFFLINE="1", OMP_NUM_THREADS="1")
    return env


def _single(out: Path, data_dir: Path, *extra: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "paperlib.evaluate", *ARGS, *extra,
                           "--output-dir", str(out)], env=_env(data_dir), cwd=REPO,
                          capture_output=True, text=True, timeout=600)


def _torchrun(out: Path, data_dir: Path) -> list[str]:
    return [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
            "-m", "paperlib.evaluate", *ARGS, "--output-dir", str(out)]


def _check(run: subprocess.CompletedProcess) -> str:
    assert run.returncode == 0, run.stdout + run.stderr
    return run.stdout


@pytest.fixture(scope="module")
def reference(data_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Tables of a one-process run (one thread) on the 8 images."""
    out = tmp_path_factory.mktemp("one-process")
    stdout = _check(_single(out, data_dir))
    assert "8 images x 2 methods (16 rows" in stdout
    return out


def test_two_processes_write_the_same_tables_as_one(reference, data_dir, tmp_path):
    out = tmp_path / "two"
    run = subprocess.run(_torchrun(out, data_dir), env=_env(data_dir), cwd=REPO,
                         capture_output=True, text=True, timeout=600)
    stdout = _check(run)
    assert "2 process(es)" in stdout
    for name in TABLES:
        assert (out / name).read_bytes() == (reference / name).read_bytes(), name
    with ResultsStore(out / "cache" / "eval.sqlite") as store:
        (key,) = store.runs()
        assert store.count(key) == 16
        batches = store.batches(key)
    assert [(b["rank"], b["world_size"], b["n_images"]) for b in batches] == [
        (0, 2, 2), (1, 2, 2), (0, 2, 2), (1, 2, 2)]                   # batch r::2 on rank r
    assert not (out / "cache" / "eval.shards").exists()              # merged and removed
    assert f"run {key}); wrote" in stdout
    split = json.loads((out / "eval_split.json").read_text())
    assert split["split"] == "eval: class index = 2 (mod 4)" and len(split["files"]) == 8


def _rank_pid(parent: int, rank: int) -> int | None:
    """The pid of torchrun's worker of ``rank`` (a child of ``parent``)."""
    try:
        children = Path(f"/proc/{parent}/task/{parent}/children").read_text().split()
    except OSError:
        return None
    for pid in children:
        try:
            env = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
        except OSError:
            continue
        if f"RANK={rank}".encode() in env:
            return int(pid)
    return None


def _batches(shard: Path) -> int:
    try:
        with sqlite3.connect(f"file:{shard}?mode=ro", uri=True, timeout=30) as con:
            return con.execute("SELECT COUNT(*) FROM batches").fetchone()[0]
    except sqlite3.Error:
        return 0


@pytest.mark.skipif(not Path("/proc/self/task").is_dir(), reason="needs Linux /proc")
def test_a_killed_rank_loses_only_its_batch_in_flight(reference, data_dir, tmp_path):
    out = tmp_path / "killed"
    proc = subprocess.Popen(_torchrun(out, data_dir), env=_env(data_dir), cwd=REPO,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    shards = out / "cache" / "eval.shards"
    killed = False
    try:
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline and proc.poll() is None:
            found = list(shards.glob("*.rank1.sqlite")) if shards.is_dir() else []
            pid = _rank_pid(proc.pid, 1)
            if found and pid is not None and _batches(found[0]) >= 1:
                os.kill(pid, signal.SIGKILL)      # rank 1 dies in its second batch
                killed = True
                break
            time.sleep(0.05)
        log, _ = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert killed, log
    assert proc.returncode != 0, log
    kept = {p.name.split(".")[1]: _batches(p) for p in shards.glob("*.sqlite")}
    assert kept["rank1"] == 1 and kept["rank0"] <= 2, kept           # whole batches only
    with ResultsStore(out / "cache" / "eval.sqlite") as store:
        (key,) = store.runs()
        assert store.count(key) == 0              # nothing merged: rank 0 never got there
    with ResultsStore(next(shards.glob("*.rank1.sqlite")), wal=False) as shard:
        first_batch = shard.batches(key)

    resumed = subprocess.run(_torchrun(out, data_dir), env=_env(data_dir), cwd=REPO,
                             capture_output=True, text=True, timeout=600)
    assert "8 images x 2 methods (16 rows" in _check(resumed)
    for name in TABLES:
        assert (out / name).read_bytes() == (reference / name).read_bytes(), name
    with ResultsStore(out / "cache" / "eval.sqlite") as store:
        assert store.count(key) == 16
        batches = store.batches(key)
    assert len(batches) == 4 and first_batch[0] in batches          # kept, not recomputed
    assert sum(b["n_images"] for b in batches) == 8
    assert not shards.exists()


ACCURACY_SCRIPT = """
import json, sys
from paperlib import distributed, load_images, load_model
from paperlib.model_selection import accuracy_rows

distributed.init("cpu")
frame = accuracy_rows(load_model("efficientnet_lite0", device="cpu"),
                      load_images().subset(10), 3, sys.argv[1], progress=False)
print("ROWS", distributed.rank(), json.dumps(frame.astype(object).values.tolist()), flush=True)
distributed.shutdown()
"""


def test_the_accuracy_table_runs_sharded(data_dir, tmp_path, lite0, sample_dataset):
    from paperlib.model_selection import accuracy_rows

    script = tmp_path / "accuracy.py"
    script.write_text(ACCURACY_SCRIPT)
    run = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone",
                          "--nproc_per_node=2", str(script), str(tmp_path / "two")],
                         env=_env(data_dir), cwd=REPO, capture_output=True, text=True,
                         timeout=600)
    out = _check(run)
    rows = {int(line.split()[1]): json.loads(line.split(" ", 2)[2])
            for line in out.splitlines() if line.startswith("ROWS ")}
    single = accuracy_rows(lite0, sample_dataset.subset(10), 3, tmp_path / "one",
                           progress=False)
    assert rows[0] == rows[1] == single.astype(object).values.tolist()   # every rank, all rows
    with ResultsStore(tmp_path / "two" / "cache" / "accuracy.sqlite") as store:
        (key,) = store.runs()
        assert [b["rank"] for b in store.batches(key)] == [0, 1, 0, 1]    # 10 images, batch 3


def test_the_imagenet_estimate_arithmetic():
    sys.path.insert(0, str(REPO / "benchmarks"))
    try:
        from bench_scale import imagenet_estimate
    finally:
        sys.path.remove(str(REPO / "benchmarks"))
    est = imagenet_estimate(seconds_per_image=2.0, floor_ms_per_forward=10.0,
                            forwards_per_image=400, gpu_ms_per_forward=0.1, devices=(1, 4),
                            n_images=100, batch_size=16, merge_rows_per_s=1000,
                            rows_per_image=10)
    assert est["cpu_hours"] == pytest.approx(100 / 0.5 / 3600)
    assert est["gpu_seconds_per_image"] == pytest.approx(0.02)
    # 7 batches of 16: 7 on one GPU; 2 on the busiest of 4, plus merging 1000 rows at 1000/s
    assert [g["hours"] * 3600 for g in est["gpus"]] == pytest.approx([7 * 16 * 0.02,
                                                                       2 * 16 * 0.02 + 1.0])
    assert est["gpus"][1]["speedup"] == pytest.approx(2.24 / 1.64)


def test_the_entry_point_reads_the_notebook_parameters():
    from paperlib.evaluate import build_parser
    from paperlib.evaluation import EvalSettings

    parser = build_parser()
    args = parser.parse_args(["--n-images", "all", "--methods", "gradcam", "smoothgradcampp",
                              "--split", "all", "--fill", "blur", "--curve-steps", "0",
                              "--fractions", "20", "50", "--smooth-samples", "4",
                              "--target", "label", "--batch-size", "3"])
    params = {k: v for k, v in vars(args).items() if v is not None}
    s = EvalSettings.from_parameters(params)
    key = s.key()
    assert (key["methods"], key["split"], key["n_images"], key["target"]) == (
        ["gradcam", "smoothgradcampp"], "all", None, "label")
    assert {k: key["metrics"][k] for k in ("fill", "fractions", "curve_steps")} == {
        "fill": "blur", "fractions": [20, 50], "curve_steps": 0}
    assert key["explain"]["seed"] == 0 and s.explain.of("smoothgradcampp").smooth_samples == 4
    assert s.batch_size == 3
    assert parser.parse_args(["--n-images", "12"]).n_images == 12
    for bad in ("0", "many"):
        with pytest.raises(SystemExit):
            parser.parse_args(["--n-images", bad])
