"""Consistency checks of the metadata, for `vmstore fsck`.

Read-only: finds what is wrong and says where, never repairs. Chunk health
itself needs the master's view of live chunkservers, so this module returns
the raw rows and the master classifies them.
"""

from __future__ import annotations

from collections.abc import Callable

from vmstore.dfs.constants import PATH_DEPTH_MAX
from vmstore.dfs.metadata.store import MetadataStore
from vmstore.dfs.types import ROOT_INODE, ChunkId, InodeId, ServerId

_DIRECTORY_KIND = 0o040000


def file_chunks(store: MetadataStore) -> list[tuple[InodeId, int, ChunkId, int]]:
    """Every stored chunk of every file: (inode, index, chunk id, goal)."""
    rows = store.all(
        "SELECT f.inode_id, f.chunk_index, f.chunk_id, i.goal FROM file_chunks f"
        " JOIN inodes i ON i.id = f.inode_id ORDER BY f.inode_id, f.chunk_index"
    )
    return [(InodeId(r[0]), r[1], ChunkId(r[2]), r[3]) for r in rows]


def holders(store: MetadataStore) -> dict[ChunkId, list[ServerId]]:
    result: dict[ChunkId, list[ServerId]] = {}
    for chunk_id, server_id in store.all("SELECT chunk_id, server_id FROM replicas"):
        result.setdefault(ChunkId(chunk_id), []).append(ServerId(server_id))
    return result


def path_of(store: MetadataStore, inode: InodeId) -> str:
    """One path naming ``inode`` ("" if it has no name), by walking up the dentries."""
    parts: list[str] = []
    current = inode
    for _ in range(PATH_DEPTH_MAX):
        if current == ROOT_INODE:
            return "/" + "/".join(reversed(parts))
        row = store.one("SELECT parent_id, name FROM dentries WHERE inode_id = ? LIMIT 1",
                        (current,))
        if row is None:
            return ""
        parts.append(bytes(row[1]).decode(errors="backslashreplace"))
        current = InodeId(row[0])
    return ""


def namespace_errors(store: MetadataStore, is_open: Callable[[InodeId], bool]) -> list[str]:
    """Broken invariants of schema.py, each named with the inode it concerns.

    A file with no name is fine while a client holds it open (``is_open``).
    """
    errors = [f"dentry {name!r} in directory {parent} names missing inode {inode}"
              for parent, name, inode in store.all(
                  "SELECT d.parent_id, d.name, d.inode_id FROM dentries d"
                  " LEFT JOIN inodes i ON i.id = d.inode_id WHERE i.id IS NULL")]
    for inode, mode, nlink, names, subdirectories in store.all(
            "SELECT i.id, i.mode, i.nlink,"
            " (SELECT COUNT(*) FROM dentries d WHERE d.inode_id = i.id),"
            " (SELECT COUNT(*) FROM dentries d JOIN inodes c ON c.id = d.inode_id"
            "  WHERE d.parent_id = i.id AND (c.mode & 61440) = 16384)"
            " FROM inodes i"):
        if mode & 0o170000 == _DIRECTORY_KIND:
            if nlink != 2 + subdirectories:
                errors.append(f"directory {inode}: nlink {nlink}, expected"
                              f" {2 + subdirectories}")
        elif nlink != names and not (nlink == names == 0 and is_open(InodeId(inode))):
            errors.append(f"inode {inode}: nlink {nlink} but {names} names")
    return errors
