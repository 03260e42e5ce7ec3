"""One open replica file: the state ChunkStore keeps for it, and the raw I/O on its fd.

Promise: ``pwrite_all`` writes every byte it is given or raises OSError;
once ``sync_replica`` returns, what was written and punched since the last
sync is durable; ``store_version`` puts a version on disk only after the
data it vouches for. Every header written keeps the replica's owner record.

Synchronous, and no locking here: the caller holds the replica's lock
(``ReplicaCache.use``). The format of the file is in
``dfs.protocol.replica_format``.

Caveat: ``start_writeback`` is best effort. Where the C library lacks
sync_file_range, or the call fails, the next sync simply does all the work.
"""

from __future__ import annotations

import ctypes
import errno
import os
import threading
import time
from array import array
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeAlias

from vmstore.dfs.constants import BLOCKS_PER_CHUNK, EARLY_WRITEBACK_BYTES_MIN
from vmstore.dfs.errors import NoSpace
from vmstore.dfs.protocol.replica_format import (
    CRC_TABLE_OFFSET,
    FILE_SIZE_BYTES,
    REPLICA_FILE_MODE,
    ZERO_BLOCK_CRC,
    ReplicaOwner,
    chunk_name,
    encode_header,
    table_bytes,
)

Buffer: TypeAlias = bytes | bytearray | memoryview

# The file system's answers that mean "full": a write refused whole as NoSpace.
_FULL_ERRNOS = (errno.ENOSPC, errno.EDQUOT)
_IOV_MAX = os.sysconf("SC_IOV_MAX") if "SC_IOV_MAX" in os.sysconf_names else 1024

_FALLOC_FL_KEEP_SIZE = 0x01
_FALLOC_FL_PUNCH_HOLE = 0x02
_libc = ctypes.CDLL(None, use_errno=True)
# fallocate64 takes a 64-bit off_t on every ABI; plain fallocate only on 64-bit ones.
_fallocate = getattr(_libc, "fallocate64", None) or _libc.fallocate
_fallocate.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int64, ctypes.c_int64]
_fallocate.restype = ctypes.c_int
_SYNC_FILE_RANGE_WRITE = 2
_sync_file_range = getattr(_libc, "sync_file_range", None)
if _sync_file_range is not None:
    _sync_file_range.argtypes = [ctypes.c_int, ctypes.c_int64, ctypes.c_int64, ctypes.c_uint]
    _sync_file_range.restype = ctypes.c_int


@dataclass(eq=False)
class OpenReplica:
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
    # The file and index the header names; None: a replica from before owner records.
    owner: ReplicaOwner | None = None


def pwrite_all(fd: int, buffers: Sequence[Buffer], offset: int) -> None:
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


def start_writeback(fd: int, offset: int, size: int) -> None:
    """Start writing [offset, offset + size) of the file back now, without waiting.

    Only for writes of at least EARLY_WRITEBACK_BYTES_MIN; a smaller one is
    left to the next sync.
    """
    if size >= EARLY_WRITEBACK_BYTES_MIN and _sync_file_range is not None:
        # Best effort: an error here only means the flush does it all later.
        _sync_file_range(fd, offset, size, _SYNC_FILE_RANGE_WRITE)


def punch_hole(fd: int, start: int, size: int) -> bool:
    """Make [start, start + size) a hole; False if the filesystem cannot punch holes."""
    if _fallocate(fd, _FALLOC_FL_PUNCH_HOLE | _FALLOC_FL_KEEP_SIZE, start, size) == 0:
        return True
    error = ctypes.get_errno()
    if error not in (errno.EOPNOTSUPP, errno.ENOSYS):
        raise OSError(error, f"fallocate(PUNCH_HOLE): {os.strerror(error)}")
    return False


def sync_replica(replica: OpenReplica) -> None:
    if replica.punched:
        # Punching changes the extent map, which fdatasync need not persist.
        os.fsync(replica.fd)
    elif replica.dirty:
        os.fdatasync(replica.fd)
    replica.dirty = replica.punched = False


def store_version(replica: OpenReplica, version: int) -> None:
    # Data first: a version on disk never vouches for data that is not.
    sync_replica(replica)
    pwrite_all(replica.fd, [encode_header(replica.chunk_id, version, replica.owner)], 0)
    os.fdatasync(replica.fd)
    replica.version = version


def store_owner(replica: OpenReplica, owner: ReplicaOwner) -> None:
    """Put the owner record in the header (same version), durably."""
    pwrite_all(replica.fd, [encode_header(replica.chunk_id, replica.version, owner)], 0)
    os.fdatasync(replica.fd)
    replica.owner = owner


@contextmanager
def full_is_no_space(what: str) -> Iterator[None]:
    """The file system's "full" (ENOSPC, EDQUOT) as NoSpace, naming what needed room."""
    try:
        yield
    except OSError as error:
        if error.errno not in _FULL_ERRNOS:
            raise
        raise NoSpace(f"{what}: the file system is full ({error.strerror})") from None


def new_replica_file(tmp_dir: Path, chunk_id: int, version: int,
                     owner: ReplicaOwner | None) -> tuple[Path, int, array[int]]:
    """An all-zero replica file under ``tmp_dir``, not linked anywhere: (path, fd, CRC
    table); NoSpace if the file system is full. Not yet durable: the caller syncs it."""
    tmp = tmp_dir / f"{chunk_id:016x}.{threading.get_ident():x}.{time.time_ns()}.tmp"
    with full_is_no_space(f"new {chunk_name(chunk_id)}"):
        fd = os.open(tmp, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC,
                     REPLICA_FILE_MODE)
        try:
            os.ftruncate(fd, FILE_SIZE_BYTES)
            pwrite_all(fd, [encode_header(chunk_id, version, owner)], 0)
            crcs = array("I", [ZERO_BLOCK_CRC]) * BLOCKS_PER_CHUNK
            pwrite_all(fd, [table_bytes(crcs)], CRC_TABLE_OFFSET)
        except BaseException:
            os.close(fd)
            os.unlink(tmp)
            raise
    return tmp, fd, crcs
