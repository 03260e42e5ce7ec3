"""A chunk store that fails on command: EIO, torn writes, bit flips, hangs.

Promise: ``FaultyChunkStore`` is the real ``ChunkStore`` (real replica files
on a real directory, every check and checksum in place) with faults laid
over it, so a chunkserver built on it behaves exactly as one on a sick disk:

* **EIO** (``fail``): the next calls of an operation (or every call, or a
  seeded share of them) raise ``OSError(EIO)`` before touching the disk.
* **Torn write** (``tear_next_write``): the next write of more than a
  block (with no zero ranges) stores only a prefix of what it was given,
  then raises EIO, as a disk that lost power half-way through. The
  checksums of the blocks it did write are updated;
  what it did not write keeps its old bytes and checksums.
* **Bit flip** (``flip_bit``): one byte of a replica's data changes on
  disk behind the store's back, as rot does; the block's checksum no longer
  matches, which a read or the scrub must notice.
* **Hang** (``hang``/``release``): every call made from a worker thread
  waits until released (or ``HANG_LIMIT_S``, then raises EIO, so that a
  forgotten hang cannot hold a test for ever).

Caveat: calls the chunkserver makes inline on its event loop (small reads
and writes, fast syncs: ``DataService.disk``) are not hung, because in an
in-process cluster every node shares that loop and a hang there would
freeze the whole simulation rather than one chunkserver. That is the real
chunkserver's own weakness: a disk that hangs inline stalls its loop (see
the stall issue). A crash is the cluster's business (``SimCluster.kill``):
the store only holds files.
"""

from __future__ import annotations

import errno
import os
import random
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from vmstore.dfs.chunkserver.chunk_store import ChunkStore, StagedReplica
from vmstore.dfs.constants import BLOCK_SIZE_BYTES, BLOCKS_PER_CHUNK
from vmstore.dfs.protocol.replica_format import DATA_OFFSET, ReplicaOwner
from vmstore.dfs.types import ChunkVersion

HANG_LIMIT_S = 600.0
OPERATIONS = ("create", "delete", "version_of", "set_version", "truncate_and_set_version",
              "flush", "read", "write", "verify", "probe")


class FaultyChunkStore(ChunkStore):
    """``ChunkStore`` with faults on command (see the module docstring)."""

    def __init__(self, data_dir: Path, *, seed: int = 0, **options: Any) -> None:
        super().__init__(data_dir, **options)
        self.random = random.Random(seed)
        self._fail_counts: dict[str, int] = {}  # operation -> calls left to fail (-1: all)
        self._fail_rates: dict[str, float] = {}
        self._fail_errnos: dict[str, int] = {}  # operation -> errno its failures raise
        self._tear_next_write = False
        self._running = threading.Event()
        self._running.set()
        self._event_loop_thread = threading.get_ident()
        self.faults_injected = 0

    # --- commands -------------------------------------------------------------
    def fail(self, operation: str, times: int = 1, *, rate: float = 0.0,
             error: int = errno.EIO) -> None:
        """The next ``times`` calls of ``operation`` raise EIO (-1: all of them); or,
        with ``rate``, each call fails with that chance (drawn from the seed).
        ``error``: another errno (ENOSPC: a disk filled by something else)."""
        assert operation in OPERATIONS, operation
        self._fail_errnos[operation] = error
        if rate:
            self._fail_rates[operation] = rate
        else:
            self._fail_counts[operation] = times

    def heal(self) -> None:
        """No more failures, tears or hangs (bytes already flipped stay flipped)."""
        self._fail_counts.clear()
        self._fail_rates.clear()
        self._tear_next_write = False
        self.release()

    def tear_next_write(self) -> None:
        self._tear_next_write = True

    def hang(self) -> None:
        self._running.clear()

    def release(self) -> None:
        self._running.set()

    def flip_bit(self, chunk_id: int, offset: int) -> None:
        """Flip the low bit of the byte at ``offset`` of the chunk's data, on disk."""
        path = self._path(chunk_id)
        fd = os.open(path, os.O_RDWR)
        try:
            where = DATA_OFFSET + offset
            old = os.pread(fd, 1, where)
            os.pwrite(fd, bytes([old[0] ^ 1]) if old else b"\x01", where)
            os.fsync(fd)
        finally:
            os.close(fd)
        # The cached fd sees the flip at its next read: the page cache is shared.
        self.faults_injected += 1

    def replica_path(self, chunk_id: int) -> Path:
        return self._path(chunk_id)

    # --- the faults, before each operation -------------------------------------
    def _before(self, operation: str) -> None:
        if threading.get_ident() != self._event_loop_thread and not self._running.is_set():
            if not self._running.wait(HANG_LIMIT_S):
                self._inject(operation, "hung past the test's limit")
        left = self._fail_counts.get(operation, 0)
        if left:
            self._fail_counts[operation] = left - 1 if left > 0 else left
            self._inject(operation, "injected")
        rate = self._fail_rates.get(operation, 0.0)
        if rate and self.random.random() < rate:
            self._inject(operation, "injected at random")

    def _inject(self, operation: str, how: str) -> None:
        self.faults_injected += 1
        code = self._fail_errnos.get(operation, errno.EIO)
        raise OSError(code, f"{operation}: {os.strerror(code)} ({how}, {self.data_dir})")

    # --- the store's operations -------------------------------------------------
    def create(self, chunk_id: int, version: int, owner: ReplicaOwner | None = None) -> None:
        self._before("create")
        super().create(chunk_id, version, owner)

    def delete(self, chunk_id: int) -> Path:
        self._before("delete")
        return super().delete(chunk_id)

    def version_of(self, chunk_id: int) -> ChunkVersion:
        self._before("version_of")
        return super().version_of(chunk_id)

    def set_version(self, chunk_id: int, old_version: int, new_version: int) -> None:
        self._before("set_version")
        super().set_version(chunk_id, old_version, new_version)

    def truncate_and_set_version(self, chunk_id: int, old_version: int, new_version: int,
                                 length: int) -> None:
        self._before("truncate_and_set_version")
        super().truncate_and_set_version(chunk_id, old_version, new_version, length)

    def flush(self, chunk_id: int) -> None:
        self._before("flush")
        super().flush(chunk_id)

    def read(self, chunk_id: int, version: int, offset: int, length: int
             ) -> tuple[bytes, list[tuple[int, int]]]:
        self._before("read")
        return super().read(chunk_id, version, offset, length)

    def verify(self, chunk_id: int, first: int = 0, end: int = BLOCKS_PER_CHUNK) -> list[int]:
        self._before("verify")
        return super().verify(chunk_id, first, end)

    def probe(self) -> None:
        self._before("probe")  # the disk watch's probe: fail or hang it like the rest
        super().probe()

    def write_staged(self, staged: StagedReplica, offset: int, length: int, payload: Any,
                     zero_ranges: Sequence[tuple[int, int]]) -> None:
        self._before("write")  # a copy's writes fail with the others
        super().write_staged(staged, offset, length, payload, zero_ranges)

    def write(self, chunk_id: int, version: int, offset: int, length: int, payload: Any,
              zero_ranges: Sequence[tuple[int, int]]) -> None:
        self._before("write")
        if not self._tear_next_write or zero_ranges or length <= BLOCK_SIZE_BYTES:
            super().write(chunk_id, version, offset, length, payload, zero_ranges)
            return
        self._tear_next_write = False
        # Whole blocks of the front half only: the rest never reached the disk.
        kept = max(BLOCK_SIZE_BYTES, (length // 2) // BLOCK_SIZE_BYTES * BLOCK_SIZE_BYTES)
        super().write(chunk_id, version, offset, kept, memoryview(payload).cast("B")[:kept], ())
        self._inject("write", f"torn after {kept} of {length} bytes of chunk {chunk_id}")
