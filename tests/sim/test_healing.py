"""Re-replication on sick disks, in process: a copy never spreads rot, and a disk that
fails under a copy fails that copy, never its chunkserver."""

from __future__ import annotations

from pathlib import Path

import trio

from vmstore.dfs.testing.cluster import open_cluster

DATA = bytes(range(251)) * 1200  # 301,200 bytes: five 64 KiB blocks and a part


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
            inode = await cluster.stored_file(client, "/a.img", DATA)
            rotten, healthy = await cluster.holders(client, inode)
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
            inode = await cluster.stored_file(client, "/a.img", DATA)
            first, second = await cluster.holders(client, inode)
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
            assert target in await cluster.holders(client, inode)
            await cluster.kill(second)
            assert await client.read(inode, 0, len(DATA), len(DATA)) == DATA


async def test_a_disk_failing_under_master_commands_fails_them_not_the_chunkserver(
        tmp_path: Path, sim_seed: int, sim_clock: trio.abc.Clock,
        expected_logs) -> None:  # type: ignore[no-untyped-def]
    """Creates refused by a sick disk go elsewhere; the chunkserver lives on and, once
    its disk heals, takes its share of copies again."""
    expected_logs.allow("vmstore", ".")
    async with open_cluster(tmp_path, seed=sim_seed) as cluster:
        sick = cluster.stores["cs1"]
        sick.fail("create", times=-1)
        async with cluster.client("client1") as client:
            inodes = []
            for index in range(12):
                inode = (await client.create_file(f"/f{index}.img")).inode
                await client.write(inode, 0, DATA)
                await client.fsync(inode)
                inodes.append(inode)
                if sick.faults_injected:
                    break
            assert sick.faults_injected, "cs1 was never asked to create a chunk"
            assert cluster.running("cs1"), "an EIO on CreateChunk took the chunkserver down"
            sick.heal()
            await _healed(client)
            for inode in inodes:
                assert await client.read(inode, 0, len(DATA), len(DATA)) == DATA
