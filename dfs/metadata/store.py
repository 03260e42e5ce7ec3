"""MetadataStore: the master's SQLite database, opened durable.

Promise: when ``transaction()`` returns, everything done inside it is on
stable storage (WAL with ``synchronous=FULL``), so the master may answer the
requests it served. Many requests share one transaction (group commit); each
runs inside a ``savepoint()`` so that one request's error undoes only its
own changes.

Opened with ``fsync_commits`` off (``synchronous=NORMAL``), a commit is in the
WAL file but not yet on stable storage: it survives the master process's
death (kill -9: the kernel has it), not the host's. ``sync()`` then makes every
commit so far durable: an fsync of the WAL file, as ``synchronous=FULL`` does
at each commit. After an OS crash, SQLite recovers a prefix of the commits:
everything before the last ``sync()`` and perhaps some after it, in order.

Synchronous on purpose: no trio, no network. The master runs a whole batch
in one worker thread; nothing else uses the writing connection meanwhile.

Plain ``sqlite3``, not sqlite-utils: every write here is hand-written SQL inside
our own BEGIN IMMEDIATE / SAVEPOINT, which sqlite-utils' write methods (each a
``with conn:`` transaction of its own) would cut across. sqlite-utils reads
metadata files for ``vmstore metadata inspect`` (``dfs.metadata.inspection``).
"""

from __future__ import annotations

import os
import sqlite3
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from vmstore.dfs.constants import DEFAULT_GOAL
from vmstore.dfs.metadata.schema import create_tables
from vmstore.dfs.types import ROOT_INODE, FileKind


class MetadataStore:
    """One SQLite database file; ``connection`` is for this store's users only."""

    def __init__(self, path: Path, *, fsync_commits: bool = True) -> None:
        """``fsync_commits`` off: for a copy that is not the durable one (an HA
        master's, whose every batch is in etcd's journal before it commits here): a
        commit then reaches the disk at the next WAL checkpoint, and a crash can
        take back the last ones, together with the journal position that says how
        far this copy came, so the journal brings them back."""
        self.path = path
        self._wal_synced_once = False
        # isolation_level=None: we issue BEGIN/COMMIT ourselves, so a batch is
        # exactly one transaction and Python never opens one behind our back.
        self.connection = sqlite3.connect(
            path, isolation_level=None, check_same_thread=False, timeout=30.0
        )
        self.connection.execute("PRAGMA journal_mode=WAL")
        self.connection.execute(f"PRAGMA synchronous={'FULL' if fsync_commits else 'NORMAL'}")
        self.connection.execute("PRAGMA foreign_keys=OFF")  # invariants are ours to keep
        self._savepoint_depth = 0
        # executescript commits on its own, so the schema goes in before the
        # first transaction of ours.
        create_tables(self.connection)
        with self.transaction():
            self._create_root()

    def close(self) -> None:
        self.connection.close()

    def sync(self) -> None:
        """Every commit so far on stable storage (for a store opened without
        ``fsync_commits``); blocking: call it from a worker thread.

        An fsync of the WAL file reaches the pages SQLite wrote through its own
        descriptor (fsync is by file, not by descriptor); the first one also
        syncs the directory, so that the WAL file's name is durable too.
        """
        wal = self.path.with_name(self.path.name + "-wal")
        try:
            descriptor = os.open(wal, os.O_RDONLY)
        except FileNotFoundError:
            return  # nothing written since the WAL was checkpointed away: all in the database
        try:
            os.fsync(descriptor)
        finally:
            os.close(descriptor)
        if not self._wal_synced_once:
            directory = os.open(self.path.parent, os.O_RDONLY)
            try:
                os.fsync(directory)
            finally:
                os.close(directory)
            self._wal_synced_once = True

    def _create_root(self) -> None:
        if self.connection.execute("SELECT 1 FROM inodes WHERE id = ?", (ROOT_INODE,)).fetchone():
            return
        now_ns = time.time_ns()
        self.connection.execute(
            "INSERT INTO inodes(id, mode, nlink, uid, gid, size_bytes, atime_ns, mtime_ns,"
            " ctime_ns, goal) VALUES (?, ?, 2, 0, 0, 0, ?, ?, ?, ?)",
            (ROOT_INODE, FileKind.DIRECTORY | 0o755, now_ns, now_ns, now_ns, DEFAULT_GOAL),
        )

    @contextmanager
    def transaction(self) -> Iterator[None]:
        """BEGIN IMMEDIATE … COMMIT; rolls back if the body raises."""
        self.connection.execute("BEGIN IMMEDIATE")
        try:
            yield
        except BaseException:
            self.connection.execute("ROLLBACK")
            raise
        self.connection.execute("COMMIT")

    @contextmanager
    def savepoint(self) -> Iterator[None]:
        """A nested unit inside a transaction: undone alone if its body raises."""
        name = f"sp{self._savepoint_depth}"
        self._savepoint_depth += 1
        self.connection.execute(f"SAVEPOINT {name}")
        try:
            yield
        except BaseException:
            self.connection.execute(f"ROLLBACK TO {name}")
            self.connection.execute(f"RELEASE {name}")
            raise
        finally:
            self._savepoint_depth -= 1
        self.connection.execute(f"RELEASE {name}")

    def execute(self, sql: str, parameters: tuple[Any, ...] = ()) -> sqlite3.Cursor:
        return self.connection.execute(sql, parameters)

    def one(self, sql: str, parameters: tuple[Any, ...] = ()) -> tuple[Any, ...] | None:
        row: tuple[Any, ...] | None = self.connection.execute(sql, parameters).fetchone()
        return row

    def all(self, sql: str, parameters: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        return list(self.connection.execute(sql, parameters).fetchall())
