"""Namespace on a real MetadataStore: every operation, its error paths, and a model check.

Each call runs as the master runs it (a savepoint inside a transaction), except
where a test checks that a failing call wrote nothing: there it runs bare.
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from vmstore.dfs.constants import (
    CHUNK_SIZE_BYTES,
    DEFAULT_GOAL,
    FILE_SIZE_BYTES_MAX,
    GOAL_MAX,
    SYMLINK_BYTES_MAX,
    XATTR_NAME_BYTES_MAX,
    XATTR_VALUE_BYTES_MAX,
)
from vmstore.dfs.errors import (
    DfsError,
    Exists,
    FileTooLarge,
    InvalidArgument,
    IsADirectory,
    NameTooLong,
    NoSuchAttribute,
    NotADirectory,
    NotEmpty,
    NotFound,
    PermissionDenied,
    RangeTooLarge,
)
from vmstore.dfs.metadata.namespace import Namespace
from vmstore.dfs.metadata.store import MetadataStore
from vmstore.dfs.protocol.messages import FileAttrs
from vmstore.dfs.types import (
    RENAME_EXCHANGE,
    RENAME_NOREPLACE,
    ROOT_INODE,
    XATTR_CREATE,
    XATTR_REPLACE,
    FileKind,
    InodeId,
)

ROOT = ROOT_INODE
NOW = 1_000_000_000_000
LATER = NOW + 5_000
KIND_MASK = 0o170000


class Master:
    """Runs each Namespace call like the master: a savepoint inside a transaction."""

    def __init__(self, store: MetadataStore) -> None:
        self.store = store
        self.namespace = Namespace(store)

    def __getattr__(self, name: str) -> Callable[..., Any]:
        method = getattr(self.namespace, name)

        def call(*args: Any, **kwargs: Any) -> Any:
            with self.store.transaction(), self.store.savepoint():
                return method(*args, **kwargs)

        return call


@pytest.fixture
def store(tmp_path: Path) -> Iterator[MetadataStore]:
    store = MetadataStore(tmp_path / "meta.db")
    yield store
    check_invariants(store)
    store.close()


@pytest.fixture
def ns(store: MetadataStore) -> Master:
    return Master(store)


def ino(attrs: FileAttrs) -> InodeId:
    return InodeId(attrs.inode)


def mkfile(ns: Master, parent: InodeId, name: bytes, now: int = NOW) -> FileAttrs:
    attrs: FileAttrs = ns.create(parent, name, 0o644, 10, 20, 0, now)
    return attrs


def mkdir(ns: Master, parent: InodeId, name: bytes, now: int = NOW) -> FileAttrs:
    attrs: FileAttrs = ns.mkdir(parent, name, 0o755, 10, 20, now)
    return attrs


def add_chunk(store: MetadataStore, inode: InodeId, index: int, version: int = 3) -> int:
    """A chunk at ``index`` of ``inode`` with replicas on servers 1 and 2."""
    with store.transaction():
        cursor = store.execute("INSERT INTO chunks(version) VALUES (?)", (version,))
        chunk_id = cursor.lastrowid
        assert chunk_id is not None
        store.execute(
            "INSERT INTO file_chunks(inode_id, chunk_index, chunk_id) VALUES (?, ?, ?)",
            (inode, index, chunk_id),
        )
        for server in (1, 2):
            store.execute(
                "INSERT INTO replicas(chunk_id, server_id) VALUES (?, ?)", (chunk_id, server)
            )
    return chunk_id


def count(store: MetadataStore, sql: str, parameters: tuple[Any, ...] = ()) -> int:
    row = store.one(sql, parameters)
    assert row is not None
    return int(row[0])


def dump(store: MetadataStore) -> dict[str, list[tuple[Any, ...]]]:
    tables = ("inodes", "dentries", "xattrs", "chunks", "file_chunks", "replicas")
    return {t: store.all(f"SELECT * FROM {t} ORDER BY 1, 2") for t in (*tables, "chunk_deletions")}


def check_invariants(store: MetadataStore) -> None:
    """The schema.py invariants that the namespace is responsible for."""
    inodes = {row[0]: row for row in store.all("SELECT id, mode, nlink FROM inodes")}
    dentries = store.all("SELECT parent_id, inode_id FROM dentries")
    assert ROOT in inodes
    for parent, child in dentries:
        assert parent in inodes and child in inodes, (parent, child)
        assert inodes[parent][1] & KIND_MASK == FileKind.DIRECTORY
    for inode, mode, nlink in inodes.values():
        names = sum(1 for _, child in dentries if child == inode)
        if mode & KIND_MASK == FileKind.DIRECTORY:
            subdirs = sum(
                1
                for parent, child in dentries
                if parent == inode and inodes[child][1] & KIND_MASK == FileKind.DIRECTORY
            )
            assert nlink == 2 + subdirs, f"directory {inode}: nlink {nlink}, {subdirs} subdirs"
            assert names == (0 if inode == ROOT else 1), f"directory {inode} has {names} names"
        else:
            assert nlink == names >= 1, f"inode {inode}: nlink {nlink}, {names} names"
    orphans = store.all(
        "SELECT inode_id FROM file_chunks WHERE inode_id NOT IN (SELECT id FROM inodes)"
        " UNION SELECT inode_id FROM xattrs WHERE inode_id NOT IN (SELECT id FROM inodes)"
    )
    assert orphans == []


# --- lookup, getattr -----------------------------------------------------------
def test_root_attrs(ns: Master) -> None:
    root = ns.getattr(ROOT)
    assert root.mode == FileKind.DIRECTORY | 0o755
    assert root.nlink == 2 and root.goal == DEFAULT_GOAL and root.allocated_bytes == 0
    assert ns.inode_count() == 1


def test_lookup_and_errors(ns: Master) -> None:
    f = mkfile(ns, ROOT, b"f")
    assert ns.lookup(ROOT, b"f") == f
    with pytest.raises(NotFound, match=r"no entry b'g' in directory 1"):
        ns.lookup(ROOT, b"g")
    with pytest.raises(NotADirectory):
        ns.lookup(ino(f), b"x")
    with pytest.raises(NotFound):
        ns.lookup(InodeId(999), b"x")
    with pytest.raises(NotFound, match="no inode 999"):
        ns.getattr(InodeId(999))


# --- create, mkdir, symlink ------------------------------------------------------
def test_create_regular_file(ns: Master) -> None:
    f = ns.create(ROOT, b"f", 0o100640, 10, 20, 77, LATER)
    assert f.mode == FileKind.REGULAR | 0o640
    assert (f.nlink, f.uid, f.gid, f.rdev, f.size_bytes) == (1, 10, 20, 0, 0)
    assert f.atime_ns == f.mtime_ns == f.ctime_ns == LATER
    assert f.goal == DEFAULT_GOAL
    root = ns.getattr(ROOT)
    assert root.mtime_ns == root.ctime_ns == LATER and root.nlink == 2
    # Kind 0 means regular.
    assert ns.create(ROOT, b"g", 0o600, 0, 0, 0, NOW).mode == FileKind.REGULAR | 0o600
    with pytest.raises(Exists, match="b'f' already exists in directory 1"):
        ns.create(ROOT, b"f", 0o644, 0, 0, 0, NOW)


@pytest.mark.parametrize(
    "kind", [FileKind.FIFO, FileKind.SOCKET, FileKind.CHARACTER_DEVICE, FileKind.BLOCK_DEVICE]
)
def test_create_special_nodes(ns: Master, kind: FileKind) -> None:
    node = ns.create(ROOT, b"n", kind | 0o600, 0, 0, 0x0801, NOW)
    assert node.mode == kind | 0o600
    device = kind in (FileKind.CHARACTER_DEVICE, FileKind.BLOCK_DEVICE)
    assert node.rdev == (0x0801 if device else 0)


@pytest.mark.parametrize("mode", [FileKind.DIRECTORY | 0o755, FileKind.SYMLINK | 0o777, 0o030644])
def test_create_refuses_other_kinds(ns: Master, mode: int) -> None:
    with pytest.raises(InvalidArgument):
        ns.create(ROOT, b"n", mode, 0, 0, 0, NOW)
    assert ns.inode_count() == 1


def test_create_argument_errors(ns: Master) -> None:
    f = mkfile(ns, ROOT, b"f")
    with pytest.raises(NotADirectory):
        ns.create(ino(f), b"x", 0o644, 0, 0, 0, NOW)
    with pytest.raises(InvalidArgument):
        ns.create(ROOT, b"x", 0o644, -1, 0, 0, NOW)
    with pytest.raises(InvalidArgument):
        ns.create(ROOT, b"x", FileKind.BLOCK_DEVICE | 0o600, 0, 0, -5, NOW)


def test_mkdir_nlink_accounting(ns: Master) -> None:
    a = ns.mkdir(ROOT, b"a", 0o040750, 1, 2, LATER)
    assert a.mode == FileKind.DIRECTORY | 0o750 and a.nlink == 2
    assert ns.getattr(ROOT).nlink == 3
    mkdir(ns, ino(a), b"b")
    mkfile(ns, ino(a), b"f")
    assert ns.getattr(ino(a)).nlink == 3
    assert ns.getattr(ROOT).mtime_ns == LATER
    with pytest.raises(Exists):
        mkdir(ns, ROOT, b"a")
    ns.rmdir(ino(a), b"b", NOW)
    assert ns.getattr(ino(a)).nlink == 2


def test_symlink_and_readlink(ns: Master) -> None:
    link = ns.symlink(ROOT, b"l", b"../target", 5, 6, NOW)
    assert link.mode == FileKind.SYMLINK | 0o777
    assert link.size_bytes == 9 and link.nlink == 1 and link.allocated_bytes == 0
    assert ns.readlink(ino(link)) == b"../target"
    assert ns.symlink(ROOT, b"max", b"x" * SYMLINK_BYTES_MAX, 0, 0, NOW).size_bytes == 4096
    with pytest.raises(RangeTooLarge):
        ns.symlink(ROOT, b"big", b"x" * (SYMLINK_BYTES_MAX + 1), 0, 0, NOW)
    with pytest.raises(InvalidArgument):
        ns.symlink(ROOT, b"empty", b"", 0, 0, NOW)
    with pytest.raises(Exists):
        ns.symlink(ROOT, b"l", b"t", 0, 0, NOW)
    f = mkfile(ns, ROOT, b"f")
    with pytest.raises(InvalidArgument, match="not a symlink"):
        ns.readlink(ino(f))
    with pytest.raises(NotFound):
        ns.readlink(InodeId(999))


def test_setgid_directory_hands_down_group(ns: Master) -> None:
    shared = ns.mkdir(ROOT, b"shared", 0o2775, 1, 50, NOW)
    assert shared.mode == FileKind.DIRECTORY | 0o2775 and shared.gid == 50
    f = ns.create(ino(shared), b"f", 0o644, 1, 7, 0, NOW)
    assert f.gid == 50 and f.mode == FileKind.REGULAR | 0o644
    sub = ns.mkdir(ino(shared), b"sub", 0o755, 1, 7, NOW)
    assert sub.gid == 50 and sub.mode == FileKind.DIRECTORY | 0o2755
    deeper = ns.mkdir(ino(sub), b"deeper", 0o700, 1, 7, NOW)
    assert deeper.gid == 50 and deeper.mode & 0o2000
    assert ns.symlink(ino(sub), b"l", b"t", 1, 7, NOW).gid == 50
    plain = ns.mkdir(ROOT, b"plain", 0o755, 1, 7, NOW)
    assert ns.create(ino(plain), b"f", 0o644, 1, 8, 0, NOW).gid == 8
    assert ns.mkdir(ino(plain), b"d", 0o755, 1, 8, NOW).mode == FileKind.DIRECTORY | 0o755


def test_goal_is_inherited(ns: Master) -> None:
    d = mkdir(ns, ROOT, b"d")
    ns.set_goal(ino(d), 5, False, NOW)
    assert mkfile(ns, ino(d), b"f").goal == 5
    assert mkdir(ns, ino(d), b"sub").goal == 5
    assert ns.symlink(ino(d), b"l", b"t", 0, 0, NOW).goal == 5


def test_inode_ids_are_never_reused(ns: Master) -> None:
    first = mkfile(ns, ROOT, b"f")
    ns.unlink(ROOT, b"f", NOW)
    second = mkfile(ns, ROOT, b"f")
    assert second.inode > first.inode
    d = mkdir(ns, ROOT, b"d")
    ns.rmdir(ROOT, b"d", NOW)
    assert mkdir(ns, ROOT, b"d").inode > d.inode


# --- link, unlink, rmdir ---------------------------------------------------------
def test_hard_link(ns: Master) -> None:
    f = mkfile(ns, ROOT, b"f")
    d = mkdir(ns, ROOT, b"d")
    linked = ns.link(ino(f), ino(d), b"g", LATER)
    assert linked.inode == f.inode and linked.nlink == 2 and linked.ctime_ns == LATER
    assert ns.lookup(ino(d), b"g").inode == f.inode
    assert ns.getattr(ino(d)).mtime_ns == LATER
    with pytest.raises(PermissionDenied, match="directory"):
        ns.link(ino(d), ROOT, b"dlink", NOW)
    with pytest.raises(Exists):
        ns.link(ino(f), ROOT, b"d", NOW)
    with pytest.raises(NotADirectory):
        ns.link(ino(f), ino(f), b"x", NOW)
    with pytest.raises(NotFound):
        ns.link(InodeId(999), ROOT, b"x", NOW)


def test_unlink_hard_linked_file_keeps_other_name(ns: Master, store: MetadataStore) -> None:
    f = mkfile(ns, ROOT, b"f")
    add_chunk(store, ino(f), 0)
    ns.setxattr(ino(f), b"user.k", b"v", 0, NOW)
    ns.link(ino(f), ROOT, b"g", NOW)
    assert ns.unlink(ROOT, b"f", LATER) == []
    g = ns.lookup(ROOT, b"g")
    assert g.nlink == 1 and g.ctime_ns == LATER
    assert ns.getxattr(ino(g), b"user.k") == b"v"
    assert count(store, "SELECT COUNT(*) FROM chunk_deletions") == 0
    with pytest.raises(NotFound):
        ns.lookup(ROOT, b"f")


LIVE_REPLICAS = (
    "SELECT COUNT(*) FROM replicas WHERE chunk_id NOT IN (SELECT chunk_id FROM chunk_deletions)"
)


def test_unlink_last_name_frees_everything(ns: Master, store: MetadataStore) -> None:
    f = mkfile(ns, ROOT, b"f")
    chunk_a = add_chunk(store, ino(f), 0, version=4)
    chunk_b = add_chunk(store, ino(f), 7, version=9)
    ns.setxattr(ino(f), b"user.k", b"v", 0, NOW)
    freed = ns.unlink(ROOT, b"f", LATER)
    assert sorted(freed) == [(chunk_a, 4), (chunk_b, 9)]
    assert store.all("SELECT chunk_id, version FROM chunk_deletions ORDER BY 1") == [
        (chunk_a, 4),
        (chunk_b, 9),
    ]
    for table in ("chunks", "file_chunks", "xattrs"):
        assert count(store, f"SELECT COUNT(*) FROM {table}") == 0, table
    # replicas stay listed until the chunkservers confirm the deletes
    assert count(store, LIVE_REPLICAS) == 0
    assert count(store, "SELECT COUNT(*) FROM replicas") == 4
    with pytest.raises(NotFound):
        ns.getattr(ino(f))
    root = ns.getattr(ROOT)
    assert root.mtime_ns == root.ctime_ns == LATER
    assert ns.inode_count() == 1


def test_unlink_errors(ns: Master) -> None:
    d = mkdir(ns, ROOT, b"d")
    with pytest.raises(IsADirectory, match="b'd'"):
        ns.unlink(ROOT, b"d", NOW)
    with pytest.raises(NotFound):
        ns.unlink(ROOT, b"nope", NOW)
    with pytest.raises(NotADirectory):
        ns.unlink(ino(mkfile(ns, ino(d), b"f")), b"x", NOW)


def test_rmdir(ns: Master, store: MetadataStore) -> None:
    d = mkdir(ns, ROOT, b"d")
    ns.setxattr(ino(d), b"user.k", b"v", 0, NOW)
    sub = mkdir(ns, ino(d), b"sub")
    mkfile(ns, ino(sub), b"f")
    with pytest.raises(NotEmpty, match="b'sub'"):
        ns.rmdir(ino(d), b"sub", NOW)
    with pytest.raises(NotADirectory):
        ns.rmdir(ino(sub), b"f", NOW)
    with pytest.raises(NotFound):
        ns.rmdir(ROOT, b"nope", NOW)
    ns.unlink(ino(sub), b"f", NOW)
    ns.rmdir(ino(d), b"sub", NOW)
    ns.rmdir(ROOT, b"d", LATER)
    root = ns.getattr(ROOT)
    assert root.nlink == 2 and root.mtime_ns == root.ctime_ns == LATER
    assert count(store, "SELECT COUNT(*) FROM xattrs") == 0
    assert ns.inode_count() == 1


# --- rename --------------------------------------------------------------------
def test_rename_file_within_and_across_directories(ns: Master) -> None:
    f = mkfile(ns, ROOT, b"f")
    d = mkdir(ns, ROOT, b"d")
    assert ns.rename(ROOT, b"f", ROOT, b"g", 0, LATER) == []
    assert ns.lookup(ROOT, b"g").inode == f.inode
    assert ns.getattr(ino(f)).ctime_ns == LATER
    ns.rename(ROOT, b"g", ino(d), b"h", 0, LATER + 1)
    assert ns.lookup(ino(d), b"h").inode == f.inode
    assert ns.getattr(ino(d)).mtime_ns == ns.getattr(ROOT).mtime_ns == LATER + 1
    assert ns.getattr(ROOT).nlink == 3 and ns.getattr(ino(d)).nlink == 2


def test_rename_directory_between_parents_moves_nlink(ns: Master) -> None:
    a = mkdir(ns, ROOT, b"a")
    b = mkdir(ns, ROOT, b"b")
    mkdir(ns, ino(a), b"x")
    assert ns.getattr(ino(a)).nlink == 3
    ns.rename(ino(a), b"x", ino(b), b"y", 0, NOW)
    assert ns.getattr(ino(a)).nlink == 2 and ns.getattr(ino(b)).nlink == 3
    assert ns.getattr(ROOT).nlink == 4
    ns.rename(ino(b), b"y", ino(b), b"z", 0, NOW)
    assert ns.getattr(ino(b)).nlink == 3


def test_rename_replaces_file_and_frees_its_chunks(ns: Master, store: MetadataStore) -> None:
    src = mkfile(ns, ROOT, b"src")
    dst = mkfile(ns, ROOT, b"dst")
    chunk = add_chunk(store, ino(dst), 0, version=2)
    assert ns.rename(ROOT, b"src", ROOT, b"dst", 0, NOW) == [(chunk, 2)]
    assert ns.lookup(ROOT, b"dst").inode == src.inode
    with pytest.raises(NotFound):
        ns.getattr(ino(dst))
    assert store.all("SELECT chunk_id, version FROM chunk_deletions") == [(chunk, 2)]


def test_rename_over_hard_linked_file_keeps_other_name(ns: Master, store: MetadataStore) -> None:
    mkfile(ns, ROOT, b"src")
    dst = mkfile(ns, ROOT, b"dst")
    add_chunk(store, ino(dst), 0)
    ns.link(ino(dst), ROOT, b"other", NOW)
    assert ns.rename(ROOT, b"src", ROOT, b"dst", 0, LATER) == []
    other = ns.lookup(ROOT, b"other")
    assert other.nlink == 1 and other.ctime_ns == LATER
    assert count(store, "SELECT COUNT(*) FROM file_chunks") == 1


def test_rename_directory_over_empty_directory(ns: Master) -> None:
    a = mkdir(ns, ROOT, b"a")
    b = mkdir(ns, ROOT, b"b")
    mkdir(ns, ino(a), b"src")
    mkdir(ns, ino(b), b"dst")
    ns.rename(ino(a), b"src", ino(b), b"dst", 0, NOW)
    assert ns.getattr(ino(a)).nlink == 2 and ns.getattr(ino(b)).nlink == 3
    # Same parent: the parent loses the replaced directory's link only.
    mkdir(ns, ino(b), b"other")
    ns.rename(ino(b), b"dst", ino(b), b"other", 0, NOW)
    assert ns.getattr(ino(b)).nlink == 3
    assert [e.name for e in ns.readdir(ino(b), 0, 10)] == [b"other"]


def test_rename_type_conflicts(ns: Master) -> None:
    mkdir(ns, ROOT, b"dir")
    full = mkdir(ns, ROOT, b"full")
    mkfile(ns, ino(full), b"f")
    mkfile(ns, ROOT, b"file")
    with pytest.raises(NotEmpty):
        ns.rename(ROOT, b"dir", ROOT, b"full", 0, NOW)
    with pytest.raises(NotADirectory):
        ns.rename(ROOT, b"dir", ROOT, b"file", 0, NOW)
    with pytest.raises(IsADirectory):
        ns.rename(ROOT, b"file", ROOT, b"dir", 0, NOW)
    with pytest.raises(NotFound):
        ns.rename(ROOT, b"nope", ROOT, b"x", 0, NOW)
    with pytest.raises(NotADirectory):
        ns.rename(ROOT, b"file", ino(ns.lookup(ROOT, b"file")), b"x", 0, NOW)
    with pytest.raises(InvalidArgument, match="flags"):
        ns.rename(ROOT, b"file", ROOT, b"x", RENAME_NOREPLACE | RENAME_EXCHANGE, NOW)


def test_rename_into_own_subtree_is_refused(ns: Master) -> None:
    a = mkdir(ns, ROOT, b"a")
    b = mkdir(ns, ino(a), b"b")
    c = mkdir(ns, ino(b), b"c")
    for target in (a, b, c):
        with pytest.raises(InvalidArgument, match="own subtree"):
            ns.rename(ROOT, b"a", ino(target), b"moved", 0, NOW)
    with pytest.raises(InvalidArgument):
        ns.rename(ROOT, b"a", ino(c), b"moved", RENAME_NOREPLACE, NOW)
    # Moving up out of itself is fine.
    ns.rename(ino(b), b"c", ROOT, b"c", 0, NOW)
    assert ns.lookup(ROOT, b"c").inode == c.inode


def test_rename_onto_itself_is_a_no_op(ns: Master) -> None:
    f = mkfile(ns, ROOT, b"f", now=NOW)
    ns.link(ino(f), ROOT, b"g", NOW)
    d = mkdir(ns, ROOT, b"d", now=NOW)
    before = ns.getattr(ROOT)
    assert ns.rename(ROOT, b"f", ROOT, b"f", 0, LATER) == []
    assert ns.rename(ROOT, b"d", ROOT, b"d", 0, LATER) == []
    # Two names of one file: both stay (POSIX).
    assert ns.rename(ROOT, b"f", ROOT, b"g", 0, LATER) == []
    assert ns.lookup(ROOT, b"f").nlink == 2 and ns.lookup(ROOT, b"g").inode == f.inode
    assert ns.getattr(ROOT) == before and ns.getattr(ino(d)).ctime_ns == NOW
    assert ns.rename(ROOT, b"f", ROOT, b"g", RENAME_EXCHANGE, LATER) == []


def test_rename_noreplace(ns: Master) -> None:
    mkfile(ns, ROOT, b"a")
    mkfile(ns, ROOT, b"b")
    with pytest.raises(Exists, match="b'b'"):
        ns.rename(ROOT, b"a", ROOT, b"b", RENAME_NOREPLACE, NOW)
    with pytest.raises(Exists):
        ns.rename(ROOT, b"a", ROOT, b"a", RENAME_NOREPLACE, NOW)
    ns.rename(ROOT, b"a", ROOT, b"c", RENAME_NOREPLACE, NOW)
    assert sorted(e.name for e in ns.readdir(ROOT, 0, 10)) == [b"b", b"c"]


def test_rename_exchange_files(ns: Master) -> None:
    a = mkfile(ns, ROOT, b"a")
    b = mkfile(ns, ROOT, b"b")
    assert ns.rename(ROOT, b"a", ROOT, b"b", RENAME_EXCHANGE, LATER) == []
    assert ns.lookup(ROOT, b"a").inode == b.inode and ns.lookup(ROOT, b"b").inode == a.inode
    assert ns.getattr(ino(a)).ctime_ns == ns.getattr(ino(b)).ctime_ns == LATER
    with pytest.raises(NotFound, match="exchange"):
        ns.rename(ROOT, b"a", ROOT, b"missing", RENAME_EXCHANGE, NOW)


def test_rename_exchange_directory_and_file_across_parents(ns: Master) -> None:
    p = mkdir(ns, ROOT, b"p")
    q = mkdir(ns, ROOT, b"q")
    d = mkdir(ns, ino(p), b"d")
    mkfile(ns, ino(d), b"inside")
    f = mkfile(ns, ino(q), b"f")
    assert (ns.getattr(ino(p)).nlink, ns.getattr(ino(q)).nlink) == (3, 2)
    ns.rename(ino(p), b"d", ino(q), b"f", RENAME_EXCHANGE, LATER)
    assert ns.lookup(ino(p), b"d").inode == f.inode
    assert ns.lookup(ino(q), b"f").inode == d.inode
    assert (ns.getattr(ino(p)).nlink, ns.getattr(ino(q)).nlink) == (2, 3)
    assert ns.resolve_path(b"/q/f/inside").size_bytes == 0
    # Two directories across parents: nlinks do not move.
    e = mkdir(ns, ino(p), b"e")
    ns.rename(ino(p), b"e", ino(q), b"f", RENAME_EXCHANGE, LATER)
    assert (ns.getattr(ino(p)).nlink, ns.getattr(ino(q)).nlink) == (3, 3)
    assert ns.lookup(ino(q), b"f").inode == e.inode


def test_rename_exchange_into_own_subtree_is_refused(ns: Master) -> None:
    a = mkdir(ns, ROOT, b"a")
    b = mkdir(ns, ino(a), b"b")
    with pytest.raises(InvalidArgument):
        ns.rename(ROOT, b"a", ino(a), b"b", RENAME_EXCHANGE, NOW)
    with pytest.raises(InvalidArgument):
        ns.rename(ino(a), b"b", ROOT, b"a", RENAME_EXCHANGE, NOW)
    assert ns.resolve_path(b"/a/b").inode == b.inode


# --- setattr -------------------------------------------------------------------
def test_setattr_fields(ns: Master) -> None:
    f = mkfile(ns, ROOT, b"f")
    attrs, freed = ns.setattr(ino(f), mode=0o104755, uid=3, gid=4, now_ns=LATER)
    assert freed == []
    assert attrs.mode == FileKind.REGULAR | 0o4755
    assert (attrs.uid, attrs.gid, attrs.ctime_ns, attrs.mtime_ns) == (3, 4, LATER, NOW)
    attrs, _ = ns.setattr(ino(f), atime_ns=11, mtime_ns=12, now_ns=LATER + 1)
    assert (attrs.atime_ns, attrs.mtime_ns, attrs.ctime_ns) == (11, 12, LATER + 1)
    unchanged, _ = ns.setattr(ino(f), now_ns=LATER + 2)
    assert unchanged == attrs
    d = mkdir(ns, ROOT, b"d")
    assert ns.setattr(ino(d), mode=0o700, now_ns=NOW)[0].mode == FileKind.DIRECTORY | 0o700
    with pytest.raises(NotFound):
        ns.setattr(InodeId(999), mode=0o600, now_ns=NOW)
    with pytest.raises(InvalidArgument):
        ns.setattr(ino(f), uid=-1, now_ns=NOW)


def test_setattr_size_rules(ns: Master) -> None:
    f = mkfile(ns, ROOT, b"f")
    d = mkdir(ns, ROOT, b"d")
    fifo = ns.create(ROOT, b"p", FileKind.FIFO | 0o600, 0, 0, 0, NOW)
    link = ns.symlink(ROOT, b"l", b"target", 0, 0, NOW)
    with pytest.raises(IsADirectory):
        ns.setattr(ino(d), size_bytes=0, now_ns=NOW)
    for other in (fifo, link):
        with pytest.raises(InvalidArgument):
            ns.setattr(ino(other), size_bytes=0, now_ns=NOW)
    with pytest.raises(InvalidArgument):
        ns.setattr(ino(f), size_bytes=-1, now_ns=NOW)
    with pytest.raises(FileTooLarge):
        ns.setattr(ino(f), mode=0o600, size_bytes=FILE_SIZE_BYTES_MAX + 1, now_ns=NOW)
    assert ns.getattr(ino(f)).mode == FileKind.REGULAR | 0o644  # nothing half-applied
    attrs, _ = ns.setattr(ino(f), size_bytes=FILE_SIZE_BYTES_MAX, now_ns=LATER)
    assert attrs.size_bytes == FILE_SIZE_BYTES_MAX
    assert attrs.mtime_ns == attrs.ctime_ns == LATER
    assert attrs.allocated_bytes == 0  # all hole
    attrs, _ = ns.setattr(ino(f), size_bytes=10, mtime_ns=42, now_ns=LATER + 1)
    assert (attrs.mtime_ns, attrs.ctime_ns) == (42, LATER + 1)


def test_truncate_frees_chunks_past_the_new_end(ns: Master, store: MetadataStore) -> None:
    f = mkfile(ns, ROOT, b"f")
    chunks = [add_chunk(store, ino(f), index, version=10 + index) for index in range(4)]
    ns.setattr(ino(f), size_bytes=4 * CHUNK_SIZE_BYTES, now_ns=NOW)
    assert ns.getattr(ino(f)).allocated_bytes == 4 * CHUNK_SIZE_BYTES
    # Chunk 1 straddles the new end: it stays, its tail is the master's business.
    attrs, freed = ns.setattr(ino(f), size_bytes=CHUNK_SIZE_BYTES + 100, now_ns=LATER)
    assert freed == [(chunks[2], 12), (chunks[3], 13)]
    assert attrs.size_bytes == CHUNK_SIZE_BYTES + 100
    assert attrs.allocated_bytes == CHUNK_SIZE_BYTES + 4096
    assert store.all("SELECT chunk_id, version FROM chunk_deletions ORDER BY 1") == [
        (chunks[2], 12),
        (chunks[3], 13),
    ]
    assert [r[0] for r in store.all("SELECT id FROM chunks ORDER BY id")] == chunks[:2]
    assert count(store, LIVE_REPLICAS) == 4
    assert count(store, "SELECT COUNT(*) FROM file_chunks") == 2
    # A new size exactly on a chunk boundary drops the chunk starting there.
    _, freed = ns.setattr(ino(f), size_bytes=CHUNK_SIZE_BYTES, now_ns=LATER)
    assert freed == [(chunks[1], 11)]
    # Growing frees nothing.
    assert ns.setattr(ino(f), size_bytes=3 * CHUNK_SIZE_BYTES, now_ns=LATER)[1] == []
    _, freed = ns.setattr(ino(f), size_bytes=0, now_ns=LATER)
    assert freed == [(chunks[0], 10)]
    assert count(store, LIVE_REPLICAS) == 0


def test_allocated_bytes(ns: Master, store: MetadataStore) -> None:
    f = mkfile(ns, ROOT, b"f")
    add_chunk(store, ino(f), 0)
    assert ns.setattr(ino(f), size_bytes=10, now_ns=NOW)[0].allocated_bytes == 4096
    assert ns.setattr(ino(f), size_bytes=0, now_ns=NOW)[0].allocated_bytes == 0
    g = mkfile(ns, ROOT, b"g")
    add_chunk(store, ino(g), 2)
    attrs = ns.setattr(ino(g), size_bytes=3 * CHUNK_SIZE_BYTES, now_ns=NOW)[0]
    assert attrs.allocated_bytes == CHUNK_SIZE_BYTES
    assert ns.lookup(ROOT, b"g").allocated_bytes == CHUNK_SIZE_BYTES


# --- readdir -------------------------------------------------------------------
def test_readdir_pages_and_attrs(ns: Master) -> None:
    d = mkdir(ns, ROOT, b"d")
    made = [mkfile(ns, ino(d), f"f{i}".encode()) for i in range(5)]
    entries = ns.readdir(ino(d), 0, 100)
    assert [e.name for e in entries] == [b"f0", b"f1", b"f2", b"f3", b"f4"]
    assert [e.attrs for e in entries] == made
    assert [e.cookie for e in entries] == sorted(e.cookie for e in entries)
    page = ns.readdir(ino(d), entries[1].cookie, 2)
    assert [e.name for e in page] == [b"f2", b"f3"]
    assert ns.readdir(ino(d), entries[-1].cookie, 10) == []
    assert ns.readdir(ino(d), 0, 0) == []
    assert ns.readdir(ino(mkdir(ns, ROOT, b"empty")), 0, 10) == []
    with pytest.raises(InvalidArgument):
        ns.readdir(ino(d), 0, -1)
    with pytest.raises(NotADirectory):
        ns.readdir(ino(made[0]), 0, 10)
    with pytest.raises(NotFound):
        ns.readdir(InodeId(999), 0, 10)


def test_readdir_cookies_stable_while_entries_go(ns: Master) -> None:
    d = mkdir(ns, ROOT, b"d")
    names = [f"n{i:02}".encode() for i in range(20)]
    for name in names:
        mkfile(ns, ino(d), name)
    seen: list[bytes] = []
    removed: set[bytes] = set()
    cookie = 0
    while page := ns.readdir(ino(d), cookie, 3):
        seen.extend(e.name for e in page)
        cookie = page[-1].cookie
        # Between pages: delete one entry already listed and one not yet listed.
        for victim in (page[0].name, names[-1 - len(removed) // 2]):
            if victim not in removed:
                ns.unlink(ino(d), victim, NOW)
                removed.add(victim)
        # And rename one already listed: it keeps its cookie, so it is not repeated.
        if page[-1].name not in removed:
            ns.rename(ino(d), page[-1].name, ino(d), page[-1].name + b"x", 0, NOW)
            removed.add(page[-1].name)
    assert len(seen) == len(set(seen)), "an entry was listed twice"
    survivors = [n for n in names if n not in removed]
    assert set(survivors) <= set(seen), "a survivor was skipped"


# --- xattrs --------------------------------------------------------------------
def test_xattrs(ns: Master) -> None:
    f = mkfile(ns, ROOT, b"f")
    assert ns.listxattr(ino(f)) == []
    ns.setxattr(ino(f), b"user.b", b"1", 0, LATER)
    assert ns.getattr(ino(f)).ctime_ns == LATER
    ns.setxattr(ino(f), b"user.a", b"", XATTR_CREATE, NOW)
    assert ns.listxattr(ino(f)) == [b"user.a", b"user.b"]
    assert ns.getxattr(ino(f), b"user.a") == b""
    with pytest.raises(Exists, match=r"user\.a"):
        ns.setxattr(ino(f), b"user.a", b"x", XATTR_CREATE, NOW)
    ns.setxattr(ino(f), b"user.a", b"2", XATTR_REPLACE, NOW)
    ns.setxattr(ino(f), b"user.a", b"3", 0, NOW)
    assert ns.getxattr(ino(f), b"user.a") == b"3"
    with pytest.raises(NoSuchAttribute):
        ns.setxattr(ino(f), b"user.c", b"x", XATTR_REPLACE, NOW)
    with pytest.raises(NoSuchAttribute, match=r"user\.c"):
        ns.getxattr(ino(f), b"user.c")
    ns.removexattr(ino(f), b"user.a", LATER + 1)
    assert ns.getattr(ino(f)).ctime_ns == LATER + 1
    assert ns.listxattr(ino(f)) == [b"user.b"]
    with pytest.raises(NoSuchAttribute):
        ns.removexattr(ino(f), b"user.a", NOW)


def test_xattr_limits_and_errors(ns: Master) -> None:
    f = mkfile(ns, ROOT, b"f")
    longest = b"u" * XATTR_NAME_BYTES_MAX
    ns.setxattr(ino(f), longest, b"v" * XATTR_VALUE_BYTES_MAX, 0, NOW)
    assert len(ns.getxattr(ino(f), longest)) == XATTR_VALUE_BYTES_MAX
    for name in (b"", longest + b"u"):
        with pytest.raises(RangeTooLarge):
            ns.setxattr(ino(f), name, b"v", 0, NOW)
        with pytest.raises(RangeTooLarge):
            ns.getxattr(ino(f), name)
    with pytest.raises(RangeTooLarge):
        ns.setxattr(ino(f), b"user.big", b"v" * (XATTR_VALUE_BYTES_MAX + 1), 0, NOW)
    with pytest.raises(InvalidArgument):
        ns.setxattr(ino(f), b"user.x", b"v", XATTR_CREATE | XATTR_REPLACE, NOW)
    missing_inode: list[Callable[[], Any]] = [
        lambda: ns.getxattr(InodeId(999), b"user.x"),
        lambda: ns.setxattr(InodeId(999), b"user.x", b"v", 0, NOW),
        lambda: ns.listxattr(InodeId(999)),
        lambda: ns.removexattr(InodeId(999), b"user.x", NOW),
    ]
    for call in missing_inode:
        with pytest.raises(NotFound):
            call()


# --- goal, counting, paths ----------------------------------------------------------
def test_set_goal(ns: Master) -> None:
    d = mkdir(ns, ROOT, b"d")
    sub = mkdir(ns, ino(d), b"sub")
    f = mkfile(ns, ino(sub), b"f")
    g = mkfile(ns, ino(d), b"g")
    ns.link(ino(f), ino(d), b"f-again", NOW)
    for bad in (0, GOAL_MAX + 1):
        with pytest.raises(InvalidArgument):
            ns.set_goal(ino(d), bad, True, NOW)
    with pytest.raises(NotFound):
        ns.set_goal(InodeId(999), 3, False, NOW)
    assert ns.set_goal(ino(g), 3, True, LATER) == 1
    assert ns.getattr(ino(g)).goal == 3 and ns.getattr(ino(g)).ctime_ns == LATER
    assert ns.set_goal(ino(d), 4, False, NOW) == 1
    assert ns.getattr(ino(sub)).goal == DEFAULT_GOAL
    # d already has goal 4; sub, f (two names, one inode) and g change.
    assert ns.set_goal(ino(d), 4, True, NOW) == 3
    assert {ns.getattr(i).goal for i in (ino(d), ino(sub), ino(f), ino(g))} == {4}
    assert ns.set_goal(ino(d), 4, True, NOW) == 0


def test_set_goal_deep_tree_needs_no_recursion(ns: Master) -> None:
    parent = ROOT
    with ns.store.transaction():
        for _ in range(1500):  # deeper than Python's default recursion limit
            parent = ino(ns.namespace.mkdir(parent, b"d", 0o755, 0, 0, NOW))
        ns.namespace.create(parent, b"leaf", 0o644, 0, 0, 0, NOW)
    assert ns.set_goal(ROOT, 7, True, NOW) == 1502
    assert ns.lookup(parent, b"leaf").goal == 7


def test_inode_count(ns: Master) -> None:
    d = mkdir(ns, ROOT, b"d")
    mkfile(ns, ino(d), b"f")
    ns.symlink(ROOT, b"l", b"t", 0, 0, NOW)
    assert ns.inode_count() == 4
    ns.unlink(ino(d), b"f", NOW)
    assert ns.inode_count() == 3


def test_resolve_path(ns: Master) -> None:
    a = mkdir(ns, ROOT, b"a")
    b = mkdir(ns, ino(a), b"b")
    f = mkfile(ns, ino(b), b"f")
    link = ns.symlink(ROOT, b"l", b"a", 0, 0, NOW)
    assert ns.resolve_path(b"/").inode == ROOT
    assert ns.resolve_path(b"/a/b/f") == f
    assert ns.resolve_path(b"//a///b/").inode == b.inode
    assert ns.resolve_path(b"/a/./b/..").inode == a.inode
    assert ns.resolve_path(b"/..").inode == ROOT
    assert ns.resolve_path(b"/l") == link  # not followed
    with pytest.raises(NotADirectory):
        ns.resolve_path(b"/l/b")
    with pytest.raises(NotADirectory):
        ns.resolve_path(b"/a/b/f/x")
    with pytest.raises(NotFound, match="b'x'"):
        ns.resolve_path(b"/a/x/f")
    with pytest.raises(InvalidArgument, match="absolute"):
        ns.resolve_path(b"a/b")
    with pytest.raises(NameTooLong):
        ns.resolve_path(b"/" + b"n" * 256)


# --- names -----------------------------------------------------------------------
BAD_NAMES = [
    (b"a/b", InvalidArgument),
    (b"a\x00", InvalidArgument),
    (b".", InvalidArgument),
    (b"..", InvalidArgument),
    (b"", InvalidArgument),
    (b"n" * 256, NameTooLong),
]


@pytest.mark.parametrize(("name", "error"), BAD_NAMES)
def test_name_validation(ns: Master, name: bytes, error: type[DfsError]) -> None:
    f = mkfile(ns, ROOT, b"f")
    mkdir(ns, ROOT, b"d")
    calls: list[Callable[[], Any]] = [
        lambda: ns.lookup(ROOT, name),
        lambda: ns.create(ROOT, name, 0o644, 0, 0, 0, NOW),
        lambda: ns.mkdir(ROOT, name, 0o755, 0, 0, NOW),
        lambda: ns.symlink(ROOT, name, b"t", 0, 0, NOW),
        lambda: ns.link(ino(f), ROOT, name, NOW),
        lambda: ns.unlink(ROOT, name, NOW),
        lambda: ns.rmdir(ROOT, name, NOW),
        lambda: ns.rename(ROOT, name, ROOT, b"x", 0, NOW),
        lambda: ns.rename(ROOT, b"f", ROOT, name, 0, NOW),
        lambda: ns.rename(ROOT, b"d", ROOT, name, RENAME_EXCHANGE, NOW),
    ]
    for call in calls:
        with pytest.raises(error):
            call()
    assert ns.inode_count() == 3
    # The longest legal name works.
    assert mkfile(ns, ROOT, b"n" * 255).nlink == 1


def test_failed_calls_write_nothing(store: MetadataStore) -> None:
    """Without the master's savepoint, a refused call must leave every table as it was."""
    namespace = Namespace(store)
    with store.transaction():
        d = ino(namespace.mkdir(ROOT, b"d", 0o755, 0, 0, NOW))
        f = ino(namespace.create(d, b"f", 0o644, 0, 0, 0, NOW))
        namespace.mkdir(ROOT, b"e", 0o755, 0, 0, NOW)
    add_chunk(store, f, 0)
    before = dump(store)
    failing: list[Callable[[], Any]] = [
        lambda: namespace.rmdir(ROOT, b"d", LATER),
        lambda: namespace.rename(ROOT, b"d", d, b"x", 0, LATER),
        lambda: namespace.rename(ROOT, b"e", d, b"f", 0, LATER),
        lambda: namespace.rename(d, b"f", ROOT, b"e", 0, LATER),
        lambda: namespace.rename(ROOT, b"e", ROOT, b"d", 0, LATER),
        lambda: namespace.rename(ROOT, b"d", d, b"f", RENAME_EXCHANGE, LATER),
        lambda: namespace.rename(ROOT, b"e", ROOT, b"d", RENAME_NOREPLACE, LATER),
        lambda: namespace.setattr(f, mode=0, size_bytes=-1, now_ns=LATER),
        lambda: namespace.link(d, ROOT, b"x", LATER),
        lambda: namespace.unlink(ROOT, b"d", LATER),
        lambda: namespace.setxattr(f, b"user.x", b"v", XATTR_REPLACE, LATER),
        lambda: namespace.set_goal(d, 0, True, LATER),
    ]
    with store.transaction():
        for call in failing:
            with pytest.raises(DfsError):
                call()
    assert dump(store) == before


# --- model check ---------------------------------------------------------------------
NamePath = tuple[bytes, ...]
POOL = (b"a", b"b", b"c")
FLAGS = (0, RENAME_NOREPLACE, RENAME_EXCHANGE)


def _within(path: NamePath, top: NamePath) -> bool:
    return path[: len(top)] == top


class Model:
    """The tree as a dict of paths to 'd' or 'f', with the namespace's error rules."""

    def __init__(self) -> None:
        self.kinds: dict[NamePath, str] = {(): "d"}

    def resolve(self, path: NamePath) -> NamePath:
        current: NamePath = ()
        for name in path:
            if self.kinds[current] != "d":
                raise NotADirectory()
            current = (*current, name)
            if current not in self.kinds:
                raise NotFound()
        return current

    def directory(self, path: NamePath) -> None:
        if self.kinds[path] != "d":
            raise NotADirectory()

    def has_children(self, path: NamePath) -> bool:
        return any(len(p) == len(path) + 1 and _within(p, path) for p in self.kinds)

    def make(self, parent: NamePath, name: bytes, kind: str) -> None:
        where = self.resolve(parent)
        self.directory(where)
        if (*where, name) in self.kinds:
            raise Exists()
        self.kinds[(*where, name)] = kind

    def remove(self, parent: NamePath, name: bytes, kind: str) -> None:
        where = self.resolve(parent)
        self.directory(where)
        path = (*where, name)
        if path not in self.kinds:
            raise NotFound()
        if kind == "f" and self.kinds[path] == "d":
            raise IsADirectory()
        if kind == "d" and self.kinds[path] != "d":
            raise NotADirectory()
        if kind == "d" and self.has_children(path):
            raise NotEmpty()
        del self.kinds[path]

    def rename(self, p1: NamePath, n1: bytes, p2: NamePath, n2: bytes, flags: int) -> None:
        a, b = self.resolve(p1), self.resolve(p2)
        self.directory(a)
        self.directory(b)
        src, dst = (*a, n1), (*b, n2)
        if src not in self.kinds:
            raise NotFound()
        if flags == RENAME_EXCHANGE:
            self._exchange(a, src, b, dst)
            return
        if dst in self.kinds and flags == RENAME_NOREPLACE:
            raise Exists()
        if src == dst:
            return
        if self.kinds[src] == "d" and _within(b, src):
            raise InvalidArgument()
        if dst in self.kinds:
            if self.kinds[src] == "d" and self.kinds[dst] != "d":
                raise NotADirectory()
            if self.kinds[src] != "d" and self.kinds[dst] == "d":
                raise IsADirectory()
            if self.has_children(dst):
                raise NotEmpty()
            del self.kinds[dst]
        self.kinds = {
            (dst + p[len(src) :] if _within(p, src) else p): k for p, k in self.kinds.items()
        }

    def _exchange(self, a: NamePath, src: NamePath, b: NamePath, dst: NamePath) -> None:
        if dst not in self.kinds:
            raise NotFound()
        if src == dst:
            return
        if self.kinds[src] == "d" and _within(b, src):
            raise InvalidArgument()
        if self.kinds[dst] == "d" and _within(a, dst):
            raise InvalidArgument()

        def swapped(p: NamePath) -> NamePath:
            if _within(p, src):
                return dst + p[len(src) :]
            if _within(p, dst):
                return src + p[len(dst) :]
            return p

        self.kinds = {swapped(p): k for p, k in self.kinds.items()}


def _path_bytes(path: NamePath) -> bytes:
    return b"/" + b"/".join(path)


def _apply(namespace: Namespace, op: tuple[Any, ...], now: int) -> None:
    kind = op[0]
    if kind == "rename":
        _, p1, n1, p2, n2, flags = op
        a = InodeId(namespace.resolve_path(_path_bytes(p1)).inode)
        b = InodeId(namespace.resolve_path(_path_bytes(p2)).inode)
        namespace.rename(a, n1, b, n2, flags, now)
        return
    _, parent_path, name = op
    parent = InodeId(namespace.resolve_path(_path_bytes(parent_path)).inode)
    if kind == "mkdir":
        namespace.mkdir(parent, name, 0o755, 0, 0, now)
    elif kind == "create":
        namespace.create(parent, name, 0o644, 0, 0, 0, now)
    elif kind == "unlink":
        namespace.unlink(parent, name, now)
    else:
        namespace.rmdir(parent, name, now)


def _apply_model(model: Model, op: tuple[Any, ...]) -> None:
    kind = op[0]
    if kind == "rename":
        model.rename(*op[1:])
    elif kind in ("mkdir", "create"):
        model.make(op[1], op[2], "d" if kind == "mkdir" else "f")
    else:
        model.remove(op[1], op[2], "d" if kind == "rmdir" else "f")


def _tree(namespace: Namespace) -> dict[NamePath, str]:
    found: dict[NamePath, str] = {(): "d"}
    pending: list[tuple[NamePath, InodeId]] = [((), ROOT)]
    while pending:
        path, inode = pending.pop()
        entries = namespace.readdir(inode, 0, 1000)
        subdirs = 0
        for entry in entries:
            child = (*path, entry.name)
            is_dir = entry.attrs.mode & KIND_MASK == FileKind.DIRECTORY
            found[child] = "d" if is_dir else "f"
            if is_dir:
                subdirs += 1
                pending.append((child, InodeId(entry.attrs.inode)))
            else:
                assert entry.attrs.nlink == 1
        assert namespace.getattr(inode).nlink == 2 + subdirs
    return found


_paths = st.lists(st.sampled_from(POOL), max_size=2).map(tuple)
_names = st.sampled_from(POOL)
Entry = tuple[NamePath, bytes]


def _split(path: NamePath) -> Entry:
    return path[:-1], path[-1]


def _op_strategy(model: Model) -> st.SearchStrategy[tuple[Any, ...]]:
    """Mostly paths that exist now (so calls get somewhere), sometimes arbitrary ones."""
    existing = sorted(model.kinds)
    parents = st.one_of(st.sampled_from(existing), _paths)
    entries: st.SearchStrategy[Entry] = st.tuples(_paths, _names)
    if len(existing) > 1:
        entries = st.one_of(st.sampled_from(existing[1:]).map(_split), entries)
    targets = st.one_of(entries, st.tuples(parents, _names))
    return st.one_of(
        st.tuples(st.sampled_from(["mkdir", "create"]), parents, _names),
        st.builds(lambda kind, e: (kind, *e), st.sampled_from(["unlink", "rmdir"]), entries),
        st.builds(
            lambda e, t, flags: ("rename", *e, *t, flags),
            entries,
            targets,
            st.sampled_from(FLAGS),
        ),
    )


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_namespace_matches_model(data: st.DataObject) -> None:
    with tempfile.TemporaryDirectory() as directory:
        store = MetadataStore(Path(directory) / "meta.db")
        namespace, model = Namespace(store), Model()
        try:
            # One transaction and no savepoints: a refused call that wrote
            # anything would show up as a difference from the model.
            with store.transaction():
                for step in range(data.draw(st.integers(0, 40), label="steps")):
                    op = data.draw(_op_strategy(model), label=f"op {step}")
                    expected: type[DfsError] | None = None
                    try:
                        _apply_model(model, op)
                    except DfsError as error:
                        expected = type(error)
                    got: type[DfsError] | None = None
                    try:
                        _apply(namespace, op, NOW + step)
                    except DfsError as error:
                        got = type(error)
                    assert got is expected, f"step {step} {op}: got {got}, expected {expected}"
                    assert _tree(namespace) == model.kinds, f"after step {step} {op}"
                    assert namespace.inode_count() == len(model.kinds)
                check_invariants(store)
        finally:
            store.close()
