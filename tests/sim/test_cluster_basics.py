"""The in-process cluster itself: data written through it reads back, from any replica."""

from __future__ import annotations

from pathlib import Path

import trio

from vmstore.dfs.testing.cluster import open_cluster


async def test_a_file_written_reads_back_after_a_chunkserver_dies(tmp_path: Path,
                                                                 sim_seed: int) -> None:
    async with open_cluster(tmp_path, seed=sim_seed) as cluster:
        async with cluster.client("client1") as client:
            attrs = await client.create_file("/a.img")
            data = bytes(range(256)) * 1024
            await client.write(attrs.inode, 0, data)
            await client.fsync(attrs.inode)
            assert await client.read(attrs.inode, 0, len(data), len(data)) == data
            for name in cluster.chunkserver_names:
                await cluster.kill(name)
                assert await client.read(attrs.inode, 0, len(data), len(data)) == data
                await cluster.restart(name)


async def test_each_client_stays_on_its_own_host(tmp_path: Path, sim_seed: int,
                                                 sim_clock: trio.abc.Clock) -> None:
    """Two clients opened in one task: each one's later connections (made lazily, from
    the test's task) still leave from its own host, so cutting one cuts only it."""
    async with open_cluster(tmp_path, seed=sim_seed) as cluster:
        async with cluster.client("clientA") as a, cluster.client("clientB") as b:
            inode_a = (await a.create_file("/a.img")).inode
            inode_b = (await b.create_file("/b.img")).inode
            await a.write(inode_a, 0, b"a" * 4096)  # connects to its chain, lazily
            cluster.network.isolate("clientA")
            with trio.move_on_after(10) as cut:
                await a.write(inode_a, 0, b"a" * 4096)
            assert cut.cancelled_caught, "clientA is cut off, yet its write went through"
            await b.write(inode_b, 0, b"b" * 4096)
            assert await b.read(inode_b, 0, 4096, 4096) == b"b" * 4096
            cluster.network.heal()
