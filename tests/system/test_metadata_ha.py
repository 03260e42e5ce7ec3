"""Metadata HA with real processes: a three-member etcd, two masters, chunkservers.

What is checked (issue 15):
* ``kill -9`` of the leader under a client that creates, renames and writes with
  fsync: a standby takes over, every acknowledged change is there, and the
  client saw no error (its calls waited and resumed on the new leader).
* The killed master, started again, rejoins as a standby and follows.
* A standby whose data directory is wiped rebuilds itself from the snapshot and
  the journal's tail, and can lead.
* One etcd member killed: no effect.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import trio

from tests.system.conftest import (
    Cluster,
    FsyncingWriter,
    Mount,
    assert_no_crash,
    require_fuse,
)
from vmstore.cli.local_cluster import local_down, spawn, wait_for_leader
from vmstore.dfs.client.client import Client, open_client
from vmstore.dfs.client.master_client import ClientIdentity
from vmstore.dfs.errors import DfsError, NotFound
from vmstore.dfs.types import ROOT_INODE

FAILOVER_TIMEOUT_S = 60.0


def require_etcd() -> None:
    if shutil.which("etcd") is None:
        pytest.skip("etcd is not installed (Debian: etcd-server); deploy/install-deps.sh"
                    " installs it")


class HaCluster(Cluster):
    def __init__(self, directory: Path) -> None:
        super().__init__(directory, chunkservers=2, masters=2)
        self.masters = self.master_address.split(",")
        self.master_names = [f"master{index}" for index in range(len(self.masters))]

    def leader(self) -> str:
        """The name of the master that leads now (the only one listening)."""
        leader = wait_for_leader(self.masters, FAILOVER_TIMEOUT_S)
        return self.master_names[self.masters.index(leader)]

    def ha_client(self) -> open_client:  # type: ignore[valid-type]
        hosts = [(address.rsplit(":", 1)[0], int(address.rsplit(":", 1)[1]))
                 for address in self.masters]
        return open_client(hosts[0][0], hosts[0][1], self.key,
                           ClientIdentity(host_label="local0"),
                           reconnect_timeout_s=FAILOVER_TIMEOUT_S, other_masters=hosts[1:])


@pytest.fixture
def ha_cluster(tmp_path: Path) -> Iterator[HaCluster]:
    require_etcd()
    cluster = HaCluster(tmp_path / "cluster")
    try:
        yield cluster
    finally:
        local_down(cluster.directory)
    assert_no_crash(cluster.logs())


def block(index: int) -> bytes:
    return hashlib.sha256(b"%d" % index).digest() * 2048  # 64 KiB


async def write_files(client: Client, first: int, count: int,
                      acknowledged: dict[str, bytes]) -> None:
    """Create, write+fsync, close, rename: a file is recorded once all of it returned."""
    for index in range(first, first + count):
        inode = (await client.create_file(f"/tmp-{index}")).inode
        await client.opened(inode, writable=True)
        await client.write(inode, 0, block(index))
        await client.fsync(inode)
        await client.closed(inode, writable=True)
        await client.rename(ROOT_INODE, f"tmp-{index}".encode(), ROOT_INODE,
                            f"file-{index}".encode())
        acknowledged[f"/file-{index}"] = block(index)


async def check_files(client: Client, acknowledged: dict[str, bytes]) -> None:
    for path, data in acknowledged.items():
        attrs = await client.resolve(path)
        assert attrs.size_bytes == len(data), path
        assert await client.read(attrs.inode, 0, len(data), len(data)) == data, path


def test_a_standby_takes_over_from_a_killed_leader_and_nothing_acknowledged_is_lost(
        ha_cluster: HaCluster) -> None:
    acknowledged: dict[str, bytes] = {}
    first_leader = ha_cluster.leader()

    async def main() -> None:
        async with ha_cluster.ha_client() as client:
            await write_files(client, 0, 5, acknowledged)
            async with trio.open_nursery() as nursery:
                # The workload goes on across the kill: its calls wait, then resume.
                nursery.start_soon(write_files, client, 5, 20, acknowledged)
                await trio.sleep(0.5)
                ha_cluster.kill(first_leader)
            await check_files(client, acknowledged)

    trio.run(main)
    second_leader = ha_cluster.leader()
    assert second_leader != first_leader
    assert len(acknowledged) == 25
    # The old leader comes back as a standby; then the new one dies: it takes over again,
    # with everything, so it followed the journal.
    ha_cluster.restart(first_leader)
    time.sleep(1.0)
    ha_cluster.kill(second_leader)
    assert ha_cluster.leader() == first_leader

    async def check() -> None:
        async with ha_cluster.ha_client() as client:
            await check_files(client, acknowledged)

    trio.run(check)


def test_a_wiped_standby_rebuilds_itself_from_the_snapshot_and_the_journal(
        ha_cluster: HaCluster) -> None:
    acknowledged: dict[str, bytes] = {}
    leader = ha_cluster.leader()
    standby = next(name for name in ha_cluster.master_names if name != leader)
    ha_cluster.kill(standby)
    shutil.rmtree(ha_cluster.directory / standby)

    async def write() -> None:
        async with ha_cluster.ha_client() as client:
            await write_files(client, 0, 5, acknowledged)

    trio.run(write)
    ha_cluster.restart(standby)
    time.sleep(1.0)
    # One etcd member less changes nothing.
    ha_cluster.kill("etcd2")
    ha_cluster.kill(leader)
    assert ha_cluster.leader() == standby

    async def check() -> None:
        async with ha_cluster.ha_client() as client:
            await check_files(client, acknowledged)
            await write_files(client, 5, 2, acknowledged)

    trio.run(check)


def test_a_hung_leader_is_replaced_and_acknowledges_nothing_once_it_resumes(
        ha_cluster: HaCluster) -> None:
    acknowledged: dict[str, bytes] = {}
    hung = ha_cluster.leader()
    hung_address = ha_cluster.masters[ha_cluster.master_names.index(hung)]

    async def main() -> None:
        async with ha_cluster.ha_client() as client:
            await write_files(client, 0, 3, acknowledged)
            os.kill(ha_cluster.pid(hung), signal.SIGSTOP)
            try:
                # Its calls to the hung leader time out; a standby is elected meanwhile.
                await write_files(client, 3, 5, acknowledged)
                # A client new to the cluster reads everything from the new leader while
                # the old one is still hung: the chunkservers left it for the new one.
                async with ha_cluster.ha_client() as newcomer:
                    await check_files(newcomer, acknowledged)
            finally:
                os.kill(ha_cluster.pid(hung), signal.SIGCONT)
            # The old leader runs again, past its leadership: a client that knows only it
            # gets nothing acknowledged.
            host, port = hung_address.rsplit(":", 1)
            with pytest.raises(DfsError):
                async with open_client(host, int(port), ha_cluster.key,
                                       ClientIdentity(host_label="local1"),
                                       reconnect_timeout_s=3.0) as stale:
                    await stale.create_file("/after-resume")
            await check_files(client, acknowledged)
            with pytest.raises(NotFound):
                await client.resolve("/after-resume")

    trio.run(main)
    assert ha_cluster.leader() != hung
    assert "no longer the leader" in ha_cluster.logs()[hung]


def test_changes_wait_while_etcd_has_no_quorum_and_resume_after(ha_cluster: HaCluster) -> None:
    acknowledged: dict[str, bytes] = {}

    async def main() -> None:
        async with ha_cluster.ha_client() as client:
            await write_files(client, 0, 3, acknowledged)
            async with trio.open_nursery() as nursery:
                nursery.start_soon(write_files, client, 3, 10, acknowledged)
                await trio.sleep(0.3)
                ha_cluster.kill("etcd1")
                ha_cluster.kill("etcd2")
                await trio.sleep(5.0)  # no quorum: nothing may be acknowledged meanwhile
                waited = len(acknowledged)
                await trio.sleep(2.0)
                assert len(acknowledged) == waited, "acknowledged without an etcd quorum"
                spawn(ha_cluster.directory, "etcd1")
            await check_files(client, acknowledged)

    trio.run(main)
    assert len(acknowledged) == 13


def test_a_guest_writing_through_the_mount_sees_no_error_across_a_failover(
        ha_cluster: HaCluster) -> None:
    require_fuse()
    mount = Mount(ha_cluster, ha_cluster.directory / "mnt")
    writer = FsyncingWriter(mount.path / "guest.img")
    try:
        writer.wait_for_progress(20, "before the failover")
        ha_cluster.kill(ha_cluster.leader())
        # A new leader; the mount's calls waited for it and resumed, with no error.
        writer.wait_for_progress(20, "after the leader was killed", timeout_s=FAILOVER_TIMEOUT_S)
        writer.stop_and_check()
    finally:
        writer.stop()
        mount.force_unmount()
