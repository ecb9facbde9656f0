"""The one ``paperlib`` command: help without torch, every subcommand's flags, one-line errors
with their exit status, one name and one meaning per flag, the allocator left alone on import."""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path

import pytest

from paperlib import cli

REPO = Path(__file__).resolve().parent.parent
#: Subcommands whose flags need no method registry: their --help imports no torch.
LIGHT = ("reproduce", "matrix", "readme", "train-attention", "data", "precision")


def _run(code: str, **env: str) -> subprocess.CompletedProcess:
    environ = {k: v for k, v in os.environ.items() if k != "PAPERLIB_MALLOC"}
    environ.update(env, PYTHONPATH=str(REPO))
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          env=environ, cwd=REPO, timeout=120)


def _flags(parser: argparse.ArgumentParser) -> dict[str, argparse.Action]:
    return {s: a for a in parser._actions for s in a.option_strings}


def _subparsers() -> dict[str, argparse.ArgumentParser]:
    parser = cli.build_parser()
    (sub,) = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    return dict(sub.choices)


def test_help_lists_every_command_and_imports_no_torch():
    code = ("import sys, io, contextlib\n"
            "from paperlib import cli\n"
            f"for argv in [['--help']] + [[c, '--help'] for c in {LIGHT!r}]:\n"
            "    buf = io.StringIO()\n"
            "    try:\n"
            "        with contextlib.redirect_stdout(buf):\n"
            "            cli.main(argv)\n"
            "    except SystemExit as e:\n"
            "        assert e.code == 0, (argv, e.code)\n"
            "    print(buf.getvalue())\n"
            "assert 'torch' not in sys.modules, 'torch imported'\n"
            "assert 'numpy' not in sys.modules, 'numpy imported'\n")
    proc = _run(code)
    assert proc.returncode == 0, proc.stderr
    for name in cli.COMMANDS:
        assert name in proc.stdout
    assert "usage: paperlib reproduce" in proc.stdout and "--refresh-committed" in proc.stdout
    assert "usage: paperlib data" in proc.stdout and "--data-dir" in proc.stdout


def test_paperlib_help_is_fast_and_import_paperlib_is_lazy():
    proc = subprocess.run([sys.executable, "-m", "paperlib", "--help"], capture_output=True,
                          text=True, env={**os.environ, "PYTHONPATH": str(REPO)}, timeout=10)
    assert proc.returncode == 0 and "train-attention" in proc.stdout
    code = ("import sys, paperlib\n"
            "assert 'torch' not in sys.modules\n"
            "from paperlib.perf import malloc_mode\n"
            "assert malloc_mode() == 'system (not configured)', malloc_mode()\n"
            "print(len(paperlib.METHODS), paperlib.load_model.__module__)\n"
            "assert 'attention-trained' in paperlib.METHODS\n"
            "assert malloc_mode() == 'system (not configured)', malloc_mode()\n")
    proc = _run(code)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split()[1] == "paperlib.models"


def test_the_allocator_is_set_by_the_long_commands_and_on_request():
    keep = "keep (glibc mallopt"
    proc = _run("import paperlib.perf as p; print(p.malloc_mode())", PAPERLIB_MALLOC="keep")
    assert proc.stdout.startswith(keep), proc.stderr
    proc = _run("import paperlib.perf as p; print(p.malloc_mode())", PAPERLIB_MALLOC="system")
    assert proc.stdout.strip() == "system (not configured)", proc.stderr
    # a long command sets it before it runs (here it fails at once: no such data folder)
    proc = _run("import sys\nfrom paperlib import cli, perf\n"
                "rc = cli.main(['train-attention', '--data-dir', '/nonexistent/images'])\n"
                "print(rc, perf.malloc_mode())\n")
    assert proc.stdout.startswith("2 " + keep), proc.stdout + proc.stderr
    assert [c for c, cmd in cli.COMMANDS.items() if cmd.long_run] == [
        "evaluate", "reproduce", "matrix", "train-attention", "precision"]


def test_every_subcommand_parses_its_defaults():
    parsers = _subparsers()
    assert list(parsers) == list(cli.COMMANDS) == [
        "explain", "evaluate", "reproduce", "matrix", "readme", "train-attention", "data",
        "precision", "book", "verify-store"]
    for name, p in parsers.items():
        argv = ["img.jpg"] if name == "explain" else []
        args = p.parse_args(argv)
        assert not hasattr(args, "debug") or args.debug is False
    top = cli.build_parser()
    args = top.parse_args(["matrix", "--model", "efficientnet_lite0", "efficientnet_lite1",
                           "--layers", "last", "--n-images", "all"])
    assert (args.model, args.layers, args.n_images) == (
        ["efficientnet_lite0", "efficientnet_lite1"], ["last"], None)
    args = top.parse_args(["explain", "a.jpg", "--target-class", "goldfish"])
    assert args.target_class == "goldfish" and args.out == "explanations"
    args = top.parse_args(["evaluate", "--target-mode", "label", "--compile", "--out", "o"])
    assert (args.target, args.compile, args.out) == ("label", True, "o")
    assert top.parse_args(["evaluate"]).compile is None  # None: the metric setting's default
    args = top.parse_args(["reproduce", "--model", "efficientnet_lite1", "--compile"])
    assert (args.model, args.compile) == ("efficientnet_lite1", True)
    assert top.parse_args(["data", "--data-dir", "x"]).data_dir == "x"
    assert top.parse_args(["readme", "--results-dir", "r"]).results_dir == "r"


def test_one_name_and_one_meaning_per_flag():
    parsers = _subparsers()
    banned = {"--model-name", "--output-dir", "--results", "--models", "--target", "--dest"}
    meaning: dict[str, set[str]] = {}
    for name, p in parsers.items():
        flags = _flags(p)
        assert not banned & set(flags), (name, banned & set(flags))
        if "--compile" in flags:
            assert isinstance(flags["--compile"], argparse._StoreTrueAction), name
        for flag in ("--n-images", "--batch-size"):
            if flag in flags:
                meaning.setdefault(flag, set()).add(flags[flag].type.__name__)
        for flag in ("--model", "--out", "--data-dir", "--device", "--seed", "--methods",
                     "--target-layer"):
            if flag in flags:
                meaning.setdefault(flag, set()).add(flags[flag].dest)
    assert meaning["--n-images"] == {"n_images"} and meaning["--batch-size"] == {"positive_int"}
    for flag in ("--model", "--out", "--data-dir", "--device", "--seed", "--methods",
                 "--target-layer"):
        assert meaning[flag] == {flag[2:].replace("-", "_")}, flag
    # every boolean setting of the registries is a flag, never a value
    for name in ("explain", "evaluate"):
        for flag, action in _flags(parsers[name]).items():
            assert action.type is None or action.type.__name__ != "<lambda>", (name, flag)
    assert "--compile" in _flags(parsers["evaluate"]) and "--target-mode" in _flags(
        parsers["evaluate"]) and "--target-class" in _flags(parsers["explain"])


@pytest.mark.parametrize("argv,status,message", [
    (["evaluate", "--n-images", "0"], 2,
     "paperlib evaluate: error: argument --n-images: expected a positive integer or 'all', "
     "got 0 (see paperlib evaluate --help)"),
    (["explain"], 2, "paperlib explain: error: the following arguments are required: "
                     "IMAGE_OR_FOLDER (see paperlib explain --help)"),
    (["evaluat"], 2, "paperlib: error: argument COMMAND: invalid choice: 'evaluat'"),
    (["matrix", "--batch-size", "-1"], 2,
     "paperlib matrix: error: argument --batch-size: expected a positive integer, got -1"),
    (["evaluate", "--target-mode", "class"], 2,
     "paperlib evaluate: error: argument --target-mode: invalid choice: 'class'"),
])
def test_usage_errors_are_one_line(argv, status, message, capsys):
    with pytest.raises(SystemExit) as exc:
        cli.main(argv)
    assert exc.value.code == status
    err = capsys.readouterr().err
    assert err.startswith(message) and err.count("\n") == 1, err


def test_evaluate_without_a_data_folder_names_it(tmp_path):
    missing = tmp_path / "no-images"
    proc = subprocess.run(
        [sys.executable, "-m", "paperlib", "evaluate", "--data-dir", str(missing), "--model",
         "efficientnet_lite0", "--device", "cpu", "--out", str(tmp_path / "out")],
        capture_output=True, text=True, cwd=REPO, timeout=300,
        env={**os.environ, "PYTHONPATH": str(REPO), "PAPERLIB_OFFLINE": "1"})
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr
    assert proc.stderr.strip() == (
        f"paperlib evaluate: error: image folder {missing} (from the argument) does not exist; "
        "expected a folder of <wnid>_<name>.JPEG files or one sub-folder per wnid. Set "
        "PAPERLIB_DATA, pass the path, or run `make data` to download the public ImageNet "
        "sample")


def test_failures_are_one_line_and_debug_shows_the_traceback(monkeypatch, capsys):
    def broken(args: argparse.Namespace) -> int:
        return {}[0]

    def refused(args: argparse.Namespace) -> int:
        raise RuntimeError("the server refused")

    monkeypatch.setitem(cli.COMMANDS, "readme", cli.Command("x", lambda p: None, broken))
    assert cli.main(["readme"]) == 1
    assert capsys.readouterr().err == "paperlib readme: error: KeyError: 0\n"
    with pytest.raises(KeyError):
        cli.main(["readme", "--debug"])
    with pytest.raises(KeyError):
        cli.main(["--debug", "readme"])
    monkeypatch.setitem(cli.COMMANDS, "data", cli.Command("x", lambda p: None, refused))
    assert cli.main(["data"]) == 1
    assert capsys.readouterr().err == "paperlib data: error: the server refused\n"


def test_no_module_keeps_its_own_command_line():
    package = REPO / "paperlib"
    for path in sorted(package.glob("*.py")):
        text = path.read_text()
        if path.name != "cli.py":
            assert "ArgumentParser(" not in text, path.name
        if path.name != "__main__.py":
            assert '__name__ == "__main__"' not in text, path.name
    assert 'paperlib = "paperlib.cli:main"' in (REPO / "pyproject.toml").read_text()
    assert "paperlib-train-attention" not in (REPO / "pyproject.toml").read_text()
    makefile = (REPO / "Makefile").read_text()
    for command in ("reproduce", "matrix", "data", "train-attention", "readme"):
        assert f"$(PY) -m paperlib {command}" in makefile, command
