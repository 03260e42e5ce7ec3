"""Replicas with bad blocks that the master keeps, because they are the last copy.

Promise: a replica reported damaged is dropped only while a healthy current
replica of its chunk is up (``ChunkManager.drop_damaged``). Otherwise it stays
a holder, serving its good blocks, and is listed here with its bad block
ranges until a healthy copy exists (then it is dropped) or it stops being a
holder. One owner: the ChunkManager; status and fsck read it.

Caveat: in memory only. After a master restart the chunkserver's next read
of a bad block, or its scrub, reports the damage again; until then a damaged
last copy may be chosen as a copy source, and that copy fails on the bad block.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator

from vmstore.dfs.protocol.replica_format import block_ranges
from vmstore.dfs.types import ChunkId, ServerId

BlockRanges = list[tuple[int, int]]  # [first, end) block indexes, merged, ordered


class DamageBook:
    def __init__(self) -> None:
        # (chunk, server) -> its bad blocks; [] when which ones is not known
        self._kept: dict[tuple[ChunkId, ServerId], BlockRanges] = {}

    def note(self, chunk_id: ChunkId, server_id: ServerId, bad: Iterable[tuple[int, int]]
             ) -> bool:
        """Record bad blocks of a kept replica; whether that is news (worth a log line)."""
        key = (chunk_id, server_id)
        before = self._kept.get(key)
        merged = block_ranges([i for first, end in [*(before or []), *bad]
                               for i in range(first, end)])
        self._kept[key] = merged
        return before is None or merged != before

    def forget(self, chunk_id: ChunkId, server_id: ServerId) -> None:
        self._kept.pop((chunk_id, server_id), None)

    def is_damaged(self, chunk_id: ChunkId, server_id: ServerId) -> bool:
        return (chunk_id, server_id) in self._kept

    def of_chunk(self, chunk_id: ChunkId) -> BlockRanges | None:
        """The bad blocks of the chunk's kept replicas (merged); None if it has none."""
        found = [ranges for (chunk, _), ranges in self._kept.items() if chunk == chunk_id]
        if not found:
            return None
        return block_ranges([i for ranges in found for first, end in ranges
                             for i in range(first, end)])

    def __iter__(self) -> Iterator[tuple[ChunkId, ServerId, BlockRanges]]:
        for (chunk_id, server_id), ranges in sorted(self._kept.items()):
            yield chunk_id, server_id, ranges
