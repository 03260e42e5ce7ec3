"""The master hears of a silent chunkserver from the writer that dropped it (issue 16).

Promise checked: once a writer drops a silent chain member (the bad chain report
the chain replacement sends), the master marks that chunkserver suspect at once,
long before its heartbeats would be missed (CHUNKSERVER_DOWN_AFTER_S): ``vmstore
status`` shows it silent, new chunks are not placed on it (so other writers do
not wait for it: each new file's write+fsync finishes within the bound), and
readers are sent to it last. Once it heartbeats again it is a chunkserver like
the others.
"""

from __future__ import annotations

from pathlib import Path

import trio

from vmstore.cli.status import server_state
from vmstore.dfs.constants import CHUNKSERVER_DOWN_AFTER_S
from vmstore.dfs.testing.cluster import open_cluster

BLOCK = bytes(range(256)) * 16  # 4 KiB
STALL_BOUND_S = 1.0


async def test_a_dropped_silent_member_is_avoided_before_its_heartbeats_are_missed(
        tmp_path: Path, sim_seed: int, sim_clock: trio.abc.Clock, sim_logs) -> None:  # type: ignore[no-untyped-def]
    sim_logs.allow("vmstore", ".")  # the silent member is dropped, later marked down
    async with open_cluster(tmp_path, seed=sim_seed, chunkservers=4) as cluster:
        async with cluster.client("writer") as writer, cluster.client("other") as other:
            inodes = [await cluster.stored_file(writer, f"/{n}.img", BLOCK) for n in range(4)]
            silent = (await cluster.holders(writer, inodes[0]))[-1]
            others = [i for i in inodes[1:] if silent in await cluster.holders(other, i)]
            cluster.network.isolate(silent)
            isolated_at_s = trio.current_time()
            await writer.write(inodes[0], 0, BLOCK)  # drops it from the chain, and says so
            await writer.fsync(inodes[0])
            (server,) = [s for s in (await other.status()).chunkservers
                         if s.host == silent]
            assert server_state(server) == "silent"
            for n in range(4):  # new chunks go elsewhere: nobody waits for it
                started_s = trio.current_time()
                inode = await cluster.stored_file(other, f"/new{n}.img", BLOCK)
                assert trio.current_time() - started_s <= STALL_BOUND_S
                assert silent not in await cluster.holders(other, inode)
            for inode in others:  # readers ask it last
                assert (await cluster.holders(other, inode))[-1] == silent
            assert trio.current_time() - isolated_at_s < CHUNKSERVER_DOWN_AFTER_S
            cluster.network.heal()
            with trio.fail_after(30.0):  # it heartbeats (registers) again: no longer avoided
                while server_state(server) != "up":
                    await trio.sleep(0.5)
                    (server,) = [s for s in (await other.status()).chunkservers
                                 if s.host == silent]
