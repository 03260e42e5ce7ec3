"""The client library: everything a mount or a tool does with a cluster.

``open_client`` gives a ``Client`` whose methods are the namespace calls of
the master (by inode, as FUSE uses them), the data calls of ``ChunkIO``,
and a few conveniences by path for tools and tests. Errors are
``dfs.errors`` exceptions; nothing here knows errno.
"""

from __future__ import annotations

import stat
import time
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from typing import Any

import trio

from vmstore.dfs.client.chunk_io import ChunkIO
from vmstore.dfs.client.file_state import FileStates
from vmstore.dfs.client.leases import ClientLeases
from vmstore.dfs.client.local_replicas import LocalReplicas
from vmstore.dfs.client.master_client import ClientIdentity, MasterClient
from vmstore.dfs.constants import (
    CLOSE_SESSION_TIMEOUT_S,
    MASTER_RECONNECT_TIMEOUT_S,
    MTIME_PUBLISH_INTERVAL_S,
    READDIR_BATCH_ENTRIES_MAX,
)
from vmstore.dfs.errors import NotADirectory, NotFound, unwrapped_errors
from vmstore.dfs.protocol import hop_trace
from vmstore.dfs.protocol import messages as m
from vmstore.dfs.protocol.auth import KeyMaterial
from vmstore.dfs.protocol.rpc import ConnectionPool
from vmstore.dfs.types import ROOT_INODE, InodeId


class Client:
    def __init__(self, master: MasterClient, chunk_io: ChunkIO) -> None:
        self.master = master
        self.io = chunk_io
        self.leases = chunk_io.leases
        # Per file: open handles, the size shown, owed and told, the size lock. The
        # mount reads these states here, and changes them through the methods below.
        self.files = chunk_io.files
        master.on_invalidate.append(self._invalidated)

    async def _invalidated(self, notice: m.MasterToClientInvalidate) -> None:
        """Another session changed these files' size or data (a write published, a
        truncate, a lease handed over): the size shown here and where their chunks
        are come from the master's word again, before this client's next I/O."""
        for attrs in notice.files:
            state = self.files.find(attrs.inode)
            if state is not None and not state.written:
                state.showing(attrs.size_bytes)
            self.io.forget(attrs.inode)
        if notice.files:
            self.io.replicas_changed()

    # --- namespace by inode ------------------------------------------------------------
    async def lookup(self, parent: int, name: bytes) -> m.FileAttrs:
        reply = await self.master.call(m.ClientToMasterLookup(parent=parent, name=name),
                                       reply_type=m.AttrsReply)
        return reply.attrs

    async def getattr(self, inode: int) -> m.FileAttrs:
        reply = await self.master.call(m.ClientToMasterGetAttr(inode=inode),
                                       reply_type=m.AttrsReply)
        return reply.attrs

    async def setattr(self, inode: int, **changes: Any) -> m.FileAttrs:
        if changes.get("size_bytes") is not None:
            return await self._set_size(inode, changes)
        reply = await self.master.mutate(m.ClientToMasterSetAttr(
            session_id=0, op_id=0, inode=inode, **changes), reply_type=m.AttrsReply)
        return reply.attrs

    async def _set_size(self, inode: int, changes: dict[str, Any]) -> m.FileAttrs:
        """A truncate (down or up): final for every write made before it.

        Those writes are on stable storage first (none may land past a new
        end), and how far they reached is forgotten, not published: the new
        size replaces it. Both under the file's size lock, so that no report
        of the old reach is on its way to the master meanwhile.
        """
        await self.io.flush(InodeId(inode))
        self.io.forget(inode)
        state = self.files.get(inode)  # kept while its lock is held (FileStates)
        async with state.size_lock:
            reach_before = state.unpublished_bytes
            state.size_published(reach_before)
            state.forget_published()
            try:
                reply = await self.master.mutate(m.ClientToMasterSetAttr(
                    session_id=0, op_id=0, inode=inode, **changes), reply_type=m.AttrsReply)
            except BaseException:
                state.size_owed(reach_before)  # not truncated: still to tell
                raise
            finally:
                self.io.replicas_changed()
            state.truncated(reply.attrs.size_bytes)
        return reply.attrs

    async def create(self, parent: int, name: bytes, mode: int, uid: int = 0, gid: int = 0,
                     rdev: int = 0) -> m.FileAttrs:
        reply = await self.master.mutate(m.ClientToMasterCreate(
            session_id=0, op_id=0, parent=parent, name=name, mode=mode, uid=uid, gid=gid,
            rdev=rdev), reply_type=m.AttrsReply)
        return reply.attrs

    async def mkdir(self, parent: int, name: bytes, mode: int = 0o755, uid: int = 0,
                    gid: int = 0) -> m.FileAttrs:
        reply = await self.master.mutate(m.ClientToMasterMkdir(
            session_id=0, op_id=0, parent=parent, name=name, mode=mode, uid=uid, gid=gid),
            reply_type=m.AttrsReply)
        return reply.attrs

    async def symlink(self, parent: int, name: bytes, target: bytes, uid: int = 0,
                      gid: int = 0) -> m.FileAttrs:
        reply = await self.master.mutate(m.ClientToMasterSymlink(
            session_id=0, op_id=0, parent=parent, name=name, target=target, uid=uid, gid=gid),
            reply_type=m.AttrsReply)
        return reply.attrs

    async def link(self, inode: int, new_parent: int, new_name: bytes) -> m.FileAttrs:
        reply = await self.master.mutate(m.ClientToMasterLink(
            session_id=0, op_id=0, inode=inode, new_parent=new_parent, new_name=new_name),
            reply_type=m.AttrsReply)
        return reply.attrs

    async def unlink(self, parent: int, name: bytes) -> None:
        await self.master.mutate(m.ClientToMasterUnlink(
            session_id=0, op_id=0, parent=parent, name=name), reply_type=m.EmptyReply)

    async def rmdir(self, parent: int, name: bytes) -> None:
        await self.master.mutate(m.ClientToMasterRmdir(
            session_id=0, op_id=0, parent=parent, name=name), reply_type=m.EmptyReply)

    async def rename(self, parent: int, name: bytes, new_parent: int, new_name: bytes,
                     flags: int = 0) -> None:
        await self.master.mutate(m.ClientToMasterRename(
            session_id=0, op_id=0, parent=parent, name=name, new_parent=new_parent,
            new_name=new_name, flags=flags), reply_type=m.EmptyReply)

    async def readlink(self, inode: int) -> bytes:
        reply = await self.master.call(m.ClientToMasterReadLink(inode=inode),
                                       reply_type=m.ReadLinkReply)
        return reply.target

    async def readdir(self, inode: int, after_cookie: int = 0,
                      limit: int = READDIR_BATCH_ENTRIES_MAX) -> list[m.DirEntry]:
        reply = await self.master.call(m.ClientToMasterReadDir(
            inode=inode, after_cookie=after_cookie, limit=limit), reply_type=m.ReadDirReply)
        return reply.entries

    async def getxattr(self, inode: int, name: bytes) -> bytes:
        reply = await self.master.call(m.ClientToMasterGetXattr(inode=inode, name=name),
                                       reply_type=m.XattrReply)
        return reply.value

    async def setxattr(self, inode: int, name: bytes, value: bytes, flags: int = 0) -> None:
        await self.master.mutate(m.ClientToMasterSetXattr(
            session_id=0, op_id=0, inode=inode, name=name, value=value, flags=flags),
            reply_type=m.EmptyReply)

    async def listxattr(self, inode: int) -> list[bytes]:
        reply = await self.master.call(m.ClientToMasterListXattr(inode=inode),
                                       reply_type=m.XattrNamesReply)
        return reply.names

    async def removexattr(self, inode: int, name: bytes) -> None:
        await self.master.mutate(m.ClientToMasterRemoveXattr(
            session_id=0, op_id=0, inode=inode, name=name), reply_type=m.EmptyReply)

    async def set_goal(self, inode: int, goal: int, recursive: bool = False) -> int:
        reply = await self.master.mutate(m.ClientToMasterSetGoal(
            session_id=0, op_id=0, inode=inode, goal=goal, recursive=recursive),
            reply_type=m.CountReply)
        return reply.count

    async def statfs(self) -> m.StatFsReply:
        return await self.master.call(m.ClientToMasterStatFs(), reply_type=m.StatFsReply)

    async def status(self) -> m.StatusReply:
        return await self.master.call(m.ClientToMasterStatus(), reply_type=m.StatusReply)

    async def chunk_locations(self, inode: int, first_index: int,
                              count: int) -> list[m.ChunkLocation]:
        reply = await self.master.call(m.ClientToMasterChunkLocations(
            inode=inode, first_index=first_index, count=count,
            session_id=self.master.session_id), reply_type=m.ChunkLocationsReply)
        return reply.locations

    # --- data -----------------------------------------------------------------------
    async def read(self, inode: int, offset: int, length: int, size_bytes: int) -> bytes:
        """Read, clipped to ``size_bytes`` (the file size the caller knows)."""
        length = max(0, min(length, size_bytes - offset))
        if length == 0:
            return b""
        return await self.io.read(InodeId(inode), offset, length)

    async def write(self, inode: int, offset: int, data: bytes, *, wait: bool = True,
                    synchronous: bool = False) -> int:
        """Write; with ``wait`` False, return once queued (write-behind, ChunkIO.write).

        ``synchronous`` (an O_SYNC or O_DSYNC handle): on stable storage on every
        replica, with the file's size on the master, before this returns.
        """
        if hop_trace.ENABLED:
            hop_trace.mark("client.write", len(data))
        await self.io.write(InodeId(inode), offset, data, wait=wait or synchronous)
        if synchronous:
            await self.fsync(inode)
        self.files.get(inode).write_returned(offset + len(data))
        return len(data)

    async def fsync(self, inode: int, datasync: bool = False) -> None:
        """Durable on every replica, and the file's size on the master.

        The mtime goes with a new size; without one, a full fsync records it
        at most once per MTIME_PUBLISH_INTERVAL_S (as lazytime does on a local
        disk), and the file's close records it in any case.

        The replicas' flush and the master's record run at once: each is
        durable when fsync returns, and nobody was promised either before.
        """
        if hop_trace.ENABLED:
            hop_trace.mark("client.fsync")
        await self.io.wait_written(inode)
        if hop_trace.ENABLED:
            hop_trace.mark("client.written")
        state = self.files.find(inode)  # None: no write here, nothing to tell
        size_bytes = 0
        if state is not None:
            size_bytes = state.unpublished_bytes
            mtime_age_s = trio.current_time() - state.published_at_s
            if size_bytes <= state.published_bytes and (
                    datasync or mtime_age_s < MTIME_PUBLISH_INTERVAL_S):
                size_bytes = 0  # the size is known; the mtime waits (for close at the latest)
        # The master answers namespace changes (this file's create among them) before
        # they are durable: an fsync waits for this file's, through its durable
        # WriteEnd or, without one, a SyncMetadata (none if nothing is owed).
        answered = self.master.owed_through(inode)
        metadata_owed = self.master.changes_durable < answered
        if not size_bytes and not metadata_owed:
            await self.io.flush(InodeId(inode))  # fast path: nothing to tell the master
        else:
            with unwrapped_errors():
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(self.io.flush, InodeId(inode))
                    if size_bytes:
                        nursery.start_soon(self._write_end, inode, size_bytes)
                    else:
                        nursery.start_soon(self.master.sync_metadata, answered)
            # No round trip unless a truncate meanwhile left the WriteEnd unsent.
            await self.master.sync_metadata(answered)
        state = self.files.find(inode)
        if state is not None and not datasync:
            state.written = False  # an fdatasync may leave the mtime for close
        if hop_trace.ENABLED:
            hop_trace.mark("client.fsync_done")

    async def _write_end(self, inode: int, size_bytes: int, *, durable: bool = True) -> None:
        """Tell the master the file's writes reach ``size_bytes`` (and set its mtime);
        ``durable``: on its stable storage before this returns (an fsync's), else
        within METADATA_SYNC_DELAY_S_MAX (a close's)."""
        state = self.files.get(inode)  # kept while its lock is held (FileStates)
        async with state.size_lock:
            # A truncate while this waited for the lock made the old reach void:
            # only what is still unpublished may be told, never more.
            size_bytes = min(size_bytes, state.unpublished_bytes)
            if not size_bytes:
                return
            # Taken off the unpublished sizes before the call, as before write-behind:
            # a close meanwhile (even a forked child's, closing an inherited fd) then
            # finds nothing to publish, instead of waiting on a master that may be
            # away. Should the call fail, the size is owed again.
            state.size_published(size_bytes)
            try:
                await self.master.mutate(m.ClientToMasterWriteEnd(
                    session_id=0, op_id=0, inode=inode, size_bytes=size_bytes,
                    mtime_ns=time.time_ns(), durable=durable), reply_type=m.AttrsReply)
            except BaseException:
                state.size_owed(size_bytes)
                raise
            state.told(size_bytes)

    async def opened(self, inode: int, writable: bool = False) -> None:
        """A handle on ``inode`` opened here: the master keeps the file while any is open.

        A writable handle needs the file's write lease: LeaseHeld (EBUSY)
        if another host has it.
        """
        self.io.replicas_changed()
        if writable:
            await self.leases.opened_for_write(inode)
        if self.files.get(inode).handle_opened(writable):
            await self.master.call(m.ClientToMasterHold(
                session_id=self.master.session_id, inode=inode, held=True),
                reply_type=m.EmptyReply)

    async def closed(self, inode: int, writable: bool = False, *,
                     publish_written: bool = False) -> None:
        """One handle closed (every ``opened`` has one ``closed``).

        ``publish_written`` (the mount's release): if it was the file's last
        handle here and the file was written since its size was published,
        publish it first. Which close is the last is decided before anything
        awaits, so of two at once exactly one publishes.

        The lease goes only after the file's queued writes are on the replicas
        (or lost): the next writer must find them there.
        """
        state = self.files.find(inode)
        assert state is not None, f"inode {inode} closed more often than opened"
        last = state.handle_closing(writable)
        try:
            try:
                if last and publish_written:
                    await self.publish_written(inode)
            finally:
                if writable:
                    try:
                        await self.io.wait_written(inode)
                    finally:
                        await self.leases.closed_for_write(inode)
        finally:
            await self._drop_hold(inode)

    async def _drop_hold(self, inode: int) -> None:
        state = self.files.find(inode)
        assert state is not None, f"inode {inode}: its state went while a close was under way"
        if not state.handle_closed():
            return
        self.io.forget_write_error(inode)
        self.files.last_closed(state)
        await self.master.call(m.ClientToMasterHold(
            session_id=self.master.session_id, inode=inode, held=False),
            reply_type=m.EmptyReply)

    async def lease_info(self, inode: int) -> m.LeaseInfo:
        reply = await self.master.call(m.ClientToMasterLeaseInfo(inode=inode),
                                       reply_type=m.LeaseInfoReply)
        return reply.lease

    async def lease_handover(self, inode: int, to_host: str) -> m.LeaseInfo:
        """Let ``to_host``'s first write take the lease (and fence the holder from then on)."""
        reply = await self.master.call(m.ClientToMasterLeaseHandover(
            inode=inode, to_host=to_host), reply_type=m.LeaseInfoReply)
        return reply.lease

    async def lease_break(self, inode: int) -> m.LeaseInfo:
        """Take the lease from its holder now and fence it (its host is known dead)."""
        reply = await self.master.call(m.ClientToMasterLeaseBreak(inode=inode),
                                       reply_type=m.LeaseInfoReply)
        return reply.lease

    async def publish_size(self, inode: int) -> None:
        """Tell the master how far this client's acknowledged writes reach (close-to-open).

        Unlike ``fsync`` this does not wait for stable storage on the replicas,
        only for every queued write to be on them.
        """
        await self.io.wait_written(inode)
        size_bytes = self.files.unpublished_bytes(inode)
        if size_bytes:
            await self._write_end(inode, size_bytes, durable=False)  # close is no fsync
        state = self.files.find(inode)
        if state is not None:
            state.written = False

    async def sync_metadata(self) -> None:
        """Every namespace change this client made is durable on the master (fsyncdir)."""
        await self.master.sync_metadata()

    async def publish_written(self, inode: int) -> None:
        """``publish_size`` if the file was written here since its size was last
        published (what a close does, close-to-open)."""
        state = self.files.find(inode)
        if state is not None and state.written:
            await self.publish_size(inode)

    # --- by path, for tools and tests ------------------------------------------------
    async def resolve(self, path: str) -> m.FileAttrs:
        attrs = await self.getattr(ROOT_INODE)
        for part in [p for p in path.split("/") if p]:
            if not stat.S_ISDIR(attrs.mode):
                raise NotADirectory(f"{path}: {part!r} is under a non-directory")
            attrs = await self.lookup(attrs.inode, part.encode())
        return attrs

    async def parent_and_name(self, path: str) -> tuple[m.FileAttrs, bytes]:
        head, _, name = path.rstrip("/").rpartition("/")
        return await self.resolve(head), name.encode()

    async def makedirs(self, path: str) -> m.FileAttrs:
        attrs = await self.getattr(ROOT_INODE)
        for part in [p for p in path.split("/") if p]:
            try:
                attrs = await self.lookup(attrs.inode, part.encode())
            except NotFound:
                attrs = await self.mkdir(attrs.inode, part.encode())
        return attrs

    async def create_file(self, path: str, mode: int = 0o644) -> m.FileAttrs:
        parent, name = await self.parent_and_name(path)
        return await self.create(parent.inode, name, stat.S_IFREG | mode)


@asynccontextmanager
async def open_client(host: str, port: int, key: KeyMaterial, identity: ClientIdentity,
                      *, reconnect_timeout_s: float = MASTER_RECONNECT_TIMEOUT_S,
                      compress: bool = False,
                      short_circuit_reads: bool = True,
                      other_masters: Sequence[tuple[str, int]] = (),
                      invalidations: bool = False) -> AsyncIterator[Client]:
    """A connected client for the block's duration; connections close after it.

    ``short_circuit_reads``: read replicas on this host from their files.
    ``invalidations``: be told what other sessions change (a mount: its kernel caches).
    ``other_masters``: the rest of an HA group's masters (``host:port`` first).
    """
    with unwrapped_errors():
        async with trio.open_nursery() as nursery:
            master = MasterClient(nursery, host, port, key, identity, FileStates(),
                                  reconnect_timeout_s, other_masters)
            master.wants_invalidations = invalidations
            chunkservers = ConnectionPool(nursery, key, "client", compress)
            leases = ClientLeases(master)
            local_replicas = LocalReplicas() if short_circuit_reads else None
            client = Client(master, ChunkIO(master, chunkservers, leases, nursery,
                                            local_replicas))
            await master.call(m.ClientToMasterStatFs(), reply_type=m.StatFsReply)  # session up
            renewals = trio.CancelScope()
            if master.session_id:
                nursery.start_soon(_renewing, leases, renewals)
            try:
                yield client
            finally:
                with trio.CancelScope(shield=True):
                    with trio.move_on_after(CLOSE_SESSION_TIMEOUT_S):
                        await client.io.wait_all_written()  # errors went to their writers
                    # No renewal may reach the master after the session is closed: it
                    # would find the session gone and declare every lease lost.
                    renewals.cancel()
                    await master.close_session(timeout_s=CLOSE_SESSION_TIMEOUT_S)
                master.close()
                chunkservers.close_all()
                if local_replicas is not None:
                    local_replicas.close()
                nursery.cancel_scope.cancel()


async def _renewing(leases: ClientLeases, scope: trio.CancelScope) -> None:
    with scope:
        await leases.renew_loop()
