"""ChunkStore: a chunkserver's replicas, one sparse file each, every 4 KiB block checksummed.

Promise: ``read`` returns the bytes last written to a range, or raises
``ChecksumMismatch``; it never returns bytes whose CRC32 does not match the
checksum stored for their block. Once ``flush``, ``set_version`` or
``truncate_and_set_version`` returns, the replica's data, checksums and
version are on stable storage. ``create`` is durable when it returns.
A copy built aside (``stage``) takes the place of the chunk's replica here
only at ``install``, once every block read back good and it is durable.

Synchronous on purpose: no trio. The chunkserver's async service moves the
big calls to worker threads; the store is thread-safe (calls on one chunk
are serialized, calls on different chunks run in parallel).

This module is the store's API. The parts it is built from:
``replica_cache`` keeps the open replicas (a bounded LRU of fds, pinned
while in use),
``store_arguments`` checks what callers hand it and decodes a write's
range, ``block_writer`` writes a range as blocks, holes and CRC table
entries, ``replica_file`` holds an open replica and its raw, durable I/O,
and ``data_dir`` recognizes replica files when the directory is scanned.

One file per replica at
``DATA_DIR/chunks/<chunk_id & 0xff as 2 hex>/<chunk_id as 16 hex>.chunk``: a
header, a CRC table of every 4 KiB block, then the data, sparse. The format,
and the verified reading of blocks, live in ``dfs.protocol.replica_format``
(clients on this host read the same files directly, short-circuit reads).
``open_for_local_read`` hands them a read-only fd. A new replica is a file truncated to full
size with a table of ZERO_BLOCK_CRC, so its data area uses no disk space.

Reads and writes speak one encoding: a range [offset, offset + length) is a
list of ``zero_ranges`` plus a payload holding the bytes of the rest, in
order. Zeros never travel and never reach the disk: whole zero blocks are
punched out of the file (fallocate PUNCH_HOLE).

Caveats, honestly:

* Data blocks and the CRC table are written separately and not atomically.
  After a crash, blocks written since the last flush may fail their checksum.
  That is detected (``read`` raises, ``verify`` lists them), never returned;
  the replica must then be repaired from another one. The same holds after a
  write that failed half-way (ENOSPC, EIO): OSError propagates and the range
  is undefined until rewritten.
* Reading blocks: see ``replica_format``'s caveats (a data block whose CRC
  is ZERO_BLOCK_CRC's).
* The CRC table has no checksum of its own: a corrupt entry shows up as a
  bad block, indistinguishable from corrupt data. CRC32 catches every burst
  error up to 32 bits and random damage with probability 1 - 2**-32; it is
  no defence against deliberate tampering.
* ``set_version`` and ``set_owner`` rewrite the header in place. Should a crash tear it,
  the header checksum fails and the replica is moved aside (lost, so the
  master re-replicates it), never read with a wrong version.
* ``delete`` moves the replica into ``quarantine/`` (``dfs.chunkserver.
  quarantine``), where it is kept for a while: it frees no space until purged.
* Space: every replica here reserves its full size (``space_ledger``), so
  ``create`` and ``stage`` raise NoSpace when a new one would not fit beside
  the others' reservations, and ``write`` raises NoSpace, before writing
  anything, when the new blocks it needs are not really free (the file
  system filled by something the ledger does not count). An ENOSPC or EDQUOT
  from the file system itself is NoSpace too.
* Without hole punching (a filesystem that lacks it) zero blocks are written
  as zeros: correct, but they use disk space.
"""

from __future__ import annotations

import errno
import logging
import os
import stat
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Self

from vmstore.dfs.chunkserver.block_writer import BlockWriter
from vmstore.dfs.chunkserver.data_dir import (
    chunk_id_of,
    fsync_dir,
    is_chunk_subdir,
    mkdir_new,
    move_aside,
    read_header,
    replica_path,
)
from vmstore.dfs.chunkserver.disk_watch import probe_disk
from vmstore.dfs.chunkserver.quarantine import Quarantine
from vmstore.dfs.chunkserver.replica_cache import ReplicaCache
from vmstore.dfs.chunkserver.replica_file import (
    Buffer,
    OpenReplica,
    full_is_no_space,
    new_replica_file,
    store_owner,
    store_version,
    sync_replica,
)
from vmstore.dfs.chunkserver.space_ledger import SpaceLedger, SpaceReport
from vmstore.dfs.chunkserver.store_arguments import (
    Segment,
    check_current,
    check_id,
    check_range,
    check_version,
    check_version_change,
    is_int,
    segments_of,
)
from vmstore.dfs.constants import (
    BLOCK_SIZE_BYTES,
    BLOCKS_PER_CHUNK,
    CHUNK_SIZE_BYTES,
    REPLICA_FILES_OPEN_MAX,
)
from vmstore.dfs.errors import (
    ChecksumMismatch,
    ChunkNotFound,
    Exists,
    InvalidArgument,
    StaleChunkVersion,
)
from vmstore.dfs.protocol.replica_format import (
    CRC_TABLE_OFFSET,
    DATA_OFFSET,
    FILE_SIZE_BYTES,
    HEADER_SIZE_BYTES,
    RUN_BLOCKS_MAX,
    ZERO_BLOCK,
    ZERO_BLOCK_CRC,
    DamagedReplica,
    ReplicaOwner,
    chunk_name,
    decode_header,
    decode_owner,
    is_zero,
    pread_full,
    table_from_bytes,
    verified_blocks,
    verified_range,
)
from vmstore.dfs.types import ChunkId, ChunkVersion

logger = logging.getLogger(__name__)
# Read-only fds for short-circuit readers: O_NOFOLLOW for the reason _load
# gives, O_CLOEXEC so that no child of the chunkserver inherits one.
_LOCAL_READ_FLAGS = os.O_RDONLY | os.O_CLOEXEC | os.O_NOFOLLOW

__all__ = ["DATA_OFFSET", "FILE_SIZE_BYTES", "HEADER_SIZE_BYTES", "ZERO_BLOCK",
           "ZERO_BLOCK_CRC", "ChunkStore", "is_zero"]


@dataclass(frozen=True)
class StagedReplica:
    """A replica being built under tmp/ (``ChunkStore.stage``), not yet in its place."""

    replica: OpenReplica
    path: Path
    key: tuple[str, int] = ("staged", 0)  # its entry in the space ledger


class ChunkStore:
    """The replicas under one data directory, opened through a bounded LRU of fds."""

    def __init__(self, data_dir: Path, *, open_files_max: int = REPLICA_FILES_OPEN_MAX,
                 capacity_bytes: int | None = None) -> None:
        """``capacity_bytes``: use at most that much of the file system (``space_ledger``)."""
        self.data_dir = Path(data_dir)
        self._chunks_dir = self.data_dir / "chunks"
        self._damaged_dir = self.data_dir / "damaged"
        self._tmp_dir = self.data_dir / "tmp"
        self._cache = ReplicaCache(open_files_max, self._load)
        self._writer = BlockWriter(self.data_dir)
        for directory in (self._chunks_dir, self._damaged_dir, self._tmp_dir):
            directory.mkdir(parents=True, exist_ok=True)
        self.quarantine = Quarantine(self.data_dir)  # where deleted replicas go
        self.ledger = SpaceLedger(self.data_dir, capacity_bytes=capacity_bytes,
                                  quarantined_bytes=self._quarantined_bytes)
        self._staged_count = 0
        # chunk -> (old, new): its last version change in this process, nothing written
        # since; what revert_version may undo. Under the cache's lock.
        self._bumps: dict[int, tuple[int, int]] = {}
        # Half-made replicas of a create that crashed: never linked, so never
        # announced to the master.
        for entry in os.scandir(self._tmp_dir):
            os.unlink(entry.path)
        fsync_dir(self.data_dir)
        fsync_dir(self._chunks_dir)

    # --- lifecycle ----------------------------------------------------------
    def close(self) -> None:
        """Sync what was written and close every fd. The store is unusable after."""
        self._cache.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    # --- whole replicas -----------------------------------------------------
    def create(self, chunk_id: int, version: int, owner: ReplicaOwner | None = None) -> None:
        """A new, all-zero replica, durable when this returns; Exists if there is one.
        *owner* (the file and index the chunk belongs to) goes in its header."""
        check_id(chunk_id)
        check_version(version)
        path = self._path(chunk_id)
        if path.exists():
            raise Exists(f"{chunk_name(chunk_id)}: a replica exists")
        self.ledger.admit_replica(f"create {chunk_name(chunk_id)}")
        if mkdir_new(path.parent):
            fsync_dir(self._chunks_dir)
        # Built complete under tmp/ and linked into place, so the name never
        # points to a half-written file, and link() fails if the name exists.
        tmp, fd, crcs = new_replica_file(self._tmp_dir, chunk_id, version, owner)
        try:
            os.fsync(fd)
            try:
                os.link(tmp, path)
            except FileExistsError:
                raise Exists(f"{chunk_name(chunk_id)}: a replica exists") from None
        except BaseException:
            os.close(fd)
            raise
        finally:
            os.unlink(tmp)
        fsync_dir(path.parent)
        self.ledger.note_fd(chunk_id, fd)
        if not self._cache.add_new(OpenReplica(chunk_id, fd, version, crcs, owner=owner)):
            os.close(fd)  # a concurrent call opened the new file already; keep its fd

    # --- copies made aside (the replicator) -----------------------------------
    def stage(self, chunk_id: int, version: int,
              owner: ReplicaOwner | None = None) -> StagedReplica:
        """A new replica built under tmp/, beside any replica of the chunk here, which
        stays in place, read and reported as before, until ``install``."""
        check_id(chunk_id)
        check_version(version)
        self.ledger.admit_replica(f"copy of {chunk_name(chunk_id)}")
        path, fd, crcs = new_replica_file(self._tmp_dir, chunk_id, version, owner)
        with self._cache.lock:
            self._staged_count += 1
            key = ("staged", self._staged_count)
        self.ledger.note_fd(key, fd)
        return StagedReplica(OpenReplica(chunk_id, fd, version, crcs, owner=owner), path, key)

    def write_staged(self, staged: StagedReplica, offset: int, length: int, payload: Buffer,
                     zero_ranges: Sequence[tuple[int, int]]) -> None:
        """``write`` to a staged replica."""
        check_range(offset, length)
        segments = segments_of(offset, length, memoryview(payload).cast("B"), zero_ranges)
        with staged.replica.lock:
            if length > 0:
                self._write_blocks(staged.replica, staged.key, offset, length, len(payload),
                                   segments)

    def install(self, staged: StagedReplica) -> None:
        """Read every block of the staged replica back against its checksums, make it
        durable, and only then put it in the place of the chunk's replica here (if any);
        ChecksumMismatch (nothing replaced) if a block does not read back."""
        replica = staged.replica
        with replica.lock:
            bad: list[int] = []
            for _ in verified_blocks(replica.fd, replica.crcs, 0, 0, BLOCKS_PER_CHUNK,
                                     replica.chunk_id, bad):
                pass
            if bad:
                raise ChecksumMismatch(f"{chunk_name(replica.chunk_id)}: the copy made"
                                       f" here reads back {len(bad)} bad blocks")
            sync_replica(replica)
            os.fsync(replica.fd)
        path = self._path(replica.chunk_id)
        if mkdir_new(path.parent):
            fsync_dir(self._chunks_dir)
        with self._cache.lock:
            old = self._cache.cached(replica.chunk_id)
            try:
                version = old.version if old is not None else read_header(
                    str(path), replica.chunk_id)[0]
                self.quarantine.keep_copy(path, replica.chunk_id, version)
            except (FileNotFoundError, DamagedReplica):
                pass  # nothing, or nothing of use, in place
            # rename() swaps the name at once: a reader has the old file or the new one.
            os.rename(staged.path, path)
            self._cache.replace(replica)
            self._bumps.pop(replica.chunk_id, None)
        self.ledger.move(staged.key, replica.chunk_id)
        fsync_dir(path.parent)

    def discard(self, staged: StagedReplica) -> None:
        """Drop a staged replica that will not be installed."""
        self.ledger.forget(staged.key)
        os.close(staged.replica.fd)
        try:
            os.unlink(staged.path)
        except FileNotFoundError:
            pass

    def delete(self, chunk_id: int) -> Path:
        """Move a replica into quarantine (durably); its path there. ChunkNotFound if
        there is none."""
        check_id(chunk_id)
        path = self._path(chunk_id)
        with self._cache.use(chunk_id) as replica:
            sync_replica(replica)  # what it holds, as it was, in quarantine
            with self._cache.lock:
                # Move and forget under the cache's lock: a create of the same id
                # then either fails on the name or finds the cache clean.
                target = self.quarantine.move(path, chunk_id, replica.version)
                self._cache.retire(replica)
                self._bumps.pop(chunk_id, None)
        self.ledger.forget(chunk_id)
        self.quarantine.settle(path)
        return target

    def version_of(self, chunk_id: int) -> ChunkVersion:
        check_id(chunk_id)
        with self._cache.use(chunk_id) as replica:
            return ChunkVersion(replica.version)

    def open_for_local_read(self, chunk_id: int, version: int) -> int:
        """A new read-only fd of the replica, which is at *version*; the caller closes it.

        For short-circuit readers on this host. The replica is loaded (and
        checked) as for a read, so a damaged file is moved aside here as
        anywhere else; StaleChunkVersion unless it is *version* now;
        ChunkNotFound if there is none. The fd opened is checked to be the
        very file the store holds open, not one that took its name.
        """
        check_id(chunk_id)
        check_version(version)
        with self._cache.use(chunk_id) as replica:
            check_current(replica, version)
            # Under the replica's lock: delete() cannot unlink the name meanwhile.
            try:
                fd = os.open(self._path(chunk_id), _LOCAL_READ_FLAGS)
            except FileNotFoundError:
                raise ChunkNotFound(f"{chunk_name(chunk_id)}: no replica") from None
            try:
                opened, held = os.fstat(fd), os.fstat(replica.fd)
                if not stat.S_ISREG(opened.st_mode) or (opened.st_dev, opened.st_ino) != (
                    held.st_dev, held.st_ino
                ):
                    raise ChunkNotFound(f"{chunk_name(chunk_id)}: the name no longer leads"
                                        " to the replica")
            except BaseException:
                os.close(fd)
                raise
            return fd

    def set_version(self, chunk_id: int, old_version: int, new_version: int) -> None:
        """Bump the version, durably; StaleChunkVersion unless it is *old_version* now."""
        check_id(chunk_id)
        check_version_change(old_version, new_version)
        with self._cache.use(chunk_id) as replica:
            check_current(replica, old_version)
            store_version(replica, new_version)
            with self._cache.lock:
                self._bumps[chunk_id] = (old_version, new_version)

    def revert_version(self, chunk_id: int, old_version: int, new_version: int) -> None:
        """Undo ``set_version(old_version -> new_version)``, durably: only if that was the
        replica's last version change in this process and nothing was written since (its
        data is then what it was at ``old_version``); StaleChunkVersion otherwise."""
        check_id(chunk_id)
        check_version_change(old_version, new_version)
        with self._cache.use(chunk_id) as replica:
            check_current(replica, new_version)
            with self._cache.lock:
                if self._bumps.get(chunk_id) != (old_version, new_version):
                    raise StaleChunkVersion(
                        f"{chunk_name(chunk_id)}: version {new_version} is not an unwritten"
                        f" bump from {old_version} made by this process; not reverted")
                del self._bumps[chunk_id]
            store_version(replica, old_version)

    def truncate_and_set_version(
        self, chunk_id: int, old_version: int, new_version: int, length: int
    ) -> None:
        """Zero everything from *length* on, then bump the version; all durable."""
        check_id(chunk_id)
        check_version_change(old_version, new_version)
        if not is_int(length) or not 0 <= length <= CHUNK_SIZE_BYTES:
            raise InvalidArgument(f"length {length!r} is not in [0, {CHUNK_SIZE_BYTES}]")
        with self._cache.use(chunk_id) as replica:
            check_current(replica, old_version)
            with self._cache.lock:
                self._bumps.pop(chunk_id, None)
            if length < CHUNK_SIZE_BYTES:
                self._writer.write_segments(replica, length, [(length, CHUNK_SIZE_BYTES, None)])
                self.ledger.note_fd(chunk_id, replica.fd)
            store_version(replica, new_version)

    def flush(self, chunk_id: int) -> None:
        """Make the replica's written data and checksums durable."""
        check_id(chunk_id)
        with (self._cache.use(chunk_id) as replica,
              full_is_no_space(f"flush of {chunk_name(chunk_id)}")):
            sync_replica(replica)

    def set_owner(self, chunk_id: int, version: int, owner: ReplicaOwner) -> None:
        """Record the file and index the chunk belongs to in the replica's header,
        durably (a replica from before owner records, upgraded in place);
        StaleChunkVersion unless it is *version* now."""
        check_id(chunk_id)
        check_version(version)
        with self._cache.use(chunk_id) as replica:
            check_current(replica, version)
            if replica.owner != owner:
                store_owner(replica, owner)

    def list_chunks(self) -> list[tuple[ChunkId, ChunkVersion]]:
        """Every replica on disk, sorted; files that are not replicas move to damaged/."""
        return [(chunk_id, version) for chunk_id, version, _ in self.list_replicas()]

    def list_replicas(self) -> list[tuple[ChunkId, ChunkVersion, ReplicaOwner | None]]:
        """``list_chunks`` with each replica's owner record (None: it has none)."""
        found: list[tuple[ChunkId, ChunkVersion, ReplicaOwner | None]] = []
        for subdir in sorted(os.scandir(self._chunks_dir), key=lambda entry: entry.name):
            if not is_chunk_subdir(subdir):
                move_aside(self._damaged_dir, Path(subdir.path), "not a chunk subdirectory",
                           logger)
                continue
            for entry in sorted(os.scandir(subdir.path), key=lambda entry: entry.name):
                try:
                    replica = self._scan_entry(subdir.name, entry)
                except DamagedReplica as damage:
                    move_aside(self._damaged_dir, Path(entry.path), str(damage), logger)
                    continue
                except FileNotFoundError:
                    continue  # deleted while we looked
                except OSError as error:
                    logger.warning("cannot read replica %s, skipped: %s", entry.path, error)
                    continue
                found.append(replica)
        self.ledger.keep_only({chunk_id for chunk_id, _, _ in found})
        return sorted(found)

    def verify(self, chunk_id: int, first: int = 0, end: int = BLOCKS_PER_CHUNK) -> list[int]:
        """Indexes of the blocks in [first, end) (default: all) whose data does not match
        their checksum (scrub, and a read that met a bad block)."""
        check_id(chunk_id)
        if not 0 <= first <= end <= BLOCKS_PER_CHUNK:
            raise InvalidArgument(f"blocks [{first}, {end}) out of [0, {BLOCKS_PER_CHUNK})")
        bad: list[int] = []
        # One run at a time, so writes to the chunk are not held up for a
        # whole 64 MiB scan.
        for run_first in range(first, end, RUN_BLOCKS_MAX):
            with self._cache.use(chunk_id) as replica:
                run_end = min(run_first + RUN_BLOCKS_MAX, end)
                for _ in self._blocks(replica, run_first, run_end, bad):
                    pass
        return bad

    def probe(self) -> None:
        """Write, fdatasync and read back a small file beside the replicas (the disk
        watch's probe, ``dfs.chunkserver.disk_watch``); OSError if the disk refuses."""
        probe_disk(self.data_dir)

    def space(self) -> tuple[int, int]:
        """(bytes_total, bytes_used) of the data directory's file system (or capacity)."""
        report = self.ledger.report()
        return report.total_bytes, report.used_bytes

    def space_report(self) -> SpaceReport:
        """Total, used, free and reserved bytes, as the master places by them."""
        return self.ledger.report()

    def _quarantined_bytes(self) -> int:
        return sum(entry.size_bytes for entry in self.quarantine.entries())

    # --- data ---------------------------------------------------------------
    def read(
        self, chunk_id: int, version: int, offset: int, length: int
    ) -> tuple[bytes, list[tuple[int, int]]]:
        """(payload, zero_ranges) of [offset, offset + length), every block verified.

        zero_ranges are the merged, ordered parts of the range whose blocks
        are zero; the payload is the rest of the range, in order.
        """
        check_id(chunk_id)
        check_version(version)
        check_range(offset, length)
        with self._cache.use(chunk_id) as replica:
            check_current(replica, version)
            return verified_range(replica.fd, replica.crcs, 0, offset, length, chunk_id)

    def write(
        self,
        chunk_id: int,
        version: int,
        offset: int,
        length: int,
        payload: Buffer,
        zero_ranges: Sequence[tuple[int, int]],
    ) -> None:
        """Store [offset, offset + length): zero_ranges are zeros, payload the rest, in order.

        Not durable until ``flush``. All-zero blocks become holes.
        """
        check_id(chunk_id)
        check_version(version)
        check_range(offset, length)
        segments = segments_of(offset, length, memoryview(payload).cast("B"), zero_ranges)
        with self._cache.use(chunk_id) as replica:
            check_current(replica, version)
            if chunk_id in self._bumps:  # read without the lock: a write is a hot path
                with self._cache.lock:
                    self._bumps.pop(chunk_id, None)
            if length > 0:
                self._write_blocks(replica, chunk_id, offset, length, len(payload), segments)

    def _write_blocks(self, replica: OpenReplica, key: int | tuple[str, int], offset: int,
                      length: int, payload_bytes: int, segments: list[Segment]) -> None:
        """Write the segments if the blocks they fill are free to have; NoSpace (nothing
        written) if not. The caller holds the replica's lock."""
        if payload_bytes:
            # New blocks: holes the payload may fill, at most the payload's blocks
            # (and two edges). Overcounts where it fills blocks with zeros: harmless.
            first, end = offset // BLOCK_SIZE_BYTES, -(-(offset + length) // BLOCK_SIZE_BYTES)
            holes = replica.crcs[first:end].count(ZERO_BLOCK_CRC)
            need_bytes = min(holes, -(-payload_bytes // BLOCK_SIZE_BYTES) + 2) * BLOCK_SIZE_BYTES
            self.ledger.admit_write(need_bytes, f"write to {chunk_name(replica.chunk_id)}")
        with full_is_no_space(f"write to {chunk_name(replica.chunk_id)}"):
            self._writer.write_segments(replica, offset, segments)
        self.ledger.note_fd(key, replica.fd)

    # --- internals: files ---------------------------------------------------
    def _path(self, chunk_id: int) -> Path:
        return replica_path(self._chunks_dir, chunk_id)

    def _load(self, chunk_id: int) -> OpenReplica:
        """The replica file, opened and checked (the cache calls this under its lock)."""
        path = self._path(chunk_id)
        try:
            # O_NOFOLLOW: a symlink planted here must not lead reads and
            # writes out of the data directory.
            fd = os.open(path, os.O_RDWR | os.O_CLOEXEC | os.O_NOFOLLOW)
        except FileNotFoundError:
            raise ChunkNotFound(f"{chunk_name(chunk_id)}: no replica") from None
        except OSError as error:
            if error.errno not in (errno.ELOOP, errno.EISDIR):
                raise
            move_aside(self._damaged_dir, path, "not a regular file", logger)
            raise ChunkNotFound(f"{chunk_name(chunk_id)}: replica damaged (not a regular file)"
                                ) from None
        try:
            raw = pread_full(fd, DATA_OFFSET, 0)
            version = decode_header(raw[:HEADER_SIZE_BYTES], chunk_id)
            if len(raw) < DATA_OFFSET:
                raise DamagedReplica("CRC table truncated")
            self.ledger.note_fd(chunk_id, fd)
            return OpenReplica(chunk_id, fd, version, table_from_bytes(raw[CRC_TABLE_OFFSET:]),
                               owner=decode_owner(raw[:HEADER_SIZE_BYTES]))
        except DamagedReplica as damage:
            os.close(fd)
            move_aside(self._damaged_dir, path, str(damage), logger)
            raise ChunkNotFound(f"{chunk_name(chunk_id)}: replica damaged ({damage})") from None
        except BaseException:
            os.close(fd)
            raise

    def _scan_entry(self, subdir: str, entry: os.DirEntry[str]
                    ) -> tuple[ChunkId, ChunkVersion, ReplicaOwner | None]:
        chunk_id = chunk_id_of(subdir, entry)
        self.ledger.note(chunk_id, entry.stat(follow_symlinks=False).st_blocks * 512)
        with self._cache.lock:
            cached = self._cache.cached(chunk_id)
            if cached is not None:
                return ChunkId(chunk_id), ChunkVersion(cached.version), cached.owner
        version, owner = read_header(entry.path, chunk_id)
        return ChunkId(chunk_id), ChunkVersion(version), owner

    # --- internals: blocks --------------------------------------------------
    def _blocks(
        self, replica: OpenReplica, first: int, end: int, bad: list[int] | None = None
    ) -> Iterator[tuple[int, memoryview | None]]:
        """(index, verified content or None for zeros) of blocks [first, end).

        A bad block raises ChecksumMismatch, or with *bad* is appended to it
        and yielded as None (``replica_format.verified_blocks``).
        """
        return verified_blocks(replica.fd, replica.crcs, 0, first, end, replica.chunk_id, bad)
