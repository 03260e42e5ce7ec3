"""A replica that goes silent (no reset, no answer) costs a guest about a second at most
(issue 16).

Promise checked: with one replica's host silent (``SimNetwork.isolate``: a
frozen host or a cut cable, TCP up and nothing delivered) or cut off from the
client alone (``partition``), reads finish from the other replica, each
within the issue's bound of virtual time and long before DATA_RPC_TIMEOUT_S,
while the fault is still in place, and they return the bytes written.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import trio

from vmstore.dfs.client import chunk_io
from vmstore.dfs.testing.cluster import open_cluster

DATA = bytes(range(256)) * 4096  # 1 MiB
STALL_BOUND_S = 1.0  # the target: no guest-visible stall over a second


def hedges() -> tuple[float, float]:
    return chunk_io.HEDGES_SENT._value.get(), chunk_io.HEDGES_WON._value.get()


@pytest.mark.parametrize("fault", ["isolate", "partition"])
async def test_reads_go_on_from_another_replica_while_one_is_silent(
        tmp_path: Path, sim_seed: int, sim_clock: trio.abc.Clock, sim_logs,
        fault: str) -> None:  # type: ignore[no-untyped-def]
    sim_logs.allow("vmstore", ".")  # the silent server is marked down, dropped, rebuilt
    async with open_cluster(tmp_path, seed=sim_seed, chunkservers=3) as cluster:
        async with cluster.client("writer") as writer:
            inode = await cluster.stored_file(writer, "/a.img", DATA)
        async with cluster.client("reader") as reader:
            # Warm up: connections to the replicas, and latency samples.
            for offset in range(0, len(DATA), 64 * 1024):
                assert await reader.read(inode, offset, 4096, len(DATA)) == \
                    DATA[offset:offset + 4096]
            (location,) = await reader.chunk_locations(inode, 0, 1)
            first = location.replicas[0].host_label  # the replica a read asks first
            if fault == "isolate":
                cluster.network.isolate(first)
            else:
                cluster.network.partition("reader", first)
            sent_before, won_before = hedges()
            faulted_at_s = trio.current_time()
            for offset in range(0, len(DATA), 128 * 1024):
                started_s = trio.current_time()
                assert await reader.read(inode, offset, 4096, len(DATA)) == \
                    DATA[offset:offset + 4096]
                assert trio.current_time() - started_s <= STALL_BOUND_S
            # A whole chunk's bytes, in 1 MiB reads (worker-thread disk reads on the
            # other replica), still from the survivor.
            assert await reader.read(inode, 0, len(DATA), len(DATA)) == DATA
            assert trio.current_time() - faulted_at_s < 5.0  # the fault is still in place
            sent, won = hedges()
            assert sent > sent_before
            assert won > won_before
            cluster.network.heal()


@pytest.mark.parametrize("position", ["head", "tail"])
async def test_writes_go_on_without_a_silent_chain_member(
        tmp_path: Path, sim_seed: int, sim_clock: trio.abc.Clock, sim_logs,
        position: str) -> None:  # type: ignore[no-untyped-def]
    """A write+fsync loop (a guest flushing after every write): a chain member goes
    silent, each write and fsync finishes within the bound while it stays
    silent, the member is dropped (the version moves on without it), and once
    it is back every read returns what was written, never its stale bytes."""
    sim_logs.allow("vmstore", ".")  # the silent member is dropped, marked down, rebuilt
    block = 4096
    async with open_cluster(tmp_path, seed=sim_seed, chunkservers=3) as cluster:
        async with cluster.client("writer") as client:
            inode = await cluster.stored_file(client, "/a.img", bytes(block))
            written = bytearray()

            async def write_and_fsync(count: int) -> None:
                for _ in range(count):
                    piece = bytes([len(written) // block % 251 + 1]) * block
                    started_s = trio.current_time()
                    await client.write(inode, len(written), piece)
                    await client.fsync(inode)
                    assert trio.current_time() - started_s <= STALL_BOUND_S
                    written.extend(piece)

            await write_and_fsync(20)  # samples of the chain's write times
            chain = await cluster.holders(client, inode)
            assert len(chain) == 2
            silent = chain[0 if position == "head" else -1]
            cluster.network.isolate(silent)
            silent_before = chunk_io.SILENT_MEMBERS._value.get()
            faulted_at_s = trio.current_time()
            await write_and_fsync(20)
            assert trio.current_time() - faulted_at_s < 5.0  # before the master saw it
            assert chunk_io.SILENT_MEMBERS._value.get() > silent_before
            holders = await cluster.holders(client, inode)
            assert silent not in holders
            assert holders  # never below one live replica
            cluster.network.heal()
            await write_and_fsync(5)
        async with cluster.client("reader") as reader:
            assert await reader.read(inode, 0, len(written), len(written)) == bytes(written)
