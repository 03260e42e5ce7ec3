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

The class is in three parts: the operations here, the xattr calls
(``xattrs.py``) and the making and deleting of inodes (``inode_lifecycle.py``);
``inode_rows.py`` reads inode rows and checks names.
"""

from __future__ import annotations

from collections.abc import Callable

from vmstore.dfs.constants import (
    CHUNK_SIZE_BYTES,
    FILE_SIZE_BYTES_MAX,
    GOAL_MAX,
    SYMLINK_BYTES_MAX,
)
from vmstore.dfs.errors import (
    Exists,
    FileTooLarge,
    InvalidArgument,
    IsADirectory,
    NotADirectory,
    NotEmpty,
    NotFound,
    PermissionDenied,
    RangeTooLarge,
)
from vmstore.dfs.metadata.inode_lifecycle import InodeLifecycle
from vmstore.dfs.metadata.inode_rows import (
    ATTR_COLUMNS,
    CREATABLE_KINDS,
    DEVICE_KINDS,
    KIND_MASK,
    PERMISSION_MASK,
    FreedChunks,
    attrs_from_row,
    check_name,
    check_owner,
    is_dir,
    kind_of,
)
from vmstore.dfs.metadata.store import MetadataStore
from vmstore.dfs.metadata.xattrs import XattrOps
from vmstore.dfs.protocol.messages import DirEntry, FileAttrs
from vmstore.dfs.types import (
    RENAME_EXCHANGE,
    RENAME_NOREPLACE,
    ROOT_INODE,
    FileKind,
    InodeId,
)


class Namespace(XattrOps, InodeLifecycle):
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
        row = self._store.one(f"SELECT {ATTR_COLUMNS} FROM inodes AS i WHERE i.id = ?", (inode,))
        if row is None:
            raise NotFound(f"no inode {inode}")
        return attrs_from_row(row)

    def lookup(self, parent: InodeId, name: bytes) -> FileAttrs:
        check_name(name)
        self._directory(parent)
        return self._existing_child(parent, name)

    def readlink(self, inode: InodeId) -> bytes:
        row = self._store.one("SELECT mode, target FROM inodes WHERE id = ?", (inode,))
        if row is None:
            raise NotFound(f"no inode {inode}")
        if kind_of(row[0]) != FileKind.SYMLINK:
            raise InvalidArgument(f"inode {inode} is not a symlink")
        return bytes(row[1])

    def readdir(self, inode: InodeId, after_cookie: int, limit: int) -> list[DirEntry]:
        """Entries with cookie > ``after_cookie`` in cookie order; no '.' or '..'."""
        if limit < 0:
            raise InvalidArgument(f"readdir limit {limit} is negative")
        self._directory(inode)
        rows = self._store.all(
            f"SELECT d.name, d.cookie, {ATTR_COLUMNS} FROM dentries AS d"
            " JOIN inodes AS i ON i.id = d.inode_id"
            " WHERE d.parent_id = ? AND d.cookie > ? ORDER BY d.cookie LIMIT ?",
            (inode, after_cookie, limit),
        )
        return [
            DirEntry(name=bytes(row[0]), cookie=row[1], attrs=attrs_from_row(row[2:]))
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
            if not is_dir(current.mode):
                raise NotADirectory(f"inode {current.inode} in path {path!r} is not a directory")
            if component == b".":
                continue
            if component == b"..":
                current = self.getattr(self._parent_of(InodeId(current.inode)))
                continue
            check_name(component)
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
        kind = kind_of(mode) or FileKind.REGULAR
        if kind not in CREATABLE_KINDS:
            raise InvalidArgument(
                f"create cannot make {name!r} with kind {kind:#o}; use mkdir or symlink"
            )
        if rdev < 0:
            raise InvalidArgument(f"device number {rdev} is negative")
        return self._new_node(
            parent,
            name,
            kind | (mode & PERMISSION_MASK),
            uid,
            gid,
            rdev=rdev if kind in DEVICE_KINDS else 0,
            target=None,
            now_ns=now_ns,
        )

    def mkdir(
        self, parent: InodeId, name: bytes, mode: int, uid: int, gid: int, now_ns: int
    ) -> FileAttrs:
        mode = FileKind.DIRECTORY | (mode & PERMISSION_MASK)
        return self._new_node(parent, name, mode, uid, gid, rdev=0, target=None, now_ns=now_ns)

    def symlink(
        self, parent: InodeId, name: bytes, target: bytes, uid: int, gid: int, now_ns: int
    ) -> FileAttrs:
        if not target:
            raise InvalidArgument(f"symlink {name!r} has an empty target")
        if len(target) > SYMLINK_BYTES_MAX:
            raise RangeTooLarge(
                f"symlink target of {len(target)} bytes is over {SYMLINK_BYTES_MAX}"
            )
        if b"\x00" in target:
            raise InvalidArgument(f"symlink target {target!r} contains NUL")
        mode = FileKind.SYMLINK | 0o777
        return self._new_node(parent, name, mode, uid, gid, rdev=0, target=target, now_ns=now_ns)

    def link(self, inode: InodeId, new_parent: InodeId, new_name: bytes, now_ns: int) -> FileAttrs:
        check_name(new_name)
        attrs = self.getattr(inode)
        if is_dir(attrs.mode):
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
        check_name(name)
        self._directory(parent)
        child = self._existing_child(parent, name)
        if is_dir(child.mode):
            raise IsADirectory(f"entry {name!r} in directory {parent} is a directory")
        self._delete_dentry(parent, name)
        self._touch(parent, now_ns)
        return self._drop_file_link(InodeId(child.inode), now_ns)

    def rmdir(self, parent: InodeId, name: bytes, now_ns: int) -> None:
        check_name(name)
        self._directory(parent)
        child = self._existing_child(parent, name)
        if not is_dir(child.mode):
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
        check_name(name)
        check_name(new_name)
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
        if is_dir(source.mode) and self._in_subtree(new_parent, InodeId(source.inode)):
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
        moved_dirs = 1 if is_dir(source.mode) and parent != new_parent else 0
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
        if is_dir(source.mode) and self._in_subtree(new_parent, InodeId(source.inode)):
            raise InvalidArgument(f"cannot exchange directory {name!r} into its own subtree")
        if is_dir(target.mode) and self._in_subtree(parent, InodeId(target.inode)):
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
            moved_dirs = int(is_dir(source.mode)) - int(is_dir(target.mode))
        self._touch(parent, now_ns, nlink_delta=-moved_dirs)
        self._touch(new_parent, now_ns, nlink_delta=moved_dirs)
        self._touch_ctime(InodeId(source.inode), now_ns)
        self._touch_ctime(InodeId(target.inode), now_ns)

    def _check_replaceable(
        self, source: FileAttrs, target: FileAttrs, new_name: bytes, new_parent: InodeId
    ) -> None:
        where = f"entry {new_name!r} in directory {new_parent}"
        if is_dir(source.mode) and not is_dir(target.mode):
            raise NotADirectory(f"cannot replace {where} with a directory: it is not one")
        if not is_dir(source.mode) and is_dir(target.mode):
            raise IsADirectory(f"cannot replace {where} with a non-directory: it is a directory")
        if is_dir(target.mode) and self._has_children(InodeId(target.inode)):
            raise NotEmpty(f"cannot replace {where}: directory not empty")

    def _remove_replaced(
        self, new_parent: InodeId, new_name: bytes, target: FileAttrs, now_ns: int
    ) -> FreedChunks:
        self._delete_dentry(new_parent, new_name)
        if is_dir(target.mode):
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
        check_owner(uid, gid)
        if size_bytes is not None:
            self._check_new_size(attrs, size_bytes)
        changes: dict[str, int] = {}
        if mode is not None:
            changes["mode"] = kind_of(attrs.mode) | (mode & PERMISSION_MASK)
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
        if is_dir(attrs.mode):
            raise IsADirectory(f"inode {attrs.inode} is a directory; its size cannot be set")
        if kind_of(attrs.mode) != FileKind.REGULAR:
            raise InvalidArgument(f"inode {attrs.inode} is not a regular file; size is fixed")
        if size_bytes < 0:
            raise InvalidArgument(f"size {size_bytes} of inode {attrs.inode} is negative")
        if size_bytes > FILE_SIZE_BYTES_MAX:
            raise FileTooLarge(
                f"size {size_bytes} of inode {attrs.inode} is over {FILE_SIZE_BYTES_MAX}"
            )

    def set_goal(self, inode: InodeId, goal: int, recursive: bool, now_ns: int) -> int:
        """Set the replication goal; returns how many inodes had another goal before."""
        if not 1 <= goal <= GOAL_MAX:
            raise InvalidArgument(f"goal {goal} is outside 1..{GOAL_MAX}")
        attrs = self.getattr(inode)
        changed = self._store.execute(
            "UPDATE inodes SET goal = ?, ctime_ns = ? WHERE id = ? AND goal != ?",
            (goal, now_ns, inode, goal),
        ).rowcount
        if not (recursive and is_dir(attrs.mode)):
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
                (directory, after_cookie, KIND_MASK, FileKind.DIRECTORY),
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

    # --- helpers -------------------------------------------------------------
    def _directory(self, inode: InodeId) -> FileAttrs:
        attrs = self.getattr(inode)
        if not is_dir(attrs.mode):
            raise NotADirectory(f"inode {inode} is not a directory")
        return attrs

    def _child(self, parent: InodeId, name: bytes) -> FileAttrs | None:
        row = self._store.one(
            f"SELECT {ATTR_COLUMNS} FROM dentries AS d JOIN inodes AS i ON i.id = d.inode_id"
            " WHERE d.parent_id = ? AND d.name = ?",
            (parent, name),
        )
        return None if row is None else attrs_from_row(row)

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
        kind = kind_of(self.getattr(inode).mode)
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
