#!/usr/bin/env python3
"""A trivial pyfuse3 pass-through file system: a yardstick for what the FUSE loop costs.

    python3 deploy/bench/passthrough_fs.py [--no-direct-backing] SOURCE_DIR MOUNTPOINT

Serves SOURCE_DIR at MOUNTPOINT (``fuse.passthrough`` in /proc/mounts)
until unmounted (``fusermount3 -u``) or sent SIGTERM or SIGINT. Each
request becomes one or two system calls on the backing file or directory,
so what a benchmark measures on it is the cost of the FUSE loop plus those
calls: deploy/bench/pyfuse3_ceiling.py runs ``vmstore bench`` on it.

What it shares with vmstore's mount (fuse/mount.py, fuse/operations.py),
so that the comparison is fair: the mount options (pyfuse3's defaults,
``default_permissions``, ``allow_other``), ``max_tasks``, one trio thread,
umask 0, no writeback cache, ``keep_cache`` off, the attributes built by
vmstore's own ``entry_attributes`` (1 s entry and attribute timeouts,
64 KiB ``st_blksize``), ``direct_io`` handles for O_DIRECT opens (not for
setuid or setgid files), a FLUSH on every close and the kernel's GETXATTR
of security.capability before each buffered write (answered ENOATTR, as
vmstore answers it from memory). The 1 MiB readahead vmstore's mount sets
for itself is set by pyfuse3_ceiling.py. The open flags, O_DIRECT
included, go to the backing file; data goes through ``os.pread`` and
``os.pwrite``. With ``--no-direct-backing`` the backing files are opened
without O_DIRECT (the FUSE handles stay ``direct_io``), so that an
O_DIRECT write ends in the page cache rather than waiting for the disk.

Caveats:
* For benchmarks and nothing else. Regular files and directories only: no
  rename, links, symlinks, device nodes, locks or fallocate, and no
  extended attributes (getxattr is always ENOATTR).
* Inode numbers are its own, never reused, each bound to one path; the
  backing tree must not change behind its back. Inodes are never
  forgotten: the table grows with every path looked up.
* Every system call runs on the event loop: requests are served one at a
  time, so 16 requests in flight reach the backing disk one by one, and
  an O_DIRECT write waits for the disk before the next request is read.
  Where the disk's latency at depth 1 exceeds the loop's cost per request
  (O_DIRECT writes and reads at depth 16), the figure is the disk's, not
  the loop's, and a mount that acknowledges writes before they reach a
  disk (vmstore's write-behind) can beat it: ``--no-direct-backing``
  measures the loop alone there. A worker thread per request would add a
  hop to each.
* O_DIRECT needs aligned memory, which Python's bytes are not: requests on
  an O_DIRECT file go through one page-aligned buffer (a copy per
  request). Offsets and lengths the backing device cannot take get its
  EINVAL, as they would on the local disk.
* New files and directories are given the caller's uid and gid; a setgid
  parent directory's group is not inherited by other users' files.
"""

from __future__ import annotations

import argparse
import errno
import functools
import mmap
import os
import signal
import stat
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, ParamSpec, TypeVar

import pyfuse3
import trio

from vmstore.dfs.constants import FUSE_TASKS_MAX
from vmstore.dfs.protocol.messages import FileAttrs
from vmstore.fuse.operations import VmstoreOperations, entry_attributes

NAME = "passthrough"
FILE_SYSTEM_TYPE = f"fuse.{NAME}"
P = ParamSpec("P")
R = TypeVar("R")


def os_errors_as_fuse_errors(handler: Callable[P, Awaitable[R]]) -> Callable[P, Awaitable[R]]:
    """The backing file system's errno is the answer: the kernel gets what the disk said."""

    @functools.wraps(handler)
    async def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return await handler(*args, **kwargs)
        except OSError as error:
            raise pyfuse3.FUSEError(error.errno) from None

    return wrapper


class PassthroughOperations(pyfuse3.Operations):  # type: ignore[misc]
    # The same answers to the kernel's questions as vmstore's mount (its
    # writeback cache is off unless asked for, and so is this one).
    supports_dot_lookup = VmstoreOperations.supports_dot_lookup
    enable_writeback_cache = VmstoreOperations.enable_writeback_cache
    enable_acl = VmstoreOperations.enable_acl

    def __init__(self, source: bytes, direct_backing: bool = True) -> None:
        super().__init__()
        self.direct_backing = direct_backing  # O_DIRECT opens open the backing file O_DIRECT
        self.paths: dict[int, bytes] = {pyfuse3.ROOT_INODE: source}
        self.inodes: dict[bytes, int] = {source: pyfuse3.ROOT_INODE}
        self._next_inode = pyfuse3.ROOT_INODE + 1
        # File handles are the backing file descriptors.
        self.inode_of_fd: dict[int, int] = {}
        self.fds_of_inode: dict[int, set[int]] = {}
        self.direct_fds: set[int] = set()
        self.listings: dict[int, tuple[int, list[bytes]]] = {}  # opendir handle -> names
        self._next_listing = 1
        # One buffer is enough: requests are served one at a time (see the caveats).
        self.aligned = mmap.mmap(-1, mmap.PAGESIZE)
        self.aligned_view = memoryview(self.aligned)

    # --- inodes and attributes -------------------------------------------------------
    def _path(self, inode: int) -> bytes:
        path = self.paths.get(inode)
        if path is None:
            raise pyfuse3.FUSEError(errno.ENOENT)  # unlinked, and not open any more
        return path

    def _inode(self, path: bytes) -> int:
        inode = self.inodes.get(path)
        if inode is None:
            inode = self.inodes[path] = self._next_inode
            self.paths[inode] = path
            self._next_inode += 1
        return inode

    def _forget_path(self, path: bytes) -> None:
        """Unlinked: a new file of that name gets a new inode number, as on a disk."""
        inode = self.inodes.pop(path, None)
        if inode is not None:
            del self.paths[inode]

    @staticmethod
    def _entry(inode: int, status: os.stat_result) -> pyfuse3.EntryAttributes:
        return entry_attributes(FileAttrs(
            inode=inode, mode=status.st_mode, nlink=status.st_nlink, uid=status.st_uid,
            gid=status.st_gid, rdev=status.st_rdev, size_bytes=status.st_size,
            allocated_bytes=status.st_blocks * 512, atime_ns=status.st_atime_ns,
            mtime_ns=status.st_mtime_ns, ctime_ns=status.st_ctime_ns, goal=0))

    @os_errors_as_fuse_errors
    async def lookup(self, parent_inode: int, name: bytes, ctx: Any) -> pyfuse3.EntryAttributes:
        if name == b".":
            return self._entry(parent_inode, os.lstat(self._path(parent_inode)))
        if name == b"..":
            raise pyfuse3.FUSEError(errno.ENOTSUP)  # as vmstore's mount: no NFS export
        path = os.path.join(self._path(parent_inode), name)
        status = os.lstat(path)
        return self._entry(self._inode(path), status)

    @os_errors_as_fuse_errors
    async def getattr(self, inode: int, ctx: Any) -> pyfuse3.EntryAttributes:
        fds = self.fds_of_inode.get(inode)
        # An open file is asked by descriptor: no path walk, and it works after unlink.
        status = os.fstat(next(iter(fds))) if fds else os.lstat(self._path(inode))
        return self._entry(inode, status)

    @os_errors_as_fuse_errors
    async def setattr(self, inode: int, attr: pyfuse3.EntryAttributes,
                      fields: pyfuse3.SetattrFields, fh: int | None,
                      ctx: Any) -> pyfuse3.EntryAttributes:
        target: int | bytes = self._path(inode) if fh is None else fh  # os.* take either
        if fields.update_size:
            os.truncate(target, attr.st_size)
        if fields.update_mode:
            os.chmod(target, stat.S_IMODE(attr.st_mode))
        if fields.update_uid or fields.update_gid:
            os.chown(target, attr.st_uid if fields.update_uid else -1,
                     attr.st_gid if fields.update_gid else -1)
        if fields.update_atime or fields.update_mtime:
            status = os.stat(target)
            os.utime(target, ns=(
                attr.st_atime_ns if fields.update_atime else status.st_atime_ns,
                attr.st_mtime_ns if fields.update_mtime else status.st_mtime_ns))
        return self._entry(inode, os.stat(target))

    async def getxattr(self, inode: int, name: bytes, ctx: Any) -> bytes:
        # ENOATTR, not pyfuse3's default ENOSYS: after ENOSYS the kernel stops
        # asking, while vmstore's mount gets (and answers) a security.capability
        # GETXATTR before every buffered write. The ceiling pays for it too.
        raise pyfuse3.FUSEError(pyfuse3.ENOATTR)

    # --- namespace ---------------------------------------------------------------------
    @staticmethod
    def _give_to_caller(path: bytes, ctx: Any) -> None:
        if ctx.uid != os.geteuid():
            os.chown(path, ctx.uid, ctx.gid)

    @os_errors_as_fuse_errors
    async def mkdir(self, parent_inode: int, name: bytes, mode: int,
                    ctx: Any) -> pyfuse3.EntryAttributes:
        # vmstore bench works in a new directory under its target.
        path = os.path.join(self._path(parent_inode), name)
        os.mkdir(path, stat.S_IMODE(mode))
        self._give_to_caller(path, ctx)
        return self._entry(self._inode(path), os.lstat(path))

    @os_errors_as_fuse_errors
    async def rmdir(self, parent_inode: int, name: bytes, ctx: Any) -> None:
        path = os.path.join(self._path(parent_inode), name)
        os.rmdir(path)
        self._forget_path(path)

    @os_errors_as_fuse_errors
    async def unlink(self, parent_inode: int, name: bytes, ctx: Any) -> None:
        path = os.path.join(self._path(parent_inode), name)
        os.unlink(path)
        self._forget_path(path)

    @os_errors_as_fuse_errors
    async def opendir(self, inode: int, ctx: Any) -> int:
        listing = self._next_listing
        self._next_listing += 1
        self.listings[listing] = (inode, sorted(os.listdir(self._path(inode))))
        return listing

    @os_errors_as_fuse_errors
    async def readdir(self, fh: int, start_id: int, token: pyfuse3.ReaddirToken) -> None:
        inode, names = self.listings[fh]
        directory = self._path(inode)
        for position in range(start_id, len(names)):
            path = os.path.join(directory, names[position])
            try:
                status = os.lstat(path)
            except FileNotFoundError:
                continue  # removed since opendir
            # start_id of the next call: the position after this entry.
            if not pyfuse3.readdir_reply(token, names[position],
                                         self._entry(self._inode(path), status), position + 1):
                return

    async def releasedir(self, fh: int) -> None:
        del self.listings[fh]

    # --- files ------------------------------------------------------------------------------
    def _backing_flags(self, flags: int) -> int:
        return flags if self.direct_backing else flags & ~os.O_DIRECT

    def _handle(self, inode: int, fd: int, flags: int) -> pyfuse3.FileInfo:
        self.inode_of_fd[fd] = inode
        self.fds_of_inode.setdefault(inode, set()).add(fd)
        direct = bool(flags & os.O_DIRECT)
        if direct and self.direct_backing:
            self.direct_fds.add(fd)
        info = pyfuse3.FileInfo()
        info.fh = fd
        info.keep_cache = False  # as vmstore's mount (close-to-open there)
        # As vmstore's mount: an O_DIRECT open is a direct_io handle, which spares
        # each write the kernel's GETXATTR of security.capability; a setuid or
        # setgid file keeps the kernel's path, which clears those bits.
        special = os.fstat(fd).st_mode & (stat.S_ISUID | stat.S_ISGID) if direct else 0
        info.direct_io = direct and not special
        return info

    @os_errors_as_fuse_errors
    async def open(self, inode: int, flags: int, ctx: Any) -> pyfuse3.FileInfo:
        # The kernel's flags as they are: O_DIRECT, O_SYNC, O_TRUNC (atomic O_TRUNC
        # is negotiated by libfuse 3) all act on the backing file.
        fd = os.open(self._path(inode), self._backing_flags(flags))
        return self._handle(inode, fd, flags)

    @os_errors_as_fuse_errors
    async def create(self, parent_inode: int, name: bytes, mode: int, flags: int,
                     ctx: Any) -> tuple[pyfuse3.FileInfo, pyfuse3.EntryAttributes]:
        path = os.path.join(self._path(parent_inode), name)
        fd = os.open(path, self._backing_flags(flags) | os.O_CREAT, stat.S_IMODE(mode))
        try:
            self._give_to_caller(path, ctx)
            inode = self._inode(path)
            return self._handle(inode, fd, flags), self._entry(inode, os.fstat(fd))
        except BaseException:
            self._close(fd)
            raise

    def _aligned_buffer(self, size_bytes: int) -> memoryview:
        if size_bytes > len(self.aligned):
            self.aligned_view.release()
            self.aligned.close()
            self.aligned = mmap.mmap(-1, -(-size_bytes // mmap.PAGESIZE) * mmap.PAGESIZE)
            self.aligned_view = memoryview(self.aligned)
        return self.aligned_view[:size_bytes]

    @os_errors_as_fuse_errors
    async def read(self, fh: int, off: int, size: int) -> bytes:
        if fh not in self.direct_fds:
            return os.pread(fh, size, off)
        buffer = self._aligned_buffer(size)
        return bytes(buffer[:os.preadv(fh, [buffer], off)])

    @os_errors_as_fuse_errors
    async def write(self, fh: int, off: int, buf: bytes) -> int:
        if fh not in self.direct_fds:
            return os.pwrite(fh, buf, off)
        buffer = self._aligned_buffer(len(buf))
        buffer[:] = buf
        return os.pwritev(fh, [buffer], off)

    @os_errors_as_fuse_errors
    async def fsync(self, fh: int, datasync: bool) -> None:
        if datasync:
            os.fdatasync(fh)
        else:
            os.fsync(fh)

    async def flush(self, fh: int) -> None:
        # Nothing to do (writes are on the backing file already), but answered:
        # pyfuse3's default ENOSYS would make the kernel stop sending FLUSH on
        # close, which vmstore's mount receives (and needs).
        return None

    def _close(self, fd: int) -> None:
        inode = self.inode_of_fd.pop(fd, None)
        fds = self.fds_of_inode.get(inode) if inode is not None else None
        if fds is not None:
            fds.discard(fd)
            if not fds:
                del self.fds_of_inode[inode]
        self.direct_fds.discard(fd)
        os.close(fd)

    @os_errors_as_fuse_errors
    async def release(self, fh: int) -> None:
        self._close(fh)

    # --- the file system ------------------------------------------------------------------
    @os_errors_as_fuse_errors
    async def statfs(self, ctx: Any) -> pyfuse3.StatvfsData:
        space = os.statvfs(self.paths[pyfuse3.ROOT_INODE])
        data = pyfuse3.StatvfsData()
        for field in ("f_bsize", "f_frsize", "f_blocks", "f_bfree", "f_bavail", "f_files",
                      "f_ffree", "f_favail", "f_namemax"):
            setattr(data, field, getattr(space, field))
        return data


def mount_options() -> set[str]:
    """vmstore's options (fuse/mount.py ``mount_options``) under this file system's name."""
    return set(pyfuse3.default_options) | {"allow_other", f"fsname={NAME}", f"subtype={NAME}",
                                           "default_permissions"}


async def _terminate_on_signal() -> None:
    with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
        async for _ in signals:
            pyfuse3.terminate()
            return


async def serve(source: Path, mountpoint: Path, direct_backing: bool) -> None:
    """Mount, serve until unmounted or signalled, unmount (as vmstore's ``run_mount``)."""
    operations = PassthroughOperations(os.fsencode(source), direct_backing)
    pyfuse3.init(operations, str(mountpoint), mount_options())
    try:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(_terminate_on_signal)
            await pyfuse3.main(max_tasks=FUSE_TASKS_MAX)
            nursery.cancel_scope.cancel()
    finally:
        pyfuse3.close(unmount=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("source", type=Path, metavar="SOURCE_DIR",
                        help="the directory on local disk to serve")
    parser.add_argument("mountpoint", type=Path, metavar="MOUNTPOINT")
    parser.add_argument("--no-direct-backing", action="store_true", help="open backing files"
                        " without O_DIRECT (O_DIRECT opens stay direct_io handles)")
    args = parser.parse_args()
    if not args.source.is_dir():
        parser.error(f"{args.source}: not a directory")
    os.umask(0)  # the kernel has already applied the caller's umask
    trio.run(serve, args.source.resolve(), args.mountpoint.resolve(),
             not args.no_direct_backing)
    return 0


if __name__ == "__main__":
    sys.exit(main())
