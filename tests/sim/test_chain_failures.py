"""A chain write with one member failing at each step (issue 17).

Promise: while a replica survives, the writer sees no error; what it wrote
reads back from every surviving current replica alone; the failed member's
replica is stale (no longer a holder). Goal 3 on 3 chunkservers, so the
chain has a head, a middle and a tail; the failure is injected at an exact
point of the member's ``DataService.write``: before it forwards (the kill
at the entry of ``_forward``), after its own write and before it replies
(the kill after ``_write_local``), or by its disk refusing the write.

And for fsync (issue 20): a member forwards a write or flush down the chain
before its own sync, so that the replicas' syncs overlap. One that dies
just there (the rest of the chain was sent the request, its own sync never
ran) must not let the fsync be acknowledged by that chain: the fsync returns
only after the chain was replaced without it (the version moved on) and
every replica of the new chain synced; the sync being the flush of a
synchronous write (a file fsynced lately) or a flush request.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import trio

from vmstore.dfs.chunkserver.data_service import DataService
from vmstore.dfs.protocol import messages as m
from vmstore.dfs.testing.cluster import SimCluster, open_cluster

GOAL = 3
POSITIONS = {"head": 0, "middle": 1, "tail": 2}
FIRST = b"\x11" * 100_000
SECOND = bytes(range(251)) * 400  # 100,400 bytes


async def _healed(client) -> None:  # type: ignore[no-untyped-def]
    with trio.fail_after(300):
        while (chunks := (await client.status()).chunks).ok != chunks.total:
            await trio.sleep(1)


def _name_of(cluster: SimCluster, service: DataService) -> str:
    return next(name for name, store in cluster.stores.items() if store is service.store)


@pytest.mark.parametrize("when", ["before_forward", "after_local_write", "disk_fails"])
@pytest.mark.parametrize("position", list(POSITIONS))
async def test_a_chain_member_failing_costs_the_writer_nothing(
        tmp_path: Path, sim_seed: int, sim_clock: trio.abc.Clock, monkeypatch,
        expected_logs, position: str, when: str) -> None:  # type: ignore[no-untyped-def]
    expected_logs.allow("vmstore", ".")  # the failed member is reported, dropped, fenced
    async with open_cluster(tmp_path, seed=sim_seed, chunkservers=GOAL) as cluster:
        victims: list[str] = []
        armed = False

        def is_victim(request: m.ToChunkserverWriteChunk) -> bool:
            # The chain position of the member handling ``request``.
            return armed and not victims and (
                GOAL - 1 - len(request.chain_rest) == POSITIONS[position])

        forward = DataService._forward
        write_local = DataService._write_local

        async def dying_before_forward(self: DataService, request, payload=b""):  # type: ignore[no-untyped-def]
            if isinstance(request, m.ToChunkserverWriteChunk) and is_victim(request):
                victims.append(_name_of(cluster, self))
                await cluster.kill(victims[0])  # raises Cancelled here: the node is gone
            return await forward(self, request, payload)

        async def dying_after_local_write(self: DataService, request, payload):  # type: ignore[no-untyped-def]
            await write_local(self, request, payload)
            if is_victim(request):
                victims.append(_name_of(cluster, self))
                await cluster.kill(victims[0])

        async def disk_failing(self: DataService, request, payload):  # type: ignore[no-untyped-def]
            if is_victim(request):
                victims.append(_name_of(cluster, self))
                cluster.stores[victims[0]].fail("write")
            await write_local(self, request, payload)

        if when == "before_forward":
            monkeypatch.setattr(DataService, "_forward", dying_before_forward)
        elif when == "after_local_write":
            monkeypatch.setattr(DataService, "_write_local", dying_after_local_write)
        else:
            monkeypatch.setattr(DataService, "_write_local", disk_failing)

        async with cluster.client("setup") as setup:
            inode = await cluster.stored_file(setup, "/a.img", FIRST)
            await setup.set_goal(inode, GOAL)
            await _healed(setup)
        # A fresh client: its first write chain is the goal-3 one, not a cached older one.
        async with cluster.client("client1") as client:
            before = await cluster.holders(client, inode)
            assert len(before) == GOAL
            armed = True
            await client.write(inode, 0, SECOND)  # no error: two replicas survive
            await client.fsync(inode)
            (victim,) = victims
            assert victim == before[POSITIONS[position]]
            if when == "disk_fails":
                assert cluster.stores[victim].faults_injected == 1
            (location,) = await client.chunk_locations(inode, 0, 1)
            holders = [replica.host_label for replica in location.replicas]
            assert victim not in holders, f"{victim} failed the write and is still current"
            assert sorted(holders) == sorted(set(before) - {victim})
            for name in holders:  # every surviving current replica, alone
                data, zeros = cluster.stores[name].read(location.chunk_id, location.version,
                                                        0, len(SECOND))
                assert not zeros and data == SECOND, f"{name} is current without the write"
            if victim in cluster.stores and cluster.running(victim):
                assert cluster.stores[victim].version_of(location.chunk_id) < location.version
            assert await client.read(inode, 0, len(SECOND), len(SECOND)) == SECOND


@pytest.mark.parametrize("sync", ["synchronous_write", "flush_request"])
@pytest.mark.parametrize("position", list(POSITIONS))
async def test_an_fsync_is_not_acknowledged_by_a_member_that_died_before_its_sync(
        tmp_path: Path, sim_seed: int, sim_clock: trio.abc.Clock, monkeypatch,
        expected_logs, position: str, sync: str) -> None:  # type: ignore[no-untyped-def]
    expected_logs.allow("vmstore", ".")  # the dead member is reported, dropped, fenced
    async with open_cluster(tmp_path, seed=sim_seed, chunkservers=GOAL) as cluster:
        chain: list[str] = []
        armed = False
        victims: list[str] = []
        synced: list[str] = []  # members whose sync ran after the victim died
        flush_requests: list[str] = []  # flush requests served once armed
        fsync_returned = False
        sync_local = DataService._sync_local
        flush = DataService.flush

        async def dying_before_sync(self: DataService, chunk_id: int) -> None:
            name = _name_of(cluster, self)
            if armed and not victims and name == chain[POSITIONS[position]]:
                victims.append(name)
                assert not fsync_returned
                await cluster.kill(name)  # raises Cancelled here: the node is gone
            await sync_local(self, chunk_id)
            if victims:
                synced.append(name)

        async def counted_flush(self: DataService, request):  # type: ignore[no-untyped-def]
            if armed:
                flush_requests.append(_name_of(cluster, self))
            return await flush(self, request)

        monkeypatch.setattr(DataService, "_sync_local", dying_before_sync)
        monkeypatch.setattr(DataService, "flush", counted_flush)
        async with cluster.client("setup") as setup:
            inode = await cluster.stored_file(setup, "/a.img", FIRST)
            await setup.set_goal(inode, GOAL)
            await _healed(setup)
        # A fresh client: its first write chain is the goal-3 one, not a cached older one.
        async with cluster.client("client1") as client:
            chain.extend(await cluster.holders(client, inode))
            assert len(chain) == GOAL
            if sync == "synchronous_write":
                await client.fsync(inode)  # the file's next writes go synchronous
                armed = True
                await client.write(inode, 0, SECOND, wait=False)
            else:
                await client.write(inode, 0, SECOND)  # acknowledged, not yet durable
                armed = True
            await client.fsync(inode)
            fsync_returned = True
            (victim,) = victims
            if sync == "synchronous_write":  # it died in the write's own sync
                assert victim not in flush_requests
            else:
                assert victim in flush_requests
            (location,) = await client.chunk_locations(inode, 0, 1)
            holders = [replica.host_label for replica in location.replicas]
            assert victim not in holders, f"{victim} died before its sync and is still current"
            assert sorted(holders) == sorted(set(chain) - {victim})
            assert set(holders) <= set(synced), (
                f"fsync returned before {set(holders) - set(synced)} synced on the new chain")
            for name in holders:
                data, zeros = cluster.stores[name].read(location.chunk_id, location.version,
                                                        0, len(SECOND))
                assert not zeros and data == SECOND, f"{name} is current without the write"
            assert await client.read(inode, 0, len(SECOND), len(SECOND)) == SECOND
