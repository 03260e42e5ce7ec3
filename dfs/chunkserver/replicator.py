"""Copies a chunk from a peer on the master's command (the target pulls, as in MooseFS).

Promise: a replica made here takes its place only when it is complete, read
back against its checksums and on stable storage. Until then it is built
aside under tmp/ (``ChunkStore.stage``), never reported nor read, and any
replica of the chunk already here stays in place: a copy that fails or dies
half-way costs nothing that was here before (issue 19: a replicator that
discarded its own copy first lost the chunk when its source was a forgery).
Copies are throttled to ``bandwidth_bytes_per_s`` so guests keep their I/O.
Every read from a source carries the READ capability the master put in its
command: sources serve no copy the master did not order.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any

import trio

from vmstore.dfs.chunkserver.chunk_store import ChunkStore, StagedReplica
from vmstore.dfs.constants import (
    CHUNK_SIZE_BYTES,
    DATA_RPC_TIMEOUT_S,
    REPLICATION_PIECE_BYTES,
)
from vmstore.dfs.errors import DfsError, ReplicaUnavailable
from vmstore.dfs.protocol import messages as m
from vmstore.dfs.protocol.replica_format import ReplicaOwner
from vmstore.dfs.protocol.rpc import ConnectionPool

log = logging.getLogger(__name__)
Disk = Callable[..., Awaitable[Any]]


class Replicator:
    def __init__(self, store: ChunkStore, peers: ConnectionPool, disk: Disk,
                 bandwidth_bytes_per_s: float) -> None:
        self.store = store
        self.peers = peers
        self.disk = disk
        self.bandwidth_bytes_per_s = bandwidth_bytes_per_s
        self.bytes_copied = 0

    async def replicate(self, request: m.MasterToChunkserverReplicate) -> None:
        """Make the copy; ReplicaUnavailable (this chunkserver's fault, named) if our
        own disk fails: a sick disk fails the copy, never the process."""
        try:
            await self._replicate(request)
        except OSError as error:
            raise ReplicaUnavailable(f"copy of chunk {request.chunk_id} failed on this"
                                     f" chunkserver's disk: {error}") from None

    async def _replicate(self, request: m.MasterToChunkserverReplicate) -> None:
        owner = ReplicaOwner(request.inode, request.index) if request.inode else None
        staged = await self.disk(0, self.store.stage, request.chunk_id, request.version, owner)
        try:
            started = trio.current_time()
            copied = 0
            for offset in range(0, CHUNK_SIZE_BYTES, REPLICATION_PIECE_BYTES):
                copied += await self._copy_piece(request, staged, offset)
                # Throttle: never ahead of the allowed rate.
                ahead_s = copied / self.bandwidth_bytes_per_s - (trio.current_time() - started)
                if ahead_s > 0:
                    await trio.sleep(ahead_s)
            await self.disk(CHUNK_SIZE_BYTES, self.store.install, staged)
        except BaseException:
            with trio.CancelScope(shield=True):
                try:
                    await self.disk(0, self.store.discard, staged)
                except OSError as error:
                    # Under tmp/: never reported, and removed at the next start.
                    log.warning("could not discard the partial copy of chunk %d: %s",
                                request.chunk_id, error)
            raise
        log.info("replicated chunk %d version %d (%d bytes of data)", request.chunk_id,
                 request.version, copied)

    async def _copy_piece(self, request: m.MasterToChunkserverReplicate,
                          staged: StagedReplica, offset: int) -> int:
        errors: list[str] = []
        for source in request.sources:
            try:
                connection = await self.peers.get(source.host, source.port)
                reply, payload = await connection.call(m.ToChunkserverReadChunk(
                    chunk_id=request.chunk_id, version=request.version, offset_bytes=offset,
                    length_bytes=REPLICATION_PIECE_BYTES, capability=request.capability),
                    timeout_s=DATA_RPC_TIMEOUT_S,
                    reply_type=m.ReadChunkReply)
            except DfsError as error:
                errors.append(f"server {source.server_id}: {error}")
                continue
            if payload:
                await self.disk(len(payload), self.store.write_staged, staged, offset,
                                REPLICATION_PIECE_BYTES, payload,
                                [tuple(r) for r in reply.zero_ranges])
            self.bytes_copied += len(payload)
            return len(payload)
        raise ReplicaUnavailable(f"copy of chunk {request.chunk_id} at {offset}: no source"
                                 f" answered ({'; '.join(errors)})")
