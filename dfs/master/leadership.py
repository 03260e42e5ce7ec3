"""Who leads: one master at a time, elected through an etcd lease.

Promises:
* ``campaign`` returns only once this master holds the leader key, on an etcd
  lease of its own; the key's create_revision is its epoch, larger than every
  earlier leader's (etcd revisions only grow).
* While it leads, ``hold`` renews the lease. This master counts itself leader
  only until LEADER_LEASE_TTL_S - LEADER_SAFETY_MARGIN_S after it *sent* its
  last successful renewal: etcd starts the lease's TTL when it receives the
  renewal, later, so this master has stopped before etcd can let the key go
  and elect another (clock rates, not clocks, must agree, as in every
  lease-based leader).
* A master that is not elected waits on a watch of the leader key and tries
  again as soon as the key is gone (its holder's lease expired or was
  revoked), not after a polling interval; a watch that cannot be had costs a
  campaign every RECONNECT_BACKOFF_S_MAX instead.
* ``hold`` returns when the leadership is lost (renewal refused, or not
  possible in time); the caller runs its leader's work in ``leading``, a
  cancel scope whose deadline follows the renewals, so the work stops by
  itself at the last moment it may run. ``deposed`` is set with it, for the
  commit thread's journal appends, which run outside trio.
"""

from __future__ import annotations

import logging
import threading

import trio

from vmstore.dfs.constants import (
    LEADER_LEASE_TTL_S,
    LEADER_RENEW_INTERVAL_S,
    LEADER_SAFETY_MARGIN_S,
    RECONNECT_BACKOFF_S_MAX,
)
from vmstore.dfs.errors import EtcdUnavailable
from vmstore.dfs.log_fields import about
from vmstore.dfs.master import etcd_client as etcd
from vmstore.dfs.master.etcd_client import EtcdClient, WatchCompacted

log = logging.getLogger(__name__)


class Leadership:
    def __init__(self, client: EtcdClient, leader_key: bytes, address: str) -> None:
        self.etcd = client
        self.leader_key = leader_key
        self.address = address  # what clients are told: host:port of this master
        self.epoch = 0
        self.lease = 0
        self.leading = trio.CancelScope()
        self.deposed = threading.Event()  # set once ``leading`` is cancelled

    async def current_leader(self) -> tuple[str, int] | None:
        """The leader's address and epoch, if one is elected."""
        found = await self.etcd.range(self.leader_key)
        if not found:
            return None
        return found[0].value.decode(errors="replace"), found[0].create_revision

    async def campaign(self) -> int:
        """Wait until this master is elected; its epoch."""
        announced = None
        while True:
            try:
                lease = await self.etcd.grant_lease(LEADER_LEASE_TTL_S)
                sent_s = trio.current_time()
                result = await self.etcd.txn(
                    [etcd.created_at(self.leader_key, 0)],
                    [etcd.put(self.leader_key, self.address.encode(), lease)],
                    [etcd.get(self.leader_key)])
            except EtcdUnavailable as error:
                log.warning("cannot campaign for leadership: %s", error,
                            extra=about("campaign_failed", error=str(error)))
                await trio.sleep(RECONNECT_BACKOFF_S_MAX)
                continue
            if result.succeeded:
                self.epoch, self.lease = result.revision, lease
                self.leading = trio.CancelScope(deadline=self._valid_until(sent_s))
                log.info("elected leader (epoch %d)", self.epoch,
                         extra=about("leader_elected", epoch=self.epoch, address=self.address))
                return self.epoch
            await self._revoke(lease)
            holder = result.ranges[0][0] if result.ranges and result.ranges[0] else None
            if holder is not None and holder.create_revision != announced:
                announced = holder.create_revision
                log.info("standby: the leader is %s (epoch %d)", holder.value.decode(
                    errors="replace"), holder.create_revision,
                    extra=about("standby", leader=holder.value.decode(errors="replace"),
                                epoch=holder.create_revision))
            await self._until_vacant(result.revision + 1)

    async def _until_vacant(self, start_revision: int) -> None:
        """Until the leader key is deleted at ``start_revision`` or later; or until etcd
        cannot say (then the caller's next campaign asks it)."""
        try:
            async with self.etcd.watch(self.leader_key, None, start_revision) as watcher:
                while not any(event.deleted for event in await watcher.next()):
                    pass  # a new leader's put: it leads until this key goes
        except WatchCompacted:
            return  # deleted, or not: the campaign's transaction tells
        except EtcdUnavailable as error:
            log.warning("cannot watch the leader key: %s", error,
                        extra=about("campaign_failed", error=str(error)))
            await trio.sleep(RECONNECT_BACKOFF_S_MAX)

    def _valid_until(self, sent_s: float) -> float:
        return sent_s + LEADER_LEASE_TTL_S - LEADER_SAFETY_MARGIN_S

    async def hold(self) -> None:
        """Renew the lease until the leadership is lost; then return (``leading`` is cancelled)."""
        try:
            while True:
                await trio.sleep(LEADER_RENEW_INTERVAL_S)
                sent_s = trio.current_time()
                try:
                    with trio.move_on_at(self.leading.deadline) as too_late:
                        ttl_s = await self.etcd.keep_alive(self.lease)
                    if too_late.cancelled_caught:
                        raise EtcdUnavailable("no renewal before the lease ran out")
                except EtcdUnavailable as error:
                    if trio.current_time() < self.leading.deadline:
                        continue  # another try while the lease still holds
                    log.error("leadership lost (epoch %d): %s", self.epoch, error,
                              extra=about("leader_lost", epoch=self.epoch, error=str(error)))
                    return
                if ttl_s <= 0:
                    log.error("leadership lost (epoch %d): etcd let the lease expire",
                              self.epoch, extra=about("leader_lost", epoch=self.epoch,
                                                      error="lease expired"))
                    return
                self.leading.deadline = self._valid_until(sent_s)
        finally:
            self._lost()

    def _lost(self) -> None:
        self.leading.cancel()
        self.deposed.set()

    async def resign(self) -> None:
        """Let a standby take over at once (a clean stop), rather than after the TTL."""
        self._lost()
        with trio.move_on_after(1.0):
            await self._revoke(self.lease)

    async def _revoke(self, lease: int) -> None:
        try:
            await self.etcd.revoke_lease(lease)
        except EtcdUnavailable:
            pass  # it expires by itself
