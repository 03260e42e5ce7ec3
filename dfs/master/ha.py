"""A master in an HA group: standby until elected, leader until deposed, then standby.

Design (issue 15): etcd elects the leader (``dfs.master.leadership``) and keeps
the metadata journal (``dfs.master.journal``). Each master keeps its own SQLite
copy of the metadata, as the embedded master does, but commits to it without
an fsync: the journal is the durable copy, and a copy that lost its last
commits in a crash lost its journal position with them, so it replays them.

* **Standby:** follows the journal into its copy, entry by entry, each in one
  transaction that also records the entry's number (``journal_position``). It
  does not listen: clients and chunkservers that try it are refused and go on
  to the next master of their list.
* **Taking over:** once elected, it reads the journal to its end (the old
  leader can append nothing more: its epoch no longer matches the leader key),
  then runs the ordinary master (``run_master``) with a ``JournaledCommits``:
  every group commit's rows go to etcd, guarded by its epoch, before COMMIT
  and before any reply. Its first commit moves the generation forward, so
  chunkservers that meet it refuse the old leader's older generation
  (``dfs.protocol.cluster_identity``).
* **Deposed** (the lease not renewed in time, or an append refused): the
  leader's cancel scope ends every service at once, and the master starts
  over as a standby. Its copy never holds what the journal lacks (a batch
  commits locally only after etcd took it), so nothing is to be discarded;
  an entry whose append answer was lost is applied from the journal like any.
* **Snapshots:** every JOURNAL_ENTRIES_PER_SNAPSHOT entries (and when an
  empty journal is started from a master's own metadata), the leader copies
  its metadata between two batches and publishes it; the journal before it
  is trimmed. A standby whose copy is missing, or older than the oldest entry
  kept, starts from the snapshot.

To a mount a failover looks like a master restart: its calls fail to connect,
it tries the next master, and resumes its session there (sessions, leases,
open files and the reply cache are tables, journaled like the rest).
"""

from __future__ import annotations

import logging
import os
import sqlite3
import time
from functools import partial
from pathlib import Path
from typing import Any

import trio

from vmstore.dfs.constants import (
    JOURNAL_ENTRIES_PER_SNAPSHOT,
    RECONNECT_BACKOFF_S_MAX,
)
from vmstore.dfs.errors import ConfigError, EtcdUnavailable, JournalTrimmed
from vmstore.dfs.log_fields import about
from vmstore.dfs.master.etcd_client import EtcdClient
from vmstore.dfs.master.ha_status import (
    JOURNAL_APPEND_SECONDS,
    JOURNAL_POSITION,
    HaMonitor,
    StandbyProgress,
    report_standby,
)
from vmstore.dfs.master.journal import JournalEntry, MetadataJournal
from vmstore.dfs.master.leadership import Leadership
from vmstore.dfs.master.main import MasterSettings, metadata_path, run_master
from vmstore.dfs.metadata.change_capture import (
    ChangeCapture,
    apply_changes,
    decode_changes,
    encode_changes,
)
from vmstore.dfs.metadata.store import MetadataStore

log = logging.getLogger(__name__)
DATABASE_NAME = "metadata.db"


def journal_position(store: MetadataStore) -> int:
    row = store.one("SELECT seq FROM journal_position WHERE id = 1")
    return int(row[0]) if row is not None else 0


def _set_position(store: MetadataStore, seq: int) -> None:
    store.execute("INSERT OR REPLACE INTO journal_position(id, seq) VALUES (1, ?)", (seq,))


def _cluster_id(store: MetadataStore) -> str:
    row = store.one("SELECT value FROM meta WHERE key = 'cluster_id'")
    return str(row[0]) if row is not None else ""


def apply_entries(store: MetadataStore, entries: list[JournalEntry]) -> None:
    """Bring a copy forward by ``entries`` (the next ones after its position)."""
    for entry in entries:
        with store.transaction():
            position = journal_position(store)
            if entry.seq != position + 1:
                raise AssertionError(f"journal entry {entry.seq} after position {position}")
            apply_changes(store.connection, decode_changes(entry.changes))
            _set_position(store, entry.seq)


def serialize(store: MetadataStore) -> bytes:
    """A consistent copy of the database file's contents (SQLite's online backup)."""
    copy = sqlite3.connect(":memory:")
    try:
        store.connection.backup(copy)
        return copy.serialize()
    finally:
        copy.close()


def install_database(data_dir: Path, database: bytes) -> None:
    """Replace the copy in ``data_dir`` by ``database`` (no store may be open on it)."""
    data_dir.mkdir(parents=True, exist_ok=True)
    path = data_dir / DATABASE_NAME
    # An old write-ahead log would be replayed into the new file: it goes first.
    for suffix in ("-wal", "-shm"):
        Path(str(path) + suffix).unlink(missing_ok=True)
    temporary = data_dir / (DATABASE_NAME + ".snapshot")
    with open(temporary, "wb") as file:
        file.write(database)
        file.flush()
        os.fsync(file.fileno())
    os.replace(temporary, path)
    directory = os.open(data_dir, os.O_RDONLY)
    try:
        os.fsync(directory)
    finally:
        os.close(directory)


class JournaledCommits:
    """The leader's BatchJournal: each batch's rows into etcd before it commits."""

    def __init__(self, journal: MetadataJournal, leadership: Leadership, position: int,
                 snapshot_due: bool) -> None:
        self.journal = journal
        self.leadership = leadership
        self.position = position  # the last entry in the journal, and in our copy
        self.snapshot_due = snapshot_due
        self.snapshot_at = position
        self._capture: ChangeCapture | None = None
        self._store: MetadataStore | None = None
        self.snapshots = 0

    def attach(self, store: MetadataStore) -> None:
        # Before the first batch (this start's generation): a batch that ran
        # before the triggers were in place would never reach the journal.
        self._capture = ChangeCapture(store.connection)
        self._store = store

    def record(self, store: MetadataStore) -> None:
        assert self._capture is not None and store is self._store, "attach() first"
        changes = self._capture.collect()
        if not changes:
            return
        entry = JournalEntry(self.position + 1, self.leadership.epoch, encode_changes(changes))
        started = time.perf_counter()
        # Here, in the commit thread: a hop to trio and back would cost more than etcd.
        self.journal.append(entry, self.leadership.deposed)
        JOURNAL_APPEND_SECONDS.observe(time.perf_counter() - started)
        _set_position(store, entry.seq)
        self.position = entry.seq
        JOURNAL_POSITION.set(entry.seq)

    async def after_batch(self) -> None:
        if self._store is None:
            return
        if self.snapshot_due or self.position - self.snapshot_at >= JOURNAL_ENTRIES_PER_SNAPSHOT:
            await self.publish_snapshot(self._store)

    async def publish_snapshot(self, store: MetadataStore) -> None:
        """Between two batches: the copy is exactly at ``position``."""
        seq = self.position
        database = await trio.to_thread.run_sync(serialize, store)
        try:
            await self.journal.publish_snapshot(seq, self.leadership.epoch, _cluster_id(store),
                                                database)
        except EtcdUnavailable as error:
            self.snapshot_due = True  # tried again after the next batch
            log.warning("metadata snapshot at entry %d not published: %s", seq, error,
                        extra=about("snapshot_failed", seq=seq, error=str(error)))
            return
        self.snapshot_due = False
        self.snapshot_at = seq
        self.snapshots += 1


async def _prepare_copy(settings: MasterSettings, journal: MetadataJournal) -> int | None:
    """Make the local copy one the journal can bring forward; its position.

    None: there is no copy and nothing in etcd to make one from (a new HA
    cluster whose first master was not started with --new-cluster yet).
    """
    header = await journal.snapshot_header()
    path = settings.data_dir / DATABASE_NAME
    local: tuple[int, str] | None = None
    if path.exists():
        store = MetadataStore(path)
        try:
            local = journal_position(store), _cluster_id(store)
        finally:
            store.close()
    if header is not None and local is not None and local[1] != header.cluster_id:
        raise ConfigError(f"the metadata in {settings.data_dir} is of cluster {local[1]};"
                          f" the journal in etcd ({settings.etcd_prefix}) is of cluster"
                          f" {header.cluster_id}. Point --data-dir or the etcd prefix at the"
                          " right one, or move this data directory away to join as a new"
                          " standby")
    if header is not None and (local is None or local[0] < header.seq):
        log.info("standby: installing the metadata snapshot at journal entry %d%s", header.seq,
                 "" if local is None else f" (this copy was at entry {local[0]})",
                 extra=about("snapshot_installed", seq=header.seq))
        install_database(settings.data_dir, await journal.fetch_snapshot(header))
        store = MetadataStore(path)
        try:
            # The copy's own record: a snapshot may hold more than its header's entry.
            return journal_position(store)
        finally:
            store.close()
    if local is not None:
        return local[0]
    if header is None and settings.new_cluster:
        metadata_path(settings)  # creates the directory, says so
        MetadataStore(path).close()
        return 0
    return None


async def _follow(settings: MasterSettings, journal: MetadataJournal, position: int,
                  progress: StandbyProgress) -> None:
    """Apply the journal into the local copy, as etcd takes its entries, until cancelled."""
    store = MetadataStore(settings.data_dir / DATABASE_NAME, fsync_commits=False)
    try:
        async with journal.follow(position) as follower:
            while True:
                try:
                    entries = await follower.next()
                except EtcdUnavailable as error:
                    log.warning("standby cannot read the journal: %s", error,
                                extra=about("journal_read_failed", error=str(error)))
                    await trio.sleep(RECONNECT_BACKOFF_S_MAX)
                    continue
                await trio.to_thread.run_sync(apply_entries, store, entries)
                progress.applied(entries[-1].seq)
    finally:
        store.close()


async def _catch_up(settings: MasterSettings, journal: MetadataJournal) -> int:
    """Apply every entry the journal holds; the position reached."""
    store = MetadataStore(settings.data_dir / DATABASE_NAME, fsync_commits=False)
    try:
        position = journal_position(store)
        while entries := await journal.read(position):
            await trio.to_thread.run_sync(apply_entries, store, entries)
            position = entries[-1].seq
        return position
    finally:
        store.close()


async def run_ha_master(settings: MasterSettings, *,
                        task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
    """Stand by, lead when elected, stand by again when deposed; until cancelled.

    ``task_status.started()`` once this master follows the journal (or waits for a
    first one), with None: a standby serves nobody, so it has no port to report.
    """
    client = EtcdClient(settings.etcd_endpoints)
    journal = MetadataJournal(client, settings.etcd_prefix)
    started = False
    try:
        while True:
            try:
                position = await _prepare_copy(settings, journal)
            except EtcdUnavailable as error:
                log.warning("standby cannot reach etcd: %s", error,
                            extra=about("etcd_unavailable", error=str(error)))
                await trio.sleep(RECONNECT_BACKOFF_S_MAX)
                continue
            leadership = Leadership(client, journal.keys.leader, settings.advertise)
            if not started:
                task_status.started(None)
                started = True
            if position is None:
                log.info("standby: no metadata here and none in etcd (%s) yet; waiting for"
                         " a first master started with --new-cluster", settings.etcd_prefix)
                await trio.sleep(1.0)
                continue
            progress = StandbyProgress(position)
            try:
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(_follow, settings, journal, position, progress)
                    nursery.start_soon(report_standby, client, journal.keys.prefix,
                                       settings.advertise, progress)
                    await leadership.campaign()
                    nursery.cancel_scope.cancel()
            except JournalTrimmed as error:
                log.warning("standby fell behind the journal (%s): starting again from the"
                            " snapshot", error, extra=about("journal_trimmed", error=str(error)))
                continue
            try:
                await _lead(settings, journal, leadership)
            except (EtcdUnavailable, JournalTrimmed) as error:  # while catching up
                log.warning("gave up the leadership: %s", error,
                            extra=about("etcd_unavailable", error=str(error)))
            log.warning("no longer the leader (epoch %d): following the journal as a standby",
                        leadership.epoch, extra=about("stepped_down", epoch=leadership.epoch))
    finally:
        journal.blocking.close()
        with trio.CancelScope(shield=True):
            await client.aclose()


async def _lead(settings: MasterSettings, journal: MetadataJournal,
                leadership: Leadership) -> None:
    """Catch up, then serve as the leader until deposed (or cancelled: resign)."""
    try:
        with leadership.leading:
            position = await _catch_up(settings, journal)
            # No snapshot yet: a journal started from this master's own metadata,
            # which standbys need. The first batch (the generation) publishes it.
            snapshot_due = await journal.snapshot_header() is None
            commits = JournaledCommits(journal, leadership, position, snapshot_due)
            monitor = HaMonitor(journal.etcd, journal.keys.prefix, settings.advertise,
                                leadership.epoch, lambda: commits.position)
            async with trio.open_nursery() as nursery:
                nursery.start_soon(leadership.hold)
                nursery.start_soon(monitor.run)
                await nursery.start(partial(run_master, journal=commits,
                                            ha_status=monitor.status), settings)
                log.info("leading (epoch %d) from journal entry %d", leadership.epoch,
                         position, extra=about("leading", epoch=leadership.epoch,
                                               seq=position))
    finally:
        with trio.CancelScope(shield=True):
            await leadership.resign()
