"""make reproduce computes notebook 04's evaluation in torchrun processes (1 thread each) and the
notebook reads the rows from the store: the command carries exactly the notebook's settings."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from paperlib import reproduce
from paperlib.cli import build_parser


def _args(*argv: str):
    return build_parser(["reproduce"]).parse_args(["reproduce", *argv])


def _flags(argv: list[str]) -> dict[str, str | None]:
    tail = argv[argv.index("evaluate") + 1:]
    out: dict[str, str | None] = {}
    for i, a in enumerate(tail):
        if a.startswith("--"):
            nxt = tail[i + 1] if i + 1 < len(tail) else None
            out[a] = None if nxt is None or nxt.startswith("--") else nxt
    return out


def test_the_command_is_torchrun_of_evaluate_with_the_notebooks_settings(tmp_path: Path,
                                                                          monkeypatch):
    monkeypatch.setenv("PAPERLIB_RESULTS", str(tmp_path / "r"))
    argv = reproduce.evaluate_command(_args(), 2, tmp_path / "logs")
    assert argv[:5] == [sys.executable, "-m", "torch.distributed.run", "--standalone",
                        "--nproc_per_node=2"]
    flags = _flags(argv)
    # the full run: every image, the kit's seeds and ROAD subset (no flag: evaluate's defaults
    # are the notebook's None), the notebook's own batch size, one thread per process
    assert flags == {"--out": str(tmp_path / "r"), "--threads": "1", "--batch-size": "8",
                     "--device": "auto", "--seed": "0"}


def test_the_runs_options_reach_the_command(tmp_path: Path, monkeypatch):
    monkeypatch.setenv("PAPERLIB_RESULTS", str(tmp_path / "r"))
    data = tmp_path / "imgs"
    args = _args("--model", "efficientnet_lite1", "--target-layer", "blocks.6", "--n-images",
                 "40", "--split", "all", "--precision", "bf16", "--compile", "--seed", "3",
                 "--data-dir", str(data), "--device", "cpu")
    flags = _flags(reproduce.evaluate_command(args, 3, tmp_path / "logs"))
    assert flags["--model"] == "efficientnet_lite1" and flags["--target-layer"] == "blocks.6"
    assert flags["--n-images"] == "40" and flags["--split"] == "all"
    assert flags["--precision"] == "bf16" and "--compile" in flags
    assert flags["--seed"] == "3" and flags["--device"] == "cpu"
    assert flags["--data-dir"] == str(data.resolve())


def test_every_flag_is_one_evaluate_declares():
    known = {a for action in build_parser(["evaluate"])._subparsers._group_actions[0]
             .choices["evaluate"]._actions for a in action.option_strings}
    args = _args("--model", "m", "--target-layer", "x", "--n-images", "4", "--split", "eval",
                 "--precision", "bf16", "--compile")
    assert set(_flags(reproduce.evaluate_command(args, 2, Path("l")))) <= known


@pytest.mark.parametrize("device, cores, expected", [("cpu", 2, 2), ("cpu", 64, 8),
                                                     ("cpu", None, 1)])
def test_default_processes_one_per_core_on_cpu(device, cores, expected, monkeypatch):
    monkeypatch.setattr(reproduce.os, "cpu_count", lambda: cores)
    assert reproduce.default_processes(device) == expected


def test_processes_must_be_positive(capsys):
    with pytest.raises(SystemExit):
        _args("--processes", "0")
