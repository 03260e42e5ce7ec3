"""A chunkserver whose disk fails is found, shown and drained (issue 16).

Promise checked: a disk that returns EIO to the disk watch's probe (or to its
store calls) is marked failing; the master hears it at once, ``vmstore status``
shows the server as failing (and not healthy), no new replica goes there, and
its chunks are copied to the healthy servers while the process stays up. The
writer and readers see no error. (A hung probe is checked in
tests/unit/test_disk_watch.py: a thread stuck in the disk freezes the simulation's
virtual time, see dfs.testing.cluster.)
"""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
import trio

from vmstore.cli.status import server_state, status_text
from vmstore.dfs.client.client import Client
from vmstore.dfs.protocol.messages import ChunkserverStatus
from vmstore.dfs.testing.cluster import SimCluster, open_cluster

DATA = bytes(range(256)) * 4096  # 1 MiB
WAIT_S = 60.0  # virtual: the probe's interval and deadline, then a healing pass or two


async def _server(client: Client, label: str) -> ChunkserverStatus:
    (server,) = [s for s in (await client.status()).chunkservers if s.host == label]
    return server


async def _drained(cluster: SimCluster, client: Client, inodes: list[int], sick: str) -> None:
    while True:
        holders = [await cluster.holders(client, inode) for inode in inodes]
        if all(sick not in h and len(h) == 2 for h in holders):
            return
        await trio.sleep(0.5)


@pytest.mark.parametrize("how", ["probe", "store calls"])
async def test_a_failing_disk_is_marked_and_drained(
        tmp_path: Path, sim_seed: int, sim_clock: trio.abc.Clock, sim_logs,
        how: str) -> None:  # type: ignore[no-untyped-def]
    sim_logs.allow("vmstore", "disk failing", level=logging.ERROR)
    sim_logs.allow("vmstore", ".")  # its reads fail over, its replicas leave
    async with open_cluster(tmp_path, seed=sim_seed, chunkservers=3) as cluster:
        async with cluster.client("writer") as client:
            inodes = [await cluster.stored_file(client, f"/{n}.img", DATA) for n in range(3)]
            sick = (await cluster.holders(client, inodes[0]))[0]
            store = cluster.stores[sick]
            if how == "probe":
                store.fail("probe", -1)
            else:  # reads of its replicas fail: enough of them mark the disk
                store.fail("read", -1)
                async with cluster.client("reader") as reader:
                    for _ in range(4):
                        for inode in inodes:
                            assert await reader.read(inode, 0, len(DATA), len(DATA)) == DATA
            with trio.fail_after(WAIT_S):
                while not (await _server(client, sick)).disk_failing:
                    await trio.sleep(0.5)
                status = await client.status()
                server = await _server(client, sick)
                assert server.state == "up"  # alive, and still not healthy:
                assert server_state(server) == "failing"
                assert "FAILING DISK" in status_text(status)
                await _drained(cluster, client, inodes, sick)
            for n in range(4):
                inode = await cluster.stored_file(client, f"/new{n}.img", DATA)
                assert sick not in await cluster.holders(client, inode)
            assert cluster.running(sick)
        async with cluster.client("reader2") as reader:
            for inode in inodes:
                assert await reader.read(inode, 0, len(DATA), len(DATA)) == DATA
