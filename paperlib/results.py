"""The kit's one results store: per-image rows in SQLite, one transaction per batch, resumable.

A **run** is identified by its configuration (model, data, split, methods and their options,
metric settings...), by a fingerprint of the code and checkpoint that compute it, and -- when a
dataset is given -- by the fingerprint of the exact list of files evaluated (names, sizes,
modification times: :meth:`paperlib.data.ImageDataset.fingerprint`). Its key is
:func:`config_hash` of all of that: a changed parameter, a changed module, an added, removed or
replaced image each give another run, so old and new results never mix.

The store of a name (``eval``, ``accuracy``) is one SQLite file, ``<root>/<name>.sqlite``
(``results/cache/`` by default), in WAL mode, with three tables:

* ``runs``: run key -> the full configuration (JSON) and the row columns with their kinds;
* ``rows``: one row per (run, file, method), ``UNIQUE(_run, file, method)``; the row's values in
  typed columns added as the rows need them (``INTEGER`` for ints and bools, ``TEXT``, and
  floats as SQLite REAL values in a column without affinity: every double round-trips bit for
  bit, -0.0 included);
* ``batches``: one record per stored batch (timings, forward counts; JSON), ``UNIQUE(run,
  first_file)``.

**Atomicity.** A batch is one transaction (``BEGIN IMMEDIATE`` ... ``COMMIT``, ``synchronous =
FULL``): its rows and its record are there completely or not at all, also after SIGKILL or a power
cut; an interrupted run loses at most the batch in flight. An image counts as done only when every
method of the run has its row.

**Two processes on one store** (two notebooks, two shells) never store a row twice. Writers take
turns: the second *waits* for the first's transaction (busy timeout, :data:`BUSY_TIMEOUT`
seconds); rows already stored are *skipped*: before computing a batch a process asks the store
again, and a batch whose images were all stored meanwhile is not computed; a batch computed by
both at the same moment is stored once (``INSERT OR IGNORE``: the first committed wins, the
second's batch record is dropped when none of its rows was new). Neither process stops.

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

**Damage.** On opening, a store that is not SQLite, has been truncated or fails ``PRAGMA
quick_check`` raises :class:`StoreDamagedError`, naming the file and how to rebuild it; nothing
is read from it and nothing is dropped silently. Stores are created complete (schema written to a
temporary file, then linked into place), so a 0-byte store is damage, never a new store.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import os
import sqlite3
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from . import distributed
from .data import Batch, ImageDataset, iter_batches
from .paths import PACKAGE_DIR
from .progress import progress as progress_bar

__all__ = ["BUSY_TIMEOUT", "ResultsCache", "ResultsStore", "StoreDamagedError", "StoreError",
           "atomic_write_text", "code_fingerprint", "config_hash", "fingerprint"]

#: Seconds a writer waits for another process's transaction before giving up.
BUSY_TIMEOUT = 600.0
#: ``PRAGMA application_id`` of a paperlib store ("PLRS"): any other SQLite file is refused.
APPLICATION_ID = 0x504C5253
SCHEMA_VERSION = 1
_KINDS = ("bool", "int", "float", "str")
_SCHEMA = """
CREATE TABLE runs (run TEXT PRIMARY KEY, name TEXT NOT NULL, config TEXT NOT NULL,
                   columns TEXT, created TEXT NOT NULL);
CREATE TABLE batches (run TEXT NOT NULL, first_file TEXT NOT NULL, position INTEGER NOT NULL,
                      n_rows INTEGER NOT NULL, stats TEXT NOT NULL, UNIQUE (run, first_file));
CREATE TABLE rows (_run TEXT NOT NULL, _batch INTEGER NOT NULL, _seq INTEGER NOT NULL,
                   file TEXT NOT NULL, method TEXT NOT NULL DEFAULT '',
                   UNIQUE (_run, file, method));
"""


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


class StoreError(RuntimeError):
    """A results store that cannot be used as asked (foreign file, another configuration under
    this run's key, rows whose columns differ from the run's)."""


class StoreDamagedError(StoreError):
    """A results store that is not readable SQLite or fails its integrity check."""


def _damaged(path: Path, detail: str) -> StoreDamagedError:
    return StoreDamagedError(
        f"results store {path} is damaged ({detail}); nothing was read from it. Delete it "
        f"(rm -f '{path}' '{path}-wal' '{path}-shm' '{path}-journal') and rerun the same command: "
        "every row it held is recomputed (or move it aside first and try `sqlite3 "
        f"{path.name} .recover` to inspect what is left)")


def _quote(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _scalar(value: Any) -> Any:
    """A row value as SQLite stores it (numpy scalars unwrapped, bools as 0/1, NaN as NULL)."""
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, bool):
        return int(value)
    if isinstance(value, float) and math.isnan(value):
        return None
    if value is None or isinstance(value, (int, float, str)):
        return value
    raise TypeError(f"a stored row holds scalars (bool, int, float, str, None); got {value!r} "
                    f"of type {type(value).__name__}")


def _kind(value: Any) -> str | None:
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, int):
        return "int"
    if isinstance(value, float):
        return "float"
    if isinstance(value, str):
        return "str"
    return None


def _json_default(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    return str(value)


class ResultsStore:
    """One SQLite file of per-image rows, for any number of runs (module docstring).

    Rows are dicts of scalars with a ``file`` (str) and, optionally, a ``method`` (str); their
    other keys become typed columns. ``wal=False`` keeps a rollback journal (the shards).
    """

    def __init__(self, path: str | os.PathLike, wal: bool = True,
                 timeout: float = BUSY_TIMEOUT) -> None:
        self.path = Path(path)
        self.wal = wal
        if not self.path.exists():
            _create(self.path, wal)
        self._con = _open(self.path, wal, timeout)

    def close(self) -> None:
        """Close the connection (the WAL is checkpointed into the file)."""
        self._con.close()

    def __enter__(self) -> ResultsStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @contextlib.contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        self._con.execute("BEGIN IMMEDIATE")
        try:
            yield self._con
        except BaseException:
            self._con.execute("ROLLBACK")
            raise
        self._con.execute("COMMIT")

    # -- runs --------------------------------------------------------------------------------

    def register(self, run: str, name: str, config: dict[str, Any]) -> None:
        """Record ``run``'s configuration; an existing different one under the key is an error."""
        blob = json.dumps(config, sort_keys=True)
        with self._transaction() as con:
            con.execute("INSERT OR IGNORE INTO runs (run, name, config, created) "
                        "VALUES (?, ?, ?, ?)", (run, name, blob, time.strftime("%F %T")))
            stored = con.execute("SELECT config FROM runs WHERE run = ?", (run,)).fetchone()[0]
        if json.loads(stored) != json.loads(blob):
            raise StoreError(f"{self.path} holds another configuration under run {run} than "
                             "this run's (a hash collision or a hand-edited store); move the file "
                             "aside and rerun")

    def runs(self) -> dict[str, dict[str, Any]]:
        """Every run of the store: key -> configuration."""
        return {r[0]: json.loads(r[1]) for r in self._con.execute("SELECT run, config FROM runs")}

    def config(self, run: str) -> dict[str, Any] | None:
        """The configuration recorded for ``run`` (``None`` if unknown)."""
        row = self._con.execute("SELECT config FROM runs WHERE run = ?", (run,)).fetchone()
        return json.loads(row[0]) if row else None

    def columns(self, run: str) -> list[tuple[str, str]] | None:
        """``[(column, kind)]`` of ``run``'s rows in their order; ``None`` before its first row."""
        row = self._con.execute("SELECT columns FROM runs WHERE run = ?", (run,)).fetchone()
        if not row or not row[0]:
            return None
        return [(str(c), str(k)) for c, k in json.loads(row[0])]

    def _pin_columns(self, con: sqlite3.Connection, run: str,
                     columns: list[tuple[str, str]], where: str) -> None:
        if self.config(run) is None:
            raise StoreError(f"{where}: run {run} is not registered in {self.path} (call "
                             "register(run, name, config) first)")
        known = self.columns(run)
        if known is None:
            con.execute("UPDATE runs SET columns = ? WHERE run = ?", (json.dumps(columns), run))
        elif [c for c, _ in known] != [c for c, _ in columns]:
            raise StoreError(f"{where}: rows with columns {[c for c, _ in columns][:8]}... do not "
                             f"match run {run}'s columns {[c for c, _ in known][:8]}... in "
                             f"{self.path}")
        present = {r[1].lower() for r in con.execute("PRAGMA table_info(rows)")}
        for c, kind in columns:
            if c.lower() not in present:
                # floats: a column without affinity keeps every double as given (a REAL column
                # would store -0.0 as the integer 0); they are still REAL values to SQL
                sql_type = {"float": "", "str": " TEXT"}.get(kind, " INTEGER")
                con.execute(f"ALTER TABLE rows ADD COLUMN {_quote(c)}{sql_type}")

    # -- rows ---------------------------------------------------------------------------------

    def write(self, run: str, rows: Sequence[dict[str, Any]], stats: dict[str, Any] | None = None,
              position: int | None = None) -> int:
        """Store one batch -- its rows and its record -- in one transaction; return the number of
        rows that were new (rows whose (file, method) the run holds already are skipped).

        ``position`` orders the batch in :meth:`load` (default: after every stored batch).
        """
        if not rows:
            return 0
        columns = _columns_of(rows, str(self.path))
        names = [c for c, _ in columns]
        values = [(run, i, *(_scalar(r[c]) for c in names)) for i, r in enumerate(rows)]
        first = str(rows[0]["file"])
        record = json.dumps(stats or {}, sort_keys=True, default=_json_default)
        with self._transaction() as con:
            self._pin_columns(con, run, columns, f"batch starting at {first}")
            if position is None:
                position = con.execute("SELECT COALESCE(MAX(position) + 1, 0) FROM batches "
                                       "WHERE run = ?", (run,)).fetchone()[0]
            before = con.total_changes
            cols = ", ".join(_quote(c) for c in ["_run", "_batch", "_seq", *names])
            marks = ", ".join("?" * (len(names) + 3))
            con.executemany(f"INSERT OR IGNORE INTO rows ({cols}) VALUES ({marks})",
                            [(v[0], position, *v[1:]) for v in values])
            inserted = con.total_changes - before
            if inserted:
                con.execute("INSERT OR IGNORE INTO batches (run, first_file, position, n_rows, "
                            "stats) VALUES (?, ?, ?, ?, ?)",
                            (run, first, position, inserted, record))
        return inserted

    def done(self, run: str, methods: Sequence[str] = (),
             files: Sequence[str] | None = None) -> set[str]:
        """Files of ``run`` with a row for every one of ``methods`` (any row when none given),
        among ``files`` when given."""
        sql = "SELECT file FROM rows WHERE _run = ?"
        params: list[Any] = [run]
        if methods:
            sql += f" AND method IN ({', '.join('?' * len(methods))})"
            params += list(methods)
        if files is not None:
            if not files:
                return set()
            sql += f" AND file IN ({', '.join('?' * len(files))})"
            params += list(files)
        sql += " GROUP BY file HAVING COUNT(*) >= ?"
        params.append(max(1, len(methods)))
        return {r[0] for r in self._con.execute(sql, params)}

    def count(self, run: str) -> int:
        """Number of rows stored for ``run``."""
        return self._con.execute("SELECT COUNT(*) FROM rows WHERE _run = ?", (run,)).fetchone()[0]

    def load(self, run: str) -> pd.DataFrame:
        """Every row of ``run``, one SQL query into pandas: columns in the rows' order, with their
        kinds (bool, int64, float64, object); batches in order, rows in their batch's order."""
        columns = self.columns(run)
        if columns is None:
            return pd.DataFrame()
        sql = (f"SELECT {', '.join(_quote(c) for c, _ in columns)} FROM rows WHERE _run = ? "
               "ORDER BY _batch, _seq")
        frame = pd.read_sql_query(sql, self._con, params=(run,))
        for c, kind in columns:
            if kind == "float":
                frame[c] = frame[c].astype("float64")
            elif kind in ("int", "bool") and not frame[c].isna().any():
                frame[c] = frame[c].astype("int64" if kind == "int" else "bool")
        return frame

    def batches(self, run: str) -> list[dict[str, Any]]:
        """The records of ``run``'s stored batches, in order."""
        return [json.loads(r[0]) for r in self._con.execute(
            "SELECT stats FROM batches WHERE run = ? ORDER BY position, first_file", (run,))]

    def merge(self, other: str | os.PathLike, run: str) -> int:
        """Copy ``run``'s rows and batch records from the store ``other`` (a shard) into this one,
        in one transaction; rows already here are skipped. Returns the number of new rows."""
        other = Path(other)
        with ResultsStore(other, wal=False) as shard:  # checks it, rolls back a hot journal
            config, columns = shard.config(run), shard.columns(run)
        if config is None or columns is None:
            return 0
        if config != self.config(run):
            raise StoreError(f"shard {other} holds run {run} with another configuration than "
                             f"{self.path}; move the shard aside and rerun")
        self._con.execute("ATTACH DATABASE ? AS shard", (str(other),))
        try:
            with self._transaction() as con:
                self._pin_columns(con, run, columns, f"shard {other}")
                cols = ", ".join(_quote(c) for c in ["_run", "_batch", "_seq",
                                                     *(c for c, _ in columns)])
                before = con.total_changes
                con.execute(f"INSERT OR IGNORE INTO main.rows ({cols}) SELECT {cols} "
                            "FROM shard.rows WHERE _run = ?", (run,))
                inserted = con.total_changes - before
                con.execute("INSERT OR IGNORE INTO main.batches SELECT * FROM shard.batches "
                            "WHERE run = ?", (run,))
        finally:
            self._con.execute("DETACH DATABASE shard")
        return inserted


def _columns_of(rows: Sequence[dict[str, Any]], where: str) -> list[tuple[str, str]]:
    names = list(rows[0])
    if "file" not in names:
        raise ValueError(f"{where}: every stored row needs a 'file'; got columns {names[:8]}")
    bad = [c for c in names if c.startswith("_")]
    lowered = [c.lower() for c in names]
    if bad or len(set(lowered)) != len(lowered):
        raise ValueError(f"{where}: row columns must not start with '_' and must differ in more "
                         f"than case; got {names}")
    kinds: dict[str, str | None] = dict.fromkeys(names)
    for r in rows:
        if list(r) != names:
            raise ValueError(f"{where}: every row of a batch needs the same columns in the same "
                             f"order; {list(r)[:8]}... differs from {names[:8]}...")
        for c in names:
            if kinds[c] is None:
                kinds[c] = _kind(r[c])
    return [(c, kinds[c] or "float") for c in names]


def _create(path: Path, wal: bool) -> None:
    """Create an empty store at ``path`` atomically: written to a temporary file, then linked into
    place (if another process created it first, its store is kept)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        con = sqlite3.connect(tmp, isolation_level=None)
        try:
            con.executescript(_SCHEMA)
            con.execute(f"PRAGMA application_id = {APPLICATION_ID}")
            con.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
            con.execute(f"PRAGMA journal_mode = {'WAL' if wal else 'DELETE'}")
        finally:
            con.close()
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        try:
            os.link(tmp, path)
        except FileExistsError:
            pass
        except OSError:  # a filesystem without hard links
            if not path.exists():
                os.replace(tmp, path)
    finally:
        for leftover in (tmp, f"{tmp}-wal", f"{tmp}-shm"):
            Path(leftover).unlink(missing_ok=True)


def _open(path: Path, wal: bool, timeout: float) -> sqlite3.Connection:
    """Connect to ``path`` and check that it is an intact paperlib store."""
    if path.stat().st_size == 0:
        raise _damaged(path, "0 bytes: a store is created complete, so this one was truncated")
    con = sqlite3.connect(path, timeout=timeout, isolation_level=None)
    try:
        app = con.execute("PRAGMA application_id").fetchone()[0]
        check = [r[0] for r in con.execute("PRAGMA quick_check")]
    except sqlite3.DatabaseError as exc:
        con.close()
        raise _damaged(path, f"sqlite3: {exc}") from exc
    if check != ["ok"]:
        con.close()
        raise _damaged(path, f"PRAGMA quick_check: {'; '.join(check[:3])}")
    if app != APPLICATION_ID:
        con.close()
        raise StoreError(f"{path} is an SQLite file but not a paperlib results store "
                         f"(application_id {app}, expected {APPLICATION_ID}); move it aside")
    version = con.execute("PRAGMA user_version").fetchone()[0]
    if version != SCHEMA_VERSION:
        con.close()
        raise StoreError(f"{path} is a results store of schema version {version}; this code "
                         f"reads version {SCHEMA_VERSION}. Move it aside and rerun")
    con.execute(f"PRAGMA journal_mode = {'WAL' if wal else 'DELETE'}")
    con.execute("PRAGMA synchronous = FULL")
    return con


class ResultsCache:
    """The rows of one run in the store ``<root>/<name>.sqlite`` (module docstring): resumption
    (:meth:`pending`), one transaction per batch (:meth:`write_batch`), and under
    torch.distributed one shard per rank merged by rank 0 (:meth:`gather`).

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

    def pending(self, dataset: ImageDataset, preprocess: Callable, batch_size: int,
                device: torch.device | str | None = None, desc: str = "",
                progress: bool = True, num_workers: int = 0) -> Iterator[Batch]:
        """Batches of the images of ``dataset`` that are not done yet (the resumption).

        The pending images are cut into batches of ``batch_size`` in file order; under
        torch.distributed rank r takes batches r, r + world, r + 2 world, ... A batch thus holds
        the same images whatever the number of processes, and so gives the same numbers (batched
        kernels round differently for other batch compositions). A progress bar (rank 0's
        shard) counts a batch when the next one is asked for, i.e. once the caller has written it.
        """
        if self.dataset is not None and dataset.files != self.dataset.files:
            raise ValueError(f"pending() got {len(dataset)} files that are not the "
                             f"{len(self.dataset)} of run {self.key} ({self.path})")
        done = self._done if self._done is not None else self.done()
        todo = [i for i in range(len(dataset)) if dataset.file_name(i) not in done]
        batches = [todo[k: k + batch_size] for k in range(0, len(todo), batch_size)]
        mine = [i for b in batches[self.rank:: self.world] for i in b]
        label = f"{desc} (rank 0 of {self.world})" if self.world > 1 else desc
        show = progress and bool(mine) and self.rank == 0
        with progress_bar(len(mine), label, unit="img", disable=not show) as bar:
            for batch in iter_batches(dataset, preprocess, batch_size, indices=mine,
                                      num_workers=num_workers, device=device):
                if self.world == 1 and (self._store().done(self.key, self.methods, batch.files)
                                        == set(batch.files)):
                    bar.update(len(batch))  # another process stored it meanwhile
                    continue
                yield batch
                bar.update(len(batch))

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
