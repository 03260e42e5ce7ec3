"""A replicator never discards its own copy of a chunk before the new one is written and
verified (issue 19: real chunkservers told to copy from a forgery deleted their own
replicas first, and the chunk was lost)."""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

import trio

from vmstore.dfs.testing.cluster import open_cluster

DATA = bytes(range(251)) * 1200


async def test_a_failed_copy_leaves_the_replica_that_was_there(
        tmp_path: Path, sim_seed: int, sim_clock: trio.abc.Clock,
        expected_logs) -> None:  # type: ignore[no-untyped-def]
    expected_logs.allow("vmstore", ".")
    # Three EIOs in a row: the target's disk watch calls its disk failing (issue 16).
    expected_logs.allow("vmstore", "disk failing", level=logging.ERROR)
    async with open_cluster(tmp_path, seed=sim_seed) as cluster:
        async with cluster.client("client1") as client:
            inode = await cluster.stored_file(client, "/a.img", DATA)
            first, second = await cluster.holders(client, inode)
            (target,) = set(cluster.chunkserver_names) - {first, second}
            (location,) = await client.chunk_locations(inode, 0, 1)
            # The target holds a replica the master does not count (a create whose
            # reply was lost leaves one): the copy will go there.
            await cluster.kill(target)
            source = cluster.stores[first].replica_path(location.chunk_id)
            mine = cluster.root / target / source.relative_to(cluster.root / first)
            mine.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(source, mine)
            before = mine.read_bytes()
            await cluster.restart(target)
            cluster.stores[target].fail("write", times=-1)  # every copy fails half-way
            await cluster.kill(second)
            with trio.fail_after(60):
                while cluster.stores[target].faults_injected < 3:
                    await trio.sleep(0.5)  # copies tried and failed
            assert mine.exists(), "the replica that was there was discarded for a copy"
            assert mine.read_bytes() == before
            assert list((cluster.root / target / "tmp").iterdir()) == [], "a copy left behind"
            # The disk is checked and the chunkserver restarted, as its ERROR line asks:
            # it registers anew, no longer failing, and takes the copy.
            cluster.stores[target].heal()
            await cluster.restart(target)
            with trio.fail_after(300):
                while (chunks := (await client.status()).chunks).ok != chunks.total:
                    await trio.sleep(1)
            assert target in await cluster.holders(client, inode)
            await cluster.kill(first)
            assert await client.read(inode, 0, len(DATA), len(DATA)) == DATA
