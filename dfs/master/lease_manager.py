"""Client sessions' lives and their write leases: one writer per file, cluster-wide.

Promises:
* At most one client session holds a file's write lease. Only the holder
  gets write capabilities (tokens), changes the file's write chains, truncates it or
  publishes its size; another session asking gets LeaseHeld (EBUSY), which
  names the holder's host.
* A session silent for ``lease_expiry_s`` is expired: it loses its leases
  and open-file holds and cannot be resumed. A token lives at most
  ``lease_expiry_s - CLOCK_SKEW_S_MAX``, and a token is only issued to a
  session that was heard from at that moment; so when another session can
  take the lease, every token of the silent one has expired on every
  chunkserver, and nothing it sends later is accepted.
* When the lease is taken from a holder that may still be alive (a
  handover taken, a break), every replica of the file is fenced at the new
  epoch before the new holder gets its first token
  (``ChunkManager.fence_file``).
* Leases and epochs survive master restarts (SQLite); after a restart every
  known session gets a full ``lease_expiry_s`` to come back.
* Silence counts only while this master runs: after a stall of the master
  itself (SIGSTOP, a frozen host) every session gets a full ``lease_expiry_s``
  from the moment it runs again (``master.stall_watch``), so the renewals that
  waited in its sockets meanwhile are read before anything expires.

Changes to one file's lease are serialised by a per-inode lock.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable

import trio

from vmstore.dfs.constants import CLOCK_SKEW_S_MAX, SESSION_EXPIRY_CHECK_INTERVAL_S
from vmstore.dfs.errors import LeaseHeld, LeaseLost
from vmstore.dfs.log_fields import about
from vmstore.dfs.master.chunk_manager import ChunkManager
from vmstore.dfs.master.committer import GroupCommitter
from vmstore.dfs.master.keyed_lock import KeyedLock
from vmstore.dfs.master.registry import Registry, SessionEntry
from vmstore.dfs.metadata.leases import LeaseRow, LeaseTable
from vmstore.dfs.metadata.sessions import SessionTable
from vmstore.dfs.protocol import messages as m
from vmstore.dfs.protocol.capability import CapabilitySigner
from vmstore.dfs.types import ChunkId, InodeId, SessionId

log = logging.getLogger(__name__)
FilesReleased = Callable[[list[InodeId]], Awaitable[None]]


class LeaseManager:
    def __init__(self, committer: GroupCommitter, writer_leases: LeaseTable,
                 reader_leases: LeaseTable, writer_sessions: SessionTable, registry: Registry,
                 chunk_manager: ChunkManager, signer: CapabilitySigner, lease_expiry_s: float,
                 files_released: FilesReleased) -> None:
        assert lease_expiry_s > CLOCK_SKEW_S_MAX, "checked by the master's settings"
        self.committer = committer
        self.writer_leases = writer_leases  # only inside committer changes
        self.leases = reader_leases
        self.writer_sessions = writer_sessions
        self.registry = registry
        self.chunk_manager = chunk_manager
        self.lease_expiry_s = lease_expiry_s
        assert signer.write_life_ns <= (lease_expiry_s - CLOCK_SKEW_S_MAX) * 1e9
        self.signer = signer
        self._files_released = files_released
        self._locks = KeyedLock()

    # --- liveness -------------------------------------------------------------------
    def touch(self, session_id: SessionId) -> None:
        entry = self.registry.sessions.get(session_id)
        if entry is not None:
            entry.last_seen_s = trio.current_time()

    def alive(self, session_id: SessionId) -> bool:
        entry = self.registry.sessions.get(session_id)
        return entry is not None and self._silent_s(entry) <= self.lease_expiry_s

    def _silent_s(self, entry: SessionEntry) -> float:
        return self.registry.stalls.silent_s(entry.last_seen_s)

    def _matches_host(self, session_id: SessionId, host: str) -> bool:
        entry = self.registry.sessions.get(session_id)
        return entry is not None and host in (entry.status.host_label, entry.status.hostname)

    def _host_label(self, session_id: SessionId) -> str:
        entry = self.registry.sessions.get(session_id)
        return "" if entry is None else entry.status.host_label

    # --- taking and giving up -------------------------------------------------------------
    async def acquire(self, session_id: SessionId, inode: InodeId) -> int:
        """Open for writing: the lease's epoch, or 0 if a handover lets the first write take it."""
        self.touch(session_id)
        async with self._locks.hold(inode):
            lease = self.leases.get(inode)
            if lease is not None and lease.holder_session == session_id:
                return lease.epoch
            if lease is not None and self._held_elsewhere(lease, session_id):
                if self._matches_host(session_id, lease.handover_host):
                    return 0
                raise self._held_error(lease)
            return await self._grant(inode, session_id, lease)

    async def authorize_write(self, session_id: SessionId, inode: InodeId,
                              expected_epoch: int) -> int:
        """The epoch under which ``session_id`` may write ``inode`` now, or raise.

        ``expected_epoch`` is the one the client holds; 0 asks to take the
        lease (a first write after a handover, or a tool that writes
        without opening).
        """
        self.touch(session_id)
        async with self._locks.hold(inode):
            lease = self.leases.get(inode)
            if lease is not None and lease.holder_session == session_id and (
                    expected_epoch in (0, lease.epoch)):
                return lease.epoch
            if expected_epoch != 0:
                raise LeaseLost(f"inode {inode}: this client's write lease (epoch"
                                f" {expected_epoch}) is gone: {self._describe(lease)}")
            if lease is not None and self._held_elsewhere(lease, session_id):
                if not self._matches_host(session_id, lease.handover_host):
                    raise self._held_error(lease)
                log.info("inode %d: handover to host %s taken by session %d; fencing session"
                         " %d", inode, lease.handover_host, session_id, lease.holder_session,
                         extra=about("lease_handover_taken", inode=inode, session=session_id,
                                     host=lease.handover_host,
                                     fenced_session=lease.holder_session))
                epoch = await self._grant(inode, session_id, lease)
                await self.chunk_manager.fence_file(inode, epoch)
                return epoch
            return await self._grant(inode, session_id, lease)

    def check_writer(self, session_id: SessionId, inode: InodeId) -> None:
        """Raise unless ``session_id`` may change the file's data (truncate, size, chains)."""
        lease = self.leases.get(inode)
        if lease is not None and self._held_elsewhere(lease, session_id):
            raise self._held_error(lease)

    async def release(self, session_id: SessionId, inode: InodeId, epoch: int) -> None:
        self.touch(session_id)
        async with self._locks.hold(inode):
            lease = self.leases.get(inode)
            if lease is None or lease.holder_session != session_id or lease.epoch != epoch:
                return  # already gone (expired, broken, handed over)
            await self.committer.run(lambda: self.writer_leases.release(inode))

    async def _grant(self, inode: InodeId, session_id: SessionId,
                     previous: LeaseRow | None) -> int:
        if previous is not None and previous.holder_session not in (0, session_id):
            log.info("inode %d: write lease of expired session %d passes to session %d",
                     inode, previous.holder_session, session_id,
                     extra=about("lease_taken_from_expired", inode=inode, session=session_id,
                                 expired_session=previous.holder_session))
        label = self._host_label(session_id)
        return await self.committer.run(lambda: self.writer_leases.grant(inode, session_id,
                                                                          label))

    def _held_elsewhere(self, lease: LeaseRow, session_id: SessionId) -> bool:
        return lease.holder_session not in (0, session_id) and self.alive(lease.holder_session)

    def _held_error(self, lease: LeaseRow) -> LeaseHeld:
        return LeaseHeld(f"inode {lease.inode} is open for writing on {self._describe(lease)}")

    def _describe(self, lease: LeaseRow | None) -> str:
        if lease is None or lease.holder_session == 0:
            return "no host holds it now"
        entry = self.registry.sessions.get(lease.holder_session)
        hostname = "" if entry is None else f", hostname {entry.status.hostname}"
        return (f"host {lease.holder_host or '?'}{hostname} (session {lease.holder_session},"
                f" lease epoch {lease.epoch})")

    # --- tokens -----------------------------------------------------------------------
    def token(self, session_id: SessionId, chunk_id: ChunkId, epoch: int) -> m.Capability:
        return self.signer.write(session_id, chunk_id, epoch)

    # --- renewals ---------------------------------------------------------------------
    def renew(self, session_id: SessionId, believed: list[tuple[int, int]]) -> list[int]:
        """Keep the session alive; the inodes of ``believed`` (inode, epoch) it lost."""
        self.touch(session_id)
        lost = []
        for inode, epoch in believed:
            lease = self.leases.get(InodeId(inode))
            if lease is None or lease.holder_session != session_id or lease.epoch != epoch:
                lost.append(inode)
        return lost

    # --- operators and the migration coordinator --------------------------------------
    def info(self, inode: InodeId) -> m.LeaseInfo:
        lease = self.leases.get(inode)
        if lease is None:
            return m.LeaseInfo(inode=inode, epoch=0, holder_session=0, holder_host="",
                               holder_hostname="", holder_address="", handover_host="",
                               silent_ms=0)
        entry = self.registry.sessions.get(lease.holder_session)
        return m.LeaseInfo(
            inode=inode, epoch=lease.epoch, holder_session=lease.holder_session,
            holder_host=lease.holder_host,
            holder_hostname="" if entry is None else entry.status.hostname,
            holder_address="" if entry is None else entry.status.address,
            handover_host=lease.handover_host,
            silent_ms=0 if entry is None else int(self._silent_s(entry) * 1000))

    async def handover(self, inode: InodeId, host: str) -> m.LeaseInfo:
        async with self._locks.hold(inode):
            await self.committer.run(lambda: self.writer_leases.set_handover(inode, host))
        log.info("inode %d: write lease may be taken by host %s", inode, host or "(cancelled)",
                 extra=about("lease_handover_offered", inode=inode, host=host))
        return self.info(inode)

    async def break_lease(self, inode: InodeId) -> m.LeaseInfo:
        async with self._locks.hold(inode):
            lease = self.leases.get(inode)
            if lease is not None and lease.holder_session != 0:
                epoch = await self.committer.run(lambda: self.writer_leases.revoke(inode))
                await self.chunk_manager.fence_file(inode, epoch)
                log.warning("inode %d: write lease of %s broken by an operator; fenced at"
                            " epoch %d", inode, self._describe(lease), epoch,
                            extra=about("lease_broken", inode=inode, epoch=epoch,
                                        fenced_session=lease.holder_session))
        return self.info(inode)

    def held_count(self) -> int:
        return self.leases.held_count()

    # --- ends of sessions ----------------------------------------------------------------
    def adopt_sessions_after_restart(self) -> None:
        """Sessions from before a restart: each has a full expiry period to come back."""
        for session_id, hostname, label, mount_point, pid in self.writer_sessions.all():
            self.registry.sessions.setdefault(session_id, SessionEntry(m.ClientStatus(
                session_id=session_id, hostname=hostname, host_label=label,
                mount_point=mount_point, pid=pid, address="")))

    async def expiry_loop(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
                          ) -> None:
        task_status.started()
        while True:
            await trio.sleep(SESSION_EXPIRY_CHECK_INTERVAL_S)
            self.registry.stalls.now_s()  # read steadily, so that a gap is a stall
            for session_id, entry in list(self.registry.sessions.items()):
                silent_s = self._silent_s(entry)
                if silent_s > self.lease_expiry_s:
                    await self.end_session(session_id, f"silent for {silent_s:.1f} s")

    async def end_session(self, session_id: SessionId, reason: str) -> None:
        """Release everything the session had: leases, open files, its row."""
        entry = self.registry.sessions.pop(session_id, None)
        if entry is not None:
            for connection in entry.connections:
                connection.close()

        def forget() -> list[LeaseRow]:
            held = self.writer_leases.held_by(session_id)
            for lease in held:
                self.writer_leases.release(lease.inode)
            self.writer_sessions.close(session_id)
            return held

        released = await self.committer.run(forget)
        unheld = [InodeId(i) for i in self.registry.release_all(session_id)]
        log.info("session %d (%s) ended: %s; %d write leases and %d open files released",
                 session_id, "?" if entry is None else entry.status.hostname, reason,
                 len(released), len(unheld),
                 extra=about("session_ended", session=session_id, reason=reason,
                             leases_released=len(released)))
        if unheld:
            await self._files_released(unheld)
