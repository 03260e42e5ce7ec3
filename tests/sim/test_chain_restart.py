"""A chain member that restarted refuses the writer's older token: that member missed the
write, and the replicas that took it are good (found by the model check: the head
reported its own replica damaged, and with the restarted member's copy rotten, the
chunk was lost)."""

from __future__ import annotations

from pathlib import Path

import trio

from vmstore.dfs.testing.cluster import open_cluster

FIRST = b"\x11" * 100_000
SECOND = b"\x22" * 100_000


async def test_a_restarted_member_is_dropped_not_the_replicas_that_took_the_write(
        tmp_path: Path, sim_seed: int, sim_clock: trio.abc.Clock,
        expected_logs) -> None:  # type: ignore[no-untyped-def]
    expected_logs.allow("vmstore", "predates|missed the write|restarted")
    async with open_cluster(tmp_path, seed=sim_seed) as cluster:
        async with cluster.client("client1") as client:
            inode = await cluster.stored_file(client, "/a.img", FIRST)
            await client.opened(inode, writable=True)
            head, tail = await cluster.holders(client, inode)
            await cluster.restart(tail)  # forgets every lease epoch it had seen
            await client.write(inode, 0, SECOND)  # with the token issued before
            await client.fsync(inode)
            holders = await cluster.holders(client, inode)
            assert head in holders, "the head took a current writer's write: it is good"
            await cluster.kill(tail)
            assert await client.read(inode, 0, len(SECOND), len(SECOND)) == SECOND
            await client.closed(inode, writable=True)
