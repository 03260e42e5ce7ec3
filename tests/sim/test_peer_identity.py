"""Peers speak only for themselves (issue 19): a chunkserver's connection proves its uuid,
it registers only as that uuid, and only one live connection holds an identity.

The insider holds the cluster key and uses the project's own protocol code; it can
derive any chunkserver's credential, so the master also refuses a second registration
of a uuid whose registered link still answers.
"""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest
import trio

from vmstore.dfs.errors import AccessDenied, AuthenticationFailed
from vmstore.dfs.protocol import messages as m
from vmstore.dfs.protocol import network
from vmstore.dfs.protocol.rpc import open_connection
from vmstore.dfs.testing.cluster import MASTER, SimCluster, open_cluster

DATA = b"\x5a" * 65536
VICTIM = "cs1"


def uuid_of(cluster: SimCluster, name: str) -> str:
    return (cluster.root / name / "server.uuid").read_text().strip()


def registration(server_uuid: str, chunks: list[m.ChunkReport]) -> m.ChunkserverToMasterRegister:
    return m.ChunkserverToMasterRegister(
        server_uuid=server_uuid, host="intruder", port=1, host_label="intruder", pid=1,
        bytes_total=0, bytes_used=0, chunks=chunks)


async def replicas_on_disk(cluster: SimCluster) -> dict[str, list[tuple[int, int]]]:
    return {name: sorted((c, v) for c, v, _ in cluster.stores[name].list_replicas())
            for name in cluster.chunkserver_names}


async def test_a_key_holder_cannot_register_as_another_chunkserver(
        tmp_path: Path, sim_seed: int, sim_clock: trio.abc.Clock,
        expected_logs) -> None:  # type: ignore[no-untyped-def]
    expected_logs.allow("vmstore.dfs.master.chunkserver_service", "refused a registration")
    expected_logs.allow("vmstore.dfs.protocol.connection", "refused a request")
    async with open_cluster(tmp_path, seed=sim_seed) as cluster:
        async with cluster.client("client1") as client:
            inode = await cluster.stored_file(client, "/victim.img", DATA)
            (location,) = await client.chunk_locations(inode, 0, 1)
            before = await replicas_on_disk(cluster)
            victim = uuid_of(cluster, VICTIM)
            # Each report would empty the victim's replica list, or claim a newer version.
            reports = [[], [m.ChunkReport(chunk_id=location.chunk_id,
                                          version=location.version + 1)]]
            with network.using(cluster.network.host("intruder")):
                for attempt in range(4):
                    chunks = reports[attempt % 2]
                    # Its own identity, proved, and the victim's uuid in the message.
                    async with open_connection(MASTER, cluster.master_port, cluster.key,
                                               "chunkserver", identity=str(uuid.uuid4())
                                               ) as connection:
                        with pytest.raises(AccessDenied, match="registers only as itself"):
                            await connection.call(registration(victim, chunks))
                    # The victim's own credential, derived from the cluster key, while
                    # the victim is registered and answering.
                    async with open_connection(MASTER, cluster.master_port, cluster.key,
                                               "chunkserver", identity=victim) as connection:
                        with pytest.raises(AccessDenied, match="registered and answering"):
                            await connection.call(registration(victim, chunks))
            (after,) = await client.chunk_locations(inode, 0, 1)
            assert (after.version, after.replicas) == (location.version, location.replicas)
            assert await client.read(inode, 0, len(DATA), len(DATA)) == DATA
            states = {s.host: s.state for s in (await client.status()).chunkservers}
            assert states[VICTIM] == "up"
            assert await replicas_on_disk(cluster) == before


async def test_a_chunkserver_proves_the_uuid_it_names(
        tmp_path: Path, sim_seed: int, sim_clock: trio.abc.Clock,
        expected_logs) -> None:  # type: ignore[no-untyped-def]
    expected_logs.allow("vmstore.dfs.protocol.rpc", "refused connection")
    async with open_cluster(tmp_path, seed=sim_seed, chunkservers=1) as cluster:
        victim = uuid_of(cluster, "cs1")
        with network.using(cluster.network.host("intruder")):
            # The right uuid with another cluster's key: no credential, no connection.
            with pytest.raises(AuthenticationFailed):
                async with open_connection(MASTER, cluster.master_port, bytes(32),
                                           "chunkserver", identity=victim):
                    pass
            # A chunkserver that names no uuid proves nothing about which one it is.
            with pytest.raises(Exception, match="handshake"):
                async with open_connection(MASTER, cluster.master_port, cluster.key,
                                           "chunkserver"):
                    pass


async def test_a_chunkserver_cut_off_from_the_master_registers_again(
        tmp_path: Path, sim_seed: int, sim_clock: trio.abc.Clock,
        expected_logs) -> None:  # type: ignore[no-untyped-def]
    """Its old link may still look open at the master: it does not answer the ping, so
    the chunkserver's new registration takes its identity back."""
    expected_logs.allow("vmstore", "missed its heartbeats|did not answer|link to master")
    async with open_cluster(tmp_path, seed=sim_seed) as cluster:
        async with cluster.client("client1") as client:
            cluster.network.partition(VICTIM, MASTER)
            with trio.fail_after(120):
                while _state(await client.status(), VICTIM) != "down":
                    await trio.sleep(1)
            cluster.network.heal()
            with trio.fail_after(120):
                while _state(await client.status(), VICTIM) != "up":
                    await trio.sleep(1)


def _state(status: m.StatusReply, host: str) -> str:
    return next(s.state for s in status.chunkservers if s.host == host)


async def test_messages_naming_another_chunkserver_are_refused(
        tmp_path: Path, sim_seed: int, sim_clock: trio.abc.Clock,
        expected_logs) -> None:  # type: ignore[no-untyped-def]
    expected_logs.allow("vmstore.dfs.master.chunkserver_service", "refused a")
    expected_logs.allow("vmstore.dfs.protocol.connection", "refused a request")
    async with open_cluster(tmp_path, seed=sim_seed) as cluster:
        async with cluster.client("client1") as client:
            inode = await cluster.stored_file(client, "/victim.img", DATA)
            (location,) = await client.chunk_locations(inode, 0, 1)
            victim = location.replicas[0].server_id
            forged: list[m.Request] = [
                m.ChunkserverToMasterHeartbeat(server_id=victim, bytes_total=0, bytes_used=0,
                                               chunk_count=0),
                m.ChunkserverToMasterDiskFailing(server_id=victim, reason="forged"),
                m.ChunkserverToMasterReportDamaged(server_id=victim, chunk_id=location.chunk_id,
                                                   version=location.version, reason="forged")]
            intruder = str(uuid.uuid4())
            with network.using(cluster.network.host("intruder")):
                async with open_connection(MASTER, cluster.master_port, cluster.key,
                                           "chunkserver", identity=intruder) as connection:
                    await connection.call(registration(intruder, []))
                    for message in forged:
                        with pytest.raises(AccessDenied, match="only its own replicas"):
                            await connection.call(message)
            (after,) = await client.chunk_locations(inode, 0, 1)
            assert (after.version, after.replicas) == (location.version, location.replicas)
            (status,) = [s for s in (await client.status()).chunkservers if s.id == victim]
            assert (status.state, status.disk_failing) == ("up", "")
            assert status.bytes_total > 0  # the forged heartbeat's zeros were not taken
