"""A forged newer version is shown, not only logged (issue 19): a key holder registering as
a new chunkserver claims a chunk at the master's version + 1. The master does not adopt it,
tells the forger to quarantine that replica, counts the claim in
vmstore_master_refused_versions_total and lists it in `vmstore status` (text and JSON),
which exits 1. The real replicas are untouched."""

from __future__ import annotations

import uuid
from pathlib import Path

import trio

from vmstore.cli.status import status_json, status_text
from vmstore.dfs.metrics import REGISTRY
from vmstore.dfs.protocol import messages as m
from vmstore.dfs.protocol import network
from vmstore.dfs.protocol.rpc import open_connection
from vmstore.dfs.testing.cluster import MASTER, open_cluster

DATA = b"\x6b" * 65536
COUNTER = "vmstore_master_refused_versions_total"


def refused_so_far() -> float:
    return REGISTRY.get_sample_value(COUNTER) or 0.0


async def test_a_forged_newer_version_is_counted_and_shown_in_status(
        tmp_path: Path, sim_seed: int, sim_clock: trio.abc.Clock,
        expected_logs) -> None:  # type: ignore[no-untyped-def]
    expected_logs.allow("vmstore.dfs.master.reconcile", "never had it there")
    async with open_cluster(tmp_path, seed=sim_seed) as cluster:
        async with cluster.client("client1") as client:
            inode = await cluster.stored_file(client, "/victim.img", DATA)
            (location,) = await client.chunk_locations(inode, 0, 1)
            counted = refused_so_far()
            forged = m.ChunkReport(chunk_id=location.chunk_id, version=location.version + 1)
            intruder = str(uuid.uuid4())
            with network.using(cluster.network.host("intruder")):
                async with open_connection(MASTER, cluster.master_port, cluster.key,
                                           "chunkserver", identity=intruder) as connection:
                    reply, _ = await connection.call(m.ChunkserverToMasterRegister(
                        server_uuid=intruder, host="intruder", port=1, host_label="intruder",
                        pid=1, bytes_total=0, bytes_used=0, chunks=[forged]),
                        reply_type=m.MasterToChunkserverRegistered)
            assert forged in reply.stale_chunks, "the forger was not told to quarantine it"
            (after,) = await client.chunk_locations(inode, 0, 1)
            assert (after.version, after.replicas) == (location.version, location.replicas)
            assert await client.read(inode, 0, len(DATA), len(DATA)) == DATA
            assert refused_so_far() == counted + 1
            status = await client.status()
            (shown,) = status.refused_versions
            assert (shown.chunk_id, shown.server_id, shown.claimed_version,
                    shown.master_version) == (location.chunk_id, reply.server_id,
                                              location.version + 1, location.version)
            assert "REFUSED NEWER VERSION" in status_text(status)
            assert f"claimed version {location.version + 1}" in status_text(status)
            assert status_json(status)["refused_versions"][0]["chunk_id"] == location.chunk_id
