"""A chain member that restarted refuses the writer's older token. Nobody is at fault:
the writer repeats the write on the whole chain with a fresh token, and every replica
stays in the chain (found by the model check twice: first the head reported its own
replica damaged; then the restarted member was dropped, leaving the chunk one failure
from loss until it was rebuilt)."""

from __future__ import annotations

from pathlib import Path

import trio

from vmstore.dfs.testing.cluster import open_cluster

FIRST = b"\x11" * 100_000
SECOND = b"\x22" * 100_000


async def test_a_restarted_member_stays_in_the_chain_and_takes_the_write(
        tmp_path: Path, sim_seed: int, sim_clock: trio.abc.Clock,
        expected_logs) -> None:  # type: ignore[no-untyped-def]
    expected_logs.allow("vmstore", "predates")
    async with open_cluster(tmp_path, seed=sim_seed) as cluster:
        async with cluster.client("client1") as client:
            inode = await cluster.stored_file(client, "/a.img", FIRST)
            await client.opened(inode, writable=True)
            head, tail = await cluster.holders(client, inode)
            await cluster.restart(tail)  # forgets every lease epoch it had seen
            await client.write(inode, 0, SECOND)  # with the token issued before
            await client.fsync(inode)
            assert await cluster.holders(client, inode) == [head, tail], \
                "a restart alone drops no replica from the chain"
            await cluster.kill(head)  # the restarted tail alone must have the write
            assert await client.read(inode, 0, len(SECOND), len(SECOND)) == SECOND
            await client.closed(inode, writable=True)
