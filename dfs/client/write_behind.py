"""Write-behind bookkeeping: a client's writes to one chunk, queued and in flight.

A mount acknowledges a write to the application once it is queued here, as
a disk with a volatile write cache does; ``ChunkIO`` sends the queue to the
chunk's chain in batches and ``fsync`` waits for all of it (DESIGN.md: an
fsync returns only when every replica has the file's writes on stable
storage). This module holds the state and its rules; it does no I/O.

Promises:
* Overlapping writes reach the chain in the order they were queued: a batch
  never overlaps a batch in flight (``next_batch`` stops at the first write
  that would), and the chunkserver applies a batch's extents in order.
* ``unacknowledged(start, end)`` lists every queued or in-flight write that
  overlaps the range, so a reader can lay them over what the replicas hold
  (in ``sequence`` order) and see its own writes.
* Every write taken by ``next_batch`` is finished exactly once, by
  ``finished``, which sets its ``done`` event and records its error.
"""

from __future__ import annotations

import itertools
from collections import deque
from dataclasses import dataclass, field

import trio

from vmstore.dfs.constants import (
    BLOCK_SIZE_BYTES,
    DATA_REQUEST_BYTES_MAX,
    SMALL_BATCHES_IN_FLIGHT_MAX,
    WRITE_BATCH_EXTENTS_MAX,
    WRITE_BATCHES_PER_CHUNK_MAX,
)
from vmstore.dfs.errors import DfsError

_sequence = itertools.count()


@dataclass(eq=False)
class PendingWrite:
    """Bytes for [inner, inner + len(data)) of a chunk, not yet on every replica."""

    inner: int  # offset in the chunk
    data: memoryview
    sequence: int = field(default_factory=lambda: next(_sequence))  # the order made
    awaited: bool = False  # its writer waits for it (and hears its error)
    done: trio.Event = field(default_factory=trio.Event)
    error: DfsError | None = None  # set before ``done`` if the write was lost

    @property
    def end(self) -> int:
        return self.inner + len(self.data)

    def blocks(self) -> range:
        return _blocks(self.inner, self.end)


def covering(writes: list[PendingWrite], start: int, end: int) -> bool:
    """Whether the writes together cover every byte of [start, end)."""
    reached = start
    for write in sorted(writes, key=lambda write: write.inner):
        if reached >= end:
            break
        if write.inner > reached:
            return False
        reached = max(reached, write.end)
    return reached >= end


def _blocks(start: int, end: int) -> range:
    """Indexes of the checksum blocks [start, end) touches."""
    return range(start // BLOCK_SIZE_BYTES, (end - 1) // BLOCK_SIZE_BYTES + 1)


def _count(counts: dict[int, int], blocks: range, step: int) -> None:
    for block in blocks:
        left = counts.get(block, 0) + step
        if left:
            counts[block] = left
        else:
            del counts[block]


class ChunkWrites:
    """The unacknowledged writes of one chunk, and which of them are in flight."""

    def __init__(self) -> None:
        self.queued: deque[PendingWrite] = deque()
        self.queued_bytes = 0
        self.batches_in_flight = 0
        self.batches_sent = 0  # ever: tells whether another went out after a given one
        # Writes queued or in flight per block, and in flight only: a read
        # or a new batch checks its blocks here rather than scanning writes.
        self._unacknowledged_blocks: dict[int, int] = {}
        self._in_flight_blocks: dict[int, int] = {}
        self._unacknowledged: set[PendingWrite] = set()
        self._changed = trio.Event()

    @property
    def idle(self) -> bool:
        return not self.queued and not self.batches_in_flight

    def add(self, write: PendingWrite) -> None:
        self.queued.append(write)
        self.queued_bytes += len(write.data)
        self._unacknowledged.add(write)
        _count(self._unacknowledged_blocks, write.blocks(), 1)
        self._signal()

    def next_batch(self, synchronous: bool = False) -> list[PendingWrite]:
        """The queued writes that may go now, oldest first; [] if none may.

        A ``synchronous`` batch (made durable before it is acknowledged) goes
        only alone: its sync then covers every write acknowledged before it,
        and no write sent beside it is taken for durable.
        """
        if self.batches_in_flight >= WRITE_BATCHES_PER_CHUNK_MAX or (
                synchronous and self.batches_in_flight):
            return []
        if (self.batches_in_flight >= SMALL_BATCHES_IN_FLIGHT_MAX
                and self.queued_bytes < DATA_REQUEST_BYTES_MAX // 2):
            # Small writes wait for a batch to come back and go together: one
            # message for many. Big ones fill a batch each and go at once.
            return []
        batch: list[PendingWrite] = []
        size_bytes = 0
        while self.queued and len(batch) < WRITE_BATCH_EXTENTS_MAX:
            write = self.queued[0]
            if batch and size_bytes + len(write.data) > DATA_REQUEST_BYTES_MAX:
                break
            if any(block in self._in_flight_blocks for block in write.blocks()):
                break  # it must wait for the write it overlaps; so must all after it
            batch.append(self.queued.popleft())
            size_bytes += len(write.data)
        self.queued_bytes -= size_bytes
        if batch:
            self.batches_in_flight += 1
            self.batches_sent += 1
            for write in batch:
                _count(self._in_flight_blocks, write.blocks(), 1)
        return batch

    def finished(self, batch: list[PendingWrite], error: DfsError | None) -> None:
        """A batch from ``next_batch`` is on every replica (error None) or lost."""
        self.batches_in_flight -= 1
        for write in batch:
            _count(self._in_flight_blocks, write.blocks(), -1)
            _count(self._unacknowledged_blocks, write.blocks(), -1)
            self._unacknowledged.discard(write)
            write.error = error
            write.done.set()
        self._signal()

    def unacknowledged(self, start: int = 0, end: int | None = None) -> list[PendingWrite]:
        """Queued or in-flight writes overlapping [start, end) (everything by default)."""
        if end is None:
            return list(self._unacknowledged)
        if not any(block in self._unacknowledged_blocks for block in _blocks(start, end)):
            return []  # the common case, without scanning the writes
        return [write for write in self._unacknowledged
                if write.inner < end and start < write.end]

    async def wait_changed(self) -> None:
        """Until a write is added or a batch finishes."""
        await self._changed.wait()

    def _signal(self) -> None:
        self._changed.set()
        self._changed = trio.Event()
