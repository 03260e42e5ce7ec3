"""Fencing across masters (issue 15): the master generation is the master epoch.

A master start (and an HA leader's first commit) moves the generation forward. Every
capability carries its issuer's generation; a chunkserver refuses one older than the
newest it has seen, and refuses the commands of a master older than that, so a master
that was succeeded (a deposed leader, or the master before a restart) opens nothing
and decides nothing. A client holding an old capability fetches a fresh one, with no
error to the writer.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import trio

from vmstore.dfs.client.client import Client
from vmstore.dfs.errors import ChunkNotFound, MasterUnavailable, TokenOfOldGeneration
from vmstore.dfs.protocol import messages as m
from vmstore.dfs.protocol import network
from vmstore.dfs.protocol.capability import CapabilitySigner
from vmstore.dfs.protocol.rpc import open_connection
from vmstore.dfs.testing.cluster import MASTER, SimCluster, open_cluster

DATA = b"\x5a" * 65536
NEWER = b"\xa5" * 4096


async def _stored(cluster: SimCluster, client: Client, name: str
                  ) -> tuple[int, m.ChunkLocation, int]:
    """A new file in / holding DATA; its inode, its chunk's location, the generation of
    the master that signed the location's read capability."""
    inode = await cluster.stored_file(client, f"/{name}", DATA)
    (location,) = await client.chunk_locations(inode, 0, 1)
    assert location.read_capability is not None
    assert location.read_capability.generation > 0
    return inode, location, location.read_capability.generation


async def _wait_all_up(cluster: SimCluster, client: Client) -> None:
    """Until the master has every chunkserver registered (as it is after a restart)."""
    with trio.fail_after(60):
        while True:
            status = await client.status()
            states = {server.host: server.state for server in status.chunkservers}
            if all(states.get(name) == "up" for name in cluster.chunkserver_names):
                return
            await trio.sleep(0.5)


async def _read_with(cluster: SimCluster, replica: m.ReplicaAddress, location: m.ChunkLocation,
                     capability: m.Capability | None) -> bytes:
    with network.using(cluster.network.host("reader")):
        async with open_connection(replica.host, replica.port, cluster.key,
                                   "client") as connection:
            _, payload = await connection.call(m.ToChunkserverReadChunk(
                chunk_id=location.chunk_id, version=location.version, offset_bytes=0,
                length_bytes=len(NEWER), capability=capability))
            return payload


async def test_capabilities_from_before_a_master_restart_are_refused_and_replaced(
        tmp_path: Path, sim_seed: int, sim_clock: trio.abc.Clock,
        expected_logs) -> None:  # type: ignore[no-untyped-def]
    expected_logs.allow("vmstore", "link to master|master .* unavailable|reconnect", level=30)
    async with open_cluster(tmp_path, seed=sim_seed) as cluster:
        async with cluster.client("client1") as client:
            inode, before, old_generation = await _stored(cluster, client, "disk.img")

            await cluster.restart(MASTER)
            await _wait_all_up(cluster, client)
            # The writer's cached write capability is of the old master: refused by every
            # chunkserver that registered with the new one; the client gets a fresh one.
            await client.write(inode, 0, NEWER)
            await client.fsync(inode)  # any error fails the test

            (after,) = await client.chunk_locations(inode, 0, 1)
            assert after.read_capability is not None
            assert after.read_capability.generation > old_generation
            for replica in after.replicas:
                with pytest.raises(TokenOfOldGeneration,
                                   match=f"generation {old_generation}, older than"):
                    await _read_with(cluster, replica, after, before.read_capability)
                assert await _read_with(cluster, replica, after,
                                        after.read_capability) == NEWER
            assert await client.read(inode, 0, len(NEWER), len(DATA)) == NEWER


async def test_commands_of_a_master_older_than_a_seen_generation_are_refused(
        tmp_path: Path, sim_seed: int, sim_clock: trio.abc.Clock,
        expected_logs) -> None:  # type: ignore[no-untyped-def]
    """A chunkserver meets a newer master's capability (as from a client of a new HA
    leader) while its link still goes to the old master: the old master's commands
    are refused, its link left, and its registration refused; the replica it
    would have deleted stays."""
    # The old master's command refused (if it comes before the link is left, which the
    # seed decides), and its registration refused, both naming the two generations.
    expected_logs.allow("vmstore.dfs.master", "refused MasterToChunkserverDeleteChunk: .*"
                        "generation \\d+, older than generation \\d+")
    expected_logs.allow("vmstore.dfs.chunkserver", "older than generation .* it is a deposed"
                        " master", level=40)
    async with open_cluster(tmp_path, seed=sim_seed) as cluster:
        async with cluster.client("client1") as client:
            _, location, generation = await _stored(cluster, client, "doomed.img")
            fenced, *others = location.replicas
            successor = CapabilitySigner(cluster.key, write_life_s=10.0,
                                         generation=generation + 1)
            await _read_with(cluster, fenced, location,
                             successor.read(0, location.chunk_id))
            await client.unlink(1, b"doomed.img")  # the master orders the replicas deleted
            with trio.fail_after(120):
                while any(_holds(cluster, other.host_label, location.chunk_id)
                          for other in others):
                    await trio.sleep(0.5)
            await trio.sleep(10)  # every delete the master sends has been sent
            assert _holds(cluster, fenced.host_label, location.chunk_id), \
                "a master older than a generation seen deleted a replica"


def _holds(cluster: SimCluster, name: str, chunk_id: int) -> bool:
    try:
        cluster.stores[name].version_of(chunk_id)
    except ChunkNotFound:
        return False
    return True


async def test_a_client_refuses_a_master_older_than_one_it_has_met(
        tmp_path: Path, sim_seed: int, sim_clock: trio.abc.Clock,
        expected_logs) -> None:  # type: ignore[no-untyped-def]
    """A master started on an old copy of the metadata (as a deposed leader is, to a
    client that met its successor) is older than the generation the client met: the
    client takes no reply from it."""
    # The chunkservers and the old master refuse each other too (which speaks first is
    # the seed's); not this test's point.
    for logger in ("vmstore.dfs.chunkserver", "vmstore.dfs.master"):
        expected_logs.allow(logger, "refused .*older than generation", level=40)
    async with open_cluster(tmp_path, seed=sim_seed) as cluster:
        await cluster.kill(MASTER)
        old_copy = tmp_path / "old-copy"
        shutil.copytree(tmp_path / MASTER, old_copy)
        await cluster.restart(MASTER)
        await cluster.restart(MASTER)  # two starts later: the copy's next start is older
        async with cluster.client("client1", reconnect_timeout_s=10.0) as client:
            _, _, met = await _stored(cluster, client, "f.img")  # the generation it met
            await cluster.kill(MASTER)
            shutil.rmtree(tmp_path / MASTER)
            shutil.copytree(old_copy, tmp_path / MASTER)
            await cluster.start_master()
            with pytest.raises(MasterUnavailable,
                               match=f"generation {met - 1}, older than generation {met}"):
                await client.getattr(1)
