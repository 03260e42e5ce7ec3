"""What a metadata file holds, read without changing it: `vmstore metadata inspect`.

sqlite-utils earns its place here, in introspection (``db.tables``, ``table.count``,
``table.columns``), and not in ``MetadataStore``: the master's SQL is written out
by hand under its own BEGIN IMMEDIATE / SAVEPOINT discipline, which sqlite-utils'
write methods (each in a ``with conn:`` transaction of their own) would break.

The file is opened read-only through a URI (``mode=ro``) with ``query_only`` on,
so inspecting a live master's database can never change it; WAL readers do not
block the master's writer, nor does it block them.

Caveat: a WAL-mode file whose ``-wal`` and ``-shm`` are absent (a master that
closed cleanly) gets both made, empty, beside it by the read-only open, as every
SQLite reader of a WAL database does; the database file itself, its bytes and
its mtime, stay as they were.
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass, field
from pathlib import Path

import sqlite_utils

from vmstore.dfs.constants import READ_LOCK_TIMEOUT_S
from vmstore.dfs.errors import DamagedMetadata, NotFound
from vmstore.dfs.metadata.schema import SCHEMA_SQL


@dataclass(frozen=True)
class MetadataSummary:
    path: str
    size_bytes: int
    schema_version: str | None  # as stored (text); None: no such meta row
    cluster_id: str | None
    generation: int | None  # None: absent or not a number
    table_rows: dict[str, int] = field(default_factory=dict)  # every table of the schema
    # How the file's tables and columns differ from this vmstore's schema; empty: they match.
    schema_differences: list[str] = field(default_factory=list)


def open_read_only(path: Path) -> sqlite3.Connection:
    """A connection that cannot write ``path``; NotFound / DamagedMetadata name the file."""
    if not path.exists():
        raise NotFound(f"{path}: no such file")
    if not path.is_file():
        raise DamagedMetadata(f"{path}: not a file")
    # The URI quotes the path, so a '?' or '#' in a file name stays part of it.
    uri = path.resolve().as_uri() + "?mode=ro"
    try:
        connection = sqlite3.connect(uri, uri=True, timeout=READ_LOCK_TIMEOUT_S,
                                     check_same_thread=False)
    except sqlite3.Error as error:
        raise DamagedMetadata(f"{path}: cannot open: {error}") from None
    try:
        connection.execute("PRAGMA query_only=ON")
        # A file that is not SQLite opens fine and fails at its first read.
        connection.execute("SELECT count(*) FROM sqlite_master").fetchone()
    except sqlite3.Error as error:
        connection.close()
        raise DamagedMetadata(f"{path}: not an SQLite database ({error})") from None
    return connection


def inspect_metadata(path: Path) -> MetadataSummary:
    """The summary of the metadata file at ``path``, which is never written."""
    connection = open_read_only(path)
    try:
        return summarize(connection, str(path), path.stat().st_size)
    except sqlite3.Error as error:
        raise DamagedMetadata(f"{path}: unreadable: {error}") from None
    finally:
        connection.close()


def summarize(connection: sqlite3.Connection, path: str, size_bytes: int) -> MetadataSummary:
    """The summary of an open metadata database, which ``path`` names."""
    db = sqlite_utils.Database(connection, execute_plugins=False)
    names = set(db.table_names())
    if "meta" not in names:
        raise DamagedMetadata(f"{path}: an SQLite database, but not vmstore metadata"
                              " (no meta table)")
    meta = {str(key): str(value) for key, value in
            connection.execute("SELECT key, value FROM meta").fetchall()}
    generation = meta.get("generation")
    expected = _expected_columns()
    return MetadataSummary(
        path=path, size_bytes=size_bytes,
        schema_version=meta.get("schema_version"), cluster_id=meta.get("cluster_id"),
        generation=int(generation) if generation is not None and generation.isdigit()
        else None,
        table_rows={name: db.table(name).count for name in expected if name in names},
        schema_differences=_differences(db, names, expected))


def _expected_columns() -> dict[str, list[str]]:
    """Table → column names of this vmstore's schema, from SCHEMA_SQL itself."""
    scratch = sqlite3.connect(":memory:")
    try:
        scratch.executescript(SCHEMA_SQL)
        db = sqlite_utils.Database(scratch, execute_plugins=False)
        return {table.name: [column.name for column in table.columns]
                for table in db.tables if not table.name.startswith("sqlite_")}
    finally:
        scratch.close()


def _differences(db: sqlite_utils.Database, names: set[str],
                 expected: dict[str, list[str]]) -> list[str]:
    differences = [f"table {name} is missing" for name in expected if name not in names]
    differences.extend(f"table {name} is not in this vmstore's schema" for name in sorted(names)
                       if name not in expected and not name.startswith("sqlite_"))
    for name, columns in expected.items():
        if name not in names:
            continue
        present = [column.name for column in db.table(name).columns]
        differences.extend(f"table {name}: column {column} is missing"
                           for column in columns if column not in present)
        differences.extend(f"table {name}: column {column} is not in this vmstore's schema"
                           for column in present if column not in columns)
    return differences
