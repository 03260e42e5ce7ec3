"""Background scrub: reads every replica at a bounded rate and checks its checksums.

Promise: every replica on this disk is verified once per pass; a replica
with a bad block is reported to the master, with the bad blocks' ranges
(it drops it and rebuilds it from a good copy, or keeps it if it is the
last). The rate limit keeps scrubbing from starving guests.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any

import trio

from vmstore.dfs.chunkserver.chunk_store import ChunkStore
from vmstore.dfs.constants import CHUNK_SIZE_BYTES, SCRUB_PASS_PAUSE_S, SCRUB_RATE_BYTES_PER_S
from vmstore.dfs.errors import ChunkNotFound
from vmstore.dfs.log_fields import about
from vmstore.dfs.protocol.replica_format import block_ranges

log = logging.getLogger(__name__)
Disk = Callable[..., Awaitable[Any]]


class Scrubber:
    def __init__(self, store: ChunkStore, disk: Disk, rate_bytes_per_s: float,
                 report_damaged: Callable[[int, int, str, list[tuple[int, int]]], None]
                 ) -> None:
        self.store = store
        self.disk = disk
        self.rate_bytes_per_s = rate_bytes_per_s
        self.report_damaged = report_damaged
        self.chunks_verified = 0
        self.damaged_found = 0

    async def run(self) -> None:
        if self.rate_bytes_per_s <= 0:
            return  # scrubbing switched off
        while True:
            chunks = await self.disk(2**30, self.store.list_chunks)
            for chunk_id, version in chunks:
                await self.verify_one(chunk_id, version)
                # Pace by the worst case (a full chunk) so the rate is a bound.
                await trio.sleep(CHUNK_SIZE_BYTES / self.rate_bytes_per_s)
            # Rest between passes over a small disk; a faster rate rests less.
            await trio.sleep(SCRUB_PASS_PAUSE_S * SCRUB_RATE_BYTES_PER_S / self.rate_bytes_per_s)

    async def verify_one(self, chunk_id: int, version: int) -> None:
        try:
            bad_blocks = await self.disk(CHUNK_SIZE_BYTES, self.store.verify, chunk_id)
        except ChunkNotFound:
            return  # deleted meanwhile
        self.chunks_verified += 1
        if bad_blocks:
            self.damaged_found += 1
            log.error("scrub: chunk %d version %d has %d bad blocks (first %d)", chunk_id,
                      version, len(bad_blocks), bad_blocks[0],
                      extra=about("scrub_found_damage", chunk=chunk_id, version=version,
                                  bad_blocks=len(bad_blocks)))
            self.report_damaged(chunk_id, version, f"scrub found {len(bad_blocks)} bad blocks",
                                block_ranges(bad_blocks))
