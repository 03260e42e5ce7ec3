"""A client holding a client credential file, not the cluster key (issue 19): it reads
and writes as a client; its attempts to act as a chunkserver (registering under a real
chunkserver's uuid, or a new one claiming a newer version) or as an admin are refused
with an error naming why, before or at the handshake, and nothing is lost: the victim
chunk's version, replicas and bytes are as they were, and every replica is on disk."""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest
import trio

from tests.sim.test_peer_identity import registration, replicas_on_disk, uuid_of
from vmstore.cli.credential_command import issue
from vmstore.dfs.client.client import open_client
from vmstore.dfs.client.master_client import ClientIdentity
from vmstore.dfs.errors import AuthenticationFailed
from vmstore.dfs.protocol import auth, network
from vmstore.dfs.protocol import messages as m
from vmstore.dfs.protocol.rpc import open_connection
from vmstore.dfs.testing.cluster import MASTER, open_cluster

DATA = b"\x3c" * 65536


async def test_a_client_credential_cannot_act_as_a_chunkserver_or_an_admin(
        tmp_path: Path, sim_seed: int, sim_clock: trio.abc.Clock,
        expected_logs) -> None:  # type: ignore[no-untyped-def]
    expected_logs.allow("vmstore.dfs.protocol.rpc", "refused connection")
    async with open_cluster(tmp_path, seed=sim_seed) as cluster:
        keys = auth.ClusterKeys(current=cluster.key, accepted=(cluster.key,))
        client_credential = issue(keys, "client")
        async with cluster.client("client1") as client:
            inode = await cluster.stored_file(client, "/victim.img", DATA)
            (location,) = await client.chunk_locations(inode, 0, 1)
            before = await replicas_on_disk(cluster)
        victim = uuid_of(cluster, "cs1")
        forged_report = [m.ChunkReport(chunk_id=location.chunk_id,
                                       version=location.version + 1)]
        with network.using(cluster.network.host("intruder")):
            async with open_client(MASTER, cluster.master_port, client_credential,
                                   ClientIdentity(host_label="intruder")) as client:
                # As a client it works: it reads the victim and writes its own file.
                assert await client.read(inode, 0, len(DATA), len(DATA)) == DATA
                await cluster.stored_file(client, "/mine.img", b"\x01" * 4096)
            for server_uuid in (victim, str(uuid.uuid4())):
                with pytest.raises(AuthenticationFailed, match="client credential, which"
                                   f" cannot act as chunkserver {server_uuid}"):
                    async with open_connection(MASTER, cluster.master_port,
                                               client_credential, "chunkserver",
                                               identity=server_uuid) as connection:
                        await connection.call(registration(server_uuid, forged_report))
                # Its client secret offered as that chunkserver's: refused by the master.
                forged = auth.RoleCredentials(
                    kind="chunkserver", identity=server_uuid, secrets={
                        f"chunkserver:{server_uuid}": client_credential.secrets["client"]})
                with pytest.raises(AuthenticationFailed):
                    async with open_connection(MASTER, cluster.master_port, forged,
                                               "chunkserver", identity=server_uuid
                                               ) as connection:
                        await connection.call(registration(server_uuid, forged_report))
            with pytest.raises(AuthenticationFailed, match="cannot act as admin"):
                async with open_connection(MASTER, cluster.master_port, client_credential,
                                           "admin") as connection:
                    await connection.call(m.ClientToMasterStatus())
            # A chunkserver's own peer links: a client's file has no peer credential.
            with pytest.raises(AuthenticationFailed, match="cannot act as peer"):
                host, port = location.replicas[0].host, location.replicas[0].port
                async with open_connection(host, port, client_credential, "peer"):
                    pass
        async with cluster.client("client2") as client:
            (after,) = await client.chunk_locations(inode, 0, 1)
            assert (after.version, after.replicas) == (location.version, location.replicas)
            assert await client.read(inode, 0, len(DATA), len(DATA)) == DATA
            assert not (await client.status()).refused_versions
        now = await replicas_on_disk(cluster)
        assert all(set(before[name]) <= set(now[name]) for name in before), (before, now)
