"""The metadata journal and the election against a real etcd (one member, its own port).

* A leader's append lands; a deposed leader's append is refused (NotLeader) and
  leaves nothing; the same entry appended twice (a lost answer, retried) counts once.
* Two campaigns: one wins, the other waits; the winner's resignation lets it win.
* A snapshot publishes whole, trims the journal before it, and reads back checked.
* A watch returns every change after its start revision once, across a silent or
  broken stream (reopened from the last event seen); a compacted start revision
  says so (WatchCompacted).
* A standby's follower reads once, then takes entries from the watch; a watch that
  cannot go on (compacted away) falls back to a read, and nothing is missed.
* An append is made by the commit thread itself, with no trio around it; it goes
  past a dead endpoint to a live one, and stops waiting for a silent etcd once
  the leadership is lost (no further member is asked).
* A campaign that lost waits on the watch: it asks etcd again only once the key
  is gone, not at every polling interval.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
import trio

from tests.conftest import LogChecker
from vmstore.cli.local_cluster import free_port, wait_for_etcd
from vmstore.dfs.errors import DamagedMetadata, JournalTrimmed, NotLeader
from vmstore.dfs.master.etcd_client import EtcdClient, WatchCompacted
from vmstore.dfs.master.journal import JournalEntry, MetadataJournal
from vmstore.dfs.master.leadership import Leadership


@pytest.fixture
def etcd_url(tmp_path: Path) -> Iterator[str]:
    if shutil.which("etcd") is None:
        pytest.skip("etcd is not installed (Debian: etcd-server)")
    client, peer = f"http://127.0.0.1:{free_port()}", f"http://127.0.0.1:{free_port()}"
    process = subprocess.Popen(
        ["etcd", "--data-dir", str(tmp_path / "etcd"), "--listen-client-urls", client,
         "--advertise-client-urls", client, "--listen-peer-urls", peer,
         "--initial-advertise-peer-urls", peer, "--initial-cluster", f"default={peer}"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_for_etcd([client])
        yield client
    finally:
        process.kill()
        process.wait()


def entry(seq: int, epoch: int, changes: bytes = b"x") -> JournalEntry:
    return JournalEntry(seq, epoch, changes)


async def append(journal: MetadataJournal, entry: JournalEntry) -> None:
    """As the leader does it: from the commit thread (a worker thread)."""
    await trio.to_thread.run_sync(journal.append, entry)


def test_only_the_leader_appends_and_a_retried_append_counts_once(etcd_url: str) -> None:
    async def main() -> None:
        client = EtcdClient([etcd_url])
        journal = MetadataJournal(client, "/test/")
        first = Leadership(client, journal.keys.leader, "a:1")
        old_epoch = await first.campaign()
        await append(journal, entry(1, old_epoch))
        await append(journal, entry(1, old_epoch))  # the answer was lost: the retry is a no-op
        # Deposed (its lease revoked: what expiry does), another is elected.
        await first.resign()
        second = Leadership(client, journal.keys.leader, "b:1")
        new_epoch = await second.campaign()
        assert new_epoch > old_epoch
        with pytest.raises(NotLeader):
            await append(journal, entry(2, old_epoch))
        await append(journal, entry(2, new_epoch))
        with pytest.raises(NotLeader):  # a different entry 2: never two of one number
            await append(journal, entry(2, new_epoch, b"other"))
        assert [(e.seq, e.epoch) for e in await journal.read(0)] == [(1, old_epoch),
                                                                     (2, new_epoch)]
        assert [e.seq for e in await journal.read(1)] == [2]
        await client.aclose()

    trio.run(main)


def test_a_second_campaign_waits_until_the_leader_resigns(etcd_url: str) -> None:
    async def main() -> None:
        client = EtcdClient([etcd_url])
        first = Leadership(client, b"/test/leader", "a:1")
        await first.campaign()
        second = Leadership(client, b"/test/leader", "b:1")
        with trio.move_on_after(1.5) as waited:
            await second.campaign()
        assert waited.cancelled_caught, "two leaders at once"
        assert await second.current_leader() == ("a:1", first.epoch)
        await first.resign()
        with trio.fail_after(5):
            assert await second.campaign() > first.epoch
        await client.aclose()

    trio.run(main)


def test_a_snapshot_trims_the_journal_and_reads_back_checked(etcd_url: str) -> None:
    async def main() -> None:
        client = EtcdClient([etcd_url])
        journal = MetadataJournal(client, "/test/")
        leader = Leadership(client, journal.keys.leader, "a:1")
        epoch = await leader.campaign()
        for seq in range(1, 6):
            await append(journal, entry(seq, epoch))
        database = bytes(range(256)) * 9000  # more than one part
        header = await journal.publish_snapshot(3, epoch, "cluster-1", database)
        assert await journal.snapshot_header() == header
        assert await journal.fetch_snapshot(header) == database
        assert [e.seq for e in await journal.read(3)] == [4, 5]
        assert await journal.first_seq() == 4
        with pytest.raises(JournalTrimmed):  # a copy at entry 1: only the snapshot helps it
            await journal.read(1)
        # A damaged part is found, not installed.
        await client.put(journal.keys.part(3, 0), b"rot")
        with pytest.raises(DamagedMetadata, match="hash"):
            await journal.fetch_snapshot(header)
        await client.aclose()

    trio.run(main)


async def compact(client: EtcdClient) -> None:
    """Compact etcd's history up to now (as its periodic auto-compaction does)."""
    revision = (await client.range_at(b"/")).revision
    await client._call("/v3/kv/compaction", {"revision": str(revision)})


def test_a_watch_returns_each_change_once_across_silent_and_broken_streams(
        etcd_url: str) -> None:
    async def main() -> None:
        client = EtcdClient([etcd_url])
        start = await client.put(b"/w/a", b"1")
        async with client.watch(b"/w/", b"/w0", start, silence_s=0.2) as watcher:
            seen = [(e.kv.key, e.kv.value, e.deleted) for e in await watcher.next()]
            await client.put(b"/w/b", b"2")
            seen += [(e.kv.key, e.kv.value, e.deleted) for e in await watcher.next()]
            await trio.sleep(0.5)  # silent past silence_s: the stream is opened again
            await watcher._drop()  # and broken, as a member's death breaks it
            await client.put(b"/w/c", b"3")
            await client.delete(b"/w/a")
            await client.put(b"/x", b"not watched")
            while len(seen) < 4:
                seen += [(e.kv.key, e.kv.value, e.deleted) for e in await watcher.next()]
            assert watcher.streams >= 2
        assert seen == [(b"/w/a", b"1", False), (b"/w/b", b"2", False),
                        (b"/w/c", b"3", False), (b"/w/a", b"", True)]
        with pytest.raises(WatchCompacted):
            await compact(client)
            async with client.watch(b"/w/", b"/w0", start) as watcher:
                await watcher.next()
        await client.aclose()

    trio.run(main)


def test_a_follower_reads_once_then_watches_and_reads_again_after_a_compaction(
        etcd_url: str) -> None:
    async def main() -> None:
        client = EtcdClient([etcd_url])
        journal = MetadataJournal(client, "/test/")
        leader = Leadership(client, journal.keys.leader, "a:1")
        epoch = await leader.campaign()
        await append(journal, entry(1, epoch))
        async with journal.follow(0) as follower:
            assert [e.seq for e in await follower.next()] == [1]
            for seq in range(2, 6):
                await append(journal, entry(seq, epoch))
                assert [e.seq for e in await follower.next()] == [seq]
            assert follower.reads == 1, "it polled instead of watching"
            # Its stream breaks; while it is away, entries land and etcd compacts
            # the revisions it would go on from: it reads them instead.
            assert follower._watcher is not None
            await follower._watcher._drop()
            for seq in range(6, 9):
                await append(journal, entry(seq, epoch))
            await compact(client)
            got = []
            while len(got) < 3:
                got += [e.seq for e in await follower.next()]
            assert got == [6, 7, 8]
            assert follower.reads == 2
            await append(journal, entry(9, epoch))
            assert [e.seq for e in await follower.next()] == [9]
        await client.aclose()

    trio.run(main)


class CountingClient(EtcdClient):
    grants = 0

    async def grant_lease(self, ttl_s: int) -> int:
        self.grants += 1
        return await super().grant_lease(ttl_s)


def test_a_losing_campaign_waits_on_the_watch_and_wins_once_the_key_goes(
        etcd_url: str) -> None:
    async def main() -> None:
        client = CountingClient([etcd_url])
        first = Leadership(client, b"/test/leader", "a:1")
        await first.campaign()
        second = Leadership(client, b"/test/leader", "b:1")
        async with trio.open_nursery() as nursery:
            won = trio.Event()

            async def campaign() -> None:
                await second.campaign()
                won.set()

            nursery.start_soon(campaign)
            await trio.sleep(1.5)  # three polling intervals of the old campaign
            assert not won.is_set(), "two leaders at once"
            assert client.grants == 2, "the losing campaign asked etcd again, polling"
            await first.resign()
            with trio.fail_after(5):
                await won.wait()
        assert second.epoch > first.epoch
        await client.aclose()

    trio.run(main)


def test_the_commit_thread_appends_by_itself_past_a_dead_endpoint_until_deposed(
        etcd_url: str, expected_logs: LogChecker) -> None:
    expected_logs.allow("vmstore.dfs.master.journal",
                        r"journal entry 2 waits for etcd: .*timed out; the caller stopped asking",
                        count=1)
    dead = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    client = EtcdClient([dead, etcd_url])
    journal = MetadataJournal(client, "/test/")
    leader = Leadership(client, journal.keys.leader, "a:1")
    epoch = trio.run(leader.campaign)
    # No trio here: the commit thread asks etcd itself, no hop to the event loop.
    journal.append(entry(1, epoch))
    assert journal.blocking.endpoints == [etcd_url, dead]  # the live one first from now on
    assert [e.seq for e in trio.run(journal.read, 0)] == [1]
    # etcd silent (members that take the connection and never answer): the append
    # waits, and once the leadership is lost it asks no further member.
    silent = [socket.create_server(("127.0.0.1", 0)) for _ in range(2)]
    unreachable = MetadataJournal(EtcdClient(
        [f"http://127.0.0.1:{server.getsockname()[1]}" for server in silent]), "/test/")
    deposed = threading.Event()
    threading.Timer(0.3, deposed.set).start()
    with pytest.raises(NotLeader, match="leadership lost"):
        unreachable.append(entry(2, epoch), deposed)
    journal.blocking.close()
    unreachable.blocking.close()
    for server in silent:
        server.close()
    trio.run(client.aclose)
