"""`vmstore recover`'s two halves on real files: the scan of a data directory (owner
records, verification, where data ends), and the metadata built from scan reports
(newest version, clean replicas first, collisions and unowned chunks kept in
lost+found, sizes rounded, a database a master opens)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.unit.test_replica_owner import write_old_replica
from vmstore.dfs.chunkserver.chunk_store import ChunkStore
from vmstore.dfs.chunkserver.identity import server_uuid, store_accepted_master
from vmstore.dfs.chunkserver.recovery_scan import scan, scan_data_dir
from vmstore.dfs.constants import CHUNK_SIZE_BYTES, RESTORE_ID_SKIP
from vmstore.dfs.errors import Exists, InvalidArgument
from vmstore.dfs.metadata.chunks import ChunkTable
from vmstore.dfs.metadata.fsck import namespace_errors
from vmstore.dfs.metadata.namespace import Namespace
from vmstore.dfs.metadata.recovery_build import plan_recovery, write_recovered_metadata
from vmstore.dfs.metadata.store import MetadataStore
from vmstore.dfs.protocol.cluster_identity import ClusterIdentity
from vmstore.dfs.protocol.recovery_report import (
    REPORT_FORMAT,
    ScannedDataDir,
    ScannedReplica,
    ScanReport,
    decode_report,
    encode_report,
)
from vmstore.dfs.protocol.replica_format import DATA_OFFSET, ReplicaOwner
from vmstore.dfs.types import ROOT_INODE

MIB = 1024 * 1024
CLUSTER = "5f0c4d7e-0000-4000-8000-000000000001"


def test_a_scan_reports_owners_damage_and_the_end_of_the_data(tmp_path: Path) -> None:
    server_uuid(tmp_path)
    store_accepted_master(tmp_path, ClusterIdentity(CLUSTER, 7, "x"))
    with ChunkStore(tmp_path) as store:
        store.create(1, 3, ReplicaOwner(20, 0))
        store.write(1, 3, 10_000, 5, b"abc\0\0", [])  # its data ends at byte 10,003
        store.create(2, 1, ReplicaOwner(20, 1))
        store.write(2, 1, 0, 4096, b"\x01" * 4096, [])
        write_old_replica(store, 3, 1)
    fd = os.open(tmp_path / "chunks" / "02" / f"{2:016x}.chunk", os.O_WRONLY)
    os.pwrite(fd, b"\xff", DATA_OFFSET + 100)  # rot in block 0 of chunk 2
    os.close(fd)
    scanned = scan_data_dir(tmp_path)
    assert (scanned.cluster_id, scanned.generation) == (CLUSTER, 7)
    one, two, three = scanned.replicas
    assert (one.inode, one.index, one.version, one.verified, one.data_end_bytes) == (
        20, 0, 3, True, 10_003)
    assert (two.inode, two.index, two.verified, two.bad_blocks) == (20, 1, False, [(0, 1)])
    assert two.data_end_bytes == 4096  # a bad block's bytes count as data
    assert (three.inode, three.index, three.verified) == (None, None, True)
    report = scan([tmp_path])
    assert decode_report(encode_report(report), "x") == report


def test_a_foreign_report_is_refused() -> None:
    with pytest.raises(InvalidArgument, match="elsewhere.json"):
        decode_report(b'{"format": "something else"}', "elsewhere.json")


def replica(chunk_id: int, version: int, owner: tuple[int, int] | None, *,
            verified: bool = True, end: int = MIB) -> ScannedReplica:
    inode, index = owner if owner else (None, None)
    return ScannedReplica(chunk_id=chunk_id, version=version, inode=inode, index=index,
                          verified=verified, bad_blocks=[] if verified else [(0, 1)],
                          data_end_bytes=end)


def report(*data_dirs: tuple[str, list[ScannedReplica]]) -> ScanReport:
    return ScanReport(format=REPORT_FORMAT, host="h", scanned_at_ns=0, data_dirs=[
        ScannedDataDir(data_dir=f"/d/{uuid}", server_uuid=uuid, cluster_id=CLUSTER,
                       generation=9, replicas=replicas, unreadable=[])
        for uuid, replicas in data_dirs])


def test_the_newest_version_wins_and_clean_replicas_hold_it() -> None:
    plan = plan_recovery([
        report(("a", [replica(10, 4, (7, 0), verified=False), replica(11, 2, (7, 1))])),
        report(("b", [replica(10, 4, (7, 0)), replica(11, 1, (7, 1), end=5)]),
               ("c", [replica(10, 3, (7, 0))]))], MIB)
    (file,) = plan.files
    assert file.inode == 7
    assert [(c.index, c.chunk_id, c.version, c.holders) for c in file.chunks] == [
        (0, 10, 4, (2,)), (1, 11, 2, (1,))]  # b's clean replica, not a's damaged one
    assert file.size_bytes == CHUNK_SIZE_BYTES + MIB and file.goal == 1
    assert plan.servers == ["a", "b", "c"] and plan.unverified_chunks == []
    assert plan.cluster_id == CLUSTER and plan.generation > 9


def test_collisions_and_unowned_chunks_go_to_lost_and_found() -> None:
    plan = plan_recovery([report(("a", [
        replica(5, 1, (8, 0)), replica(6, 1, (8, 0)),  # 6 replaced 5 at index 0
        replica(9, 2, None, verified=False, end=100)]))], 4096)
    (file,) = plan.files
    assert [c.chunk_id for c in file.chunks] == [6]
    assert sorted(f.chunks[0].chunk_id for f in plan.lost) == [5, 9]
    assert plan.unverified_chunks == [9]
    assert [f.size_bytes for f in plan.lost if f.chunks[0].chunk_id == 9] == [4096]


def test_sizes_round_up_and_reach_into_the_last_chunk() -> None:
    def size(round_to: int, *chunks: tuple[int, int]) -> int:
        plan = plan_recovery([report(("a", [replica(100 + index, 1, (4, index), end=end)
                                            for index, end in chunks]))], round_to)
        return plan.files[0].size_bytes

    assert size(MIB, (0, 3 * MIB)) == 3 * MIB  # an image a MiB multiple comes back exact
    assert size(MIB, (0, 3 * MIB + 1)) == 4 * MIB
    assert size(1, (0, 300_001)) == 300_001
    assert size(1, (0, 5), (2, 0)) == 2 * CHUNK_SIZE_BYTES + 1  # last chunk all zeros


def test_reports_of_two_clusters_or_one_chunkserver_twice_are_refused() -> None:
    foreign = ScanReport(format=REPORT_FORMAT, host="h", scanned_at_ns=0, data_dirs=[
        ScannedDataDir(data_dir="/d", server_uuid="b", cluster_id="another", generation=1,
                       replicas=[], unreadable=[])])
    with pytest.raises(InvalidArgument, match="2 clusters"):
        plan_recovery([report(("a", [])), foreign], MIB)
    with pytest.raises(InvalidArgument, match="twice"):
        plan_recovery([report(("a", [])), report(("a", []))], MIB)


def test_the_metadata_written_holds_the_files_and_never_overwrites(tmp_path: Path) -> None:
    plan = plan_recovery([report(("a", [replica(10, 4, (7, 0)), replica(12, 1, None)]),
                                 ("b", [replica(10, 4, (7, 0))]))], MIB)
    database = write_recovered_metadata(plan, tmp_path)
    store = MetadataStore(database)
    try:
        namespace = Namespace(store)
        recovered = namespace.lookup(ROOT_INODE, b"recovered")
        file = namespace.lookup(recovered.inode, b"7")
        assert (file.inode, file.size_bytes, file.goal) == (7, MIB, 2)
        lost = namespace.lookup(recovered.inode, b"lost+found")
        assert namespace.lookup(lost.inode, f"chunk-{12:016x}".encode()).size_bytes == MIB
        chunks = ChunkTable(store)
        assert chunks.chunk_at(file.inode, 0) == (10, 4)
        assert chunks.replicas(10) == [1, 2]
        assert [uuid for _, uuid, *_ in chunks.servers()] == ["a", "b"]
        assert store.one("SELECT value FROM meta WHERE key = 'cluster_id'") == (CLUSTER,)
        assert store.one("SELECT seq FROM sqlite_sequence WHERE name = 'chunks'") == (
            12 + RESTORE_ID_SKIP,)
        assert namespace_errors(store, lambda _: False) == []  # what fsck checks
    finally:
        store.close()
    with pytest.raises(Exists, match="holds metadata"):
        write_recovered_metadata(plan, tmp_path)
