"""Reads and writes of file byte ranges, straight to the chunkservers.

Promises:
* ``write`` returns only when every replica of the chain has the bytes
  (with ``wait=False``, write-behind: once queued, see ``write_behind``;
  a read sees the queued writes it overlaps, a flush waits for all of the
  file's, and a lost write fails the file's later writes and flushes);
  when a chain member fails, the master is asked for a new chain (the
  version moves on, the failed replica becomes stale) and the write is
  repeated, at most WRITE_RETRIES_MAX times. A member that stays silent
  (no reset) fails the write once the chain's silence deadline has passed
  (``_call_head``: one unit per member, the unit drawn from the chain's
  recent write times, WRITE_SILENCE_FLOOR_S to WRITE_SILENCE_CEILING_S), and
  is dropped alike; a chain of one is never dropped from, it is waited for.
  A member without room for the write (NoSpace) is dropped alike while
  others remain; when none remains, or the master has no chunkserver with
  room for a new chunk, the write fails with NoSpace at once.
* ``read`` returns only checksum-verified bytes of the current version,
  trying each replica before asking the master again; holes read as zeros.
  A replica that has not answered within a deadline drawn from its recent
  latency (``protocol.latency``: HEDGE_FLOOR_S to HEDGE_CEILING_S) is not
  waited for alone: the read goes to the next replica too, the first answer
  wins and the others are cancelled (a hedged read, ``replica_reads``). So a
  hung replica, whose TCP stays up and silent, costs a read about
  HEDGE_CEILING_S at most, not DATA_RPC_TIMEOUT_S; it is then tried after
  the others for SLOW_PEER_BACKOFF_S.
* ``flush`` returns when every chunk written since the last flush is on
  stable storage on every replica of its chain.
* Every write and flush carries a WRITE capability ("token") of the file's
  write lease (``leases``), refreshed from the master at half its life, in the
  background: the write goes on with the token it has (until
  CAPABILITY_USE_FRACTION of its life), so a master that is slow or cut off
  for a few seconds stalls no write. A write refused because the lease is gone
  (LeaseLost) is never retried and drops nobody from a chain.
* A read of a replica on this host is served from its file when it can be
  (``local_replicas``: same bytes, same checks), else over the network.
* Every read carries the READ capability the master put in the chunk's
  location; a cached location is asked for again at half its capability's
  life (in the background, as tokens are), together with the next
  LOCATION_PREFETCH_CHUNKS - 1 chunks, so steady reads pay one master round
  trip per prefetch batch per half-life, and wait for none while the
  capability they hold is good.

Chunk locations are cached (bounded, ``chunk_locations``); a cached location
is dropped as soon as a chunkserver says it is stale or refuses its capability.
"""

from __future__ import annotations

import logging

import trio
from prometheus_client import Counter

from vmstore.dfs.client.chunk_locations import ChunkLocations
from vmstore.dfs.client.leases import ClientLeases
from vmstore.dfs.client.local_replicas import LocalReplicas
from vmstore.dfs.client.master_client import MasterClient
from vmstore.dfs.client.replica_reads import HEDGES_SENT as HEDGES_SENT  # tests count them
from vmstore.dfs.client.replica_reads import HEDGES_WON as HEDGES_WON
from vmstore.dfs.client.replica_reads import ReplicaReads
from vmstore.dfs.client.write_behind import ChunkWrites, PendingWrite, covering
from vmstore.dfs.client.zero_ranges import split_zero_blocks
from vmstore.dfs.constants import (
    CHUNK_SIZE_BYTES,
    DATA_REQUEST_BYTES_MAX,
    DATA_RPC_TIMEOUT_S,
    FILE_SIZE_BYTES_MAX,
    FULL_WRITE_BATCHES_MAX,
    READ_RETRIES_MAX,
    RECONNECT_BACKOFF_S_MAX,
    RECONNECT_BACKOFF_S_MIN,
    SYNCHRONOUS_AFTER_FSYNC_S,
    WRITE_BATCHES_MAX,
    WRITE_BEHIND_BYTES_MAX,
    WRITE_RETRIES_MAX,
    WRITE_SILENCE_CEILING_S,
    WRITE_SILENCE_FLOOR_S,
    WRITE_SILENCE_P99_MULTIPLE,
)
from vmstore.dfs.errors import (
    DfsError,
    FileTooLarge,
    InvalidArgument,
    LeaseHeld,
    LeaseLost,
    NoSpace,
    PeerUnavailable,
    ReadRefused,
    ReplicaUnavailable,
    TokenExpired,
    WriteRefused,
    unwrapped_errors,
)
from vmstore.dfs.log_fields import about
from vmstore.dfs.metrics import REGISTRY
from vmstore.dfs.protocol import hop_trace
from vmstore.dfs.protocol import messages as m
from vmstore.dfs.protocol.latency import LatencyTracker
from vmstore.dfs.protocol.limits import ByteBudget, acquire_uncontended_at_once
from vmstore.dfs.protocol.rpc import ConnectionPool
from vmstore.dfs.types import InodeId

log = logging.getLogger(__name__)

SILENT_MEMBERS = Counter(
    "vmstore_client_silent_chain_members_total",
    "Chain writes and flushes that failed because a member stayed silent past its"
    " deadline (that member is then dropped from the chain)", registry=REGISTRY)


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


class ChunkIO:
    def __init__(self, master: MasterClient, chunkservers: ConnectionPool,
                 leases: ClientLeases, senders: trio.Nursery,
                 local_replicas: LocalReplicas | None = None) -> None:
        self.master = master
        self.chunkservers = chunkservers
        self.leases = leases
        self.files = master.files  # per file: how far its writes reach, synchronous spells
        # Short-circuit reads of replicas on this host; None: every read goes over TCP.
        self.local_replicas = local_replicas
        # Chunk locations and capabilities, refreshed in the background in ``senders``.
        self.locations = ChunkLocations(master, leases, senders)
        self.replica_reads = ReplicaReads(chunkservers, local_replicas)
        # Per inode: the chunks written since the last flush (by chunk index).
        self.unflushed: dict[int, dict[int, m.ChunkLocation]] = {}
        # Write-behind: queued writes per (inode, chunk index), each queue sent
        # by a task in ``senders``; a lost write's error, per inode.
        self._senders = senders
        self._chunk_writes: dict[tuple[int, int], ChunkWrites] = {}
        self._write_behind_bytes = ByteBudget(WRITE_BEHIND_BYTES_MAX, "write-behind")
        self._batch_slots = trio.Semaphore(WRITE_BATCHES_MAX)
        self._full_batch_slots = trio.Semaphore(FULL_WRITE_BATCHES_MAX)
        self.write_errors: dict[int, DfsError] = {}
        # Moves on (``replicas_changed``) whenever the replicas' bytes may have
        # changed in a way a reader here must see: local readahead from
        # before is not used.
        self.data_generation = 0
        # Per chain head (server id): how fast its whole chain answers writes and
        # flushes, for the chain's silence unit. off_s 0: no unit, the fixed timeout.
        self.write_latency = LatencyTracker(
            floor_s=WRITE_SILENCE_FLOOR_S, ceiling_s=WRITE_SILENCE_CEILING_S,
            multiple=WRITE_SILENCE_P99_MULTIPLE, off_s=0.0)

    def forget(self, inode: int) -> None:
        """Drop cached locations of a file (it was truncated or removed elsewhere)."""
        self.locations.forget(inode)

    # --- reading ----------------------------------------------------------------
    async def read(self, inode: InodeId, offset: int, length: int) -> bytes:
        """Bytes of [offset, offset+length) as stored; the caller clips to file size."""
        if offset < 0 or length < 0:
            raise InvalidArgument(f"read of {length} bytes at {offset}")
        pieces = chunk_pieces(offset, length)
        if len(pieces) == 1:
            index, inner, size, _ = pieces[0]
            return await self._read_own_writes(inode, index, inner, size)  # fast path
        parts: list[bytes] = [b""] * len(pieces)

        async def one(slot: int, index: int, inner: int, size: int) -> None:
            parts[slot] = await self._read_own_writes(inode, index, inner, size)

        with unwrapped_errors():
            async with trio.open_nursery() as nursery:
                for slot, (index, inner, size, _) in enumerate(pieces):
                    nursery.start_soon(one, slot, index, inner, size)
        return b"".join(parts)

    async def _read_own_writes(self, inode: int, index: int, inner: int, size: int) -> bytes:
        """The replicas' bytes with this client's unacknowledged writes laid over them.

        The writes are taken before the replicas are read: one acknowledged
        meanwhile is on the replica anyway, and laying it over again, in the
        order the writes were made, changes nothing. So a read never waits for
        write-behind, and still sees every write made before it.
        """
        chunk = self._chunk_writes.get((inode, index))
        end = inner + size
        pending = sorted(chunk.unacknowledged(inner, end), key=lambda write: write.sequence
                         ) if chunk is not None else []
        if not pending:
            return await self._read_piece(inode, index, inner, size)
        covered = covering(pending, inner, end)
        content = bytearray(size) if covered else bytearray(
            await self._read_piece(inode, index, inner, size))
        for write in pending:
            start, stop = max(write.inner, inner), min(write.end, end)
            content[start - inner:stop - inner] = write.data[start - write.inner:
                                                             stop - write.inner]
        return bytes(content)

    async def _read_piece(self, inode: int, index: int, inner: int, size: int) -> bytes:
        errors: list[str] = []
        refused_before = False
        for attempt in range(READ_RETRIES_MAX):
            location = await self.locations.for_read(inode, index)
            if location is None:
                return bytes(size)  # a hole
            if self.local_replicas is not None:
                # Fast path: a replica on this host, read from its file. None on any
                # doubt; the network path below then reads it, and reports damage.
                local = await self.local_replicas.read(location, inner, size,
                                                       self.data_generation)
                if local is not None:
                    return local
            outcome = await self.replica_reads.read(location, inner, size, errors)
            if isinstance(outcome, bytes):
                return outcome
            if isinstance(outcome, ReadRefused):
                # Signed with a key since retired (a key rotation)? One fresh
                # capability from the master settles it; a second refusal is final.
                if refused_before:
                    raise outcome
                refused_before = True
            # TokenExpired: every replica would say so, a fresh capability first;
            # None: no replica could answer, ask the master where they are now.
            self.locations.drop_read(inode, index)
            await trio.sleep(min(RECONNECT_BACKOFF_S_MIN * 2**attempt, RECONNECT_BACKOFF_S_MAX))
        raise ReplicaUnavailable(f"chunk {index} of inode {inode}: no replica could be read"
                                 f" ({'; '.join(errors[-4:])})")

    # --- writing ----------------------------------------------------------------
    async def write(self, inode: InodeId, offset: int, data: bytes, *,
                    wait: bool = True) -> None:
        """Queue a write; with ``wait``, return once every replica has it.

        Without ``wait`` (write-behind) the write is sent later, batched with
        others to the same chunk; an error that loses it is raised by the
        file's next write, ``wait_written`` or ``flush``.
        """
        if offset < 0:
            raise InvalidArgument(f"write at negative offset {offset}")
        if offset + len(data) > FILE_SIZE_BYTES_MAX:  # refused now, not lost later
            raise FileTooLarge(f"write of {len(data)} bytes at {offset} passes the largest"
                               f" file ({FILE_SIZE_BYTES_MAX} bytes)")
        self.leases.epoch_for_write(inode)  # a fenced file takes no writes, zeros included
        self._raise_write_error(inode)
        view = memoryview(data)
        queued: list[PendingWrite] = []
        for index, inner, size, at in chunk_pieces(offset, len(data)):
            await self._write_behind_bytes.acquire(size)
            key = (inode, index)
            chunk = self._chunk_writes.get(key)
            if chunk is None:
                chunk = self._chunk_writes[key] = ChunkWrites()
                self._senders.start_soon(self._send_chunk, inode, index, chunk)
            write = PendingWrite(inner, view[at:at + size], awaited=wait)
            chunk.add(write)
            queued.append(write)
        self.files.get(inode).wrote(offset + len(data))
        if wait:
            await self._wait_for(queued)

    async def wait_written(self, inode: int) -> None:
        """Until every write queued for ``inode`` so far is on every replica, or raise
        the error that lost one."""
        writes = [write for (owner, _), chunk in list(self._chunk_writes.items())
                  if owner == inode for write in chunk.unacknowledged()]
        await self._wait_for(writes)
        self._raise_write_error(inode)

    async def wait_all_written(self) -> None:
        """Until every queued write of every file is on its replicas or lost."""
        for chunk in list(self._chunk_writes.values()):
            for write in chunk.unacknowledged():
                await write.done.wait()

    async def _wait_for(self, writes: list[PendingWrite]) -> None:
        for write in writes:
            await write.done.wait()
        lost = next((write.error for write in writes if write.error is not None), None)
        if lost is not None:
            raise type(lost)(lost.message, lost.server_id)

    def _raise_write_error(self, inode: int) -> None:
        lost = self.write_errors.get(inode)
        if lost is not None:
            raise type(lost)(f"an earlier write to this file was lost: {lost.message}",
                             lost.server_id)

    def replicas_changed(self) -> None:
        """A write of ours may have reached a replica, a truncate changed one, or a
        file opened (close-to-open: another host's writes before it must show)."""
        self.data_generation += 1

    def forget_write_error(self, inode: int) -> None:
        """The file's last handle closed: its next opener starts without the old error."""
        self.write_errors.pop(inode, None)

    async def _send_chunk(self, inode: int, index: int, chunk: ChunkWrites) -> None:
        """Send the chunk's queue in batches until it is empty, then leave."""
        while True:
            async with trio.open_nursery() as batches:
                while not chunk.idle:
                    # Only this task takes from the queue: a batch taken after the
                    # wait for a slot is at least as full as the queue is now.
                    slots = (self._full_batch_slots
                             if chunk.queued_bytes >= DATA_REQUEST_BYTES_MAX // 2
                             else self._batch_slots)
                    synchronous = self._is_synchronous(inode)
                    if synchronous:
                        # Its slot at once, without a scheduler round: a synchronous
                        # batch goes alone, and its send is on an fsync's path.
                        await acquire_uncontended_at_once(slots)
                    else:
                        # The round (trio's acquire checkpoints) lets writes queued
                        # meanwhile join the batch: fewer, fuller batches.
                        await slots.acquire()
                        synchronous = self._is_synchronous(inode)  # after the wait
                    batch = chunk.next_batch(synchronous)
                    if not batch:
                        slots.release()
                        await chunk.wait_changed()
                        continue
                    if synchronous:
                        # A synchronous batch goes alone (next_batch): nothing of this
                        # chunk could be sent beside it, so it is sent from this task,
                        # not one of its own (a wake-up less per write+fsync).
                        await self._send_batch(inode, index, chunk, batch, True,
                                               chunk.batches_sent, slots)
                        continue
                    batches.start_soon(self._send_batch, inode, index, chunk, batch,
                                       False, chunk.batches_sent, slots)
            if chunk.idle:  # no checkpoint between this test and the removal
                del self._chunk_writes[(inode, index)]
                return

    def _is_synchronous(self, inode: int) -> bool:
        """Whether the file was fsynced lately: then its writes go durable at once."""
        state = self.files.find(inode)
        return state is not None and trio.current_time() < state.synchronous_until_s

    async def _send_batch(self, inode: int, index: int, chunk: ChunkWrites,
                          batch: list[PendingWrite], flush: bool, sent_as: int,
                          slots: trio.Semaphore) -> None:
        """Send one batch (``sent_as``: the chunk's batch count once it was taken;
        ``slots``: where its slot is to go back)."""
        lost: DfsError | None = None
        try:
            location = await self._write_batch(inode, index, batch, flush)
            if location is not None and not flush:
                self.unflushed.setdefault(inode, {})[index] = location
            elif location is not None and chunk.batches_sent == sent_as:
                # Durable on every replica, and so is every write acknowledged before
                # it (a synchronous batch goes alone). A batch sent after it may not
                # be: then the chunk stays to be flushed.
                self.unflushed.get(inode, {}).pop(index, None)
        except DfsError as error:
            lost = error
            if not all(write.awaited for write in batch):
                # Nobody waits to hear it: the file's next write, flush or fsync will.
                self.write_errors.setdefault(inode, error)
                log.warning("write-behind to chunk %d of inode %d lost: %s", index, inode,
                            error, extra=about("write_behind_lost", inode=inode, index=index,
                                               error=str(error)))
        finally:
            self.replicas_changed()  # before the writes count as done
            chunk.finished(batch, lost)
            slots.release()
            self._write_behind_bytes.release(sum(len(write.data) for write in batch))

    async def _write_batch(self, inode: int, index: int, batch: list[PendingWrite],
                           flush: bool) -> m.ChunkLocation | None:
        """Send the batch down the chunk's chain; where it went (None: nowhere needed)."""
        extents, payload = _extents_of(batch)
        self.leases.epoch_for_write(inode)  # fenced since it was queued: lost
        if not payload and self.locations.cached_for_write(inode, index) is None:
            if await self.locations.for_read(inode, index) is None:
                return None  # zeros into a hole: nothing to store, nothing to allocate
        last_error: DfsError | None = None
        refused_before = False
        for _attempt in range(WRITE_RETRIES_MAX):
            target = await self.locations.for_write(inode, index)
            location = target.location
            head, rest = location.replicas[0], location.replicas[1:]
            try:
                unit_s = self._silence_unit_s(location)
                await self._call_head(location, m.ToChunkserverWriteChunk(
                    chunk_id=location.chunk_id, version=location.version, extents=extents,
                    chain_rest=rest, token=target.token, flush=flush, silence_s=unit_s),
                    payload, unit_s)
                return location
            except WriteRefused as error:
                # A key rotation may have retired the key that signed it: one fresh
                # capability. The master grants it only to the lease holder, so a
                # fenced writer gets LeaseLost here, never a way back in.
                if refused_before:
                    raise
                refused_before = True
                last_error = error
                self.locations.drop_write(inode, index)
            except (InvalidArgument, LeaseHeld):
                raise
            except LeaseLost as error:
                self.leases.lost(inode, error.message)
                raise
            except TokenExpired as error:
                last_error = error
                self.locations.drop_write(inode, index)  # a fresh token next time
            except DfsError as error:
                _raise_if_nowhere_else(error, location)
                last_error = error
                failed = error.server_id or head.server_id
                current = self.locations.cached_for_write(inode, index)
                if current is not None and current.location.version > location.version:
                    continue  # another batch already had the chain replaced: use it
                log.info("write to chunk %d failed at server %d (%s); asking for a new chain",
                         location.chunk_id, failed, error,
                         extra=about("chain_write_failed", chunk=location.chunk_id,
                                     server=failed, error=str(error)))
                await self._replace_chain(inode, location, failed)
        raise ReplicaUnavailable(f"write to chunk {index} of inode {inode} failed"
                                 f" {WRITE_RETRIES_MAX} times; last: {last_error}")

    def _silence_unit_s(self, location: m.ChunkLocation) -> float:
        """The chain's silence unit (``m.SilenceS``): 0 for a chain of one, which
        waits DATA_RPC_TIMEOUT_S, since nobody is dropped below one replica."""
        members = len(location.replicas)
        if members < 2:
            return 0.0
        unit_s = self.write_latency.deadline_s(location.replicas[0].server_id)
        return min(unit_s, DATA_RPC_TIMEOUT_S / members)

    async def _call_head(self, location: m.ChunkLocation,
                         request: m.ToChunkserverWriteChunk | m.ToChunkserverFlushChunk,
                         payload: bytes | memoryview, unit_s: float) -> None:
        """Send a write or flush to the chain's head and wait for the whole chain.

        With a silence unit, the head is waited for one unit per member (each
        member waits one unit less for the rest of the chain, and names a
        silent successor); past that the head itself is silent: PeerUnavailable,
        naming nobody, so the caller blames the head.
        """
        head = location.replicas[0]
        timeout_s = unit_s * len(location.replicas) if unit_s else DATA_RPC_TIMEOUT_S
        started_s = trio.current_time()
        try:
            with trio.move_on_after(timeout_s):
                connection = await self.chunkservers.get(head.host, head.port)
                if hop_trace.ENABLED:
                    hop_trace.mark("io.send", type(request).__name__)
                await connection.call(request, payload, timeout_s=timeout_s)
                if hop_trace.ENABLED:
                    hop_trace.mark("io.reply", type(request).__name__)
                self.write_latency.record(head.server_id, trio.current_time() - started_s)
                return
            raise PeerUnavailable(f"chunkserver {head.server_id} ({head.host}:{head.port})"
                                  f" did not answer within {timeout_s:.3f} s")
        except (PeerUnavailable, ReplicaUnavailable):
            if unit_s and trio.current_time() - started_s >= unit_s:
                SILENT_MEMBERS.inc()  # a deadline passed: silence, not a reset
            raise

    async def _replace_chain(self, inode: int, location: m.ChunkLocation, failed: int
                             ) -> m.ChunkLocation:
        target = await self.locations.ask_for_write(m.ClientToMasterReportBadChain(
            session_id=0, op_id=0, inode=inode, index=location.index,
            chunk_id=location.chunk_id, version=location.version, failed_server_ids=[failed],
            lease_epoch=self.leases.epoch_for_write(inode)))
        return target.location

    # --- flushing ----------------------------------------------------------------
    async def flush(self, inode: InodeId) -> None:
        """Make this file's acknowledged writes durable on every replica.

        Writes still queued (write-behind) are waited for first; one that was
        lost makes the flush fail, and every later one until the file closes.
        """
        self.leases.epoch_for_write(inode)  # after a fence, "durable" would be a lie
        self.files.get(inode).synchronous_until_s = (trio.current_time()
                                                     + SYNCHRONOUS_AFTER_FSYNC_S)
        await self.wait_written(inode)
        unflushed = self.unflushed.pop(inode, None)
        if unflushed is None:
            return
        try:
            with unwrapped_errors():
                async with trio.open_nursery() as nursery:
                    for location in unflushed.values():
                        nursery.start_soon(self._flush_chunk, inode, location)
        except BaseException:
            current = self.unflushed.setdefault(inode, {})
            for index, location in unflushed.items():
                current.setdefault(index, location)
            raise

    async def _flush_chunk(self, inode: int, location: m.ChunkLocation) -> None:
        last_error: DfsError | None = None
        refused_before = False
        for _attempt in range(WRITE_RETRIES_MAX):
            head, rest = location.replicas[0], location.replicas[1:]
            try:
                token = (await self.locations.for_write(inode, location.index)).token
                unit_s = self._silence_unit_s(location)
                await self._call_head(location, m.ToChunkserverFlushChunk(
                    chunk_id=location.chunk_id, version=location.version, chain_rest=rest,
                    capability=token, silence_s=unit_s), b"", unit_s)
                return
            except WriteRefused as error:
                if refused_before:  # once: see write() on key rotation
                    raise
                refused_before = True
                last_error = error
                self.locations.drop_write(inode, location.index)
            except (InvalidArgument, LeaseHeld, LeaseLost):
                raise
            except TokenExpired as error:
                last_error = error
                self.locations.drop_write(inode, location.index)  # a fresh one next
            except DfsError as error:
                _raise_if_nowhere_else(error, location)
                # The survivors acknowledged every write, so flushing them is enough.
                last_error = error
                location = await self._replace_chain(inode, location,
                                                     error.server_id or head.server_id)
        raise ReplicaUnavailable(f"flush of chunk {location.chunk_id} failed: {last_error}")


def _raise_if_nowhere_else(error: DfsError, location: m.ChunkLocation) -> None:
    """A chain member without room (NoSpace) leaves the chain like a failed one, and
    the write goes on on the others; but the last one stays, and the write fails
    with NoSpace (ENOSPC to a writer), at once: no other replica has the chunk."""
    if isinstance(error, NoSpace) and (len(location.replicas) < 2 or not error.server_id):
        raise error


def _extents_of(batch: list[PendingWrite]) -> tuple[list[m.WriteExtent], bytes | memoryview]:
    """The batch as extents and their payload, in order.

    Writes that follow each other without a gap go as one extent (a
    sequential stream of small writes costs each replica one pwrite and one
    checksum update per batch, not per write); whole zero blocks are left out
    of the payload.
    """
    extents: list[m.WriteExtent] = []
    parts: list[bytes | memoryview] = []
    run_start = run_end = -1
    run_zero_ranges: list[tuple[int, int]] = []
    for write in batch:
        zero_ranges, part = split_zero_blocks(write.inner, write.data)
        if write.inner != run_end:  # a gap (or the first write): a new extent
            if run_end >= 0:
                extents.append(m.WriteExtent(offset_bytes=run_start,
                                             length_bytes=run_end - run_start,
                                             zero_ranges=run_zero_ranges))
            run_start, run_zero_ranges = write.inner, []
        run_zero_ranges.extend(zero_ranges)
        run_end = write.end
        parts.append(part)
    if run_end >= 0:
        extents.append(m.WriteExtent(offset_bytes=run_start, length_bytes=run_end - run_start,
                                     zero_ranges=run_zero_ranges))
    return extents, parts[0] if len(parts) == 1 else b"".join(parts)
