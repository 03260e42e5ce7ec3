"""Never the last copy (issue 19): a damaged replica that is the only current one left
stays, serves its good blocks, and shows in status and fsck with its bad block ranges."""

from __future__ import annotations

from pathlib import Path

import pytest
import trio

from vmstore.dfs.constants import BLOCK_SIZE_BYTES
from vmstore.dfs.errors import DfsError
from vmstore.dfs.protocol import messages as m
from vmstore.dfs.testing.cluster import open_cluster

DATA = bytes(range(251)) * 1200  # 301,200 bytes: blocks 0..73
ROTTEN_AT_BYTES = 70_000  # block 17


async def test_a_damaged_last_copy_keeps_serving_its_good_blocks(
        tmp_path: Path, sim_seed: int, sim_clock: trio.abc.Clock,
        expected_logs) -> None:  # type: ignore[no-untyped-def]
    expected_logs.allow("vmstore", ".")  # the rot is reported, at WARNING and ERROR
    expected_logs.allow("vmstore", ".", level=40)
    async with open_cluster(tmp_path, seed=sim_seed, chunkservers=2) as cluster:
        async with cluster.client("client1") as client:
            inode = await cluster.stored_file(client, "/a.img", DATA)
            last, other = await cluster.holders(client, inode)
            await cluster.kill(other)
            await client.write(inode, 0, DATA[:4096])  # the chain drops the dead one
            await client.fsync(inode)
            assert await cluster.holders(client, inode) == [last]
            (chunk_id, _), = cluster.stores[last].list_chunks()
            cluster.stores[last].flip_bit(chunk_id, ROTTEN_AT_BYTES)
            bad = ROTTEN_AT_BYTES // BLOCK_SIZE_BYTES
            with pytest.raises(DfsError, match=f"block {bad}"):
                await client.read(inode, bad * BLOCK_SIZE_BYTES, 4096, len(DATA))
            await trio.sleep(10)  # the damage report reaches the master; healing passes
            assert await cluster.holders(client, inode) == [last], "the last copy was dropped"
            assert cluster.stores[last].list_chunks() != [], "the last copy was deleted"
            good = (bad + 1) * BLOCK_SIZE_BYTES
            assert await client.read(inode, 0, bad * BLOCK_SIZE_BYTES, len(DATA)) == (
                DATA[:bad * BLOCK_SIZE_BYTES])
            assert await client.read(inode, good, len(DATA) - good, len(DATA)) == DATA[good:]
            status = await client.status()
            assert [(d.chunk_id, d.bad_blocks) for d in status.damaged] == [
                (chunk_id, [(bad, bad + 1)])]
            fsck = await client.master.call(m.ClientToMasterFsck(), reply_type=m.FsckReply)
            problems = fsck.problems
            assert [(p.chunk_id, p.state, p.bad_blocks) for p in problems] == [
                (chunk_id, "damaged", [(bad, bad + 1)])]


async def test_a_damaged_last_copy_is_replaced_once_a_healthy_copy_is_back(
        tmp_path: Path, sim_seed: int, sim_clock: trio.abc.Clock,
        expected_logs) -> None:  # type: ignore[no-untyped-def]
    """With the healthy holder away, no copy is tried from the damaged one (so no version
    bump); once it is back, the damaged replica is dropped and rebuilt from it."""
    expected_logs.allow("vmstore", ".")
    expected_logs.allow("vmstore", ".", level=40)
    async with open_cluster(tmp_path, seed=sim_seed) as cluster:
        async with cluster.client("client1") as client:
            inode = await cluster.stored_file(client, "/a.img", DATA)
            rotten, healthy = await cluster.holders(client, inode)
            (third,) = set(cluster.chunkserver_names) - {rotten, healthy}
            await cluster.kill(third)  # nowhere to copy to but the holders
            await cluster.kill(healthy)  # away, still current
            (chunk_id, _), = cluster.stores[rotten].list_chunks()
            cluster.stores[rotten].flip_bit(chunk_id, ROTTEN_AT_BYTES)
            bad = ROTTEN_AT_BYTES // BLOCK_SIZE_BYTES
            with pytest.raises(DfsError, match=f"block {bad}"):
                await client.read(inode, bad * BLOCK_SIZE_BYTES, 4096, len(DATA))
            (before,) = await client.chunk_locations(inode, 0, 1)
            await trio.sleep(60)  # healing passes with only the damaged copy up
            (during,) = await client.chunk_locations(inode, 0, 1)
            assert during.version == before.version
            assert [r.host_label for r in during.replicas] == [rotten]
            await cluster.restart(healthy)
            await cluster.restart(third)
            with trio.fail_after(300):
                while (status := await client.status()).damaged or (
                        status.chunks.ok != status.chunks.total):
                    await trio.sleep(1)
            for name in await cluster.holders(client, inode):  # the rotten one may be again
                assert cluster.stores[name].verify(chunk_id) == [], f"{name}'s copy is bad"
            assert await client.read(inode, 0, len(DATA), len(DATA)) == DATA
