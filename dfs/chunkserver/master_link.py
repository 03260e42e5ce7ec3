"""The chunkserver's link to the master: register, heartbeat, obey commands.

Promise: while the master is reachable, it knows this chunkserver's
replicas (a full report at every (re)registration) and its free space
(a heartbeat every HEARTBEAT_INTERVAL_S). When the link breaks, the
chunkserver keeps serving reads and writes of current replicas and
reconnects with bounded backoff; the master decides what is current.

Only a master of this chunkserver's cluster, with metadata no older than it has seen,
decides anything here (``dfs.protocol.cluster_identity``): another is refused before a
replica is touched, logged as an ERROR, and asked again every MASTER_REFUSED_RETRY_S.

Fencing across masters (issue 15): the generation is the master epoch. It is checked
once per link, at registration, and then against every command on the link: a link
belongs to one master start, whose generation never changes, so a field on each
command would carry nothing more; but this chunkserver may meet a newer generation
while the link is up (a client's capability from a new HA leader, checked by
``VerifiedCapabilities``, which keeps the newest generation seen). From then on the
link's master is deposed: its commands are refused (StaleMaster, naming both
generations), the link is closed, and a registration below that generation is refused.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import trio
from prometheus_client import Gauge

from vmstore.dfs.chunkserver.chunk_store import ChunkStore
from vmstore.dfs.chunkserver.data_service import DataService
from vmstore.dfs.chunkserver.identity import ServerIdentity, store_accepted_master
from vmstore.dfs.chunkserver.replicator import Replicator
from vmstore.dfs.constants import (
    DAMAGE_REPORTS_QUEUED_MAX,
    HA_HEARTBEAT_TIMEOUT_S,
    HEARTBEAT_INTERVAL_S,
    MASTER_REFUSED_RETRY_S,
    RECONNECT_BACKOFF_S_MAX,
    RECONNECT_BACKOFF_S_MIN,
    RPC_TIMEOUT_S,
)
from vmstore.dfs.errors import (
    ChunkNotFound,
    ClusterMismatch,
    DfsError,
    InvalidArgument,
    PeerUnavailable,
    ProtocolError,
    ReplicaUnavailable,
    StaleChunkVersion,
    StaleMaster,
    unwrapped_errors,
)
from vmstore.dfs.log_fields import about
from vmstore.dfs.metrics import REGISTRY
from vmstore.dfs.protocol import messages as m
from vmstore.dfs.protocol.auth import KeyMaterial
from vmstore.dfs.protocol.cluster_identity import ClusterIdentity, refusal
from vmstore.dfs.protocol.replica_format import ReplicaOwner
from vmstore.dfs.protocol.rpc import Connection, open_connection

log = logging.getLogger(__name__)
Damage = tuple[int, int, str, list[tuple[int, int]]]  # chunk id, version, reason, bad blocks


CHUNKS = Gauge("vmstore_chunkserver_chunks", "Replicas stored here", registry=REGISTRY)
DISK_BYTES = Gauge("vmstore_chunkserver_disk_bytes", "The data directory's file system:"
                   " total, used, free (may still be written) and reserved (of free, what"
                   " the replicas here may still take)", ["kind"], registry=REGISTRY)
LINKED = Gauge("vmstore_chunkserver_master_connected", "1 while registered with the master",
               registry=REGISTRY)


@dataclass(frozen=True)
class LinkSettings:
    master_host: str
    master_port: int
    key: KeyMaterial
    server_uuid: str
    other_masters: tuple[tuple[str, int], ...]  # the rest of an HA group's masters
    advertise_host: str  # the address clients and peers reach us at
    data_port: int
    host_label: str
    data_dir: Path  # where the accepted master identity is kept


class DamageReports:
    """Bad replicas to tell the master about, queued for the master link.

    Built before the data service and the link, which both need it: the data
    service serves (and its port is what the link registers) before the link exists.
    """

    def __init__(self) -> None:
        self._in, self.queued = trio.open_memory_channel[Damage](DAMAGE_REPORTS_QUEUED_MAX)

    def report(self, chunk_id: int, version: int, reason: str,
               bad_blocks: list[tuple[int, int]]) -> None:
        """Queue a report of a bad replica, with its bad [first, end) block ranges ([]: not
        known which); dropped if the queue is full (scrub finds it again)."""
        try:
            self._in.send_nowait((chunk_id, version, reason, bad_blocks))
        except trio.WouldBlock:
            log.warning("damage report queue full; chunk %d will be reported by scrub",
                        chunk_id, extra=about("damage_report_dropped", chunk=chunk_id))


class MasterLink:
    def __init__(self, settings: LinkSettings, store: ChunkStore, data: DataService,
                 accepted: ClusterIdentity | None, identity: ServerIdentity,
                 damage_reports: DamageReports, replicator: Replicator) -> None:
        self.settings = settings
        self.accepted = accepted  # the newest master identity accepted; None: never
        self.refused_reason = ""  # why the master was last refused; "" while accepted
        self.store = store
        self.data = data
        self.disk = data.disk  # store calls go through its one thread
        self.identity = identity
        self.registrations = 0
        self.chunk_count = 0  # as of the last registration, for the master's status
        self.replicator = replicator
        self.damage_reports = damage_reports
        self._connection: Connection | None = None  # while registered
        self._link_generation = 0  # of the master the current link registered with
        self.capabilities = data.fence.capabilities  # owns the newest generation seen
        if accepted is not None:
            self.capabilities.see_generation(accepted.generation)
        self._owners_to_record: list[m.ChunkOwner] = []  # from the last registration

    async def run(self, *, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        """Stay registered forever; ``started`` after the first registration."""
        backoff_s = RECONNECT_BACKOFF_S_MIN
        # An HA group's masters: after a failure, the next one (only the leader
        # listens; a deposed one is refused for its older generation).
        masters = [(self.settings.master_host, self.settings.master_port),
                   *self.settings.other_masters]
        attempt = 0
        while True:
            host, port = masters[attempt % len(masters)]
            attempt += 1
            address = f"{host}:{port}"
            try:
                async with open_connection(host, port, self.settings.key, "chunkserver",
                                           identity=self.settings.server_uuid,
                                           handler=self.handle) as connection:
                    await self._register(connection)
                    if self.registrations == 1:
                        task_status.started()
                    backoff_s = RECONNECT_BACKOFF_S_MIN
                    self._connection = connection
                    try:
                        with unwrapped_errors():
                            async with trio.open_nursery() as nursery:
                                nursery.start_soon(self._send_damage_reports, connection)
                                nursery.start_soon(self._report_failing_disk, connection)
                                nursery.start_soon(self._record_owners)
                                await self._heartbeat_until_closed(connection)
                                nursery.cancel_scope.cancel()
                    finally:
                        self._connection = None
            except ClusterMismatch as error:
                self.refused_reason = error.message
                retry_s = MASTER_REFUSED_RETRY_S if len(masters) == 1 else backoff_s
                log.error("master %s refused, keeping every replica here: %s; asking again in"
                          " %.1f s", address, error.message, retry_s,
                          extra=about("master_refused", peer=address, error=error.message))
                await trio.sleep(retry_s)
                backoff_s = min(backoff_s * 2, RECONNECT_BACKOFF_S_MAX)
                continue
            except DfsError as error:
                log.info("link to master %s down: %s; retrying in %.2f s", address, error,
                         backoff_s, extra=about("master_link_down", peer=address,
                                                error=str(error)))
            await trio.sleep(backoff_s)
            backoff_s = min(backoff_s * 2, RECONNECT_BACKOFF_S_MAX)

    async def safe_chunks(self, chunk_ids: list[int]) -> list[int]:
        """Which of these chunks the master says need no quarantined replica here;
        PeerUnavailable while not registered."""
        connection = self._connection
        if connection is None:
            raise PeerUnavailable("not registered with a master")
        reply, _ = await connection.call(m.ChunkserverToMasterQuarantineCheck(
            chunk_ids=chunk_ids), timeout_s=RPC_TIMEOUT_S, reply_type=m.QuarantineCheckReply)
        return list(reply.safe)

    async def _send_damage_reports(self, connection: Connection) -> None:
        async for chunk_id, version, reason, bad_blocks in self.damage_reports.queued:
            try:
                await connection.call(m.ChunkserverToMasterReportDamaged(
                    server_id=self.identity.server_id, chunk_id=chunk_id, version=version,
                    reason=reason, bad_blocks=bad_blocks), timeout_s=RPC_TIMEOUT_S)
            except DfsError:
                # again on the next link
                self.damage_reports.report(chunk_id, version, reason, bad_blocks)
                raise

    async def _report_failing_disk(self, connection: Connection) -> None:
        """Tell the master once the disk is marked failing (at once, and again on every
        new link): a stuck disk must not look healthy while heartbeats go on."""
        watch = self.data.disk_watch
        await watch.failed.wait()
        await connection.call(m.ChunkserverToMasterDiskFailing(
            server_id=self.identity.server_id, reason=watch.failing_reason),
            timeout_s=RPC_TIMEOUT_S)

    async def _register(self, connection: Connection) -> None:
        replicas = await self.disk(2**30, self.store.list_replicas)
        chunks = [(chunk_id, version) for chunk_id, version, _ in replicas]
        space = self.store.space_report()
        accepted = self.accepted or ClusterIdentity("", 0, "")
        reply, _ = await connection.call(m.ChunkserverToMasterRegister(
            server_uuid=self.settings.server_uuid, host=self.settings.advertise_host,
            port=self.settings.data_port, host_label=self.settings.host_label, pid=os.getpid(),
            bytes_total=space.total_bytes, bytes_used=space.used_bytes,
            bytes_free=space.free_bytes, bytes_reserved=space.reserved_bytes,
            chunks=[m.ChunkReport(chunk_id=c, version=v) for c, v in chunks],
            cluster_id=accepted.cluster_id, generation=accepted.generation,
            incarnation=accepted.incarnation,
            unowned_chunks=[chunk_id for chunk_id, _, owner in replicas if owner is None],
        ), timeout_s=RPC_TIMEOUT_S * 4, reply_type=m.MasterToChunkserverRegistered)
        await self._accept_master(ClusterIdentity(reply.cluster_id, reply.generation,
                                                  reply.incarnation))
        self.identity.server_id = reply.server_id
        self.chunk_count = len(chunks)  # each stale one is subtracted as it is deleted
        self.registrations += 1
        self._owners_to_record = list(reply.owners)
        for stale in reply.stale_chunks:
            try:
                await self._delete(stale.chunk_id, stale.version, "stale")
            except OSError as error:  # still stale at the next registration
                log.warning("could not delete stale chunk %d: %s", stale.chunk_id, error,
                            extra=about("stale_delete_failed", chunk=stale.chunk_id,
                                        error=str(error)))
        log.info("registered with master as chunkserver %d (%d replicas, %d stale deleted)",
                 self.identity.server_id, len(chunks), len(reply.stale_chunks))

    async def _record_owners(self) -> None:
        """Write the owner records the master sent (replicas from before records get
        theirs, for `vmstore recover`), one replica at a time, in the background: not
        urgent, and each costs a header write and an fdatasync."""
        owners, self._owners_to_record = self._owners_to_record, []
        recorded = 0
        for owner in owners:
            try:
                await self.disk(0, self.store.set_owner, owner.chunk_id, owner.version,
                                ReplicaOwner(owner.inode, owner.index))
                recorded += 1
            except (ChunkNotFound, StaleChunkVersion, InvalidArgument):
                continue  # gone or changed since the report; its next one asks again
            except OSError as error:
                log.warning("could not record the owner of chunk %d: %s", owner.chunk_id,
                            error, extra=about("owner_record_failed", chunk=owner.chunk_id,
                                               error=str(error)))
        if owners:
            log.info("recorded the file and index of %d replicas (of %d named)", recorded,
                     len(owners), extra=about("owner_records_written", count=recorded))

    async def _accept_master(self, master: ClusterIdentity) -> None:
        """Raise ClusterMismatch for a master this chunkserver must refuse (the master
        checks too, but it is the chunkserver's replicas at stake); else keep its identity
        on disk before obeying it."""
        reason = refusal(self.accepted, master) or self._deposed(master.generation)
        if reason:
            raise ClusterMismatch(reason)
        self.refused_reason = ""
        self._link_generation = master.generation
        self.capabilities.see_generation(master.generation)
        if master.cluster_id and master != self.accepted:  # "": a master before cluster ids
            if self.accepted is None:
                log.info("joined %s", master.describe(),
                         extra=about("cluster_joined", cluster=master.cluster_id))
            await self.disk(0, store_accepted_master, self.settings.data_dir, master)
            self.accepted = master

    def _deposed(self, generation: int) -> str:
        """Why a master of ``generation`` is deposed: this chunkserver has seen a newer
        one since (in a capability); "" if it has not."""
        newest = self.capabilities.newest_generation
        if generation >= newest:
            return ""
        return (f"the master's metadata is generation {generation}, older than generation"
                f" {newest} this chunkserver has seen since: it is a deposed master")

    def _heartbeat_timeout_s(self) -> float:
        """An HA group's leader may be cut off with no reset: the link leaves it for the
        next master after HA_HEARTBEAT_TIMEOUT_S, or the new leader would meet this
        chunkserver only once RPC_TIMEOUT_S had passed (26 s measured)."""
        return HA_HEARTBEAT_TIMEOUT_S if self.settings.other_masters else RPC_TIMEOUT_S

    async def _heartbeat_until_closed(self, connection: Connection) -> None:
        try:
            while not connection.closed.is_set():
                deposed = self._deposed(self._link_generation)
                if deposed:  # leave it: run() goes on to the current master
                    raise ClusterMismatch(deposed)
                space = self.store.space_report()
                await connection.call(m.ChunkserverToMasterHeartbeat(
                    server_id=self.identity.server_id, bytes_total=space.total_bytes,
                    bytes_used=space.used_bytes, bytes_free=space.free_bytes,
                    bytes_reserved=space.reserved_bytes,
                    chunk_count=self.chunk_count), timeout_s=self._heartbeat_timeout_s())
                LINKED.set(1)
                CHUNKS.set(self.chunk_count)
                DISK_BYTES.labels("total").set(space.total_bytes)
                DISK_BYTES.labels("used").set(space.used_bytes)
                DISK_BYTES.labels("free").set(space.free_bytes)
                DISK_BYTES.labels("reserved").set(space.reserved_bytes)
                with trio.move_on_after(HEARTBEAT_INTERVAL_S):
                    await connection.closed.wait()
        finally:
            LINKED.set(0)
        raise PeerUnavailable(f"master closed the link: {connection.close_reason}")

    async def handle(self, request: m.Request, payload: bytes) -> tuple[m.Message, bytes]:
        """Obey a master command. A failure of this chunkserver's disk fails the command
        (ReplicaUnavailable, naming it), never the process: the master works around it.
        A master deposed since the link registered is refused (StaleMaster); the
        heartbeat loop leaves its link."""
        deposed = self._deposed(self._link_generation)
        if deposed:
            raise StaleMaster(f"{type(request).__name__} refused: {deposed}")
        try:
            await self._obey(request)
        except OSError as error:
            raise ReplicaUnavailable(f"{type(request).__name__}: this chunkserver's disk"
                                     f" failed: {error}") from None
        return m.EmptyReply(), b""

    async def _obey(self, request: m.Request) -> None:
        if isinstance(request, m.MasterToChunkserverCreateChunk):
            owner = ReplicaOwner(request.inode, request.index) if request.inode else None
            await self.disk(0, self.store.create, request.chunk_id, request.version, owner)
            self.chunk_count += 1
        elif isinstance(request, m.MasterToChunkserverSetVersion):
            await self.disk(0, self._set_version, request)
        elif isinstance(request, m.MasterToChunkserverRevertVersion):
            await self.disk(0, self._revert_version, request)
        elif isinstance(request, m.MasterToChunkserverDeleteChunk):
            await self._delete(request.chunk_id, request.version, "deleted by the master")
        elif isinstance(request, m.MasterToChunkserverTruncateChunk):
            await self.disk(0, self._truncate, request)
        elif isinstance(request, m.MasterToChunkserverFence):
            await self.data.raise_fence(request)
        elif isinstance(request, m.MasterToChunkserverPing):
            pass  # this link is alive: another registration under our uuid is refused
        elif isinstance(request, m.MasterToChunkserverReplicate):
            had_replica = await self.disk(0, self._has_replica, request.chunk_id)
            await self.replicator.replicate(request)
            self.chunk_count += 0 if had_replica else 1
        else:
            raise ProtocolError(f"{type(request).__name__} is not a master command")

    def _has_replica(self, chunk_id: int) -> bool:
        try:
            self.store.version_of(chunk_id)
        except ChunkNotFound:
            return False
        return True

    def _set_version(self, request: m.MasterToChunkserverSetVersion) -> None:
        if self.store.version_of(request.chunk_id) == request.new_version:
            return  # a retried command that already took effect
        self.store.set_version(request.chunk_id, request.old_version, request.new_version)

    def _revert_version(self, request: m.MasterToChunkserverRevertVersion) -> None:
        if self.store.version_of(request.chunk_id) == request.old_version:
            return  # a retried command that already took effect
        self.store.revert_version(request.chunk_id, request.old_version, request.new_version)

    def _truncate(self, request: m.MasterToChunkserverTruncateChunk) -> None:
        if self.store.version_of(request.chunk_id) == request.new_version:
            return
        self.store.truncate_and_set_version(request.chunk_id, request.old_version,
                                            request.new_version, request.length_bytes)

    async def _delete(self, chunk_id: int, version: int, why: str) -> None:
        """Move the replica into quarantine (``dfs.chunkserver.quarantine``), never unlink it:
        a master wrong about it (a forgery, lost metadata, a bug) costs nothing for a while."""
        def delete() -> None:
            try:
                current = self.store.version_of(chunk_id)
            except ChunkNotFound:
                return  # already gone: deletes are idempotent
            if version == 0 or current <= version:
                kept = self.store.delete(chunk_id)
                self.data.fence.forget(chunk_id)
                self.chunk_count -= 1
                log.info("chunk %d version %d %s: quarantined as %s", chunk_id, current, why,
                         kept.name, extra=about("replica_quarantined", chunk=chunk_id,
                                                version=current))

        await self.disk(0, delete)
