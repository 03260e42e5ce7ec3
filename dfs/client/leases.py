"""This client's write leases: which files it may write, and under which epoch.

Promises:
* Opening a file for writing takes its lease (or learns that a handover
  lets the first write take it); another host's lease makes the open fail
  with LeaseHeld, which names that host.
* Once the master says a lease is gone (taken over, broken, expired with
  the session), every later write and flush of that file here fails with
  LeaseLost until its last write handle closes. The client never takes a
  lease again behind an open handle's back: another host may have written
  the file meanwhile, and this host's view of it is stale.
* While the session lives it is renewed LEASE_RENEWALS_PER_EXPIRY times per
  expiry period, and each renewal learns of leases lost meanwhile.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import trio

from vmstore.dfs.client.master_client import MasterClient
from vmstore.dfs.constants import LEASE_RENEWALS_PER_EXPIRY
from vmstore.dfs.errors import DfsError, LeaseLost
from vmstore.dfs.log_fields import about
from vmstore.dfs.protocol import messages as m

log = logging.getLogger(__name__)


@dataclass
class _Lease:
    epoch: int  # 0: not taken yet (a handover lets the first write take it)
    # Write handles holding the lease here: opened for writing, and not yet past
    # the end of their close. Not FileState.writable_handles, which drops when a
    # close begins: the lease must outlive the close's wait for the file's queued
    # writes (the next writer must find them on the replicas), and an open meanwhile
    # must not take the lease again only for that close to give it back.
    writers: int
    lost: str = ""  # why, once the lease is gone


class ClientLeases:
    def __init__(self, master: MasterClient) -> None:
        self.master = master
        self._leases: dict[int, _Lease] = {}
        master.on_session_replaced.append(self._session_replaced)

    async def opened_for_write(self, inode: int) -> None:
        lease = self._leases.get(inode)
        if lease is not None and lease.writers > 0:
            lease.writers += 1
            return
        reply = await self.master.call(m.ClientToMasterAcquireLease(
            session_id=self.master.session_id, inode=inode), reply_type=m.LeaseReply)
        self._leases[inode] = _Lease(epoch=reply.epoch, writers=1)

    def taken_at_create(self, inode: int, epoch: int) -> None:
        """A create that opened its new file for writing took the lease at ``epoch``
        (ClientToMasterCreate with ``write_lease``): as ``opened_for_write``, with the
        master asked already."""
        assert inode not in self._leases, f"inode {inode}: a new file's lease known before"
        assert epoch > 0, f"inode {inode}: a create's lease at epoch {epoch}"
        self._leases[inode] = _Lease(epoch=epoch, writers=1)

    async def closed_for_write(self, inode: int) -> None:
        lease = self._leases.get(inode)
        if lease is None or lease.writers == 0:
            return
        lease.writers -= 1
        if lease.writers > 0:
            return
        del self._leases[inode]
        if lease.epoch and not lease.lost:
            await self.master.call(m.ClientToMasterReleaseLease(
                session_id=self.master.session_id, inode=inode, epoch=lease.epoch),
                reply_type=m.EmptyReply)

    def epoch_for_write(self, inode: int) -> int:
        """The epoch to write under (0: take the lease), or LeaseLost."""
        lease = self._leases.get(inode)
        if lease is None:
            return 0
        if lease.lost:
            raise LeaseLost(f"inode {inode}: write lease lost ({lease.lost}); close and"
                            " reopen the file")
        return lease.epoch

    def took(self, inode: int, epoch: int) -> None:
        """A write with epoch 0 took the lease at ``epoch``."""
        lease = self._leases.setdefault(inode, _Lease(epoch=epoch, writers=0))
        if not lease.lost:
            lease.epoch = epoch

    def lost(self, inode: int, reason: str) -> None:
        lease = self._leases.setdefault(inode, _Lease(epoch=0, writers=0))
        if not lease.lost:
            log.error("inode %d: write lease lost: %s; writes to it now fail", inode, reason,
                      extra=about("lease_lost", inode=inode, reason=reason))
            lease.lost = reason or "lost"

    def _session_replaced(self) -> None:
        for inode, lease in self._leases.items():
            if lease.epoch:
                self.lost(inode, "the master expired this client's session")

    async def renew_loop(self) -> None:
        """Keep the session and its leases alive; learn of leases lost meanwhile."""
        while True:
            interval_s = self.master.lease_expiry_s / LEASE_RENEWALS_PER_EXPIRY
            await trio.sleep(interval_s)
            believed = [(inode, lease.epoch) for inode, lease in self._leases.items()
                        if lease.epoch and not lease.lost]
            try:
                with trio.fail_after(interval_s * 2):
                    reply = await self.master.call(m.ClientToMasterRenewSession(
                        session_id=self.master.session_id, leases=believed),
                        reply_type=m.RenewReply, timeout_s=interval_s * 2)
            except DfsError as error:
                log.info("renewing session %d failed (%s); trying again",
                         self.master.session_id, error)
                continue
            except trio.TooSlowError:
                log.info("renewing session %d: no answer within %.1f s; trying again",
                         self.master.session_id, interval_s * 2)
                continue
            for inode in reply.lost_inodes:
                lease = self._leases.get(inode)
                if lease is not None and (inode, lease.epoch) in believed:
                    self.lost(inode, "the master gave it to another host")
