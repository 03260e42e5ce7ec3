"""A backup put back as a master's metadata: `vmstore metadata restore`.

Promise: ``restore_metadata`` either leaves the data directory as it was, or
leaves in it a metadata file that a master starts on and the cluster's
chunkservers accept:

* The backup is checked first: SQLite's full ``integrity_check``, this vmstore's
  schema (no missing or unknown tables or columns), a cluster id and a
  generation. Metadata already in the directory must be of the same cluster.
* A directory whose database a process holds open (a master running on it) is
  refused, and so is one that holds metadata, unless ``force``: the old file
  (with its ``-wal`` and ``-shm``) is then kept beside it, renamed, never deleted.
* The generation moves past anything a chunkserver may have seen
  (``dfs.protocol.cluster_identity``): the master may have started many times
  since the backup, and chunkservers refuse a generation older than the newest
  they accepted. It becomes at least the current Unix time in seconds (above
  every count of master starts, and above any earlier restore's, as long as the
  masters started less than once a second on average since), and above the
  backup's and the replaced file's generations.
* Every AUTOINCREMENT counter (inodes, chunks, sessions, servers, readdir
  cookies) moves forward by RESTORE_ID_SKIP: ids handed out after the backup
  (their files and chunks are unknown to it) are never handed out again.
* The new file is written beside the destination, checked, fsynced and renamed
  into place, and the directory fsynced.

Caveats: every metadata change made after the backup is lost, and the restored
master deletes, as stale, the replicas of chunks created after the backup
(it does not know them). The running-master check sees only processes of this
host whose open files this user may read (``/proc/*/fd``).
"""

from __future__ import annotations

import os
import sqlite3
import time
from dataclasses import dataclass
from pathlib import Path

from vmstore.dfs.constants import RESTORE_ID_SKIP
from vmstore.dfs.errors import Busy, ConfigError, DamagedMetadata, Exists
from vmstore.dfs.metadata.backup import fsync_path
from vmstore.dfs.metadata.inspection import MetadataSummary, inspect_metadata, open_read_only

METADATA_FILE_NAME = "metadata.db"  # in the master's data dir (dfs.master.main)
_ID_TABLES = ("inodes", "chunks", "servers", "sessions", "dentries")


@dataclass(frozen=True)
class RestoreResult:
    backup: MetadataSummary
    database: Path
    generation: int  # the restored file's: the master's first start moves it on by one
    replaced: Path | None  # where the metadata that was there went


def restore_metadata(backup: Path, data_dir: Path, *, force: bool = False) -> RestoreResult:
    summary = checked_backup(backup)
    if not data_dir.is_dir():
        raise ConfigError(f"{data_dir}: no such directory")
    database = data_dir / METADATA_FILE_NAME
    holders = processes_holding(database)
    if holders:
        raise Busy(f"{database} is open in process {', '.join(map(str, holders))} (a master"
                   " running on it?): stop it before restoring")
    old_generation = 0
    if database.exists():
        old = inspect_metadata(database)
        if old.cluster_id != summary.cluster_id:
            raise ConfigError(f"{backup} is of cluster {summary.cluster_id}, the metadata in"
                              f" {data_dir} of cluster {old.cluster_id}: not restored")
        if not force:
            raise Exists(f"{database} holds metadata (generation {old.generation},"
                         f" {old.table_rows.get('inodes', 0):,} inodes): pass --force to"
                         " replace it (it is kept beside it, renamed)")
        old_generation = old.generation or 0
    assert summary.generation is not None
    generation = max(summary.generation, old_generation) + 1
    generation = max(generation, int(time.time()))
    temporary = data_dir / f".{METADATA_FILE_NAME}.restoring-{os.getpid()}"
    try:
        _copy_forward(backup, temporary, generation)
        fsync_path(temporary)
        replaced = _set_aside(database)
        os.replace(temporary, database)
        fsync_path(data_dir)
    except OSError as error:
        raise ConfigError(f"cannot write {database}: {error.strerror or error}") from None
    finally:
        temporary.unlink(missing_ok=True)
    return RestoreResult(summary, database, generation, replaced)


def checked_backup(backup: Path) -> MetadataSummary:
    """The backup's summary; DamagedMetadata unless it is whole metadata of this schema."""
    summary = inspect_metadata(backup)
    if summary.schema_differences:
        raise DamagedMetadata(f"{backup}: not this vmstore's schema: "
                              + "; ".join(summary.schema_differences[:5]))
    if not summary.cluster_id or summary.generation is None:
        raise DamagedMetadata(f"{backup}: no cluster id and generation")
    reading = open_read_only(backup)
    try:
        check = reading.execute("PRAGMA integrity_check").fetchall()
    except sqlite3.Error as error:
        raise DamagedMetadata(f"{backup}: integrity check failed: {error}") from None
    finally:
        reading.close()
    if check != [("ok",)]:
        raise DamagedMetadata(f"{backup}: fails its integrity check: {check[:3]}")
    return summary


def processes_holding(path: Path) -> list[int]:
    """Pids of this host's processes (those this user may see) with ``path`` open."""
    wanted = {str(path.resolve()), f"{path.resolve()}-wal"}
    holders = []
    for fd_dir in Path("/proc").glob("[0-9]*/fd"):
        if any(link in wanted for link in _links(fd_dir)):
            holders.append(int(fd_dir.parent.name))
    return sorted(holders)


def _links(fd_dir: Path) -> list[str]:
    """What a process's open descriptors name; none if it is gone or not ours to read."""
    try:
        descriptors = list(fd_dir.iterdir())
    except OSError:
        return []
    links = []
    for descriptor in descriptors:
        try:
            links.append(os.readlink(descriptor))
        except OSError:  # closed meanwhile (the listing's own descriptor among them)
            continue
    return links


def _copy_forward(backup: Path, temporary: Path, generation: int) -> None:
    """The backup's pages into ``temporary``, at ``generation``, its id counters skipped on."""
    temporary.unlink(missing_ok=True)
    reading = open_read_only(backup)
    writing = sqlite3.connect(temporary, isolation_level=None)
    try:
        reading.backup(writing, pages=-1)
        writing.execute("PRAGMA journal_mode=DELETE")
        writing.execute("BEGIN IMMEDIATE")
        writing.execute("UPDATE meta SET value = ? WHERE key = 'generation'", (str(generation),))
        for table in _ID_TABLES:
            row = writing.execute("SELECT seq FROM sqlite_sequence WHERE name = ?",
                                  (table,)).fetchone()
            highest = writing.execute(f"SELECT max(rowid) FROM {table}").fetchone()
            start = max(0 if row is None else int(row[0]), int(highest[0] or 0))
            writing.execute("DELETE FROM sqlite_sequence WHERE name = ?", (table,))
            writing.execute("INSERT INTO sqlite_sequence(name, seq) VALUES (?, ?)",
                            (table, start + RESTORE_ID_SKIP))
        writing.execute("COMMIT")
        check = writing.execute("PRAGMA quick_check").fetchall()
        if check != [("ok",)]:
            raise DamagedMetadata(f"the restored copy of {backup} fails its check: {check[:3]}")
    except sqlite3.Error as error:
        raise DamagedMetadata(f"{backup}: cannot restore: {error}") from None
    finally:
        writing.close()
        reading.close()


def _set_aside(database: Path) -> Path | None:
    """Rename the metadata being replaced and its WAL files (a stray WAL must never meet
    the restored file) out of the way; the database's new name, None if there was none."""
    stamp = time.strftime("%Y%m%dT%H%M%S")
    aside = database.with_name(f"{database.name}.replaced-{stamp}")
    for suffix in ("-wal", "-shm"):
        companion = database.with_name(database.name + suffix)
        if companion.exists():
            os.replace(companion, aside.with_name(aside.name + suffix))
    if not database.exists():
        return None
    os.replace(database, aside)
    return aside
