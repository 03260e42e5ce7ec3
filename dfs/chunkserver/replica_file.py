"""One open replica file: the state ChunkStore keeps for it, and the raw I/O on its fd.

Promise: ``pwrite_all`` writes every byte it is given or raises OSError;
once ``sync_replica`` returns, what was written and punched since the last
sync is durable; ``store_version`` puts a version on disk only after the
data it vouches for. Every header written keeps the replica's owner record.

Synchronous, and no locking here: the caller holds the replica's lock
(``ChunkStore._use``). The format of the file is in
``dfs.protocol.replica_format``.

Caveat: ``start_writeback`` is best effort. Where the C library lacks
sync_file_range, or the call fails, the next sync simply does all the work.
"""

from __future__ import annotations

import ctypes
import errno
import os
import threading
from array import array
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TypeAlias

from vmstore.dfs.constants import EARLY_WRITEBACK_BYTES_MIN
from vmstore.dfs.protocol.replica_format import ReplicaOwner, encode_header

Buffer: TypeAlias = bytes | bytearray | memoryview

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
