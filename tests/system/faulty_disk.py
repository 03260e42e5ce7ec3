"""A real disk that fails on command: ext4 on a loop device whose backing file is
served through a tiny FUSE file system (device-mapper is missing on these machines:
see /work/shared/notes/faults.md).

``FaultyDisk(directory)`` makes DIRECTORY/backing (sparse), serves it as
DIRECTORY/fuse/disk with this module run as a script, attaches a loop device
to that, makes ext4 on it and mounts it at DIRECTORY/mnt. Then:

* ``fail()`` (SIGUSR1 to the FUSE server): every later read, write and fsync of
  the device fails with EIO, as a dying disk's do;
* ``hang()`` (SIGSTOP): every I/O that reaches the device waits, as on a disk
  that stopped answering; ``close()`` lets it go (SIGCONT) first.

Caveats: I/O the page cache absorbs does not reach the device until writeback
or an fsync; ``close()`` tears down lazily (umount -l) and waits at most a few
seconds for each step.
"""

from __future__ import annotations

import errno
import os
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path

DISK_NAME = "disk"
TIMEOUT_S = 30.0


class FaultyDisk:
    def __init__(self, directory: Path, size_bytes: int = 512 * 1024 * 1024) -> None:
        self.directory = directory
        self.mountpoint = directory / "mnt"
        self.loop_device = ""
        self.server: subprocess.Popen[bytes] | None = None
        directory.mkdir(parents=True, exist_ok=True)
        backing = directory / "backing"
        with open(backing, "wb") as file:
            file.truncate(size_bytes)
        (directory / "fuse").mkdir()
        self.mountpoint.mkdir()
        try:
            self.server = subprocess.Popen([sys.executable, __file__, str(backing),
                                            str(directory / "fuse")])
            deadline = time.monotonic() + TIMEOUT_S
            while not (directory / "fuse" / DISK_NAME).exists():
                assert self.server.poll() is None, "the FUSE disk server exited"
                assert time.monotonic() < deadline, "the FUSE disk server never served"
                time.sleep(0.05)
            self.loop_device = _run("losetup", "--find", "--show",
                                    str(directory / "fuse" / DISK_NAME)).strip()
            _run("mkfs.ext4", "-q", "-F", self.loop_device)
            _run("mount", self.loop_device, str(self.mountpoint))
        except BaseException:
            self.close()
            raise

    def fail(self) -> None:
        assert self.server is not None
        self.server.send_signal(signal.SIGUSR1)

    def hang(self) -> None:
        assert self.server is not None
        self.server.send_signal(signal.SIGSTOP)

    def close(self) -> None:
        if self.server is not None and self.server.poll() is None:
            self.server.send_signal(signal.SIGCONT)
        subprocess.run(["umount", "-l", str(self.mountpoint)], capture_output=True,
                       timeout=TIMEOUT_S)
        if self.loop_device:
            subprocess.run(["losetup", "-d", self.loop_device], capture_output=True,
                           timeout=TIMEOUT_S)
        if self.server is not None:
            subprocess.run(["fusermount3", "-u", "-z", str(self.directory / "fuse")],
                           capture_output=True, timeout=TIMEOUT_S)
            self.server.kill()
            self.server.wait(timeout=TIMEOUT_S)


def _run(*command: str) -> str:
    result = subprocess.run(command, capture_output=True, text=True, timeout=TIMEOUT_S)
    assert result.returncode == 0, f"{' '.join(command)}: {result.stderr.strip()}"
    return result.stdout


def serve(backing: Path, mountpoint: Path) -> None:
    """Serve ``backing`` as MOUNTPOINT/disk until killed; SIGUSR1: EIO from then on."""
    import pyfuse3
    import trio

    failing = False

    def start_failing(_signal: int, _frame: object) -> None:
        nonlocal failing
        failing = True

    signal.signal(signal.SIGUSR1, start_failing)
    fd = os.open(backing, os.O_RDWR)
    disk_inode = pyfuse3.ROOT_INODE + 1

    class Disk(pyfuse3.Operations):
        def _attributes(self, inode: int) -> pyfuse3.EntryAttributes:
            attributes = pyfuse3.EntryAttributes()
            attributes.st_ino = inode
            if inode == disk_inode:
                attributes.st_mode = stat.S_IFREG | 0o600
                attributes.st_size = os.fstat(fd).st_size
            else:
                attributes.st_mode = stat.S_IFDIR | 0o700
            attributes.st_nlink = 1
            return attributes

        async def getattr(self, inode: int, ctx: object = None) -> pyfuse3.EntryAttributes:
            return self._attributes(inode)

        async def lookup(self, parent: int, name: bytes,
                         ctx: object = None) -> pyfuse3.EntryAttributes:
            if parent != pyfuse3.ROOT_INODE or name != DISK_NAME.encode():
                raise pyfuse3.FUSEError(errno.ENOENT)
            return self._attributes(disk_inode)

        async def open(self, inode: int, flags: int, ctx: object) -> pyfuse3.FileInfo:
            return pyfuse3.FileInfo(fh=inode, direct_io=True)

        async def read(self, fh: int, off: int, size: int) -> bytes:
            if failing:
                raise pyfuse3.FUSEError(errno.EIO)
            return os.pread(fd, size, off)

        async def write(self, fh: int, off: int, buf: bytes) -> int:
            if failing:
                raise pyfuse3.FUSEError(errno.EIO)
            return os.pwrite(fd, buf, off)

        async def fsync(self, fh: int, datasync: bool) -> None:
            if failing:
                raise pyfuse3.FUSEError(errno.EIO)
            os.fdatasync(fd)

        async def flush(self, fh: int) -> None:
            pass

        async def release(self, fh: int) -> None:
            pass

    pyfuse3.init(Disk(), str(mountpoint), {"fsname=faultydisk"})
    try:
        trio.run(pyfuse3.main)
    finally:
        pyfuse3.close(unmount=True)


if __name__ == "__main__":
    serve(Path(sys.argv[1]), Path(sys.argv[2]))
