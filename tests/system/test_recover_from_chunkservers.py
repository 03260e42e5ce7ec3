"""`vmstore recover scan|build` with real daemons (issue 15's last resort): files written,
the master killed and its data directory deleted (no backup anywhere), each chunkserver's
data directory scanned, new metadata built from the reports, the master started on it:
every file's bytes read back as /recovered/<inode>, and no chunkserver refuses it."""

from __future__ import annotations

import json
import random
import shutil
import signal
from pathlib import Path

import pytest

from tests.system.conftest import Cluster, vmstore_command
from vmstore.dfs.constants import CHUNK_SIZE_BYTES

pytestmark = pytest.mark.system
MIB = 1024 * 1024


async def test_files_come_back_by_inode_from_the_chunkservers_alone(
        cluster: Cluster, tmp_path: Path) -> None:
    rng = random.Random(15)
    # (offset, bytes): a 2 MiB image; one whose size is no multiple of a MiB; one
    # sparse up to its second chunk, whose first chunk was never written.
    layouts = {"/image.img": (0, rng.randbytes(2 * MIB)),
               "/odd.bin": (0, rng.randbytes(300_001)),
               "/sparse.img": (CHUNK_SIZE_BYTES, rng.randbytes(MIB))}
    inodes: dict[str, int] = {}
    async with cluster.client() as client:
        for path, (offset, data) in layouts.items():
            inode = (await client.create_file(path)).inode
            await client.write(inode, offset, data)
            await client.fsync(inode)
            inodes[path] = inode
    data_dir = cluster.directory / "master"
    cluster.kill("master", signal.SIGKILL)
    shutil.rmtree(data_dir)  # the master's disk is lost, and there is no backup
    data_dir.mkdir()

    reports = []
    for name in cluster.chunkserver_names:
        report = tmp_path / f"{name}.json"
        scanned = vmstore_command("recover", "scan", "--data-dir",
                                  str(cluster.directory / name), "--output", str(report),
                                  config=cluster.config_path)
        assert scanned.returncode == 0, scanned.stderr
        reports.append(str(report))
    built = vmstore_command("recover", "build", "--from-chunkservers", *reports,
                            "--data-dir", str(data_dir), "--json", config=cluster.config_path)
    assert built.returncode == 0, built.stderr
    summary = json.loads(built.stdout)
    assert sorted(f["inode"] for f in summary["files"]) == sorted(inodes.values())
    assert summary["lost_found"] == [] and summary["unverified_chunks"] == []
    again = vmstore_command("recover", "build", "--from-chunkservers", *reports,
                            "--data-dir", str(data_dir), config=cluster.config_path)
    assert again.returncode == 1 and "holds metadata" in again.stderr  # never overwritten

    cluster.restart("master")
    async with cluster.client() as client:
        for path, (offset, data) in layouts.items():
            attrs = await client.resolve(f"/recovered/{inodes[path]}")
            end = offset + len(data)
            assert attrs.size_bytes == -(-end // MIB) * MIB, path  # rounded up to a MiB
            size = attrs.size_bytes
            assert await client.read(attrs.inode, offset, len(data), size) == data, path
            assert await client.read(attrs.inode, end, size - end, size) == bytes(size - end)
    status = vmstore_command("status", "--json", config=cluster.config_path)
    assert json.loads(status.stdout)["refused"] == []  # every chunkserver took the master
