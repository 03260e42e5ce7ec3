"""Lease breaks and fencing races, in process (issue 17).

Promise: once ``lease_break`` has returned, the fenced holder's writes are
refused (LeaseLost, or another DfsError) and none of them is ever visible;
its writes acknowledged before stay; the new holder's writes read back.
Holds also for writes the fenced holder queued while cut off from the
cluster and sent after the partition heals.

Both clients are opened in the test's one task, which leaves that task on
the last one's host (``network.using`` is a context variable): A's calls
run under ``network.using(A's host)``, or its connections to chunkservers
and its write-behind senders would be clientB's, and isolating clientA
would cut nothing.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import trio

from vmstore.dfs.errors import DfsError
from vmstore.dfs.protocol import network
from vmstore.dfs.testing.cluster import SimCluster, open_cluster

PIECE = 50_000
FIRST = b"\x01" * PIECE
B_OFFSET = 10 * 1024 * 1024  # the new holder writes here, away from A's pieces
B_DATA = b"\xbb" * 70_000


def _a_piece(number: int) -> bytes:
    return bytes([0x40 + number % 100]) * PIECE


async def _stored(cluster: SimCluster, client, inode: int, offset: int,  # type: ignore[no-untyped-def]
                  length: int) -> list[bytes]:
    """The range as each current replica stores it (zeros where nothing was written)."""
    (location,) = await client.chunk_locations(inode, 0, 1)
    stored = []
    for replica in location.replicas:
        data, zero_ranges = cluster.stores[replica.host_label].read(
            location.chunk_id, location.version, offset, length)
        content = bytearray(length)
        cursor = 0
        at = offset
        for zero_start, zero_length in sorted(zero_ranges):
            take = zero_start - at
            content[at - offset:zero_start - offset] = data[cursor:cursor + take]
            cursor += take
            at = zero_start + zero_length
        content[at - offset:] = data[cursor:cursor + (offset + length - at)]
        stored.append(bytes(content))
    return stored


async def _a_holds_the_lease(cluster: SimCluster, a) -> int:  # type: ignore[no-untyped-def]
    """A file that clientA holds open for writing, FIRST written and fsynced."""
    with network.using(cluster.network.host("clientA")):
        inode = (await a.create_file("/a.img")).inode
        await a.opened(inode, writable=True)
        await a.write(inode, 0, FIRST)
        await a.fsync(inode)
    return inode


async def _new_holder_writes(cluster: SimCluster, b, inode: int) -> None:  # type: ignore[no-untyped-def]
    await b.opened(inode, writable=True)
    await b.write(inode, B_OFFSET, B_DATA)
    await b.fsync(inode)
    size = (await b.getattr(inode)).size_bytes
    assert await b.read(inode, B_OFFSET, len(B_DATA), size) == B_DATA
    for copy in await _stored(cluster, b, inode, B_OFFSET, len(B_DATA)):
        assert copy == B_DATA


async def test_a_broken_holder_keeps_writing_and_nothing_after_the_break_lands(
        tmp_path: Path, sim_seed: int, sim_clock: trio.abc.Clock,
        expected_logs) -> None:  # type: ignore[no-untyped-def]
    expected_logs.allow("vmstore", ".")  # the break and the refusals are logged
    expected_logs.allow("vmstore", ".", level=40)
    async with open_cluster(tmp_path, seed=sim_seed) as cluster:
        async with cluster.client("clientA") as a, cluster.client("clientB") as b:
            inode = await _a_holds_the_lease(cluster, a)
            broken = trio.Event()
            outcomes: list[tuple[int, bool, str]] = []  # piece, started after break, error

            async def a_keeps_writing() -> None:
                for number in range(1, 31):
                    after = broken.is_set()
                    try:
                        await a.write(inode, number * PIECE, _a_piece(number))
                        error = ""
                    except DfsError as caught:
                        error = type(caught).__name__
                    outcomes.append((number, after, error))
                    await trio.sleep(0.05)

            async def b_breaks() -> None:
                await trio.sleep(0.4)
                await b.lease_break(inode)
                broken.set()

            async with trio.open_nursery() as nursery:
                with network.using(cluster.network.host("clientA")):
                    nursery.start_soon(a_keeps_writing)
                nursery.start_soon(b_breaks)
            after_break = [(n, error) for n, after, error in outcomes if after]
            assert after_break, "A made no write after the break"
            assert all(error for _, error in after_break), f"A wrote past the fence: {outcomes}"
            with network.using(cluster.network.host("clientA")), pytest.raises(DfsError):
                await a.fsync(inode)  # "durable" after the break would be a lie

            await _new_holder_writes(cluster, b, inode)
            end = 31 * PIECE
            for copy in await _stored(cluster, b, inode, 0, end):
                assert copy[:PIECE] == FIRST
                for number, after, error in outcomes:
                    piece = copy[number * PIECE:(number + 1) * PIECE]
                    if after:
                        assert piece != _a_piece(number), (
                            f"A's piece {number}, written after the break, is visible")
                    elif not error:
                        assert piece == _a_piece(number), (
                            f"A's piece {number}, acknowledged before the break, is lost")


async def test_writes_queued_by_a_cut_off_holder_never_land_after_the_heal(
        tmp_path: Path, sim_seed: int, sim_clock: trio.abc.Clock,
        expected_logs) -> None:  # type: ignore[no-untyped-def]
    expected_logs.allow("vmstore", ".")
    expected_logs.allow("vmstore", ".", level=40)
    async with open_cluster(tmp_path, seed=sim_seed) as cluster:
        async with cluster.client("clientA") as a, cluster.client("clientB") as b:
            inode = await _a_holds_the_lease(cluster, a)
            with network.using(cluster.network.host("clientA")):
                cluster.network.isolate("clientA")
                for number in range(1, 6):  # queued, not sent: nothing reaches anyone
                    await a.write(inode, number * PIECE, _a_piece(number), wait=False)
            await trio.sleep(0.5)
            await b.lease_break(inode)
            cluster.network.heal()
            with (network.using(cluster.network.host("clientA")), trio.fail_after(300),
                  pytest.raises(DfsError)):
                await a.fsync(inode)  # its queued writes were refused, not acknowledged
            await _new_holder_writes(cluster, b, inode)
            for copy in await _stored(cluster, b, inode, 0, 6 * PIECE):
                assert copy[:PIECE] == FIRST
                for number in range(1, 6):
                    assert copy[number * PIECE:(number + 1) * PIECE] != _a_piece(number), (
                        f"A's queued piece {number} landed after the break")
