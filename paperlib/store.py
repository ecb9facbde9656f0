"""The kit's one results store: per-image rows in SQLite, one transaction per batch.

The store of a name (``eval``, ``accuracy``) is one SQLite file, ``<root>/<name>.sqlite``
(``results/cache/`` by default), in WAL mode, holding any number of runs (a run, its key and its
resumption: :mod:`paperlib.runs`), with three tables:

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
again (:meth:`paperlib.runs.ResultsCache.stored_elsewhere`), and a batch whose images were all
stored meanwhile is not computed; a batch computed by both at the same moment is stored once
(``INSERT OR IGNORE``: the first committed wins, the second's batch record is dropped when none of
its rows was new). Neither process stops.

A sharded run's ranks each write a shard, a store of its own with a rollback journal
(``wal=False``), merged into the main store by :meth:`ResultsStore.merge`
(:mod:`paperlib.runs`).

**Damage.** On opening, a store that is not SQLite, has been truncated or fails ``PRAGMA
quick_check`` raises :class:`StoreDamagedError`, naming the file and how to rebuild it (moving it
aside, never deleting it); nothing is read from it and nothing is dropped silently. Stores are
created complete (schema written to a temporary file, then linked into place), so a 0-byte store
is damage, never a new store.

**Storage, not damage.** A full disk, a read-only file system or an I/O error (SQLite's
``SQLITE_FULL``, ``SQLITE_READONLY``, ``SQLITE_IOERR``, ``SQLITE_CANTOPEN``; ``ENOSPC``,
``EDQUOT``, ``EROFS``) while opening or writing raises :class:`StoreStorageError`: what happened,
the space free on that file system and the store's size (SQLite's journal may need as much
again); the transaction is rolled back, so the store holds what it held. A store is called
damaged only when SQLite says so (``SQLITE_CORRUPT``, ``SQLITE_NOTADB``, a failed
``quick_check``).

**Checksums.** Each stored batch's rows (as SQLite holds them, in order) have a SHA-256 in the
``checksums`` table, written in the batch's transaction; :meth:`ResultsStore.verify` recomputes
them, so a value edited in the store by hand (or by anything but this class) is found
(``python -m paperlib verify-store PATH``). Batches stored before checksums existed are counted
as unchecked.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import math
import os
import shutil
import sqlite3
import tempfile
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

__all__ = ["BUSY_TIMEOUT", "ResultsStore", "StoreDamagedError", "StoreError",
           "StoreStorageError"]

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
#: Added to stores of schema version 1 when first opened for writing (older stores lack it).
_CHECKSUMS = ("CREATE TABLE IF NOT EXISTS checksums (run TEXT NOT NULL, batch INTEGER NOT NULL, "
              "sha256 TEXT NOT NULL, PRIMARY KEY (run, batch))")
#: SQLite's names for a storage problem (not damage), by prefix (extended codes included).
_STORAGE_CODES = ("SQLITE_FULL", "SQLITE_IOERR", "SQLITE_READONLY", "SQLITE_CANTOPEN")
_STORAGE_ERRNOS = (errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EIO, errno.EACCES)


class StoreError(RuntimeError):
    """A results store that cannot be used as asked (foreign file, another configuration under
    this run's key, rows whose columns differ from the run's)."""


class StoreDamagedError(StoreError):
    """A results store that is not readable SQLite or fails its integrity check."""


class StoreStorageError(StoreError):
    """The disk under a results store is full, read-only or failing: the store is not damaged."""


def _damaged(path: Path, detail: str) -> StoreDamagedError:
    aside = f"{path}.damaged"
    return StoreDamagedError(
        f"results store {path} is damaged ({detail}); nothing was read from it. Move it aside, "
        f"keeping the copy (mv '{path}' '{aside}'; and its -wal / -journal files if any) and "
        "rerun the same command: every row it held is recomputed (`sqlite3 "
        f"'{aside}' .recover` shows what is left)")


def _storage_problem(exc: BaseException) -> bool:
    """Whether ``exc`` is a full / read-only / failing disk rather than a damaged file."""
    if isinstance(exc, sqlite3.Error):
        name = getattr(exc, "sqlite_errorname", "") or ""
        text = str(exc).lower()
        return (name.startswith(_STORAGE_CODES) or "disk is full" in text
                or "disk i/o error" in text or "readonly database" in text)
    return isinstance(exc, OSError) and exc.errno in _STORAGE_ERRNOS


def _storage_error(path: Path, exc: BaseException, doing: str) -> StoreStorageError:
    """One line: what the disk said while ``doing``, the space free there and the store's size."""
    where = path if path.exists() else path.parent
    try:
        free = f"{shutil.disk_usage(where).free / 2**20:.1f} MB free there"
    except OSError:
        free = "free space unknown"
    size = path.stat().st_size / 2**20 if path.exists() else 0.0
    reason = getattr(exc, "sqlite_errorname", None) or (
        errno.errorcode.get(exc.errno, "") if isinstance(exc, OSError) and exc.errno else "")
    return StoreStorageError(
        f"results store {path}: the disk refused {doing} ({reason + ': ' if reason else ''}"
        f"{exc}); {free}, the store is {size:.1f} MB and SQLite may need as much again for its "
        "journal. The store is not damaged and holds what it held: free space (or make the "
        "folder writable) and rerun the same command")


def _rows_sha256(con: sqlite3.Connection, run: str, batch: int,
                 columns: Sequence[str]) -> str:
    """SHA-256 of ``run``'s rows of ``batch`` as SQLite holds them (``_seq`` order; each value
    with its SQL type: a float by its exact ``repr``, NULL as ``None``)."""
    digest = hashlib.sha256()
    sql = (f"SELECT {', '.join(_quote(c) for c in columns)} FROM rows "
           "WHERE _run = ? AND _batch = ? ORDER BY _seq")
    for row in con.execute(sql, (run, batch)):
        digest.update(repr(tuple(row)).encode())
        digest.update(b"\n")
    return digest.hexdigest()


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
        try:
            if not self.path.exists():
                _create(self.path, wal)
            self._con = _open(self.path, wal, timeout)
        except (sqlite3.Error, OSError) as exc:
            if _storage_problem(exc):
                raise _storage_error(self.path, exc, "opening it") from exc
            raise

    def close(self) -> None:
        """Close the connection (the WAL is checkpointed into the file)."""
        self._con.close()

    def __enter__(self) -> ResultsStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @contextlib.contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        """``BEGIN IMMEDIATE`` .. ``COMMIT``; rolled back on any error. A full / read-only /
        failing disk becomes :class:`StoreStorageError` (the store keeps what it held)."""
        try:
            self._con.execute("BEGIN IMMEDIATE")
            try:
                yield self._con
                self._con.execute("COMMIT")
            except BaseException:
                if self._con.in_transaction:
                    with contextlib.suppress(sqlite3.Error):
                        self._con.execute("ROLLBACK")
                raise
        except (sqlite3.Error, OSError) as exc:
            if _storage_problem(exc):
                raise _storage_error(self.path, exc, "a write") from exc
            raise

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
                self._checksum(con, run, [position])
        return inserted

    def _checksum(self, con: sqlite3.Connection, run: str, batches: Sequence[int]) -> None:
        """(Re)write the checksums of ``run``'s ``batches`` from the rows now stored."""
        con.execute(_CHECKSUMS)
        names = [c for c, _ in self.columns(run) or []]
        con.executemany("INSERT OR REPLACE INTO checksums (run, batch, sha256) VALUES (?, ?, ?)",
                        [(run, b, _rows_sha256(con, run, b, names)) for b in batches])

    def verify(self) -> dict[str, Any]:
        """Check the whole store: ``PRAGMA integrity_check`` and every batch's checksum.

        Returns ``{"integrity": [...], "checked": n, "unchecked": n, "mismatched": [(run, name,
        first file), ...]}``: ``unchecked`` counts batches stored before checksums existed."""
        integrity = [r[0] for r in self._con.execute("PRAGMA integrity_check")]
        has = self._con.execute("SELECT 1 FROM sqlite_master WHERE name = 'checksums'").fetchone()
        sums = ({(r[0], r[1]): r[2] for r in
                 self._con.execute("SELECT run, batch, sha256 FROM checksums")} if has else {})
        checked, unchecked, mismatched = 0, 0, []
        for run, name in self._con.execute("SELECT run, name FROM runs").fetchall():
            names = [c for c, _ in self.columns(run) or []]
            for position, first in self._con.execute(
                    "SELECT position, MIN(first_file) FROM batches WHERE run = ? "
                    "GROUP BY position ORDER BY position", (run,)).fetchall():
                want = sums.get((run, position))
                if want is None:
                    unchecked += 1
                    continue
                checked += 1
                if _rows_sha256(self._con, run, position, names) != want:
                    mismatched.append((run, str(name), first))
        return {"integrity": integrity, "checked": checked, "unchecked": unchecked,
                "mismatched": mismatched}

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
                if inserted:
                    self._checksum(con, run, [r[0] for r in con.execute(
                        "SELECT DISTINCT _batch FROM shard.rows WHERE _run = ?", (run,))])
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
        if _storage_problem(exc):  # the disk, not the file: ResultsStore says so
            raise
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
