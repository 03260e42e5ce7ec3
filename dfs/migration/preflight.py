"""Checks before a guest moves: each failure names the disk or host at fault.

Promise: ``check`` returns only when the move is safe to attempt without
copying the guest's vmstore disks: both hosts mount this cluster at the
same path, every disk is an image file on it (or is listed for copying,
when asked), the cache mode keeps no data in the source's page cache,
libvirt will not chown the images behind the destination's back, and the
destination has the memory, CPU model and networks the guest needs.
Otherwise it raises PreflightFailed listing every problem found.
"""

from __future__ import annotations

import xml.etree.ElementTree as ElementTree
from dataclasses import dataclass, field
from typing import Any

import libvirt

from vmstore.dfs.constants import QEMU_MEMORY_OVERHEAD_KIB
from vmstore.dfs.errors import PreflightFailed
from vmstore.dfs.migration.cluster_view import ClusterView, ImageFile
from vmstore.dfs.migration.domain import GuestDefinition
from vmstore.dfs.migration.hosts import MigrationHost

SAFE_CACHE_MODES = frozenset({"none", "directsync"})


@dataclass
class Plan:
    """What the move will do with each disk."""

    images: list[ImageFile] = field(default_factory=list)  # on vmstore: not copied
    copied_disks: list[str] = field(default_factory=list)  # targets libvirt copies
    notes: list[str] = field(default_factory=list)


def check(guest: GuestDefinition, source: MigrationHost, destination: MigrationHost,
          destination_connection: Any, cluster: ClusterView, *,
          copy_storage: bool = False, trust_ownership: bool = False) -> Plan:
    problems: list[str] = []
    plan = Plan()
    if source.label == destination.label:
        problems.append(f"{guest.name} is already on {destination.name}")
    _check_mounts(cluster, source, destination, problems)
    _check_disks(guest, cluster, plan, problems, copy_storage, trust_ownership)
    _check_memory(guest, destination, destination_connection, problems)
    _check_cpu(guest, source, destination, destination_connection, problems)
    _check_networks(guest, destination, destination_connection, plan, problems)
    if problems:
        raise PreflightFailed(f"cannot move {guest.name} from {source.name} to"
                              f" {destination.name}:\n  - " + "\n  - ".join(problems))
    return plan


def _check_mounts(cluster: ClusterView, source: MigrationHost, destination: MigrationHost,
                  problems: list[str]) -> None:
    mounted = cluster.mounted_hosts()
    for host in (source, destination):
        points = mounted.get(host.label, set())
        if cluster.mount not in points:
            where = f" (it mounts it at {', '.join(sorted(points))})" if points else ""
            problems.append(f"host {host.name} (label {host.label}) does not mount this"
                            f" vmstore cluster at {cluster.mount}{where}")


def _check_disks(guest: GuestDefinition, cluster: ClusterView, plan: Plan,
                 problems: list[str], copy_storage: bool, trust_ownership: bool) -> None:
    candidates = [d for d in guest.disks if d.kind == "file" and d.source
                  and cluster.relative(d.source) is not None]
    images = cluster.images([d.source for d in candidates])
    for disk in guest.disks:
        name = f"disk {disk.target or '?'} ({disk.source or 'no media'})"
        if not disk.source:
            continue  # an empty cdrom drive: nothing to move
        image = images.get(disk.source)
        if image is None:
            if disk.read_only and disk.device == "cdrom":
                plan.notes.append(f"{name} is a read-only cdrom outside vmstore: the"
                                  " destination must have the same file")
            elif copy_storage:
                plan.copied_disks.append(disk.target)
                plan.notes.append(f"{name} is not on vmstore: libvirt copies it")
            else:
                problems.append(f"{name} is not a file on the vmstore mount {cluster.mount};"
                                " move it there, or pass --copy-storage to copy it")
            continue
        if disk.cache not in SAFE_CACHE_MODES and not disk.read_only:
            problems.append(f"{name} has cache mode {disk.cache or 'default (writeback)'}:"
                            " the source's page cache would hold writes the destination"
                            " cannot see; use cache='none' or 'directsync'")
        if not (disk.relabel_off or guest.dac_relabel_off or trust_ownership):
            problems.append(f"{name}: libvirt would chown the image back on the source"
                            " after the move (it does not know vmstore as shared storage);"
                            " add <seclabel model='dac' relabel='no'/> to the disk's"
                            " <source>, or set dynamic_ownership = 0 (or, libvirt >= 11.3,"
                            " shared_filesystems) in qemu.conf and pass --trust-ownership")
        plan.images.append(image)


def _check_memory(guest: GuestDefinition, destination: MigrationHost, connection: Any,
                  problems: list[str]) -> None:
    free_kib = connection.getFreeMemory() // 1024
    needed_kib = guest.memory_kib + QEMU_MEMORY_OVERHEAD_KIB
    if free_kib < needed_kib:
        problems.append(f"host {destination.name} has {free_kib // 1024} MiB free; the guest"
                        f" needs {needed_kib // 1024} MiB")


def _check_cpu(guest: GuestDefinition, source: MigrationHost, destination: MigrationHost,
               connection: Any, problems: list[str]) -> None:
    if guest.cpu_mode == "host-passthrough":
        problems.append("the guest's CPU is host-passthrough: it may not run on"
                        f" {destination.name}'s CPU; use a named CPU model")
        return
    if guest.cpu_mode != "custom" or not guest.cpu_model:
        return
    known = _cpu_models(connection, guest.virt_type)
    if known and guest.cpu_model not in known:
        problems.append(f"host {destination.name} does not offer CPU model"
                        f" {guest.cpu_model!r} (it has {len(known)} others)")


def _cpu_models(connection: Any, virt_type: str) -> set[str]:
    try:
        capabilities = ElementTree.fromstring(connection.getDomainCapabilities(
            None, None, None, virt_type))
    except libvirt.libvirtError:
        return set()
    return {model.text for model in capabilities.findall(
        "cpu/mode[@name='custom']/model") if model.text}


def _check_networks(guest: GuestDefinition, destination: MigrationHost, connection: Any,
                    plan: Plan, problems: list[str]) -> None:
    for interface in guest.interfaces:
        if interface.kind == "network":
            try:
                active = connection.networkLookupByName(interface.source).isActive()
            except libvirt.libvirtError:
                active = False
            if not active:
                problems.append(f"host {destination.name} has no active libvirt network"
                                f" {interface.source!r}")
        elif interface.kind == "bridge":
            try:
                connection.interfaceLookupByName(interface.source)
            except libvirt.libvirtError:
                plan.notes.append(f"could not confirm bridge {interface.source!r} on"
                                  f" {destination.name} (libvirt's interface driver did not"
                                  " list it); libvirt refuses the move if it is missing")
