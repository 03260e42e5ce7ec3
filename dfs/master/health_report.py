"""What the master says of the cluster's health: `vmstore status`, `vmstore fsck`, and
the health gauges of /metrics.

Promise: reads only. Nothing here changes the metadata, the registry or a
chunkserver; a chunk counts in exactly one of ok / undergoal / endangered / lost,
by its replicas on chunkservers that are up now. The gauges are refreshed every
MASTER_GAUGES_INTERVAL_S by ``gauge_loop``, so that a scrape never touches SQLite.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol

import trio
from prometheus_client import Gauge

from vmstore.dfs.constants import MASTER_GAUGES_INTERVAL_S
from vmstore.dfs.master.backups import ScheduledBackups
from vmstore.dfs.master.chunk_manager import ChunkManager
from vmstore.dfs.master.lease_manager import LeaseManager
from vmstore.dfs.master.registry import Registry
from vmstore.dfs.metadata import fsck
from vmstore.dfs.metadata.namespace import Namespace
from vmstore.dfs.metrics import REGISTRY
from vmstore.dfs.protocol import messages as m

CHUNKS = Gauge("vmstore_chunks", "Chunks by health (each counts in one state)", ["state"],
               registry=REGISTRY)
CHUNKSERVERS = Gauge("vmstore_chunkservers", "Known chunkservers", ["state"],
                     registry=REGISTRY)
CLIENTS = Gauge("vmstore_client_sessions", "Connected client sessions (mounts, tools)",
                registry=REGISTRY)
LEASES = Gauge("vmstore_write_leases", "Files with a write lease held", registry=REGISTRY)
REBUILD = Gauge("vmstore_rebuild", "Re-replication: chunks waiting for a copy, copies"
                " running", ["kind"], registry=REGISTRY)
REBUILD_RATE = Gauge("vmstore_rebuild_bytes_per_second",
                     "Bytes copied by re-replication, over the last minute", registry=REGISTRY)
REBUILT = Gauge("vmstore_rebuild_chunks_copied", "Chunks copied since the master started",
                registry=REGISTRY)


class HealingReporter(Protocol):
    def status(self) -> m.HealingStatus: ...


class HealthReport:
    def __init__(self, registry: Registry, chunk_manager: ChunkManager, namespace: Namespace,
                 leases: LeaseManager, healing: HealingReporter, master_address: str,
                 backups: ScheduledBackups | None,
                 ha_status: Callable[[], m.HaStatus] | None) -> None:
        self.registry = registry
        self.chunk_manager = chunk_manager
        self.namespace = namespace  # the reader's
        self.leases = leases
        self.healing = healing
        self.master_address = master_address
        self.backups = backups
        self.ha_status = ha_status  # an HA leader's view of its group (dfs.master.ha_status)

    def status(self) -> m.StatusReply:
        counts = {"ok": 0, "undergoal": 0, "endangered": 0, "lost": 0}
        up = {e.server_id for e in self.registry.up_servers()}
        for _chunk_id, goal, holders in self.chunk_manager.chunks.health_rows():
            counts[chunk_state(sum(1 for h in holders if h in up), goal)] += 1
        return m.StatusReply(
            master_address=self.master_address,
            chunkservers=self.registry.chunkserver_statuses(
                self.chunk_manager.chunks.replica_counts()),
            chunks=m.ChunkHealth(total=sum(counts.values()), **counts),
            clients=[s.status for s in self.registry.sessions.values()
                     if any(not c.closed.is_set() for c in s.connections)],
            inodes=self.namespace.inode_count(),
            healing=self.healing.status(),
            write_leases=self.leases.held_count(),
            refused=list(self.registry.refused.values()),
            damaged=[m.DamagedChunk(chunk_id=chunk_id, server_id=server_id, bad_blocks=ranges)
                     for chunk_id, server_id, ranges in self.chunk_manager.damage
                     if server_id in self.chunk_manager.chunks.replicas(chunk_id)],
            backups=None if self.backups is None else self.backups.status(),
            ha=None if self.ha_status is None else self.ha_status(),
            refused_versions=self.chunk_manager.refused_versions.listed(),
        )

    def fsck(self) -> m.FsckReply:
        up = {e.server_id for e in self.registry.up_servers()}
        store = self.namespace.store
        holders = fsck.holders(store)
        problems: list[m.FsckProblem] = []
        chunks = fsck.file_chunks(store)
        for inode, index, chunk_id, goal in chunks:
            live = sum(1 for h in holders.get(chunk_id, []) if h in up)
            state = chunk_state(live, goal)
            bad_blocks = self.chunk_manager.damage.of_chunk(chunk_id)
            if bad_blocks is not None and state != "lost":
                state = "damaged"  # its only live replicas have bad blocks
            if state != "ok":
                problems.append(m.FsckProblem(
                    path=fsck.path_of(store, inode), inode=inode, chunk_index=index,
                    chunk_id=chunk_id, state=state, live_replicas=live, goal=goal,
                    bad_blocks=bad_blocks or []))
        errors = fsck.namespace_errors(store, self.registry.is_open)
        return m.FsckReply(chunks_checked=len(chunks), problems=problems,
                           namespace_errors=errors)

    async def gauge_loop(self, *, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        """Keep the health gauges of /metrics current."""
        task_status.started()
        while True:
            status = self.status()
            for state in ("ok", "undergoal", "endangered", "lost"):
                CHUNKS.labels(state).set(getattr(status.chunks, state))
            for state in ("up", "down"):
                CHUNKSERVERS.labels(state).set(
                    sum(1 for c in status.chunkservers if c.state == state))
            CLIENTS.set(len(status.clients))
            LEASES.set(status.write_leases)
            if status.healing is not None:
                REBUILD.labels("waiting").set(status.healing.under_goal)
                REBUILD.labels("running").set(status.healing.copying)
                REBUILD_RATE.set(status.healing.copied_bytes_per_s)
                REBUILT.set(status.healing.chunks_copied)
            await trio.sleep(MASTER_GAUGES_INTERVAL_S)


def chunk_state(live: int, goal: int) -> str:
    """A chunk counts in exactly one of ok / undergoal / endangered / lost."""
    if live == 0:
        return "lost"
    if live == 1 and goal >= 2:
        return "endangered"
    return "undergoal" if live < goal else "ok"
