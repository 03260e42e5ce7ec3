"""Full disks (issue 19): space that cannot be overcommitted.

Chunkservers on small disks (``capacity_bytes``: the store uses only that much
of its file system). A chunk placed on a chunkserver reserves its full size
there, so the master places no more chunks than the disks can hold to the end;
a writer that gets no chunk, or whose last replica has no room, gets NoSpace
(ENOSPC through a mount) at once, never ReplicaUnavailable (EIO), and every
byte an fsync acknowledged reads back.
"""

from __future__ import annotations

from pathlib import Path

import trio

from vmstore.dfs.client.client import Client
from vmstore.dfs.constants import HEARTBEAT_INTERVAL_S, SPACE_MARGIN_BYTES
from vmstore.dfs.errors import DfsError, NoSpace
from vmstore.dfs.protocol.replica_format import FILE_SIZE_BYTES
from vmstore.dfs.testing.cluster import open_cluster

MiB = 1024 * 1024
# Room for one replica at its full size, and a little more: never for two.
ONE_REPLICA_BYTES = FILE_SIZE_BYTES + SPACE_MARGIN_BYTES + 2 * MiB


async def _fill(client: Client, inode: int, piece: bytes, pieces: int,
                acknowledged: dict[int, int], errors: dict[int, DfsError]) -> None:
    """Write ``pieces`` pieces, fsync after each; note how far fsync acknowledged."""
    try:
        for number in range(pieces):
            await client.write(inode, number * len(piece), piece)
            await client.fsync(inode)
            acknowledged[inode] = (number + 1) * len(piece)
    except DfsError as error:
        errors[inode] = error


async def _reads_back(client: Client, inode: int, piece: bytes, size_bytes: int) -> None:
    for at in range(0, size_bytes, len(piece)):
        assert await client.read(inode, at, len(piece), size_bytes) == piece, (
            f"inode {inode}: bytes at {at} do not read back")


async def test_chunks_are_placed_only_where_their_full_size_fits(
        tmp_path: Path, sim_seed: int, sim_clock: trio.abc.Clock,
        expected_logs) -> None:  # type: ignore[no-untyped-def]
    expected_logs.allow("vmstore", "refused|lost|no room|room for|has room")
    async with open_cluster(tmp_path, seed=sim_seed, chunkservers=3,
                            capacity_bytes=ONE_REPLICA_BYTES) as cluster:
        async with cluster.client("cs1") as client:
            piece = b"\x5a" * MiB
            inodes = [(await client.create_file(f"/f{n}.img")).inode for n in range(4)]
            acknowledged: dict[int, int] = {}
            errors: dict[int, DfsError] = {}
            async with trio.open_nursery() as writers:
                for inode in inodes:
                    writers.start_soon(_fill, client, inode, piece, 4, acknowledged, errors)
            # Three disks, room for one full replica each: at most three replicas in all,
            # so at least one of the four files got no chunk.
            replicas = 0
            for inode in inodes:
                locations = await client.chunk_locations(inode, 0, 1)
                replicas += sum(len(location.replicas) for location in locations)
            assert replicas <= 3, f"{replicas} replicas placed on disks with room for 3"
            assert errors, "every writer got a chunk: the disks are overcommitted"
            assert acknowledged, "no writer got a chunk"
            for inode, error in errors.items():
                assert isinstance(error, NoSpace), f"inode {inode}: {error!r}, not NoSpace"
            for inode, size_bytes in acknowledged.items():
                assert size_bytes == 4 * MiB, f"inode {inode} stopped at {size_bytes}"
        async with cluster.client("cs2") as reader:
            for inode, size_bytes in acknowledged.items():
                await _reads_back(reader, inode, piece, size_bytes)
            await trio.sleep(HEARTBEAT_INTERVAL_S * 2)  # fresh figures in status
            for server in (await reader.status()).chunkservers:
                assert server.bytes_total == ONE_REPLICA_BYTES
                assert server.bytes_free > 0
                if server.chunk_count:
                    # The replica's full size less the 4 MiB written (and its table).
                    assert 0 < server.bytes_reserved < FILE_SIZE_BYTES - 4 * MiB
                    assert server.bytes_free - server.bytes_reserved < FILE_SIZE_BYTES


async def test_a_full_replica_leaves_the_chain_and_the_last_one_says_no_space(
        tmp_path: Path, sim_seed: int, sim_clock: trio.abc.Clock,
        expected_logs) -> None:  # type: ignore[no-untyped-def]
    """The disks fill with something else (capacity shrunk under the store): the full
    member leaves the chain and the writer goes on; when the last one is full too, the
    write fails with NoSpace at once, the version stays put, and what fsync
    acknowledged reads back."""
    expected_logs.allow("vmstore", "refused|lost|no room|room for|has room|failed")
    async with open_cluster(tmp_path, seed=sim_seed, chunkservers=2,
                            capacity_bytes=4 * ONE_REPLICA_BYTES) as cluster:
        async with cluster.client("client1") as client:
            piece = b"\xa5" * MiB
            inode = (await client.create_file("/g.img")).inode
            acknowledged: dict[int, int] = {}
            errors: dict[int, DfsError] = {}
            await _fill(client, inode, piece, 2, acknowledged, errors)
            assert not errors, errors
            first, second = await cluster.holders(client, inode)
            # Something else fills the first disk: no room for one more block.
            cluster.stores[first].ledger.capacity_bytes = (
                cluster.stores[first].space_report().used_bytes + SPACE_MARGIN_BYTES)
            await client.write(inode, 2 * MiB, piece)
            await client.fsync(inode)
            acknowledged[inode] = 3 * MiB
            assert await cluster.holders(client, inode) == [second]
            (dropped,) = await client.chunk_locations(inode, 0, 1)
            # And the second: nowhere to write.
            cluster.stores[second].ledger.capacity_bytes = (
                cluster.stores[second].space_report().used_bytes + SPACE_MARGIN_BYTES)
            started_s = trio.current_time()
            try:
                await client.write(inode, 3 * MiB, piece)
                await client.fsync(inode)
                raise AssertionError("a write with no room anywhere succeeded")
            except NoSpace:
                pass
            assert trio.current_time() - started_s < 5, "NoSpace took its time"
            await trio.sleep(60)  # healing passes, none with a host to copy to
            (after,) = await client.chunk_locations(inode, 0, 1)
            assert after.version == dropped.version
            assert await cluster.holders(client, inode) == [second]
        async with cluster.client("client2") as reader:
            await _reads_back(reader, inode, piece, acknowledged[inode])
