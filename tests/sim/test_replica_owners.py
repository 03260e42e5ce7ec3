"""Every replica's header names its file and chunk index (for `vmstore recover`), in
process: the master sends them when it creates a chunk and when it orders a copy, and a
replica from before owner records gets its record at the chunkserver's next
registration."""

from __future__ import annotations

import os
from pathlib import Path

import trio

from tests.unit.test_replica_owner import old_format_header
from vmstore.dfs.constants import CHUNK_SIZE_BYTES
from vmstore.dfs.protocol.replica_format import ReplicaOwner
from vmstore.dfs.testing.cluster import SimCluster, open_cluster

DATA = bytes(range(251)) * 400


def owners_on(cluster: SimCluster, name: str) -> dict[int, ReplicaOwner | None]:
    return {chunk_id: owner for chunk_id, _, owner in cluster.stores[name].list_replicas()}


async def test_created_copied_and_old_replicas_name_their_file(
        tmp_path: Path, sim_seed: int, sim_clock: trio.abc.Clock,
        expected_logs) -> None:  # type: ignore[no-untyped-def]
    expected_logs.allow("vmstore", ".")  # a chunkserver killed: down, chains change
    async with open_cluster(tmp_path, seed=sim_seed) as cluster:
        async with cluster.client("client1") as client:
            inode = await cluster.stored_file(client, "/a.img", DATA)
            await client.write(inode, CHUNK_SIZE_BYTES, DATA)  # chunk 1, sparse before it
            await client.fsync(inode)
            locations = await client.chunk_locations(inode, 0, 2)
            wanted = {location.chunk_id: ReplicaOwner(inode, location.index)
                      for location in locations}
            assert sorted(owner.index for owner in wanted.values()) == [0, 1]
            for location in locations:
                for replica in location.replicas:
                    assert owners_on(cluster, replica.host_label)[location.chunk_id] == \
                        wanted[location.chunk_id], "a created replica names its file"

            # A replica as an old chunkserver wrote it: its header has no record.
            first = locations[0]
            old = first.replicas[0].host_label
            await cluster.kill(old)
            path = cluster.stores[old].replica_path(first.chunk_id)
            fd = os.open(path, os.O_WRONLY)
            try:
                os.pwrite(fd, old_format_header(first.chunk_id, first.version), 0)
            finally:
                os.close(fd)
            await cluster.restart(old)
            with trio.fail_after(60):  # the master names it at registration
                while owners_on(cluster, old)[first.chunk_id] is None:
                    await trio.sleep(0.5)
            assert owners_on(cluster, old)[first.chunk_id] == wanted[first.chunk_id]

            # A copy made to heal names the file too.
            await client.set_goal(inode, 3)
            with trio.fail_after(300):
                while (chunks := (await client.status()).chunks).ok != chunks.total:
                    await trio.sleep(1)
            for name in cluster.chunkserver_names:
                assert owners_on(cluster, name) == wanted, name
            assert await client.read(inode, 0, len(DATA), len(DATA)) == DATA
