"""`vmstore metadata restore` with real daemons: the master's disk is lost after a
backup and after a later master start (so the chunkservers have seen a generation newer
than the backup's); the backup restored, the master started on it, every file written
before the backup reads back."""

from __future__ import annotations

import json
import random
import shutil
import signal
from pathlib import Path

import pytest

from tests.system.conftest import Cluster, vmstore_command

pytestmark = pytest.mark.system


async def test_files_written_before_a_backup_read_back_after_its_restore(
        cluster: Cluster, tmp_path: Path) -> None:
    data_dir = cluster.directory / "master"
    rng = random.Random(15)
    contents = {f"/image{index}.img": rng.randbytes(300_000 * (index + 1)) for index in range(4)}
    async with cluster.client() as client:
        for path, data in contents.items():
            inode = (await client.create_file(path)).inode
            await client.write(inode, 0, data)
            await client.fsync(inode)
    backup = tmp_path / "backup.db"
    done = vmstore_command("metadata", "backup", "--data-dir", str(data_dir), "--to",
                           str(backup), config=cluster.config_path)
    assert done.returncode == 0, done.stderr
    refused = vmstore_command("metadata", "restore", "--from", str(backup), "--data-dir",
                              str(data_dir), "--force", config=cluster.config_path)
    assert refused.returncode == 1 and "a master running on it?" in refused.stderr
    cluster.kill("master", signal.SIGTERM)
    cluster.restart("master")  # a start after the backup: its generation is behind now
    cluster.kill("master", signal.SIGKILL)
    shutil.rmtree(data_dir)  # the master's disk is lost
    data_dir.mkdir()
    restored = vmstore_command("metadata", "restore", "--from", str(backup), "--data-dir",
                               str(data_dir), config=cluster.config_path)
    assert restored.returncode == 0, restored.stderr
    assert "at generation" in restored.stdout
    cluster.restart("master")
    async with cluster.client() as client:
        for path, data in contents.items():
            attrs = await client.resolve(path)
            assert attrs.size_bytes == len(data)
            assert await client.read(attrs.inode, 0, len(data), len(data)) == data, path
    status = vmstore_command("status", "--json", config=cluster.config_path)
    assert json.loads(status.stdout)["refused"] == []  # every chunkserver took the master
