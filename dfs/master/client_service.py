"""Serves clients (mounts, command-line tools): namespace, chunk locations, status.

Like MooseFS's matoclserv. Every mutating request runs as one change in the
group committer, together with storing its reply for retries; the reply is
sent only after that commit is durable. Requests that need chunkservers
(allocation, chain changes, truncation) talk to them first, then commit.

After a change is durable and before its reply, the other mounts are told
what it made stale (``invalidations``): a later lookup anywhere sees it.

Namespace changes (``protocol.lazy_changes``: create, mkdir, symlink, link,
unlink, rmdir, rename, xattrs, chmod/chown/utimes, a size published at close)
are answered once committed, and are durable within METADATA_SYNC_DELAY_S_MAX (on the
embedded master: ``committer``); every other change, and any that frees
chunks for deletion, is durable before its reply. ClientToMasterSyncMetadata
waits until every change committed before it is durable.

Every request first passes the connection's export rule (``exports``):
refused, read-only or confined to a directory, decided once per connection
by its address. Chunk locations carry read capabilities and write chains a
write capability (``protocol.capability``); admin connections get neither.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import msgspec
from prometheus_client import Counter, Histogram

from vmstore.dfs.constants import (
    CHUNK_SIZE_BYTES,
    FILE_SIZE_BYTES_MAX,
    READDIR_REPLY_ENTRIES_MAX,
)
from vmstore.dfs.errors import (
    AccessDenied,
    FileTooLarge,
    InvalidArgument,
    NotFound,
    ProtocolError,
)
from vmstore.dfs.master.backups import ScheduledBackups
from vmstore.dfs.master.chunk_manager import ChunkManager
from vmstore.dfs.master.committer import GroupCommitter
from vmstore.dfs.master.exports import Access, ExportGuard, ExportRule
from vmstore.dfs.master.health_report import HealingReporter, HealthReport
from vmstore.dfs.master.invalidations import (
    Invalidations,
    changes_data,
    notice_for,
    with_files,
)
from vmstore.dfs.master.lease_manager import LeaseManager
from vmstore.dfs.master.orphans import Orphans
from vmstore.dfs.master.registry import Registry, SessionEntry
from vmstore.dfs.metadata.namespace import Namespace
from vmstore.dfs.metadata.sessions import SessionTable
from vmstore.dfs.metrics import LATENCY_BUCKETS_S, REGISTRY
from vmstore.dfs.protocol import messages as m
from vmstore.dfs.protocol.codec import decode_stored_message, encode_stored_message
from vmstore.dfs.protocol.lazy_changes import answered_before_durable
from vmstore.dfs.protocol.rpc import Connection, Handler
from vmstore.dfs.types import ChunkId, ChunkVersion, InodeId, ServerId, SessionId

# The decoder keeps indexes in 0..2**63-1; past the largest file they would
# allocate chunks nobody can address, or overflow SQLite in index + count.
CHUNK_INDEX_MAX = FILE_SIZE_BYTES_MAX // CHUNK_SIZE_BYTES - 1
Reply = tuple[m.Message, bytes]

REQUEST_SECONDS = Histogram(
    "vmstore_master_request_seconds", "Time to answer a client request (mutations: durable)",
    ["request"], buckets=LATENCY_BUCKETS_S, registry=REGISTRY)
REQUEST_ERRORS = Counter("vmstore_master_request_errors_total",
                         "Client requests answered with an error", ["request", "error"],
                         registry=REGISTRY)


class ClientService:
    def __init__(
        self,
        committer: GroupCommitter,
        writer_namespace: Namespace,
        reader_namespace: Namespace,
        writer_sessions: SessionTable,
        chunk_manager: ChunkManager,
        registry: Registry,
        leases: LeaseManager,
        orphans: Orphans,
        healing: HealingReporter,
        master_address: str,
        exports: tuple[ExportRule, ...] = (),
        backups: ScheduledBackups | None = None,
        ha_status: Callable[[], m.HaStatus] | None = None,
    ) -> None:
        self.committer = committer
        self.writer_namespace = writer_namespace
        self.namespace = reader_namespace
        self.sessions = writer_sessions
        self.chunk_manager = chunk_manager
        self.registry = registry
        self.leases = leases
        self.orphans = orphans
        # `vmstore status` and `fsck`, and the /metrics gauges.
        self.health = HealthReport(registry, chunk_manager, reader_namespace, leases,
                                   healing, master_address, backups, ha_status)
        # The mounts to tell what a change made stale, before its reply.
        self.invalidations = Invalidations()
        self.guard = ExportGuard(exports, reader_namespace,
                                 lambda inode: registry.holds.get(inode, set()))

    def handler_for(self, connection: Connection) -> Handler:
        access = self.guard.access_for(connection.peer, connection.role)

        async def handle(request: m.Request, payload: bytes) -> Reply:
            return await self.handle(connection, access, request)

        return handle

    async def handle(self, connection: Connection, access: Access, request: m.Request) -> Reply:
        name = type(request).__name__.removeprefix("ClientToMaster")
        started = time.perf_counter()
        try:
            request = self.guard.admit(access, request)
            claimed = getattr(request, "session_id", 0)
            if (claimed and claimed != access.session_id
                    and SessionId(claimed) in self.registry.sessions):
                # A live session is bound to the connection that opened (or resumed)
                # it: another key holder cannot close, renew or write as it. (A
                # session that is gone is no one's: its old owner's late requests
                # fail as they always did, LeaseLost and the like.)
                raise AccessDenied(f"{name}: session {claimed} was not opened on this"
                                   " connection")
            reply = await self._answer(connection, access, request)
            return self.guard.shown(access, reply), b""
        except Exception as error:
            REQUEST_ERRORS.labels(name, type(error).__name__).inc()
            raise
        finally:
            REQUEST_SECONDS.labels(name).observe(time.perf_counter() - started)

    async def _answer(self, connection: Connection, access: Access,
                      request: m.Request) -> m.Message:
        query = _QUERIES.get(type(request))
        if query is not None:
            return query(self, request)
        change = _CHANGES.get(type(request))
        if change is not None:
            return await self._mutate(request, change)
        if isinstance(request, m.ClientToMasterOpenSession):
            reply = await self.open_session(connection, request)
            access.session_id = SessionId(reply.session_id)
            return reply
        special = _SPECIAL.get(type(request))
        if special is None:
            raise ProtocolError(f"{type(request).__name__} is not a client request")
        reply = await special(self, connection, request)
        assert isinstance(reply, m.Message)
        return reply

    async def _mutate(self, request: Any, change: "ChangeFunction",
                      committed: Callable[[m.Message], None] | None = None) -> m.Message:
        """Run ``change`` in the group committer with the request's stored reply; then
        ``committed`` (before anything awaits), then tell the other mounts."""
        session_id = SessionId(request.session_id)
        op_id: int = request.op_id
        now_ns = time.time_ns()
        freed: list[tuple[ChunkId, ChunkVersion]] = []
        notices: list[m.MasterToClientInvalidate | None] = []  # the last run's, if it ran

        def run() -> bytes:
            cached = self.sessions.cached_reply(session_id, op_id)
            if cached is not None:
                return cached
            notices.append(notice_for(self.writer_namespace, request))
            reply = change(self.writer_namespace, request, now_ns, freed)
            if freed:
                # The deleter acts on what is committed: no replica may go for a
                # change that a crash of the host could still take back.
                self.committer.insist_durable()
            encoded = encode_stored_message(reply)
            self.sessions.store_reply(session_id, op_id, encoded)
            return encoded

        encoded = await self.committer.run(run, durable=not answered_before_durable(request))
        if freed:
            self.chunk_manager.deletions_wanted.set()
        reply = decode_stored_message(encoded)
        if committed is not None:
            committed(reply)
        if notices:
            notice = notices[-1]
            if changes_data(request) and isinstance(reply, m.AttrsReply):
                notice = with_files(notice, [reply.attrs])
            if notice is not None:
                await self.invalidations.tell(notice, besides=session_id)
        return reply

    def host_label_of(self, session_id: int) -> str:
        entry = self.registry.sessions.get(SessionId(session_id))
        return "" if entry is None else entry.status.host_label

    # --- requests that need more than one commit or the network ---------------------
    async def open_session(self, connection: Connection,
                           request: m.ClientToMasterOpenSession) -> m.MasterToClientSession:
        if connection.role == "admin":
            # Operator tools only look: no session row, not listed as a client.
            return m.MasterToClientSession(session_id=0,
                                           generation=self.chunk_manager.signer.generation)
        session_id = SessionId(request.resume_session_id)
        known = session_id != 0 and await self.committer.run(
            lambda: self.sessions.exists(session_id))
        if not known:
            session_id = await self.committer.run(lambda: self.sessions.open(
                request.hostname, request.host_label, request.mount_point, request.pid,
                time.time_ns()))
        status = m.ClientStatus(session_id=session_id, hostname=request.hostname,
                                host_label=request.host_label, mount_point=request.mount_point,
                                pid=request.pid, address=connection.peer)
        entry = self.registry.sessions.setdefault(session_id, SessionEntry(status))
        entry.status = status  # after a master restart, the address is known again
        entry.connections.add(connection)
        if request.invalidations:
            self.invalidations.listen(session_id, connection)
        self.leases.touch(session_id)
        for inode in request.open_inodes:
            self.registry.hold(inode, session_id)
        return m.MasterToClientSession(session_id=session_id,
                                       lease_expiry_ms=int(self.leases.lease_expiry_s * 1000),
                                       generation=self.chunk_manager.signer.generation)

    async def hold(self, connection: Connection, request: Any) -> m.Message:
        inode = InodeId(request.inode)
        if request.held:
            self.registry.hold(inode, SessionId(request.session_id))
        elif self.registry.release(inode, SessionId(request.session_id)):
            await self.orphans.delete([inode])
        return m.EmptyReply()

    async def create(self, connection: Connection, request: Any) -> m.Message:
        """A create; with ``open_handle`` also the creator's open, in the same commit.

        The open is what ClientToMasterHold and ClientToMasterAcquireLease would
        do: the file held for the session (from the moment the commit returns,
        before this awaits anything), and with ``write_lease`` its lease granted
        in the create's own transaction. Nobody else knows the new inode before
        that transaction commits, so no lease lock is needed, and a retry after a
        lost reply finds the reply (with the epoch) in the reply cache.
        """
        session_id = SessionId(request.session_id)
        if request.write_lease and not request.open_handle:
            raise InvalidArgument("create: a write lease comes only with an open handle")
        if request.write_lease and request.mode & 0o170000 != 0o100000:
            raise InvalidArgument("create: write leases are for regular files")
        if request.open_handle and session_id == 0:
            raise InvalidArgument("create: an open handle needs a client session")
        label = self.host_label_of(session_id)
        writer_leases = self.leases.writer_leases

        def change(ns: Namespace, r: Any, now_ns: int, freed: list[Any]) -> m.Message:
            attrs = ns.create(InodeId(r.parent), r.name, r.mode, r.uid, r.gid, r.rdev, now_ns)
            epoch = (writer_leases.grant(InodeId(attrs.inode), session_id, label)
                     if r.write_lease else 0)
            return m.AttrsReply(attrs=attrs, lease_epoch=epoch)

        def opened(reply: m.Message) -> None:
            assert isinstance(reply, m.AttrsReply)
            self.registry.hold(InodeId(reply.attrs.inode), session_id)

        if not request.open_handle:
            return await self._mutate(request, change)
        self.leases.touch(session_id)
        return await self._mutate(request, change, committed=opened)

    async def sync_metadata(self, connection: Connection, request: Any) -> m.Message:
        await self.committer.sync()
        return m.EmptyReply()

    async def chunk_for_write(self, connection: Connection, request: Any) -> m.Message:
        _check_chunk_index(request.index)
        inode, session_id = InodeId(request.inode), SessionId(request.session_id)
        attrs = self.namespace.getattr(inode)
        if attrs.mode & 0o170000 != 0o100000:
            raise InvalidArgument(f"inode {request.inode} is not a regular file")
        epoch = await self.leases.authorize_write(session_id, inode, request.lease_epoch)
        location = await self.chunk_manager.chunk_for_write(
            inode, request.index, attrs.goal, self.host_label_of(session_id))
        return m.WriteLocationReply(location=self.readable(connection, session_id, location),
                                    token=self.leases.token(session_id,
                                                            ChunkId(location.chunk_id), epoch))

    async def report_bad_chain(self, connection: Connection, request: Any) -> m.Message:
        _check_chunk_index(request.index)
        inode, session_id = InodeId(request.inode), SessionId(request.session_id)
        epoch = await self.leases.authorize_write(session_id, inode, request.lease_epoch)
        location = await self.chunk_manager.report_bad_chain(
            inode, request.index, ChunkId(request.chunk_id),
            ChunkVersion(request.version), [ServerId(s) for s in request.failed_server_ids],
            self.host_label_of(session_id))
        return m.WriteLocationReply(location=self.readable(connection, session_id, location),
                                    token=self.leases.token(session_id,
                                                            ChunkId(location.chunk_id), epoch))

    async def chunk_locations(self, connection: Connection, request: Any) -> m.Message:
        _check_chunk_index(request.first_index)
        locations = self.chunk_manager.locations(
            InodeId(request.inode), request.first_index, request.count,
            self.host_label_of(request.session_id))
        return m.ChunkLocationsReply(locations=[
            self.readable(connection, request.session_id, location) for location in locations])

    def readable(self, connection: Connection, session_id: int,
                 location: m.ChunkLocation) -> m.ChunkLocation:
        """``location`` with a read capability, unless the connection is an admin's."""
        if connection.role == "admin":
            return location  # operators look at locations; they never read data
        return msgspec.structs.replace(location, read_capability=self.leases.signer.read(
            session_id, location.chunk_id))

    async def write_end(self, connection: Connection, request: Any) -> m.Message:
        self.leases.check_writer(SessionId(request.session_id), InodeId(request.inode))
        return await self._mutate(request, _write_end)

    # --- write leases ---------------------------------------------------------------
    async def acquire_lease(self, connection: Connection, request: Any) -> m.Message:
        self._check_regular_file(InodeId(request.inode))
        return m.LeaseReply(epoch=await self.leases.acquire(SessionId(request.session_id),
                                                            InodeId(request.inode)))

    async def release_lease(self, connection: Connection, request: Any) -> m.Message:
        await self.leases.release(SessionId(request.session_id), InodeId(request.inode),
                                  request.epoch)
        return m.EmptyReply()

    async def close_session(self, connection: Connection, request: Any) -> m.Message:
        self.invalidations.forget(SessionId(request.session_id))
        if SessionId(request.session_id) in self.registry.sessions:
            await self.leases.end_session(SessionId(request.session_id), "closed by its client")
        return m.EmptyReply()

    async def lease_handover(self, connection: Connection, request: Any) -> m.Message:
        self._check_regular_file(InodeId(request.inode))
        lease = await self.leases.handover(InodeId(request.inode), request.to_host)
        await self._tell_new_holder(InodeId(request.inode))
        return m.LeaseInfoReply(lease=lease)

    async def lease_break(self, connection: Connection, request: Any) -> m.Message:
        lease = await self.leases.break_lease(InodeId(request.inode))
        await self._tell_new_holder(InodeId(request.inode))
        return m.LeaseInfoReply(lease=lease)

    async def _tell_new_holder(self, inode: InodeId) -> None:
        """Whoever writes the file next drops what it cached of its size and data first:
        the old holder's last acknowledged size is on record, its own may be older."""
        await self.invalidations.tell(m.MasterToClientInvalidate(
            files=[self.namespace.getattr(inode)]))

    def _check_regular_file(self, inode: InodeId) -> None:
        if self.namespace.getattr(inode).mode & 0o170000 != 0o100000:
            raise InvalidArgument(f"inode {inode} is not a regular file: leases are for files")

    async def setattr(self, connection: Connection, request: Any) -> m.Message:
        if request.size_bytes is not None:
            self.leases.check_writer(SessionId(request.session_id), InodeId(request.inode))
            # Cut even when the size on record is below the new one: the
            # writer's replicas may hold bytes past the new end that it never
            # reported (write-behind), and they must read as zeros after it.
            await self.chunk_manager.cut_chunk(InodeId(request.inode), request.size_bytes)
        return await self._mutate(request, _setattr)

    async def drain(self, connection: Connection, request: Any) -> m.Message:
        server_id = ServerId(request.server_id)
        entry = self.registry.chunkservers.get(server_id)
        if entry is None:
            raise NotFound(f"no chunkserver {server_id}")
        await self.committer.run(
            lambda: self.chunk_manager.writer_chunks.set_draining(server_id, request.draining))
        entry.draining = request.draining
        return m.EmptyReply()

    def statfs(self, request: Any) -> m.Message:
        servers = self.registry.up_servers()
        return m.StatFsReply(total_bytes=sum(s.bytes_total for s in servers),
                             free_bytes=sum(s.bytes_free for s in servers),
                             inodes_used=self.namespace.inode_count())


def _check_chunk_index(index: int) -> None:
    if index > CHUNK_INDEX_MAX:
        raise FileTooLarge(f"chunk index {index} is past the largest file"
                           f" ({FILE_SIZE_BYTES_MAX} bytes)")


ChangeFunction = Callable[[Namespace, Any, int, list[tuple[ChunkId, ChunkVersion]]], m.Message]


def _setattr(ns: Namespace, r: Any, now_ns: int, freed: list[Any]) -> m.Message:
    attrs, dropped = ns.setattr(InodeId(r.inode), mode=r.mode, uid=r.uid, gid=r.gid,
                                size_bytes=r.size_bytes, atime_ns=r.atime_ns,
                                mtime_ns=r.mtime_ns, now_ns=now_ns)
    freed.extend(dropped)
    return m.AttrsReply(attrs=attrs)


def _write_end(ns: Namespace, r: Any, now_ns: int, freed: list[Any]) -> m.Message:
    # The larger of the reported reach and the size on record: a report never
    # shrinks a file (another report or a truncate may have grown it since). A
    # truncate sets the size on record, so it is what the next reports are
    # measured against; what the master cannot tell is a report of writes made
    # before that truncate (issue 18: the cut bytes came back as zeros). Only
    # the lease holder reports (write_end checks it), and its client forgets the
    # reach of earlier writes at a truncate and never has a report in flight
    # across one (Client._set_size, Client._write_end), so for one writer the
    # max is right without a truncate generation on the wire.
    attrs = ns.getattr(InodeId(r.inode))
    if r.size_bytes > attrs.size_bytes or r.mtime_ns > attrs.mtime_ns:
        attrs, _ = ns.setattr(InodeId(r.inode), size_bytes=max(r.size_bytes, attrs.size_bytes),
                              mtime_ns=r.mtime_ns, now_ns=now_ns)
    return m.AttrsReply(attrs=attrs)


def _unlink(ns: Namespace, r: Any, now_ns: int, freed: list[Any]) -> m.Message:
    freed.extend(ns.unlink(InodeId(r.parent), r.name, now_ns))
    return m.EmptyReply()


def _rename(ns: Namespace, r: Any, now_ns: int, freed: list[Any]) -> m.Message:
    freed.extend(ns.rename(InodeId(r.parent), r.name, InodeId(r.new_parent), r.new_name,
                           r.flags, now_ns))
    return m.EmptyReply()


def _rmdir(ns: Namespace, r: Any, now_ns: int, freed: list[Any]) -> m.Message:
    ns.rmdir(InodeId(r.parent), r.name, now_ns)
    return m.EmptyReply()


def _setxattr(ns: Namespace, r: Any, now_ns: int, freed: list[Any]) -> m.Message:
    ns.setxattr(InodeId(r.inode), r.name, r.value, r.flags, now_ns)
    return m.EmptyReply()


def _removexattr(ns: Namespace, r: Any, now_ns: int, freed: list[Any]) -> m.Message:
    ns.removexattr(InodeId(r.inode), r.name, now_ns)
    return m.EmptyReply()


def _attrs(make: Callable[[Namespace, Any, int], m.FileAttrs]) -> ChangeFunction:
    return lambda ns, r, now_ns, freed: m.AttrsReply(attrs=make(ns, r, now_ns))


_CHANGES: dict[type[m.Message], ChangeFunction] = {
    m.ClientToMasterMkdir: _attrs(lambda ns, r, t: ns.mkdir(
        InodeId(r.parent), r.name, r.mode, r.uid, r.gid, t)),
    m.ClientToMasterSymlink: _attrs(lambda ns, r, t: ns.symlink(
        InodeId(r.parent), r.name, r.target, r.uid, r.gid, t)),
    m.ClientToMasterLink: _attrs(lambda ns, r, t: ns.link(
        InodeId(r.inode), InodeId(r.new_parent), r.new_name, t)),
    m.ClientToMasterUnlink: _unlink,
    m.ClientToMasterRmdir: _rmdir,
    m.ClientToMasterRename: _rename,
    m.ClientToMasterSetXattr: _setxattr,
    m.ClientToMasterRemoveXattr: _removexattr,
    m.ClientToMasterSetGoal: lambda ns, r, now_ns, freed: m.CountReply(
        count=ns.set_goal(InodeId(r.inode), r.goal, r.recursive, now_ns)),
}

_QUERIES: dict[type[m.Message], Callable[[ClientService, Any], m.Message]] = {
    m.ClientToMasterLookup: lambda s, r: m.AttrsReply(
        attrs=s.namespace.lookup(InodeId(r.parent), r.name)),
    m.ClientToMasterGetAttr: lambda s, r: m.AttrsReply(
        attrs=s.namespace.getattr(InodeId(r.inode))),
    m.ClientToMasterReadLink: lambda s, r: m.ReadLinkReply(
        target=s.namespace.readlink(InodeId(r.inode))),
    m.ClientToMasterReadDir: lambda s, r: m.ReadDirReply(entries=s.namespace.readdir(
        InodeId(r.inode), r.after_cookie, min(max(r.limit, 1), READDIR_REPLY_ENTRIES_MAX))),
    m.ClientToMasterGetXattr: lambda s, r: m.XattrReply(
        value=s.namespace.getxattr(InodeId(r.inode), r.name)),
    m.ClientToMasterListXattr: lambda s, r: m.XattrNamesReply(
        names=s.namespace.listxattr(InodeId(r.inode))),
    m.ClientToMasterStatFs: ClientService.statfs,
    m.ClientToMasterStatus: lambda s, r: s.health.status(),
    m.ClientToMasterFsck: lambda s, r: s.health.fsck(),
    m.ClientToMasterRenewSession: lambda s, r: m.RenewReply(
        lost_inodes=s.leases.renew(SessionId(r.session_id), r.leases)),
    m.ClientToMasterLeaseInfo: lambda s, r: m.LeaseInfoReply(
        lease=s.leases.info(InodeId(r.inode))),
}

_SPECIAL: dict[type[m.Message], Callable[[ClientService, Connection, Any], Any]] = {
    m.ClientToMasterCreate: ClientService.create,
    m.ClientToMasterSyncMetadata: ClientService.sync_metadata,
    m.ClientToMasterHold: ClientService.hold,
    m.ClientToMasterDrain: ClientService.drain,
    m.ClientToMasterChunkForWrite: ClientService.chunk_for_write,
    m.ClientToMasterReportBadChain: ClientService.report_bad_chain,
    m.ClientToMasterChunkLocations: ClientService.chunk_locations,
    m.ClientToMasterSetAttr: ClientService.setattr,
    m.ClientToMasterWriteEnd: ClientService.write_end,
    m.ClientToMasterAcquireLease: ClientService.acquire_lease,
    m.ClientToMasterReleaseLease: ClientService.release_lease,
    m.ClientToMasterCloseSession: ClientService.close_session,
    m.ClientToMasterLeaseHandover: ClientService.lease_handover,
    m.ClientToMasterLeaseBreak: ClientService.lease_break,
}

