"""Serves chunkservers: registration with a full chunk report, heartbeats.

Like MooseFS's matocsserv. The connection a chunkserver opens is also the
one the master sends its commands on (create, set version, delete,
truncate), so a chunkserver needs no listening port for the master.

Promise: a chunkserver speaks only for itself. Its connection proved one uuid
(``dfs.protocol.auth``); it registers only as that uuid, and only while no other
connection registered under it still answers a ping (REGISTERED_LINK_PING_TIMEOUT_S);
every later message (heartbeat, damage report, disk report, quarantine check) must
name the server id registered on that same connection. Anything else is refused
(AccessDenied or ProtocolError), logged, and changes nothing.
"""

from __future__ import annotations

import logging
import time
from typing import Any

import trio

from vmstore.dfs.constants import (
    HEARTBEAT_INTERVAL_S,
    QUARANTINE_CHECK_CHUNKS_MAX,
    REGISTERED_LINK_PING_TIMEOUT_S,
    REGISTRATION_OWNERS_MAX,
)
from vmstore.dfs.errors import AccessDenied, ClusterMismatch, DfsError, ProtocolError
from vmstore.dfs.log_fields import about
from vmstore.dfs.master.chunk_manager import ChunkManager
from vmstore.dfs.master.committer import GroupCommitter
from vmstore.dfs.master.keyed_lock import KeyedLock
from vmstore.dfs.master.registry import ChunkserverEntry, Registry
from vmstore.dfs.metadata.chunks import ChunkTable
from vmstore.dfs.protocol import messages as m
from vmstore.dfs.protocol.cluster_identity import ClusterIdentity, refusal
from vmstore.dfs.protocol.rpc import Connection, Handler
from vmstore.dfs.types import ChunkId, ChunkVersion, ServerId

log = logging.getLogger(__name__)


class ChunkserverService:
    def __init__(self, committer: GroupCommitter, writer_chunks: ChunkTable,
                 chunk_manager: ChunkManager, registry: Registry,
                 identity: ClusterIdentity) -> None:
        self.identity = identity  # this master start's
        self.committer = committer
        self.writer_chunks = writer_chunks
        self.chunk_manager = chunk_manager
        self.registry = registry
        # uuid -> the connection it last registered on: the one that holds the identity
        # while it answers. One per chunkserver that ever registered since this start.
        self._links: dict[str, Connection] = {}
        self._registering = KeyedLock()  # per uuid: one registration at a time

    def handler_for(self, connection: Connection) -> Handler:
        async def handle(request: m.Request, payload: bytes) -> tuple[m.Message, bytes]:
            if isinstance(request, m.ChunkserverToMasterRegister):
                return await self.register(connection, request), b""
            if isinstance(request, m.ChunkserverToMasterHeartbeat):
                return self.heartbeat(connection, request), b""
            if isinstance(request, m.ChunkserverToMasterReportDamaged):
                await self.report_damaged(connection, request)
                return m.EmptyReply(), b""
            if isinstance(request, m.ChunkserverToMasterQuarantineCheck):
                return self.quarantine_check(connection, request), b""
            if isinstance(request, m.ChunkserverToMasterDiskFailing):
                return self.disk_failing(connection, request), b""
            raise ProtocolError(f"{type(request).__name__} is not a chunkserver request")

        return handle

    async def register(self, connection: Connection,
                       request: m.ChunkserverToMasterRegister) -> m.Message:
        self._refuse_another_identity(connection, request)
        self._refuse_a_mismatch(request)
        async with self._registering.hold(request.server_uuid):
            await self._refuse_while_held(connection, request)
            reply = await self._admit(connection, request)
            self._links[request.server_uuid] = connection
            return reply

    async def _admit(self, connection: Connection,
                     request: m.ChunkserverToMasterRegister) -> m.Message:
        def change() -> tuple[ServerId, list[m.ChunkReport], bool, list[m.ChunkOwner]]:
            server_id = self.writer_chunks.register_server(
                request.server_uuid, request.host, request.port, request.host_label)
            stale = self.chunk_manager.reconcile_report(server_id, request.chunks)
            owners = self._owners(server_id, request)
            return server_id, stale, self.writer_chunks.is_draining(server_id), owners

        server_id, stale, draining, owners = await self.committer.run(change)
        previous = self.registry.chunkservers.get(server_id)
        old_link = None if previous is None else previous.connection
        if old_link is not None and old_link is not connection:
            old_link.close()  # the same server reconnected: the old link is dead
        entry = ChunkserverEntry(
            server_id, request.host, request.port, request.host_label, connection,
            pid=request.pid, bytes_total=request.bytes_total, bytes_used=request.bytes_used,
            bytes_free_reported=request.bytes_free, bytes_reserved=request.bytes_reserved,
            chunk_count=len(request.chunks) - len(stale), last_heartbeat_s=trio.current_time(),
            draining=draining)
        self.registry.chunkservers[server_id] = entry
        self.registry.refused.pop(request.server_uuid, None)
        log.info("chunkserver %d (%s:%d, host %s) registered with %d chunks, %d stale",
                 server_id, request.host, request.port, request.host_label,
                 len(request.chunks), len(stale),
                 extra=about("chunkserver_registered", server=server_id,
                             peer=f"{request.host}:{request.port}", host=request.host_label))
        if stale:
            self.chunk_manager.deletions_wanted.set()
        return m.MasterToChunkserverRegistered(
            server_id=server_id, stale_chunks=stale, cluster_id=self.identity.cluster_id,
            generation=self.identity.generation, incarnation=self.identity.incarnation,
            owners=owners)

    def _owners(self, server_id: ServerId,
                request: m.ChunkserverToMasterRegister) -> list[m.ChunkOwner]:
        """The owner records of the replicas reported without one that the master just
        counted as current there (inside the registration's commit): how replicas from
        before records get theirs. At most REGISTRATION_OWNERS_MAX; the rest next time."""
        if not request.unowned_chunks:
            return []
        versions = {report.chunk_id: report.version for report in request.chunks}
        held = self.writer_chunks.chunks_on_server(server_id)
        owners: list[m.ChunkOwner] = []
        for chunk_id in request.unowned_chunks:
            if len(owners) >= REGISTRATION_OWNERS_MAX:
                break
            owner = self.writer_chunks.file_of_chunk(ChunkId(chunk_id))
            if owner is None or chunk_id not in held or chunk_id not in versions:
                continue
            owners.append(m.ChunkOwner(chunk_id=chunk_id, version=versions[chunk_id],
                                       inode=owner[0], index=owner[1]))
        return owners

    def _refuse_another_identity(self, connection: Connection,
                                 request: m.ChunkserverToMasterRegister) -> None:
        """A chunkserver registers only as the uuid its connection proved."""
        if connection.identity == request.server_uuid:
            return
        proved = f"chunkserver {connection.identity}" if connection.identity else "no uuid"
        self._refuse_registration(connection, request, f"the connection proved {proved}:"
                                  " a chunkserver registers only as itself")

    async def _refuse_while_held(self, connection: Connection,
                                 request: m.ChunkserverToMasterRegister) -> None:
        """Refuse while another connection registered under this uuid still answers: one
        live registration per identity, so a second cannot take over (or empty) a live
        chunkserver's replica list. A link that does not answer is dead, unseen so far:
        the newcomer (the chunkserver reconnecting) replaces it."""
        holder = self._links.get(request.server_uuid)
        if holder is None or holder is connection or holder.closed.is_set():
            return
        try:
            await holder.call(m.MasterToChunkserverPing(),
                              timeout_s=REGISTERED_LINK_PING_TIMEOUT_S)
        except DfsError:
            return
        self._refuse_registration(connection, request, f"chunkserver {request.server_uuid}"
                                  f" is registered and answering on {holder.peer}")

    def _refuse_registration(self, connection: Connection,
                             request: m.ChunkserverToMasterRegister, reason: str) -> None:
        log.warning("refused a registration as chunkserver %s from %s (%d replicas"
                    " reported): %s", request.server_uuid, connection.peer,
                    len(request.chunks), reason,
                    extra=about("registration_refused", peer=connection.peer, error=reason))
        raise AccessDenied(f"registration as chunkserver {request.server_uuid} refused:"
                           f" {reason}")

    def _refuse_a_mismatch(self, request: m.ChunkserverToMasterRegister) -> None:
        """Raise ClusterMismatch before the report touches the metadata if the chunkserver
        would refuse this master: its replicas are none of this master's business (and a
        master that took them in would call them stale)."""
        seen = None if not request.cluster_id else ClusterIdentity(
            request.cluster_id, request.generation, request.incarnation)
        reason = refusal(seen, self.identity)
        if not reason:
            return
        address = f"{request.host}:{request.port}"
        self.registry.note_refused(m.RefusedChunkserver(
            server_uuid=request.server_uuid, address=address, reason=reason,
            refused_at_ns=time.time_ns()))
        log.error("refused chunkserver %s (%s, %d replicas): %s; this master serves %s",
                  request.server_uuid, address, len(request.chunks), reason,
                  self.identity.describe(),
                  extra=about("chunkserver_refused", peer=address, error=reason))
        raise ClusterMismatch(f"refused by the master: {reason}")

    def _refuse_unless_registered(self, connection: Connection, server_id: int,
                                  what: str) -> None:
        """Refuse (AccessDenied, logged) a message naming a server id other than the one
        registered on this connection, which is the uuid the connection proved."""
        entry = self.registry.chunkservers.get(ServerId(server_id))
        if entry is not None and entry.connection is connection:
            return
        log.warning("refused %s on chunkserver %d from %s, which did not register as that"
                    " chunkserver", what, server_id, connection.peer,
                    extra=about("chunkserver_message_refused", server=server_id,
                                peer=connection.peer, error=what))
        raise AccessDenied(f"chunkserver {server_id} did not register on this"
                           " connection: a chunkserver reports only its own replicas")

    async def report_damaged(self, connection: Connection,
                             request: m.ChunkserverToMasterReportDamaged) -> None:
        """Drop a replica the chunkserver found bad: only one of its own. The key proves a
        cluster member, not which one; the registration on this connection says that."""
        self._refuse_unless_registered(connection, request.server_id,
                                       f"a damage report about chunk {request.chunk_id}")
        await self.chunk_manager.drop_damaged(ChunkId(request.chunk_id),
                                              ServerId(request.server_id),
                                              ChunkVersion(request.version),
                                              [(first, end) for first, end in request.bad_blocks])

    def quarantine_check(self, connection: Connection,
                         request: m.ChunkserverToMasterQuarantineCheck) -> m.Message:
        if not any(e.connection is connection for e in self.registry.chunkservers.values()):
            raise ProtocolError("a quarantine check from a connection no chunkserver"
                                " registered on")
        if len(request.chunk_ids) > QUARANTINE_CHECK_CHUNKS_MAX:
            raise ProtocolError(f"a quarantine check of {len(request.chunk_ids)} chunks: at"
                                f" most {QUARANTINE_CHECK_CHUNKS_MAX}")
        safe = self.chunk_manager.safe_without([ChunkId(c) for c in request.chunk_ids])
        return m.QuarantineCheckReply(safe=[int(c) for c in safe])

    def heartbeat(self, connection: Connection,
                  request: m.ChunkserverToMasterHeartbeat) -> m.Message:
        self._refuse_unless_registered(connection, request.server_id, "a heartbeat")
        entry = self.registry.chunkservers[ServerId(request.server_id)]
        entry.report_space(request.bytes_total, request.bytes_used, request.bytes_free,
                           request.bytes_reserved)
        entry.chunk_count = request.chunk_count
        entry.last_heartbeat_s = trio.current_time()
        if entry.suspect:
            entry.suspect = False
            log.info("chunkserver %d, found silent by a client, heartbeats again",
                     entry.server_id, extra=about("chunkserver_unsuspected",
                                                  server=entry.server_id))
        return m.EmptyReply()

    def disk_failing(self, connection: Connection,
                     request: m.ChunkserverToMasterDiskFailing) -> m.Message:
        """Its disk is failing: nothing new goes there, chains and reads move to the other
        replicas, and the healing loop copies its replicas away (as for a drain), until
        it registers anew."""
        self._refuse_unless_registered(connection, request.server_id, "a disk report")
        entry = self.registry.chunkservers[ServerId(request.server_id)]
        if not entry.disk_failing:
            log.error("chunkserver %d (%s:%d): disk failing: %s; its replicas are copied"
                      " away", entry.server_id, entry.host, entry.port, request.reason,
                      extra=about("chunkserver_disk_failing", server=entry.server_id,
                                  peer=f"{entry.host}:{entry.port}", error=request.reason))
        entry.disk_failing = request.reason or "failing"
        return m.EmptyReply()

    async def liveness_loop(self, *, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        task_status.started()
        while True:
            await trio.sleep(HEARTBEAT_INTERVAL_S)
            for entry in self.registry.expire_silent():
                log.warning("chunkserver %d (%s:%d) missed its heartbeats; marked down",
                            entry.server_id, entry.host, entry.port,
                            extra=about("chunkserver_down", server=entry.server_id,
                                        peer=f"{entry.host}:{entry.port}"))
