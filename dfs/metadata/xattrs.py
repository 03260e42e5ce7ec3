"""The extended attributes of the namespace's inodes.

Mixed into ``Namespace``: each call validates before it writes, and a change
updates the inode's ctime, as the rest of the namespace does.
"""

from __future__ import annotations

from collections.abc import Callable

from vmstore.dfs.constants import XATTR_VALUE_BYTES_MAX
from vmstore.dfs.errors import Exists, InvalidArgument, NoSuchAttribute, RangeTooLarge
from vmstore.dfs.metadata.inode_rows import check_xattr_name
from vmstore.dfs.metadata.store import MetadataStore
from vmstore.dfs.protocol.messages import FileAttrs
from vmstore.dfs.types import XATTR_CREATE, XATTR_REPLACE, InodeId


class XattrOps:
    """getxattr, setxattr, listxattr and removexattr of ``Namespace``."""

    # Provided by Namespace.
    _store: MetadataStore
    getattr: Callable[[InodeId], FileAttrs]
    _touch_ctime: Callable[[InodeId, int], None]

    def getxattr(self, inode: InodeId, name: bytes) -> bytes:
        check_xattr_name(name)
        self.getattr(inode)
        row = self._store.one(
            "SELECT value FROM xattrs WHERE inode_id = ? AND name = ?", (inode, name)
        )
        if row is None:
            raise NoSuchAttribute(f"no xattr {name!r} on inode {inode}")
        return bytes(row[0])

    def setxattr(self, inode: InodeId, name: bytes, value: bytes, flags: int, now_ns: int) -> None:
        check_xattr_name(name)
        if len(value) > XATTR_VALUE_BYTES_MAX:
            raise RangeTooLarge(
                f"xattr {name!r} value of {len(value)} bytes is over {XATTR_VALUE_BYTES_MAX}"
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
        check_xattr_name(name)
        self.getattr(inode)
        if not self._has_xattr(inode, name):
            raise NoSuchAttribute(f"no xattr {name!r} on inode {inode}")
        self._store.execute("DELETE FROM xattrs WHERE inode_id = ? AND name = ?", (inode, name))
        self._touch_ctime(inode, now_ns)

    def _has_xattr(self, inode: InodeId, name: bytes) -> bool:
        row = self._store.one("SELECT 1 FROM xattrs WHERE inode_id = ? AND name = ?", (inode, name))
        return row is not None
