"""Notebooks are safe to rerun: run by hand with no folder named, they write beside the full run
(results/scratch/, figures/scratch/), never over it; every committed notebook carries its small
run's outputs."""

from pathlib import Path

import nbformat
import pytest

from paperlib import notebook
from paperlib.paths import REPO_ROOT

NOTEBOOKS = sorted((REPO_ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"))


@pytest.fixture
def repo(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setattr(notebook, "REPO_ROOT", tmp_path)
    monkeypatch.delenv("PAPERLIB_RESULTS", raising=False)
    monkeypatch.delenv("PAPERLIB_FIGURES", raising=False)
    return tmp_path


def test_by_hand_a_notebook_writes_into_scratch_folders_and_says_so(repo, capsys):
    results, figures = notebook.output_folders(None, None)
    assert (results, figures) == (repo / "results" / "scratch", repo / "figures" / "scratch")
    assert results.is_dir() and figures.is_dir()
    out = capsys.readouterr().out
    assert out.count("\n") == 1
    assert "results/scratch and figures/scratch" in out


def test_named_folders_and_the_environment_are_used_as_given(repo, capsys, monkeypatch):
    assert notebook.output_folders(repo / "a", repo / "b") == (repo / "a", repo / "b")
    monkeypatch.setenv("PAPERLIB_RESULTS", str(repo / "r"))
    monkeypatch.setenv("PAPERLIB_FIGURES", str(repo / "f"))
    assert notebook.output_folders(None, None) == (repo / "r", repo / "f")
    assert capsys.readouterr().out == ""
    monkeypatch.delenv("PAPERLIB_FIGURES")
    results, figures = notebook.output_folders(None, None)
    assert results == repo / "r" and figures == repo / "figures" / "scratch"
    assert "figures/scratch" in capsys.readouterr().out


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_every_notebook_resolves_its_folders_right_after_its_parameters(path: Path):
    cells = nbformat.read(path, as_version=4).cells
    at = next(i for i, c in enumerate(cells) if "parameters" in c.metadata.get("tags", []))
    line = "output_dir, figures_dir = output_folders(output_dir, figures_dir)"
    assert line in cells[at + 1].source


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_every_committed_notebook_carries_its_small_runs_outputs(path: Path):
    """Every code cell ran (numbered 1, 2, ... as `paperlib reproduce --refresh-committed` leaves
    them) and the notebook shows what it computed."""
    code = [c for c in nbformat.read(path, as_version=4).cells if c.cell_type == "code"]
    assert [c.execution_count for c in code] == list(range(1, len(code) + 1)), (
        f"{path.name}: not executed (run `paperlib reproduce --refresh-committed`)")
    assert sum(bool(c.outputs) for c in code) >= len(code) // 2, f"{path.name}: few outputs"
