"""How an inode row reads, and what a name, an owner or an xattr name may be.

Pure functions and the column list every inode query selects, shared by the
namespace's operations (``namespace.py``, ``inode_lifecycle.py``,
``xattrs.py``); nothing here touches the database.
"""

from __future__ import annotations

from typing import Any

from vmstore.dfs.constants import (
    BLOCK_SIZE_BYTES,
    CHUNK_SIZE_BYTES,
    NAME_BYTES_MAX,
    XATTR_NAME_BYTES_MAX,
)
from vmstore.dfs.errors import InvalidArgument, NameTooLong, RangeTooLarge
from vmstore.dfs.protocol.messages import FileAttrs
from vmstore.dfs.types import ChunkId, ChunkVersion, FileKind

FreedChunks = list[tuple[ChunkId, ChunkVersion]]

KIND_MASK = 0o170000
PERMISSION_MASK = 0o7777
SET_GID = 0o2000
CREATABLE_KINDS = frozenset(
    {
        FileKind.REGULAR,
        FileKind.FIFO,
        FileKind.SOCKET,
        FileKind.CHARACTER_DEVICE,
        FileKind.BLOCK_DEVICE,
    }
)
DEVICE_KINDS = frozenset({FileKind.CHARACTER_DEVICE, FileKind.BLOCK_DEVICE})

# The chunk count rides in the same statement as the row (a COUNT over the
# file_chunks primary-key prefix), so a readdir page costs one query.
ATTR_COLUMNS = (
    "i.id, i.mode, i.nlink, i.uid, i.gid, i.rdev, i.size_bytes, i.atime_ns, i.mtime_ns,"
    " i.ctime_ns, i.goal, (SELECT COUNT(*) FROM file_chunks AS f WHERE f.inode_id = i.id)"
)


def kind_of(mode: int) -> int:
    return mode & KIND_MASK


def is_dir(mode: int) -> bool:
    return kind_of(mode) == FileKind.DIRECTORY


def attrs_from_row(row: tuple[Any, ...]) -> FileAttrs:
    """FileAttrs from the ``ATTR_COLUMNS`` of one inode."""
    (inode, mode, nlink, uid, gid, rdev, size, atime, mtime, ctime, goal, chunk_count) = row
    allocated = 0
    if kind_of(mode) == FileKind.REGULAR:
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


def check_name(name: bytes) -> None:
    if not name:
        raise InvalidArgument("empty name")
    if len(name) > NAME_BYTES_MAX:
        raise NameTooLong(f"name {name[:32]!r}... is {len(name)} bytes, over {NAME_BYTES_MAX}")
    if b"/" in name or b"\x00" in name:
        raise InvalidArgument(f"name {name!r} contains '/' or NUL")
    if name in (b".", b".."):
        raise InvalidArgument(f"name {name!r} is reserved")


def check_owner(uid: int | None, gid: int | None) -> None:
    for value, what in ((uid, "uid"), (gid, "gid")):
        if value is not None and value < 0:
            raise InvalidArgument(f"{what} {value} is negative")


def check_xattr_name(name: bytes) -> None:
    if not 1 <= len(name) <= XATTR_NAME_BYTES_MAX:
        raise RangeTooLarge(f"xattr name of {len(name)} bytes is outside 1..{XATTR_NAME_BYTES_MAX}")
    if b"\x00" in name:
        raise InvalidArgument(f"xattr name {name!r} contains NUL")
