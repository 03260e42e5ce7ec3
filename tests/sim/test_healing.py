"""Re-replication on sick disks, in process: a copy never spreads rot, and a disk that
fails under a copy fails that copy, never its chunkserver."""

from __future__ import annotations

from pathlib import Path

import trio

from vmstore.dfs.testing.cluster import SimCluster, open_cluster

DATA = bytes(range(251)) * 1200  # 301,200 bytes: five 64 KiB blocks and a part


async def _holders(cluster: SimCluster, client, inode: int) -> list[str]:  # type: ignore[no-untyped-def]
    (location,) = await client.chunk_locations(inode, 0, 1)
    return [replica.host_label for replica in location.replicas]


async def _healed(client) -> None:  # type: ignore[no-untyped-def]
    with trio.fail_after(300):
        while (chunks := (await client.status()).chunks).ok != chunks.total:
            await trio.sleep(1)


async def test_a_copy_never_spreads_a_rotten_block(tmp_path: Path, sim_seed: int,
                                                   sim_clock: trio.abc.Clock,
                                                   expected_logs) -> None:  # type: ignore[no-untyped-def]
    expected_logs.allow("vmstore", ".")  # the rot is reported, at WARNING and ERROR
    expected_logs.allow("vmstore", ".", level=40)
    async with open_cluster(tmp_path, seed=sim_seed) as cluster:
        async with cluster.client("client1") as client:
            inode = (await client.create_file("/a.img")).inode
            await client.write(inode, 0, DATA)
            await client.fsync(inode)
            rotten, healthy = await _holders(cluster, client, inode)
            (chunk_id, _), = cluster.stores[rotten].list_chunks()
            cluster.stores[rotten].flip_bit(chunk_id, 70_000)  # block 1
            await client.set_goal(inode, 3)
            await _healed(client)
            (third,) = set(cluster.chunkserver_names) - {rotten, healthy}
            assert cluster.stores[third].verify(chunk_id) == [], "the new copy is clean"
            for name in (rotten, healthy):
                await cluster.kill(name)
            assert await client.read(inode, 0, len(DATA), len(DATA)) == DATA


async def test_a_disk_failing_under_a_copy_fails_the_copy_not_the_chunkserver(
        tmp_path: Path, sim_seed: int, sim_clock: trio.abc.Clock,
        expected_logs) -> None:  # type: ignore[no-untyped-def]
    expected_logs.allow("vmstore", ".")
    async with open_cluster(tmp_path, seed=sim_seed) as cluster:
        async with cluster.client("client1") as client:
            inode = (await client.create_file("/a.img")).inode
            await client.write(inode, 0, DATA)
            await client.fsync(inode)
            first, second = await _holders(cluster, client, inode)
            (target,) = set(cluster.chunkserver_names) - {first, second}
            cluster.stores[target].fail("write", times=-1)
            await cluster.kill(first)
            with trio.move_on_after(30):  # the master tries the copy, and it fails
                while cluster.stores[target].faults_injected == 0:
                    await trio.sleep(0.5)
            assert cluster.stores[target].faults_injected > 0, "the copy was tried"
            assert cluster.running(target), "one EIO under a copy took the chunkserver down"
            cluster.stores[target].heal()
            await _healed(client)
            assert target in await _holders(cluster, client, inode)
            await cluster.kill(second)
            assert await client.read(inode, 0, len(DATA), len(DATA)) == DATA
