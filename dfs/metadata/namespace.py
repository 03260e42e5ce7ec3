"""POSIX namespace operations on the master's metadata: lookup, create, rename, xattrs.

Promise: every public method either raises a ``DfsError`` before it writes
anything, or leaves the tables keeping every invariant listed in ``schema.py``:
a directory's ``nlink`` is 2 + its subdirectories, a non-directory's is its
number of dentries, and a file that loses its last name loses its inode row,
xattrs and file_chunks, its chunks moving to ``chunk_deletions``. Methods
validate first and write last, so the caller's savepoint is a second line of
defence, not the only one.

Caveats:

* No access control: mode, uid and gid are stored, never enforced. The FUSE
  layer (``default_permissions``) checks permissions, and setgid handling
  cannot know the caller's supplementary groups.
* Synchronous, single writer: the caller owns the transaction. Nothing here
  commits, and one ``Namespace`` must not be used from two threads at once.
* Freed chunks are only *recorded* (in ``chunk_deletions``, and returned);
  telling the chunkservers is the caller's job, as is zeroing the tail of a
  chunk that straddles a new, smaller file size.
* Times come from the caller's ``now_ns``; nothing here updates atime on reads.
* readdir cookies survive the deletion of other entries, and a renamed entry
  keeps its cookie, so a listing in progress never repeats a survivor; an entry
  moved into a directory mid-listing may or may not appear (as POSIX allows).
"""

from __future__ import annotations

import stat
from collections.abc import Callable
from typing import Any

from vmstore.dfs.constants import (
    BLOCK_SIZE_BYTES,
    CHUNK_SIZE_BYTES,
    MAX_FILE_SIZE_BYTES,
    MAX_GOAL,
    MAX_NAME_BYTES,
    MAX_SYMLINK_BYTES,
    MAX_XATTR_NAME_BYTES,
    MAX_XATTR_VALUE_BYTES,
)
from vmstore.dfs.errors import (
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
from vmstore.dfs.metadata.store import MetadataStore
from vmstore.dfs.protocol.messages import DirEntry, FileAttrs
from vmstore.dfs.types import (
    RENAME_EXCHANGE,
    RENAME_NOREPLACE,
    ROOT_INODE,
    XATTR_CREATE,
    XATTR_REPLACE,
    ChunkId,
    ChunkVersion,
    FileKind,
    InodeId,
)

FreedChunks = list[tuple[ChunkId, ChunkVersion]]

_KIND_MASK = 0o170000
_PERMISSION_MASK = 0o7777
_SET_GID = 0o2000
_CREATABLE_KINDS = frozenset(
    {
        FileKind.REGULAR,
        FileKind.FIFO,
        FileKind.SOCKET,
        FileKind.CHARACTER_DEVICE,
        FileKind.BLOCK_DEVICE,
    }
)
_DEVICE_KINDS = frozenset({FileKind.CHARACTER_DEVICE, FileKind.BLOCK_DEVICE})

# The chunk count rides in the same statement as the row (a COUNT over the
# file_chunks primary-key prefix), so a readdir page costs one query.
_ATTR_COLUMNS = (
    "i.id, i.mode, i.nlink, i.uid, i.gid, i.rdev, i.size_bytes, i.atime_ns, i.mtime_ns,"
    " i.ctime_ns, i.goal, (SELECT COUNT(*) FROM file_chunks AS f WHERE f.inode_id = i.id)"
)


def _kind(mode: int) -> int:
    return mode & _KIND_MASK


def _is_dir(mode: int) -> bool:
    return _kind(mode) == FileKind.DIRECTORY


def _attrs_from_row(row: tuple[Any, ...]) -> FileAttrs:
    """FileAttrs from the ``_ATTR_COLUMNS`` of one inode."""
    (inode, mode, nlink, uid, gid, rdev, size, atime, mtime, ctime, goal, chunk_count) = row
    allocated = 0
    if _kind(mode) == FileKind.REGULAR:
        # Holes cost nothing, and the last chunk is only used up to the size.
        rounded = -(-size // BLOCK_SIZE_BYTES) * BLOCK_SIZE_BYTES
        allocated = min(rounded, chunk_count * CHUNK_SIZE_BYTES)
    return FileAttrs(
        inode=inode,
        mode=mode,
        nlink=nlink,
        uid=uid,
        gid=gid,
        rdev=rdev,
        size_bytes=size,
        allocated_bytes=allocated,
        atime_ns=atime,
        mtime_ns=mtime,
        ctime_ns=ctime,
        goal=goal,
    )


def _check_name(name: bytes) -> None:
    if not name:
        raise InvalidArgument("empty name")
    if len(name) > MAX_NAME_BYTES:
        raise NameTooLong(f"name {name[:32]!r}... is {len(name)} bytes, over {MAX_NAME_BYTES}")
    if b"/" in name or b"\x00" in name:
        raise InvalidArgument(f"name {name!r} contains '/' or NUL")
    if name in (b".", b".."):
        raise InvalidArgument(f"name {name!r} is reserved")


def _check_owner(uid: int | None, gid: int | None) -> None:
    for value, what in ((uid, "uid"), (gid, "gid")):
        if value is not None and value < 0:
            raise InvalidArgument(f"{what} {value} is negative")


def _check_xattr_name(name: bytes) -> None:
    if not 1 <= len(name) <= MAX_XATTR_NAME_BYTES:
        raise RangeTooLarge(f"xattr name of {len(name)} bytes is outside 1..{MAX_XATTR_NAME_BYTES}")
    if b"\x00" in name:
        raise InvalidArgument(f"xattr name {name!r} contains NUL")


class Namespace:
    """The directory tree, inodes and xattrs of one ``MetadataStore``."""

    def __init__(self, store: MetadataStore,
                 is_open: Callable[[InodeId], bool] = lambda inode: False) -> None:
        self._store = store
        # Whether some client has the file open (the master's in-memory holds).
        self.is_open = is_open

    @property
    def store(self) -> MetadataStore:
        return self._store

    # --- reading -------------------------------------------------------------
    def getattr(self, inode: InodeId) -> FileAttrs:
        row = self._store.one(f"SELECT {_ATTR_COLUMNS} FROM inodes AS i WHERE i.id = ?", (inode,))
        if row is None:
            raise NotFound(f"no inode {inode}")
        return _attrs_from_row(row)

    def lookup(self, parent: InodeId, name: bytes) -> FileAttrs:
        _check_name(name)
        self._directory(parent)
        return self._existing_child(parent, name)

    def readlink(self, inode: InodeId) -> bytes:
        row = self._store.one("SELECT mode, target FROM inodes WHERE id = ?", (inode,))
        if row is None:
            raise NotFound(f"no inode {inode}")
        if _kind(row[0]) != FileKind.SYMLINK:
            raise InvalidArgument(f"inode {inode} is not a symlink")
        return bytes(row[1])

    def readdir(self, inode: InodeId, after_cookie: int, limit: int) -> list[DirEntry]:
        """Entries with cookie > ``after_cookie`` in cookie order; no '.' or '..'."""
        if limit < 0:
            raise InvalidArgument(f"readdir limit {limit} is negative")
        self._directory(inode)
        rows = self._store.all(
            f"SELECT d.name, d.cookie, {_ATTR_COLUMNS} FROM dentries AS d"
            " JOIN inodes AS i ON i.id = d.inode_id"
            " WHERE d.parent_id = ? AND d.cookie > ? ORDER BY d.cookie LIMIT ?",
            (inode, after_cookie, limit),
        )
        return [
            DirEntry(name=bytes(row[0]), cookie=row[1], attrs=_attrs_from_row(row[2:]))
            for row in rows
        ]

    def inode_count(self) -> int:
        row = self._store.one("SELECT COUNT(*) FROM inodes")
        assert row is not None
        return int(row[0])

    def resolve_path(self, path: bytes) -> FileAttrs:
        """The node at absolute ``path``; symlinks are not followed, '//' and '.' are no-ops."""
        if not path.startswith(b"/"):
            raise InvalidArgument(f"path {path!r} is not absolute")
        current = self.getattr(ROOT_INODE)
        for component in path.split(b"/"):
            if not component:
                continue
            if not _is_dir(current.mode):
                raise NotADirectory(f"inode {current.inode} in path {path!r} is not a directory")
            if component == b".":
                continue
            if component == b"..":
                current = self.getattr(self._parent_of(InodeId(current.inode)))
                continue
            _check_name(component)
            child = self._child(InodeId(current.inode), component)
            if child is None:
                raise NotFound(
                    f"no entry {component!r} in directory {current.inode} (path {path!r})"
                )
            current = child
        return current

    # --- creating ------------------------------------------------------------
    def create(
        self,
        parent: InodeId,
        name: bytes,
        mode: int,
        uid: int,
        gid: int,
        rdev: int,
        now_ns: int,
    ) -> FileAttrs:
        """A regular file, fifo, socket or device node; kind 0 in ``mode`` means regular."""
        kind = _kind(mode) or FileKind.REGULAR
        if kind not in _CREATABLE_KINDS:
            raise InvalidArgument(
                f"create cannot make {name!r} with kind {kind:#o}; use mkdir or symlink"
            )
        if rdev < 0:
            raise InvalidArgument(f"device number {rdev} is negative")
        return self._new_node(
            parent,
            name,
            kind | (mode & _PERMISSION_MASK),
            uid,
            gid,
            rdev=rdev if kind in _DEVICE_KINDS else 0,
            target=None,
            now_ns=now_ns,
        )

    def mkdir(
        self, parent: InodeId, name: bytes, mode: int, uid: int, gid: int, now_ns: int
    ) -> FileAttrs:
        mode = FileKind.DIRECTORY | (mode & _PERMISSION_MASK)
        return self._new_node(parent, name, mode, uid, gid, rdev=0, target=None, now_ns=now_ns)

    def symlink(
        self, parent: InodeId, name: bytes, target: bytes, uid: int, gid: int, now_ns: int
    ) -> FileAttrs:
        if not target:
            raise InvalidArgument(f"symlink {name!r} has an empty target")
        if len(target) > MAX_SYMLINK_BYTES:
            raise RangeTooLarge(
                f"symlink target of {len(target)} bytes is over {MAX_SYMLINK_BYTES}"
            )
        if b"\x00" in target:
            raise InvalidArgument(f"symlink target {target!r} contains NUL")
        mode = FileKind.SYMLINK | 0o777
        return self._new_node(parent, name, mode, uid, gid, rdev=0, target=target, now_ns=now_ns)

    def link(self, inode: InodeId, new_parent: InodeId, new_name: bytes, now_ns: int) -> FileAttrs:
        _check_name(new_name)
        attrs = self.getattr(inode)
        if _is_dir(attrs.mode):
            # POSIX link(2) answers EPERM for directories: they must keep one name.
            raise PermissionDenied(f"inode {inode} is a directory and cannot be hard-linked")
        self._directory(new_parent)
        if self._child(new_parent, new_name) is not None:
            raise Exists(f"entry {new_name!r} already exists in directory {new_parent}")
        self._store.execute(
            "INSERT INTO dentries(parent_id, name, inode_id) VALUES (?, ?, ?)",
            (new_parent, new_name, inode),
        )
        self._store.execute(
            "UPDATE inodes SET nlink = nlink + 1, ctime_ns = ? WHERE id = ?", (now_ns, inode)
        )
        self._touch(new_parent, now_ns)
        return self.getattr(inode)

    # --- removing ------------------------------------------------------------
    def unlink(self, parent: InodeId, name: bytes, now_ns: int) -> FreedChunks:
        """Remove a non-directory's name; returns its chunks if that was its last name."""
        _check_name(name)
        self._directory(parent)
        child = self._existing_child(parent, name)
        if _is_dir(child.mode):
            raise IsADirectory(f"entry {name!r} in directory {parent} is a directory")
        self._delete_dentry(parent, name)
        self._touch(parent, now_ns)
        return self._drop_file_link(InodeId(child.inode), now_ns)

    def rmdir(self, parent: InodeId, name: bytes, now_ns: int) -> None:
        _check_name(name)
        self._directory(parent)
        child = self._existing_child(parent, name)
        if not _is_dir(child.mode):
            raise NotADirectory(f"entry {name!r} in directory {parent} is not a directory")
        if self._has_children(InodeId(child.inode)):
            raise NotEmpty(f"directory {name!r} in directory {parent} is not empty")
        self._delete_dentry(parent, name)
        self._touch(parent, now_ns, nlink_delta=-1)
        self._delete_directory_inode(InodeId(child.inode))

    # --- rename --------------------------------------------------------------
    def rename(
        self,
        parent: InodeId,
        name: bytes,
        new_parent: InodeId,
        new_name: bytes,
        flags: int,
        now_ns: int,
    ) -> FreedChunks:
        """rename(2)/renameat2(2); returns the chunks of a replaced file that lost its last name."""
        _check_name(name)
        _check_name(new_name)
        if flags not in (0, RENAME_NOREPLACE, RENAME_EXCHANGE):
            raise InvalidArgument(f"rename flags {flags:#x} are not supported")
        self._directory(parent)
        self._directory(new_parent)
        source = self._existing_child(parent, name)
        target = self._child(new_parent, new_name)
        if flags == RENAME_EXCHANGE:
            if target is None:
                raise NotFound(f"no entry {new_name!r} in directory {new_parent} to exchange with")
            self._exchange(parent, name, source, new_parent, new_name, target, now_ns)
            return []
        if target is not None and flags == RENAME_NOREPLACE:
            raise Exists(f"entry {new_name!r} already exists in directory {new_parent}")
        if target is not None and target.inode == source.inode:
            # Two names of one inode (or one name twice): POSIX says do nothing.
            return []
        if _is_dir(source.mode) and self._in_subtree(new_parent, InodeId(source.inode)):
            raise InvalidArgument(
                f"cannot move directory {name!r} (inode {source.inode}) into its own subtree"
            )
        if target is not None:
            self._check_replaceable(source, target, new_name, new_parent)
        freed: FreedChunks = []
        if target is not None:
            freed = self._remove_replaced(new_parent, new_name, target, now_ns)
        self._store.execute(
            "UPDATE dentries SET parent_id = ?, name = ? WHERE parent_id = ? AND name = ?",
            (new_parent, new_name, parent, name),
        )
        moved_dirs = 1 if _is_dir(source.mode) and parent != new_parent else 0
        self._touch(parent, now_ns, nlink_delta=-moved_dirs)
        self._touch(new_parent, now_ns, nlink_delta=moved_dirs)
        self._touch_ctime(InodeId(source.inode), now_ns)
        return freed

    def _exchange(
        self,
        parent: InodeId,
        name: bytes,
        source: FileAttrs,
        new_parent: InodeId,
        new_name: bytes,
        target: FileAttrs,
        now_ns: int,
    ) -> None:
        if source.inode == target.inode:
            return
        if _is_dir(source.mode) and self._in_subtree(new_parent, InodeId(source.inode)):
            raise InvalidArgument(f"cannot exchange directory {name!r} into its own subtree")
        if _is_dir(target.mode) and self._in_subtree(parent, InodeId(target.inode)):
            raise InvalidArgument(f"cannot exchange directory {new_name!r} into its own subtree")
        for directory, entry, inode in (
            (parent, name, target.inode),
            (new_parent, new_name, source.inode),
        ):
            self._store.execute(
                "UPDATE dentries SET inode_id = ? WHERE parent_id = ? AND name = ?",
                (inode, directory, entry),
            )
        # Directories leaving ``parent`` for ``new_parent``, minus those coming back.
        moved_dirs = 0
        if parent != new_parent:
            moved_dirs = int(_is_dir(source.mode)) - int(_is_dir(target.mode))
        self._touch(parent, now_ns, nlink_delta=-moved_dirs)
        self._touch(new_parent, now_ns, nlink_delta=moved_dirs)
        self._touch_ctime(InodeId(source.inode), now_ns)
        self._touch_ctime(InodeId(target.inode), now_ns)

    def _check_replaceable(
        self, source: FileAttrs, target: FileAttrs, new_name: bytes, new_parent: InodeId
    ) -> None:
        where = f"entry {new_name!r} in directory {new_parent}"
        if _is_dir(source.mode) and not _is_dir(target.mode):
            raise NotADirectory(f"cannot replace {where} with a directory: it is not one")
        if not _is_dir(source.mode) and _is_dir(target.mode):
            raise IsADirectory(f"cannot replace {where} with a non-directory: it is a directory")
        if _is_dir(target.mode) and self._has_children(InodeId(target.inode)):
            raise NotEmpty(f"cannot replace {where}: directory not empty")

    def _remove_replaced(
        self, new_parent: InodeId, new_name: bytes, target: FileAttrs, now_ns: int
    ) -> FreedChunks:
        self._delete_dentry(new_parent, new_name)
        if _is_dir(target.mode):
            self._touch(new_parent, now_ns, nlink_delta=-1)
            self._delete_directory_inode(InodeId(target.inode))
            return []
        return self._drop_file_link(InodeId(target.inode), now_ns)

    # --- attributes ----------------------------------------------------------
    def setattr(
        self,
        inode: InodeId,
        *,
        mode: int | None = None,
        uid: int | None = None,
        gid: int | None = None,
        size_bytes: int | None = None,
        atime_ns: int | None = None,
        mtime_ns: int | None = None,
        now_ns: int,
    ) -> tuple[FileAttrs, FreedChunks]:
        """Change the fields given; returns the new attrs and chunks freed by a shrink."""
        attrs = self.getattr(inode)
        _check_owner(uid, gid)
        if size_bytes is not None:
            self._check_new_size(attrs, size_bytes)
        changes: dict[str, int] = {}
        if mode is not None:
            changes["mode"] = _kind(attrs.mode) | (mode & _PERMISSION_MASK)
        for column, value in (("uid", uid), ("gid", gid), ("atime_ns", atime_ns)):
            if value is not None:
                changes[column] = value
        if mtime_ns is not None:
            changes["mtime_ns"] = mtime_ns
        freed: FreedChunks = []
        if size_bytes is not None:
            changes["size_bytes"] = size_bytes
            if size_bytes != attrs.size_bytes and mtime_ns is None:
                changes["mtime_ns"] = now_ns
            # Chunks starting at or past the new end go, whatever size was on
            # record: a writer's last writes may reach past it, not yet told
            # (write-behind), and must not come back past a truncate. A
            # straddling chunk keeps its data until the master zeroes its tail.
            first_dropped = -(-size_bytes // CHUNK_SIZE_BYTES)
            freed = self._free_chunks(inode, first_dropped)
        if not changes:
            return attrs, freed
        changes["ctime_ns"] = now_ns
        # Column names come from the literals above, never from the caller.
        assignments = ", ".join(f"{column} = ?" for column in changes)
        self._store.execute(
            f"UPDATE inodes SET {assignments} WHERE id = ?", (*changes.values(), inode)
        )
        return self.getattr(inode), freed

    def _check_new_size(self, attrs: FileAttrs, size_bytes: int) -> None:
        if _is_dir(attrs.mode):
            raise IsADirectory(f"inode {attrs.inode} is a directory; its size cannot be set")
        if _kind(attrs.mode) != FileKind.REGULAR:
            raise InvalidArgument(f"inode {attrs.inode} is not a regular file; size is fixed")
        if size_bytes < 0:
            raise InvalidArgument(f"size {size_bytes} of inode {attrs.inode} is negative")
        if size_bytes > MAX_FILE_SIZE_BYTES:
            raise FileTooLarge(
                f"size {size_bytes} of inode {attrs.inode} is over {MAX_FILE_SIZE_BYTES}"
            )

    def set_goal(self, inode: InodeId, goal: int, recursive: bool, now_ns: int) -> int:
        """Set the replication goal; returns how many inodes had another goal before."""
        if not 1 <= goal <= MAX_GOAL:
            raise InvalidArgument(f"goal {goal} is outside 1..{MAX_GOAL}")
        attrs = self.getattr(inode)
        changed = self._store.execute(
            "UPDATE inodes SET goal = ?, ctime_ns = ? WHERE id = ? AND goal != ?",
            (goal, now_ns, inode, goal),
        ).rowcount
        if not (recursive and _is_dir(attrs.mode)):
            return changed
        changed += self._set_goal_of_children(inode, goal, now_ns)
        # Depth-first with one frame per level, (directory, cookie of the last
        # subdirectory entered): the stack grows with the tree's depth, never
        # with its width, and Python's recursion limit never comes into it.
        stack: list[tuple[InodeId, int]] = [(inode, 0)]
        while stack:
            directory, after_cookie = stack[-1]
            row = self._store.one(
                "SELECT d.cookie, d.inode_id FROM dentries AS d JOIN inodes AS i"
                " ON i.id = d.inode_id WHERE d.parent_id = ? AND d.cookie > ?"
                " AND (i.mode & ?) = ? ORDER BY d.cookie LIMIT 1",
                (directory, after_cookie, _KIND_MASK, FileKind.DIRECTORY),
            )
            if row is None:
                stack.pop()
                continue
            stack[-1] = (directory, row[0])
            child = InodeId(row[1])
            changed += self._set_goal_of_children(child, goal, now_ns)
            stack.append((child, 0))
        return changed

    def _set_goal_of_children(self, directory: InodeId, goal: int, now_ns: int) -> int:
        # A file hard-linked in two places is counted once: the second time
        # round its goal already matches.
        return self._store.execute(
            "UPDATE inodes SET goal = ?, ctime_ns = ? WHERE goal != ?"
            " AND id IN (SELECT inode_id FROM dentries WHERE parent_id = ?)",
            (goal, now_ns, goal, directory),
        ).rowcount

    # --- xattrs --------------------------------------------------------------
    def getxattr(self, inode: InodeId, name: bytes) -> bytes:
        _check_xattr_name(name)
        self.getattr(inode)
        row = self._store.one(
            "SELECT value FROM xattrs WHERE inode_id = ? AND name = ?", (inode, name)
        )
        if row is None:
            raise NoSuchAttribute(f"no xattr {name!r} on inode {inode}")
        return bytes(row[0])

    def setxattr(self, inode: InodeId, name: bytes, value: bytes, flags: int, now_ns: int) -> None:
        _check_xattr_name(name)
        if len(value) > MAX_XATTR_VALUE_BYTES:
            raise RangeTooLarge(
                f"xattr {name!r} value of {len(value)} bytes is over {MAX_XATTR_VALUE_BYTES}"
            )
        if flags not in (0, XATTR_CREATE, XATTR_REPLACE):
            raise InvalidArgument(f"setxattr flags {flags:#x} are not supported")
        self.getattr(inode)
        present = self._has_xattr(inode, name)
        if flags == XATTR_CREATE and present:
            raise Exists(f"xattr {name!r} already exists on inode {inode}")
        if flags == XATTR_REPLACE and not present:
            raise NoSuchAttribute(f"no xattr {name!r} on inode {inode} to replace")
        self._store.execute(
            "INSERT OR REPLACE INTO xattrs(inode_id, name, value) VALUES (?, ?, ?)",
            (inode, name, value),
        )
        self._touch_ctime(inode, now_ns)

    def listxattr(self, inode: InodeId) -> list[bytes]:
        self.getattr(inode)
        rows = self._store.all("SELECT name FROM xattrs WHERE inode_id = ? ORDER BY name", (inode,))
        return [bytes(row[0]) for row in rows]

    def removexattr(self, inode: InodeId, name: bytes, now_ns: int) -> None:
        _check_xattr_name(name)
        self.getattr(inode)
        if not self._has_xattr(inode, name):
            raise NoSuchAttribute(f"no xattr {name!r} on inode {inode}")
        self._store.execute("DELETE FROM xattrs WHERE inode_id = ? AND name = ?", (inode, name))
        self._touch_ctime(inode, now_ns)

    def _has_xattr(self, inode: InodeId, name: bytes) -> bool:
        row = self._store.one("SELECT 1 FROM xattrs WHERE inode_id = ? AND name = ?", (inode, name))
        return row is not None

    # --- helpers -------------------------------------------------------------
    def _directory(self, inode: InodeId) -> FileAttrs:
        attrs = self.getattr(inode)
        if not _is_dir(attrs.mode):
            raise NotADirectory(f"inode {inode} is not a directory")
        return attrs

    def _child(self, parent: InodeId, name: bytes) -> FileAttrs | None:
        row = self._store.one(
            f"SELECT {_ATTR_COLUMNS} FROM dentries AS d JOIN inodes AS i ON i.id = d.inode_id"
            " WHERE d.parent_id = ? AND d.name = ?",
            (parent, name),
        )
        return None if row is None else _attrs_from_row(row)

    def _existing_child(self, parent: InodeId, name: bytes) -> FileAttrs:
        child = self._child(parent, name)
        if child is None:
            raise NotFound(f"no entry {name!r} in directory {parent}")
        return child

    def _has_children(self, directory: InodeId) -> bool:
        row = self._store.one("SELECT 1 FROM dentries WHERE parent_id = ? LIMIT 1", (directory,))
        return row is not None

    def _parent_of(self, directory: InodeId) -> InodeId:
        if directory == ROOT_INODE:
            return ROOT_INODE
        row = self._store.one("SELECT parent_id FROM dentries WHERE inode_id = ?", (directory,))
        assert row is not None, f"directory {directory} has no dentry"
        return InodeId(row[0])

    def under(self, inode: InodeId, top: InodeId) -> bool | None:
        """Whether ``inode`` is directory ``top`` or below it (a file: by any of its
        names); None for a file with no name left (unlinked, still open)."""
        kind = _kind(self.getattr(inode).mode)
        if kind == FileKind.DIRECTORY:
            return self._in_subtree(inode, top)
        parents = self._store.all("SELECT parent_id FROM dentries WHERE inode_id = ?", (inode,))
        if not parents:
            return None
        return any(self._in_subtree(InodeId(row[0]), top) for row in parents)

    def _in_subtree(self, inode: InodeId, top: InodeId) -> bool:
        """Whether directory ``inode`` is ``top`` or below it."""
        current = inode
        seen: set[InodeId] = set()
        while current != top:
            if current == ROOT_INODE:
                return False
            assert current not in seen, f"dentries form a cycle through directory {current}"
            seen.add(current)
            current = self._parent_of(current)
        return True

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
        _check_name(name)
        _check_owner(uid, gid)
        parent_attrs = self._directory(parent)
        if self._child(parent, name) is not None:
            raise Exists(f"entry {name!r} already exists in directory {parent}")
        is_dir = _is_dir(mode)
        if parent_attrs.mode & _SET_GID:
            # BSD group semantics: a setgid directory hands down its group,
            # and its setgid bit to subdirectories, so the whole tree shares it.
            gid = parent_attrs.gid
            if is_dir:
                mode |= _SET_GID
        cursor = self._store.execute(
            "INSERT INTO inodes(mode, nlink, uid, gid, rdev, size_bytes, atime_ns, mtime_ns,"
            " ctime_ns, goal, target) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                mode,
                2 if is_dir else 1,
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
        self._touch(parent, now_ns, nlink_delta=1 if is_dir else 0)
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
