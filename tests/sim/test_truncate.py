"""Truncates against replicas that hold more than the master was told.

Under write-behind a writer's last writes reach further than the size on
the master's record until its next fsync or close. A truncate must still
cut every byte past the new end, on every replica, or a later extension of
the file brings the old bytes back (found by the model check, issue 17).
"""

from __future__ import annotations

from pathlib import Path

import pytest
import trio

from vmstore.dfs.constants import CHUNK_SIZE_BYTES
from vmstore.dfs.protocol import messages as m
from vmstore.dfs.testing.cluster import open_cluster


@pytest.mark.parametrize("new_size", [69_994, 150_000, 300_000])
async def test_bytes_past_a_truncate_never_come_back(tmp_path: Path, sim_seed: int,
                                                     sim_clock: trio.abc.Clock,
                                                     new_size: int) -> None:
    async with open_cluster(tmp_path, seed=sim_seed) as cluster:
        async with cluster.client("writer") as writer:
            inode = (await writer.create_file("/a.img")).inode
            await writer.opened(inode, writable=True)
            await writer.write(inode, 139_477, b"\xad" * 512)  # on both replicas, unreported
            await writer.write(inode, CHUNK_SIZE_BYTES + 7, b"\xbe" * 100)  # a second chunk
            await writer.io.flush(inode)
            # The truncate as the master sees it: the size on record is still 0.
            await writer.master.mutate(m.ClientToMasterSetAttr(
                session_id=0, op_id=0, inode=inode, size_bytes=new_size), reply_type=m.AttrsReply)
            await writer.write(inode, 400_000, b"\x02" * 100)
            await writer.io.flush(inode)  # the data only: no size of the writer's is told
            async with cluster.client("reader") as reader:
                whole = await reader.read(inode, 0, 400_100, 400_100)
                locations = await reader.chunk_locations(inode, 0, 2)
            expected = bytearray(400_100)
            kept = max(0, min(new_size, 139_989) - 139_477)
            expected[139_477:139_477 + kept] = b"\xad" * kept
            expected[400_000:] = b"\x02" * 100
            assert whole == bytes(expected)
            assert [location.index for location in locations] == [0], (
                "the chunk wholly past the new end is gone")
