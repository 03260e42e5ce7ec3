"""`vmstore metadata restore` on real SQLite files: what it checks, what it refuses, and
what the restored file holds (the backup's rows, a generation past any start, id counters
skipped forward). The round trip with real daemons is tests/system/test_metadata_commands.py."""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path

import pytest

from tests.unit.test_metadata_files import create_files
from vmstore.cli.main import main
from vmstore.dfs.constants import RESTORE_ID_SKIP
from vmstore.dfs.errors import Busy, ConfigError, DamagedMetadata, Exists
from vmstore.dfs.metadata.backup import backup_metadata
from vmstore.dfs.metadata.identity import begin_generation
from vmstore.dfs.metadata.inspection import inspect_metadata
from vmstore.dfs.metadata.restore import restore_metadata
from vmstore.dfs.metadata.store import MetadataStore


def _backup(tmp_path: Path, files: int = 4) -> tuple[Path, str]:
    """A backup of a store at generation 3 holding ``files`` files; its cluster id."""
    source = tmp_path / "source"
    source.mkdir()
    store = MetadataStore(source / "metadata.db")
    try:
        for _ in range(3):
            identity = begin_generation(store)
        create_files(store, files)
        backup = backup_metadata(store.path, tmp_path / "backup.db")
    finally:
        store.close()
    return Path(backup.path), identity.cluster_id


def test_a_restore_holds_the_backup_at_a_newer_generation_and_skips_ids(
        tmp_path: Path) -> None:
    backup, cluster_id = _backup(tmp_path)
    data_dir = tmp_path / "master"
    data_dir.mkdir()
    result = restore_metadata(backup, data_dir)
    assert result.replaced is None
    restored = inspect_metadata(data_dir / "metadata.db")
    assert restored.cluster_id == cluster_id
    assert restored.table_rows == inspect_metadata(backup).table_rows
    # Past every start of the master since the backup: at least the Unix time.
    assert restored.generation == result.generation >= int(time.time()) - 5
    store = MetadataStore(data_dir / "metadata.db")
    try:
        assert begin_generation(store).generation == result.generation + 1
        (seq,) = store.one("SELECT seq FROM sqlite_sequence WHERE name = 'inodes'") or (0,)
        assert seq == 5 + RESTORE_ID_SKIP  # the root and four files, then the skip
    finally:
        store.close()


def test_metadata_in_place_is_replaced_only_with_force_and_kept(tmp_path: Path) -> None:
    backup, _ = _backup(tmp_path, files=2)
    data_dir = tmp_path / "master"
    data_dir.mkdir()
    restore_metadata(backup, data_dir)
    store = MetadataStore(data_dir / "metadata.db")
    create_files(store, 3, prefix="after")
    store.close()
    with pytest.raises(Exists, match="holds metadata .*--force"):
        restore_metadata(backup, data_dir)
    first = inspect_metadata(data_dir / "metadata.db").generation
    assert first is not None
    result = restore_metadata(backup, data_dir, force=True)
    assert result.replaced is not None and result.replaced.exists()
    assert inspect_metadata(result.replaced).table_rows["inodes"] == 6  # kept, not lost
    assert inspect_metadata(data_dir / "metadata.db").table_rows["inodes"] == 3
    assert result.generation > first


def test_a_running_master_and_another_cluster_are_refused(tmp_path: Path) -> None:
    backup, _ = _backup(tmp_path)
    data_dir = tmp_path / "master"
    data_dir.mkdir()
    live = MetadataStore(data_dir / "metadata.db")  # this process holds it open
    begin_generation(live)
    try:
        with pytest.raises(Busy, match="is open in process"):
            restore_metadata(backup, data_dir, force=True)
    finally:
        live.close()
    with pytest.raises(ConfigError, match="of cluster .* not restored"):
        restore_metadata(backup, data_dir, force=True)


def test_a_damaged_or_foreign_file_is_refused_and_nothing_is_written(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data_dir = tmp_path / "master"
    data_dir.mkdir()
    foreign = tmp_path / "foreign.db"
    connection = sqlite3.connect(foreign)
    connection.execute("CREATE TABLE meta (key TEXT, value TEXT)")
    connection.commit()
    connection.close()
    with pytest.raises(DamagedMetadata, match="not this vmstore's schema"):
        restore_metadata(foreign, data_dir)
    backup, _ = _backup(tmp_path)
    data = bytearray(backup.read_bytes())
    data[len(data) // 2:len(data) // 2 + 4096] = b"\xff" * 4096  # a page of garbage
    backup.write_bytes(bytes(data))
    assert main(["metadata", "restore", "--from", str(backup),
                 "--data-dir", str(data_dir)]) == 1
    assert str(backup) in capsys.readouterr().err
    assert list(data_dir.iterdir()) == []
