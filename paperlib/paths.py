"""Where the kit reads data and writes results.

Every location can be overridden by an environment variable so that tests and CI never write into
the repository's own ``results/`` and ``figures/``:

========================  ==================================  ===============================
what                      environment variable                default
========================  ==================================  ===============================
images                    ``PAPERLIB_DATA``                   ``<repo>/data/imagenet-sample``
tables, caches            ``PAPERLIB_RESULTS``                ``<repo>/results``
figures                   ``PAPERLIB_FIGURES``                ``<repo>/figures``
========================  ==================================  ===============================
"""

from __future__ import annotations

import os
from pathlib import Path

#: The repository that holds this package (``paperlib/..``).
REPO_ROOT = Path(__file__).resolve().parent.parent
#: Package resources shipped with the code (class list, attention checkpoints).
PACKAGE_DIR = Path(__file__).resolve().parent


def _from_env(var: str, default: Path) -> Path:
    value = os.environ.get(var)
    return Path(value).expanduser() if value else default


def default_data_dir() -> Path:
    """``PAPERLIB_DATA`` if set, else ``data/imagenet-sample`` in the repository."""
    return _from_env("PAPERLIB_DATA", REPO_ROOT / "data" / "imagenet-sample")


def results_dir(path: str | os.PathLike | None = None) -> Path:
    """The folder for tables and per-image results (created if missing)."""
    out = Path(path) if path is not None else _from_env("PAPERLIB_RESULTS", REPO_ROOT / "results")
    out.mkdir(parents=True, exist_ok=True)
    return out


def figures_dir(path: str | os.PathLike | None = None) -> Path:
    """The folder for figures (created if missing)."""
    out = Path(path) if path is not None else _from_env("PAPERLIB_FIGURES", REPO_ROOT / "figures")
    out.mkdir(parents=True, exist_ok=True)
    return out
