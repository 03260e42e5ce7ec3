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
            await trio.sleep(0)
