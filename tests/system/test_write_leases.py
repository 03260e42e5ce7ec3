"""Write leases through the client library, on a loopback cluster: one writer per file.

Two client sessions stand for two hosts (their host labels differ). The
multi-host tests with real mounts in network namespaces are in
test_multi_host_leases.py; these pin down the rules quickly.
"""

from __future__ import annotations

import logging
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import trio

from tests.system.conftest import Cluster
from tests.system.replicas import every_replica
from vmstore.cli.local_cluster import local_down
from vmstore.dfs.constants import CHUNK_SIZE_BYTES
from vmstore.dfs.errors import AccessDenied, LeaseHeld, LeaseLost
from vmstore.dfs.protocol import messages as m

pytestmark = pytest.mark.system
BLOCK_BYTES = 256 * 1024
LEASE_EXPIRY_S = 4.0
LOST_LEASE = r"write lease lost"


@pytest.fixture
def lease_cluster(tmp_path: Path) -> Iterator[Cluster]:
    started = Cluster(tmp_path / "cluster", 3,
                      master_flags=("--lease-expiry", str(LEASE_EXPIRY_S)))
    try:
        yield started
    finally:
        local_down(started.directory)


async def test_a_second_writer_is_refused_and_told_who_writes(lease_cluster: Cluster) -> None:
    async with lease_cluster.client("hostA") as a, lease_cluster.client("hostB") as b:
        inode = (await a.create_file("/one.img")).inode
        await a.opened(inode, writable=True)
        await a.write(inode, 0, b"a" * BLOCK_BYTES)
        with pytest.raises(LeaseHeld, match="open for writing on host hostA"):
            await b.opened(inode, writable=True)
        with pytest.raises(LeaseHeld, match="hostA"):  # no truncating behind its back
            await b.setattr(inode, size_bytes=0)
        await b.opened(inode)  # reading is fine
        assert await b.read(inode, 0, BLOCK_BYTES, BLOCK_BYTES) == b"a" * BLOCK_BYTES
        info = await b.lease_info(inode)
        assert (info.holder_host, info.holder_session) == ("hostA", a.master.session_id)
        await a.closed(inode, writable=True)
        await b.opened(inode, writable=True)  # free once its writer closed it
        await b.write(inode, 0, b"b" * BLOCK_BYTES)
        assert (await b.lease_info(inode)).holder_host == "hostB"


async def test_a_tool_writing_without_opening_takes_the_lease(lease_cluster: Cluster) -> None:
    async with lease_cluster.client("hostA") as a, lease_cluster.client("hostB") as b:
        inode = (await a.create_file("/tool.img")).inode
        await a.write(inode, 0, b"t" * BLOCK_BYTES)
        with pytest.raises(LeaseHeld, match="hostA"):
            await b.write(inode, 0, b"u" * BLOCK_BYTES)


async def test_handover_fences_the_old_writer_on_every_replica(
        lease_cluster: Cluster, expected_logs: Any) -> None:
    expected_logs.allow("vmstore.dfs.client.leases", LOST_LEASE, logging.ERROR, count=1)
    old_data, new_data, late_data = b"o" * BLOCK_BYTES, b"n" * BLOCK_BYTES, b"x" * BLOCK_BYTES
    async with lease_cluster.client("hostA") as a, lease_cluster.client("hostB") as b:
        inode = (await a.create_file("/moving.img")).inode
        await a.opened(inode, writable=True)
        for index in range(2):
            await a.write(inode, index * CHUNK_SIZE_BYTES, old_data)
        await a.fsync(inode)
        await b.lease_handover(inode, "hostB")
        await b.opened(inode, writable=True)  # allowed now; the first write takes the lease
        assert (await b.lease_info(inode)).holder_host == "hostA"
        await b.write(inode, 0, new_data)
        await b.fsync(inode)
        info = await b.lease_info(inode)
        assert (info.holder_host, info.handover_host) == ("hostB", "")
        # The old writer still has valid tokens for both chunks: the chunkservers refuse
        # them, for the chunk the new writer wrote and for the one it did not.
        for index in range(2):
            with pytest.raises(LeaseLost):
                await a.write(inode, index * CHUNK_SIZE_BYTES, late_data)
        with pytest.raises(LeaseLost):
            await a.fsync(inode)
        expected = {0: new_data, 1: old_data}
        for index, data in expected.items():
            replicas = await every_replica(b, inode, index, 0, BLOCK_BYTES)
            assert len(replicas) == 2
            assert all(content == data for content in replicas.values()), index
        with pytest.raises(LeaseHeld, match="hostB"):  # closing and reopening does not help
            await a.closed(inode, writable=True)
            await a.opened(inode, writable=True)


async def test_break_fences_the_holder_at_once(lease_cluster: Cluster,
                                               expected_logs: Any) -> None:
    expected_logs.allow("vmstore.dfs.client.leases", LOST_LEASE, logging.ERROR, count=1)
    async with lease_cluster.client("hostA") as a, lease_cluster.client("hostB") as b:
        inode = (await a.create_file("/broken.img")).inode
        await a.opened(inode, writable=True)
        await a.write(inode, 0, b"a" * BLOCK_BYTES)
        info = await b.lease_break(inode)
        assert info.holder_session == 0
        with pytest.raises(LeaseLost):
            await a.write(inode, 0, b"x" * BLOCK_BYTES)
        await b.opened(inode, writable=True)
        await b.write(inode, 0, b"b" * BLOCK_BYTES)
        replicas = await every_replica(b, inode, 0, 0, BLOCK_BYTES)
        assert set(replicas.values()) == {b"b" * BLOCK_BYTES}


HOLDER_SCRIPT = textwrap.dedent("""
    import sys, trio
    from pathlib import Path
    from vmstore.dfs.client.client import open_client
    from vmstore.dfs.client.master_client import ClientIdentity
    from vmstore.dfs.protocol.auth import load_key

    async def main(host, port, key_file, inode):
        async with open_client(host, int(port), load_key(Path(key_file)),
                               ClientIdentity(host_label="doomed")) as client:
            await client.opened(int(inode), writable=True)
            await client.write(int(inode), 0, b"d" * 4096)
            print("holding", flush=True)
            await trio.sleep_forever()

    trio.run(main, *sys.argv[1:])
""")


async def test_a_dead_clients_lease_expires(lease_cluster: Cluster) -> None:
    async with lease_cluster.client("hostB") as b:
        inode = (await b.create_file("/orphaned.img")).inode
        holder = subprocess.Popen(
            [sys.executable, "-c", HOLDER_SCRIPT, lease_cluster.master_host,
             str(lease_cluster.master_port), str(lease_cluster.directory / "cluster.key"),
             str(inode)], stdout=subprocess.PIPE, text=True)
        try:
            assert holder.stdout is not None
            assert await trio.to_thread.run_sync(holder.stdout.readline) == "holding\n"
            with pytest.raises(LeaseHeld, match="doomed"):
                await b.opened(inode, writable=True)
        finally:
            holder.kill()
            holder.wait()
        with trio.fail_after(LEASE_EXPIRY_S * 4):
            while True:
                try:
                    await b.opened(inode, writable=True)
                    break
                except LeaseHeld:
                    await trio.sleep(0.2)
        await b.write(inode, 0, b"b" * 4096)


async def test_a_session_is_used_only_on_the_connection_that_opened_it(
        lease_cluster: Cluster) -> None:
    """Another key holder cannot close, renew or write as someone else's session."""
    async with lease_cluster.client("hostA") as a, lease_cluster.client("hostB") as b:
        inode = (await a.create_file("/mine.img")).inode
        await a.opened(inode, writable=True)
        victim = a.master.session_id
        for request in (m.ClientToMasterCloseSession(session_id=victim),
                        m.ClientToMasterAcquireLease(session_id=victim, inode=inode)):
            with pytest.raises(AccessDenied, match="not opened on this connection"):
                await b.master.call(request, reply_type=request.REPLY)
        await a.write(inode, 0, b"still mine")  # session and lease untouched
        await a.fsync(inode)
        with pytest.raises(LeaseHeld):
            await b.opened(inode, writable=True)
