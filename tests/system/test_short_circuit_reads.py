"""Short-circuit reads with real daemons: local files, fallbacks, refusals, hostile peers.

All chunkservers of these clusters run on this host (loopback, one network
namespace), so every replica is local to the test process and to the mount.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import trio

from tests.system.conftest import Cluster, Mount, require_fuse
from tests.system.test_metrics import endpoint, scrape, value
from tests.system.test_self_healing import (
    read_back,
    replica_files,
    wait_until_healthy,
    write_file,
)
from vmstore.cli.local_cluster import local_down
from vmstore.dfs.client import local_replicas
from vmstore.dfs.client.client import Client
from vmstore.dfs.errors import AccessDenied, ReadRefused
from vmstore.dfs.protocol import codec
from vmstore.dfs.protocol import messages as m
from vmstore.dfs.protocol.local_socket import local_socket_name, new_socket, receive_frame

pytestmark = pytest.mark.system
MIB = 1024 * 1024
COUNTER = "vmstore_client_short_circuit_reads_total"


def counts() -> tuple[float, float]:
    """(local, fallback) short-circuit reads of this process so far."""
    return local_replicas.LOCAL._value.get(), local_replicas.FALLBACK._value.get()


def chunkserver_of(replica: m.ReplicaAddress) -> str:
    return f"chunkserver{int(replica.host_label.removeprefix('local'))}"


@pytest.fixture
def metered_mounts(tmp_path: Path) -> Iterator[tuple[Mount, Mount]]:
    """Two mounts of one cluster, with metrics: short-circuit on, and off."""
    require_fuse()
    cluster = Cluster(tmp_path / "cluster", 3)
    try:
        mounts: list[Mount] = []
        try:
            mounts.append(Mount(cluster, cluster.directory / "mnt",
                                extra_arguments=("--metrics", "127.0.0.1:0")))
            mounts.append(Mount(cluster, cluster.directory / "mnt-tcp",
                                extra_arguments=("--metrics", "127.0.0.1:0",
                                                 "--no-short-circuit")))
            yield mounts[0], mounts[1]
        finally:
            for mount in mounts:
                mount.force_unmount()
    finally:
        local_down(cluster.directory)


def test_mount_reads_come_from_local_files(metered_mounts: tuple[Mount, Mount]) -> None:
    local, tcp = metered_mounts
    data = os.urandom(16 * MIB) + bytes(8 * MIB) + os.urandom(MIB + 123)  # a hole inside
    (local.path / "image.raw").write_bytes(data)
    with open(local.path / "image.raw", "rb+") as image:
        os.fsync(image.fileno())
    # A new open drops the kernel's page cache of the file: these reads reach the mount.
    assert (local.path / "image.raw").read_bytes() == data
    assert (tcp.path / "image.raw").read_bytes() == data
    with open(local.path / "image.raw", "rb", buffering=0) as image:
        assert os.pread(image.fileno(), 4096, 5 * MIB + 4096) == data[5 * MIB + 4096:
                                                                     5 * MIB + 8192]
    served = scrape(endpoint(local.log))
    assert value(served, COUNTER, result="local") >= 17  # at least one read per MiB of data
    assert value(served, COUNTER, result="fallback") == 0
    unserved = scrape(endpoint(tcp.log))
    assert value(unserved, COUNTER, result="local") == 0
    assert value(unserved, "vmstore_mount_data_bytes_total", direction="read") >= len(data)


async def test_rot_in_a_local_replica_falls_back_and_is_rebuilt(
        healing_cluster: Cluster) -> None:
    cluster = healing_cluster
    async with cluster.client() as client:
        inode, data = await write_file(client, "/rot.img", 1)
        local_before, _ = counts()
        assert await read_back(client, inode, 1) == data
        assert counts()[0] > local_before
        (location,) = await client.chunk_locations(inode, 0, 1)
        victim = location.replicas[0]  # the one both paths try first
        path = next(p for p in replica_files(cluster, chunkserver_of(victim))
                    if int(p.stem, 16) == location.chunk_id)
        with open(path, "r+b") as replica:
            replica.seek(4096 + 65536 + 4096)
            original = replica.read(8)
            replica.seek(4096 + 65536 + 4096)
            replica.write(bytes(b ^ 0x5A for b in original))
        _, fallback_before = counts()
        assert await read_back(client, inode, 1) == data  # served by the other replica
        assert counts()[1] > fallback_before
        # the network read reported it as it always did: the master rebuilds the chunk
        await wait_until_healthy(client, inode, 1, goal=2)
        (rebuilt,) = await client.chunk_locations(inode, 0, 1)
        assert rebuilt.version > location.version
        assert await read_back(client, inode, 1) == data
    assert "checksum" in cluster.logs()[chunkserver_of(victim)].lower()


async def test_a_killed_chunkserver_still_reads(cluster: Cluster) -> None:
    async with cluster.client() as client:
        inode, data = await write_file(client, "/kill.img", 2)
        assert await read_back(client, inode, 2) == data
        first, _ = await client.chunk_locations(inode, 0, 2)
        victim = chunkserver_of(first.replicas[0])
        await trio.to_thread.run_sync(cluster.kill, victim)
        assert await read_back(client, inode, 2) == data
        client.io.forget(inode)  # and with locations asked for anew
        assert await read_back(client, inode, 2) == data


# --- refusals and hostile peers on a real chunkserver's socket ----------------------------
async def open_request(client: Client, inode: int, capability: m.Capability | None = None,
                       ) -> tuple[bytes, bytes]:
    """(the chunkserver's abstract name, an open request frame for chunk 0 of ``inode``)."""
    (location,) = await client.chunk_locations(inode, 0, 1)
    replica = location.replicas[0]
    head, _ = codec.encode_frame(m.ToChunkserverOpenLocalReplica(
        chunk_id=location.chunk_id, version=location.version,
        capability=capability or location.read_capability), 1)
    return local_socket_name(replica.host, replica.port), head


async def call(name: bytes, packet: bytes) -> tuple[m.Message | None, list[int]]:
    """One raw packet to a chunkserver's socket: (its reply or None if it closed, fds)."""
    sock = new_socket()
    with sock:
        await sock.connect(name)
        await sock.send(packet)
        with trio.fail_after(10):
            received = await receive_frame(sock)
    if received is None:
        return None, []
    return received[1], received[2]


NOBODY_CLIENT = """
import array, socket, sys
sock = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
sock.settimeout(10)
sock.connect(bytes.fromhex(sys.argv[1]))
sock.send(bytes.fromhex(sys.argv[2]))
data, fds, _, _ = socket.recv_fds(sock, 4096, 1)
print(data.hex(), len(fds))
"""


def as_nobody(name: bytes, packet: bytes) -> tuple[m.Message, int]:
    """Send ``packet`` from a process running as uid/gid 65534; (the reply, fds it got)."""
    result = subprocess.run(
        ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", sys.executable,
         "-I", "-c", NOBODY_CLIENT, name.hex(), packet.hex()],
        capture_output=True, text=True, timeout=30, cwd="/")
    assert result.returncode == 0, result.stderr
    reply_hex, fd_count = result.stdout.split()
    reply = bytes.fromhex(reply_hex)
    header = codec.decode_header(reply[:codec.HEADER_BYTES])
    return codec.decode_body(header, reply[codec.HEADER_BYTES:]), int(fd_count)


async def test_refusals_and_garbage_leave_the_chunkserver_serving(cluster: Cluster) -> None:
    async with cluster.client() as client:
        inode, data = await write_file(client, "/hostile.img", 1)
        name, good = await open_request(client, inode)
        (location,) = await client.chunk_locations(inode, 0, 1)
        assert location.read_capability is not None
        forged = m.Capability(chunk_id=location.chunk_id, operation=1, epoch=0,
                              session_id=0, issued_ns=0, expires_ns=2**62, mac=bytes(16))
        _, forged_request = await open_request(client, inode, forged)

        reply, fds = await call(name, forged_request)
        assert isinstance(reply, m.ErrorReply)
        assert reply.code == ReadRefused.code
        assert not fds

        reply, fd_count = await trio.to_thread.run_sync(as_nobody, name, good)
        assert isinstance(reply, m.ErrorReply)
        assert reply.code == AccessDenied.code
        assert "uid 65534" in reply.message
        assert fd_count == 0

        for garbage in (b"\x00" * 3, os.urandom(64), good[:25], b"VMS1" + bytes(100)):
            reply, fds = await call(name, garbage)
            assert reply is None
            assert not fds

        reply, fds = await call(name, good)  # the same socket still hands out fds
        assert isinstance(reply, m.LocalReplicaReply)
        assert len(fds) == 1
        os.close(fds[0])
        local_before, _ = counts()
        assert await read_back(client, inode, 1) == data
        assert counts()[0] > local_before
    log = cluster.logs()[chunkserver_of(location.replicas[0])]
    assert "uid 65534" in log
    assert "closed a connection" in log


def test_an_fd_sent_to_the_chunkserver_closes_only_that_connection(cluster: Cluster) -> None:
    address = cluster.address_of("chunkserver0")
    host, _, port = address.rpartition(":")
    name = local_socket_name(host, int(port))
    with socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET) as sock, open(os.devnull) as null:
        sock.settimeout(10)
        sock.connect(name)
        socket.send_fds(sock, [b"VMS1" + bytes(40)], [null.fileno()])
        assert sock.recv(4096) == b""  # closed
    os.kill(cluster.pid("chunkserver0"), 0)  # and still running
    with socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET) as sock:
        sock.connect(name)  # still listening
