"""Keeping every chunk at its goal: a pure planner and the loop that drives it.

Promise: a chunk with fewer current replicas than its goal is copied to
another host, most endangered first (one copy left before two), at most
REPLICATION_INFLIGHT_MAX at once; a chunk with more than its goal loses
the surplus. A replica on a chunkserver that is down counts for
``replication_delay_s`` (a reboot should not cost a full copy), then no
more. Every pass rescans, so a rebuild never stalls on chunks that failed
once: they are simply tried again.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import trio

from vmstore.dfs.constants import (
    CHUNK_SIZE_BYTES,
    REPLICATION_INFLIGHT_MAX,
    REPLICATION_INTERVAL_S,
    REPLICATION_RATE_WINDOW_S,
)
from vmstore.dfs.errors import DfsError
from vmstore.dfs.log_fields import about
from vmstore.dfs.master.chunk_manager import ChunkManager
from vmstore.dfs.master.registry import ChunkserverEntry
from vmstore.dfs.protocol.messages import HealingStatus
from vmstore.dfs.types import ChunkId, ServerId

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ChunkNeed:
    chunk_id: ChunkId
    goal: int
    sources: tuple[ServerId, ...]  # holders that are up and can be copied from
    surplus: tuple[ServerId, ...] = ()  # holders to delete (over goal, or drained)


def plan(
    rows: Iterable[tuple[ChunkId, int, list[ServerId]]],
    servers: dict[ServerId, ChunkserverEntry],
    now_s: float,
    delay_s: float,
    is_damaged: Callable[[ChunkId, ServerId], bool] = lambda _chunk, _server: False,
) -> tuple[list[ChunkNeed], list[ChunkNeed]]:
    """(under goal, most endangered first; with replicas to remove) among ``rows``.

    A holder ``is_damaged`` (a damaged last copy the master keeps) counts toward the
    goal but is no copy source: a chunk with no other source waits, without a version
    bump, until a healthy copy is up.
    """
    under: list[ChunkNeed] = []
    over: list[ChunkNeed] = []
    for chunk_id, goal, holders in rows:
        keepers: list[ServerId] = []  # up and staying: they count toward the goal
        draining: list[ServerId] = []  # up but leaving (drained, disk failing): sources only
        away = 0  # down for less than the delay: they count, but cannot serve
        for holder in holders:
            entry = servers.get(holder)
            if entry is None:
                continue
            if entry.up:
                (draining if entry.leaving else keepers).append(holder)
            elif now_s - entry.last_heartbeat_s < delay_s:
                away += 1
        sources = tuple(h for h in keepers + draining if not is_damaged(chunk_id, h))
        if sources and len(keepers) + away < goal:
            under.append(ChunkNeed(chunk_id, goal, sources))
        elif len(keepers) > goal or (draining and len(keepers) >= goal):
            surplus = draining + keepers[goal:] if len(keepers) > goal else draining
            over.append(ChunkNeed(chunk_id, goal, sources, tuple(surplus)))
    under.sort(key=lambda need: (len(need.sources), need.chunk_id))
    return under, over


def monotonic_s() -> float:
    return trio.current_time()


class ReplicationDriver:
    """Runs ``plan`` every REPLICATION_INTERVAL_S and carries it out, within limits."""

    def __init__(self, chunk_manager: ChunkManager, delay_s: float) -> None:
        self.chunk_manager = chunk_manager
        self.registry = chunk_manager.registry
        self.delay_s = delay_s
        self._active: set[ChunkId] = set()
        self._slots = trio.Semaphore(REPLICATION_INFLIGHT_MAX)
        self.chunks_copied = 0
        self.bytes_copied_estimate = 0
        self.replicas_removed = 0
        self.under_goal = 0
        self._copied_at: list[float] = []  # completion times, for the rate

    def status(self) -> HealingStatus:
        now_s = monotonic_s()
        self._copied_at = [t for t in self._copied_at if now_s - t < REPLICATION_RATE_WINDOW_S]
        return HealingStatus(
            under_goal=self.under_goal, copying=len(self._active),
            chunks_copied=self.chunks_copied, replicas_removed=self.replicas_removed,
            copied_bytes_per_s=len(self._copied_at) * CHUNK_SIZE_BYTES / REPLICATION_RATE_WINDOW_S)

    async def run(self, *, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        async with trio.open_nursery() as nursery:
            task_status.started()
            while True:
                await trio.sleep(REPLICATION_INTERVAL_S)
                if self.registry.in_startup_grace():
                    continue  # chunkservers are still coming back
                await self._one_pass(nursery)

    async def _one_pass(self, nursery: trio.Nursery) -> None:
        await self.chunk_manager.recheck_damaged()
        rows = self.chunk_manager.chunks.health_rows()
        under, over = plan(rows, self.registry.chunkservers, monotonic_s(), self.delay_s,
                           self.chunk_manager.damage.is_damaged)
        self.under_goal = len(under)
        for need in under:
            if need.chunk_id in self._active:
                continue
            try:
                self._slots.acquire_nowait()
            except trio.WouldBlock:
                break
            self._active.add(need.chunk_id)
            nursery.start_soon(self._copy, need)
        for need in over[:REPLICATION_INFLIGHT_MAX * 4]:
            if need.chunk_id not in self._active:
                await self._remove(need)

    async def _copy(self, need: ChunkNeed) -> None:
        try:
            await self.chunk_manager.add_replica(need.chunk_id, need.goal)
            self.chunks_copied += 1
            self._copied_at.append(monotonic_s())
        except DfsError as error:
            log.warning("re-replication of chunk %d failed (will retry): %s", need.chunk_id,
                        error, extra=about("replication_failed", chunk=need.chunk_id,
                                           error=str(error)))
        finally:
            self._active.discard(need.chunk_id)
            self._slots.release()

    async def _remove(self, need: ChunkNeed) -> None:
        try:
            removed = await self.chunk_manager.remove_replicas(need.chunk_id, need.surplus)
            self.replicas_removed += removed
        except DfsError as error:
            log.warning("removing surplus replicas of chunk %d failed: %s", need.chunk_id,
                        error, extra=about("surplus_removal_failed", chunk=need.chunk_id,
                                           error=str(error)))
