"""The cluster core with real daemons: big files, a chunkserver killed mid-stream,
a master restarted mid-work, hostile peers. Timings are never asserted here."""

from __future__ import annotations

import hashlib
import os
import random
import stat

import pytest
import trio

from tests.system.conftest import Cluster
from vmstore.dfs.client.client import Client
from vmstore.dfs.constants import CHUNK_SIZE_BYTES
from vmstore.dfs.errors import NotFound

pytestmark = pytest.mark.system
BLOCK_BYTES = 1024 * 1024


def pattern(seed: int, size: int) -> bytes:
    """Deterministic incompressible bytes, with zero stretches (holes) now and then."""
    generator = random.Random(seed)
    if generator.random() < 0.1:
        return bytes(size)
    return generator.randbytes(size)


async def write_stream(client: Client, inode: int, size_bytes: int, seed: int,
                       inflight: int = 8) -> str:
    digest = hashlib.sha256()
    limiter = trio.Semaphore(inflight)
    async with trio.open_nursery() as nursery:
        for offset in range(0, size_bytes, BLOCK_BYTES):
            block = pattern(seed + offset, min(BLOCK_BYTES, size_bytes - offset))
            digest.update(block)
            await limiter.acquire()

            async def one(offset: int = offset, block: bytes = block) -> None:
                try:
                    await client.write(inode, offset, block)
                finally:
                    limiter.release()

            nursery.start_soon(one)
    await client.fsync(inode)
    return digest.hexdigest()


async def read_digest(client: Client, inode: int) -> str:
    attrs = await client.getattr(inode)
    digest = hashlib.sha256()
    for offset in range(0, attrs.size_bytes, 4 * BLOCK_BYTES):
        digest.update(await client.read(inode, offset, 4 * BLOCK_BYTES, attrs.size_bytes))
    return digest.hexdigest()


@pytest.mark.parametrize("goal", [2, 3])
async def test_large_file_round_trip(cluster: Cluster, goal: int) -> None:
    size_bytes = 512 * BLOCK_BYTES + 12345  # 8+ chunks, a ragged end
    async with cluster.client() as client:
        attrs = await client.create_file(f"/goal{goal}.img")
        await client.set_goal(attrs.inode, goal)
        written = await write_stream(client, attrs.inode, size_bytes, seed=goal)
        assert (await client.getattr(attrs.inode)).size_bytes == size_bytes
        locations = await client.chunk_locations(attrs.inode, 0, 64)
        assert len(locations) == -(-size_bytes // CHUNK_SIZE_BYTES)
        for location in locations:
            hosts = {replica.host_label for replica in location.replicas}
            assert len(hosts) == goal, location
    # a fresh client (nothing cached) reads the same bytes
    async with cluster.client(host_label="elsewhere") as reader:
        assert await read_digest(reader, attrs.inode) == written


async def test_chunkserver_killed_mid_stream_loses_no_acknowledged_write(
        cluster: Cluster) -> None:
    size_bytes = 200 * BLOCK_BYTES
    async with cluster.client() as client:
        attrs = await client.create_file("/victim.img")
        acknowledged: dict[int, bytes] = {}

        async def writer() -> None:
            for offset in range(0, size_bytes, BLOCK_BYTES):
                block = pattern(offset, BLOCK_BYTES)
                await client.write(attrs.inode, offset, block)
                acknowledged[offset] = block  # the write returned: it is acknowledged

        async with trio.open_nursery() as nursery:
            nursery.start_soon(writer)
            while len(acknowledged) < 40:
                await trio.sleep(0.01)
            # the local chunkserver heads every chain of this writer
            await trio.to_thread.run_sync(cluster.kill, "chunkserver0")
        await client.fsync(attrs.inode)
        assert len(acknowledged) == size_bytes // BLOCK_BYTES
        for offset, block in acknowledged.items():
            assert await client.read(attrs.inode, offset, BLOCK_BYTES, size_bytes) == block
        status = await client.status()
        assert [s.state for s in status.chunkservers].count("down") == 1
        # the survivors carry every chunk at a version the dead server never saw
        locations = await client.chunk_locations(attrs.inode, 0, 8)
        for location in locations:
            assert all(r.host_label != "local0" for r in location.replicas)
        assert locations[0].version > 1  # chunk 0 lost a replica mid-write
    # the killed server comes back with stale replicas: they are never served
    await trio.to_thread.run_sync(cluster.restart, "chunkserver0")
    async with cluster.client(host_label="local0") as reader:
        for offset in range(0, size_bytes, 16 * BLOCK_BYTES):
            assert await reader.read(attrs.inode, offset, BLOCK_BYTES, size_bytes) == \
                acknowledged[offset]


async def test_master_restart_mid_work_loses_nothing_acknowledged(cluster: Cluster) -> None:
    async with cluster.client() as client:
        root = await client.makedirs("/work")
        created: list[str] = []
        data_file = await client.create_file("/work/data.bin")
        payload = os.urandom(3 * BLOCK_BYTES)
        await client.write(data_file.inode, 0, payload)
        await client.fsync(data_file.inode)

        async def metadata_work() -> None:
            for number in range(300):
                name = f"file{number:04d}"
                await client.create(root.inode, name.encode(), stat.S_IFREG | 0o644)
                if number % 3 == 0:
                    await client.rename(root.inode, name.encode(), root.inode,
                                        f"renamed{number:04d}".encode())
                    name = f"renamed{number:04d}"
                created.append(name)

        async with trio.open_nursery() as nursery:
            nursery.start_soon(metadata_work)
            while len(created) < 60:
                await trio.sleep(0.005)
            await trio.to_thread.run_sync(cluster.kill, "master")
            await trio.sleep(0.5)  # clients are now waiting for it
            await trio.to_thread.run_sync(cluster.restart, "master")
        assert len(created) == 300
        names = set()
        cookie = 0
        while entries := await client.readdir(root.inode, cookie):
            names.update(entry.name.decode() for entry in entries)
            cookie = entries[-1].cookie
        assert names == set(created) | {"data.bin"}
        for number in range(0, 300, 3):
            with pytest.raises(NotFound):
                await client.lookup(root.inode, f"file{number:04d}".encode())
        # data written before the restart reads back once chunkservers re-register
        attrs = await client.getattr(data_file.inode)
        assert await client.read(data_file.inode, 0, len(payload), attrs.size_bytes) == payload


async def test_removed_and_truncated_files_free_their_replicas(cluster: Cluster) -> None:
    def replica_files() -> int:
        return sum(1 for name in cluster.chunkserver_names
                   for _ in (cluster.directory / name / "chunks").rglob("*.chunk"))

    async with cluster.client() as client:
        attrs = await client.create_file("/doomed.img")
        await client.write(attrs.inode, 0, os.urandom(BLOCK_BYTES))
        await client.write(attrs.inode, 2 * CHUNK_SIZE_BYTES, os.urandom(BLOCK_BYTES))
        await client.fsync(attrs.inode)
        assert replica_files() == 4  # two chunks, goal 2
        await client.setattr(attrs.inode, size_bytes=100)  # drops chunk 2, cuts chunk 0
        assert await client.read(attrs.inode, 0, 200, 200) != bytes(200)
        assert await client.read(attrs.inode, 100, 100, 200) == bytes(100)
        with trio.fail_after(30):
            while replica_files() != 2:
                await trio.sleep(0.1)
        await client.unlink(1, b"doomed.img")
        with trio.fail_after(30):
            while replica_files() != 0:
                await trio.sleep(0.1)
