"""Quarantine instead of delete (issue 19): a replica the master has deleted, by any path,
is kept in the chunkserver's quarantine/ and can be restored, byte for byte."""

from __future__ import annotations

from pathlib import Path

import trio

from vmstore.dfs.chunkserver.quarantine import Quarantine
from vmstore.dfs.testing.cluster import SimCluster, open_cluster

DATA = bytes(range(251)) * 1200


async def _quarantined(cluster: SimCluster, names: list[str], chunk_id: int) -> str:
    """The chunkserver among ``names`` that quarantined a replica of the chunk."""
    with trio.fail_after(120):
        while True:
            for name in names:
                if any(e.chunk_id == chunk_id for e in Quarantine(cluster.root / name).entries()):
                    return name
            await trio.sleep(0.5)


def _restore(cluster: SimCluster, name: str, chunk_id: int) -> bytes:
    quarantine = Quarantine(cluster.root / name)
    (entry,) = [e for e in quarantine.entries() if e.chunk_id == chunk_id]
    return quarantine.restore(entry.name).read_bytes()


def _replica_bytes(cluster: SimCluster, names: list[str], chunk_id: int) -> dict[str, bytes]:
    return {name: cluster.stores[name].replica_path(chunk_id).read_bytes() for name in names}


async def test_a_replica_deleted_by_any_path_can_be_restored(
        tmp_path: Path, sim_seed: int, sim_clock: trio.abc.Clock,
        expected_logs) -> None:  # type: ignore[no-untyped-def]
    expected_logs.allow("vmstore", ".")
    expected_logs.allow("vmstore", ".", level=40)
    async with open_cluster(tmp_path, seed=sim_seed) as cluster:
        async with cluster.client("client1") as client:
            for path in ("surplus", "damaged", "stale", "orphaned"):
                inode = await cluster.stored_file(client, f"/{path}.img", DATA)
                (location,) = await client.chunk_locations(inode, 0, 1)
                chunk_id = location.chunk_id
                holders = await cluster.holders(client, inode)
                if path == "surplus":
                    await client.set_goal(inode, 3)
                    with trio.fail_after(120):
                        while len(holders := await cluster.holders(client, inode)) < 3:
                            await trio.sleep(0.5)
                    before = _replica_bytes(cluster, holders, chunk_id)
                    await client.set_goal(inode, 2)
                elif path == "damaged":
                    cluster.stores[holders[0]].flip_bit(chunk_id, 70_000)
                    before = _replica_bytes(cluster, holders, chunk_id)  # the scrub finds it
                elif path == "stale":
                    before = _replica_bytes(cluster, holders, chunk_id)
                    await cluster.kill(holders[-1])
                    await client.write(inode, 0, DATA[:4096])  # the chain drops it
                    await client.fsync(inode)
                    await cluster.restart(holders[-1])  # its replica is stale now
                else:
                    before = _replica_bytes(cluster, holders, chunk_id)
                    await client.unlink(1, f"{path}.img".encode())
                name = await _quarantined(cluster, holders, chunk_id)
                assert _restore(cluster, name, chunk_id) == before[name], path
