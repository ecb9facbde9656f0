"""``make book``: a static HTML site of the full run (Jupyter Book 1, Sphinx; nothing downloaded).

:func:`stage` writes the book's sources into a folder: ``_config.yml`` and ``_toc.yml``, an
``intro.md`` page (which run the pages show, and how to rebuild them), ``RESULTS.md`` (the results
page ``make readme`` writes) and a copy of each numbered notebook -- the full-size executed copy of
``make reproduce`` (``results/notebooks/``) when there is one, else the committed small run -- with
every code cell's input collapsed (the ``hide-input`` tag: figures and tables first, the code one
click away) and nothing executed again. :func:`build` runs ``jupyter-book build`` on them and
:func:`missing_pages` names the pages a build should have made (CI checks them).

    python -m paperlib book [--out build/book] [--source auto|full|committed] [--check]
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

from .atomic import atomic_write_text
from .paths import REPO_ROOT, results_dir
from .saved_notebook import sanitise

__all__ = ["NOTEBOOKS", "build", "missing_pages", "notebook_sources", "stage"]

#: The book's notebooks, in reading order.
NOTEBOOKS = ("01_model_selection", "02_gradcam", "03_attention", "04_tables", "05_figures",
             "06_your_model")
SOURCES = ("auto", "full", "committed")

CONFIG = """\
title: "Attention-guided Grad-CAM: the reproduction kit's full run"
author: paperlib
only_build_toc_files: true
execute:
  execute_notebooks: "off"
parse:
  myst_heading_anchors: 3
  myst_enable_extensions: [dollarmath, colon_fence]
html:
  use_repository_button: false
  use_issues_button: false
  use_edit_page_button: false
  home_page_in_navbar: true
launch_buttons:
  notebook_interface: none
sphinx:
  config:
    html_show_copyright: false
    nb_merge_streams: true
    suppress_warnings: ["myst.header", "misc.highlighting_failure"]
"""


def notebook_sources(source: str = "auto", results: Path | None = None
                     ) -> dict[str, tuple[Path, str]]:
    """Each notebook's file and which run it shows (``"full run"`` / ``"committed small run"``):
    ``source="full"`` needs every full-size copy, ``"committed"`` takes the committed notebooks,
    ``"auto"`` the full copy where there is one."""
    if source not in SOURCES:
        raise ValueError(f"source must be one of {list(SOURCES)}, got {source!r}")
    full = (results or results_dir()) / "notebooks"
    out = {}
    for name in NOTEBOOKS:
        executed = full / f"{name}.ipynb"
        committed = REPO_ROOT / "notebooks" / f"{name}.ipynb"
        if source == "full" and not executed.is_file():
            raise FileNotFoundError(f"no full-size executed copy {executed}: run `make reproduce` "
                                    "first, or build from the committed notebooks "
                                    "(--source committed)")
        use_full = source != "committed" and executed.is_file()
        out[name] = (executed, "full run") if use_full else (committed, "committed small run")
    return out


def _collapsed(path: Path, dest: Path) -> None:
    """Copy a notebook, sanitised (:func:`paperlib.saved_notebook.sanitise`, its records kept:
    no progress widget, whose state would make the page load a widget manager from a CDN), with
    every code cell tagged ``hide-input``."""
    shutil.copyfile(path, dest)
    sanitise(dest, keep_records=True)
    nb = json.loads(dest.read_text())
    for cell in nb.get("cells", []):
        if cell.get("cell_type") == "code":
            tags = cell.setdefault("metadata", {}).setdefault("tags", [])
            if "hide-input" not in tags:
                tags.append("hide-input")
    atomic_write_text(dest, json.dumps(nb, indent=1, ensure_ascii=False) + "\n")


def _shown(path: Path) -> str:
    return str(path.relative_to(REPO_ROOT) if path.is_relative_to(REPO_ROOT) else path)


def stage(dest: Path, source: str = "auto", results: Path | None = None) -> Path:
    """Write the book's sources into ``dest`` (replaced); returns ``dest``."""
    results = results or results_dir()
    sources = notebook_sources(source, results)
    if dest.exists():
        shutil.rmtree(dest)
    dest.mkdir(parents=True)
    atomic_write_text(dest / "_config.yml", CONFIG)
    chapters = "".join(f"  - file: {name}\n" for name in NOTEBOOKS)
    atomic_write_text(dest / "_toc.yml", "format: jb-book\nroot: intro\nchapters:\n"
                      "  - file: RESULTS\n" + chapters)
    page = results / "RESULTS.md"
    if not page.is_file():
        raise FileNotFoundError(f"no {page}: run `make readme` (or `make reproduce`) first")
    shutil.copyfile(page, dest / "RESULTS.md")
    shown = "\n".join(f"* `{name}`: the {run} (`{_shown(path)}`)"
                      for name, (path, run) in sources.items())
    atomic_write_text(dest / "intro.md", f"""# The full run

An & Joe (2022), *Attention Map-Guided Visual Explanations for Deep Neural Networks*, reproduced
by the kit `paperlib`: every table and figure of `make reproduce`, the paper's numbers beside the
kit's. **Results** is `results/RESULTS.md`; the chapters are the executed notebooks, their code
collapsed (click a cell's toggle to see it). Nothing here ran again while the book was built.

{shown}

Rebuild: `make book` (after `make reproduce` for the full-size notebooks).
""")
    for name, (path, _) in sources.items():
        _collapsed(path, dest / f"{name}.ipynb")
    return dest


#: ``jupyter-book`` run by this interpreter (its package has no ``__main__``).
_JUPYTER_BOOK = "import sys; from jupyter_book.cli.main import main; sys.exit(main())"


def build(out: Path, source: str = "auto", results: Path | None = None) -> Path:
    """Stage the sources into ``out/src`` and build the HTML into ``out/_build/html``; returns
    the HTML folder. A failed build is an error naming the log's last lines."""
    src = stage(out / "src", source, results)
    done = subprocess.run([sys.executable, "-c", _JUPYTER_BOOK, "build", str(src),
                           "--path-output", str(out), "--quiet"],
                          capture_output=True, text=True, check=False)
    html = out / "_build" / "html"
    if done.returncode != 0:
        tail = (done.stdout + done.stderr).strip().splitlines()[-5:]
        raise RuntimeError(f"jupyter-book build of {src} failed (exit {done.returncode}): "
                           + " | ".join(tail))
    return html


def missing_pages(html: Path) -> list[Path]:
    """The pages a build of the book must have made that are not in ``html``."""
    wanted = ["index.html", "intro.html", "RESULTS.html", *(f"{n}.html" for n in NOTEBOOKS)]
    return [html / name for name in wanted if not (html / name).is_file()]


def main(out: str | Path | None = None, source: str = "auto", check: bool = False) -> int:
    """``paperlib book``: build the book (default into ``build/book``); with ``check``, return 1
    naming the pages the build did not make."""
    folder = Path(out) if out is not None else REPO_ROOT / "build" / "book"
    html = build(folder, source)
    print(f"book: {html / 'index.html'}")
    missing = missing_pages(html)
    if missing:
        print(f"paperlib book: missing pages: {', '.join(map(str, missing))}", file=sys.stderr)
        return 1 if check else 0
    return 0
