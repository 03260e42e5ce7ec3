"""Which replicas a registering chunkserver reports the master counts (issue 19).

Promise: a report never makes the master drop a replica another chunkserver holds,
except when it carries a version bump that only a holder can have received (the
master died before committing it). A replica of a deleted or unknown chunk, or
behind the master's version, is stale; one above the master's version from a server
that never held the chunk is refused and counted (``RefusedVersions``); both are
returned for the chunkserver to quarantine (reversible, never unlinked). One at the
master's version on a server the master does not list is neither adopted nor
quarantined here (a copy built aside may still replace it).
"""

from __future__ import annotations

import logging

from vmstore.dfs.log_fields import about
from vmstore.dfs.master.refused_versions import RefusedVersions
from vmstore.dfs.metadata.chunks import ChunkTable
from vmstore.dfs.protocol.messages import ChunkReport
from vmstore.dfs.types import ChunkId, ChunkVersion, ServerId

log = logging.getLogger(__name__)


def reconcile_report(table: ChunkTable, refused_versions: RefusedVersions,
                     server_id: ServerId, reported: list[ChunkReport]) -> list[ChunkReport]:
    """Runs inside a commit (``table`` is the writer's): adopt current replicas, return
    the stale ones (and refused newer ones) for the chunkserver to quarantine."""
    stale: list[ChunkReport] = []
    held = table.chunks_on_server(server_id)
    seen: set[ChunkId] = set()
    for report in reported:
        chunk_id = ChunkId(report.chunk_id)
        current = table.version(chunk_id)
        if current is None or table.is_deleted(chunk_id) or report.version < current:
            stale.append(report)
            table.remove_replica(chunk_id, server_id)
            continue
        if report.version > current and chunk_id not in held:
            # Only a holder of the current version can have received a bump the
            # master did not commit. Anyone else (a key holder making things up, a
            # copy target cut off mid-copy) would, if believed, become the only
            # replica, and the real ones would be deleted. Not adopted: quarantined
            # there (reversible), counted and listed in status.
            log.warning("chunk %d: server %d claims version %d, master has %d and never"
                        " had it there; not adopted, its replica quarantined", chunk_id,
                        server_id, report.version, current,
                        extra=about("newer_version_refused", chunk=chunk_id,
                                    server=server_id, version=report.version))
            refused_versions.note(chunk_id, server_id, report.version, current)
            stale.append(report)
            continue
        if report.version == current and chunk_id not in held:
            # The current version, on a server the master does not list: a
            # create whose reply was lost, or a replica dropped (damaged,
            # surplus) whose deletion never arrived. Writes since went to the
            # holders only, and the version did not move (no holder left the
            # chain), so its bytes may be old: never adopted. Left on its
            # disk, like a refused newer version, until quarantine exists.
            log.warning("chunk %d: server %d has the current version %d but is not a"
                        " holder; not adopted, its replica left alone", chunk_id,
                        server_id, current,
                        extra=about("same_version_refused", chunk=chunk_id,
                                    server=server_id, version=current))
            continue
        if report.version > current:
            # A version bump reached this server but the master died before
            # committing it: this replica is the newest data there is.
            log.warning("chunk %d: server %d has version %d, master had %d; adopting",
                        chunk_id, server_id, report.version, current,
                        extra=about("newer_version_adopted", chunk=chunk_id,
                                    server=server_id, version=report.version))
            table.set_version(chunk_id, ChunkVersion(report.version))
            table.set_replicas(chunk_id, [server_id])
        else:
            table.add_replica(chunk_id, server_id)
        seen.add(chunk_id)
    for lost in held - seen:
        table.remove_replica(lost, server_id)
    return stale
