"""A range of one chunk read from the first of its replicas to answer (hedged reads).

Promises:
* ``ReplicaReads.read`` returns only bytes a replica verified against its
  checksums, of the version the location names, or says why none came:
  every replica failed (each failure is added to the caller's list), or the
  capability was refused or had expired (every replica would say so alike).
* Each replica is asked at most once per call, with DATA_RPC_TIMEOUT_S. A
  replica that has not answered within a deadline drawn from its recent
  latency (``protocol.latency``: HEDGE_FLOOR_S to HEDGE_CEILING_S) is not
  waited for alone: the next replica is asked too, the first good answer
  wins and the others are cancelled. So a hung replica, whose TCP stays up
  and silent, costs a read about HEDGE_CEILING_S at most, not
  DATA_RPC_TIMEOUT_S; it is then asked after the others for
  SLOW_PEER_BACKOFF_S.
"""

from __future__ import annotations

import math

import trio
from prometheus_client import Counter

from vmstore.dfs.client.local_replicas import LocalReplicas
from vmstore.dfs.client.zero_ranges import join_zero_ranges
from vmstore.dfs.constants import (
    DATA_RPC_TIMEOUT_S,
    HEDGE_CEILING_S,
    HEDGE_FLOOR_S,
    HEDGE_P99_MULTIPLE,
    SLOW_PEER_BACKOFF_S,
)
from vmstore.dfs.errors import DfsError, ReadRefused, TokenExpired
from vmstore.dfs.metrics import REGISTRY
from vmstore.dfs.protocol import messages as m
from vmstore.dfs.protocol.latency import LatencyTracker
from vmstore.dfs.protocol.rpc import ConnectionPool

HEDGED_READS = Counter(
    "vmstore_client_hedged_reads_total",
    "Reads sent to another replica because the one asked was late (sent), and those"
    " the later replica answered first (won)", ["event"], registry=REGISTRY)
HEDGES_SENT = HEDGED_READS.labels("sent")  # label lookups take a lock: once, not per read
HEDGES_WON = HEDGED_READS.labels("won")


class ReplicaReads:
    def __init__(self, chunkservers: ConnectionPool,
                 local_replicas: LocalReplicas | None) -> None:
        self.chunkservers = chunkservers
        # Whose short-circuit opens stalled lately (asked last); None: none here.
        self.local_replicas = local_replicas
        # Per chunkserver (server id): how fast its reads are answered, for hedging.
        self.latency = LatencyTracker(floor_s=HEDGE_FLOOR_S, ceiling_s=HEDGE_CEILING_S,
                                      multiple=HEDGE_P99_MULTIPLE, off_s=DATA_RPC_TIMEOUT_S)

    async def read(self, location: m.ChunkLocation, inner: int, size: int,
                   errors: list[str]) -> bytes | ReadRefused | TokenExpired | None:
        """The range from the first replica to answer with verified bytes (hedged).

        Replicas are asked one at a time, in the location's order, those held
        slow last (a hedge lost lately, or a short-circuit open timed out).
        One that fails makes the next be asked at once; one that has not
        answered within its deadline (``LatencyTracker``) makes the next be
        asked too, without giving up on it: the first good answer
        wins and the others are cancelled. None: every replica failed (each
        failure is in ``errors``); a refusal of the capability is returned,
        since every replica would refuse it alike.
        """
        replicas = sorted(location.replicas, key=self._held_slow)
        if not replicas:
            errors.append("no current replica is listed")
            return None
        answers, answered = trio.open_memory_channel[tuple[int, bytes | DfsError]](
            len(replicas))
        hedged: set[int] = set()  # the replicas asked because another was late
        async with trio.open_nursery() as race:
            race.start_soon(self._read_one, replicas[0], location, inner, size, answers, 0)
            asked = waiting = 1
            while waiting:
                late = replicas[asked - 1]
                hedge_s = (self.latency.deadline_s(late.server_id)
                           if asked < len(replicas) else math.inf)
                answer: tuple[int, bytes | DfsError] | None = None
                with trio.move_on_after(hedge_s):
                    answer = await answered.receive()
                if answer is None:  # slow path: the last one asked is late, ask the next too
                    self.latency.hold_slow(late.server_id, SLOW_PEER_BACKOFF_S)
                    HEDGES_SENT.inc()
                    hedged.add(asked)
                else:
                    waiting -= 1
                    slot, outcome = answer
                    if isinstance(outcome, bytes):
                        if slot in hedged:
                            HEDGES_WON.inc()
                        race.cancel_scope.cancel()  # the losers, still waiting
                        return outcome
                    errors.append(f"server {replicas[slot].server_id}: {outcome}")
                    if isinstance(outcome, (ReadRefused, TokenExpired)):
                        race.cancel_scope.cancel()
                        return outcome
                    if asked == len(replicas):
                        continue
                race.start_soon(self._read_one, replicas[asked], location, inner, size,
                                answers, asked)
                asked += 1
                waiting += 1
        return None

    def _held_slow(self, replica: m.ReplicaAddress) -> bool:
        """Whether ``replica`` lately made a read wait past its deadline (ask it last)."""
        return self.latency.is_slow(replica.server_id) or (
            self.local_replicas is not None
            and self.local_replicas.stalled(replica.host, replica.port))

    async def _read_one(self, replica: m.ReplicaAddress, location: m.ChunkLocation,
                        inner: int, size: int,
                        answers: trio.MemorySendChannel[tuple[int, bytes | DfsError]],
                        slot: int) -> None:
        """Read the range from one replica; its bytes or its error go to ``answers``."""
        started_s = trio.current_time()
        outcome: bytes | DfsError
        try:
            connection = await self.chunkservers.get(replica.host, replica.port)
            reply, payload = await connection.call(m.ToChunkserverReadChunk(
                chunk_id=location.chunk_id, version=location.version,
                offset_bytes=inner, length_bytes=size,
                capability=location.read_capability),
                timeout_s=DATA_RPC_TIMEOUT_S, reply_type=m.ReadChunkReply)
            outcome = join_zero_ranges(inner, size, reply.zero_ranges, payload)
            self.latency.record(replica.server_id, trio.current_time() - started_s)
        except DfsError as error:
            outcome = error
        answers.send_nowait((slot, outcome))  # room for every replica's answer
