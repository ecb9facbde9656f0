"""Sharded runs: the process-group helpers, and ``torchrun -m paperlib evaluate`` on 2 CPU
processes (gloo) writing the same tables, to the last digit, as one process -- also after a
rank was killed and the run resumed from the shards.

Every rank writes its own files, which the tests read: torchrun redirects each rank's stdout and
stderr to ``<logs>/<run id>/attempt_0/<rank>/std{out,err}.log`` (``--redirects 3``), and the
accuracy script writes each rank's rows to ``rows.rank<r>.json``. Nothing parses a pipe that
both ranks write into (their lines interleave on a busy machine). ``--standalone`` rendezvous
on ``localhost:0``: the OS gives each run a free port, which torchrun binds once and the ranks
share (no port chosen by the test that another process could take in between)."""

from __future__ import annotations

import contextlib
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
from paperlib.store import ResultsStore

ARGS = ["--n-images", "8", "--methods", "gradcam", "xgradcam", "--curve-steps", "2",
        "--batch-size", "2", "--model", "efficientnet_lite0", "--no-progress",
        "--untrained-seeds", "0", "--no-protocol"]  # the studies: tests/test_outputs.py
TABLES = ["table3.csv", "table4.csv", "deletion_insertion.csv"]
REPO = Path(__file__).resolve().parent.parent
#: Seconds a run may take before the test fails: only a hang takes this long (one run takes
#: ~20 s on an idle 2-core CPU; a loaded machine may slow it several times).
TIMEOUT = 1800


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
    env = {k: v for k, v in os.environ.items() if k not in (
        "PAPERLIB_PROGRESS_LOG", "WORLD_SIZE", "RANK", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT",
        "TORCH_DISABLE_SHARE_RDZV_TCP_STORE")}
    # one thread per process in both runs: thread counts change float rounding (not batches)
    env.update(PAPERLIB_DATA=str(data_dir), PAPERLIB_OFFLINE="1", OMP_NUM_THREADS="1")
    return env


def _single(out: Path, data_dir: Path, *extra: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "paperlib", "evaluate", *ARGS, *extra,
                           "--out", str(out)], env=_env(data_dir), cwd=REPO,
                          capture_output=True, text=True, timeout=TIMEOUT)


def _torchrun(logs: Path, *entry: str) -> list[str]:
    """torchrun on 2 CPU processes, each rank's stdout and stderr in its own file under ``logs``
    (:func:`_rank_log`)."""
    return [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
            "--log-dir", str(logs), "--redirects", "3", *entry]


def _evaluate(out: Path, logs: Path) -> list[str]:
    return _torchrun(logs, "-m", "paperlib", "evaluate", *ARGS, "--out", str(out))


def _rank_log(logs: Path, rank: int, stream: str = "stdout") -> str:
    """What ``rank`` wrote to ``stream`` in the one torchrun run logged under ``logs``."""
    (path,) = logs.glob(f"*/attempt_0/{rank}/{stream}.log")
    return path.read_text()


def _all_logs(logs: Path) -> str:
    return "".join(f"\n--- {p.relative_to(logs)}\n{p.read_text()}"
                   for p in sorted(logs.glob("*/attempt_*/*/std*.log")))


def _check(run: subprocess.CompletedProcess) -> str:
    assert run.returncode == 0, run.stdout + run.stderr
    return run.stdout


def _check_ranks(run: subprocess.CompletedProcess, logs: Path) -> str:
    """Rank 0's stdout of a torchrun run that succeeded."""
    assert run.returncode == 0, run.stdout + run.stderr + _all_logs(logs)
    return _rank_log(logs, 0)


@pytest.fixture(scope="module")
def reference(data_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Tables of a one-process run (one thread) on the 8 images."""
    out = tmp_path_factory.mktemp("one-process")
    stdout = _check(_single(out, data_dir))
    assert "8 images x 2 methods (16 rows" in stdout
    return out


def test_two_processes_write_the_same_tables_as_one(reference, data_dir, tmp_path):
    out, logs = tmp_path / "two", tmp_path / "logs"
    run = subprocess.run(_evaluate(out, logs), env=_env(data_dir), cwd=REPO,
                         capture_output=True, text=True, timeout=TIMEOUT)
    stdout = _check_ranks(run, logs)
    assert "2 process(es)" in stdout
    assert _rank_log(logs, 1) == ""                                  # rank 0 alone reports
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


def _batches(shard: Path, wait: float = 60) -> int | None:
    """Batches committed to the rollback-journal ``shard`` (``None`` while a writer holds its
    lock longer than ``wait`` seconds). A read-write connection: it rolls back the hot journal
    of a rank killed inside a transaction, as the merge does, before counting."""
    try:
        with contextlib.closing(sqlite3.connect(shard, timeout=wait)) as con:
            return con.execute("SELECT COUNT(*) FROM batches").fetchone()[0]
    except sqlite3.Error:
        return None


@pytest.mark.skipif(not Path("/proc/self/task").is_dir(), reason="needs Linux /proc")
def test_a_killed_rank_loses_only_its_batch_in_flight(reference, data_dir, tmp_path):
    out = tmp_path / "killed"
    logs = tmp_path / "logs-killed"
    proc = subprocess.Popen(_evaluate(out, logs), env=_env(data_dir), cwd=REPO,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    shards = out / "cache" / "eval.shards"
    killed = False
    try:
        deadline = time.monotonic() + TIMEOUT
        while time.monotonic() < deadline and proc.poll() is None:
            found = list(shards.glob("*.rank1.sqlite")) if shards.is_dir() else []
            pid = _rank_pid(proc.pid, 1)
            if found and pid is not None:
                # rank 1 stopped while its shard is counted: it cannot commit a second batch
                # between the count and the kill, however slowly this loop is scheduled
                os.kill(pid, signal.SIGSTOP)
                if _batches(found[0], wait=0.5) == 1:
                    os.kill(pid, signal.SIGKILL)      # rank 1 dies in its second batch
                    killed = True
                    break
                os.kill(pid, signal.SIGCONT)
            time.sleep(0.05)
        log, _ = proc.communicate(timeout=TIMEOUT)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert killed, log + _all_logs(logs)
    assert proc.returncode != 0, log + _all_logs(logs)
    kept = {p.name.split(".")[1]: _batches(p) for p in shards.glob("*.sqlite")}
    assert kept["rank1"] == 1 and kept["rank0"] in (0, 1, 2), kept   # whole batches only
    with ResultsStore(out / "cache" / "eval.sqlite") as store:
        (key,) = store.runs()
        assert store.count(key) == 0              # nothing merged: rank 0 never got there
    with ResultsStore(next(shards.glob("*.rank1.sqlite")), wal=False) as shard:
        first_batch = shard.batches(key)

    logs = tmp_path / "logs-resumed"
    resumed = subprocess.run(_evaluate(out, logs), env=_env(data_dir), cwd=REPO,
                             capture_output=True, text=True, timeout=TIMEOUT)
    assert "8 images x 2 methods (16 rows" in _check_ranks(resumed, logs)
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
from pathlib import Path
from paperlib import distributed, load_images, load_model
from paperlib.model_selection import accuracy_rows

distributed.init("cpu")
frame = accuracy_rows(load_model("efficientnet_lite0", device="cpu"),
                      load_images().subset(10), 3, sys.argv[1], progress=False)
rows = Path(sys.argv[2]) / f"rows.rank{distributed.rank()}.json"
rows.write_text(json.dumps(frame.astype(object).values.tolist()))
distributed.shutdown()
"""


def test_the_accuracy_table_runs_sharded(data_dir, tmp_path, lite0, sample_dataset):
    from paperlib.model_selection import accuracy_rows

    script = tmp_path / "accuracy.py"
    script.write_text(ACCURACY_SCRIPT)
    logs = tmp_path / "logs"
    run = subprocess.run([*_torchrun(logs, str(script), str(tmp_path / "two"), str(tmp_path))],
                         env=_env(data_dir), cwd=REPO, capture_output=True, text=True,
                         timeout=TIMEOUT)
    _check_ranks(run, logs)
    rows = {r: json.loads((tmp_path / f"rows.rank{r}.json").read_text()) for r in (0, 1)}
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
    from paperlib.cli import build_parser
    from paperlib.evaluation import EvalSettings

    parser = build_parser(["evaluate"])
    args = parser.parse_args(["evaluate", "--n-images", "all", "--methods", "gradcam",
                              "smoothgradcampp", "--split", "all", "--fill", "blur",
                              "--curve-steps", "0",
                              "--fractions", "20", "50", "--smooth-samples", "4",
                              "--target-mode", "label", "--batch-size", "3"])
    params = {k: v for k, v in vars(args).items() if v is not None}
    s = EvalSettings.from_parameters(params)
    key = s.key()
    assert (key["methods"], key["split"], key["n_images"], key["target"]) == (
        ["gradcam", "smoothgradcampp"], "all", None, "label")
    assert {k: key["metrics"][k] for k in ("fill", "fractions", "curve_steps")} == {
        "fill": "blur", "fractions": [20, 50], "curve_steps": 0}
    assert key["explain"]["seed"] == 0 and s.explain.of("smoothgradcampp").smooth_samples == 4
    assert s.batch_size == 3
    assert parser.parse_args(["evaluate", "--n-images", "12"]).n_images == 12
    for bad in ("0", "many"):
        with pytest.raises(SystemExit):
            parser.parse_args(["evaluate", "--n-images", bad])
