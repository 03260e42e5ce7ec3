"""Metadata HA with real processes: a three-member etcd, two masters, chunkservers.

What is checked (issue 15):
* ``kill -9`` of the leader under a client that creates, renames and writes with
  fsync: a standby takes over, every acknowledged change is there, and the
  client saw no error (its calls waited and resumed on the new leader).
* The killed master, started again, rejoins as a standby and follows.
* A standby whose data directory is wiped rebuilds itself from the snapshot and
  the journal's tail, and can lead.
* One etcd member killed: no effect.
* Through a real FUSE mount, ``kill -9`` of the leader under a mixed workload
  (create, write + fsync, truncate + fsync, rename, unlink: sizes up and down)
  and a guest-like fsyncing writer: neither sees an error, and every
  acknowledged change is there afterwards, read by a new client from the new
  leader (not from the mount's kernel caches).
"""

from __future__ import annotations

import hashlib
import os
import shutil
import signal
import subprocess
import sys
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
from vmstore.dfs.protocol import messages as m
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
                nursery.start_soon(write_files, client, 5, 10, acknowledged)
                await trio.sleep(0.5)
                ha_cluster.kill(first_leader)
            await check_files(client, acknowledged)

    trio.run(main)
    second_leader = ha_cluster.leader()
    assert second_leader != first_leader
    assert len(acknowledged) == 15
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


# The mixed workload: a process of its own, as FsyncingWriter's (a pytest process
# holding files of the mount open would pass them to every daemon it forks). Each
# line of its log is a change the mount acknowledged (the call returned); it stops
# between two changes once the stop file exists, so the log is exact.
_MIXED_SCRIPT = """
import hashlib, os, sys
root, log_path, stop_path = sys.argv[1:4]
def content(i, n):
    return (hashlib.sha256(b"m%d" % i).digest() * (n // 32 + 1))[:n]
with open(log_path, "a") as log:
    def ack(line):
        log.write(line + "\\n")
        log.flush()
    i = 0
    while not os.path.exists(stop_path):
        tmp, final = os.path.join(root, "tmp-%d" % i), os.path.join(root, "file-%d" % i)
        size = 5000 + (i % 7) * 23000
        fd = os.open(tmp, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        ack("create %d" % i)
        os.write(fd, content(i, size))
        os.fsync(fd)
        ack("size %d %d" % (i, size))
        if i % 2:
            size //= 3
            os.ftruncate(fd, size)
            os.fsync(fd)
            ack("size %d %d" % (i, size))
        os.close(fd)
        os.rename(tmp, final)
        ack("rename %d" % i)
        if i % 3 == 2:
            os.unlink(os.path.join(root, "file-%d" % (i - 1)))
            ack("unlink %d" % (i - 1))
        i += 1
"""


def mixed_content(index: int, size_bytes: int) -> bytes:
    return (hashlib.sha256(b"m%d" % index).digest() * (size_bytes // 32 + 1))[:size_bytes]


class MixedWorkload:
    """Creates, writes, truncates, renames and unlinks under ``directory`` (on a mount),
    logging each acknowledged change; ``expected`` is the directory they leave."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        stem = f"/var/tmp/vmstore-mixed-{os.getpid()}-{time.monotonic_ns()}"
        self._log, self._stop = Path(stem + ".log"), Path(stem + ".stop")
        self._process = subprocess.Popen(
            [sys.executable, "-c", _MIXED_SCRIPT, str(directory), str(self._log),
             str(self._stop)], stderr=subprocess.PIPE, text=True)

    def acknowledged(self) -> list[str]:
        try:
            return self._log.read_text().splitlines()
        except FileNotFoundError:
            return []

    def wait_for_progress(self, changes: int, what: str, timeout_s: float = 60.0) -> None:
        wanted = len(self.acknowledged()) + changes
        deadline = time.monotonic() + timeout_s
        while len(self.acknowledged()) < wanted:
            assert self._process.poll() is None, (
                f"the mixed workload failed {what}: {self._process.stderr.read()[-2000:]}"
                if self._process.stderr else "")
            assert time.monotonic() < deadline, f"no {changes} changes {what}"
            time.sleep(0.05)

    def stop(self) -> None:
        """Stop between two changes; it must have met no error."""
        self._stop.touch()
        try:
            _, stderr = self._process.communicate(timeout=FAILOVER_TIMEOUT_S)
        finally:
            self._stop.unlink(missing_ok=True)
        assert self._process.returncode == 0, f"the mixed workload failed: {stderr[-2000:]}"

    def kill(self) -> None:
        if self._process.poll() is None:
            self._process.kill()
            self._process.wait(timeout=120)

    def expected(self) -> dict[bytes, int]:
        """Name -> size: every file the acknowledged changes leave, and no other."""
        files: dict[bytes, int] = {}
        for line in self.acknowledged():
            change, index, *size = line.split()
            tmp, final = f"tmp-{index}".encode(), f"file-{index}".encode()
            if change == "create":
                files[tmp] = 0
            elif change == "size":
                files[tmp] = int(size[0])
            elif change == "rename":
                files[final] = files.pop(tmp)
            else:
                assert change == "unlink", line
                del files[final]
        self._log.unlink(missing_ok=True)
        return files


async def check_directory(client: Client, path: str, expected: dict[bytes, int]) -> None:
    """``path`` holds exactly ``expected``'s files, each with its size and bytes."""
    directory = await client.resolve(path)
    found: dict[bytes, m.FileAttrs] = {}
    cookie = 0
    while entries := await client.readdir(directory.inode, cookie):
        found.update((entry.name, entry.attrs) for entry in entries
                     if entry.name not in (b".", b".."))
        cookie = entries[-1].cookie
    assert sorted(found) == sorted(expected), "the directory lost or kept a change"
    for name, size_bytes in expected.items():
        attrs = found[name]
        assert attrs.size_bytes == size_bytes, name
        index = int(name.split(b"-")[1])
        data = await client.read(attrs.inode, 0, size_bytes, size_bytes)
        assert data == mixed_content(index, size_bytes), name


def test_a_mixed_workload_and_a_guest_on_a_mount_lose_nothing_across_a_failover(
        ha_cluster: HaCluster) -> None:
    require_fuse()
    mount = Mount(ha_cluster, ha_cluster.directory / "mnt")
    (mount.path / "mixed").mkdir()
    writer = FsyncingWriter(mount.path / "guest.img")
    mixed = MixedWorkload(mount.path / "mixed")
    try:
        writer.wait_for_progress(20, "before the failover")
        mixed.wait_for_progress(12, "before the failover")
        ha_cluster.kill(ha_cluster.leader())
        # A new leader; the mount's calls waited for it and resumed, with no error.
        writer.wait_for_progress(20, "after the leader was killed", timeout_s=FAILOVER_TIMEOUT_S)
        mixed.wait_for_progress(12, "after the leader was killed", timeout_s=FAILOVER_TIMEOUT_S)
        mixed.stop()
        writer.stop_and_check()
        expected = mixed.expected()

        async def check() -> None:
            async with ha_cluster.ha_client() as client:
                await check_directory(client, "/mixed", expected)

        trio.run(check)
    finally:
        writer.stop()
        mixed.kill()
        mount.force_unmount()
    # Renames and unlinks both happened, sizes went up and down: the log says so.
    assert any(name.startswith(b"file-") for name in expected)
