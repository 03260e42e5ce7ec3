"""What `vmstore status` and /metrics say about an HA group: leader, standbys, etcd.

Keys, under the cluster's prefix P (beside ``dfs.master.journal``'s)::

    P standby/<address>    a StandbyReport: the journal entry a standby has
                           applied; on the standby's own etcd lease, so the key
                           of a standby that died goes after STANDBY_REPORT_TTL_S

Promises:
* A standby (``report_standby``) writes its position at most every
  STANDBY_REPORT_INTERVAL_S, and only when it moved; it renews its lease each
  interval, and revokes it (bounded, best effort) when it stops, so a standby
  that becomes the leader does not list itself as a standby.
* The leader (``HaMonitor``) reads the reports and probes every etcd endpoint
  (/health and /v3/maintenance/status) every HA_STATUS_INTERVAL_S, each probe
  within ETCD_PROBE_TIMEOUT_S, all at once; ``status()`` returns the last
  figures without any I/O, so `vmstore status` never waits for etcd.
* Failures are data here, never errors: an endpoint that does not answer is
  shown down with the reason; reports that cannot be read keep the last list.

Caveat: a standby's lag is the leader's position now minus the standby's
last report, which may be up to a report interval old: under a steady write
load a healthy standby shows the entries of about one second as lag.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import msgspec
import trio
from prometheus_client import Gauge, Histogram

from vmstore.dfs.constants import (
    ETCD_PROBE_TIMEOUT_S,
    HA_STATUS_INTERVAL_S,
    STANDBY_REPORT_INTERVAL_S,
    STANDBY_REPORT_TTL_S,
)
from vmstore.dfs.errors import EtcdUnavailable
from vmstore.dfs.master import etcd_client as etcd
from vmstore.dfs.master.etcd_client import EtcdClient
from vmstore.dfs.metrics import LATENCY_BUCKETS_S, REGISTRY
from vmstore.dfs.protocol import messages as m

log = logging.getLogger(__name__)

IS_LEADER = Gauge("vmstore_master_is_leader", "1 while this master leads its HA group",
                  registry=REGISTRY)
EPOCH = Gauge("vmstore_master_epoch", "The HA leader's epoch (the leader key's etcd create"
              " revision), as this master last knew it", registry=REGISTRY)
JOURNAL_POSITION = Gauge("vmstore_master_journal_position", "The last metadata journal entry"
                         " this master appended (leader) or applied (standby)",
                         registry=REGISTRY)
JOURNAL_APPEND_SECONDS = Histogram(
    "vmstore_master_journal_append_seconds", "Time to put one group commit's journal entry"
    " in etcd (a quorum's fsync), retries included", buckets=LATENCY_BUCKETS_S,
    registry=REGISTRY)
STANDBY_LAG = Gauge("vmstore_master_standby_lag_entries", "Journal entries a standby had not"
                    " applied yet, at its last report (on the leader)", ["standby"],
                    registry=REGISTRY)
ETCD_UP = Gauge("vmstore_etcd_member_up", "1 while an etcd endpoint answers /health as"
                " healthy (on the leader)", ["endpoint"], registry=REGISTRY)
ETCD_DB_SIZE = Gauge("vmstore_etcd_db_size_bytes", "An etcd member's database size (on the"
                     " leader)", ["endpoint"], registry=REGISTRY)


class StandbyReport(msgspec.Struct, array_like=True, frozen=True):
    position: int  # the last journal entry applied to this standby's copy


def standby_prefix(prefix: bytes) -> bytes:
    return prefix + b"standby/"


class StandbyProgress:
    """The position a standby's follower reached; read by its reporter (one trio thread)."""

    def __init__(self, position: int) -> None:
        self.position = position
        JOURNAL_POSITION.set(position)

    def applied(self, position: int) -> None:
        assert position >= self.position, (position, self.position)
        self.position = position
        JOURNAL_POSITION.set(position)


async def report_standby(client: EtcdClient, prefix: bytes, address: str,
                         progress: StandbyProgress) -> None:
    """Publish ``progress`` under P standby/<address> until cancelled."""
    IS_LEADER.set(0)
    key = standby_prefix(prefix) + address.encode()
    lease = 0
    reported = -1
    try:
        while True:
            try:
                if lease and await client.keep_alive(lease) <= 0:
                    lease, reported = 0, -1  # expired (a stall, etcd away): a new one
                if not lease:
                    lease = await client.grant_lease(STANDBY_REPORT_TTL_S)
                position = progress.position
                if position != reported:
                    await client.put(key, msgspec.msgpack.encode(StandbyReport(position)),
                                     lease=lease)
                    reported = position
            except EtcdUnavailable as error:
                # The follower says so too; the report is only for status.
                log.debug("standby report not written: %s", error)
            await trio.sleep(STANDBY_REPORT_INTERVAL_S)
    finally:
        if lease:
            with trio.CancelScope(shield=True, deadline=trio.current_time()
                                  + ETCD_PROBE_TIMEOUT_S):
                try:
                    await client.revoke_lease(lease)
                except EtcdUnavailable:
                    pass  # the key goes with the lease's TTL


async def probe_member(client: EtcdClient, endpoint: str) -> m.EtcdMemberStatus:
    """One etcd endpoint's health and status, within ETCD_PROBE_TIMEOUT_S."""
    reply: dict[str, Any] = {}
    health: str | None = None  # None: no answer in time
    with trio.move_on_after(ETCD_PROBE_TIMEOUT_S):
        try:
            health = await client.health(endpoint)
            reply = await client.status(endpoint)
        except EtcdUnavailable as failure:
            health = str(failure)
    error = f"no answer within {ETCD_PROBE_TIMEOUT_S:g} s" if health is None else health
    header = reply.get("header", {})
    member = str(header.get("member_id", ""))
    return m.EtcdMemberStatus(
        endpoint=endpoint, up=not error, leader=bool(member) and member == str(reply.get(
            "leader", "")), db_size_bytes=int(reply.get("dbSize", 0)),
        raft_term=int(reply.get("raftTerm", header.get("raft_term", 0))),
        version=str(reply.get("version", "")), error=error)


class HaMonitor:
    """The leader's view of its group, refreshed every HA_STATUS_INTERVAL_S."""

    def __init__(self, client: EtcdClient, prefix: bytes, address: str, epoch: int,
                 position: Callable[[], int]) -> None:
        self.etcd = client
        self.prefix = prefix
        self.address = address
        self.epoch = epoch
        self.position = position  # the leader's last appended entry, read when asked
        self.reports: dict[str, int] = {}  # standby address -> its reported position
        self.members: list[m.EtcdMemberStatus] = [
            m.EtcdMemberStatus(endpoint=endpoint, up=False, leader=False, db_size_bytes=0,
                               raft_term=0, version="", error="not probed yet")
            for endpoint in client.endpoints]
        self.checked_s = trio.current_time()

    def status(self) -> m.HaStatus:
        position = self.position()
        return m.HaStatus(
            leader_address=self.address, epoch=self.epoch, journal_position=position,
            standbys=[m.StandbyStatus(address=address, position=reported,
                                      lag_entries=max(position - reported, 0))
                      for address, reported in sorted(self.reports.items())],
            etcd=list(self.members),
            checked_age_s=max(trio.current_time() - self.checked_s, 0.0))

    async def run(self) -> None:
        """Probe until cancelled (the leader's services end with its leadership)."""
        IS_LEADER.set(1)
        EPOCH.set(self.epoch)
        endpoints = sorted(self.etcd.endpoints)  # the client reorders its own list
        try:
            while True:
                await self.refresh(endpoints)
                await trio.sleep(HA_STATUS_INTERVAL_S)
        finally:
            IS_LEADER.set(0)
            for address in self.reports:
                _forget_lag(address)

    async def refresh(self, endpoints: list[str]) -> None:
        members: dict[str, m.EtcdMemberStatus] = {}

        async def probe(endpoint: str) -> None:
            members[endpoint] = await probe_member(self.etcd, endpoint)

        async with trio.open_nursery() as nursery:
            for endpoint in endpoints:
                nursery.start_soon(probe, endpoint)
            nursery.start_soon(self._read_reports)
        self.members = [members[endpoint] for endpoint in endpoints]
        self.checked_s = trio.current_time()
        for member in self.members:
            ETCD_UP.labels(member.endpoint).set(int(member.up))
            ETCD_DB_SIZE.labels(member.endpoint).set(member.db_size_bytes)
        position = self.position()
        for address, reported in self.reports.items():
            STANDBY_LAG.labels(address).set(max(position - reported, 0))

    async def _read_reports(self) -> None:
        start = standby_prefix(self.prefix)
        try:
            with trio.fail_after(ETCD_PROBE_TIMEOUT_S):
                found = await self.etcd.range(start, etcd.prefix_end(start))
        except (EtcdUnavailable, trio.TooSlowError):
            return  # the etcd members' lines say why; the last list stays
        reports = {}
        for kv in found:
            address = kv.key[len(start):].decode(errors="replace")
            if address == self.address:
                continue  # our own report from before the election, not yet expired
            try:
                reports[address] = msgspec.msgpack.decode(kv.value, type=StandbyReport).position
            except msgspec.DecodeError:
                log.warning("standby report %r in etcd does not decode", kv.key)
        for gone in self.reports.keys() - reports.keys():
            _forget_lag(gone)
        self.reports = reports


def _forget_lag(address: str) -> None:
    try:
        STANDBY_LAG.remove(address)
    except KeyError:
        pass  # its gauge was never set
