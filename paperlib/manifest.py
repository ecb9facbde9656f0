"""An output folder holds one run: the manifest of an evaluation's files.

:func:`paperlib.outputs.write_evaluation` ends with :func:`settle`: ``evaluation_manifest.json``
(:data:`MANIFEST`) in the output folder names the run key, its settings, its results store and the
SHA-256 of every file it wrote (paths relative to the folder, so that a committed manifest names no
machine's folders). A file the folder's previous manifest listed for **another** run and this call
did not rewrite (e.g. ``claims.*`` of an earlier run with more methods, beside a new run's Table 3)
is moved to ``<its folder>/stale/<that run key>/``, with one line saying so; files of the **same**
run that a call writing fewer groups left alone stay listed. :func:`check_manifest` (run by
``paperlib readme``) names a listed file whose bytes differ from its checksum: a table that another
run or a hand replaced.

Torch-free (the reports and ``paperlib readme`` read it).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from .atomic import atomic_write_text

__all__ = ["MANIFEST", "check_manifest", "read_manifest", "settle"]

#: The file in an output folder naming the run whose files it holds.
MANIFEST = "evaluation_manifest.json"


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _listed(out: Path, path: Path) -> str:
    """A file as the manifest names it: relative to ``out`` (``../figures/x.png``)."""
    return Path(os.path.relpath(path.resolve(), out.resolve())).as_posix()


def read_manifest(out: str | Path) -> dict[str, Any] | None:
    """The output folder's manifest (``None`` when it has none); a file that is not one is an
    error naming it."""
    path = Path(out) / MANIFEST
    if not path.is_file():
        return None
    try:
        manifest = json.loads(path.read_text())
    except ValueError as exc:
        raise ValueError(f"{path} is not the JSON manifest an evaluation writes: {exc}") from exc
    if not isinstance(manifest, dict) or not isinstance(manifest.get("files"), dict):
        raise ValueError(f"{path} is not an evaluation manifest (expected a 'files' mapping)")
    return manifest


def settle(out: Path, run: str, store: Path, settings: Mapping[str, Any],
           paths: Iterable[Path]) -> Path:
    """Move aside the previous run's files that this call did not rewrite (module docstring),
    then write the manifest of ``paths`` for ``run``; returns the manifest's path."""
    previous = read_manifest(out)
    files = {_listed(out, p): _sha256(p) for p in dict.fromkeys(paths) if p.is_file()}
    if previous is not None:
        old = str(previous.get("run", "unknown"))
        moved = []
        for name, digest in previous["files"].items():
            path = out / name
            if name in files or not path.is_file():
                continue
            if old == run:
                files[name] = digest
                continue
            aside = path.parent / "stale" / old / path.name
            aside.parent.mkdir(parents=True, exist_ok=True)
            shutil.move(str(path), str(aside))
            moved.append(name)
        if moved:
            print(f"moved {len(moved)} file(s) of run {old}, which this run ({run}) does not "
                  f"write, to stale/{old}/: {', '.join(moved)}", flush=True)
    record = {"run": run, "store": _listed(out, store), "settings": dict(settings),
              "files": dict(sorted(files.items()))}
    path = out / MANIFEST
    atomic_write_text(path, json.dumps(record, indent=1, default=str) + "\n")
    return path


def check_manifest(out: str | Path) -> list[str]:
    """One line per file listed in ``out``'s manifest whose bytes differ from its checksum
    (written by another run, or edited); a folder without a manifest has none to report."""
    out = Path(out)
    manifest = read_manifest(out)
    if manifest is None:
        return []
    problems = []
    for name, digest in manifest["files"].items():
        path = out / name
        if path.is_file() and _sha256(path) != digest:
            problems.append(f"{path} differs from what run {manifest.get('run')} wrote (its "
                            f"SHA-256 in {out / MANIFEST}): it comes from another run or was "
                            "edited; rerun the evaluation into this folder")
    return problems
