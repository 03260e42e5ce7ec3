"""Byte-range locks per chunk: overlapping writes take turns, others run together.

The chain head holds the ranges of a write (rounded out to whole checksum
blocks) until every replica down the chain has it. So two overlapping
writes reach every replica in the same order, and two writes never
read-modify-write the same block at once.

A batched write holds several ranges: ``hold_many`` merges them and takes
them all at once, so two batches never wait on each other in a cycle.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterable
from contextlib import AbstractAsyncContextManager, asynccontextmanager

import trio

from vmstore.dfs.constants import BLOCK_SIZE_BYTES


class RangeLocks:
    def __init__(self) -> None:
        self._held: dict[int, list[tuple[int, int, trio.Event]]] = {}

    def hold(self, chunk_id: int, offset: int, length: int
             ) -> AbstractAsyncContextManager[None]:
        return self.hold_many(chunk_id, ((offset, length),))

    @asynccontextmanager
    async def hold_many(self, chunk_id: int, ranges: Iterable[tuple[int, int]]
                        ) -> AsyncIterator[None]:
        """Hold every (offset, length) range, all at once: a holder of some never
        waits for the rest, so two batches never wait on each other in a cycle."""
        wanted = _merged(ranges)
        while True:
            held = self._held.get(chunk_id, ())
            blocker = next((event for start, end in wanted for held_start, held_end, event
                            in held if held_start < end and start < held_end), None)
            if blocker is None:
                break
            await blocker.wait()
        released = trio.Event()
        mine = [(start, end, released) for start, end in wanted]
        self._held.setdefault(chunk_id, []).extend(mine)
        try:
            yield
        finally:
            held_now = self._held[chunk_id]
            for entry in mine:
                held_now.remove(entry)
            if not held_now:
                del self._held[chunk_id]
            released.set()


def _merged(ranges: Iterable[tuple[int, int]]) -> list[tuple[int, int]]:
    """The (offset, length) ranges as sorted, disjoint [start, end) block spans."""
    merged: list[tuple[int, int]] = []
    for start, end in sorted(_block_span(offset, length) for offset, length in ranges):
        if merged and start <= merged[-1][1]:
            merged[-1] = (merged[-1][0], max(merged[-1][1], end))
        else:
            merged.append((start, end))
    return merged


def _block_span(offset: int, length: int) -> tuple[int, int]:
    """[offset, offset + length) rounded out to whole checksum blocks."""
    start = offset - offset % BLOCK_SIZE_BYTES
    end = -(-(offset + length) // BLOCK_SIZE_BYTES) * BLOCK_SIZE_BYTES
    return start, end
