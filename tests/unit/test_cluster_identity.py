"""The cluster identity: the refusal rule, the metadata's id and generation (and the
migration that gives an older database one), the chunkserver's copy of what it accepted."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from vmstore.dfs.chunkserver.identity import (
    CLUSTER_FILE,
    load_accepted_master,
    server_uuid,
    store_accepted_master,
)
from vmstore.dfs.errors import ConfigError
from vmstore.dfs.metadata.identity import begin_generation
from vmstore.dfs.metadata.schema import SCHEMA_VERSION
from vmstore.dfs.metadata.store import MetadataStore
from vmstore.dfs.protocol.cluster_identity import ClusterIdentity, refusal

SEEN = ClusterIdentity("c1", 5, "start-a")


@pytest.mark.parametrize(("master", "refused_because"), [
    (ClusterIdentity("c1", 5, "start-a"), ""),  # the same start, reconnected
    (ClusterIdentity("c1", 6, "start-b"), ""),  # the next start
    (ClusterIdentity("c2", 9, "start-b"), "of cluster c2"),
    (ClusterIdentity("", 0, ""), "of cluster (none)"),  # a master from before cluster ids
    (ClusterIdentity("c1", 4, "start-b"), "older than generation 5"),
    (ClusterIdentity("c1", 5, "start-b"), "of another start"),  # a copy, started once
])
def test_a_chunkserver_refuses_another_cluster_and_older_metadata(
        master: ClusterIdentity, refused_because: str) -> None:
    reason = refusal(SEEN, master)
    assert (reason == "") == (refused_because == "")
    assert refused_because in reason


def test_a_chunkserver_that_never_accepted_a_master_takes_the_first() -> None:
    assert refusal(None, ClusterIdentity("c2", 1, "x")) == ""


def test_the_generation_moves_forward_at_every_start_and_the_id_stays(tmp_path: Path) -> None:
    store = MetadataStore(tmp_path / "metadata.db")
    first = begin_generation(store)
    second = begin_generation(store)
    store.close()
    reopened = MetadataStore(tmp_path / "metadata.db")
    third = begin_generation(reopened)
    reopened.close()
    assert [first.generation, second.generation, third.generation] == [1, 2, 3]
    assert first.cluster_id == second.cluster_id == third.cluster_id
    assert len({first.incarnation, second.incarnation, third.incarnation}) == 3
    other = MetadataStore(tmp_path / "other.db")
    assert begin_generation(other).cluster_id != first.cluster_id
    other.close()


def test_a_database_from_before_cluster_ids_gets_one(tmp_path: Path) -> None:
    path = tmp_path / "metadata.db"
    MetadataStore(path).close()
    connection = sqlite3.connect(path)
    with connection:  # as schema version 1 left it
        connection.execute("DELETE FROM meta WHERE key IN ('cluster_id', 'generation')")
        connection.execute("UPDATE meta SET value = '1' WHERE key = 'schema_version'")
    connection.close()
    store = MetadataStore(path)
    identity = begin_generation(store)
    version = store.one("SELECT value FROM meta WHERE key = 'schema_version'")
    store.close()
    assert version == (str(SCHEMA_VERSION),)
    assert identity.generation == 1
    assert len(identity.cluster_id) == 36
    again = MetadataStore(path)
    assert begin_generation(again).cluster_id == identity.cluster_id
    again.close()


def test_a_chunkserver_keeps_what_it_accepted(tmp_path: Path) -> None:
    assert load_accepted_master(tmp_path) is None
    store_accepted_master(tmp_path, SEEN)
    assert load_accepted_master(tmp_path) == SEEN
    assert sorted(p.name for p in tmp_path.iterdir()) == [CLUSTER_FILE]  # no .tmp left
    uuid = server_uuid(tmp_path)
    assert server_uuid(tmp_path) == uuid


def test_a_damaged_cluster_file_stops_the_chunkserver(tmp_path: Path) -> None:
    (tmp_path / CLUSTER_FILE).write_text('{"cluster_id": "c1"')
    with pytest.raises(ConfigError, match="is damaged"):
        load_accepted_master(tmp_path)
