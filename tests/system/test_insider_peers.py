"""Insiders (issue 19): a holder of the cluster key, speaking the project's own protocol,
cannot make the master drop or delete replicas that are not its own: by a forged damage
report, or by claiming a newer version of a chunk it never held. Real daemons."""

from __future__ import annotations

import uuid

import pytest

from tests.system.conftest import Cluster
from tests.system.test_self_healing import read_back, replica_files, write_file
from vmstore.dfs.errors import AccessDenied
from vmstore.dfs.protocol import messages as m
from vmstore.dfs.protocol.rpc import Connection, open_connection

pytestmark = pytest.mark.system


async def register_as_a_new_chunkserver(connection: Connection,
                                        chunks: list[m.ChunkReport] | None = None) -> int:
    reply, _ = await connection.call(m.ChunkserverToMasterRegister(
        server_uuid=str(uuid.uuid4()), host="127.0.0.1", port=1, host_label="intruder",
        pid=1, bytes_total=0, bytes_used=0, chunks=chunks or []),
        reply_type=m.MasterToChunkserverRegistered)
    return reply.server_id


async def a_victim(cluster: Cluster) -> tuple[int, bytes, m.ChunkLocation, int]:
    """A one-chunk file: its inode, bytes, location, and the replica files on disk."""
    async with cluster.client() as client:
        inode, data = await write_file(client, "/victim", 1)
        (location,) = await client.chunk_locations(inode, 0, 1)
    return inode, data, location, replica_count(cluster)


def replica_count(cluster: Cluster) -> int:
    return sum(len(replica_files(cluster, name)) for name in cluster.chunkserver_names)


async def test_a_damage_report_about_another_servers_replica_is_refused(
        cluster: Cluster) -> None:
    inode, data, location, replicas = await a_victim(cluster)
    async with open_connection(cluster.master_host, cluster.master_port, cluster.key,
                               "chunkserver") as connection:
        for victim in location.replicas:
            forged = m.ChunkserverToMasterReportDamaged(
                server_id=victim.server_id, chunk_id=location.chunk_id,
                version=location.version, reason="forged")
            with pytest.raises(AccessDenied, match="only its own replicas"):
                await connection.call(forged)  # before registering
            await register_as_a_new_chunkserver(connection)
            with pytest.raises(AccessDenied, match="only its own replicas"):
                await connection.call(forged)  # registered, as somebody else
    async with cluster.client() as client:
        (after,) = await client.chunk_locations(inode, 0, 1)
        assert (after.version, after.replicas) == (location.version, location.replicas)
        assert await read_back(client, inode, 1) == data
    assert replica_count(cluster) == replicas


async def test_a_newer_version_from_a_server_that_never_held_the_chunk_is_not_adopted(
        cluster: Cluster) -> None:
    inode, data, location, replicas = await a_victim(cluster)
    forged = [m.ChunkReport(chunk_id=location.chunk_id, version=location.version + 1)]
    for _attempt in range(2):
        async with open_connection(cluster.master_host, cluster.master_port, cluster.key,
                                   "chunkserver") as connection:
            await register_as_a_new_chunkserver(connection, forged)
            async with cluster.client() as client:
                (after,) = await client.chunk_locations(inode, 0, 1)
                assert (after.version, after.replicas) == (location.version,
                                                           location.replicas)
    async with cluster.client() as client:
        assert await read_back(client, inode, 1) == data
    assert replica_count(cluster) == replicas
    assert "never had it there; not adopted" in cluster.logs()["master"]
