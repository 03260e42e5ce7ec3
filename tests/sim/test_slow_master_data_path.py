"""A briefly unreachable master does not stall a guest whose capabilities are valid
(issue 16).

Promise checked: a client refreshes its write tokens and read capabilities in
the background from half their life, and goes on using them meanwhile (up to
CAPABILITY_USE_FRACTION of their life); so with the master cut off from the
client for a few seconds just after that half-life point, a write+fsync loop and
reads of cached chunks each finish within the issue's bound, while the master
is still unreachable, and the data reads back afterwards. (The write+fsync is
an fdatasync, as QEMU's flush: a full fsync also records the mtime on the master
once per MTIME_PUBLISH_INTERVAL_S, and waits for it.)
"""

from __future__ import annotations

from pathlib import Path

import trio

from vmstore.dfs.constants import (
    CLOCK_SKEW_S_MAX,
    LEASE_EXPIRY_S,
    READ_CAPABILITY_LIFE_S,
)
from vmstore.dfs.testing.cluster import MASTER, open_cluster

BLOCK = bytes(range(256)) * 16  # 4 KiB
DATA = BLOCK * 64  # 256 KiB
STALL_BOUND_S = 1.0
CUT_S = 3.0  # how long the master stays unreachable


async def _each_within_bound(what: str, deadline_s: float, step: object) -> int:
    """Run ``step`` (an async callable) until ``deadline_s`` (trio clock); each call
    finishes within the bound. Returns how many ran."""
    done = 0
    while trio.current_time() < deadline_s:
        started_s = trio.current_time()
        await step()  # type: ignore[operator]
        assert trio.current_time() - started_s <= STALL_BOUND_S, what
        done += 1
        await trio.sleep(0.1)
    return done


async def test_writes_and_reads_go_on_while_the_master_is_briefly_unreachable(
        tmp_path: Path, sim_seed: int, sim_clock: trio.abc.Clock, sim_logs) -> None:  # type: ignore[no-untyped-def]
    sim_logs.allow("vmstore", ".")  # calls to the master time out, and are retried
    async with open_cluster(tmp_path, seed=sim_seed, chunkservers=3) as cluster:
        async with cluster.client("writer") as writer:
            inode = await cluster.stored_file(writer, "/a.img", DATA)
            # Past the write token's half-life (the master's lease expiry less the
            # clock skew allowance), well before its end.
            await trio.sleep((LEASE_EXPIRY_S - CLOCK_SKEW_S_MAX) / 2 + 1.0)
            cluster.network.partition("writer", MASTER)
            offset = 0

            async def write_and_fsync() -> None:
                nonlocal offset
                await writer.write(inode, offset, BLOCK)  # inside the file: no new size
                await writer.fsync(inode, datasync=True)  # what QEMU's flush is
                offset = (offset + len(BLOCK)) % len(DATA)

            assert await _each_within_bound("write+fsync", trio.current_time() + CUT_S,
                                            write_and_fsync) > 5
            cluster.network.heal()
        async with cluster.client("reader") as reader:
            assert await reader.read(inode, 0, len(DATA), len(DATA)) == DATA
            await trio.sleep(READ_CAPABILITY_LIFE_S / 2 + 1.0)  # past the capability's half-life
            cluster.network.partition("reader", MASTER)

            async def read() -> None:
                assert await reader.read(inode, 0, len(DATA), len(DATA)) == DATA

            assert await _each_within_bound("read", trio.current_time() + CUT_S, read) > 5
            cluster.network.heal()


async def test_a_flush_does_not_wait_for_the_master_over_another_files_create(
        tmp_path: Path, sim_seed: int, sim_clock: trio.abc.Clock, sim_logs) -> None:  # type: ignore[no-untyped-def]
    """A namespace change the master answered before it was durable (a create) is owed
    to an fsync of that file, or of its directory, not to every file of the host: a
    guest's flush must not wait for an unreachable master because another file was
    created meanwhile (an fsync of the new file does wait, and then succeeds)."""
    sim_logs.allow("vmstore", ".")
    async with open_cluster(tmp_path, seed=sim_seed, chunkservers=3) as cluster:
        async with cluster.client("writer") as writer:
            inode = await cluster.stored_file(writer, "/a.img", DATA)
            other = (await writer.create_file("/b.log")).inode  # lazy at the master
            cluster.network.partition("writer", MASTER)
            offset = 0

            async def write_and_fsync() -> None:
                nonlocal offset
                await writer.write(inode, offset, BLOCK)
                await writer.fsync(inode, datasync=True)
                offset = (offset + len(BLOCK)) % len(DATA)

            assert await _each_within_bound("write+fsync", trio.current_time() + CUT_S,
                                            write_and_fsync) > 5
            cluster.network.heal()
            await writer.fsync(other)  # owed to the new file's fsync: it waited for this
            assert writer.master.owed_through(other) <= writer.master.changes_durable
