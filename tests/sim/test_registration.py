"""What a chunkserver's report at registration may and may not change.

A replica at the chunk's current version on a server the master does not
list as a holder missed every write made since it was dropped or never
confirmed: a create whose reply was lost, a replica dropped as damaged or
as surplus whose deletion never arrived. Adopting it because its version
matches serves stale bytes as current (found by the model check: a queued
write read back as zeros after a chunkserver died during a create).
"""

from __future__ import annotations

import shutil
from pathlib import Path

import trio

from vmstore.dfs.errors import DfsError
from vmstore.dfs.testing.cluster import open_cluster

OLD = b"\x11" * 8192
NEW = b"\x22" * 8192


async def test_a_same_version_replica_of_a_non_holder_is_not_adopted(
        tmp_path: Path, sim_seed: int, sim_clock: trio.abc.Clock,
        expected_logs) -> None:  # type: ignore[no-untyped-def]
    expected_logs.allow("vmstore", "not adopted|not a holder")
    async with open_cluster(tmp_path, seed=sim_seed) as cluster:
        async with cluster.client("client1") as client:
            inode = await cluster.stored_file(client, "/a.img", OLD)
            holders = set(await cluster.holders(client, inode))
            (location,) = await client.chunk_locations(inode, 0, 1)
            (outsider,) = set(cluster.chunkserver_names) - holders
            # The outsider gets a replica at the current version holding the old bytes,
            # as a create whose reply was lost would leave it.
            await cluster.kill(outsider)
            source = cluster.stores[sorted(holders)[0]].replica_path(location.chunk_id)
            target = cluster.stores[outsider].replica_path(location.chunk_id)
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(source, target)
            await client.write(inode, 0, NEW)  # to the holders only; no version moves
            await client.fsync(inode)
            await cluster.restart(outsider)
            assert set(await cluster.holders(client, inode)) == holders
            for holder in holders:
                await cluster.kill(holder)
            try:
                data = await client.read(inode, 0, len(NEW), len(NEW))
            except DfsError:
                return  # no current replica is up: an error, never the old bytes
            assert data == NEW, "stale bytes served as current"
