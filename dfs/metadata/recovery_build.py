"""`vmstore recover build`: new metadata made from what the chunkservers hold, when every
copy of the metadata is gone (issue 15's last resort).

Promise: ``plan_recovery`` turns the scan reports of every chunkserver
(``dfs.protocol.recovery_report``) into files, one per inode the replicas' owner
records name, each holding its chunks at their indexes; ``write_recovered_metadata``
writes them as a master's metadata that the cluster's chunkservers accept, or writes
nothing. In detail:

* Each chunk takes its newest version across every report. Its holders are the
  replicas at that version whose every block checked out; only when none did, all of
  them at that version (a damaged last copy still serves its good blocks, and the
  master lists it as damaged). Older replicas are left out: the master finds them
  stale and quarantines them.
* Two chunks naming the same (inode, index) (one replaced the other, and the old one's
  deletion never reached a chunkserver): the higher id wins, since ids only grow. The
  other, and every chunk whose replicas carry no owner record, goes to
  ``/recovered/lost+found/chunk-<id>``, a one-chunk file, so that nothing on the
  chunkservers becomes unknown to the master (which would quarantine and later purge it).
* A file is ``/recovered/<inode>``, its st_ino that inode, owned by root, mode 0644.
  Its goal is the most current holders any of its chunks has (1 to GOAL_MAX).
* Its size is not on any chunkserver (only the metadata had it): it is the end of the
  last non-zero byte of its chunks, and at least one byte into its last chunk, rounded
  up to a multiple of ``round_to_bytes``. Trailing zeros written by the file's writer
  are not told apart from a hole, so a file whose last bytes were zeros comes back
  shorter, up to the rounding.
* The cluster id is the one the chunkservers accepted (reports naming two clusters are
  refused); the generation is past any they have seen and at least the Unix time in
  seconds, as after ``vmstore metadata restore``; every id counter and the lease epoch
  move past anything the old metadata can have handed out (RESTORE_ID_SKIP).
* The file is written beside the destination, checked, fsynced and renamed into
  place; a directory that holds metadata already is refused.

Caveats: names, directories, modes, owners, times, xattrs, symlinks and empty files
are gone for good; files deleted shortly before the loss may come back (their chunks'
deletion had not reached every chunkserver).
"""

from __future__ import annotations

import os
import sqlite3
import time
from dataclasses import dataclass, field
from pathlib import Path

from vmstore.dfs.constants import CHUNK_SIZE_BYTES, FILE_SIZE_BYTES_MAX, GOAL_MAX, RESTORE_ID_SKIP
from vmstore.dfs.errors import ConfigError, DamagedMetadata, Exists, InvalidArgument
from vmstore.dfs.metadata.backup import fsync_path
from vmstore.dfs.metadata.restore import METADATA_FILE_NAME
from vmstore.dfs.metadata.store import MetadataStore
from vmstore.dfs.protocol.recovery_report import ScannedReplica, ScanReport
from vmstore.dfs.types import ROOT_INODE, FileKind

RECOVERED_DIR = b"recovered"
LOST_DIR = b"lost+found"
FILE_MODE = FileKind.REGULAR | 0o644
DIR_MODE = FileKind.DIRECTORY | 0o755


@dataclass(frozen=True)
class RecoveredChunk:
    index: int
    chunk_id: int
    version: int
    holders: tuple[int, ...]  # server ids, 1-based positions in RecoveryPlan.servers
    verified: bool  # the holders' every block checked out
    data_end_bytes: int


@dataclass
class RecoveredFile:
    inode: int  # 0: a lost+found file (no owner known), numbered when written
    chunks: list[RecoveredChunk] = field(default_factory=list)
    size_bytes: int = 0
    goal: int = 1


@dataclass
class RecoveryPlan:
    cluster_id: str  # "": none seen, a new one is made
    generation: int
    servers: list[str]  # uuids; server id = position + 1
    files: list[RecoveredFile]  # by inode
    lost: list[RecoveredFile]  # lost+found, one chunk each
    unverified_chunks: list[int]  # chunks whose newest version has no clean replica
    unreadable: list[str]  # replica files the scans could not read
    highest_inode: int
    highest_chunk_id: int


def plan_recovery(reports: list[ScanReport], round_to_bytes: int) -> RecoveryPlan:
    """What the metadata will hold (pure: no disk, no clock but for the generation)."""
    if not 1 <= round_to_bytes <= CHUNK_SIZE_BYTES:
        raise InvalidArgument(f"round to {round_to_bytes} bytes: not in [1, {CHUNK_SIZE_BYTES}]")
    servers: list[str] = []
    clusters: set[str] = set()
    generation = 0
    replicas: dict[int, list[tuple[int, ScannedReplica]]] = {}  # chunk id -> (server, ...)
    unreadable: list[str] = []
    for report in reports:
        for data_dir in report.data_dirs:
            if data_dir.server_uuid in servers:
                raise InvalidArgument(f"chunkserver {data_dir.server_uuid} ({report.host}:"
                                      f"{data_dir.data_dir}) is in the reports twice")
            servers.append(data_dir.server_uuid)
            if data_dir.cluster_id:
                clusters.add(data_dir.cluster_id)
            generation = max(generation, data_dir.generation)
            unreadable.extend(f"{report.host}:{line}" for line in data_dir.unreadable)
            for replica in data_dir.replicas:
                replicas.setdefault(replica.chunk_id, []).append((len(servers), replica))
    if len(clusters) > 1:
        raise InvalidArgument(f"the chunkservers belong to {len(clusters)} clusters"
                              f" ({', '.join(sorted(clusters))}): scan one cluster's only")
    files: dict[int, RecoveredFile] = {}
    lost: list[RecoveredFile] = []
    unverified: list[int] = []
    highest_inode = 0
    for chunk_id in sorted(replicas):
        chunk, owner = _newest(chunk_id, replicas[chunk_id])
        if not chunk.verified:
            unverified.append(chunk_id)
        if owner is None:
            lost.append(RecoveredFile(0, [chunk]))
            continue
        inode, index = owner
        highest_inode = max(highest_inode, inode)
        file = files.setdefault(inode, RecoveredFile(inode))
        file.chunks.append(RecoveredChunk(index, chunk.chunk_id, chunk.version, chunk.holders,
                                          chunk.verified, chunk.data_end_bytes))
    for file in files.values():
        lost.extend(_keep_newest_per_index(file))
    for file in [*files.values(), *lost]:
        _size_and_goal(file, round_to_bytes)
    return RecoveryPlan(
        cluster_id=clusters.pop() if clusters else "",
        generation=max(generation + 1, int(time.time())), servers=servers,
        files=[files[inode] for inode in sorted(files)], lost=lost,
        unverified_chunks=unverified, unreadable=unreadable, highest_inode=highest_inode,
        highest_chunk_id=max(replicas, default=0))


def _newest(chunk_id: int, found: list[tuple[int, ScannedReplica]]
            ) -> tuple[RecoveredChunk, tuple[int, int] | None]:
    """The chunk at its newest version, held by its clean replicas at that version (all
    of them there if none is clean), and the owner its records name (None: no record)."""
    version = max(replica.version for _, replica in found)
    newest = [(server, replica) for server, replica in found if replica.version == version]
    clean = [(server, replica) for server, replica in newest if replica.verified]
    holders = clean or newest
    owners = [(r.inode, r.index) for _, r in sorted(found, key=lambda f: -f[1].version)
              if r.inode is not None and r.index is not None]
    chunk = RecoveredChunk(
        index=0, chunk_id=chunk_id, version=version,
        holders=tuple(sorted(server for server, _ in holders)), verified=bool(clean),
        data_end_bytes=max(replica.data_end_bytes for _, replica in holders))
    return chunk, owners[0] if owners else None


def _keep_newest_per_index(file: RecoveredFile) -> list[RecoveredFile]:
    """Keep one chunk per index (the highest id); the others, as lost+found files."""
    by_index: dict[int, RecoveredChunk] = {}
    displaced: list[RecoveredFile] = []
    for chunk in sorted(file.chunks, key=lambda c: (c.index, -c.chunk_id)):
        if chunk.index in by_index:
            displaced.append(RecoveredFile(0, [RecoveredChunk(
                0, chunk.chunk_id, chunk.version, chunk.holders, chunk.verified,
                chunk.data_end_bytes)]))
        else:
            by_index[chunk.index] = chunk
    file.chunks = [by_index[index] for index in sorted(by_index)]
    return displaced


def _size_and_goal(file: RecoveredFile, round_to_bytes: int) -> None:
    last = file.chunks[-1].index
    end = max([last * CHUNK_SIZE_BYTES + 1]
              + [c.index * CHUNK_SIZE_BYTES + c.data_end_bytes for c in file.chunks])
    rounded = -(-end // round_to_bytes) * round_to_bytes
    file.size_bytes = min(rounded, FILE_SIZE_BYTES_MAX)
    file.goal = max(1, min(GOAL_MAX, max(len(c.holders) for c in file.chunks)))


def write_recovered_metadata(plan: RecoveryPlan, data_dir: Path) -> Path:
    """Write the plan as the master's metadata in *data_dir*; the database's path."""
    if not data_dir.is_dir():
        raise ConfigError(f"{data_dir}: no such directory")
    database = data_dir / METADATA_FILE_NAME
    for name in (database, database.with_name(database.name + "-wal")):
        if name.exists():
            raise Exists(f"{name} exists: this directory holds metadata; recover into an"
                         " empty one (or move that metadata away first)")
    temporary = data_dir / f".{METADATA_FILE_NAME}.recovering-{os.getpid()}"
    try:
        for suffix in ("", "-wal", "-shm"):
            Path(f"{temporary}{suffix}").unlink(missing_ok=True)
        store = MetadataStore(temporary)
        try:
            with store.transaction():
                _fill(store.connection, plan)
            store.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            store.execute("PRAGMA journal_mode=DELETE")
            check = store.all("PRAGMA quick_check")
        finally:
            store.close()
        if check != [("ok",)]:
            raise DamagedMetadata(f"the recovered metadata fails its check: {check[:3]}")
        fsync_path(temporary)
        os.replace(temporary, database)
        fsync_path(data_dir)
    except (OSError, sqlite3.Error) as error:
        raise ConfigError(f"cannot write {database}: {error}") from None
    finally:
        for suffix in ("", "-wal", "-shm"):
            Path(f"{temporary}{suffix}").unlink(missing_ok=True)
    return database


def _fill(db: sqlite3.Connection, plan: RecoveryPlan) -> None:
    """Every row of the plan, in the caller's transaction, on a new store (root only)."""
    now_ns = time.time_ns()
    if plan.cluster_id:
        db.execute("UPDATE meta SET value = ? WHERE key = 'cluster_id'", (plan.cluster_id,))
    db.execute("UPDATE meta SET value = ? WHERE key = 'generation'", (str(plan.generation),))
    db.execute("INSERT OR REPLACE INTO meta(key, value) VALUES ('last_lease_epoch', ?)",
               (str(RESTORE_ID_SKIP),))
    db.executemany("INSERT INTO servers(id, uuid, host, port, host_label) VALUES (?, ?, '', 0,"
                   " '')", [(number + 1, uuid) for number, uuid in enumerate(plan.servers)])

    def new_inode(mode: int, nlink: int, size: int, goal: int, inode: int | None) -> int:
        cursor = db.execute(
            "INSERT INTO inodes(id, mode, nlink, uid, gid, size_bytes, atime_ns, mtime_ns,"
            " ctime_ns, goal) VALUES (?, ?, ?, 0, 0, ?, ?, ?, ?, ?)",
            (inode, mode, nlink, size, now_ns, now_ns, now_ns, goal))
        return int(cursor.lastrowid or 0)

    def name(parent: int, entry: bytes, inode: int) -> None:
        db.execute("INSERT INTO dentries(parent_id, name, inode_id) VALUES (?, ?, ?)",
                   (parent, entry, inode))

    def attach(inode: int, chunks: list[RecoveredChunk]) -> None:
        for chunk in chunks:
            db.execute("INSERT INTO chunks(id, version) VALUES (?, ?)",
                       (chunk.chunk_id, chunk.version))
            db.execute("INSERT INTO file_chunks(inode_id, chunk_index, chunk_id) VALUES"
                       " (?, ?, ?)", (inode, chunk.index, chunk.chunk_id))
            db.executemany("INSERT INTO replicas(chunk_id, server_id) VALUES (?, ?)",
                           [(chunk.chunk_id, server) for server in chunk.holders])

    for file in plan.files:
        assert file.inode > ROOT_INODE, f"inode {file.inode} cannot be a file's"
        new_inode(FILE_MODE, 1, file.size_bytes, file.goal, file.inode)
        attach(file.inode, file.chunks)
    _skip_counters(db, plan)
    recovered = new_inode(DIR_MODE, 3 if plan.lost else 2, 0, GOAL_MAX, None)
    db.execute("UPDATE inodes SET nlink = 3 WHERE id = ?", (ROOT_INODE,))
    name(ROOT_INODE, RECOVERED_DIR, recovered)
    for file in plan.files:
        name(recovered, str(file.inode).encode(), file.inode)
    if plan.lost:
        lost_dir = new_inode(DIR_MODE, 2, 0, GOAL_MAX, None)
        name(recovered, LOST_DIR, lost_dir)
        for file in plan.lost:
            (chunk,) = file.chunks
            file.inode = new_inode(FILE_MODE, 1, file.size_bytes, file.goal, None)
            attach(file.inode, file.chunks)
            name(lost_dir, f"chunk-{chunk.chunk_id:016x}".encode(), file.inode)


def _skip_counters(db: sqlite3.Connection, plan: RecoveryPlan) -> None:
    """Ids handed out from here on are past anything the old metadata may have used."""
    for table, highest in (("inodes", plan.highest_inode), ("chunks", plan.highest_chunk_id),
                           ("servers", len(plan.servers)), ("sessions", 0)):
        db.execute("DELETE FROM sqlite_sequence WHERE name = ?", (table,))
        db.execute("INSERT INTO sqlite_sequence(name, seq) VALUES (?, ?)",
                   (table, highest + RESTORE_ID_SKIP))
