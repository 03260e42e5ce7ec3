"""A chunkserver that hangs (SIGSTOP: alive, sockets open, silent) with real daemons
(issue 16).

Promise checked: a guest-like reader of a file (4 KiB O_DIRECT reads through
a real mount) finishes every read while a chunkserver holding the replica it
reads first is stopped, with short-circuit reads (the stopped chunkserver is
the local one) and without (its replica is read over TCP), and reads the
bytes written. Nothing is timed beyond "it finished while the fault held":
the reader runs under a deadline shorter than the fault.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys

import pytest
import trio

from tests.system.conftest import Cluster, FsyncingWriter, Mount, require_fuse

pytestmark = pytest.mark.system
MIB = 1024 * 1024
FILE_BYTES = 4 * MIB
# The reader must be done within this while the chunkserver stays stopped
# (before: the first read alone stalled 30 to 35 s).
READER_DEADLINE_S = 20.0

# In a process of its own: a read of the test process stuck in FUSE could not be
# bounded. Prints the longest single read, for the log.
_READER_SCRIPT = """
import mmap, os, sys, time
path, size = sys.argv[1], int(sys.argv[2])
buffer = mmap.mmap(-1, 4096)
fd = os.open(path, os.O_RDONLY | os.O_DIRECT)
longest = 0.0
for offset in range(0, size, 4096):
    started = time.monotonic()
    assert os.preadv(fd, [buffer], offset) == 4096
    longest = max(longest, time.monotonic() - started)
    sys.stdout.buffer.write(buffer[:])
os.close(fd)
print("longest read %.3f s" % longest, file=sys.stderr)
"""


async def _written(cluster: Cluster, data: bytes) -> str:
    """Store ``data`` as /image.raw (goal 2); the chunkserver a reader on local0 asks first."""
    async with cluster.client() as client:
        inode = (await client.create_file("/image.raw")).inode
        await client.write(inode, 0, data)
        await client.fsync(inode)
        (location,) = await client.chunk_locations(inode, 0, 1)
    return f"chunkserver{int(location.replicas[0].host_label.removeprefix('local'))}"


@pytest.mark.parametrize("short_circuit", [True, False], ids=["local", "tcp"])
def test_reads_finish_while_a_replica_holder_is_stopped(cluster: Cluster,
                                                        short_circuit: bool) -> None:
    require_fuse()
    data = os.urandom(FILE_BYTES)
    first = trio.run(_written, cluster, data)
    mount = Mount(cluster, cluster.directory / "mnt", extra_arguments=(
        () if short_circuit else ("--no-short-circuit",)))
    stopped = cluster.pid(first)
    try:
        os.kill(stopped, signal.SIGSTOP)
        reader = subprocess.run(
            [sys.executable, "-c", _READER_SCRIPT, str(mount.path / "image.raw"),
             str(FILE_BYTES)], capture_output=True, timeout=READER_DEADLINE_S)
        assert reader.returncode == 0, reader.stderr.decode(errors="replace")[-2000:]
        assert reader.stdout == data
        print(reader.stderr.decode().strip())
    finally:
        os.kill(stopped, signal.SIGCONT)
        mount.force_unmount()


async def _chain_of(cluster: Cluster, name: str) -> list[str]:
    """The chunkservers of chunk 0 of /NAME, in chain order."""
    async with cluster.client() as client:
        inode = (await client.lookup(1, name.encode())).inode
        (location,) = await client.chunk_locations(inode, 0, 1)
    return [f"chunkserver{int(replica.host_label.removeprefix('local'))}"
            for replica in location.replicas]


@pytest.mark.parametrize("position", [0, -1], ids=["head", "tail"])
def test_fsynced_writes_go_on_while_a_chain_member_is_stopped(cluster: Cluster,
                                                              position: int) -> None:
    """A write+fsync loop (a guest flushing every 64 KiB) goes on while a chain member
    is SIGSTOPped (before: one write+fsync stalled 30 s), and after SIGCONT every
    block the loop was told is durable reads back through the mount: the stopped
    member's replica, now stale, is never read."""
    require_fuse()
    mount = Mount(cluster, cluster.directory / "mnt")
    writer = FsyncingWriter(mount.path / "guest.img")
    stopped: int | None = None
    try:
        writer.wait_for_progress(30, "before the fault")
        member = trio.run(_chain_of, cluster, "guest.img")[position]
        stopped = cluster.pid(member)
        os.kill(stopped, signal.SIGSTOP)
        writer.wait_for_progress(30, f"while {member} is stopped", timeout_s=15.0)
        os.kill(stopped, signal.SIGCONT)
        stopped = None
        assert member not in trio.run(_chain_of, cluster, "guest.img")
        writer.wait_for_progress(10, "after the member is back")
        writer.stop_and_check()
    finally:
        if stopped is not None:
            os.kill(stopped, signal.SIGCONT)
        writer.stop()
        mount.force_unmount()
