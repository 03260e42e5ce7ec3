"""Empties the quarantine: what is past its retention and safe, and the oldest under space
pressure.

Promise: a quarantined replica is purged by this chunkserver only (a) once it
has been there ``retention_s`` and the master says its chunk is safe without it
(no file's any more, or at its goal with healthy current replicas up), or
(b) while the data directory's file system has less than
QUARANTINE_PRESSURE_FREE_FRACTION free, oldest first, each one logged. Without
a master, (a) waits; (b) does not.

Caveat: the age is by the wall clock (the name records when it went in): a
clock set forward ages the quarantine with it.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

import trio

from vmstore.dfs.chunkserver.quarantine import Quarantine, QuarantinedReplica
from vmstore.dfs.constants import (
    QUARANTINE_CHECK_CHUNKS_MAX,
    QUARANTINE_CHECK_INTERVAL_S,
    QUARANTINE_PRESSURE_FREE_FRACTION,
)
from vmstore.dfs.errors import DfsError
from vmstore.dfs.log_fields import about

log = logging.getLogger(__name__)
Disk = Callable[..., Awaitable[Any]]
AskMaster = Callable[[list[int]], Awaitable[list[int]]]  # chunk ids -> the safe ones


class QuarantineKeeper:
    def __init__(self, quarantine: Quarantine, space: Callable[[], tuple[int, int]],
                 disk: Disk, retention_s: float, ask_master: AskMaster) -> None:
        self.quarantine = quarantine
        self.space = space  # (bytes_total, bytes_used) of the data directory
        self.disk = disk
        self.retention_s = retention_s
        self.ask_master = ask_master
        self.purged = 0

    async def run(self) -> None:
        while True:
            await self.tend()
            await trio.sleep(QUARANTINE_CHECK_INTERVAL_S)

    async def tend(self) -> None:
        """One pass: space pressure first, then what is due and safe."""
        entries: list[QuarantinedReplica] = await self.disk(0, self.quarantine.entries)
        entries = await self._relieve_pressure(entries)
        now_ns = time.time_ns()
        due = [e for e in entries if now_ns - e.quarantined_at_ns >= self.retention_s * 1e9]
        for start in range(0, len(due), QUARANTINE_CHECK_CHUNKS_MAX):
            batch = due[start:start + QUARANTINE_CHECK_CHUNKS_MAX]
            try:
                safe = set(await self.ask_master([e.chunk_id for e in batch]))
            except DfsError as error:
                log.info("quarantine: cannot ask the master which chunks are safe (%s);"
                         " keeping them", error)
                return
            for entry in batch:
                if entry.chunk_id in safe and await self._purge(entry):
                    log.info("quarantine: %s purged: retention passed, and the master has"
                             " the chunk at its goal or no file needs it", entry.name,
                             extra=about("quarantine_purged", chunk=entry.chunk_id))

    async def _relieve_pressure(self, entries: list[QuarantinedReplica]
                                ) -> list[QuarantinedReplica]:
        """Purge oldest first while free space is short; the entries left."""
        bytes_total, bytes_used = self.space()
        short_bytes = int(bytes_total * QUARANTINE_PRESSURE_FREE_FRACTION) - (
            bytes_total - bytes_used)
        left = list(entries)
        while short_bytes > 0 and left:
            entry = left.pop(0)
            if entry.size_bytes == 0:
                continue  # a replica of holes frees nothing
            if await self._purge(entry):
                log.warning("quarantine: %s purged early, the oldest, for space: %d bytes"
                            " short of %.0f%% free", entry.name, short_bytes,
                            QUARANTINE_PRESSURE_FREE_FRACTION * 100,
                            extra=about("quarantine_purged_for_space", chunk=entry.chunk_id))
                short_bytes -= entry.size_bytes
        return left

    async def _purge(self, entry: QuarantinedReplica) -> bool:
        try:
            await self.disk(0, self.quarantine.purge, entry.name)
        except (DfsError, OSError) as error:  # gone meanwhile (an operator), or a sick disk
            log.warning("quarantine: could not purge %s: %s", entry.name, error,
                        extra=about("quarantine_purge_failed", chunk=entry.chunk_id,
                                    error=str(error)))
            return False
        self.purged += 1
        return True
