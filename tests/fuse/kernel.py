"""What stands in for the kernel when tests/fuse call the mount's handlers in process.

* ``Ctx`` and ``Fields``: pyfuse3's ``RequestContext`` and ``SetattrFields``
  can be constructed but their attributes are read-only (only pyfuse3's C
  side fills them), so tests pass look-alikes with the same attribute names.
  ``EntryAttributes``, ``FileInfo`` and ``StatvfsData`` are pyfuse3's own.
* ``Kernel``: ``pyfuse3.readdir_reply`` writes into a kernel request's
  buffer and ``invalidate_inode`` / ``invalidate_entry`` notify a kernel
  session; none exists here, so the ``kernel`` fixture puts these in their place for one test:
  entries are collected, invalidations recorded.

And the requests the kernel sends for one system call (``create_file`` is
creat + write + close: CREATE, WRITE, FLUSH, RELEASE), so that tests read
as the system calls they stand for.
"""

from __future__ import annotations

import errno
import os
import stat
from dataclasses import dataclass, field
from typing import Any

import pyfuse3
import pytest

from vmstore.fuse.operations import VmstoreOperations

ROOT_INODE = pyfuse3.ROOT_INODE
CLIENT = "client1"
FILE_MODE = stat.S_IFREG | 0o644


@dataclass(frozen=True)
class Ctx:
    """pyfuse3.RequestContext's attributes, settable: the caller of a request."""

    uid: int = 0
    gid: int = 0
    pid: int = 4242
    umask: int = 0o022


@dataclass(frozen=True)
class Fields:
    """pyfuse3.SetattrFields' attributes, settable: which attributes a setattr changes."""

    update_atime: bool = False
    update_mtime: bool = False
    update_ctime: bool = False
    update_mode: bool = False
    update_uid: bool = False
    update_gid: bool = False
    update_size: bool = False


ROOT = Ctx()


@dataclass
class Kernel:
    """What the kernel would have been told: readdir entries, and invalidations."""

    invalidated: list[tuple[int, bool]] = field(default_factory=list)
    entries_invalidated: list[tuple[int, bytes]] = field(default_factory=list)
    listing: list[tuple[bytes, pyfuse3.EntryAttributes, int]] = field(default_factory=list)
    # readdir_reply answers False (buffer full) after this many entries, then resets.
    room: int | None = None

    def readdir_reply(self, token: Any, name: bytes, attr: pyfuse3.EntryAttributes,
                      next_id: int) -> bool:
        if self.room is not None and len(self.listing) >= self.room:
            return False
        self.listing.append((name, attr, next_id))
        return True

    def invalidate_inode(self, inode: int, attr_only: bool = False) -> None:
        self.invalidated.append((inode, attr_only))

    def invalidate_entry(self, parent_inode: int, name: bytes, deleted: int = 0) -> None:
        self.entries_invalidated.append((parent_inode, name))


async def readdir(operations: VmstoreOperations, kernel: Kernel, inode: int,
                  start_id: int = 0) -> list[tuple[bytes, pyfuse3.EntryAttributes, int]]:
    """One READDIR as the kernel sends it: opendir, readdir from start_id, releasedir."""
    kernel.listing = []
    fh = await operations.opendir(inode, ROOT)
    try:
        await operations.readdir(fh, start_id, pyfuse3.ReaddirToken())
    finally:
        await operations.releasedir(fh)
    return kernel.listing


async def expect_errno(expected: int, handler: object, *args: object) -> None:
    assert callable(handler)
    with pytest.raises(pyfuse3.FUSEError) as raised:
        await handler(*args)
    assert raised.value.errno == expected, (
        f"{errno.errorcode.get(raised.value.errno)} instead of {errno.errorcode[expected]}")


async def create_file(operations: VmstoreOperations, name: bytes, data: bytes = b"",
                      parent: int = ROOT_INODE, ctx: Ctx = ROOT) -> int:
    """creat + write + close, as the kernel sends them; the new inode."""
    info, entry = await operations.create(parent, name, FILE_MODE, os.O_WRONLY, ctx)
    if data:
        assert await operations.write(info.fh, 0, data) == len(data)
    await operations.flush(info.fh)
    await operations.release(info.fh)
    return entry.st_ino


async def read_file(operations: VmstoreOperations, inode: int, length: int = 1 << 20) -> bytes:
    info = await operations.open(inode, os.O_RDONLY, ROOT)
    try:
        return await operations.read(info.fh, 0, length)
    finally:
        await operations.flush(info.fh)
        await operations.release(info.fh)


def attributes(**values: int) -> pyfuse3.EntryAttributes:
    attr = pyfuse3.EntryAttributes()
    for name, value in values.items():
        setattr(attr, name, value)
    return attr


def names(listing: list[tuple[bytes, pyfuse3.EntryAttributes, int]]) -> list[bytes]:
    return [name for name, _attr, _next_id in listing]
