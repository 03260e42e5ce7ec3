"""The chunkserver process: data service on its port (and, for readers on this host, on
an abstract Unix socket named after that port: short-circuit reads), link to the master."""

from __future__ import annotations

import logging
from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import trio

from vmstore.dfs.chunkserver.chunk_store import ChunkStore
from vmstore.dfs.chunkserver.data_service import DataService
from vmstore.dfs.chunkserver.identity import ServerIdentity, load_accepted_master, server_uuid
from vmstore.dfs.chunkserver.local_read_service import LocalReadService
from vmstore.dfs.chunkserver.master_link import DamageReports, LinkSettings, MasterLink
from vmstore.dfs.chunkserver.quarantine_keeper import QuarantineKeeper
from vmstore.dfs.chunkserver.replicator import Replicator
from vmstore.dfs.chunkserver.scrubber import Scrubber
from vmstore.dfs.chunkserver.write_fence import WriteFence
from vmstore.dfs.constants import (
    QUARANTINE_RETENTION_S,
    REPLICATION_BANDWIDTH_BYTES_PER_S,
    SCRUB_RATE_BYTES_PER_S,
)
from vmstore.dfs.protocol import auth
from vmstore.dfs.protocol.capability import VerifiedCapabilities
from vmstore.dfs.protocol.rpc import ConnectionPool, serve_connections

log = logging.getLogger(__name__)
ROLES = frozenset({"client", "peer"})  # its clients, and other chunkservers


@dataclass(frozen=True)
class ChunkserverSettings:
    data_dir: Path
    listen_host: str
    port: int
    master_host: str
    master_port: int
    key: auth.KeyMaterial
    host_label: str
    advertise_host: str = ""  # defaults to listen_host
    replication_bandwidth_bytes_per_s: float = REPLICATION_BANDWIDTH_BYTES_PER_S
    scrub_rate_bytes_per_s: float = SCRUB_RATE_BYTES_PER_S
    quarantine_retention_s: float = QUARANTINE_RETENTION_S
    # Short-circuit reads for clients on this host (an abstract Unix socket of
    # the real network namespace: off in an in-process cluster, dfs.testing).
    local_reads: bool = True
    # The replica files (dfs.testing lays faults over them).
    store_factory: Callable[[Path], ChunkStore] = ChunkStore
    # The rest of an HA group's masters (dfs.master.ha); the link tries each in turn.
    other_masters: tuple[tuple[str, int], ...] = ()


async def run_chunkserver(settings: ChunkserverSettings, *,
                          task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
    """Serve until cancelled; ``started`` with the data port once registered."""
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    with ExitStack() as stack:
        store = settings.store_factory(settings.data_dir)
        stack.callback(store.close)
        async with trio.open_nursery() as nursery:
            uuid = server_uuid(settings.data_dir)  # what it proves to the master
            # A credential file of another kind (a client's, another chunkserver's) fails
            # here, naming why, rather than at every reconnect to the master.
            auth.credentials_for(settings.key, "chunkserver", uuid)
            # To other chunkservers as a peer: they check that credential (they hold
            # it), as they cannot derive any uuid's without the cluster key.
            peers = ConnectionPool(nursery, settings.key, "peer", compress=False)
            identity = ServerIdentity()  # the link fills it in at registration
            damage_reports = DamageReports()  # the link sends them
            fence = WriteFence(VerifiedCapabilities(settings.key))
            data = DataService(store, peers, fence, identity, damage_reports.report)
            replicator = Replicator(store, peers, data.disk,
                                    settings.replication_bandwidth_bytes_per_s)
            scrubber = Scrubber(store, data.disk, settings.scrub_rate_bytes_per_s,
                                damage_reports.report)
            port = await nursery.start(serve_connections, settings.listen_host, settings.port,
                                       settings.key, ROLES, data.handler_for)
            advertise_host = settings.advertise_host or settings.listen_host
            # Named after the address clients get from the master, and up before
            # the master hands that address out.
            if settings.local_reads:
                await nursery.start(LocalReadService(data).serve, advertise_host, port)
            link = MasterLink(LinkSettings(
                master_host=settings.master_host, master_port=settings.master_port,
                key=settings.key, server_uuid=uuid,
                other_masters=settings.other_masters,
                advertise_host=advertise_host, data_port=port, host_label=settings.host_label,
                data_dir=settings.data_dir), store, data,
                load_accepted_master(settings.data_dir), identity, damage_reports, replicator)
            await nursery.start(link.run)
            nursery.start_soon(data.disk_watch.run)
            nursery.start_soon(scrubber.run)
            nursery.start_soon(QuarantineKeeper(
                store.quarantine, store.space, data.disk, settings.quarantine_retention_s,
                link.safe_chunks).run)
            log.info("chunkserver %d serving %s on %s:%d", identity.server_id, settings.data_dir,
                     settings.listen_host, port)
            task_status.started(port)
