"""Row-level change capture on the master's writing connection, and its replay.

This is how metadata HA ships a group commit to the standbys: not the SQL, not
the Python changes (they read the clock and the registry), but the rows as
they are after the batch.

Promise: after any statements in a transaction on the capturing connection,
``collect()`` returns a ``ChangeSet``. Applied with ``apply_changes`` to a
database that held the same rows as this one before the transaction, it
leaves that database holding the same rows as this one after it: every table
of the schema but ``journal_position`` (which says how far each copy is),
and the AUTOINCREMENT counters too, so that an id handed out and deleted in
one batch is still never handed out again by a standby that takes over.

How: TEMP triggers (this connection's only; nothing is written into the
database file, so backups and other connections see no trace) record the key
of every row inserted, updated or deleted, into one TEMP table per table.
``collect()`` reads each recorded key's row as it is now: present, an upsert
with every column; gone, a delete. A savepoint rolled back takes its
recorded keys with it (the temp database is part of the transaction).

Replay deletes every changed key first, then inserts the rows that are
present. A row that could conflict on a UNIQUE column with an inserted one
can only be an older version of a row changed in the same batch (the rows
after the batch coexisted on the capturing side), so it is gone by then; a
conflict left over means the copies had diverged, and the insert fails. Foreign keys are off
on every metadata connection (``MetadataStore``): rows are states, not steps.

Caveat: REPLACE's implicit deletes fire DELETE triggers only with
``recursive_triggers`` on, which ``install`` sets on its connection.
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass
from typing import Any

import msgspec

# Says how far a copy of the metadata has come; each copy keeps its own.
UNCAPTURED_TABLES = frozenset({"journal_position"})
_PREFIX = "_capture_"


class RowChange(msgspec.Struct, array_like=True, frozen=True):
    table: str
    key: tuple[Any, ...]  # (rowid,) for rowid tables; the primary key's columns otherwise
    row: tuple[Any, ...] | None  # every column in the table's order; None: deleted


class ChangeSet(msgspec.Struct, array_like=True, frozen=True):
    schema_version: int
    rows: tuple[RowChange, ...]
    sequences: tuple[tuple[str, int], ...]  # sqlite_sequence after the batch

    def __bool__(self) -> bool:
        return bool(self.rows) or bool(self.sequences)


@dataclass(frozen=True)
class _Table:
    name: str
    columns: tuple[str, ...]
    key_columns: tuple[str, ...]  # ("rowid",) or the primary key's columns
    rowid: bool

    def where(self) -> str:
        return " AND ".join(f'"{column}" IS ?' if column != "rowid" else "rowid = ?"
                            for column in self.key_columns)

    def column_list(self) -> str:
        return ", ".join(f'"{column}"' for column in self.columns)


def _tables(connection: sqlite3.Connection) -> tuple[_Table, ...]:
    tables = []
    for name, without_rowid in connection.execute(
            "SELECT name, wr FROM pragma_table_list WHERE schema = 'main' AND type = 'table'"
            " AND name NOT LIKE 'sqlite_%' ORDER BY name"):
        if name in UNCAPTURED_TABLES:
            continue
        info = connection.execute(f'PRAGMA main.table_info("{name}")').fetchall()
        columns = tuple(str(row[1]) for row in info)
        primary = tuple(str(row[1]) for row in sorted(
            (row for row in info if row[5]), key=lambda row: int(row[5])))
        if without_rowid:
            assert primary, f"table {name} is WITHOUT ROWID but has no primary key"
            tables.append(_Table(str(name), columns, primary, rowid=False))
        else:
            tables.append(_Table(str(name), columns, ("rowid",), rowid=True))
    return tuple(tables)


def _schema_version(connection: sqlite3.Connection) -> int:
    row = connection.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()
    return int(row[0]) if row is not None else 0


class ChangeCapture:
    """Records what each transaction on ``connection`` changed; one per writing connection."""

    def __init__(self, connection: sqlite3.Connection) -> None:
        self.connection = connection
        self.tables = _tables(connection)
        self.schema_version = _schema_version(connection)
        connection.execute("PRAGMA recursive_triggers = ON")
        for table in self.tables:
            self._install(table)
        self._shipped_sequences = self._sequences()

    def _install(self, table: _Table) -> None:
        keys = ", ".join(f"k{i}" for i in range(len(table.key_columns)))
        self.connection.execute(
            f"CREATE TEMP TABLE IF NOT EXISTS \"{_PREFIX}{table.name}\"({keys},"
            f" PRIMARY KEY ({keys}))")

        def record(row: str) -> str:
            values = ", ".join(f"{row}.{column}" if column == "rowid" else f'{row}."{column}"'
                               for column in table.key_columns)
            # Unqualified: SQLite allows no schema name here, and a TEMP table's
            # name is looked up before main's.
            return f'INSERT OR IGNORE INTO "{_PREFIX}{table.name}" VALUES ({values});'


        for event, body in (("INSERT", record("NEW")),
                            ("UPDATE", record("OLD") + record("NEW")),
                            ("DELETE", record("OLD"))):
            self.connection.execute(
                f'CREATE TEMP TRIGGER IF NOT EXISTS "{_PREFIX}{table.name}_{event.lower()}"'
                f' AFTER {event} ON main."{table.name}" BEGIN {body} END')

    def collect(self) -> ChangeSet:
        """What the open transaction changed so far; forgets it (call before COMMIT)."""
        rows: list[RowChange] = []
        for table in self.tables:
            log_table = f'temp."{_PREFIX}{table.name}"'
            keys = self.connection.execute(f"SELECT * FROM {log_table}").fetchall()
            if not keys:
                continue
            select = (f"SELECT {table.column_list()} FROM main.\"{table.name}\""
                      f" WHERE {table.where()}")
            for key in keys:
                row = self.connection.execute(select, key).fetchone()
                rows.append(RowChange(table.name, tuple(key),
                                      None if row is None else tuple(row)))
            self.connection.execute(f"DELETE FROM {log_table}")
        # The counters are shipped whenever they moved, rows or not: an INSERT OR
        # IGNORE that was ignored still takes an AUTOINCREMENT number (found by the
        # replay property: the copy's counter lagged, and would hand the id out again).
        sequences = self._sequences()
        moved = bool(rows) or sequences != self._shipped_sequences
        self._shipped_sequences = sequences
        return ChangeSet(self.schema_version, tuple(rows), sequences if moved else ())

    def _sequences(self) -> tuple[tuple[str, int], ...]:
        return tuple((str(name), int(seq)) for name, seq in self.connection.execute(
            "SELECT name, seq FROM main.sqlite_sequence ORDER BY name"))


def apply_changes(connection: sqlite3.Connection, changes: ChangeSet) -> None:
    """Make ``connection``'s rows what ``changes`` says (inside the caller's transaction).

    Raises ValueError for a change set of another schema version or naming a table
    this database lacks: a copy that cannot apply an entry exactly must not guess.
    """
    if changes.schema_version != _schema_version(connection):
        raise ValueError(f"journal entry of schema version {changes.schema_version}; this"
                         f" metadata is at {_schema_version(connection)}")
    tables = {table.name: table for table in _tables(connection)}
    for change in changes.rows:
        table = tables.get(change.table)
        if table is None:
            raise ValueError(f"journal entry names table {change.table!r}, not in this schema")
        if len(change.key) != len(table.key_columns):
            raise ValueError(f"journal entry's key {change.key!r} does not fit {change.table}")
        connection.execute(f'DELETE FROM main."{table.name}" WHERE {table.where()}', change.key)
    for change in changes.rows:
        if change.row is None:
            continue
        table = tables[change.table]
        if len(change.row) != len(table.columns):
            raise ValueError(f"journal entry's row for {change.table} has {len(change.row)}"
                             f" columns, not {len(table.columns)}")
        if table.rowid:
            names = f"rowid, {table.column_list()}"
            values = (*change.key, *change.row)
        else:
            names, values = table.column_list(), change.row
        marks = ", ".join("?" * len(values))
        connection.execute(f'INSERT INTO main."{table.name}"({names}) VALUES ({marks})',
                           values)
    for name, seq in changes.sequences:
        if connection.execute("UPDATE main.sqlite_sequence SET seq = ? WHERE name = ?",
                              (seq, name)).rowcount == 0:
            connection.execute("INSERT INTO main.sqlite_sequence(name, seq) VALUES (?, ?)",
                               (name, seq))


def encode_changes(changes: ChangeSet) -> bytes:
    return msgspec.msgpack.encode(changes)


def decode_changes(data: bytes) -> ChangeSet:
    return msgspec.msgpack.decode(data, type=ChangeSet)
