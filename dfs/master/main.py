"""The master process: one nursery, every service started with ``nursery.start``.

Stops cleanly on SIGTERM/SIGINT: the listener closes, in-flight commits
finish (they are shielded), the database closes.

A data directory without metadata is a new cluster only when the settings say so
(``new_cluster``, `vmstore master --new-cluster`): a master that came up empty by
mistake (a wrong path, a swapped disk) would otherwise call every replica of the real
cluster stale. Its chunkservers refuse it anyway (``dfs.protocol.cluster_identity``),
but refusing to start says what is wrong where the operator looks first.
"""

from __future__ import annotations

import logging
import random
import signal
from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import trio

from vmstore.dfs.constants import CLOCK_SKEW_S_MAX, LEASE_EXPIRY_S, REPLICATION_DELAY_S
from vmstore.dfs.errors import ConfigError, unwrapped_errors
from vmstore.dfs.master.backups import BackupSchedule, ScheduledBackups
from vmstore.dfs.master.chunk_manager import ChunkManager
from vmstore.dfs.master.chunkserver_service import ChunkserverService
from vmstore.dfs.master.client_service import ClientService
from vmstore.dfs.master.committer import BatchJournal, GroupCommitter
from vmstore.dfs.master.exports import ExportRule
from vmstore.dfs.master.lease_manager import LeaseManager
from vmstore.dfs.master.orphans import Orphans
from vmstore.dfs.master.registry import STARTUP_GRACE_S, Registry
from vmstore.dfs.master.replication import ReplicationDriver
from vmstore.dfs.metadata.chunks import ChunkTable
from vmstore.dfs.metadata.identity import advance_generation, begin_generation
from vmstore.dfs.metadata.leases import LeaseTable
from vmstore.dfs.metadata.namespace import Namespace
from vmstore.dfs.metadata.sessions import SessionTable
from vmstore.dfs.metadata.store import MetadataStore
from vmstore.dfs.protocol.capability import CapabilitySigner
from vmstore.dfs.protocol.messages import HaStatus
from vmstore.dfs.protocol.rpc import Connection, Handler, listen, serve_listening

log = logging.getLogger(__name__)
ROLES = frozenset({"client", "chunkserver", "admin"})


@dataclass(frozen=True)
class MasterSettings:
    data_dir: Path
    listen_host: str
    port: int
    key: bytes
    seed: int | None = None  # placement RNG; None: from the OS
    replication_delay_s: float = REPLICATION_DELAY_S
    # After a restart: how long chunkservers have to come back before their
    # replicas count as missing.
    startup_grace_s: float = STARTUP_GRACE_S
    # A client silent this long loses its write leases (and its tokens expired before).
    lease_expiry_s: float = LEASE_EXPIRY_S
    # Which client addresses may mount what (``master.exports``); none: all, read-write.
    exports: tuple[ExportRule, ...] = ()
    # A data directory without metadata may start a new cluster; ignored when the
    # metadata exists. Off: such a master refuses to start (see the module docstring).
    new_cluster: bool = False
    # Backups the master takes of its metadata ([master] backup_*); None: none.
    backups: BackupSchedule | None = None
    # Metadata HA (dfs.master.ha): etcd's client URLs; none: the embedded master.
    etcd_endpoints: tuple[str, ...] = ()
    etcd_prefix: str = "/vmstore/"  # the cluster's keys in etcd (one etcd, many clusters)
    advertise: str = ""  # host:port clients reach this master at, recorded with the leader key


def metadata_path(settings: MasterSettings) -> Path:
    """The metadata database; ConfigError if it is missing and no new cluster was asked for."""
    database = settings.data_dir / "metadata.db"
    if database.exists():
        if settings.new_cluster:
            log.info("%s holds metadata already: not a new cluster, --new-cluster ignored",
                     database)
        return database
    if not settings.new_cluster:
        raise ConfigError(
            f"no metadata in {settings.data_dir} (no {database.name}). If this master's"
            " metadata is elsewhere, point --data-dir (or [master] data_dir) at it; a master"
            " started empty would be refused by the cluster's chunkservers. To create a new"
            " cluster here, start it once with --new-cluster (or [master] new_cluster = true)")
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    log.info("creating a new cluster: metadata in %s", database)
    return database


async def run_master(settings: MasterSettings, *, journal: BatchJournal | None = None,
                     ha_status: Callable[[], HaStatus] | None = None,
                     task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
    """Serve until cancelled; reports the bound port through ``task_status``.

    ``journal``: an HA leader's (``dfs.master.ha``): every commit, this start's
    generation first, goes to the journal in etcd before it is acknowledged.
    ``ha_status``: an HA leader's view of its group, for status.
    """
    with ExitStack() as stack:
        database = metadata_path(settings)
        # No fsync per commit: an HA leader's batches are in etcd's journal first; the
        # embedded master's committer syncs them itself (at once for durable changes,
        # within METADATA_SYNC_DELAY_S_MAX for namespace changes).
        writer = MetadataStore(database, fsync_commits=False)
        stack.callback(writer.close)
        embedded_identity = None
        if journal is None:
            embedded_identity = begin_generation(writer)
            writer.sync()  # this start's generation is durable before anyone sees it
        reader = MetadataStore(database)
        stack.callback(reader.close)
        committer = GroupCommitter(writer, journal, syncs_commits=journal is None)
        async with trio.open_nursery() as nursery:
            await nursery.start(committer.serve)
            identity = embedded_identity
            if identity is None:  # an HA leader: its generation is its first journaled batch
                identity = await committer.run(partial(advance_generation, writer))
            registry = Registry(settings.startup_grace_s)
            reader_chunks = ChunkTable(reader)
            for server_id, _uuid, host, port, label, draining in reader_chunks.servers():
                registry.known(server_id, host, port, label)
                registry.chunkservers[server_id].draining = draining
            signer = CapabilitySigner(settings.key,
                                      write_life_s=settings.lease_expiry_s - CLOCK_SKEW_S_MAX,
                                      generation=identity.generation)
            chunk_manager = ChunkManager(committer, ChunkTable(writer), reader_chunks, registry,
                                         random.Random(settings.seed), signer)
            chunkservers = ChunkserverService(committer, ChunkTable(writer), chunk_manager,
                                              registry, identity)
            writer_namespace = Namespace(writer, registry.is_open)
            reader_namespace = Namespace(reader)
            orphans = Orphans(committer, writer_namespace, reader_namespace, chunk_manager,
                              registry)
            leases = LeaseManager(committer, LeaseTable(writer), LeaseTable(reader),
                                  SessionTable(writer), registry, chunk_manager, signer,
                                  settings.lease_expiry_s, files_released=orphans.delete)
            leases.adopt_sessions_after_restart()
            healing = ReplicationDriver(chunk_manager, settings.replication_delay_s)

            backups = None if settings.backups is None else ScheduledBackups(
                database, settings.backups)
            # Bound first: the client service reports the master's address with its port.
            listening = await listen(settings.listen_host, settings.port)
            port = listening.port
            clients = ClientService(committer, writer_namespace, reader_namespace,
                                    SessionTable(writer), chunk_manager, registry, leases,
                                    orphans, healing, f"{settings.listen_host}:{port}",
                                    settings.exports, backups, ha_status)

            def handler_for(connection: Connection) -> Handler:
                if connection.role == "chunkserver":
                    return chunkservers.handler_for(connection)
                return clients.handler_for(connection)

            await nursery.start(serve_listening, listening, settings.key, ROLES, handler_for)
            await nursery.start(chunkservers.liveness_loop)
            await nursery.start(leases.expiry_loop)
            nursery.start_soon(chunk_manager.deletion_loop)
            await nursery.start(healing.run)
            if backups is not None:
                await nursery.start(backups.run)
            nursery.start_soon(orphans.sweep_after_restart, settings.startup_grace_s)
            await nursery.start(clients.health.gauge_loop)
            log.info("master serving on %s:%d, metadata in %s (%s)", settings.listen_host, port,
                     database, identity.describe())
            task_status.started(port)


async def run_until_signal(service: Callable[..., Any], *args: Any,
                           on_started: Callable[[Any], None] | None = None) -> None:
    """Run ``service`` until SIGTERM or SIGINT, then cancel it and return.

    Signals count from the first moment, start-up included: a chunkserver
    waiting for an unreachable master must still stop when told to. A service's one
    error leaves unwrapped, so that `vmstore` prints a refusal to start as a message.
    """
    with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals, \
            unwrapped_errors():
        async with trio.open_nursery() as nursery:
            async def stop_on_signal() -> None:
                async for signal_number in signals:
                    log.info("received %s; stopping", signal.Signals(signal_number).name)
                    nursery.cancel_scope.cancel()
                    return

            nursery.start_soon(stop_on_signal)
            started = await nursery.start(service, *args)
            if on_started is not None:
                on_started(started)
