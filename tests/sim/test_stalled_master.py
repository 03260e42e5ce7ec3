"""A stalled master does not punish its clients (issue 15).

Promise: a master that did not run for longer than the session expiry (SIGSTOP,
a frozen VM, a host swapping) expires nothing for that silence, which was its
own: every session and chunkserver gets a full period from the moment it runs
again, so a writer holding a lease and write-behind across the stall sees no
error, keeps its session, and every fsynced byte reads back.

The stall is the virtual clock jumping: no task of any node runs across the
jump, as no task of a SIGSTOPped master runs, and the master wakes with its
expiry timers overdue before it has read what waits in its sockets.
"""

from __future__ import annotations

from pathlib import Path

import trio
import trio.testing

from vmstore.dfs.constants import LEASE_EXPIRY_S
from vmstore.dfs.testing.cluster import open_cluster

PIECE = 100_000
STALL_S = 3 * LEASE_EXPIRY_S


def _piece(number: int) -> bytes:
    return bytes([number + 1]) * PIECE


async def test_a_writer_rides_out_a_master_stall_longer_than_the_expiry(
        tmp_path: Path, sim_seed: int, sim_clock: trio.testing.MockClock,
        sim_logs) -> None:  # type: ignore[no-untyped-def]
    sim_logs.allow("vmstore.dfs.master.stall_watch", "did not run")
    async with open_cluster(tmp_path, seed=sim_seed) as cluster:
        async with cluster.client("writer") as writer:
            inode = (await writer.create_file("/guest.img")).inode
            await writer.opened(inode, writable=True)
            await writer.write(inode, 0, _piece(0))
            await writer.fsync(inode)
            session = writer.master.session_id
            await writer.write(inode, PIECE, _piece(1), wait=False)  # write-behind
            sim_clock.jump(STALL_S)
            with trio.fail_after(120):
                await writer.write(inode, 2 * PIECE, _piece(2))
                await writer.fsync(inode)  # any error fails the test
            assert writer.master.session_id == session, "the master expired the session"
            assert (await writer.lease_info(inode)).holder_session == session
            await writer.closed(inode, writable=True)
        async with cluster.client("reader") as reader:
            data = await reader.read(inode, 0, 3 * PIECE, 3 * PIECE)
            assert data == _piece(0) + _piece(1) + _piece(2)
