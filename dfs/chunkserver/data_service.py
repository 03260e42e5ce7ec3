"""Client and chain traffic: reads, chained writes, flushes.

Promises:
* A write is answered only after this replica and every replica down the
  chain has applied it; a failure names the chunkserver at fault
  (``DfsError.server_id``) so the client can ask the master for a new chain.
  A successor that stays silent (a hung process, host or disk: no reset) is
  named too, once the writer's silence deadline for it has passed
  (``successor_timeout_s``), not after DATA_RPC_TIMEOUT_S.
* A read returns only bytes whose checksums matched, from a replica whose
  version is the one asked for.
* A flush is answered only after the chunk's data is on stable storage here
  and down the chain.
* A write this replica has no room for fails before anything is written, as
  NoSpace naming this chunkserver (never ReplicaUnavailable, never EIO): the
  writer moves the chain to replicas that have room, or tells its caller
  ENOSPC when none has (``dfs.chunkserver.space_ledger``).
* Nothing is served without the master's capability for the chunk and the
  operation (``protocol.capability``): a read needs READ, a write and a
  flush need WRITE; a write's also needs a current lease epoch
  (``write_fence``). Forwarded writes and flushes carry the client's
  capability, and each chain member checks it again. A refusal names what
  was wrong (missing, forged, other chunk, other operation, expired).
* If this replica applied a write that a member down the chain refused
  because its writer was fenced, nobody will repeat that write, so this
  replica no longer matches its peers: it reports itself damaged and the
  master rebuilds it from them.

Disk calls on small buffers run inline (a pwrite to the page cache costs
less than a thread hop); big transfers go to a worker thread. So does
fdatasync, unless the disk has been syncing fast: then it runs inline too
(see ``SyncPlacement``). The store is used from one thread at a time
(``_disk`` limiter).
"""

from __future__ import annotations

import errno
import logging
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, TypeVar

import msgspec
import trio
from prometheus_client import Counter, Histogram

from vmstore.dfs.chunkserver.chunk_store import ChunkStore
from vmstore.dfs.chunkserver.disk_watch import DiskWatch
from vmstore.dfs.chunkserver.identity import ServerIdentity
from vmstore.dfs.chunkserver.range_lock import RangeLocks
from vmstore.dfs.chunkserver.write_fence import WriteFence
from vmstore.dfs.constants import (
    BLOCK_SIZE_BYTES,
    CHUNK_SIZE_BYTES,
    DATA_REQUEST_BYTES_MAX,
    DATA_RPC_TIMEOUT_S,
    INLINE_DISK_BYTES_MAX,
    INLINE_SYNC_SLOW_S,
    SLOW_SYNC_BACKOFF_S,
)
from vmstore.dfs.errors import (
    ChecksumMismatch,
    ChunkNotFound,
    DfsError,
    InvalidArgument,
    LeaseLost,
    NoSpace,
    PeerUnavailable,
    ProtocolError,
    ReplicaUnavailable,
    StaleChunkVersion,
    TokenExpired,
    TokenPredatesRestart,
    WriteRefused,
)
from vmstore.dfs.log_fields import about
from vmstore.dfs.metrics import LATENCY_BUCKETS_S, REGISTRY
from vmstore.dfs.protocol import hop_trace
from vmstore.dfs.protocol import messages as m
from vmstore.dfs.protocol.capability import READ, WRITE
from vmstore.dfs.protocol.limits import acquire_uncontended_at_once
from vmstore.dfs.protocol.replica_format import block_ranges
from vmstore.dfs.protocol.rpc import Connection, ConnectionPool, Handler, OutgoingCall

log = logging.getLogger(__name__)
T = TypeVar("T")
# Errors that mean "this replica cannot take part", as opposed to a bad request.
# NoSpace among them: the disk here is full, the writer moves the chain elsewhere.
REPLICA_FAULTS = (ChunkNotFound, StaleChunkVersion, ChecksumMismatch, NoSpace, OSError)
# Refusals of the writer, not of a replica: the client must not drop anyone.
WRITER_REFUSED = (LeaseLost, TokenExpired, WriteRefused)

REQUEST_SECONDS = Histogram(
    "vmstore_chunkserver_request_seconds",
    "Time to serve a data request; a write's includes the rest of its chain",
    ["operation"], buckets=LATENCY_BUCKETS_S, registry=REGISTRY)
REQUEST_ERRORS = Counter(
    "vmstore_chunkserver_request_errors_total", "Data requests answered with an error",
    ["operation", "error"], registry=REGISTRY)
DATA_BYTES = Counter("vmstore_chunkserver_data_bytes_total",
                     "Chunk bytes served to readers and stored for writers", ["direction"],
                     registry=REGISTRY)
SILENT_SUCCESSORS = Counter(
    "vmstore_chunkserver_silent_successors_total",
    "Forwarded writes and flushes whose next chain member did not answer within the"
    " writer's silence deadline: named to the writer, which drops it", registry=REGISTRY)
OPERATION_OF = {m.ToChunkserverReadChunk: "read", m.ToChunkserverWriteChunk: "write",
                m.ToChunkserverFlushChunk: "flush"}
# Label lookups take a lock: done once here, not on every request.
SECONDS_OF = {operation: REQUEST_SECONDS.labels(operation) for operation in OPERATION_OF.values()}
BYTES_READ = DATA_BYTES.labels("read")
BYTES_WRITTEN = DATA_BYTES.labels("written")


class SyncPlacement:
    """Where the next fdatasync runs: inline on the event loop, or in the worker.

    On a healthy disk fdatasync of a replica takes ~0.3 ms here, and the hop
    to a worker thread and back costs more than that again (measured: 285 µs
    of sync inside a 576 µs hop); an fsync waits for it on every replica. But
    inline, a sync stalls every request of this chunkserver while it runs.
    So syncs run inline while they are fast; one slower than
    INLINE_SYNC_SLOW_S (a sick or saturated disk) moves them to the worker
    for SLOW_SYNC_BACKOFF_S, so a bad disk stalls the loop at most once per
    backoff.
    """

    def __init__(self) -> None:
        self._threaded_until_s = 0.0  # trio clock

    def inline(self) -> bool:
        return trio.current_time() >= self._threaded_until_s

    def took(self, seconds: float, chunk_id: int) -> None:
        if seconds > INLINE_SYNC_SLOW_S:
            self._threaded_until_s = trio.current_time() + SLOW_SYNC_BACKOFF_S
            log.info("fdatasync of chunk %d took %.1f ms: syncs go to the worker thread"
                     " for %.0f s", chunk_id, seconds * 1000, SLOW_SYNC_BACKOFF_S,
                     extra=about("slow_sync", chunk=chunk_id, seconds=seconds))


@dataclass(frozen=True)
class _Forwarded:
    """A request sent on to the next chain member, whose reply is still to come."""

    member: m.ReplicaAddress
    call: OutgoingCall


@contextmanager
def _naming(member: m.ReplicaAddress) -> Iterator[None]:
    """A failure of the chain beyond us names the member at fault.

    A successor that refused a token only because it restarted since the token
    was issued (TokenPredatesRestart) is nobody's fault: it goes back to the
    writer as it is, a TokenExpired, and the writer repeats the write on the
    whole chain with a fresh token. Naming the restarted member instead dropped
    it from the chain at every routine restart, leaving the chunk one failure
    from loss until it was rebuilt (found by the model check).
    """
    try:
        yield
    except DfsError as error:
        if error.server_id or isinstance(error, (InvalidArgument, *WRITER_REFUSED)):
            raise  # already names the member at fault, or nobody is
        raise ReplicaUnavailable(
            f"chain member {member.server_id} ({member.host}:{member.port}): {error}",
            member.server_id) from None


def successor_timeout_s(request: m.ToChunkserverWriteChunk | m.ToChunkserverFlushChunk
                        ) -> float:
    """How long the rest of the chain may take to answer a forwarded request.

    One silence unit (``m.SilenceS``, chosen by the writer) per member still to
    answer: the successor and every member after it. The member before us
    waits one unit more than we do, so when a member down the chain is
    silent, the member just before it is the first to give up, and names it.
    """
    if not request.silence_s:
        return DATA_RPC_TIMEOUT_S
    return min(DATA_RPC_TIMEOUT_S, request.silence_s * len(request.chain_rest))


class DataService:
    def __init__(self, store: ChunkStore, peers: ConnectionPool, fence: WriteFence,
                 identity: ServerIdentity,
                 report_damaged: Callable[[int, int, str, list[tuple[int, int]]], None]
                 ) -> None:
        self.store = store
        self.fence = fence
        self.report_damaged = report_damaged  # bad replicas, for the master link to tell
        self.peers = peers
        self.identity = identity
        self.range_locks = RangeLocks()
        self._disk = trio.CapacityLimiter(1)
        # Sees every store call go through ``_disk``; run by the chunkserver's main.
        self.disk_watch = DiskWatch(store.probe)
        self._sync_placement = SyncPlacement()
        self.bytes_read = 0
        self.bytes_written = 0

    def handler_for(self, connection: Connection) -> Handler:
        async def handle(request: m.Request, payload: bytes) -> tuple[m.Message, bytes]:
            operation = OPERATION_OF.get(type(request))
            if operation is None:
                raise ProtocolError(f"{type(request).__name__} is not a data request")
            started = time.perf_counter()
            try:
                if isinstance(request, m.ToChunkserverReadChunk):
                    return await self.read(request)
                if isinstance(request, m.ToChunkserverWriteChunk):
                    return await self.write(request, payload), b""
                assert isinstance(request, m.ToChunkserverFlushChunk)
                return await self.flush(request), b""
            except DfsError as error:
                REQUEST_ERRORS.labels(operation, type(error).__name__).inc()
                raise
            finally:
                SECONDS_OF[operation].observe(time.perf_counter() - started)

        return handle

    async def disk(self, size_bytes: int, function: Callable[..., T], *args: Any) -> T:
        """Run a store call: inline when small, else in the worker thread."""
        await acquire_uncontended_at_once(self._disk)
        started_s = self.disk_watch.call_started()
        try:
            if size_bytes <= INLINE_DISK_BYTES_MAX:
                return function(*args)
            return await trio.to_thread.run_sync(function, *args)
        except OSError as error:
            self.disk_watch.call_failed(error)
            raise
        finally:
            self.disk_watch.call_ended(started_s)
            self._disk.release()

    def _fault(self, error: Exception, what: str) -> DfsError:
        """This replica failed: say so, and name it."""
        message = f"chunkserver {self.identity.server_id}: {what}: {error}"
        if isinstance(error, DfsError):
            return type(error)(message, self.identity.server_id)
        if isinstance(error, OSError) and error.errno in (errno.ENOSPC, errno.EDQUOT):
            return NoSpace(message, self.identity.server_id)  # a disk full of others' data
        return ReplicaUnavailable(message, self.identity.server_id)

    async def read(self, request: m.ToChunkserverReadChunk) -> tuple[m.Message, bytes]:
        self.fence.capabilities.check(request.capability, request.chunk_id, READ)
        if request.length_bytes > DATA_REQUEST_BYTES_MAX:
            raise InvalidArgument(f"read of {request.length_bytes} bytes: at most"
                                  f" {DATA_REQUEST_BYTES_MAX} per request")
        try:
            payload, zero_ranges = await self.disk(
                request.length_bytes, self.store.read, request.chunk_id, request.version,
                request.offset_bytes, request.length_bytes)
        except REPLICA_FAULTS as error:
            if isinstance(error, ChecksumMismatch):
                log.error("chunk %d: %s", request.chunk_id, error,
                          extra=about("checksum_mismatch", chunk=request.chunk_id,
                                      version=request.version, error=str(error)))
                self.report_damaged(request.chunk_id, request.version, str(error),
                                    await self._bad_blocks_read(request))
            raise self._fault(error, f"read of chunk {request.chunk_id}") from None
        self.bytes_read += len(payload)
        BYTES_READ.inc(len(payload))
        return m.ReadChunkReply(zero_ranges=zero_ranges), payload

    async def _bad_blocks_read(self, request: m.ToChunkserverReadChunk) -> list[tuple[int, int]]:
        """The bad blocks of a read's range, as [first, end) ranges, for the master: it
        keeps a damaged last copy, and says which blocks are lost ([]: could not tell)."""
        first = request.offset_bytes // BLOCK_SIZE_BYTES
        end = -(-(request.offset_bytes + request.length_bytes) // BLOCK_SIZE_BYTES)
        try:
            return block_ranges(await self.disk(request.length_bytes, self.store.verify,
                                                request.chunk_id, first, end))
        except (*REPLICA_FAULTS, InvalidArgument):
            return []

    async def write(self, request: m.ToChunkserverWriteChunk, payload: bytes) -> m.Message:
        applied = False
        ranges = [(extent.offset_bytes, extent.length_bytes) for extent in request.extents]
        async with self.range_locks.hold_many(request.chunk_id, ranges):
            self.fence.admit(request.token, request.chunk_id)
            try:
                if hop_trace.ENABLED:
                    hop_trace.mark("cs.write", len(request.chain_rest))
                # On the wire before this replica's own write and sync, which
                # may run inline and hold the event loop.
                forwarded = await self._forward(request, payload)
                try:
                    if hop_trace.ENABLED:
                        hop_trace.mark("cs.forwarded", len(request.chain_rest))
                    await self._write_local(request, payload)
                    applied = True
                    if hop_trace.ENABLED:
                        hop_trace.mark("cs.written", len(request.chain_rest))
                    if request.flush:
                        await self._sync_local(request.chunk_id)
                        if hop_trace.ENABLED:
                            hop_trace.mark("cs.synced", len(request.chain_rest))
                    if forwarded is not None:
                        await self._reply_of_next(forwarded)
                        if hop_trace.ENABLED:
                            hop_trace.mark("cs.next_replied", len(request.chain_rest))
                finally:
                    if forwarded is not None:
                        forwarded.call.abandon()
            except TokenPredatesRestart:
                raise  # our bytes are a current writer's; it repeats them with a fresh token
            except WRITER_REFUSED as error:
                if applied:
                    reason = f"applied a write the chain refused ({error})"
                    log.warning("chunk %d: %s; reporting this replica damaged",
                                request.chunk_id, reason,
                                extra=about("fenced_write_applied", chunk=request.chunk_id,
                                            version=request.version, error=str(error)))
                    self.report_damaged(request.chunk_id, request.version, reason, [])
                raise
        self.bytes_written += len(payload)
        BYTES_WRITTEN.inc(len(payload))
        return m.EmptyReply()

    async def _write_local(self, request: m.ToChunkserverWriteChunk, payload: bytes) -> None:
        try:
            await self.disk(len(payload), self._apply_extents, request, payload)
        except InvalidArgument:
            raise
        except REPLICA_FAULTS as error:
            raise self._fault(error, f"write to chunk {request.chunk_id}") from None

    def _apply_extents(self, request: m.ToChunkserverWriteChunk, payload: bytes) -> None:
        """Store each extent with its share of the payload, in order (worker-safe).

        The shares are checked against the payload before anything is written;
        an extent the store refuses (a bad zero range) stops the batch there,
        on every replica alike.
        """
        shares = [extent.length_bytes - sum(length for _, length in extent.zero_ranges)
                  for extent in request.extents]
        if min(shares) < 0 or sum(shares) != len(payload):
            raise InvalidArgument(f"payload of {len(payload)} bytes does not match the"
                                  f" extents of the write to chunk {request.chunk_id}")
        view = memoryview(payload)
        used = 0
        for extent, share in zip(request.extents, shares, strict=True):
            self.store.write(request.chunk_id, request.version, extent.offset_bytes,
                             extent.length_bytes, view[used:used + share],
                             extent.zero_ranges)
            used += share

    async def raise_fence(self, request: m.MasterToChunkserverFence) -> m.Message:
        """Refuse older epochs from now on, then wait out the writes already admitted."""
        for chunk_id in request.chunk_ids:
            self.fence.raise_epoch(chunk_id, request.epoch)
        for chunk_id in request.chunk_ids:
            async with self.range_locks.hold(chunk_id, 0, CHUNK_SIZE_BYTES):
                pass
        return m.EmptyReply()

    async def _forward(self, request: m.ToChunkserverWriteChunk | m.ToChunkserverFlushChunk,
                       payload: bytes = b"") -> _Forwarded | None:
        """Send the request on to the next chain member (None: this is the tail)."""
        if not request.chain_rest:
            return None
        member, rest = request.chain_rest[0], request.chain_rest[1:]
        timeout_s = successor_timeout_s(request)
        with _naming(member):
            with trio.move_on_after(timeout_s):
                connection = await self.peers.get(member.host, member.port)
                return _Forwarded(member, await connection.send_request(
                    msgspec.structs.replace(request, chain_rest=rest), payload,
                    timeout_s=timeout_s))
            SILENT_SUCCESSORS.inc()
            raise PeerUnavailable(f"no connection within {timeout_s:.3f} s")

    async def _reply_of_next(self, forwarded: _Forwarded) -> None:
        """Until the rest of the chain has done what ``_forward`` sent it, or its
        deadline (``successor_timeout_s``) has passed: then the member is named."""
        with _naming(forwarded.member):
            try:
                await forwarded.call.reply()
            except PeerUnavailable:
                if trio.current_time() >= forwarded.call.deadline_s:
                    SILENT_SUCCESSORS.inc()
                raise

    async def flush(self, request: m.ToChunkserverFlushChunk) -> m.Message:
        # WRITE, but no epoch: a flush changes no bytes, and a fenced writer's
        # flush only makes durable what its peers have anyway.
        self.fence.capabilities.check(request.capability, request.chunk_id, WRITE)
        await self._flush_chain(request)
        return m.EmptyReply()

    async def _flush_chain(self, request: m.ToChunkserverFlushChunk) -> None:
        if hop_trace.ENABLED:
            hop_trace.mark("cs.flush", len(request.chain_rest))
        forwarded = await self._forward(request)
        try:
            try:
                # Through the limiter, never straight from the loop: a write in the
                # worker thread holds the replica's lock, and waiting for that
                # lock here would stall every request of this chunkserver.
                version = await self.disk(0, self.store.version_of, request.chunk_id)
            except REPLICA_FAULTS as error:
                raise self._fault(error, f"flush of chunk {request.chunk_id}") from None
            if version != request.version:
                raise self._fault(StaleChunkVersion(f"replica is version {version}, flush"
                                                    f" asked for {request.version}"),
                                  f"flush of chunk {request.chunk_id}")
            await self._sync_local(request.chunk_id)
            if hop_trace.ENABLED:
                hop_trace.mark("cs.synced", len(request.chain_rest))
            if forwarded is not None:
                await self._reply_of_next(forwarded)
                if hop_trace.ENABLED:
                    hop_trace.mark("cs.next_replied", len(request.chain_rest))
        finally:
            if forwarded is not None:
                forwarded.call.abandon()

    async def _sync_local(self, chunk_id: int) -> None:
        """This replica's written data and checksums onto stable storage."""
        try:
            await acquire_uncontended_at_once(self._disk)
            started = self.disk_watch.call_started()
            try:
                if not self._sync_placement.inline():
                    await trio.to_thread.run_sync(self.store.flush, chunk_id)
                    return
                self.store.flush(chunk_id)
                self._sync_placement.took(time.perf_counter() - started, chunk_id)
            except OSError as error:
                self.disk_watch.call_failed(error)
                raise
            finally:
                self.disk_watch.call_ended(started)
                self._disk.release()
        except REPLICA_FAULTS as error:
            raise self._fault(error, f"flush of chunk {chunk_id}") from None
