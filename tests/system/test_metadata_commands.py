"""`vmstore metadata backup|inspect` against a running master's file: backups taken
while a client creates files are consistent copies holding those files."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import pytest
import trio

from tests.system.conftest import Cluster, vmstore_command

pytestmark = pytest.mark.system
BACKUPS = 3
FILES_BEFORE = 20


def integrity(path: Path) -> list[tuple[str]]:
    connection = sqlite3.connect(f"{path.as_uri()}?mode=ro", uri=True)
    try:
        return list(connection.execute("PRAGMA integrity_check").fetchall())
    finally:
        connection.close()


def inodes_in(path: Path) -> set[int]:
    connection = sqlite3.connect(f"{path.as_uri()}?mode=ro", uri=True)
    try:
        return {row[0] for row in connection.execute("SELECT id FROM inodes")}
    finally:
        connection.close()


async def test_backup_while_files_are_created(cluster: Cluster, tmp_path: Path) -> None:
    data_dir = cluster.directory / "master"
    created: list[int] = []
    stop = trio.Event()

    async with cluster.client() as client:
        async def create_until_stopped() -> None:
            index = 0
            while not stop.is_set():
                attrs = await client.create_file(f"/busy{index}")
                created.append(attrs.inode)
                index += 1

        for index in range(FILES_BEFORE):
            created.append((await client.create_file(f"/before{index}")).inode)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(create_until_stopped)
            backups = []
            for round_index in range(BACKUPS):
                target = tmp_path / f"backup{round_index}.db"
                acknowledged_before = list(created)
                done = await trio.to_thread.run_sync(
                    lambda target=target: vmstore_command(
                        "metadata", "backup", "--data-dir", str(data_dir), "--to",
                        str(target), config=cluster.config_path))
                assert done.returncode == 0, done.stderr
                assert done.stderr == ""
                backups.append((target, acknowledged_before))
            live = await trio.to_thread.run_sync(lambda: vmstore_command(
                "metadata", "inspect", "--data-dir", str(data_dir), "--json",
                config=cluster.config_path))
            stop.set()
        assert live.returncode == 0, live.stderr
        assert json.loads(live.stdout)["table_rows"]["inodes"] > FILES_BEFORE

    for target, acknowledged_before in backups:
        assert integrity(target) == [("ok",)]
        shown = vmstore_command("metadata", "inspect", str(target), "--json",
                                config=cluster.config_path)
        assert shown.returncode == 0, shown.stderr
        summary = json.loads(shown.stdout)
        assert summary["schema_version"] == "2"
        assert summary["generation"] == 1
        assert summary["table_rows"]["sessions"] >= 1
        inodes = inodes_in(target)
        assert summary["table_rows"]["inodes"] == len(inodes)
        # Every create acknowledged before the backup began is in it.
        assert set(acknowledged_before) <= inodes
    assert len(created) > FILES_BEFORE  # files were being created during the backups


def test_inspect_of_a_backup_never_changes_it(cluster: Cluster, tmp_path: Path) -> None:
    target = tmp_path / "backup.db"
    done = vmstore_command("metadata", "backup", "--data-dir", str(cluster.directory / "master"),
                           "--to", str(target), config=cluster.config_path)
    assert done.returncode == 0, done.stderr
    before = target.read_bytes(), target.stat().st_mtime_ns
    shown = vmstore_command("metadata", "inspect", str(target), config=cluster.config_path)
    assert shown.returncode == 0, shown.stderr
    assert "schema version  2" in shown.stdout
    assert (target.read_bytes(), target.stat().st_mtime_ns) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["backup.db", "cluster"]


@pytest.mark.parametrize("content", [None, b"\x00garbage" * 512], ids=["missing", "garbage"])
def test_inspect_of_no_database_is_one_line(tmp_path: Path, content: bytes | None) -> None:
    path = tmp_path / "metadata.db"
    if content is not None:
        path.write_bytes(content)
    shown = vmstore_command("metadata", "inspect", str(path), config=tmp_path / "none.toml")
    assert shown.returncode == 1
    assert shown.stdout == ""
    assert shown.stderr.count("\n") == 1 and "Traceback" not in shown.stderr, shown.stderr
    assert shown.stderr.startswith(f"vmstore metadata: {path}: ")
