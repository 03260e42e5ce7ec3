"""ChunkWrites: which queued writes may go, in what order, and who waits for what."""

from __future__ import annotations

import trio
import trio.testing

from vmstore.dfs.client.write_behind import ChunkWrites, PendingWrite, covering
from vmstore.dfs.constants import (
    DATA_REQUEST_BYTES_MAX,
    WRITE_BATCH_EXTENTS_MAX,
    WRITE_BATCHES_PER_CHUNK_MAX,
)
from vmstore.dfs.errors import LeaseLost

KIB = 1024


def pending(offset: int, size: int) -> PendingWrite:
    return PendingWrite(offset, memoryview(bytes(size)))


def queued(*ranges: tuple[int, int]) -> tuple[ChunkWrites, list[PendingWrite]]:
    chunk = ChunkWrites()
    writes = [pending(offset, size) for offset, size in ranges]
    for write in writes:
        chunk.add(write)
    return chunk, writes


async def test_a_batch_takes_every_queued_write_in_order() -> None:
    chunk, writes = queued((0, 4 * KIB), (64 * KIB, 4 * KIB), (8 * KIB, 4 * KIB))
    assert chunk.next_batch() == writes
    assert chunk.queued == type(chunk.queued)()
    assert not chunk.idle


async def test_a_write_overlapping_one_in_flight_waits_and_so_do_later_ones() -> None:
    chunk, (first,) = queued((0, 8 * KIB))
    assert chunk.next_batch() == [first]
    # Same block (not the same bytes): a block is read-modify-written whole.
    overlapping, later = pending(6 * KIB, 1 * KIB), pending(1024 * KIB, 4 * KIB)
    chunk.add(overlapping)
    chunk.add(later)
    assert chunk.next_batch() == []
    chunk.finished([first], None)
    assert chunk.next_batch() == [overlapping, later]


async def test_overlapping_writes_in_one_batch_keep_their_order() -> None:
    chunk, writes = queued((0, 4 * KIB), (0, 4 * KIB), (2 * KIB, 4 * KIB))
    assert chunk.next_batch() == writes  # the chunkserver applies extents in order


async def test_batches_are_bounded_by_extents_bytes_and_batches_in_flight() -> None:
    chunk, writes = queued(*[(index * 4 * KIB, 4 * KIB)
                             for index in range(WRITE_BATCH_EXTENTS_MAX + 1)])
    assert len(chunk.next_batch()) == WRITE_BATCH_EXTENTS_MAX
    assert chunk.next_batch() == [writes[-1]]

    big, _ = queued(*[(index * DATA_REQUEST_BYTES_MAX, DATA_REQUEST_BYTES_MAX)
                      for index in range(WRITE_BATCHES_PER_CHUNK_MAX + 1)])
    batches = [big.next_batch() for _ in range(WRITE_BATCHES_PER_CHUNK_MAX + 1)]
    assert [len(batch) for batch in batches] == [1] * WRITE_BATCHES_PER_CHUNK_MAX + [0]
    big.finished(batches[0], None)
    assert len(big.next_batch()) == 1


async def test_readers_find_exactly_the_unacknowledged_writes_they_overlap() -> None:
    chunk, (low, high) = queued((0, 4 * KIB), (128 * KIB, 8 * KIB))
    assert chunk.unacknowledged(4 * KIB, 128 * KIB) == []
    assert chunk.unacknowledged(130 * KIB, 131 * KIB) == [high]
    assert set(chunk.unacknowledged()) == {low, high}
    batch = chunk.next_batch()
    assert chunk.unacknowledged(0, 1) == [low]  # in flight is still unacknowledged
    chunk.finished(batch, None)
    assert chunk.unacknowledged() == []
    assert chunk.idle
    assert low.done.is_set() and low.error is None


async def test_a_lost_batch_tells_each_of_its_writes_and_wakes_waiters() -> None:
    chunk, writes = queued((0, 4 * KIB), (8 * KIB, 4 * KIB))
    batch = chunk.next_batch()
    woken = []

    async def waiter() -> None:
        await chunk.wait_changed()
        woken.append(True)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(waiter)
        await trio.testing.wait_all_tasks_blocked()
        chunk.finished(batch, LeaseLost("fenced"))
    assert woken == [True]
    assert all(write.done.is_set() and isinstance(write.error, LeaseLost) for write in writes)


async def test_small_writes_wait_for_a_batch_to_return_big_ones_go_at_once() -> None:
    chunk, _ = queued(*[(index * 8 * KIB, 4 * KIB) for index in range(3)])
    assert len(chunk.next_batch()) == 3
    chunk.add(pending(64 * KIB, 4 * KIB))
    assert len(chunk.next_batch()) == 1  # a second batch of small writes may go
    chunk.add(pending(128 * KIB, 4 * KIB))
    assert chunk.next_batch() == []  # a third waits to gather more, or for a return
    chunk.add(pending(1024 * KIB, DATA_REQUEST_BYTES_MAX // 2))
    assert len(chunk.next_batch()) == 2  # half a request's worth: worth sending now


async def test_covering_tells_whether_writes_leave_no_gap() -> None:
    writes = [pending(0, 4 * KIB), pending(2 * KIB, 4 * KIB), pending(8 * KIB, 4 * KIB)]
    assert covering(writes, 0, 6 * KIB)
    assert covering(writes, 1 * KIB, 5 * KIB)
    assert not covering(writes, 0, 7 * KIB)  # 6..8 KiB is nobody's
    assert covering(writes, 9 * KIB, 12 * KIB)
    assert not covering([], 0, 1)


async def test_a_synchronous_batch_goes_alone() -> None:
    chunk, (first, second) = queued((0, 4 * KIB), (64 * KIB, 4 * KIB))
    assert chunk.next_batch() == [first, second]
    chunk.add(third := pending(128 * KIB, 4 * KIB))
    assert chunk.next_batch(synchronous=True) == []  # its sync must cover the others
    chunk.finished([first, second], None)
    assert chunk.next_batch(synchronous=True) == [third]
    chunk.add(pending(256 * KIB, 4 * KIB))
    assert chunk.next_batch(synchronous=True) == []  # nothing beside it either
    assert chunk.batches_sent == 2
