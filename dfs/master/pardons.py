"""Holders pardoned after a failed copy gave its chunk's version bump back.

Promise: after ``grant`` (the holders that reverted a chunk to ``version``), a
writer's report naming those holders as failed at that version is ignored
once per holder, for VERSION_REVERT_PARDON_S: the bump refused the writer
meanwhile, not the holder. Any other report passes whole. At most one pardon
per chunk is kept, and the expired ones go at each grant, so the book holds
no more than the chunks whose copies failed lately. One owner: the
ChunkManager, on trio's thread (its chunk locks serialise a chunk's grant and
reports).

Caveat: in memory only; a master restart forgets the pardons, and a report
after it moves the version as any failed write would.
"""

from __future__ import annotations

import trio

from vmstore.dfs.constants import VERSION_REVERT_PARDON_S
from vmstore.dfs.types import ChunkId, ChunkVersion, ServerId


class Pardons:
    def __init__(self) -> None:
        # chunk -> (version, holders, until): a failed copy gave its bump back
        self._pardons: dict[ChunkId, tuple[ChunkVersion, set[ServerId], float]] = {}

    def grant(self, chunk_id: ChunkId, version: ChunkVersion,
              servers: list[ServerId]) -> None:
        """``servers`` went back to ``version`` of the chunk: pardon them for a while."""
        now_s = trio.current_time()
        for expired in [c for c, (_, _, until_s) in self._pardons.items() if until_s < now_s]:
            del self._pardons[expired]  # never asked for: at most one per failed chunk
        self._pardons[chunk_id] = (version, set(servers), now_s + VERSION_REVERT_PARDON_S)

    def unpardoned(self, chunk_id: ChunkId, version: ChunkVersion,
                   failed: list[ServerId]) -> list[ServerId]:
        """``failed`` without the holders a failed copy's given-back bump may have made a
        writer report (``ChunkManager._give_back``): each is pardoned once, for a while."""
        pardon = self._pardons.get(chunk_id)
        if pardon is None:
            return failed
        at, servers, until_s = pardon
        if at != version or trio.current_time() > until_s:
            del self._pardons[chunk_id]
            return failed
        kept = [s for s in failed if s not in servers]
        servers.difference_update(failed)
        if not servers:
            del self._pardons[chunk_id]
        return kept
