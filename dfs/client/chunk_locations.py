"""Where each chunk of a file is, and the capabilities to use it: cached per chunk.

Promises:
* A cached read location (with the READ capability the master put in it)
  or write target (a chain and its WRITE token) is used without asking the
  master until half its capability's life has passed (fast path). Until
  CAPABILITY_USE_FRACTION of its life it is still used while a fresh one is
  asked for in the background (once per chunk at a time, at most
  CAPABILITY_REFRESHES_MAX at once); past that the caller waits for the
  master. Lives are measured by the local clock, so clock skew does not
  shorten them.
* A read location is asked for together with the next
  LOCATION_PREFETCH_CHUNKS - 1 chunks; a hole is asked again as often as the
  chunks around it (another host may fill it).
* A write target is asked for under this client's lease of the file
  (``leases``); a background refresh never takes a lease, and a LeaseLost
  answer is told to ``leases`` before it is raised.
* Each cache holds at most LOCATION_CACHE_ENTRIES_MAX entries (cleared when
  full: a miss costs only a master round trip). ChunkLocations alone owns
  both; ``chunk_io`` drops an entry as soon as a chunkserver says it is
  stale or refuses its capability.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import trio

from vmstore.dfs.client.leases import ClientLeases
from vmstore.dfs.client.master_client import MasterClient
from vmstore.dfs.constants import (
    CAPABILITY_REFRESHES_MAX,
    CAPABILITY_USE_FRACTION,
    LOCATION_CACHE_ENTRIES_MAX,
    LOCATION_PREFETCH_CHUNKS,
    READ_CAPABILITY_LIFE_S,
)
from vmstore.dfs.errors import DfsError, LeaseLost
from vmstore.dfs.log_fields import about
from vmstore.dfs.protocol import messages as m

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class WriteTarget:
    """A write chain, the token its members check, and when to get a fresh one."""

    location: m.ChunkLocation
    token: m.Capability
    refresh_at_s: float  # trio clock: half the token's life after it arrived
    usable_until_s: float  # trio clock: past this, wait for a fresh token

    @classmethod
    def from_reply(cls, reply: m.WriteLocationReply) -> WriteTarget:
        return cls(reply.location, reply.token, _refresh_at_s(reply.token),
                   _usable_until_s(reply.token))


@dataclass(frozen=True)
class _ReadTarget:
    """Where a chunk can be read (None: a hole), and when to ask the master again."""

    location: m.ChunkLocation | None
    refresh_at_s: float  # trio clock: half the read capability's life after it arrived
    usable_until_s: float  # trio clock: past this, wait for a fresh location


def _life_s(capability: m.Capability | None) -> float:
    return (READ_CAPABILITY_LIFE_S if capability is None
            else (capability.expires_ns - capability.issued_ns) / 1e9)


def _refresh_at_s(capability: m.Capability | None) -> float:
    """Half a capability's life from now (by the local clock: immune to clock skew)."""
    return trio.current_time() + _life_s(capability) / 2


def _usable_until_s(capability: m.Capability | None) -> float:
    """Until when a capability that arrived now is used while a fresh one is asked for
    in the background (the master's lives already allow for CLOCK_SKEW_S_MAX)."""
    return trio.current_time() + _life_s(capability) * CAPABILITY_USE_FRACTION


class ChunkLocations:
    def __init__(self, master: MasterClient, leases: ClientLeases,
                 background: trio.Nursery) -> None:
        self.master = master
        self.leases = leases
        self._background = background  # where the refreshes run
        self._read_locations: dict[tuple[int, int], _ReadTarget] = {}
        self._write_targets: dict[tuple[int, int], WriteTarget] = {}
        # Tokens and locations being asked for again in the background, by key.
        self._refreshing: set[tuple[str, int, int]] = set()

    # --- reading -----------------------------------------------------------------
    async def for_read(self, inode: int, index: int) -> m.ChunkLocation | None:
        """Where chunk ``index`` of ``inode`` can be read; None: a hole."""
        cached = self._read_locations.get((inode, index))
        if cached is not None:
            now_s = trio.current_time()
            if now_s < cached.refresh_at_s:
                return cached.location  # fast path; None is a hole
            if now_s < cached.usable_until_s:  # still good: a fresh one meanwhile
                self._refresh_soon(("read", inode, index),
                                   lambda: self._ask_for_locations(inode, index))
                return cached.location
        return await self._ask_for_locations(inode, index)

    async def _ask_for_locations(self, inode: int, index: int) -> m.ChunkLocation | None:
        reply = await self.master.call(m.ClientToMasterChunkLocations(
            inode=inode, first_index=index, count=LOCATION_PREFETCH_CHUNKS,
            session_id=self.master.session_id), reply_type=m.ChunkLocationsReply)
        _trim_cache(self._read_locations)
        found = {location.index: location for location in reply.locations}
        # Holes are asked again as often as the chunks around them (another
        # host may fill them; close-to-open needs no more).
        hole_refresh_at_s = min((_refresh_at_s(location.read_capability)
                                 for location in reply.locations),
                                default=_refresh_at_s(None))
        for i in range(index, index + LOCATION_PREFETCH_CHUNKS):
            location = found.get(i)
            capability = None if location is None else location.read_capability
            self._read_locations[(inode, i)] = _ReadTarget(
                location, hole_refresh_at_s if location is None
                else _refresh_at_s(capability), _usable_until_s(capability))
        return found.get(index)

    def drop_read(self, inode: int, index: int) -> None:
        """No replica could answer, or the capability is refused: ask the master next."""
        self._read_locations.pop((inode, index), None)

    # --- background refresh ---------------------------------------------------------
    def _refresh_soon(self, key: tuple[str, int, int],
                      ask: Callable[[], Awaitable[object]]) -> None:
        """Ask the master again in the background (once per key at a time, at most
        CAPABILITY_REFRESHES_MAX at once); what it answers replaces the cache entry."""
        if key in self._refreshing or len(self._refreshing) >= CAPABILITY_REFRESHES_MAX:
            return
        self._refreshing.add(key)
        self._background.start_soon(self._refresh, key, ask)

    async def _refresh(self, key: tuple[str, int, int],
                       ask: Callable[[], Awaitable[object]]) -> None:
        try:
            await ask()
        except DfsError as error:  # the next I/O asks again, in the foreground when due
            log.info("background refresh of %s of inode %d chunk %d failed: %s", *key, error,
                     extra=about("capability_refresh_failed", inode=key[1], error=str(error)))
        finally:
            self._refreshing.discard(key)

    # --- writing -----------------------------------------------------------------
    async def for_write(self, inode: int, index: int) -> WriteTarget:
        """The chain of chunk ``index`` of ``inode`` and a token for it (the master
        allocates the chunk, and grants this client the file's lease, if need be)."""
        target = self._write_targets.get((inode, index))
        if target is not None:
            now_s = trio.current_time()
            if now_s < target.refresh_at_s:
                return target  # fast path
            if now_s < target.usable_until_s:  # still good: a fresh one meanwhile
                self._refresh_soon(("write", inode, index),
                                   lambda: self._refresh_token(inode, index))
                return target
        return await self._ask_for_chunk(inode, index)

    async def _refresh_token(self, inode: int, index: int) -> None:
        if self.leases.epoch_for_write(inode):  # never takes a lease in the background
            await self._ask_for_chunk(inode, index)

    async def _ask_for_chunk(self, inode: int, index: int) -> WriteTarget:
        return await self.ask_for_write(m.ClientToMasterChunkForWrite(
            session_id=0, op_id=0, inode=inode, index=index,
            lease_epoch=self.leases.epoch_for_write(inode)))

    async def ask_for_write(self, request: m.ClientToMasterChunkForWrite
                            | m.ClientToMasterReportBadChain) -> WriteTarget:
        """ChunkForWrite or ReportBadChain, under this client's lease of the file.

        ``request`` carries ``leases.epoch_for_write(inode)`` as its lease epoch.
        """
        inode = request.inode
        try:
            reply = await self.master.mutate(request, reply_type=m.WriteLocationReply)
        except LeaseLost as error:
            self.leases.lost(inode, error.message)
            raise
        if request.lease_epoch == 0:
            self.leases.took(inode, reply.token.epoch)
        target = WriteTarget.from_reply(reply)
        _trim_cache(self._write_targets)
        self._write_targets[(inode, target.location.index)] = target
        self._read_locations[(inode, target.location.index)] = _ReadTarget(
            target.location, _refresh_at_s(target.location.read_capability),
            _usable_until_s(target.location.read_capability))
        return target

    def cached_for_write(self, inode: int, index: int) -> WriteTarget | None:
        """The write target held now, if any (never asks the master)."""
        return self._write_targets.get((inode, index))

    def drop_write(self, inode: int, index: int) -> None:
        """The token was refused or expired: a fresh one next time."""
        self._write_targets.pop((inode, index), None)

    def forget(self, inode: int) -> None:
        """Drop cached locations of a file (it was truncated or removed elsewhere)."""
        for cache in (self._read_locations, self._write_targets):
            for key in [k for k in cache if k[0] == inode]:
                del cache[key]


def _trim_cache(cache: dict[Any, Any]) -> None:
    if len(cache) >= LOCATION_CACHE_ENTRIES_MAX:
        cache.clear()  # crude but bounded; misses only cost a master round trip
