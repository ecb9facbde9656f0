"""Papermill recognises every assignment of each notebook's ``parameters`` cell.

Papermill's Python translator reads the cell line by line, not with a parser: a line that holds
more than one ``=`` character (anywhere: a trailing comment's ``index = 2``, ``==``, ``<=``, a
keyword argument, a string) is skipped with the warning "Unable to parse line ...", and
``make reproduce`` then warns "Passed unknown parameter" for it. A ``#`` inside a string value
cuts the default papermill reports. These tests compare papermill's parameters with the
assignments ``ast`` finds in the cell, names and values.
"""

from __future__ import annotations

import ast
import json
import logging
from pathlib import Path

import papermill
import pytest

NOTEBOOKS = sorted((Path(__file__).resolve().parent.parent / "notebooks").glob("*.ipynb"))


def parameters_source(path: Path) -> str:
    """The source of the first cell tagged ``parameters`` (fails when there is none)."""
    nb = json.loads(path.read_text(encoding="utf-8"))
    for cell in nb["cells"]:
        if "parameters" in cell.get("metadata", {}).get("tags", []):
            source = cell["source"]
            return "".join(source) if isinstance(source, list) else source
    pytest.fail(f"{path.name} has no cell tagged 'parameters'")


def assignments(source: str) -> dict[str, str]:
    """``name -> ast.dump of the value`` for each top-level assignment to a plain name."""
    found: dict[str, str] = {}
    for node in ast.parse(source).body:
        if isinstance(node, ast.Assign):
            targets, value = node.targets, node.value
        elif isinstance(node, ast.AnnAssign) and node.value is not None:
            targets, value = [node.target], node.value
        else:
            continue
        for target in targets:
            if isinstance(target, ast.Name):
                found[target.id] = ast.dump(value)
    return found


def check_parameters(path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """Assert that papermill infers exactly the cell's assignments, values included, and logs
    no "Unable to parse" warning."""
    expected = assignments(parameters_source(path))
    assert expected, f"{path.name}: the parameters cell assigns nothing"
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="papermill"):
        inferred = papermill.inspect_notebook(path)
    unparsed = [r.getMessage() for r in caplog.records
                if r.name.startswith("papermill") and "Unable to parse" in r.getMessage()]
    assert not unparsed, (f"{path.name}: papermill cannot parse {unparsed}; a parameter line may "
                          "hold only one '=' (none in its comment or value)")
    assert list(inferred) == list(expected), (
        f"{path.name}: papermill misses {sorted(set(expected) - set(inferred))}, "
        f"invents {sorted(set(inferred) - set(expected))}")
    for name, value in expected.items():
        default = inferred[name]["default"]
        try:
            parsed = ast.dump(ast.parse(default, mode="eval").body)
        except SyntaxError:
            parsed = None
        assert parsed == value, (f"{path.name}: papermill reads {name}'s default as {default!r} "
                                 "(a '#' inside the value?)")


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_papermill_recognises_every_parameter(path: Path, caplog: pytest.LogCaptureFixture):
    check_parameters(path, caplog)


def test_notebooks_found():
    assert len(NOTEBOOKS) >= 5


@pytest.mark.parametrize("line", [
    'n_images = 8  # class index = 2 mod 4',
    'fill = "black"  # E = x * M',
    'n = 3  # n <= 4',
    'size = dict(h=1)',
    'color = "#fff"  # colour',
])
def test_check_catches_what_papermill_misreads(line: str, tmp_path: Path,
                                               caplog: pytest.LogCaptureFixture):
    """The check is not vacuous: each of these lines is misread by papermill and fails it."""
    nb = {"cells": [{"cell_type": "code", "execution_count": None, "id": "p",
                     "metadata": {"tags": ["parameters"]}, "outputs": [],
                     "source": f"seed = 0  # fine\n{line}\n"}],
          "metadata": {"kernelspec": {"name": "python3", "display_name": "Python 3",
                                      "language": "python"},
                       "language_info": {"name": "python"}},
          "nbformat": 4, "nbformat_minor": 5}
    path = tmp_path / "bad.ipynb"
    path.write_text(json.dumps(nb))
    with pytest.raises(AssertionError):
        check_parameters(path, caplog)


def test_every_parameter_make_reproduce_passes_is_declared_by_its_notebook():
    """``make reproduce ARGS=...`` passes parameters to each notebook: a name the notebook does not
    declare would be ignored by papermill (with a warning) and the option silently lost."""
    from paperlib import reproduce
    from paperlib.cli import build_parser

    args = build_parser(["reproduce"]).parse_args([
                            "reproduce", "--data-dir", ".", "--model", "efficientnet_lite1",
                            "--n-images", "5", "--split", "all", "--target-layer", "blocks.6",
                            "--precision", "bf16", "--compile"])
    for name in reproduce.NOTEBOOKS:
        path = next(p for p in NOTEBOOKS if p.stem == name)
        params = reproduce.parameters_for(name, args)
        missing = set(params) - set(assignments(parameters_source(path)))
        assert not missing, f"{name} does not declare {sorted(missing)}"
    fast = reproduce.parameters_for("04_tables", args)
    assert fast["precision"] == "bf16" and fast["compile"] is True and fast["split"] == "all"
    assert "precision" not in reproduce.parameters_for("01_model_selection", args)
    assert reproduce.parameters_for("02_gradcam", args)["target_layer"] == "blocks.6"
    assert "target_layer" not in reproduce.parameters_for("06_your_model", args)
