"""What stands in for the kernel when tests/fuse call the mount's handlers in process.

* ``Ctx`` and ``Fields``: pyfuse3's ``RequestContext`` and ``SetattrFields``
  can be constructed but their attributes are read-only (only pyfuse3's C
  side fills them), so tests pass look-alikes with the same attribute names.
  ``EntryAttributes``, ``FileInfo`` and ``StatvfsData`` are pyfuse3's own.
* ``Kernel``: ``pyfuse3.readdir_reply`` writes into a kernel request's
  buffer and ``invalidate_inode`` notifies a kernel session; neither exists
  here, so the ``kernel`` fixture puts these in their place for one test:
  entries are collected, invalidations recorded.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import pyfuse3

from vmstore.fuse.operations import VmstoreOperations

ROOT_INODE = pyfuse3.ROOT_INODE
CLIENT = "client1"


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
