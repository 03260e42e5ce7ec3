"""Byte-range locks per chunk: overlapping writes take turns, others run together.

The chain head holds the range of a write (rounded out to whole checksum
blocks) until every replica down the chain has it. So two overlapping
writes reach every replica in the same order, and two writes never
read-modify-write the same block at once.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import trio

from vmstore.dfs.constants import BLOCK_SIZE_BYTES


class RangeLocks:
    def __init__(self) -> None:
        self._held: dict[int, list[tuple[int, int, trio.Event]]] = {}

    @asynccontextmanager
    async def hold(self, chunk_id: int, offset: int, length: int) -> AsyncIterator[None]:
        start = offset - offset % BLOCK_SIZE_BYTES
        end = -(-(offset + length) // BLOCK_SIZE_BYTES) * BLOCK_SIZE_BYTES
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
