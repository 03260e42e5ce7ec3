"""Issue 19 with real daemons: the last copy is never dropped, and what is deleted can
be had back for a while.

* A file at goal 1 whose only replica rots in one block: its good blocks still
  read, the bad one fails (EIO at a mount) naming itself, status lists the chunk
  as damaged, and the replica file stays on disk (before: the master dropped
  and deleted the only copy).
* A file deleted: its replicas go into each chunkserver's quarantine, which
  `vmstore quarantine list` shows, and `restore` puts back byte for byte.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import trio

from tests.system.conftest import Cluster, vmstore_command
from vmstore.dfs.constants import BLOCK_SIZE_BYTES
from vmstore.dfs.errors import DfsError
from vmstore.dfs.protocol.replica_format import DATA_OFFSET
from vmstore.dfs.types import ROOT_INODE

BLOCKS = 3
DATA = os.urandom(BLOCKS * BLOCK_SIZE_BYTES)
WAIT_S = 30.0


def replica_file(cluster: Cluster, chunk_id: int) -> tuple[str, Path]:
    """(chunkserver name, path) of the one replica of ``chunk_id``."""
    (found,) = [(name, path) for name in cluster.chunkserver_names
                for path in (cluster.directory / name / "chunks").rglob("*.chunk")
                if int(path.stem, 16) == chunk_id]
    return found


async def test_the_last_copy_with_a_bad_block_is_kept_and_serves_its_good_blocks(
        cluster: Cluster, expected_logs) -> None:  # type: ignore[no-untyped-def]
    expected_logs.allow("vmstore", "bad block|damaged|checksum")
    expected_logs.allow("vmstore", "bad block|damaged|checksum", level=40)
    async with cluster.client() as client:
        inode = (await client.create_file("/only-copy.img")).inode
        await client.set_goal(inode, 1)
        await client.write(inode, 0, DATA)
        await client.fsync(inode)
        (location,) = await client.chunk_locations(inode, 0, 1)
        name, path = replica_file(cluster, location.chunk_id)
        with open(path, "r+b") as replica:  # rot in the middle block only
            replica.seek(DATA_OFFSET + BLOCK_SIZE_BYTES + 100)
            replica.write(b"\x00rot\x00")
        size = len(DATA)
        assert await client.read(inode, 0, BLOCK_SIZE_BYTES, size) == DATA[:BLOCK_SIZE_BYTES]
        assert await client.read(inode, 2 * BLOCK_SIZE_BYTES, BLOCK_SIZE_BYTES, size) == \
            DATA[2 * BLOCK_SIZE_BYTES:]
        with pytest.raises(DfsError):
            await client.read(inode, BLOCK_SIZE_BYTES, BLOCK_SIZE_BYTES, size)
        with trio.fail_after(WAIT_S):
            while not (await client.status()).damaged:
                await trio.sleep(0.2)
        (damaged,) = (await client.status()).damaged
        assert damaged.chunk_id == location.chunk_id
        assert (1, 2) in [tuple(blocks) for blocks in damaged.bad_blocks]
        # Still a holder, still on disk, still serving its good blocks.
        assert path.exists()
        (after,) = await client.chunk_locations(inode, 0, 1)
        assert [replica.host_label for replica in after.replicas] == \
            [replica.host_label for replica in location.replicas]
        assert await client.read(inode, 0, BLOCK_SIZE_BYTES, size) == DATA[:BLOCK_SIZE_BYTES]


def quarantined(cluster: Cluster, name: str) -> list[dict[str, object]]:
    listed = vmstore_command("quarantine", "list", "--data-dir",
                             str(cluster.directory / name), "--json",
                             config=cluster.config_path)
    assert listed.returncode == 0, listed.stderr
    entries: list[dict[str, object]] = json.loads(listed.stdout)
    return entries


async def test_a_deleted_files_replicas_wait_in_quarantine_and_restore_byte_for_byte(
        cluster: Cluster) -> None:
    async with cluster.client() as client:
        inode = (await client.create_file("/doomed.img")).inode
        await client.write(inode, 0, DATA)
        await client.fsync(inode)
        (location,) = await client.chunk_locations(inode, 0, 1)
        holders = {}
        for replica in location.replicas:
            name = f"chunkserver{int(replica.host_label.removeprefix('local'))}"
            (path,) = [path for path in (cluster.directory / name / "chunks").rglob("*.chunk")
                       if int(path.stem, 16) == location.chunk_id]
            holders[name] = (path, path.read_bytes())
        await client.unlink(ROOT_INODE, b"doomed.img")
        with trio.fail_after(WAIT_S):
            while any(path.exists() for path, _ in holders.values()):
                await trio.sleep(0.2)  # the master told each holder to delete it
    for name, (path, before) in holders.items():
        (entry,) = [entry for entry in quarantined(cluster, name)
                    if entry["chunk_id"] == location.chunk_id]
        restored = vmstore_command("quarantine", "restore", "--data-dir",
                                   str(cluster.directory / name), str(entry["name"]),
                                   config=cluster.config_path)
        assert restored.returncode == 0, restored.stderr
        assert path.read_bytes() == before, f"{name}: not restored byte for byte"
