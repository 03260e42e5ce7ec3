"""Byte-range locks per chunk: overlapping writes take turns, others run together.

The chain head holds the ranges of a write (rounded out to whole checksum
blocks) until every replica down the chain has it. So two overlapping
writes reach every replica in the same order, and two writes never
read-modify-write the same block at once.

A batched write holds several ranges: ``hold_many`` merges them and takes
them in ascending order, so two batches never wait on each other in a cycle.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterable
from contextlib import AsyncExitStack, asynccontextmanager

import trio

from vmstore.dfs.constants import BLOCK_SIZE_BYTES


class RangeLocks:
    def __init__(self) -> None:
        self._held: dict[int, list[tuple[int, int, trio.Event]]] = {}

    @asynccontextmanager
    async def hold(self, chunk_id: int, offset: int, length: int) -> AsyncIterator[None]:
        start, end = _block_span(offset, length)
        while True:
            held = self._held.get(chunk_id, [])
            blocker = next((e for s, t, e in held if s < end and start < t), None)
            if blocker is None:
                break
            await blocker.wait()
        mine = (start, end, trio.Event())
        self._held.setdefault(chunk_id, []).append(mine)
        try:
            yield
        finally:
            held = self._held[chunk_id]
            held.remove(mine)
            if not held:
                del self._held[chunk_id]
            mine[2].set()

    @asynccontextmanager
    async def hold_many(self, chunk_id: int, ranges: Iterable[tuple[int, int]]
                        ) -> AsyncIterator[None]:
        """Hold every (offset, length) range: merged, then taken lowest first."""
        merged: list[list[int]] = []
        for start, end in sorted(_block_span(offset, length) for offset, length in ranges):
            if merged and start <= merged[-1][1]:
                merged[-1][1] = max(merged[-1][1], end)
            else:
                merged.append([start, end])
        async with AsyncExitStack() as stack:
            for start, end in merged:
                await stack.enter_async_context(self.hold(chunk_id, start, end - start))
            yield


def _block_span(offset: int, length: int) -> tuple[int, int]:
    """[offset, offset + length) rounded out to whole checksum blocks."""
    start = offset - offset % BLOCK_SIZE_BYTES
    end = -(-(offset + length) // BLOCK_SIZE_BYTES) * BLOCK_SIZE_BYTES
    return start, end
