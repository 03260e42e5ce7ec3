"""A chunk below its goal with nowhere to copy to keeps its version (issue 19: one chunk
reached version 650 in 11 minutes, and every returning replica was stale by then)."""

from __future__ import annotations

from pathlib import Path

import trio

from vmstore.dfs.testing.cluster import open_cluster


async def test_versions_stay_put_while_nothing_can_be_copied(
        tmp_path: Path, sim_seed: int, sim_clock: trio.abc.Clock,
        expected_logs) -> None:  # type: ignore[no-untyped-def]
    expected_logs.allow("vmstore", "takes new replicas|refused|missed its heartbeats")
    async with open_cluster(tmp_path, seed=sim_seed, chunkservers=2) as cluster:
        async with cluster.client("client1") as client:
            inode = await cluster.stored_file(client, "/a.img", b"\x33" * 70_000)
            (before,) = await client.chunk_locations(inode, 0, 1)
            first, second = await cluster.holders(client, inode)
            await cluster.kill(second)
            await client.write(inode, 0, b"\x44" * 4096)  # the chain drops the dead one
            (dropped,) = await client.chunk_locations(inode, 0, 1)
            await trio.sleep(120)  # healing passes, none with a host to copy to
            (after,) = await client.chunk_locations(inode, 0, 1)
            assert after.version == dropped.version, (
                f"version {dropped.version} -> {after.version} with nowhere to copy to")
            assert dropped.version == before.version + 1
            await cluster.restart(second)  # a host to copy to: healed at the next pass
            with trio.fail_after(300):
                while (chunks := (await client.status()).chunks).ok != chunks.total:
                    await trio.sleep(1)
            assert set(await cluster.holders(client, inode)) == {first, second}
