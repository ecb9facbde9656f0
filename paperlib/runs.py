"""The run ledger: a run's key, which of its images are still to do, and torchrun shards.

A **run** is identified by its configuration (model, data, split, methods and their options,
metric settings...), by a fingerprint of the code and checkpoint that compute it
(:func:`paperlib.fingerprint.code_fingerprint`), and -- when a dataset is given -- by the
fingerprint of the exact list of files evaluated (names, sizes, modification times:
:meth:`paperlib.data.ImageDataset.fingerprint`). Its key is
:func:`paperlib.fingerprint.config_hash` of all of that: a changed parameter, a changed module,
an added, removed or replaced image each give another run, so old and new results never mix. Its
rows live in the store ``<root>/<name>.sqlite`` (:class:`paperlib.store.ResultsStore`).

The ledger says *what* is left: :meth:`ResultsCache.pending` lists the images this process still
has to compute (in file order; under torchrun this rank's batches), and
:meth:`ResultsCache.stored_elsewhere` whether another process stored a batch meanwhile. The
caller decodes the images and draws the progress bar
(:func:`paperlib.evaluation.pending_batches`) and hands each computed batch back
(:meth:`ResultsCache.write_batch`).

**Sharded runs** (``torchrun``, :mod:`paperlib.distributed`): each rank writes only its own shard
file, ``<root>/<name>.shards/<run key>.rank<r>.sqlite`` (rollback journal, not WAL: it is never
shared while written, and WAL's shared memory does not work across machines on a network
filesystem), so no lock is ever taken across machines. Rank 0 alone opens the main store: it merges
the shards left by an earlier, killed run before anyone starts (so every shard resumes), tells the
ranks what is done, and after the last batch (:meth:`ResultsCache.gather`, a barrier) merges every
shard in one transaction each and removes them. A single process also merges a killed sharded
run's shards when it opens the run, but leaves them in place (a sharded job of the same run may
still be writing them; merging again skips what is there). The shards must be on a filesystem
every rank and rank 0 see (the usual shared results folder); run one sharded job per run at a
time.
"""

from __future__ import annotations

import contextlib
import json
import os
import sqlite3
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd

from . import distributed
from .fingerprint import config_hash
from .store import ResultsStore, StoreError

if TYPE_CHECKING:
    from .data import ImageDataset

__all__ = ["ResultsCache"]


class ResultsCache:
    """The rows of one run in the store ``<root>/<name>.sqlite`` (module docstring): resumption
    (:meth:`pending`, :meth:`stored_elsewhere`), one transaction per batch (:meth:`write_batch`),
    and under torch.distributed one shard per rank merged by rank 0 (:meth:`gather`).

    ``dataset``: the images of the run; the fingerprint of their exact file list joins the key,
    and batches are ordered by their first image's place in it. ``methods``: the methods every
    image needs a row of to count as done (rows without a ``method`` column: leave empty).

    Under torch.distributed the constructor and :meth:`gather` are collective: every rank calls
    them; the configurations of all ranks must be identical (else every rank raises, naming the
    differing fields).
    """

    def __init__(self, root: str | os.PathLike, name: str, config: dict[str, Any],
                 dataset: ImageDataset | None = None, methods: Sequence[str] = ()) -> None:
        config = json.loads(json.dumps(config, sort_keys=True, default=str))
        if dataset is not None:
            config["files"] = {"n": len(dataset), "fingerprint": dataset.fingerprint()}
        self.config: dict[str, Any] = config
        self.key = config_hash(config)
        self.name = name
        self.root = Path(root)
        self.path = self.root / f"{name}.sqlite"
        self.dataset = dataset
        self.methods = tuple(methods)
        self._position = {f: i for i, f in enumerate(dataset.files)} if dataset is not None else {}
        self.rank, self.world = distributed.rank(), distributed.world_size()
        self._main: ResultsStore | None = None
        self._shard: ResultsStore | None = None
        self._done: set[str] | None = None
        if self.world > 1:
            self._agree_on_the_run()
        error, done = None, None
        if self.rank == 0:
            try:
                self._main = ResultsStore(self.path)
                self._main.register(self.key, name, config)
                self._merge_shards(delete=False)   # a killed sharded run's rows: resumed
                if self.world > 1:
                    done = sorted(self._main.done(self.key, self.methods))
            except (StoreError, sqlite3.Error, OSError) as exc:
                if self.world == 1:
                    raise
                error = f"{type(exc).__name__}: {exc}"
        if self.world > 1:
            error, done = distributed.broadcast_object((error, done))
            if error is not None:
                raise StoreError(f"rank {self.rank}: rank 0 could not open {self.path}: {error}")
            self._done = set(done or ())
            self._shard = ResultsStore(self.shard_path(self.rank), wal=False)
            self._shard.register(self.key, name, config)

    def _agree_on_the_run(self) -> None:
        configs = distributed.all_gather_object(self.config)
        for r, other in enumerate(configs):
            if other != configs[0]:
                fields = sorted(k for k in set(other) | set(configs[0])
                                if other.get(k) != configs[0].get(k))
                raise StoreError(
                    f"rank {r}'s run differs from rank 0's in {fields}: every rank must see the "
                    "same code, settings and image files (names, sizes, modification times; copy "
                    "data between machines with `rsync -a` or `cp -a`, which keep them)")

    @property
    def shard_dir(self) -> Path:
        """Where the ranks of a sharded run write their shards."""
        return self.root / f"{self.name}.shards"

    def shard_path(self, rank: int) -> Path:
        """The shard file of ``rank`` for this run."""
        return self.shard_dir / f"{self.key}.rank{rank}.sqlite"

    def _merge_shards(self, delete: bool) -> int:
        assert self._main is not None
        new = 0
        for shard in sorted(self.shard_dir.glob(f"{self.key}.rank*.sqlite")):
            new += self._main.merge(shard, self.key)
            if delete:
                for leftover in (shard, Path(f"{shard}-journal")):
                    leftover.unlink(missing_ok=True)
        if delete:
            with contextlib.suppress(OSError):  # kept while another run's shards are in it
                self.shard_dir.rmdir()
        return new

    def _store(self) -> ResultsStore:
        if self._main is None:
            self._main = ResultsStore(self.path)
        return self._main

    def close(self) -> None:
        """Close the store and this rank's shard."""
        for store in (self._main, self._shard):
            if store is not None:
                store.close()
        self._main = self._shard = None

    def __enter__(self) -> ResultsCache:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def load(self) -> pd.DataFrame:
        """Every row of the run in the main store (empty frame when nothing is stored yet).

        Under torch.distributed call :meth:`gather` instead: only rank 0 opens the main store.
        """
        return self._store().load(self.key)

    def done(self) -> set[str]:
        """The files with a row for every method of the run in the main store."""
        return self._store().done(self.key, self.methods)

    def batch_stats(self) -> list[dict[str, Any]]:
        """The records (timings, forward counts) of the run's stored batches, in order."""
        return self._store().batches(self.key)

    def pending(self, dataset: ImageDataset, batch_size: int) -> list[int]:
        """The indices (into ``dataset``) of the images this process still computes, in order:
        the resumption.

        The images not done yet are cut into batches of ``batch_size`` in file order; under
        torch.distributed rank r takes batches r, r + world, r + 2 world, ... A batch thus holds
        the same images whatever the number of processes, and so gives the same numbers (batched
        kernels round differently for other batch compositions). The returned list is this
        rank's batches one after the other: cut into ``batch_size`` again, it gives them back
        (only the run's last batch can be shorter). Decoding them and the progress bar are the
        caller's (:func:`paperlib.evaluation.pending_batches`).
        """
        if self.dataset is not None and dataset.files != self.dataset.files:
            raise ValueError(f"pending() got {len(dataset)} files that are not the "
                             f"{len(self.dataset)} of run {self.key} ({self.path})")
        done = self._done if self._done is not None else self.done()
        todo = [i for i in range(len(dataset)) if dataset.file_name(i) not in done]
        batches = [todo[k: k + batch_size] for k in range(0, len(todo), batch_size)]
        return [i for b in batches[self.rank:: self.world] for i in b]

    def stored_elsewhere(self, files: Sequence[str]) -> bool:
        """Whether another process stored every row of ``files`` (one batch) meanwhile, so it
        need not be computed: asked of the main store before each batch in a single process;
        always ``False`` under torch.distributed (each rank alone computes its batches)."""
        return self.world == 1 and (self._store().done(self.key, self.methods, files)
                                    == set(files))

    def write_batch(self, rows: Iterable[dict[str, Any]], stats: dict[str, Any] | None = None
                    ) -> int:
        """Add one batch atomically (rows and record, one transaction) to the main store, or to
        this rank's shard; returns the number of new rows."""
        rows = list(rows)
        if not rows:
            return 0
        stats = {**(stats or {}), "rank": self.rank, "world_size": self.world}
        store = self._shard if self._shard is not None else self._store()
        return store.write(self.key, rows, stats,
                           position=self._position.get(str(rows[0]["file"])))

    def gather(self) -> tuple[pd.DataFrame, list[dict[str, Any]]]:
        """Every row and batch record of the run, on every rank: :meth:`load` and
        :meth:`batch_stats` in a single process; under torch.distributed (collective) every rank
        closes its shard, waits for the others, rank 0 merges and removes the shards and sends
        the merged rows to every rank."""
        if self.world == 1:
            return self.load(), self.batch_stats()
        if self._shard is not None:
            self._shard.close()
            self._shard = None
        distributed.barrier()
        payload: tuple[str | None, pd.DataFrame | None, list[dict[str, Any]] | None]
        if self.rank == 0:
            try:
                self._merge_shards(delete=True)
                payload = (None, self.load(), self.batch_stats())
            except (StoreError, sqlite3.Error, OSError) as exc:
                payload = (f"{type(exc).__name__}: {exc}", None, None)
        else:
            payload = (None, None, None)
        error, frame, batches = distributed.broadcast_object(payload)
        if error is not None or frame is None or batches is None:
            raise StoreError(f"rank {self.rank}: rank 0 could not merge the shards of run "
                             f"{self.key} into {self.path}: {error}")
        return frame, batches
