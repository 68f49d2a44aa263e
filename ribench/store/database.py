"""The results database: one SQLite row per finished cell, never overwritten.

Rows are written in one transaction each, so a killed run leaves either the whole row or nothing; each
carries a checksum of its values, so a row changed outside ribench is caught on read. The weights that
derived methods reuse live next to the database (`weights.py`).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import socket
import sqlite3
import time
from pathlib import Path
from typing import Any, Iterator, Mapping

from ribench.cachefile import process_alive
from ribench.errors import StoreError
from ribench.store.keys import canonical_json, cell_key
from ribench.store.location import default_store_path, lease_seconds, weights_dir_of
from ribench.store.records import CellRecord
from ribench.store.weights import load_weights, save_weights, weights_file


_SCHEMA = """
CREATE TABLE IF NOT EXISTS cells (
    key TEXT PRIMARY KEY,
    suite TEXT NOT NULL,
    pretrain TEXT NOT NULL,
    method TEXT NOT NULL,
    label TEXT NOT NULL,
    dataset TEXT NOT NULL,
    seed INTEGER NOT NULL,
    status TEXT NOT NULL,
    identity TEXT NOT NULL,
    accuracies TEXT NOT NULL,
    details TEXT NOT NULL,
    timings TEXT NOT NULL,
    provenance TEXT NOT NULL,
    created_at REAL NOT NULL,
    checksum TEXT
);
CREATE INDEX IF NOT EXISTS cells_by_run ON cells (suite, pretrain, method, label);
CREATE TABLE IF NOT EXISTS pretrained (
    key TEXT PRIMARY KEY,
    suite TEXT NOT NULL,
    pretrain TEXT NOT NULL,
    identity TEXT NOT NULL,
    accuracies TEXT NOT NULL,
    provenance TEXT NOT NULL,
    created_at REAL NOT NULL,
    checksum TEXT
);
CREATE TABLE IF NOT EXISTS leases (
    key TEXT PRIMARY KEY,
    pid INTEGER NOT NULL,
    host TEXT NOT NULL,
    expires REAL NOT NULL
);
"""

_CELL_COLUMNS = (
    "key suite pretrain method label dataset seed status identity accuracies "
    "details timings provenance created_at"
).split()
_JSON_CELL_COLUMNS = {"identity", "accuracies", "details", "timings", "provenance"}
_PRETRAINED_COLUMNS = "key suite pretrain identity accuracies provenance created_at".split()


def _dumps(value: Any) -> str:
    return json.dumps(value, sort_keys=True)


def row_checksum(values: list) -> str:
    """sha256 of a row's stored column values: a digit changed in the file is caught on read."""
    return hashlib.sha256(json.dumps(values, separators=(",", ":")).encode("utf-8")).hexdigest()


def _columns(conn: sqlite3.Connection, table: str) -> set[str]:
    return {row[1] for row in conn.execute(f"PRAGMA table_info({table})")}


def _reason(error: BaseException) -> str:
    return " ".join(str(error).split()) or type(error).__name__


class Store:
    """The results database at ``path`` (created with its parent folders).

    ``readonly``: open an existing store for reading only (reports, leaderboard, distances): nothing is
    created, a missing file is an error, and no write is possible through this connection."""

    def __init__(self, path: str | os.PathLike | None = None, readonly: bool = False):
        self.path = Path(path).expanduser() if path is not None else default_store_path()
        self.readonly = readonly
        self._conn = self._open_readonly() if readonly else self._open()
        checksummed = {table: "checksum" in _columns(self._conn, table) for table in ("cells", "pretrained")}
        self._checksum = {table: "checksum" if found else "NULL AS checksum" for table, found in checksummed.items()}

    # -- opening ------------------------------------------------------------
    def _fail(self, reason: str) -> StoreError:
        return StoreError(f"cannot write results store {self.path}: {reason}")

    def _open(self) -> sqlite3.Connection:
        """Open, create the schema and prove we can write, so a run fails before any work."""
        if self.path.is_dir():
            raise self._fail("it is a directory")
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as error:
            raise self._fail(_reason(error)) from None
        # sqlite3 needs the folder writable for its journal, and otherwise only fails at commit.
        if not os.access(self.path.parent, os.W_OK | os.X_OK):
            raise self._fail(f"folder {self.path.parent} is not writable")
        if self.path.exists() and not os.access(self.path, os.R_OK | os.W_OK):
            raise self._fail("file is not readable and writable")
        conn = None
        try:
            conn = sqlite3.connect(self.path, timeout=30.0)
            with conn:
                conn.executescript(_SCHEMA)
                for table in ("cells", "pretrained"):       # stores made before rows carried a checksum
                    if "checksum" not in _columns(conn, table):
                        conn.execute(f"ALTER TABLE {table} ADD COLUMN checksum TEXT")
            conn.execute("BEGIN IMMEDIATE")  # takes the write lock: fails now if writing would fail later
            conn.rollback()
        except sqlite3.Error as error:
            if conn is not None:
                conn.close()
            if isinstance(error, sqlite3.DatabaseError) and "not a database" in str(error):
                raise self._fail("file exists but is not an SQLite database") from None
            raise self._fail(_reason(error)) from None
        return conn

    def _open_readonly(self) -> sqlite3.Connection:
        if not self.path.is_file():
            raise StoreError(f"no results store at {self.path}")
        conn = None
        try:
            conn = sqlite3.connect(f"{self.path.resolve().as_uri()}?mode=ro", uri=True, timeout=30.0)
            conn.execute("SELECT 1 FROM cells LIMIT 1").fetchall()
        except sqlite3.Error as error:
            if conn is not None:
                conn.close()
            reason = _reason(error)
            if "not a database" in reason or "no such table" in reason:
                reason = "file is not a ribench results store (an SQLite database with a cells table)"
            raise StoreError(f"cannot read results store {self.path}: {reason}") from None
        return conn

    def close(self) -> None:
        self._conn.close()

    def __enter__(self) -> "Store":
        return self

    def __exit__(self, *exc_info: Any) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"Store({str(self.path)!r})"

    # -- cells ----------------------------------------------------------------
    def _read(self, sql: str, params: tuple = ()) -> list[dict[str, Any]]:
        try:
            cursor = self._conn.execute(sql, params)
            names = [column[0] for column in cursor.description]
            return [dict(zip(names, row)) for row in cursor.fetchall()]
        except sqlite3.Error as error:
            raise StoreError(f"cannot read results store {self.path}: {_reason(error)}") from None

    def _damaged(self, what: str, key: str, why: str) -> StoreError:
        return StoreError(f"results store {self.path}: the stored {what} {key} is damaged ({why}); the store "
                          "was changed outside ribench: restore it from a copy, or delete that row to recompute it")

    def _decoded(self, row: dict[str, Any], columns: list[str], decoded: set[str], what: str) -> dict[str, Any]:
        """A row's values with its JSON columns decoded, after its checksum (when it has one) is verified."""
        if row.get("checksum") is not None and row_checksum([row[name] for name in columns]) != row["checksum"]:
            raise self._damaged(what, row["key"], "its checksum does not match its values")
        try:
            return {name: json.loads(row[name]) if name in decoded else row[name] for name in columns}
        except (TypeError, ValueError) as error:
            raise self._damaged(what, row["key"], f"bad JSON: {_reason(error)}") from None

    def _record(self, row: dict[str, Any]) -> CellRecord:
        try:
            return CellRecord(**self._decoded(row, _CELL_COLUMNS, _JSON_CELL_COLUMNS, "cell"))
        except TypeError as error:
            raise self._damaged("cell", row["key"], _reason(error)) from None

    def _select(self, table: str, columns: list[str]) -> str:
        return f"SELECT {', '.join(columns)}, {self._checksum[table]} FROM {table}"

    def has(self, key: str) -> bool:
        return bool(self._read("SELECT 1 FROM cells WHERE key = ?", (key,)))

    def get(self, key: str) -> CellRecord | None:
        rows = self._read(self._select("cells", _CELL_COLUMNS) + " WHERE key = ?", (key,))
        return self._record(rows[0]) if rows else None

    def put(self, record: CellRecord, replace_failed: bool = False) -> CellRecord:
        """Insert one cell atomically; returns the record as stored (with ``created_at`` filled in).

        Results are never overwritten: a key already stored with other results is refused (ValueError);
        the same results stored again (two runs that raced) are kept once. ``replace_failed`` lets a
        retried cell replace a stored *failed* row, in the same transaction, and nothing else.
        """
        expected = cell_key(record.identity)
        if record.key != expected:
            raise ValueError(f"cell key {record.key!r} does not match its identity (expected {expected!r})")
        created_at = record.created_at if record.created_at is not None else time.time()
        stored = dataclasses.replace(record, created_at=created_at)
        values = []
        for name in _CELL_COLUMNS:
            value = getattr(stored, name)
            values.append(_dumps(value) if name in _JSON_CELL_COLUMNS else value)
        values.append(row_checksum(values))
        placeholders = ", ".join("?" for _ in range(len(_CELL_COLUMNS) + 1))
        sql = f"INSERT OR IGNORE INTO cells ({', '.join(_CELL_COLUMNS)}, checksum) VALUES ({placeholders})"
        remove = ("DELETE FROM cells WHERE key = ? AND status = 'failed'", (record.key,)) if replace_failed else None
        if self._insert(sql, values, remove):
            return stored
        existing = self.get(record.key)
        if existing is None or canonical_json(existing.identity) != canonical_json(record.identity):
            raise StoreError(f"results store {self.path}: cell {record.key} is stored with another identity "
                             "than its key says; the row is damaged")
        if (existing.status, existing.accuracies) != (record.status, record.accuracies):
            raise ValueError(f"cell {record.key} is already stored; results are never overwritten")
        return existing

    def _insert(self, sql: str, values: list, remove: tuple | None = None) -> bool:
        """Run one INSERT OR IGNORE (after an optional DELETE) in one transaction; True if a row was added."""
        try:
            with self._conn:  # one transaction: committed whole or rolled back
                if remove is not None:
                    self._conn.execute(*remove)
                return self._conn.execute(sql, values).rowcount > 0
        except sqlite3.Error as error:
            raise self._fail(_reason(error)) from None

    def cells(
        self,
        suite: str | None = None,
        pretrain: str | None = None,
        method: str | None = None,
        label: str | None = None,
        status: str | None = "done",
    ) -> list[CellRecord]:
        """Stored cells matching every filter given (None = any), oldest first."""
        filters = {"suite": suite, "pretrain": pretrain, "method": method, "label": label, "status": status}
        where = [f"{name} = ?" for name, value in filters.items() if value is not None]
        params = tuple(value for value in filters.values() if value is not None)
        sql = self._select("cells", _CELL_COLUMNS)
        if where:
            sql += " WHERE " + " AND ".join(where)
        sql += " ORDER BY created_at, key"
        return [self._record(row) for row in self._read(sql, params)]

    def __iter__(self) -> Iterator[CellRecord]:
        return iter(self.cells(status=None))

    # -- pretrained evaluations ---------------------------------------------------
    def put_pretrained(
        self,
        key: str,
        suite: str,
        pretrain: str,
        identity: dict[str, Any],
        accuracies: dict[str, float],
        provenance: dict[str, Any],
        created_at: float | None = None,
    ) -> None:
        """Store the pretrained model's accuracies (A_pre) once: other accuracies under a stored key are refused,
        the same ones (a concurrent run's) are kept once."""
        expected = cell_key(identity)
        if key != expected:
            raise ValueError(f"pretrained key {key!r} does not match its identity (expected {expected!r})")
        when = time.time() if created_at is None else created_at
        values = [key, suite, pretrain, _dumps(identity), _dumps(accuracies), _dumps(provenance), when]
        values.append(row_checksum(values))
        placeholders = ", ".join("?" for _ in range(len(_PRETRAINED_COLUMNS) + 1))
        sql = f"INSERT OR IGNORE INTO pretrained ({', '.join(_PRETRAINED_COLUMNS)}, checksum) VALUES ({placeholders})"
        if self._insert(sql, values):
            return
        existing = self.get_pretrained(key)
        if existing is None or canonical_json(existing["identity"]) != canonical_json(identity):
            raise StoreError(f"results store {self.path}: pretrained evaluation {key} is stored with another "
                             "identity than its key says; the row is damaged")
        if existing["accuracies"] != accuracies:
            raise ValueError(f"pretrained evaluation {key} is already stored; results are never overwritten")

    def _pretrained_row(self, row: dict[str, Any]) -> dict[str, Any]:
        return self._decoded(row, _PRETRAINED_COLUMNS, {"identity", "accuracies", "provenance"},
                             "pretrained evaluation")

    def get_pretrained(self, key: str) -> dict[str, Any] | None:
        rows = self._read(self._select("pretrained", _PRETRAINED_COLUMNS) + " WHERE key = ?", (key,))
        return self._pretrained_row(rows[0]) if rows else None

    def pretrained(self, suite: str | None = None, pretrain: str | None = None) -> list[dict[str, Any]]:
        """Pretrained evaluations, oldest first: of one suite and pretrain, or (no filter) all."""
        filters = {"suite": suite, "pretrain": pretrain}
        where = [f"{name} = ?" for name, value in filters.items() if value is not None]
        sql = self._select("pretrained", _PRETRAINED_COLUMNS)
        if where:
            sql += " WHERE " + " AND ".join(where)
        rows = self._read(sql + " ORDER BY created_at, key", tuple(v for v in filters.values() if v is not None))
        return [self._pretrained_row(row) for row in rows]

    # -- leases: a cell in progress is claimed, so a second process skips it ------------------------------
    def claim(self, key: str, seconds: float | None = None) -> dict | None:
        """Claim cell `key` for this process; None when claimed, else the live holder {pid, host, expires}.

        A lease of a process that is gone (kill -9: same host, pid not running) or past its time is
        taken over. The check and the write are one transaction, so two processes cannot both claim."""
        now, me, host = time.time(), os.getpid(), socket.gethostname()
        seconds = lease_seconds() if seconds is None else seconds
        try:
            self._conn.execute("BEGIN IMMEDIATE")
            try:
                row = self._conn.execute("SELECT pid, host, expires FROM leases WHERE key = ?", (key,)).fetchone()
                if row is not None and (row[0], row[1]) != (me, host) and row[2] > now \
                        and not (row[1] == host and not process_alive(row[0])):
                    self._conn.rollback()
                    return {"pid": row[0], "host": row[1], "expires": row[2]}
                self._conn.execute("INSERT OR REPLACE INTO leases (key, pid, host, expires) VALUES (?, ?, ?, ?)",
                                   (key, me, host, now + seconds))
                self._conn.commit()
            except BaseException:
                self._conn.rollback()
                raise
        except sqlite3.Error as error:
            raise self._fail(_reason(error)) from None
        return None

    def release(self, key: str) -> None:
        """Give up this process's claim on `key` (another process's claim is left alone)."""
        try:
            with self._conn:
                self._conn.execute("DELETE FROM leases WHERE key = ? AND pid = ? AND host = ?",
                                   (key, os.getpid(), socket.gethostname()))
        except sqlite3.Error as error:
            raise self._fail(_reason(error)) from None

    # -- weights --------------------------------------------------------------------
    @property
    def weights_dir(self) -> Path:
        return weights_dir_of(self.path)

    def weights_path(self, key: str) -> Path:
        return weights_file(self.weights_dir, key)

    def has_weights(self, key: str) -> bool:
        return self.weights_path(key).is_file()

    def save_weights(self, key: str, state_dict: Mapping[str, Any]) -> Path:
        return save_weights(self.weights_dir, key, state_dict)

    def load_weights(self, key: str, device: str = "cpu") -> dict[str, Any]:
        return load_weights(self.weights_dir, key, device)
