"""The kit's one results cache: per-image rows, written incrementally, resumable, atomic.

A run is identified by its configuration (model, data, split, n_images, fill, seed, methods and
their options...) and by a fingerprint of the code and checkpoint that compute it. The cache
folder is ``<root>/<name>-<hash of the configuration>``: a changed parameter gives another
folder, so old and new results never mix.

Each finished batch is one ``part-NNNNN.csv`` (its rows) with ``part-NNNNN.json`` beside it (its
timings and forward counts). Both are written to a temporary file and renamed into place, the
JSON first: a part exists only once complete, and an interrupted run loses at most the batch in
flight. A rerun reads the parts, skips the images they hold and computes only the rest.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

import pandas as pd
import torch

from .data import Batch, ImageDataset, iter_batches
from .paths import PACKAGE_DIR
from .progress import progress as progress_bar

__all__ = ["ResultsCache", "atomic_write_text", "code_fingerprint", "config_hash", "fingerprint"]


def config_hash(config: dict[str, Any]) -> str:
    """Stable 12-hex-digit hash of a JSON-serialisable configuration."""
    blob = json.dumps(config, sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:12]


def fingerprint(paths: Iterable[str | os.PathLike]) -> str:
    """12-hex-digit SHA-256 over the bytes of ``paths`` (missing files count as absent).

    Part of every cache key: results computed by other code (or another checkpoint) never mix
    with this code's.
    """
    h = hashlib.sha256()
    for path in paths:
        p = Path(path)
        h.update(p.name.encode())
        h.update(p.read_bytes() if p.is_file() else b"<absent>")
    return h.hexdigest()[:12]


def code_fingerprint(*extra: str | os.PathLike) -> str:
    """:func:`fingerprint` of every Python module of the package (found, never listed by hand)
    plus ``extra`` files (e.g. a checkpoint)."""
    return fingerprint([*sorted(PACKAGE_DIR.rglob("*.py")), *extra])


def atomic_write_text(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` via a temporary file in the same folder and ``os.replace``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


class ResultsCache:
    """Per-image results of one configuration under ``root``."""

    def __init__(self, root: str | os.PathLike, name: str, config: dict[str, Any]) -> None:
        self.config = json.loads(json.dumps(config, sort_keys=True, default=str))
        self.key = config_hash(self.config)
        self.dir = Path(root) / f"{name}-{self.key}"
        self.dir.mkdir(parents=True, exist_ok=True)
        cfg_file = self.dir / "config.json"
        if cfg_file.exists():
            stored = json.loads(cfg_file.read_text())
            if stored != self.config:
                raise RuntimeError(f"{cfg_file} holds another configuration than this run's "
                                   "(hash collision or a hand-edited file); remove the folder")
        else:
            atomic_write_text(cfg_file, json.dumps(self.config, indent=2, sort_keys=True) + "\n")

    def _parts(self) -> list[Path]:
        return sorted(self.dir.glob("part-*.csv"))

    def load(self) -> pd.DataFrame:
        """Every cached row (empty frame when nothing is cached yet)."""
        parts = self._parts()
        if not parts:
            return pd.DataFrame()
        return pd.concat([pd.read_csv(p) for p in parts], ignore_index=True)

    def done(self, column: str = "file") -> set:
        """Values of ``column`` present in the cache (the images already computed)."""
        frame = self.load()
        return set(frame[column]) if len(frame) else set()

    def pending(self, dataset: ImageDataset, preprocess: Callable, batch_size: int,
                device: torch.device | str | None = None, desc: str = "",
                progress: bool = True) -> Iterator[Batch]:
        """Batches of the images of ``dataset`` that are not cached yet (the resumption).

        A progress bar counts a batch when the next one is asked for, i.e. once the caller has
        written it.
        """
        done = self.done()
        todo = [i for i in range(len(dataset)) if dataset.file_name(i) not in done]
        with progress_bar(len(todo), desc, unit="img", disable=not (progress and todo)) as bar:
            for batch in iter_batches(dataset, preprocess, batch_size, indices=todo,
                                      device=device):
                yield batch
                bar.update(len(batch))

    def batch_stats(self) -> list[dict[str, Any]]:
        """The per-batch records (timings, forward counts) of every completed part."""
        return [json.loads(p.with_suffix(".json").read_text()) for p in self._parts()
                if p.with_suffix(".json").exists()]

    def write_batch(self, rows: Iterable[dict[str, Any]], stats: dict[str, Any] | None = None
                    ) -> Path:
        """Atomically add one batch: its rows and, beside them, its stats."""
        frame = pd.DataFrame(list(rows))
        existing = self._parts()
        number = int(existing[-1].stem.split("-")[1]) + 1 if existing else 0
        part = self.dir / f"part-{number:05d}.csv"
        atomic_write_text(part.with_suffix(".json"), json.dumps(stats or {}, sort_keys=True))
        atomic_write_text(part, frame.to_csv(index=False))
        return part
