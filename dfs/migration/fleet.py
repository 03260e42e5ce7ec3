"""Operations on whole hosts: record their guests, evacuate one, fail one over.

Promises:
* ``record`` writes, for every guest of every reachable configured host,
  its persistent definition and where it runs to the cluster itself
  (``GuestRecords``), so a dead host's guests are known without it; the
  records of guests no longer on a host that answered are dropped.
* ``evacuate`` moves every running guest off a host, biggest first, each to
  the host with the most free memory that passes the preflight; one guest's
  failure does not stop the others, and each outcome is reported.
* ``failover`` restarts a dead host's guests elsewhere only after the dead
  host is fenced: every image's write lease is no longer held by it (the
  master expired its session, so its tokens expired on every chunkserver),
  or the operator said it is powered off (``fenced``: the leases are
  broken at once). A copy still running there can then write nothing.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import libvirt

from vmstore.dfs.constants import FAILOVER_LEASE_POLL_INTERVAL_S
from vmstore.dfs.errors import MigrationFailed, PreflightFailed
from vmstore.dfs.migration.cluster_view import ClusterView, GuestRecord, GuestRecords, ImageFile
from vmstore.dfs.migration.coordinator import (
    Migration,
    MigrationOptions,
    MigrationReport,
    connect,
)
from vmstore.dfs.migration.domain import parse_domain
from vmstore.dfs.migration.hosts import ClusterAccess, Fleet, MigrationHost
from vmstore.dfs.progress import ProgressDisplay

Connections = dict[str, tuple[MigrationHost, Any]]  # by host name


def reachable_hosts(fleet: Fleet, display: ProgressDisplay) -> Connections:
    """{host name: (host, libvirt connection)} of every configured host that answers."""
    connections = {}
    for host in fleet.hosts:
        try:
            connections[host.name] = connect(host)
        except MigrationFailed as error:
            display.say(f"skipping {host.name}: {error.message}")
    return connections


def _close(connections: Connections) -> None:
    for _host, connection in connections.values():
        connection.close()


def record(access: ClusterAccess, fleet: Fleet, display: ProgressDisplay) -> list[GuestRecord]:
    connections = reachable_hosts(fleet, display)
    records = []
    try:
        for host, connection in connections.values():
            for domain in connection.listAllDomains(libvirt.VIR_CONNECT_LIST_DOMAINS_PERSISTENT):
                records.append(GuestRecord(
                    name=domain.name(), host=host.label, running=bool(domain.isActive()),
                    xml=domain.XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE)))
    finally:
        _close(connections)
    # Guests gone from a host that answered are forgotten; a silent host's stay.
    answered = {host.label for host, _connection in connections.values()}
    store = GuestRecords(access)
    gone = {r.name for r in store.load() if r.host in answered}
    store.save(records, forget=frozenset(gone))
    return records


def _by_free_memory(connections: Connections, excluded: MigrationHost) -> list[MigrationHost]:
    candidates = [(host, connection) for host, connection in connections.values()
                  if host.label != excluded.label]
    candidates.sort(key=lambda pair: pair[1].getFreeMemory(), reverse=True)
    return [host for host, _connection in candidates]


def evacuate(access: ClusterAccess, fleet: Fleet, host_name: str, options: MigrationOptions,
             display: ProgressDisplay) -> list[MigrationReport]:
    wanted = fleet.host(host_name)
    connections = reachable_hosts(fleet, display)
    if wanted.name not in connections:
        _close(connections)
        raise MigrationFailed(f"cannot evacuate {wanted.name}: its libvirt does not answer"
                              " (if it is dead, use vmstore failover)")
    source, source_connection = connections[wanted.name]
    reports: list[MigrationReport] = []
    try:
        guests = sorted(source_connection.listAllDomains(
            libvirt.VIR_CONNECT_LIST_DOMAINS_ACTIVE), key=lambda d: d.info()[1], reverse=True)
        for domain in guests:
            reports.append(_move_somewhere(access, domain.name(), source, source_connection,
                                           connections, options, display))
    finally:
        _close(connections)
    return reports


def _move_somewhere(access: ClusterAccess, guest: str, source: MigrationHost,
                    source_connection: Any, connections: Connections,
                    options: MigrationOptions, display: ProgressDisplay) -> MigrationReport:
    refusals = []
    for destination in _by_free_memory(connections, source):
        display.say(f"{guest}: moving to {destination.name}")
        try:
            report = Migration(access, guest, source, source_connection, destination,
                               options, display).run()
        except PreflightFailed as error:
            refusals.append(error.message)
            continue
        except MigrationFailed as error:
            refusals.append(error.message)
            break
        display.say(report.text())
        return report
    failed = MigrationReport(guest, source.name, "", "failed")
    failed.notes.extend(refusals)
    display.say(f"{guest}: not moved:\n  " + "\n  ".join(refusals or ["no other host"]))
    return failed


@dataclass
class FailoverResult:
    guest: str
    destination: str  # its host label; "" when it could not be restarted
    fenced_after_s: float
    problem: str = ""


def failover(access: ClusterAccess, fleet: Fleet, host_name: str, *, fenced: bool,
             wait_s: float, display: ProgressDisplay) -> list[FailoverResult]:
    dead = fleet.host(host_name)
    guests = [r for r in GuestRecords(access).load()
              if r.host in (dead.label, dead.name) and r.running]
    if not guests:
        display.say(f"no running guest of {dead.name} is recorded (vmstore guests record)")
        return []
    cluster = ClusterView(access)
    images = _images_of(cluster, guests)
    started = time.monotonic()
    if fenced:
        display.say(f"{dead.name} is fenced (powered off): breaking its write leases")
        cluster.break_leases([image for found in images.values() for image in found])
    else:
        _wait_out_leases(cluster, dead, images, wait_s, display)
    fenced_after_s = time.monotonic() - started
    connections = reachable_hosts(fleet, display)
    connections.pop(dead.name, None)
    results = []
    try:
        for record in guests:
            results.append(_restart(record, dead, connections, fenced_after_s, display))
    finally:
        _close(connections)
    GuestRecords(access).save([
        GuestRecord(record.name, result.destination, True, record.xml)
        for record, result in zip(guests, results, strict=True) if result.destination])
    return results


def _images_of(cluster: ClusterView, guests: list[GuestRecord]) -> dict[str, list[ImageFile]]:
    images = {}
    for record in guests:
        paths = [d.source for d in parse_domain(record.xml).disks
                 if d.kind == "file" and cluster.relative(d.source) is not None]
        images[record.name] = [i for i in cluster.images(paths).values() if i is not None]
    return images


def _wait_out_leases(cluster: ClusterView, dead: MigrationHost,
                     images: dict[str, list[ImageFile]], wait_s: float,
                     display: ProgressDisplay) -> None:
    every_image = [image for found in images.values() for image in found]
    deadline = time.monotonic() + wait_s
    display.say(f"waiting for {dead.name}'s write leases to expire (its session must stay"
                " silent for the master's lease expiry)")
    while True:
        held = [path for path, lease in cluster.leases(every_image).items()
                if lease.holder_session and lease.holder_host == dead.label]
        if not held:
            return
        if time.monotonic() > deadline:
            raise MigrationFailed(
                f"{dead.name} still holds the write lease of {', '.join(held)} after"
                f" {wait_s:g} s: it is alive and talking to the master. Not restarting its"
                " guests; if it is powered off, run vmstore failover --fenced")
        time.sleep(FAILOVER_LEASE_POLL_INTERVAL_S)


def _restart(record: GuestRecord, dead: MigrationHost, connections: Connections,
             fenced_after_s: float, display: ProgressDisplay) -> FailoverResult:
    problems = []
    memory_kib = parse_domain(record.xml).memory_kib
    for destination in _by_free_memory(connections, dead):
        connection = connections[destination.name][1]
        if connection.getFreeMemory() // 1024 < memory_kib:
            problems.append(f"{destination.name}: not enough free memory")
            continue
        try:
            domain = connection.defineXML(record.xml)
            domain.create()
        except libvirt.libvirtError as error:
            problems.append(f"{destination.name}: {error.get_error_message()}")
            continue
        display.say(f"{record.name}: restarted on {destination.name}")
        return FailoverResult(record.name, destination.label, fenced_after_s)
    display.say(f"{record.name}: could not be restarted: {'; '.join(problems)}")
    return FailoverResult(record.name, "", fenced_after_s, "; ".join(problems))
