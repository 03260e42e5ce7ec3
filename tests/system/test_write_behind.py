"""Write-behind on a real cluster: writes return once queued, and nothing is promised
that is not kept.

* A client reads its own queued writes; fsync puts them on every replica.
* Overlapping writes land in the order they were made, through batches.
* A queued write that is lost (its writer fenced) fails the file's fsync, and
  every fsync after it until the file closes — never a silent success.
* The same through a real FUSE mount, with O_DIRECT writes as QEMU makes them.
"""

from __future__ import annotations

import errno
import logging
import mmap
import os
import random
import time
from typing import Any

import pytest
import trio

from tests.system.conftest import Cluster, Mount
from tests.system.replicas import every_replica
from vmstore.dfs.errors import LeaseLost

pytestmark = pytest.mark.system
BLOCK = 4096
LOST_LEASE = r"write lease lost"
LOST_WRITE = r"write-behind to chunk .* lost"


async def test_queued_writes_are_read_back_ordered_and_on_every_replica_after_fsync(
        cluster: Cluster) -> None:
    rng = random.Random(7)
    expected = bytearray(256 * BLOCK)  # one read request's worth, for every_replica
    async with cluster.client() as client:
        inode = (await client.create_file("/queued.img")).inode
        await client.opened(inode, writable=True)
        # Many small writes, some to the same blocks (and some at odd offsets),
        # all queued before any is on a replica.
        for _ in range(2000):
            offset = rng.randrange(0, len(expected) - BLOCK)
            size = rng.choice((BLOCK, 512, 3 * BLOCK, 100))
            size = min(size, len(expected) - offset)
            data = rng.randbytes(size)
            expected[offset:offset + size] = data
            await client.write(inode, offset, data, wait=False)
        # Read-your-writes before any fsync: reads wait for what they overlap.
        assert await client.read(inode, 0, len(expected), len(expected)) == expected
        await client.fsync(inode)
        replicas = await every_replica(client, inode, 0, 0, len(expected))
        assert len(replicas) == 2
        assert all(content == expected for content in replicas.values())
        await client.closed(inode, writable=True)


async def test_a_stream_of_small_writes_with_zero_blocks_lands_whole(cluster: Cluster) -> None:
    """Back-to-back writes go as one extent per run; whole zero blocks inside it
    become holes and the bytes around them stay in place."""
    rng = random.Random(11)
    expected = bytearray(rng.randbytes(256 * BLOCK))  # the zeros must overwrite it
    async with cluster.client() as client:
        inode = (await client.create_file("/stream.img")).inode
        await client.opened(inode, writable=True)
        await client.write(inode, 0, bytes(expected))
        offset = 0
        while offset < len(expected):
            size = min(rng.choice((BLOCK, 2 * BLOCK, 512, 100, 3 * BLOCK + 7)),
                       len(expected) - offset)
            kind = rng.random()
            data = bytes(size) if kind < 0.4 else rng.randbytes(size)
            expected[offset:offset + size] = data
            await client.write(inode, offset, data, wait=False)
            offset += size + (BLOCK if kind > 0.95 else 0)  # now and then a gap
        await client.fsync(inode)
        replicas = await every_replica(client, inode, 0, 0, len(expected))
        assert len(replicas) == 2
        assert all(content == expected for content in replicas.values())
        await client.closed(inode, writable=True)


async def test_after_an_fsync_writes_are_durable_when_acknowledged(cluster: Cluster) -> None:
    """A file fsynced lately has its batches synced by the chain before they are
    acknowledged, so its next fsync finds nothing to flush: one round trip."""
    async with cluster.client() as client:
        inode = (await client.create_file("/synced.img")).inode
        await client.opened(inode, writable=True)
        await client.write(inode, 0, b"a" * BLOCK, wait=False)
        await client.io.wait_written(inode)
        assert client.io.unflushed.get(inode), "an ordinary write waits for a flush"
        await client.fsync(inode)
        for round_number in range(5):
            data = bytes([round_number]) * BLOCK
            await client.write(inode, round_number * BLOCK, data, wait=False)
            await client.io.wait_written(inode)
            assert not client.io.unflushed.get(inode), "acknowledged, yet not durable"
            await client.fsync(inode)
        replicas = await every_replica(client, inode, 0, 0, 5 * BLOCK)
        assert set(replicas.values()) == {b"".join(bytes([n]) * BLOCK for n in range(5))}
        await client.closed(inode, writable=True)


async def test_a_lost_queued_write_fails_every_fsync_until_the_file_closes(
        cluster: Cluster, expected_logs: Any) -> None:
    expected_logs.allow("vmstore.dfs.client.leases", LOST_LEASE, logging.ERROR, count=1)
    expected_logs.allow("vmstore.dfs.client.chunk_io", LOST_WRITE, logging.WARNING)
    async with cluster.client("hostA") as a, cluster.client("hostB") as b:
        inode = (await a.create_file("/fenced.img")).inode
        await a.opened(inode, writable=True)
        await a.write(inode, 0, b"a" * BLOCK)
        await a.fsync(inode)
        await b.lease_break(inode)  # host A is fenced; it does not know yet
        await a.write(inode, 0, b"x" * BLOCK, wait=False)  # queued: A learns later
        for _ in range(2):
            with pytest.raises(LeaseLost):
                await a.fsync(inode)
        with pytest.raises(LeaseLost):
            await a.closed(inode, writable=True)
        replicas = await every_replica(b, inode, 0, 0, BLOCK)
        assert set(replicas.values()) == {b"a" * BLOCK}, "a fenced write reached a replica"


def test_through_the_mount_direct_writes_are_visible_at_once_and_durable_at_fsync(
        cluster: Cluster, mount: Mount) -> None:
    rng = random.Random(11)
    size = 4 * 1024 * 1024
    path = mount.path / "guest.img"
    path.write_bytes(bytes(size))
    expected = bytearray(size)
    buffer = mmap.mmap(-1, BLOCK)  # O_DIRECT wants aligned memory
    descriptor = os.open(path, os.O_RDWR | os.O_DIRECT)
    try:
        for _ in range(500):
            offset = rng.randrange(0, size // BLOCK) * BLOCK
            data = rng.randbytes(BLOCK)
            buffer[:] = data
            assert os.pwritev(descriptor, [buffer], offset) == BLOCK
            expected[offset:offset + BLOCK] = data
            if rng.random() < 0.1:  # read back at once, through the same handle
                assert os.preadv(descriptor, [buffer], offset) == BLOCK
                assert buffer[:] == data
        os.fsync(descriptor)
    finally:
        os.close(descriptor)
    assert path.read_bytes() == expected


def test_through_the_mount_a_fenced_writer_hears_it_at_fsync_and_close(
        cluster: Cluster, mount: Mount, expected_logs: Any) -> None:
    path = mount.path / "taken.img"
    descriptor = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        os.pwrite(descriptor, b"a" * BLOCK, 0)
        os.fsync(descriptor)

        async def break_lease() -> None:
            async with cluster.client("hostB") as other:
                await other.lease_break((await other.resolve("/taken.img")).inode)

        trio.run(break_lease)
        try:
            os.pwrite(descriptor, b"x" * BLOCK, 0)  # queued (or refused at once)
        except OSError as error:
            assert error.errno == errno.EIO
        for _ in range(2):
            with pytest.raises(OSError) as raised:
                os.fsync(descriptor)
            assert raised.value.errno == errno.EIO
    finally:
        with pytest.raises(OSError):
            os.close(descriptor)  # the close reports it too
    assert path.read_bytes() == b"a" * BLOCK
    # A new opener starts clean, once the kernel's (asynchronous) release of
    # the old handle has dropped the lost lease.
    deadline = time.monotonic() + 10
    while True:
        try:
            with open(path, "r+b") as reopened:
                reopened.write(b"b" * BLOCK)
            break
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)
    assert path.read_bytes() == b"b" * BLOCK
