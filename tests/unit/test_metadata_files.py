"""`vmstore metadata backup|inspect` on real SQLite files: what they show, that inspect
never writes, that a backup taken under a writer is one consistent snapshot, and that
bad input is one line on stderr with exit code 1, never a traceback."""

from __future__ import annotations

import os
import sqlite3
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from vmstore.cli.main import main
from vmstore.dfs.errors import ConfigError, DamagedMetadata
from vmstore.dfs.metadata.backup import backup_metadata
from vmstore.dfs.metadata.identity import begin_generation
from vmstore.dfs.metadata.inspection import inspect_metadata
from vmstore.dfs.metadata.namespace import Namespace
from vmstore.dfs.metadata.store import MetadataStore
from vmstore.dfs.types import ROOT_INODE

NOW_NS = 1_000_000_000_000
WRITER_FILES_MAX = 2000  # the writer thread's bound, should the test's stop never come


def create_files(store: MetadataStore, count: int, prefix: str = "f") -> None:
    namespace = Namespace(store)
    for index in range(count):
        with store.transaction(), store.savepoint():
            namespace.create(ROOT_INODE, f"{prefix}{index}".encode(), 0o644, 0, 0, 0, NOW_NS)


@pytest.fixture
def store(tmp_path: Path) -> Iterator[MetadataStore]:
    (tmp_path / "master").mkdir()
    store = MetadataStore(tmp_path / "master" / "metadata.db")
    yield store
    store.close()


def fingerprint(path: Path) -> tuple[bytes, int]:
    return path.read_bytes(), path.stat().st_mtime_ns


def test_inspect_shows_identity_and_rows_of_a_live_store(store: MetadataStore) -> None:
    identity = begin_generation(store)
    create_files(store, 5)
    summary = inspect_metadata(store.path)
    assert summary.schema_version == "2"
    assert summary.cluster_id == identity.cluster_id
    assert summary.generation == identity.generation == 1
    assert summary.table_rows["inodes"] == 6  # the root and five files
    assert summary.table_rows["dentries"] == 5
    for table in ("chunks", "replicas", "sessions", "leases", "reply_cache"):
        assert summary.table_rows[table] == 0
    assert summary.schema_differences == []


def test_inspect_never_changes_the_file(store: MetadataStore,
                                        capsys: pytest.CaptureFixture[str]) -> None:
    create_files(store, 3)
    store.connection.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    before = fingerprint(store.path)
    # While the store is open (a live master), then closed (a stopped one).
    assert main(["metadata", "inspect", str(store.path)]) == 0
    assert fingerprint(store.path) == before
    store.close()
    before = fingerprint(store.path)
    assert main(["metadata", "inspect", "--json", str(store.path)]) == 0
    assert main(["metadata", "inspect", "--data-dir", str(store.path.parent)]) == 0
    assert fingerprint(store.path) == before
    assert '"inodes": 4' in capsys.readouterr().out


@pytest.mark.parametrize("content", [None, b"", b"not a database\n" * 300, "directory"])
def test_inspect_of_no_metadata_is_one_line(tmp_path: Path, content: bytes | str | None,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "x.db"
    if content == "directory":
        path.mkdir()
    elif isinstance(content, bytes):
        path.write_bytes(content)
    assert main(["metadata", "inspect", str(path)]) == 1
    error = capsys.readouterr().err
    assert error.startswith(f"vmstore metadata: {path}") and error.count("\n") == 1, error
    if isinstance(content, bytes):
        assert path.read_bytes() == content


def test_inspect_names_what_differs_from_the_schema(tmp_path: Path,
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "metadata.db"
    MetadataStore(path).close()
    with sqlite3.connect(path) as connection:
        connection.execute("ALTER TABLE inodes ADD COLUMN colour TEXT")
        connection.execute("DROP TABLE reply_cache")
    connection.close()
    assert main(["metadata", "inspect", str(path)]) == 1
    output = capsys.readouterr().out
    assert "SCHEMA  table reply_cache is missing" in output
    assert "SCHEMA  table inodes: column colour is not in this vmstore's schema" in output


def test_an_sqlite_file_that_is_not_metadata_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "other.db"
    with sqlite3.connect(path) as connection:
        connection.execute("CREATE TABLE t(x)")
    connection.close()
    with pytest.raises(DamagedMetadata, match="not vmstore metadata"):
        inspect_metadata(path)
    with pytest.raises(DamagedMetadata, match="not vmstore metadata"):
        backup_metadata(path, tmp_path / "copy.db")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["other.db"]  # no copy, no leftover


def test_backup_under_a_writer_is_one_snapshot(store: MetadataStore, tmp_path: Path) -> None:
    """Each create is one transaction adding an inode and its dentry: a torn copy would
    show them out of step. Every copy is a single file that passes integrity_check."""
    create_files(store, 10)
    stop = threading.Event()

    def write() -> None:
        writer = MetadataStore(store.path)  # another connection, as the master's own
        try:
            namespace = Namespace(writer)
            for index in range(WRITER_FILES_MAX):
                if stop.is_set():
                    return
                with writer.transaction(), writer.savepoint():
                    namespace.create(ROOT_INODE, b"w%d" % index, 0o644, 0, 0, 0, NOW_NS)
        finally:
            writer.close()

    thread = threading.Thread(target=write)
    thread.start()
    counts = []
    try:
        for round_index in range(5):
            copy = tmp_path / "backup.db"
            summary = backup_metadata(store.path, copy)
            with sqlite3.connect(f"{copy.as_uri()}?mode=ro", uri=True) as connection:
                assert connection.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
                inodes, dentries = connection.execute(
                    "SELECT (SELECT count(*) FROM inodes), (SELECT count(*) FROM dentries)"
                ).fetchone()
            connection.close()
            assert inodes == dentries + 1, round_index
            assert summary.table_rows["inodes"] == inodes
            counts.append(inodes)
    finally:
        stop.set()
        thread.join()
    assert counts == sorted(counts) and counts[0] >= 11
    assert sorted(p.name for p in tmp_path.iterdir()) == ["backup.db", "master"]


def test_backup_refuses_its_own_source_and_a_missing_directory(store: MetadataStore,
                                                                tmp_path: Path) -> None:
    before = store.path.read_bytes()
    with pytest.raises(ConfigError, match="is the metadata itself"):
        backup_metadata(store.path, store.path.parent / ".." / "master" / "metadata.db")
    assert store.path.read_bytes() == before
    with pytest.raises(ConfigError, match="does not exist"):
        backup_metadata(store.path, tmp_path / "nowhere" / "copy.db")


def test_backup_command_takes_the_data_dir_from_the_config(
        store: MetadataStore, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    create_files(store, 2)
    config = tmp_path / "vmstore.toml"
    config.write_text(f'[master]\ndata_dir = "{store.path.parent}"\n')
    monkeypatch.setenv("VMSTORE_CONFIG", str(config))
    copy = tmp_path / "copy.db"
    assert main(["metadata", "backup", "--to", str(copy)]) == 0
    assert "3 inodes" in capsys.readouterr().out
    copy.write_bytes(b"an older backup, replaced whole")
    assert main(["metadata", "backup", "--to", str(copy)]) == 0
    assert inspect_metadata(copy).table_rows["inodes"] == 3
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".copy.db")]
    monkeypatch.setenv("VMSTORE_CONFIG", str(tmp_path / "absent.toml"))
    assert main(["metadata", "backup", "--to", str(copy)]) == 1
    assert "pass --data-dir" in capsys.readouterr().err
    assert os.path.exists(copy)
