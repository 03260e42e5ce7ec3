"""Identifiers and small value types shared by every part of the cluster."""

from __future__ import annotations

import enum
from typing import NewType

InodeId = NewType("InodeId", int)
ChunkId = NewType("ChunkId", int)
ChunkVersion = NewType("ChunkVersion", int)
ServerId = NewType("ServerId", int)
SessionId = NewType("SessionId", int)

ROOT_INODE = InodeId(1)


class FileKind(enum.IntEnum):
    """The S_IFMT bits of st_mode, so a mode splits into kind | permissions."""

    REGULAR = 0o100000
    DIRECTORY = 0o040000
    SYMLINK = 0o120000
    FIFO = 0o010000
    SOCKET = 0o140000
    CHARACTER_DEVICE = 0o020000
    BLOCK_DEVICE = 0o060000


RENAME_NOREPLACE = 1
RENAME_EXCHANGE = 2
XATTR_CREATE = 1
XATTR_REPLACE = 2
