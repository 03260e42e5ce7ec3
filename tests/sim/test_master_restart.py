"""The master killed and restarted in the middle of a client's writes (issue 17).

Promise: the client library rides out the restart (it retries until its
reconnect deadline), so the writer sees no error, and every byte an fsync
acknowledged reads back afterwards from another client.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import trio

from vmstore.dfs.testing.cluster import MASTER, open_cluster

PIECE = 40_000
PIECES = 40
FILES = 2


def _piece(file: int, number: int) -> bytes:
    return bytes([(file * 64 + number) % 251 + 1]) * PIECE


@pytest.mark.parametrize("kill_after", [1, 7, 20])
async def test_a_master_restart_mid_writes_loses_no_acknowledged_byte(
        tmp_path: Path, sim_seed: int, sim_clock: trio.abc.Clock,
        expected_logs, kill_after: int) -> None:  # type: ignore[no-untyped-def]
    expected_logs.allow("vmstore", ".")  # connections to the master end and come back
    async with open_cluster(tmp_path, seed=sim_seed) as cluster:
        acknowledged = [0] * FILES  # per file: bytes fsync acknowledged
        restarted = trio.Event()
        progress = trio.Condition()  # after each fsync
        async with cluster.client("writer") as writer:
            inodes = [(await writer.create_file(f"/f{i}.img")).inode for i in range(FILES)]

            async def restart_master() -> None:
                async with progress:
                    while sum(acknowledged) < kill_after * PIECE:
                        await progress.wait()
                await cluster.kill(MASTER)  # the writer is in its next write or fsync
                await trio.sleep(3)
                await cluster.restart(MASTER)
                restarted.set()

            async def write_all() -> None:
                for number in range(PIECES):
                    for file, inode in enumerate(inodes):
                        await writer.write(inode, number * PIECE, _piece(file, number))
                        await writer.fsync(inode)  # any error fails the test
                        acknowledged[file] = (number + 1) * PIECE
                        async with progress:
                            progress.notify_all()
                    if number == PIECES // 2:
                        with trio.fail_after(120):
                            await restarted.wait()  # and some writes after the restart

            with trio.fail_after(600):
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(restart_master)
                    nursery.start_soon(write_all)
            assert restarted.is_set()
        async with cluster.client("reader") as reader:
            for file, inode in enumerate(inodes):
                size = (await reader.getattr(inode)).size_bytes
                assert size >= acknowledged[file]
                data = await reader.read(inode, 0, acknowledged[file], size)
                for number in range(acknowledged[file] // PIECE):
                    assert data[number * PIECE:(number + 1) * PIECE] == _piece(file, number), (
                        f"file {file}: acknowledged piece {number} lost across the restart")
