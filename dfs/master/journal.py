"""The metadata journal in etcd: every committed batch, in order, and a snapshot.

Keys, under the cluster's prefix P (``[master] etcd_prefix``)::

    P leader                    the leader's address; on the leader's etcd lease.
                                Its create_revision is the leader's epoch.
    P journal/<seq, 20 digits>  one group-commit batch: a JournalEntry
    P snapshot                  a SnapshotHeader: the metadata as of entry ``seq``
    P snapshot-parts/<seq>/<n>  that snapshot's bytes (lz4), in parts

Promises:
* ``append`` puts entry ``seq`` only while the caller's epoch is the leader
  key's (one etcd transaction guards both), and only if no entry ``seq``
  exists: a deposed leader appends nothing, and two leaders can never write
  the same sequence number. It returns only once etcd has the entry (a
  quorum's fsync), so a batch is on a majority before any reply. It is one
  round trip, made from the commit thread itself (no read before it).
* An append whose answer was lost is found on retry (the entry there is ours,
  byte for byte) and counts as done: never twice, never lost silently.
* ``read`` returns entries in sequence order, without gaps; JournalTrimmed when
  the entries after the caller's position are gone (trimmed by a snapshot).
* ``follow`` (a standby's) returns the same entries as reads would, as etcd
  takes them: one read to the journal's end, then a watch from the revision
  that read saw, so nothing is polled. A watch that cannot go on (etcd
  compacted its revision, or an entry is not the next one) falls back to a
  read, and a read to JournalTrimmed as above.
* A snapshot is published whole or not at all: its parts go first, then one
  transaction guarded by the leader key names them and trims the journal up to
  its sequence number.
"""

from __future__ import annotations

import hashlib
import logging
import threading
import time
from dataclasses import dataclass

import lz4.frame
import msgspec

from vmstore.dfs.constants import (
    JOURNAL_APPEND_TIMEOUT_S,
    JOURNAL_READ_ENTRIES_MAX,
    RECONNECT_BACKOFF_S_MAX,
    RECONNECT_BACKOFF_S_MIN,
    SNAPSHOT_PART_BYTES_MAX,
)
from vmstore.dfs.errors import DamagedMetadata, EtcdUnavailable, JournalTrimmed, NotLeader
from vmstore.dfs.log_fields import about
from vmstore.dfs.master import etcd_client as etcd
from vmstore.dfs.master.etcd_client import (
    BlockingTxn,
    EtcdClient,
    KeyValue,
    WatchCompacted,
    Watcher,
)

log = logging.getLogger(__name__)
SEQ_DIGITS = 20


class JournalEntry(msgspec.Struct, array_like=True, frozen=True):
    seq: int
    epoch: int  # the leader epoch that appended it
    changes: bytes  # an encoded dfs.metadata.change_capture.ChangeSet


class SnapshotHeader(msgspec.Struct, array_like=True, frozen=True):
    seq: int  # the snapshot holds every entry up to and including this one
    epoch: int
    parts: int
    size_bytes: int  # of the SQLite file, before compression
    sha256: bytes  # of the compressed bytes, all parts joined
    cluster_id: str


@dataclass(frozen=True)
class Keys:
    prefix: bytes

    @property
    def leader(self) -> bytes:
        return self.prefix + b"leader"

    @property
    def journal(self) -> bytes:
        return self.prefix + b"journal/"

    def entry(self, seq: int) -> bytes:
        return self.journal + str(seq).zfill(SEQ_DIGITS).encode()

    @property
    def snapshot(self) -> bytes:
        return self.prefix + b"snapshot"

    def parts(self, seq: int) -> bytes:
        return self.prefix + b"snapshot-parts/" + str(seq).zfill(SEQ_DIGITS).encode() + b"/"

    def part(self, seq: int, index: int) -> bytes:
        return self.parts(seq) + str(index).zfill(6).encode()


def _decode(kv: KeyValue) -> JournalEntry:
    try:
        return msgspec.msgpack.decode(kv.value, type=JournalEntry)
    except msgspec.DecodeError as error:
        raise DamagedMetadata(f"journal entry {kv.key!r} in etcd does not decode:"
                              f" {error}") from None


class MetadataJournal:
    def __init__(self, client: EtcdClient, prefix: str) -> None:
        self.etcd = client
        # The commit thread's appends: no hop to trio (see BlockingTxn). close() it.
        self.blocking = BlockingTxn(client.endpoints, timeout_s=client.timeout_s)
        self.keys = Keys(prefix.encode())

    def append(self, entry: JournalEntry, deposed: threading.Event | None = None) -> None:
        """In a worker thread (the commit thread's): put ``entry`` while ``entry.epoch``
        leads; NotLeader once it does not, or once ``deposed`` is set.

        etcd unreachable (quorum lost): retried, with backoff, for
        JOURNAL_APPEND_TIMEOUT_S; the change waits meanwhile, unacknowledged.
        """
        value = msgspec.msgpack.encode(entry)
        key = self.keys.entry(entry.seq)
        deposed = deposed or threading.Event()
        give_up_s = time.monotonic() + JOURNAL_APPEND_TIMEOUT_S
        attempt = 0
        while not deposed.is_set():
            try:
                result = self.blocking.txn(
                    [etcd.created_at(self.keys.leader, entry.epoch),
                     etcd.created_at(key, 0)],
                    [etcd.put(key, value)],
                    [etcd.get(key)], stop=deposed)
            except EtcdUnavailable as error:
                if attempt == 0:
                    log.warning("journal entry %d waits for etcd: %s", entry.seq, error,
                                extra=about("journal_append_waits", seq=entry.seq,
                                            error=str(error)))
                attempt += 1
                pause_s = min(RECONNECT_BACKOFF_S_MIN * 2**attempt, RECONNECT_BACKOFF_S_MAX)
                if time.monotonic() + pause_s > give_up_s:
                    raise NotLeader(f"journal entry {entry.seq}: etcd took no write for"
                                    f" {JOURNAL_APPEND_TIMEOUT_S:.0f} s; giving up the"
                                    " leadership") from None
                deposed.wait(pause_s)
                continue
            if result.succeeded:
                return
            existing = result.ranges[0] if result.ranges else ()
            if existing and existing[0].value == value:
                return  # our own earlier attempt, whose answer was lost
            raise NotLeader(f"journal entry {entry.seq}: epoch {entry.epoch} no longer"
                            " leads (another leader was elected)")
        raise NotLeader(f"journal entry {entry.seq}: leadership lost while etcd was asked")

    async def read(self, after_seq: int, *,
                   limit: int = JOURNAL_READ_ENTRIES_MAX) -> list[JournalEntry]:
        """Entries after ``after_seq``, in order (at most ``limit``)."""
        return (await self.read_at(after_seq, limit=limit))[0]

    async def read_at(self, after_seq: int, *, limit: int = JOURNAL_READ_ENTRIES_MAX,
                      ) -> tuple[list[JournalEntry], int, bool]:
        """``read``, with the revision it was read at, and whether ``limit`` left some out."""
        found = await self.etcd.range_at(self.keys.entry(after_seq + 1),
                                         etcd.prefix_end(self.keys.journal), limit=limit)
        entries: list[JournalEntry] = []
        expected = after_seq + 1
        for kv in found.kvs:
            entry = _decode(kv)
            if entry.seq != expected:
                if not entries and entry.seq > expected:
                    raise JournalTrimmed(f"the journal starts at entry {entry.seq}; this copy"
                                         f" is at {after_seq}")
                raise DamagedMetadata(f"journal entry {kv.key!r} holds seq {entry.seq};"
                                      f" expected {expected}")
            entries.append(entry)
            expected += 1
        return entries, found.revision, found.more

    def follow(self, after_seq: int) -> JournalFollower:
        """The entries after ``after_seq`` as they are appended (see JournalFollower)."""
        return JournalFollower(self, after_seq)

    async def first_seq(self) -> int | None:
        """The oldest entry still in the journal; None: empty."""
        first = await self.etcd.range(self.keys.journal, etcd.prefix_end(self.keys.journal),
                                      limit=1)
        if not first:
            return None
        return int(first[0].key[len(self.keys.journal):])

    async def snapshot_header(self) -> SnapshotHeader | None:
        found = await self.etcd.range(self.keys.snapshot)
        if not found:
            return None
        return msgspec.msgpack.decode(found[0].value, type=SnapshotHeader)

    async def publish_snapshot(self, seq: int, epoch: int, cluster_id: str,
                               database: bytes) -> SnapshotHeader:
        """Store ``database`` (the metadata as of entry ``seq``) and trim the journal to it."""
        packed = lz4.frame.compress(database)
        parts = [packed[i:i + SNAPSHOT_PART_BYTES_MAX]
                 for i in range(0, len(packed), SNAPSHOT_PART_BYTES_MAX)] or [b""]
        for index, part in enumerate(parts):
            await self.etcd.put(self.keys.part(seq, index), part)
        header = SnapshotHeader(seq, epoch, len(parts), len(database),
                                hashlib.sha256(packed).digest(), cluster_id)
        previous = await self.snapshot_header()
        result = await self.etcd.txn(
            [etcd.created_at(self.keys.leader, epoch)],
            [etcd.put(self.keys.snapshot, msgspec.msgpack.encode(header)),
             # Entries up to seq are in the snapshot: the journal keeps the rest.
             etcd.delete(self.keys.journal, self.keys.entry(seq + 1))])
        if not result.succeeded:
            await self.etcd.delete(self.keys.parts(seq), etcd.prefix_end(self.keys.parts(seq)))
            raise NotLeader(f"snapshot at entry {seq}: epoch {epoch} no longer leads")
        if previous is not None and previous.seq != seq:
            old = self.keys.parts(previous.seq)
            await self.etcd.delete(old, etcd.prefix_end(old))
        log.info("metadata snapshot at journal entry %d published (%d bytes, %d parts);"
                 " journal trimmed", seq, len(database), len(parts),
                 extra=about("snapshot_published", seq=seq, size_bytes=len(database)))
        return header

    async def fetch_snapshot(self, header: SnapshotHeader) -> bytes:
        """The SQLite file a header names, checked against its hash."""
        parts = await self.etcd.range(self.keys.parts(header.seq),
                                      etcd.prefix_end(self.keys.parts(header.seq)))
        if len(parts) != header.parts:
            raise DamagedMetadata(f"snapshot at entry {header.seq}: {len(parts)} parts in"
                                  f" etcd, its header says {header.parts}")
        packed = b"".join(kv.value for kv in parts)
        if hashlib.sha256(packed).digest() != header.sha256:
            raise DamagedMetadata(f"snapshot at entry {header.seq}: its parts do not match"
                                  " the header's hash")
        database: bytes = lz4.frame.decompress(packed)
        if len(database) != header.size_bytes:
            raise DamagedMetadata(f"snapshot at entry {header.seq}: {len(database)} bytes,"
                                  f" its header says {header.size_bytes}")
        return database


class JournalFollower:
    """``async with journal.follow(seq) as follower: entries = await follower.next()``.

    Reads to the journal's end, then watches it from the revision of that read;
    back to a read whenever the watch cannot go on. ``position`` is the last
    entry returned.
    """

    def __init__(self, journal: MetadataJournal, after_seq: int) -> None:
        self.journal = journal
        self.position = after_seq
        self.reads = 0  # how often it read (the first, then one per fallback)
        self._watcher: Watcher | None = None

    async def __aenter__(self) -> JournalFollower:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self._stop_watching()

    async def next(self) -> list[JournalEntry]:
        """The next entries, at least one, in order; waits for them (cancel to stop).

        EtcdUnavailable: etcd cannot be read or watched now (call again to retry);
        JournalTrimmed: the entries after ``position`` are gone.
        """
        try:
            while True:
                if self._watcher is None:
                    entries = await self._read()
                else:
                    entries = await self._watched()
                if entries:
                    self.position = entries[-1].seq
                    return entries
        except BaseException:
            await self._stop_watching()  # the next call starts again from a read
            raise

    async def _read(self) -> list[JournalEntry]:
        entries, revision, more = await self.journal.read_at(self.position)
        self.reads += 1
        if not more:  # at the journal's end as of ``revision``: the watch takes over
            self._watcher = self.journal.etcd.watch(
                self.journal.keys.journal, etcd.prefix_end(self.journal.keys.journal),
                revision + 1)
        return entries

    async def _watched(self) -> list[JournalEntry]:
        assert self._watcher is not None
        try:
            events = await self._watcher.next()
        except WatchCompacted as error:
            log.info("journal watch: %s; reading instead", error)
            await self._stop_watching()
            return []
        entries: list[JournalEntry] = []
        expected = self.position + 1
        for event in events:
            if event.deleted:
                continue  # a snapshot trimmed entries this copy has
            entry = _decode(event.kv)
            if entry.seq < expected:
                continue  # the read had it already
            if entry.seq != expected:
                log.info("journal watch: entry %d after %d; reading instead", entry.seq,
                         expected - 1)
                await self._stop_watching()
                break
            entries.append(entry)
            expected += 1
        return entries

    async def _stop_watching(self) -> None:
        watcher, self._watcher = self._watcher, None
        if watcher is not None:
            await watcher.__aexit__(None, None, None)
