"""Reads and writes of file byte ranges, straight to the chunkservers.

Promises:
* ``write`` returns only when every replica of the chain has the bytes;
  when a chain member fails, the master is asked for a new chain (the
  version moves on, the failed replica becomes stale) and the write is
  repeated, at most WRITE_RETRIES_MAX times.
* ``read`` returns only checksum-verified bytes of the current version,
  trying each replica before asking the master again; holes read as zeros.
* ``flush`` returns when every chunk written since the last flush is on
  stable storage on every replica of its chain.
* Every write and flush carries a WRITE capability ("token") of the file's
  write lease (``leases``), refreshed from the master at half its life; a
  write refused because the lease is gone (LeaseLost) is never retried and
  drops nobody from a chain.
* A read of a replica on this host is served from its file when it can be
  (``local_replicas``: same bytes, same checks), else over the network.
* Every read carries the READ capability the master put in the chunk's
  location; a cached location is asked for again at half its capability's
  life, together with the next LOCATION_PREFETCH_CHUNKS - 1 chunks, so
  steady reads pay one master round trip per prefetch batch per half-life.

Chunk locations are cached (bounded); a cached location is dropped as soon
as a chunkserver says it is stale or refuses its capability.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

import trio

from vmstore.dfs.client.leases import ClientLeases
from vmstore.dfs.client.local_replicas import LocalReplicas
from vmstore.dfs.client.master_client import MasterClient
from vmstore.dfs.client.zero_ranges import join_zero_ranges, split_zero_blocks
from vmstore.dfs.constants import (
    CHUNK_SIZE_BYTES,
    DATA_REQUEST_BYTES_MAX,
    DATA_RPC_TIMEOUT_S,
    LOCATION_CACHE_ENTRIES_MAX,
    READ_RETRIES_MAX,
    RECONNECT_BACKOFF_MAX_S,
    RECONNECT_BACKOFF_MIN_S,
    WRITE_RETRIES_MAX,
)
from vmstore.dfs.errors import (
    DfsError,
    InvalidArgument,
    LeaseHeld,
    LeaseLost,
    ReadRefused,
    ReplicaUnavailable,
    TokenExpired,
    WriteRefused,
    unwrapped_errors,
)
from vmstore.dfs.log_fields import about
from vmstore.dfs.protocol import messages as m
from vmstore.dfs.protocol.capability import READ_CAPABILITY_LIFE_S
from vmstore.dfs.protocol.rpc import ConnectionPool
from vmstore.dfs.types import InodeId

log = logging.getLogger(__name__)
LOCATION_PREFETCH_CHUNKS = 16


def chunk_pieces(offset: int, length: int) -> list[tuple[int, int, int, int]]:
    """Split a file range into (chunk index, offset in chunk, length, offset in buffer).

    No piece crosses a chunk or exceeds DATA_REQUEST_BYTES_MAX: one piece is
    one request to a chunkserver.
    """
    pieces = []
    cursor = offset
    end = offset + length
    while cursor < end:
        index, inner = divmod(cursor, CHUNK_SIZE_BYTES)
        size = min(CHUNK_SIZE_BYTES - inner, end - cursor, DATA_REQUEST_BYTES_MAX)
        pieces.append((index, inner, size, cursor - offset))
        cursor += size
    return pieces


@dataclass(frozen=True)
class _WriteTarget:
    """A write chain, the token its members check, and when to get a fresh one."""

    location: m.ChunkLocation
    token: m.Capability
    refresh_at_s: float  # trio clock: half the token's life after it arrived

    @classmethod
    def from_reply(cls, reply: m.WriteLocationReply) -> _WriteTarget:
        return cls(reply.location, reply.token, _refresh_at_s(reply.token))


@dataclass(frozen=True)
class _ReadTarget:
    """Where a chunk can be read (None: a hole), and when to ask the master again."""

    location: m.ChunkLocation | None
    refresh_at_s: float  # trio clock: half the read capability's life after it arrived


def _refresh_at_s(capability: m.Capability | None) -> float:
    """Half a capability's life from now (by the local clock: immune to clock skew)."""
    life_s = (READ_CAPABILITY_LIFE_S if capability is None
              else (capability.expires_ns - capability.issued_ns) / 1e9)
    return trio.current_time() + life_s / 2


@dataclass
class _Unflushed:
    """Chunks written since the last flush of a file, and how far it grew."""

    chunks: dict[int, m.ChunkLocation] = field(default_factory=dict)  # by chunk index
    size_bytes: int = 0


class ChunkIO:
    def __init__(self, master: MasterClient, chunkservers: ConnectionPool,
                 leases: ClientLeases, local_replicas: LocalReplicas | None = None) -> None:
        self.master = master
        self.chunkservers = chunkservers
        self.leases = leases
        # Short-circuit reads of replicas on this host; None: every read goes over TCP.
        self.local_replicas = local_replicas
        self._read_locations: dict[tuple[int, int], _ReadTarget] = {}
        self._write_targets: dict[tuple[int, int], _WriteTarget] = {}
        self.unflushed: dict[int, _Unflushed] = {}

    # --- locations ------------------------------------------------------------
    async def _location_for_read(self, inode: int, index: int) -> m.ChunkLocation | None:
        cached = self._read_locations.get((inode, index))
        if cached is not None and trio.current_time() < cached.refresh_at_s:
            return cached.location  # fast path; None is a hole
        reply = await self.master.call(m.ClientToMasterChunkLocations(
            inode=inode, first_index=index, count=LOCATION_PREFETCH_CHUNKS,
            session_id=self.master.session_id), reply_type=m.ChunkLocationsReply)
        self._trim_cache(self._read_locations)
        found = {location.index: location for location in reply.locations}
        # Holes are asked again as often as the chunks around them (another
        # host may fill them; close-to-open needs no more).
        hole_refresh_at_s = min((_refresh_at_s(location.read_capability)
                                 for location in reply.locations),
                                default=_refresh_at_s(None))
        for i in range(index, index + LOCATION_PREFETCH_CHUNKS):
            location = found.get(i)
            self._read_locations[(inode, i)] = _ReadTarget(
                location, hole_refresh_at_s if location is None
                else _refresh_at_s(location.read_capability))
        return found.get(index)

    async def _target_for_write(self, inode: int, index: int) -> _WriteTarget:
        target = self._write_targets.get((inode, index))
        if target is None or trio.current_time() >= target.refresh_at_s:
            target = await self._ask_for_write(inode, m.ClientToMasterChunkForWrite,
                                               index=index)
        return target

    async def _ask_for_write(self, inode: int, request_type: type[m.Request],
                             **fields: Any) -> _WriteTarget:
        """ChunkForWrite or ReportBadChain, under this client's lease of the file."""
        epoch = self.leases.epoch_for_write(inode)
        try:
            reply = await self.master.mutate(request_type, reply_type=m.WriteLocationReply,
                                             inode=inode, lease_epoch=epoch, **fields)
        except LeaseLost as error:
            self.leases.lost(inode, error.message)
            raise
        if epoch == 0:
            self.leases.took(inode, reply.token.epoch)
        target = _WriteTarget.from_reply(reply)
        self._trim_cache(self._write_targets)
        self._write_targets[(inode, target.location.index)] = target
        self._read_locations[(inode, target.location.index)] = _ReadTarget(
            target.location, _refresh_at_s(target.location.read_capability))
        return target

    def forget(self, inode: int) -> None:
        """Drop cached locations of a file (it was truncated or removed elsewhere)."""
        for cache in (self._read_locations, self._write_targets):
            for key in [k for k in cache if k[0] == inode]:
                del cache[key]

    @staticmethod
    def _trim_cache(cache: dict[Any, Any]) -> None:
        if len(cache) >= LOCATION_CACHE_ENTRIES_MAX:
            cache.clear()  # crude but bounded; misses only cost a master round trip

    # --- reading ----------------------------------------------------------------
    async def read(self, inode: InodeId, offset: int, length: int) -> bytes:
        """Bytes of [offset, offset+length) as stored; the caller clips to file size."""
        if offset < 0 or length < 0:
            raise InvalidArgument(f"read of {length} bytes at {offset}")
        pieces = chunk_pieces(offset, length)
        if len(pieces) == 1:
            index, inner, size, _ = pieces[0]
            return await self._read_piece(inode, index, inner, size)  # fast path
        parts: list[bytes] = [b""] * len(pieces)

        async def one(slot: int, index: int, inner: int, size: int) -> None:
            parts[slot] = await self._read_piece(inode, index, inner, size)

        with unwrapped_errors():
            async with trio.open_nursery() as nursery:
                for slot, (index, inner, size, _) in enumerate(pieces):
                    nursery.start_soon(one, slot, index, inner, size)
        return b"".join(parts)

    async def _read_piece(self, inode: int, index: int, inner: int, size: int) -> bytes:
        errors: list[str] = []
        refused_before = False
        for attempt in range(READ_RETRIES_MAX):
            location = await self._location_for_read(inode, index)
            if location is None:
                return bytes(size)  # a hole
            if self.local_replicas is not None:
                # Fast path: a replica on this host, read from its file. None on any
                # doubt; the network path below then reads it, and reports damage.
                local = await self.local_replicas.read(location, inner, size)
                if local is not None:
                    return local
            for replica in location.replicas:
                try:
                    connection = await self.chunkservers.get(replica.host, replica.port)
                    reply, payload = await connection.call(m.ToChunkserverReadChunk(
                        chunk_id=location.chunk_id, version=location.version,
                        offset_bytes=inner, length_bytes=size,
                        capability=location.read_capability),
                        timeout_s=DATA_RPC_TIMEOUT_S, reply_type=m.ReadChunkReply)
                    return join_zero_ranges(inner, size, reply.zero_ranges, payload)
                except ReadRefused as error:
                    # Signed with a key since retired (a key rotation)? One fresh
                    # capability from the master settles it; a second refusal is final.
                    if refused_before:
                        raise
                    refused_before = True
                    errors.append(f"server {replica.server_id}: {error}")
                    break
                except TokenExpired as error:
                    errors.append(f"server {replica.server_id}: {error}")
                    break  # every replica would say so: a fresh capability first
                except DfsError as error:
                    errors.append(f"server {replica.server_id}: {error}")
            self._read_locations.pop((inode, index), None)
            await trio.sleep(min(RECONNECT_BACKOFF_MIN_S * 2**attempt, RECONNECT_BACKOFF_MAX_S))
        raise ReplicaUnavailable(f"chunk {index} of inode {inode}: no replica could be read"
                                 f" ({'; '.join(errors[-4:])})")

    # --- writing ----------------------------------------------------------------
    async def write(self, inode: InodeId, offset: int, data: bytes) -> None:
        if offset < 0:
            raise InvalidArgument(f"write at negative offset {offset}")
        pieces = chunk_pieces(offset, len(data))
        view = memoryview(data)
        if len(pieces) == 1:
            index, inner, size, at = pieces[0]
            await self._write_piece(inode, index, inner, view[at:at + size])  # fast path
        else:
            with unwrapped_errors():
                async with trio.open_nursery() as nursery:
                    for index, inner, size, at in pieces:
                        nursery.start_soon(self._write_piece, inode, index, inner,
                                           view[at:at + size])
        unflushed = self.unflushed.setdefault(inode, _Unflushed())
        unflushed.size_bytes = max(unflushed.size_bytes, offset + len(data))

    async def _write_piece(self, inode: int, index: int, inner: int, data: memoryview) -> None:
        zero_ranges, payload = split_zero_blocks(inner, data)
        self.leases.epoch_for_write(inode)  # a fenced file takes no writes, zeros included
        if not payload and (inode, index) not in self._write_targets:
            if await self._location_for_read(inode, index) is None:
                return  # zeros into a hole: nothing to store, nothing to allocate
        last_error: DfsError | None = None
        refused_before = False
        for _attempt in range(WRITE_RETRIES_MAX):
            target = await self._target_for_write(inode, index)
            location = target.location
            head, rest = location.replicas[0], location.replicas[1:]
            try:
                connection = await self.chunkservers.get(head.host, head.port)
                await connection.call(m.ToChunkserverWriteChunk(
                    chunk_id=location.chunk_id, version=location.version, offset_bytes=inner,
                    length_bytes=len(data), zero_ranges=zero_ranges, chain_rest=rest,
                    token=target.token), payload, timeout_s=DATA_RPC_TIMEOUT_S)
                self.unflushed.setdefault(inode, _Unflushed()).chunks[index] = location
                return
            except WriteRefused as error:
                # A key rotation may have retired the key that signed it: one fresh
                # capability. The master grants it only to the lease holder, so a
                # fenced writer gets LeaseLost here, never a way back in.
                if refused_before:
                    raise
                refused_before = True
                last_error = error
                self._write_targets.pop((inode, index), None)
            except (InvalidArgument, LeaseHeld):
                raise
            except LeaseLost as error:
                self.leases.lost(inode, error.message)
                raise
            except TokenExpired as error:
                last_error = error
                self._write_targets.pop((inode, index), None)  # a fresh token next time
            except DfsError as error:
                last_error = error
                failed = error.server_id or head.server_id
                log.info("write to chunk %d failed at server %d (%s); asking for a new chain",
                         location.chunk_id, failed, error,
                         extra=about("chain_write_failed", chunk=location.chunk_id,
                                     server=failed, error=str(error)))
                await self._replace_chain(inode, location, failed)
        raise ReplicaUnavailable(f"write to chunk {index} of inode {inode} failed"
                                 f" {WRITE_RETRIES_MAX} times; last: {last_error}")

    async def _replace_chain(self, inode: int, location: m.ChunkLocation, failed: int
                             ) -> m.ChunkLocation:
        target = await self._ask_for_write(
            inode, m.ClientToMasterReportBadChain, index=location.index,
            chunk_id=location.chunk_id, version=location.version, failed_server_ids=[failed])
        return target.location

    # --- flushing ----------------------------------------------------------------
    def pending_size(self, inode: InodeId) -> int:
        unflushed = self.unflushed.get(inode)
        return 0 if unflushed is None else unflushed.size_bytes

    async def flush(self, inode: InodeId) -> int:
        """Make this file's acknowledged writes durable; returns the size they reach."""
        self.leases.epoch_for_write(inode)  # after a fence, "durable" would be a lie
        unflushed = self.unflushed.pop(inode, None)
        if unflushed is None:
            return 0
        try:
            with unwrapped_errors():
                async with trio.open_nursery() as nursery:
                    for location in unflushed.chunks.values():
                        nursery.start_soon(self._flush_chunk, inode, location)
        except BaseException:
            self._merge_back(inode, unflushed)
            raise
        return unflushed.size_bytes

    def _merge_back(self, inode: int, unflushed: _Unflushed) -> None:
        current = self.unflushed.setdefault(inode, _Unflushed())
        for index, location in unflushed.chunks.items():
            current.chunks.setdefault(index, location)
        current.size_bytes = max(current.size_bytes, unflushed.size_bytes)

    async def _flush_chunk(self, inode: int, location: m.ChunkLocation) -> None:
        last_error: DfsError | None = None
        refused_before = False
        for _attempt in range(WRITE_RETRIES_MAX):
            head, rest = location.replicas[0], location.replicas[1:]
            try:
                token = (await self._target_for_write(inode, location.index)).token
                connection = await self.chunkservers.get(head.host, head.port)
                await connection.call(m.ToChunkserverFlushChunk(
                    chunk_id=location.chunk_id, version=location.version, chain_rest=rest,
                    capability=token), timeout_s=DATA_RPC_TIMEOUT_S)
                return
            except WriteRefused as error:
                if refused_before:  # once: see write() on key rotation
                    raise
                refused_before = True
                last_error = error
                self._write_targets.pop((inode, location.index), None)
            except (InvalidArgument, LeaseHeld, LeaseLost):
                raise
            except TokenExpired as error:
                last_error = error
                self._write_targets.pop((inode, location.index), None)  # a fresh one next
            except DfsError as error:
                # The survivors acknowledged every write, so flushing them is enough.
                last_error = error
                location = await self._replace_chain(inode, location,
                                                     error.server_id or head.server_id)
        raise ReplicaUnavailable(f"flush of chunk {location.chunk_id} failed: {last_error}")
