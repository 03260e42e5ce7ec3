"""A consistent copy of a master's metadata taken while it runs: `vmstore metadata backup`.

SQLite's online backup API copies the database through a read-only connection of
our own, in one step: one read transaction, so the copy is one snapshot of the
master's committed state (every transaction it had committed when the step began,
nothing of the ones after). The master in WAL mode goes on writing meanwhile; its
checkpoints cannot overwrite pages our snapshot still reads.

The copy is written beside the destination, switched to a rollback journal (one
self-contained file, no ``-wal`` to carry along), checked (``quick_check``, then
read as metadata), fsynced, renamed into place and its directory fsynced: the
destination is either the old file or the whole new copy, never half of one.

Caveat: the copy is as durable as the master's commits it holds, nothing later;
a backup taken on the master's own disk shares that disk's fate.
"""

from __future__ import annotations

import os
import sqlite3
from dataclasses import replace
from pathlib import Path

from vmstore.dfs.errors import ConfigError, DamagedMetadata
from vmstore.dfs.metadata.inspection import MetadataSummary, open_read_only, summarize


def backup_metadata(source: Path, destination: Path) -> MetadataSummary:
    """Copy the metadata at ``source`` to ``destination``; the copy's summary."""
    if destination.exists() and destination.resolve() == source.resolve():
        raise ConfigError(f"{destination} is the metadata itself; back it up elsewhere")
    if not destination.parent.is_dir():
        raise ConfigError(f"{destination}: directory {destination.parent} does not exist")
    temporary = destination.with_name(f".{destination.name}.partial-{os.getpid()}")
    reading = open_read_only(source)
    try:
        summary = _copy(reading, source, temporary)
        fsync_path(temporary)
        os.replace(temporary, destination)
        fsync_path(destination.parent)
    except OSError as error:
        raise ConfigError(f"cannot write {destination}: {error.strerror or error}") from None
    finally:
        reading.close()
        temporary.unlink(missing_ok=True)
    return replace(summary, path=str(destination))


def _copy(reading: sqlite3.Connection, source: Path, temporary: Path) -> MetadataSummary:
    """The snapshot into ``temporary``, checked; the summary of what it holds."""
    temporary.unlink(missing_ok=True)  # left by a backup killed with our pid long ago
    writing = sqlite3.connect(temporary, isolation_level=None)
    try:
        try:
            # pages=-1: all in one step, so one read transaction and one snapshot; in
            # steps, each write of the master would restart the copy.
            reading.backup(writing, pages=-1)
        except sqlite3.Error as error:
            raise DamagedMetadata(f"{source}: cannot copy: {error}") from None
        # The pages carry the master's WAL mode; a backup is one file.
        mode = writing.execute("PRAGMA journal_mode=DELETE").fetchone()
        assert mode is not None and str(mode[0]).lower() == "delete", mode
        check = writing.execute("PRAGMA quick_check").fetchall()
        if check != [("ok",)]:
            raise DamagedMetadata(f"the copy of {source} fails its check: {check[:3]}")
        # Named as the source: it is the source's content that is not metadata, if so.
        return summarize(writing, str(source), temporary.stat().st_size)
    finally:
        writing.close()


def fsync_path(path: Path) -> None:
    descriptor = os.open(path, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)
