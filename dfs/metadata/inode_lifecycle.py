"""Inodes coming and going: a new node with its dentry, the loss of a link,
the deletion of a file with its chunks (recorded in ``chunk_deletions``), and
orphans, the open files that lost their last name.

Mixed into ``Namespace``; the invariants it keeps are those of ``schema.py``.
"""

from __future__ import annotations

import stat
from collections.abc import Callable

from vmstore.dfs.errors import Exists
from vmstore.dfs.metadata.inode_rows import SET_GID, FreedChunks, check_name, check_owner, is_dir
from vmstore.dfs.metadata.store import MetadataStore
from vmstore.dfs.protocol.messages import FileAttrs
from vmstore.dfs.types import ChunkId, ChunkVersion, InodeId


class InodeLifecycle:
    """Creation and deletion of inodes and dentries, for ``Namespace``'s operations."""

    # Provided by Namespace.
    _store: MetadataStore
    is_open: Callable[[InodeId], bool]
    getattr: Callable[[InodeId], FileAttrs]
    _directory: Callable[[InodeId], FileAttrs]
    _child: Callable[[InodeId, bytes], FileAttrs | None]

    def _new_node(
        self,
        parent: InodeId,
        name: bytes,
        mode: int,
        uid: int,
        gid: int,
        *,
        rdev: int,
        target: bytes | None,
        now_ns: int,
    ) -> FileAttrs:
        check_name(name)
        check_owner(uid, gid)
        parent_attrs = self._directory(parent)
        if self._child(parent, name) is not None:
            raise Exists(f"entry {name!r} already exists in directory {parent}")
        making_dir = is_dir(mode)
        if parent_attrs.mode & SET_GID:
            # BSD group semantics: a setgid directory hands down its group,
            # and its setgid bit to subdirectories, so the whole tree shares it.
            gid = parent_attrs.gid
            if making_dir:
                mode |= SET_GID
        cursor = self._store.execute(
            "INSERT INTO inodes(mode, nlink, uid, gid, rdev, size_bytes, atime_ns, mtime_ns,"
            " ctime_ns, goal, target) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                mode,
                2 if making_dir else 1,
                uid,
                gid,
                rdev,
                len(target) if target is not None else 0,
                now_ns,
                now_ns,
                now_ns,
                parent_attrs.goal,
                target,
            ),
        )
        assert cursor.lastrowid is not None
        inode = InodeId(cursor.lastrowid)
        self._store.execute(
            "INSERT INTO dentries(parent_id, name, inode_id) VALUES (?, ?, ?)",
            (parent, name, inode),
        )
        self._touch(parent, now_ns, nlink_delta=1 if making_dir else 0)
        return self.getattr(inode)

    def _delete_dentry(self, parent: InodeId, name: bytes) -> None:
        self._store.execute("DELETE FROM dentries WHERE parent_id = ? AND name = ?", (parent, name))

    def _touch(self, directory: InodeId, now_ns: int, nlink_delta: int = 0) -> None:
        """A directory's entries changed: new mtime/ctime, and subdirectories gained or lost."""
        self._store.execute(
            "UPDATE inodes SET mtime_ns = ?, ctime_ns = ?, nlink = nlink + ? WHERE id = ?",
            (now_ns, now_ns, nlink_delta, directory),
        )

    def _touch_ctime(self, inode: InodeId, now_ns: int) -> None:
        self._store.execute("UPDATE inodes SET ctime_ns = ? WHERE id = ?", (now_ns, inode))

    def _drop_file_link(self, inode: InodeId, now_ns: int) -> FreedChunks:
        """One dentry of a non-directory is gone; delete the file with its last one."""
        row = self._store.one("SELECT nlink FROM inodes WHERE id = ?", (inode,))
        assert row is not None, f"inode {inode} vanished while losing a link"
        if row[0] > 1:
            self._store.execute(
                "UPDATE inodes SET nlink = nlink - 1, ctime_ns = ? WHERE id = ?", (now_ns, inode)
            )
            return []
        if self.is_open(inode):
            # POSIX: an open file outlives its last name. It stays, nameless
            # (nlink 0), until ``delete_orphan`` when the last holder closes it.
            self._store.execute(
                "UPDATE inodes SET nlink = 0, ctime_ns = ? WHERE id = ?", (now_ns, inode)
            )
            return []
        return self._delete_file_inode(inode)

    def _delete_file_inode(self, inode: InodeId) -> FreedChunks:
        freed = self._free_chunks(inode, 0)
        self._store.execute("DELETE FROM xattrs WHERE inode_id = ?", (inode,))
        self._store.execute("DELETE FROM inodes WHERE id = ?", (inode,))
        return freed

    def delete_orphan(self, inode: InodeId) -> FreedChunks:
        """Delete a file that lost its last name while open, once nobody holds it."""
        row = self._store.one("SELECT nlink, mode FROM inodes WHERE id = ?", (inode,))
        if row is None or row[0] > 0 or self.is_open(inode):
            return []  # gone already, linked again, or opened again meanwhile
        assert stat.S_ISDIR(row[1]) is False, f"directory {inode} cannot be an orphan"
        return self._delete_file_inode(inode)

    def orphans(self) -> list[InodeId]:
        return [InodeId(row[0]) for row in self._store.all("SELECT id FROM inodes WHERE nlink = 0")]

    def _delete_directory_inode(self, inode: InodeId) -> None:
        self._store.execute("DELETE FROM xattrs WHERE inode_id = ?", (inode,))
        self._store.execute("DELETE FROM inodes WHERE id = ?", (inode,))

    def _free_chunks(self, inode: InodeId, first_index: int) -> FreedChunks:
        """Move the file's chunks from ``first_index`` on to ``chunk_deletions``."""
        selection = "SELECT chunk_id FROM file_chunks WHERE inode_id = ? AND chunk_index >= ?"
        parameters = (inode, first_index)
        rows = self._store.all(
            "SELECT c.id, c.version FROM file_chunks AS f JOIN chunks AS c ON c.id = f.chunk_id"
            " WHERE f.inode_id = ? AND f.chunk_index >= ? ORDER BY f.chunk_index",
            parameters,
        )
        freed = [(ChunkId(row[0]), ChunkVersion(row[1])) for row in rows]
        self._store.execute(
            "INSERT INTO chunk_deletions(chunk_id, version) SELECT c.id, c.version"
            f" FROM chunks AS c WHERE c.id IN ({selection})",
            parameters,
        )
        # The replicas rows stay: they say where the deletes must be sent.
        self._store.execute(f"DELETE FROM chunks WHERE id IN ({selection})", parameters)
        self._store.execute(
            "DELETE FROM file_chunks WHERE inode_id = ? AND chunk_index >= ?", parameters
        )
        return freed
