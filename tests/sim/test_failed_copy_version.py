"""A failed copy moves no version (issue 19): re-replication bumps a chunk's version to
fence writes while it copies, and a copy that fails gives that bump back. Before, each
failed attempt moved the version once for good: a flapping target inflated it, and a
replica away meanwhile (down, its data current) came back stale and was quarantined."""

from __future__ import annotations

import logging
from pathlib import Path

import trio

from vmstore.dfs.testing.cluster import open_cluster

DATA = bytes(range(199)) * 700


async def test_failed_copies_leave_the_version_and_the_away_replica_current(
        tmp_path: Path, sim_seed: int, sim_clock: trio.abc.Clock,
        expected_logs) -> None:  # type: ignore[no-untyped-def]
    expected_logs.allow("vmstore", ".")
    # The target's injected EIOs make its disk watch call its disk failing (issue 16).
    expected_logs.allow("vmstore", "disk failing", level=logging.ERROR)
    async with open_cluster(tmp_path, seed=sim_seed) as cluster:
        async with cluster.client("client1") as client:
            inode = await cluster.stored_file(client, "/a.img", DATA)
            first, second = await cluster.holders(client, inode)
            (target,) = set(cluster.chunkserver_names) - {first, second}
            (before,) = await client.chunk_locations(inode, 0, 1)
            cluster.stores[target].fail("write", times=-1)  # every copy fails half-way
            await cluster.kill(second)  # down past the replication delay: copies start
            with trio.fail_after(120):
                while cluster.stores[target].faults_injected < 3:
                    await trio.sleep(0.5)
            await trio.sleep(10)  # the last attempt has given its bump back
            (after,) = await client.chunk_locations(inode, 0, 1)
            assert after.version == before.version, (
                f"failed copies moved the version {before.version} -> {after.version}")
            # The replica away all along is as current as ever: it counts again when
            # its chunkserver is back, with no copy (the target still fails).
            await cluster.restart(second)
            with trio.fail_after(120):
                while (chunks := (await client.status()).chunks).ok != chunks.total:
                    await trio.sleep(1)
            assert set(await cluster.holders(client, inode)) == {first, second}
            await cluster.kill(first)
            assert await client.read(inode, 0, len(DATA), len(DATA)) == DATA


async def test_a_writer_racing_failed_copies_keeps_its_chain_and_the_version(
        tmp_path: Path, sim_seed: int, sim_clock: trio.abc.Clock,
        expected_logs) -> None:  # type: ignore[no-untyped-def]
    """Each copy's bump refuses the writer's writes; the writer reports the holders and
    waits for the copy. Given back, the bump must not turn that report into a dropped
    holder (and a version bump) after all."""
    expected_logs.allow("vmstore", ".")
    expected_logs.allow("vmstore", "disk failing", level=logging.ERROR)
    async with open_cluster(tmp_path, seed=sim_seed, chunkservers=4) as cluster:
        async with cluster.client("client1") as client:
            inode = await cluster.stored_file(client, "/a.img", DATA)
            await client.set_goal(inode, 3)
            with trio.fail_after(120):
                while len(await cluster.holders(client, inode)) < 3:
                    await trio.sleep(1)
            holders = await cluster.holders(client, inode)
            (target,) = set(cluster.chunkserver_names) - set(holders)
            cluster.stores[target].fail("write", times=-1)
            await cluster.kill(holders[2])
            expected = bytearray(DATA)
            await client.write(inode, 0, b"\x01" * 4096)  # drops the dead holder: a bump
            expected[:4096] = b"\x01" * 4096
            (dropped,) = await client.chunk_locations(inode, 0, 1)
            written = 0
            while cluster.stores[target].faults_injected < 3 and written < 100_000:
                offset = (written % 16) * 4096
                await client.write(inode, offset, bytes([written % 251]) * 4096)
                expected[offset:offset + 4096] = bytes([written % 251]) * 4096
                written += 1
                await trio.sleep(0.005)  # often enough that some land while a bump is up
            assert cluster.stores[target].faults_injected >= 3, "no copy was tried"
            await trio.sleep(10)
            (after,) = await client.chunk_locations(inode, 0, 1)
            assert after.version == dropped.version, (
                f"version {dropped.version} -> {after.version} while copies failed")
            assert set(await cluster.holders(client, inode)) == set(holders[:2])
            assert await client.read(inode, 0, len(expected), len(expected)) == expected
