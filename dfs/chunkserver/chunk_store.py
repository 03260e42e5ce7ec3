"""ChunkStore: a chunkserver's replicas, one sparse file each, every 4 KiB block checksummed.

Promise: ``read`` returns the bytes last written to a range, or raises
``ChecksumMismatch``; it never returns bytes whose CRC32 does not match the
checksum stored for their block. Once ``flush``, ``set_version`` or
``truncate_and_set_version`` returns, the replica's data, checksums and
version are on stable storage. ``create`` is durable when it returns.

Synchronous on purpose: no trio. The chunkserver's async service moves the
big calls to worker threads; the store is thread-safe (calls on one chunk
are serialized, calls on different chunks run in parallel).

File format, one file per replica at
``DATA_DIR/chunks/<chunk_id & 0xff as 2 hex>/<chunk_id as 16 hex>.chunk``::

    offset 0       header, 4096 bytes: b"VMSCHNK1", u64 chunk_id, u64 version,
                   u32 crc32 of the 24 bytes before it; the rest zero
    offset 4096    CRC table: BLOCKS_PER_CHUNK u32 (64 KiB), the crc32 of each
                   4 KiB data block; ZERO_BLOCK_CRC for a block of zeros
    DATA_OFFSET    data: CHUNK_SIZE_BYTES, sparse; zero blocks are holes

All integers are little-endian. The format, and the verified reading of
blocks, live in ``dfs.protocol.replica_format``: clients on this host read
the same files directly (short-circuit reads), with the same code.
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
* A table entry equal to ZERO_BLOCK_CRC usually means a hole, but 1 in 2**32
  non-zero blocks has that CRC too. So such blocks are read only if the file
  holds data there (lseek SEEK_DATA, one call per run of such blocks): real
  holes cost no read, and a colliding block is still returned intact.
* The CRC table has no checksum of its own: a corrupt entry shows up as a
  bad block, indistinguishable from corrupt data. CRC32 catches every burst
  error up to 32 bits and random damage with probability 1 - 2**-32; it is
  no defence against deliberate tampering.
* ``set_version`` rewrites the header in place. Should a crash tear it,
  the header checksum fails and the replica is moved aside (lost, so the
  master re-replicates it), never read with a wrong version.
* ``delete`` does not fsync the directory: after a crash a deleted replica
  may come back; the master then sees an unknown chunk and deletes it again.
* Without hole punching (a filesystem that lacks it) zero blocks are written
  as zeros: correct, but they use disk space.
"""

from __future__ import annotations

import ctypes
import errno
import logging
import os
import re
import stat
import threading
import time
import zlib
from array import array
from collections import OrderedDict
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Self, TypeAlias

from vmstore.dfs.constants import BLOCK_SIZE_BYTES, BLOCKS_PER_CHUNK, CHUNK_SIZE_BYTES
from vmstore.dfs.errors import (
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
    MAX_CHUNK_ID,
    MAX_VERSION,
    RUN_BLOCKS_MAX,
    ZERO_BLOCK,
    ZERO_BLOCK_CRC,
    ZEROS,
    ZEROS_VIEW,
    DamagedReplica,
    chunk_name,
    decode_header,
    encode_header,
    is_zero,
    pread_full,
    table_bytes,
    table_from_bytes,
    verified_blocks,
    verified_range,
)
from vmstore.dfs.types import ChunkId, ChunkVersion

logger = logging.getLogger(__name__)

Buffer: TypeAlias = bytes | bytearray | memoryview
# A block's new or current content; None means all zeros (a hole).
_Block: TypeAlias = memoryview | bytearray | None

OPEN_FILES_MAX = 256
# Read-only fds for short-circuit readers: O_NOFOLLOW for the reason _load
# gives, O_CLOEXEC so that no child of the chunkserver inherits one.
_LOCAL_READ_FLAGS = os.O_RDONLY | os.O_CLOEXEC | os.O_NOFOLLOW
_IOV_MAX = os.sysconf("SC_IOV_MAX") if "SC_IOV_MAX" in os.sysconf_names else 1024
_SUBDIR_NAME = re.compile(r"[0-9a-f]{2}")
_CHUNK_NAME = re.compile(r"([0-9a-f]{16})\.chunk")

_FALLOC_FL_KEEP_SIZE = 0x01
_FALLOC_FL_PUNCH_HOLE = 0x02
_libc = ctypes.CDLL(None, use_errno=True)
# fallocate64 takes a 64-bit off_t on every ABI; plain fallocate only on 64-bit ones.
_fallocate = getattr(_libc, "fallocate64", None) or _libc.fallocate
_fallocate.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int64, ctypes.c_int64]
_fallocate.restype = ctypes.c_int
# Writes of this much or more start their writeback at once (sync_file_range,
# SYNC_FILE_RANGE_WRITE: no wait), so that a stream's fsync at the end finds
# little left dirty instead of all of it.
_EARLY_WRITEBACK_BYTES_MIN = 256 * 1024
_SYNC_FILE_RANGE_WRITE = 2
_sync_file_range = getattr(_libc, "sync_file_range", None)
if _sync_file_range is not None:
    _sync_file_range.argtypes = [ctypes.c_int, ctypes.c_int64, ctypes.c_int64, ctypes.c_uint]
    _sync_file_range.restype = ctypes.c_int

__all__ = ["DATA_OFFSET", "FILE_SIZE_BYTES", "HEADER_SIZE_BYTES", "ZERO_BLOCK",
           "ZERO_BLOCK_CRC", "ChunkStore", "is_zero"]


@dataclass(eq=False)
class _Replica:
    """An open replica: its fd, version and CRC table, kept in memory."""

    chunk_id: int
    fd: int
    version: int
    crcs: array[int]
    # Serializes the calls on this chunk, so that a read-modify-write of a
    # block and the table update after it are never interleaved.
    lock: threading.Lock = field(default_factory=threading.Lock)
    # Calls using the fd right now; a pinned replica is never closed.
    pins: int = 0
    dirty: bool = False  # written since the last fdatasync
    punched: bool = False  # holes punched since the last fsync
    retired: bool = False  # deleted: close the fd once the last user leaves


class ChunkStore:
    """The replicas under one data directory, opened through a bounded LRU of fds."""

    def __init__(self, data_dir: Path, *, open_files_max: int = OPEN_FILES_MAX) -> None:
        assert open_files_max >= 1
        self.data_dir = Path(data_dir)
        self._chunks_dir = self.data_dir / "chunks"
        self._damaged_dir = self.data_dir / "damaged"
        self._tmp_dir = self.data_dir / "tmp"
        self._open_files_max = open_files_max
        # Guards _open and every replica's pins/retired; held only briefly
        # (a cache miss reads 68 KiB under it, an eviction may fsync).
        self._lock = threading.Lock()
        self._open: OrderedDict[int, _Replica] = OrderedDict()
        self._can_punch = True
        self._closed = False
        for directory in (self._chunks_dir, self._damaged_dir, self._tmp_dir):
            directory.mkdir(parents=True, exist_ok=True)
        # Half-made replicas of a create that crashed: never linked, so never
        # announced to the master.
        for entry in os.scandir(self._tmp_dir):
            os.unlink(entry.path)
        _fsync_dir(self.data_dir)
        _fsync_dir(self._chunks_dir)

    # --- lifecycle ----------------------------------------------------------
    def close(self) -> None:
        """Sync what was written and close every fd. The store is unusable after."""
        with self._lock:
            self._closed = True
            while self._open:
                _, replica = self._open.popitem(last=False)
                assert replica.pins == 0, "close() while a call is using the store"
                self._close_replica(replica)

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
    def create(self, chunk_id: int, version: int) -> None:
        """A new, all-zero replica, durable when this returns; Exists if there is one."""
        _check_id(chunk_id)
        _check_version(version)
        path = self._path(chunk_id)
        if path.exists():
            raise Exists(f"{chunk_name(chunk_id)}: a replica exists")
        if _mkdir(path.parent):
            _fsync_dir(self._chunks_dir)
        # Built complete under tmp/ and linked into place, so the name never
        # points to a half-written file, and link() fails if the name exists.
        tmp = self._tmp_dir / f"{chunk_id:016x}.{threading.get_ident():x}.tmp"
        fd = os.open(tmp, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o640)
        try:
            os.ftruncate(fd, FILE_SIZE_BYTES)
            _pwrite_all(fd, [encode_header(chunk_id, version)], 0)
            crcs = array("I", [ZERO_BLOCK_CRC]) * BLOCKS_PER_CHUNK
            _pwrite_all(fd, [table_bytes(crcs)], CRC_TABLE_OFFSET)
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
        _fsync_dir(path.parent)
        with self._lock:
            if chunk_id in self._open or self._closed:
                # A concurrent call opened the new file already; keep its fd.
                os.close(fd)
            else:
                self._open[chunk_id] = _Replica(chunk_id, fd, version, crcs)
                self._evict()

    def delete(self, chunk_id: int) -> None:
        """Remove a replica; ChunkNotFound if there is none."""
        _check_id(chunk_id)
        with self._use(chunk_id) as replica, self._lock:
            # Unlink and forget under the store lock: a create of the same id
            # then either fails on the name or finds the cache clean.
            os.unlink(self._path(chunk_id))
            replica.retired = True
            replica.dirty = False
            del self._open[chunk_id]

    def version_of(self, chunk_id: int) -> ChunkVersion:
        _check_id(chunk_id)
        with self._use(chunk_id) as replica:
            return ChunkVersion(replica.version)

    def open_for_local_read(self, chunk_id: int, version: int) -> int:
        """A new read-only fd of the replica, which is at *version*; the caller closes it.

        For short-circuit readers on this host. The replica is loaded (and
        checked) as for a read, so a damaged file is moved aside here as
        anywhere else; StaleChunkVersion unless it is *version* now;
        ChunkNotFound if there is none. The fd opened is checked to be the
        very file the store holds open, not one that took its name.
        """
        _check_id(chunk_id)
        _check_version(version)
        with self._use(chunk_id) as replica:
            _check_current(replica, version)
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
        _check_id(chunk_id)
        _check_version_change(old_version, new_version)
        with self._use(chunk_id) as replica:
            _check_current(replica, old_version)
            self._store_version(replica, new_version)

    def truncate_and_set_version(
        self, chunk_id: int, old_version: int, new_version: int, length: int
    ) -> None:
        """Zero everything from *length* on, then bump the version; all durable."""
        _check_id(chunk_id)
        _check_version_change(old_version, new_version)
        if not _is_int(length) or not 0 <= length <= CHUNK_SIZE_BYTES:
            raise InvalidArgument(f"length {length!r} is not in [0, {CHUNK_SIZE_BYTES}]")
        with self._use(chunk_id) as replica:
            _check_current(replica, old_version)
            if length < CHUNK_SIZE_BYTES:
                self._write_segments(replica, length, [(length, CHUNK_SIZE_BYTES, None)])
            self._store_version(replica, new_version)

    def flush(self, chunk_id: int) -> None:
        """Make the replica's written data and checksums durable."""
        _check_id(chunk_id)
        with self._use(chunk_id) as replica:
            _sync(replica)

    def list_chunks(self) -> list[tuple[ChunkId, ChunkVersion]]:
        """Every replica on disk, sorted; files that are not replicas move to damaged/."""
        found: list[tuple[ChunkId, ChunkVersion]] = []
        for subdir in sorted(os.scandir(self._chunks_dir), key=lambda entry: entry.name):
            if not (subdir.is_dir(follow_symlinks=False) and _SUBDIR_NAME.fullmatch(subdir.name)):
                self._move_aside(Path(subdir.path), "not a chunk subdirectory")
                continue
            for entry in sorted(os.scandir(subdir.path), key=lambda entry: entry.name):
                try:
                    replica = self._scan_entry(subdir.name, entry)
                except DamagedReplica as damage:
                    self._move_aside(Path(entry.path), str(damage))
                    continue
                except FileNotFoundError:
                    continue  # deleted while we looked
                except OSError as error:
                    logger.warning("cannot read replica %s, skipped: %s", entry.path, error)
                    continue
                found.append(replica)
        return sorted(found)

    def verify(self, chunk_id: int) -> list[int]:
        """Indexes of the blocks whose data does not match their checksum (scrub)."""
        _check_id(chunk_id)
        bad: list[int] = []
        # One run at a time, so writes to the chunk are not held up for a
        # whole 64 MiB scan.
        for first in range(0, BLOCKS_PER_CHUNK, RUN_BLOCKS_MAX):
            with self._use(chunk_id) as replica:
                end = min(first + RUN_BLOCKS_MAX, BLOCKS_PER_CHUNK)
                for _ in self._blocks(replica, first, end, bad):
                    pass
        return bad

    def space(self) -> tuple[int, int]:
        """(bytes_total, bytes_used) of the filesystem holding the data directory."""
        stats = os.statvfs(self.data_dir)
        return stats.f_blocks * stats.f_frsize, (stats.f_blocks - stats.f_bfree) * stats.f_frsize

    # --- data ---------------------------------------------------------------
    def read(
        self, chunk_id: int, version: int, offset: int, length: int
    ) -> tuple[bytes, list[tuple[int, int]]]:
        """(payload, zero_ranges) of [offset, offset + length), every block verified.

        zero_ranges are the merged, ordered parts of the range whose blocks
        are zero; the payload is the rest of the range, in order.
        """
        _check_id(chunk_id)
        _check_version(version)
        _check_range(offset, length)
        with self._use(chunk_id) as replica:
            _check_current(replica, version)
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
        _check_id(chunk_id)
        _check_version(version)
        _check_range(offset, length)
        segments = _segments(offset, length, memoryview(payload).cast("B"), zero_ranges)
        with self._use(chunk_id) as replica:
            _check_current(replica, version)
            if length > 0:
                self._write_segments(replica, offset, segments)

    # --- internals: the replica cache ---------------------------------------
    def _path(self, chunk_id: int) -> Path:
        assert 0 < chunk_id <= MAX_CHUNK_ID
        return self._chunks_dir / f"{chunk_id & 0xFF:02x}" / f"{chunk_id:016x}.chunk"

    @contextmanager
    def _use(self, chunk_id: int) -> Iterator[_Replica]:
        """The open replica, pinned (its fd stays open) and locked for this call."""
        with self._lock:
            assert not self._closed, "ChunkStore used after close()"
            replica = self._open.get(chunk_id)
            if replica is None:
                replica = self._load(chunk_id)
                self._open[chunk_id] = replica
            else:
                self._open.move_to_end(chunk_id)
            replica.pins += 1
        try:
            with replica.lock:
                if replica.retired:
                    raise ChunkNotFound(f"{chunk_name(chunk_id)}: no replica (deleted)")
                yield replica
        finally:
            with self._lock:
                replica.pins -= 1
                if replica.retired and replica.pins == 0:
                    os.close(replica.fd)
                self._evict()

    def _load(self, chunk_id: int) -> _Replica:
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
            self._move_aside(path, "not a regular file")
            raise ChunkNotFound(f"{chunk_name(chunk_id)}: replica damaged (not a regular file)"
                                ) from None
        try:
            raw = pread_full(fd, DATA_OFFSET, 0)
            version = decode_header(raw[:HEADER_SIZE_BYTES], chunk_id)
            if len(raw) < DATA_OFFSET:
                raise DamagedReplica("CRC table truncated")
            return _Replica(chunk_id, fd, version, table_from_bytes(raw[CRC_TABLE_OFFSET:]))
        except DamagedReplica as damage:
            os.close(fd)
            self._move_aside(path, str(damage))
            raise ChunkNotFound(f"{chunk_name(chunk_id)}: replica damaged ({damage})") from None
        except BaseException:
            os.close(fd)
            raise

    def _evict(self) -> None:
        """Close least recently used replicas beyond the bound; the caller holds _lock."""
        if len(self._open) <= self._open_files_max:
            return
        for chunk_id in [key for key, value in self._open.items() if value.pins == 0]:
            if len(self._open) <= self._open_files_max:
                break
            self._close_replica(self._open.pop(chunk_id))

    def _close_replica(self, replica: _Replica) -> None:
        # The dirty flag dies with the fd, so sync now: a later flush() of
        # this chunk would otherwise return before its data is durable.
        try:
            _sync(replica)
        finally:
            os.close(replica.fd)

    def _scan_entry(self, subdir: str, entry: os.DirEntry[str]) -> tuple[ChunkId, ChunkVersion]:
        match = _CHUNK_NAME.fullmatch(entry.name)
        if match is None or not entry.is_file(follow_symlinks=False):
            raise DamagedReplica("not a replica file name")
        chunk_id = int(match.group(1), 16)
        if not 0 < chunk_id <= MAX_CHUNK_ID or subdir != f"{chunk_id & 0xFF:02x}":
            raise DamagedReplica("chunk id out of range or in the wrong subdirectory")
        with self._lock:
            cached = self._open.get(chunk_id)
            if cached is not None:
                return ChunkId(chunk_id), ChunkVersion(cached.version)
        fd = os.open(entry.path, os.O_RDONLY | os.O_CLOEXEC | os.O_NOFOLLOW)
        try:
            header = pread_full(fd, HEADER_SIZE_BYTES, 0)
        finally:
            os.close(fd)
        return ChunkId(chunk_id), ChunkVersion(decode_header(header, chunk_id))

    def _move_aside(self, path: Path, reason: str) -> None:
        """Keep a file that is not a replica for a human to look at; never raises."""
        target = self._damaged_dir / f"{path.parent.name}-{path.name}.{time.time_ns()}"
        try:
            os.rename(path, target)
        except OSError as error:
            logger.warning("%s is damaged (%s) and could not be moved: %s", path, reason, error)
            return
        logger.warning("%s is damaged (%s): moved to %s", path, reason, target)

    # --- internals: blocks --------------------------------------------------
    def _blocks(
        self, replica: _Replica, first: int, end: int, bad: list[int] | None = None
    ) -> Iterator[tuple[int, memoryview | None]]:
        """(index, verified content or None for zeros) of blocks [first, end).

        A bad block raises ChecksumMismatch, or with *bad* is appended to it
        and yielded as None (``replica_format.verified_blocks``).
        """
        return verified_blocks(replica.fd, replica.crcs, 0, first, end, replica.chunk_id, bad)

    def _write_segments(
        self, replica: _Replica, offset: int, segments: list[tuple[int, int, memoryview | None]]
    ) -> None:
        """Write the blocks the segments (from offset on, contiguous) touch."""
        end = segments[-1][1]
        first, last = offset // BLOCK_SIZE_BYTES, (end - 1) // BLOCK_SIZE_BYTES + 1
        if self._write_whole_blocks(replica, offset, segments):
            return
        # Every block's new content is known (and the old edge blocks
        # verified) before the first byte is written.
        blocks = [
            self._new_block(replica, index, offset, end, segments) for index in range(first, last)
        ]
        crcs = array("I", [ZERO_BLOCK_CRC if blk is None else zlib.crc32(blk) for blk in blocks])
        start = 0
        while start < len(blocks):
            zero_run = blocks[start] is None
            stop = start + 1
            while stop < len(blocks) and (blocks[stop] is None) == zero_run:
                stop += 1
            at = DATA_OFFSET + (first + start) * BLOCK_SIZE_BYTES
            if zero_run:
                self._punch(replica.fd, at, (stop - start) * BLOCK_SIZE_BYTES)
                replica.punched = True
            else:
                _pwrite_all(replica.fd, [blk for blk in blocks[start:stop] if blk is not None], at)
            start = stop
        for index, block in enumerate(blocks):
            # The payload may be a caller's bytearray: it must not have changed under us.
            assert block is None or zlib.crc32(block) == crcs[index], "payload changed mid-write"
        _pwrite_all(replica.fd, [table_bytes(crcs)], CRC_TABLE_OFFSET + first * 4)
        replica.crcs[first:last] = crcs
        replica.dirty = True

    def _write_whole_blocks(
        self, replica: _Replica, offset: int, segments: list[tuple[int, int, memoryview | None]]
    ) -> bool:
        """The common case, done in one pwrite: whole blocks of immutable bytes, none
        all zero. False (nothing written) for anything else, which the general
        path handles block by block.
        """
        start, end, source = segments[0]
        if len(segments) != 1 or source is None:
            return False
        if start % BLOCK_SIZE_BYTES or end % BLOCK_SIZE_BYTES or not isinstance(source.obj,
                                                                                  bytes):
            return False  # edge blocks to merge, or a buffer that could change under us
        crcs = array("I", [zlib.crc32(source[at:at + BLOCK_SIZE_BYTES])
                           for at in range(0, end - start, BLOCK_SIZE_BYTES)])
        # A zero block has ZERO_BLOCK_CRC, so only those blocks need a look.
        if ZERO_BLOCK_CRC in crcs and any(
                crc == ZERO_BLOCK_CRC and is_zero(source[at * BLOCK_SIZE_BYTES:
                                                         (at + 1) * BLOCK_SIZE_BYTES])
                for at, crc in enumerate(crcs)):
            return False  # zero blocks become holes: the general path
        first = start // BLOCK_SIZE_BYTES
        _pwrite_all(replica.fd, [source], DATA_OFFSET + start)
        if end - start >= _EARLY_WRITEBACK_BYTES_MIN and _sync_file_range is not None:
            # Best effort: an error here only means the flush does it all later.
            _sync_file_range(replica.fd, DATA_OFFSET + start, end - start,
                             _SYNC_FILE_RANGE_WRITE)
        _pwrite_all(replica.fd, [table_bytes(crcs)], CRC_TABLE_OFFSET + first * 4)
        replica.crcs[first:first + len(crcs)] = crcs
        replica.dirty = True
        return True

    def _new_block(
        self,
        replica: _Replica,
        index: int,
        offset: int,
        end: int,
        segments: list[tuple[int, int, memoryview | None]],
    ) -> _Block:
        """The content block *index* gets from the segments; None if all zero."""
        block_start, block_end = index * BLOCK_SIZE_BYTES, (index + 1) * BLOCK_SIZE_BYTES
        covering = list(_overlapping(segments, block_start, block_end))
        seg_start, seg_end, source = covering[0]
        if len(covering) == 1 and seg_start <= block_start and block_end <= seg_end:
            # The common case: the block comes whole from one segment, no copy.
            if source is None:
                return None
            view = source[block_start - seg_start : block_end - seg_start]
            return None if is_zero(view) else view
        content = bytearray(BLOCK_SIZE_BYTES)
        if block_start < offset or end < block_end:
            # Read-modify-write of an edge block; its old content is verified.
            old = next(self._blocks(replica, index, index + 1))[1]
            if old is not None:
                content[:] = old
        for seg_start, seg_end, source in covering:
            start, stop = max(seg_start, block_start), min(seg_end, block_end)
            if source is None:
                content[start - block_start : stop - block_start] = ZEROS_VIEW[: stop - start]
            else:
                content[start - block_start : stop - block_start] = source[
                    start - seg_start : stop - seg_start
                ]
        return None if is_zero(content) else content

    def _punch(self, fd: int, start: int, size: int) -> None:
        """Make [start, start + size) of the file zeros, as a hole if the filesystem can."""
        if self._can_punch:
            flags = _FALLOC_FL_PUNCH_HOLE | _FALLOC_FL_KEEP_SIZE
            if _fallocate(fd, flags, start, size) == 0:
                return
            error = ctypes.get_errno()
            if error not in (errno.EOPNOTSUPP, errno.ENOSYS):
                raise OSError(error, f"fallocate(PUNCH_HOLE): {os.strerror(error)}")
            logger.warning("%s: no hole punching, zero blocks will use disk space", self.data_dir)
            self._can_punch = False
        for at in range(start, start + size, len(ZEROS)):
            _pwrite_all(fd, [ZEROS_VIEW[: min(len(ZEROS), start + size - at)]], at)

    def _store_version(self, replica: _Replica, version: int) -> None:
        # Data first: a version on disk never vouches for data that is not.
        _sync(replica)
        _pwrite_all(replica.fd, [encode_header(replica.chunk_id, version)], 0)
        os.fdatasync(replica.fd)
        replica.version = version


# --- helpers ------------------------------------------------------------------
def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _check_id(chunk_id: int) -> None:
    if not _is_int(chunk_id) or not 0 < chunk_id <= MAX_CHUNK_ID:
        raise InvalidArgument(f"chunk id {chunk_id!r} is not in (0, 2**63)")


def _check_version(version: int) -> None:
    if not _is_int(version) or not 1 <= version <= MAX_VERSION:
        raise InvalidArgument(f"chunk version {version!r} is not in [1, 2**63)")


def _check_version_change(old_version: int, new_version: int) -> None:
    _check_version(old_version)
    _check_version(new_version)
    if new_version <= old_version:
        raise InvalidArgument(f"new version {new_version} is not above {old_version}")


def _check_range(offset: int, length: int) -> None:
    if not (_is_int(offset) and _is_int(length)) or offset < 0 or length < 0:
        raise InvalidArgument(f"range offset={offset!r} length={length!r} is not valid")
    if offset + length > CHUNK_SIZE_BYTES:
        raise InvalidArgument(f"range [{offset}, {offset + length}) passes the end of a chunk")


def _check_current(replica: _Replica, version: int) -> None:
    if replica.version != version:
        raise StaleChunkVersion(
            f"{chunk_name(replica.chunk_id)}: version {version} asked,"
            f" the replica has {replica.version}"
        )


def _segments(
    offset: int, length: int, payload: memoryview, zero_ranges: Sequence[tuple[int, int]]
) -> list[tuple[int, int, memoryview | None]]:
    """[offset, offset + length) as ordered (start, end, bytes or None for zeros) pieces.

    Validates the encoding: zero ranges non-empty, ordered, not overlapping,
    inside the range, and the payload exactly as long as the rest.
    """
    end = offset + length
    segments: list[tuple[int, int, memoryview | None]] = []
    position, used = offset, 0
    for zero_range in zero_ranges:
        try:
            zero_start, zero_length = zero_range
        except (TypeError, ValueError):
            raise InvalidArgument(f"zero range {zero_range!r} is not (offset, length)") from None
        if not (_is_int(zero_start) and _is_int(zero_length)) or zero_length <= 0:
            raise InvalidArgument(f"zero range {zero_range!r} is not valid")
        if zero_start < position or zero_start + zero_length > end:
            raise InvalidArgument(
                f"zero range {zero_range!r} is out of order, overlapping or outside"
                f" [{offset}, {end})"
            )
        if zero_start > position:
            segments.append((position, zero_start, payload[used : used + zero_start - position]))
            used += zero_start - position
        segments.append((zero_start, zero_start + zero_length, None))
        position = zero_start + zero_length
    if position < end:
        segments.append((position, end, payload[used : used + end - position]))
        used += end - position
    if used != len(payload) or any(
        source is not None and len(source) != stop - start for start, stop, source in segments
    ):
        raise InvalidArgument(
            f"payload is {len(payload)} bytes, the range outside the zero ranges is"
            f" {sum(stop - start for start, stop, source in segments if source is not None)}"
        )
    return segments


def _overlapping(
    segments: list[tuple[int, int, memoryview | None]], start: int, end: int
) -> Iterator[tuple[int, int, memoryview | None]]:
    """The segments that overlap [start, end), in order (binary search for the first)."""
    low, high = 0, len(segments)
    while low < high:
        middle = (low + high) // 2
        if segments[middle][1] <= start:
            low = middle + 1
        else:
            high = middle
    for segment in segments[low:]:
        if segment[0] >= end:
            break
        yield segment


def _pwrite_all(fd: int, buffers: Sequence[Buffer], offset: int) -> None:
    """Write the buffers back to back at *offset*: one pwritev per IOV_MAX of them."""
    views = [memoryview(buffer).cast("B") for buffer in buffers]
    first = 0
    while first < len(views):
        written = os.pwritev(fd, views[first : first + _IOV_MAX], offset)
        if written <= 0:
            raise OSError(errno.EIO, "pwritev wrote nothing")
        offset += written
        while written > 0:
            if written >= len(views[first]):
                written -= len(views[first])
                first += 1
            else:
                views[first] = views[first][written:]
                written = 0


def _sync(replica: _Replica) -> None:
    if replica.punched:
        # Punching changes the extent map, which fdatasync need not persist.
        os.fsync(replica.fd)
    elif replica.dirty:
        os.fdatasync(replica.fd)
    replica.dirty = replica.punched = False


def _mkdir(path: Path) -> bool:
    """Create a directory; whether it was new."""
    try:
        path.mkdir()
    except FileExistsError:
        return False
    return True


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
