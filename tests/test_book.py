"""The rendered book (paperlib.book): its sources staged from the committed notebooks (code
collapsed, widgets dropped, nothing executed) and, where Jupyter Book is installed (`make book`),
built into the pages CI checks."""

from __future__ import annotations

import json

import pytest

from paperlib import book
from paperlib.saved_notebook import WIDGET


def test_the_sources_show_which_run_and_collapse_the_code(tmp_path):
    results = tmp_path / "results"
    (results / "notebooks").mkdir(parents=True)
    (results / "RESULTS.md").write_text("# Results\n")
    full = results / "notebooks" / "04_tables.ipynb"
    full.write_text(json.dumps({
        "cells": [{"cell_type": "code", "metadata": {}, "source": "1", "execution_count": 1,
                   "outputs": [{"output_type": "display_data", "metadata": {},
                                "data": {WIDGET: {"model_id": "x"}}},
                               {"output_type": "stream", "name": "stdout", "text": "ok"}]},
                  {"cell_type": "markdown", "metadata": {}, "source": "# t"}],
        "metadata": {"widgets": {"state": {}}}, "nbformat": 4, "nbformat_minor": 5}))
    sources = book.notebook_sources("auto", results)
    assert sources["04_tables"] == (full, "full run")
    assert sources["05_figures"][1] == "committed small run"
    assert all(run == "committed small run"
               for _, run in book.notebook_sources("committed", results).values())
    with pytest.raises(FileNotFoundError, match="no full-size executed copy .*01_model_selection"):
        book.notebook_sources("full", results)
    with pytest.raises(ValueError, match="source must be one of"):
        book.notebook_sources("some", results)
    src = book.stage(tmp_path / "src", "auto", results)
    staged = json.loads((src / "04_tables.ipynb").read_text())
    code = staged["cells"][0]
    assert code["metadata"]["tags"] == ["hide-input"]
    assert [o["output_type"] for o in code["outputs"]] == ["stream"]
    assert "widgets" not in staged["metadata"] and "tags" not in staged["cells"][1]["metadata"]
    assert sorted(p.name for p in src.iterdir()) == sorted(
        ["_config.yml", "_toc.yml", "intro.md", "RESULTS.md",
         *(f"{n}.ipynb" for n in book.NOTEBOOKS)])
    assert "execute_notebooks: \"off\"" in (src / "_config.yml").read_text()
    intro = (src / "intro.md").read_text()
    assert "* `04_tables`: the full run" in intro and "* `06_your_model`: the committed" in intro


def test_the_book_builds_every_page_offline(tmp_path):
    pytest.importorskip("jupyter_book")
    html = book.build(tmp_path / "book", "committed", book.REPO_ROOT / "results")
    assert book.missing_pages(html) == []
    page = (html / "04_tables.html").read_text()
    assert "hide-input" in page
    remote = [p.name for p in html.glob("*.html") if 'src="http' in p.read_text()]
    assert remote == []   # nothing loaded from a CDN when read
