"""Insiders (issue 19): a holder of the cluster key, speaking the project's own protocol,
cannot make the master drop or delete replicas that are not its own: by a forged damage
report, by claiming a newer version of a chunk it never held, or by registering under
another chunkserver's identity (its own proved uuid naming another's, or the other's
credential derived from the key while it is up). Real daemons."""

from __future__ import annotations

import uuid
from contextlib import AbstractAsyncContextManager

import pytest

from tests.system.conftest import Cluster
from tests.system.test_self_healing import read_back, replica_files, write_file
from vmstore.dfs.errors import AccessDenied
from vmstore.dfs.protocol import messages as m
from vmstore.dfs.protocol.rpc import Connection, open_connection

pytestmark = pytest.mark.system


def as_chunkserver(cluster: Cluster, server_uuid: str) -> AbstractAsyncContextManager[
        Connection]:
    """A connection to the master proving chunkserver ``server_uuid``, made with the
    cluster key: what any host holding the key can open."""
    return open_connection(cluster.master_host, cluster.master_port, cluster.key,
                           "chunkserver", identity=server_uuid)


def registration(server_uuid: str,
                 chunks: list[m.ChunkReport] | None = None) -> m.ChunkserverToMasterRegister:
    return m.ChunkserverToMasterRegister(
        server_uuid=server_uuid, host="127.0.0.1", port=1, host_label="intruder", pid=1,
        bytes_total=0, bytes_used=0, chunks=chunks or [])


async def register_as_a_new_chunkserver(connection: Connection, server_uuid: str,
                                        chunks: list[m.ChunkReport] | None = None) -> int:
    reply, _ = await connection.call(registration(server_uuid, chunks),
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
    intruder = str(uuid.uuid4())
    async with as_chunkserver(cluster, intruder) as connection:
        for victim in location.replicas:
            forged = m.ChunkserverToMasterReportDamaged(
                server_id=victim.server_id, chunk_id=location.chunk_id,
                version=location.version, reason="forged")
            with pytest.raises(AccessDenied, match="only its own replicas"):
                await connection.call(forged)  # before registering
            await register_as_a_new_chunkserver(connection, intruder)
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
        intruder = str(uuid.uuid4())
        async with as_chunkserver(cluster, intruder) as connection:
            await register_as_a_new_chunkserver(connection, intruder, forged)
            async with cluster.client() as client:
                (after,) = await client.chunk_locations(inode, 0, 1)
                assert (after.version, after.replicas) == (location.version,
                                                           location.replicas)
    async with cluster.client() as client:
        assert await read_back(client, inode, 1) == data
    assert replica_count(cluster) == replicas
    assert "never had it there; not adopted" in cluster.logs()["master"]


async def test_registration_under_another_chunkservers_identity_is_refused(
        cluster: Cluster) -> None:
    inode, data, location, replicas = await a_victim(cluster)
    holders = {f"{replica.host}:{replica.port}" for replica in location.replicas}
    victims = {cluster.address_of(name): (cluster.directory / name / "server.uuid"
                                          ).read_text().strip()
               for name in cluster.chunkserver_names if cluster.address_of(name) in holders}
    assert len(victims) == len(holders)
    # An empty report would take the victim's replicas off the chunk; a newer version
    # would make the forger's the only current one.
    reports: list[list[m.ChunkReport]] = [
        [], [m.ChunkReport(chunk_id=location.chunk_id, version=location.version + 1)]]
    for attempt in range(3):
        for victim in victims.values():
            chunks = reports[attempt % 2]
            async with as_chunkserver(cluster, str(uuid.uuid4())) as connection:
                with pytest.raises(AccessDenied, match="registers only as itself"):
                    await connection.call(registration(victim, chunks))
            async with as_chunkserver(cluster, victim) as connection:
                with pytest.raises(AccessDenied, match="registered and answering"):
                    await connection.call(registration(victim, chunks))
    async with cluster.client() as client:
        (after,) = await client.chunk_locations(inode, 0, 1)
        assert (after.version, after.replicas) == (location.version, location.replicas)
        assert await read_back(client, inode, 1) == data
        states = {status.address: status.state
                  for status in (await client.status()).chunkservers}
        assert all(states[address] == "up" for address in victims)
    assert replica_count(cluster) == replicas
    assert "refused a registration as chunkserver" in cluster.logs()["master"]
