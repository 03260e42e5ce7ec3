"""After a failed move: leave no half guest behind, and say where the guest really runs.

Promises (issue 16), kept by ``aftermath`` once a move has failed or was aborted:
* No leftover on the destination: an incoming copy that never ran (paused,
  waiting for memory that will not come) is destroyed, and a definition the
  move left there (``VIR_MIGRATE_PERSIST_DEST``) that was not there before is
  removed. A copy that *runs* on the destination is never touched: then the
  move did happen (its answer was lost), and the report says so.
* The truth about the source: "it keeps running on SOURCE" is said only when the
  source host still holds every image's write lease. A source cut off past the
  lease expiry has lost its session, and with it its leases: its guest runs but
  every write fails (EIO). The report then names the guest as fenced and the
  exact commands that restart it there, which take the lease back (nobody else
  holds it; the lost lease's epoch stays fenced at the chunkservers).
* Bounded: a source the master has not heard from is watched for at most
  MIGRATION_FENCE_WAIT_S, until it is heard from again or its leases are gone.

Caveats: a destination whose libvirtd cannot be reached is not cleaned (the
report says so); libvirt removes a stalled incoming copy itself once its own
keepalive to the source fails.
"""

from __future__ import annotations

import time
from typing import Any

import libvirt

from vmstore.dfs.constants import (
    MIGRATION_FENCE_WAIT_S,
    MIGRATION_POLL_INTERVAL_S,
    MIGRATION_SOURCE_SILENT_MS,
)
from vmstore.dfs.errors import DfsError
from vmstore.dfs.migration.cluster_view import ClusterView, ImageFile
from vmstore.dfs.migration.hosts import MigrationHost
from vmstore.dfs.progress import ProgressDisplay
from vmstore.dfs.protocol.messages import LeaseInfo


def defined_on(connection: Any, name: str) -> bool:
    """Whether ``connection``'s host knows a domain ``name`` (running or defined)."""
    try:
        connection.lookupByName(name)
    except libvirt.libvirtError:
        return False
    return True


def clean_destination(connection: Any, name: str, defined_before: bool) -> list[str]:
    """Remove what a failed move left of guest ``name`` on the destination; notes."""
    try:
        domain = connection.lookupByName(name)
    except libvirt.libvirtError:
        return []  # nothing there: the usual outcome
    notes = []
    try:
        if domain.isActive():
            if domain.state()[0] != libvirt.VIR_DOMAIN_PAUSED:
                return [f"guest {name} RUNS on the destination too: the move may have"
                        " completed though its answer was lost; not touched"]
            domain.destroy()  # an incoming copy that never got its memory
            notes.append("the destination's incomplete incoming copy was destroyed")
            if not defined_on(connection, name):
                return notes  # it was transient: gone with the destroy
            domain = connection.lookupByName(name)
        if domain.isPersistent() and not defined_before:
            domain.undefine()
            notes.append("the definition the move left on the destination was removed")
    except libvirt.libvirtError as error:
        notes.append(f"cleaning the destination failed: {error.get_error_message()}"
                     f" (check: virsh list --all; virsh undefine {name})")
    return notes


def _settled(info: LeaseInfo, first: LeaseInfo, source_label: str) -> bool:
    """Whether ``info`` tells for sure whether the source still holds the lease."""
    if not info.holder_session or info.holder_host != source_label:
        return True
    if info.holder_session != first.holder_session:
        return True
    # heard from recently, or since the first look
    return info.silent_ms < MIGRATION_SOURCE_SILENT_MS or info.silent_ms < first.silent_ms


def watch_source_leases(cluster: ClusterView, images: list[ImageFile],
                        source_label: str, display: ProgressDisplay) -> dict[str, LeaseInfo]:
    """Each image's lease once it says whether the source still holds it (bounded)."""
    first = cluster.leases(images)
    latest = dict(first)
    deadline = time.monotonic() + MIGRATION_FENCE_WAIT_S
    said = False
    while not all(_settled(latest[path], first[path], source_label) for path in latest):
        if time.monotonic() >= deadline:
            break
        if not said:
            display.say(f"{source_label} has not been heard from for"
                        f" {max(i.silent_ms for i in latest.values()) / 1000:.1f} s: waiting"
                        f" (at most {MIGRATION_FENCE_WAIT_S:g} s) to see whether it keeps its"
                        " write leases")
            said = True
        time.sleep(MIGRATION_POLL_INTERVAL_S)
        latest = cluster.leases(images)
    return latest


def where_it_runs(cluster: ClusterView, images: list[ImageFile], guest: str,
                  source: MigrationHost, display: ProgressDisplay) -> str:
    """The end of a failure message: the guest's true state on the source."""
    if not images:
        return f"it keeps running on {source.name}"
    try:
        leases = watch_source_leases(cluster, images, source.label, display)
    except DfsError as error:
        return (f"it should keep running on {source.name}, but its write leases could not"
                f" be checked ({error.message}): check with vmstore lease PATH")
    lost = {path: info for path, info in leases.items()
            if not info.holder_session or info.holder_host != source.label}
    silent = [path for path, info in leases.items()
              if path not in lost and info.silent_ms >= MIGRATION_SOURCE_SILENT_MS]
    if not lost and not silent:
        return f"it keeps running on {source.name}"
    if not lost:
        return (f"it runs on {source.name}, whose mount the master has not heard from for"
                f" {max(leases[p].silent_ms for p in silent) / 1000:.1f} s; if that lasts"
                " past the lease expiry the guest is fenced: check with vmstore lease"
                f" {silent[0]}")
    held = sorted({info.holder_host for info in lost.values() if info.holder_session})
    if held:
        return (f"it runs on {source.name} but is FENCED there: host {', '.join(held)} holds"
                f" the write lease of {', '.join(sorted(lost))}, so its writes fail with EIO;"
                f" find out where it runs (virsh list on {', '.join(held)}) before anything"
                " else")
    uri = source.libvirt_uri
    return (f"it runs on {source.name} but is FENCED there: its session expired (cut off"
            f" past the lease expiry) and nobody holds the write lease of"
            f" {', '.join(sorted(lost))}, so its writes fail with EIO. Restart it there"
            f" to take the lease back: virsh -c '{uri}' destroy {guest} && virsh -c"
            f" '{uri}' start {guest}")
