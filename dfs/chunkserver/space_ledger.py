"""The space a chunkserver's replicas may still take, so that its disk is never overcommitted.

Design (issue 19): a replica reserves its **full size** (header, CRC table and
CHUNK_SIZE_BYTES of data: ``FILE_SIZE_BYTES``) from the moment it is placed
here (``create``, or a copy staged by the replicator) for as long as it is
here. What it holds on disk already counts as used; the rest of its full size
counts as *reserved*. A chunk placed here can therefore always grow to its
full size: writes into it never find the disk full because other chunks grew.

Promises:

* ``admit_replica`` takes a new replica only while
  ``free - reserved - SPACE_MARGIN_BYTES >= FILE_SIZE_BYTES``; else NoSpace,
  and nothing is made.
* ``admit_write`` refuses (NoSpace) a write that would allocate more than the
  space really free now, less SPACE_MARGIN_BYTES, before a byte of it is
  written. With every replica reserved that never happens, unless something
  the ledger does not count filled the file system (another process, a
  quarantined replica's blocks, replicas from before reservations): then the
  write is refused whole instead of failing half-way with ENOSPC, which
  would leave torn blocks behind.
* ``report`` gives (total, used, free, reserved) as the master places by them:
  it places a new chunk only where free - reserved leaves room for one.

Space is read from statvfs (``f_bavail``: what an unprivileged writer may
use; the root reserve is kept for the system). With ``capacity_bytes`` the
store uses at most that much of its file system (a disk shared with other
data, and the tests' small disks): total is the capacity, used is what the
replicas here hold (``st_blocks``) plus the quarantine, free the smaller of
the rest and the file system's free space.

Caveats: a replica reserves 64 MiB however sparse its chunk stays, so thin
guest images cost their touched chunks' full size in reservations (the price
of never failing a write into a placed chunk). Replicas present when the
chunkserver starts reserve as well; on a disk that was overcommitted before,
free - reserved may be negative: no new chunk comes here, and writes are
admitted against the space really free.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from vmstore.dfs.constants import SPACE_MARGIN_BYTES
from vmstore.dfs.errors import NoSpace
from vmstore.dfs.protocol.replica_format import FILE_SIZE_BYTES

# A key in the ledger: a chunk id, or ("staged", n) for a copy being built aside.
LedgerKey = int | tuple[str, int]


@dataclass(frozen=True)
class SpaceReport:
    """A chunkserver's space, as it tells the master and the operator."""

    total_bytes: int  # the file system's size (or the configured capacity)
    used_bytes: int  # taken by anything (with a capacity: by this store)
    free_bytes: int  # what may still be written
    reserved_bytes: int  # promised to the replicas here, not written yet

    @property
    def placeable_bytes(self) -> int:
        """Room for new replicas: free, less what the present ones may still take."""
        return self.free_bytes - self.reserved_bytes


class SpaceLedger:
    """Full-size reservations of the replicas under one data directory (thread-safe)."""

    def __init__(self, data_dir: Path, *, capacity_bytes: int | None = None,
                 margin_bytes: int = SPACE_MARGIN_BYTES,
                 quarantined_bytes: Callable[[], int] = lambda: 0) -> None:
        assert capacity_bytes is None or capacity_bytes > 0
        assert margin_bytes >= 0
        self._data_dir = data_dir
        # At most this much of the file system is ours (None: all of it); settable,
        # as a disk shared with other data fills or empties.
        self.capacity_bytes = capacity_bytes
        self._margin_bytes = margin_bytes
        self._quarantined_bytes = quarantined_bytes  # only read with a capacity
        self._lock = threading.Lock()
        self._allocated: dict[LedgerKey, int] = {}  # bytes on disk of each replica here
        self._allocated_sum = 0
        self._reserved_sum = 0  # sum of FILE_SIZE_BYTES - allocated, at least 0 each

    # --- what is here ---------------------------------------------------------------
    def note(self, key: LedgerKey, allocated_bytes: int) -> None:
        """The replica ``key`` is here and holds ``allocated_bytes`` on disk."""
        with self._lock:
            self._forget(key)
            self._allocated[key] = allocated_bytes
            self._allocated_sum += allocated_bytes
            self._reserved_sum += max(0, FILE_SIZE_BYTES - allocated_bytes)

    def note_fd(self, key: LedgerKey, fd: int) -> None:
        """``note`` with what the open file ``fd`` holds now."""
        self.note(key, os.fstat(fd).st_blocks * 512)

    def forget(self, key: LedgerKey) -> None:
        """The replica is no longer here (deleted, quarantined, discarded)."""
        with self._lock:
            self._forget(key)

    def move(self, old: LedgerKey, new: LedgerKey) -> None:
        """A staged copy took the chunk's place (``install``)."""
        with self._lock:
            allocated = self._allocated.get(old)
            self._forget(old)
            self._forget(new)
            if allocated is not None:
                self._allocated[new] = allocated
                self._allocated_sum += allocated
                self._reserved_sum += max(0, FILE_SIZE_BYTES - allocated)

    def keep_only(self, chunk_ids: set[int]) -> None:
        """After a full scan: forget chunks no longer on disk (staged copies stay)."""
        with self._lock:
            for key in [k for k in self._allocated if isinstance(k, int)
                        and k not in chunk_ids]:
                self._forget(key)

    def _forget(self, key: LedgerKey) -> None:
        allocated = self._allocated.pop(key, None)
        if allocated is not None:
            self._allocated_sum -= allocated
            self._reserved_sum -= max(0, FILE_SIZE_BYTES - allocated)

    # --- admission ------------------------------------------------------------------
    def admit_replica(self, what: str) -> None:
        """NoSpace unless a new full-size replica fits beside every reservation."""
        report = self.report()
        room = report.placeable_bytes - self._margin_bytes
        if room < FILE_SIZE_BYTES:
            raise NoSpace(f"{what}: no room for a new replica here ({report.free_bytes} bytes"
                          f" free, {report.reserved_bytes} reserved for the replicas here,"
                          f" {self._margin_bytes} kept as margin, {FILE_SIZE_BYTES} needed)")

    def admit_write(self, need_bytes: int, what: str) -> None:
        """NoSpace if writing ``need_bytes`` of new blocks would eat into the margin."""
        if need_bytes <= 0:
            return
        free_bytes = self.report().free_bytes
        if free_bytes - self._margin_bytes < need_bytes:
            raise NoSpace(f"{what}: needs {need_bytes} bytes of new blocks, {free_bytes}"
                          f" free and {self._margin_bytes} kept as margin")

    # --- reporting ------------------------------------------------------------------
    def report(self) -> SpaceReport:
        stats = os.statvfs(self._data_dir)
        fs_total = stats.f_blocks * stats.f_frsize
        fs_used = (stats.f_blocks - stats.f_bfree) * stats.f_frsize
        fs_free = stats.f_bavail * stats.f_frsize
        with self._lock:
            allocated_sum, reserved_sum = self._allocated_sum, self._reserved_sum
        if self.capacity_bytes is None:
            return SpaceReport(fs_total, fs_used, fs_free, reserved_sum)
        used = allocated_sum + self._quarantined_bytes()
        total = min(self.capacity_bytes, fs_total)
        return SpaceReport(total, used, max(0, min(fs_free, total - used)), reserved_sum)
