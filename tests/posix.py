"""A POSIX behaviour battery: plain functions, each run against an empty directory.

Every ``tst_*(root)`` exercises one behaviour inside ``root`` (an empty
directory the function owns) and raises ``AssertionError`` (or an unexpected
``OSError``) when the filesystem under ``root`` does not do what POSIX and
Linux say. The ``tst_`` prefix keeps pytest from collecting them here: a test
module parametrizes over ``battery()`` for each filesystem flavour it means,
as pyfuse3's test_examples and S3QL's t3_fs_api do. Every function must pass
on a local ext4 or tmpfs directory; ``tests/system/test_mount_posix.py``
checks that, so the battery itself stays honest.

Requirements: Linux, run as root (chown, trusted.* xattrs, writing
/proc/sys/vm/drop_caches, and a forked child that becomes uid 65534).
The child changes into ``root`` before it drops privileges and then uses
relative names only, so the directories above ``root`` need not be
searchable by uid 65534.
"""

from __future__ import annotations

import ctypes
import errno
import fcntl
import inspect
import mmap
import os
import pickle
import stat
import struct
import sys
import time
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

MiB = 1024 * 1024
CHUNK_SIZE_BYTES = 64 * MiB  # vmstore's chunk size; any other filesystem does not care
NOBODY = 65534  # uid and gid of the unprivileged child
OTHER_GID = 4321  # a group neither root nor NOBODY is a member of
AT_FDCWD = -100
RENAME_NOREPLACE = 1
RENAME_EXCHANGE = 2
READDIR_ENTRIES = 1500
CREATE_THREADS = 8
CLOCK_SLACK_NS = 10 * 10**9  # "now" as a filesystem stamps it, vs. time.time_ns() here


def battery() -> list[Callable[[Path], None]]:
    """Every ``tst_*`` function of this module, in the order they are defined."""
    module = sys.modules[__name__]
    found = [value for name, value in vars(module).items()
             if name.startswith("tst_") and inspect.isfunction(value)]
    return sorted(found, key=lambda function: function.__code__.co_firstlineno)


# --- helpers ---------------------------------------------------------------------------
def drop_caches(level: int = 3) -> None:
    """1: page cache, 2: dentries and inodes, 3: both (needs root)."""
    with open("/proc/sys/vm/drop_caches", "w") as control:
        control.write(f"{level}\n")


def current_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def write_file(path: Path, data: bytes, mode: int = 0o644) -> None:
    """Create or replace ``path`` with ``data``.

    Without O_TRUNC (a longer old file is cut with ftruncate), so that only
    tst_open_o_trunc depends on how the filesystem handles O_TRUNC.
    """
    fd = os.open(path, os.O_CREAT | os.O_WRONLY, mode)
    try:
        if os.fstat(fd).st_size > len(data):
            os.ftruncate(fd, 0)
        pwrite_all(fd, data, 0)
    finally:
        os.close(fd)


def pwrite_all(fd: int, data: bytes, offset: int) -> None:
    view = memoryview(data)
    while view:
        written = os.pwrite(fd, view, offset)
        assert written > 0, f"pwrite at {offset} wrote {written}"
        view = view[written:]
        offset += written


def pread_all(fd: int, length: int, offset: int) -> bytes:
    """Read up to ``length`` bytes, stopping early only at end of file."""
    parts = []
    while length > 0:
        part = os.pread(fd, length, offset)
        if not part:
            break
        parts.append(part)
        length -= len(part)
        offset += len(part)
    return b"".join(parts)


def read_fresh(path: Path, length: int | None = None, offset: int = 0) -> bytes:
    """Read through a new file descriptor, whole file by default."""
    fd = os.open(path, os.O_RDONLY)
    try:
        if length is None:
            length = os.fstat(fd).st_size - offset
        return pread_all(fd, length, offset)
    finally:
        os.close(fd)


def expect_errno(expected: int | set[int], action: Callable[..., Any], *args: Any,
                 **kwargs: Any) -> None:
    allowed = {expected} if isinstance(expected, int) else expected
    with pytest.raises(OSError) as caught:
        action(*args, **kwargs)
    assert caught.value.errno in allowed, (
        f"{getattr(action, '__name__', action)}{args}: errno "
        f"{errno.errorcode.get(caught.value.errno or 0)}, expected "
        f"{sorted(errno.errorcode[e] for e in allowed)}")


def create_empty_files(directory: Path, names: Iterable[str]) -> None:
    """Create many empty files, several at a time (a network filesystem batches them)."""
    def create(name: str) -> None:
        os.close(os.open(directory / name, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644))

    with ThreadPoolExecutor(CREATE_THREADS) as pool:
        list(pool.map(create, names))


def renameat2(old: Path, new: Path, flags: int) -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    function = libc.renameat2
    function.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p,
                         ctypes.c_uint]
    function.restype = ctypes.c_int
    if function(AT_FDCWD, os.fsencode(old), AT_FDCWD, os.fsencode(new), flags) != 0:
        number = ctypes.get_errno()
        raise OSError(number, os.strerror(number), str(old), None, str(new))


def outcome(action: Callable[[], Any]) -> tuple[str, Any]:
    """("ok", result) or ("errno", name): comparable, and picklable across a fork."""
    try:
        return ("ok", action())
    except OSError as error:
        return ("errno", errno.errorcode.get(error.errno or 0, str(error.errno)))


def as_user(directory: Path, action: Callable[[], Any], uid: int = NOBODY,
            gid: int = NOBODY) -> Any:
    """Run ``action`` in a forked child with cwd ``directory`` as uid:gid; return its result.

    ``action`` should use names relative to ``directory``. Its result must
    be picklable; an exception in the child is raised here as AssertionError
    (an OSError keeps its errno).
    """
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: never return into the test runner
        status = 0
        try:
            os.close(read_end)
            os.chdir(directory)
            os.setgroups([])
            os.setgid(gid)
            os.setuid(uid)
            try:
                reply: tuple[Any, ...] = ("ok", action())
            except OSError as error:
                reply = ("oserror", error.errno, str(error))
            except BaseException as error:  # reported to the parent
                reply = ("error", repr(error))
            payload = pickle.dumps(reply)
            view = memoryview(payload)
            while view:
                view = view[os.write(write_end, view):]
        except BaseException:
            status = 1
        finally:
            os._exit(status)
    os.close(write_end)
    chunks = []
    with os.fdopen(read_end, "rb") as pipe:
        while chunk := pipe.read(65536):
            chunks.append(chunk)
    _, wait_status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(wait_status) == 0, "the unprivileged child failed"
    reply = pickle.loads(b"".join(chunks))
    if reply[0] == "oserror":
        raise OSError(reply[1], f"as uid {uid}: {reply[2]}")
    if reply[0] == "error":
        raise AssertionError(f"as uid {uid}: {reply[1]}")
    return reply[1]


# --- files: create, write, read --------------------------------------------------------
def tst_create_write_read(root: Path) -> None:
    path = root / "file"
    fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o640)
    try:
        assert os.write(fd, b"hello, world\n") == 13
    finally:
        os.close(fd)
    info = os.stat(path)
    assert stat.S_ISREG(info.st_mode)
    assert stat.S_IMODE(info.st_mode) == 0o640 & ~current_umask()
    assert info.st_size == 13
    assert (info.st_uid, info.st_gid, info.st_nlink) == (os.geteuid(), os.getegid(), 1)
    assert read_fresh(path) == b"hello, world\n"
    with open(path, "rb") as reader:
        assert reader.read(5) == b"hello"
        assert reader.read() == b", world\n"
        assert reader.read() == b""  # at end of file
    expect_errno(errno.EEXIST, os.open, path, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
    expect_errno(errno.ENOENT, os.open, root / "missing", os.O_RDONLY)
    assert os.listdir(root) == ["file"]


def tst_overwrite(root: Path) -> None:
    path = root / "file"
    write_file(path, b"hello world")
    with open(path, "r+b") as file:
        file.seek(6)
        file.write(b"WORLD")
    assert read_fresh(path) == b"hello WORLD"
    data = bytearray(os.urandom(300_000))
    write_file(path, bytes(data))
    fd = os.open(path, os.O_WRONLY)
    try:
        pwrite_all(fd, b"X" * 5000, 123_456)  # unaligned, spanning pages
    finally:
        os.close(fd)
    data[123_456:128_456] = b"X" * 5000
    assert os.stat(path).st_size == 300_000
    assert read_fresh(path) == bytes(data)


def tst_open_o_trunc(root: Path) -> None:
    path = root / "file"
    write_file(path, b"hello world")
    fd = os.open(path, os.O_WRONLY | os.O_TRUNC)
    try:
        assert os.fstat(fd).st_size == 0
        assert os.write(fd, b"hi") == 2
    finally:
        os.close(fd)
    assert os.stat(path).st_size == 2
    assert read_fresh(path) == b"hi"
    drop_caches(3)
    assert read_fresh(path) == b"hi"
    with open(path, "wb"):  # O_CREAT | O_TRUNC of an existing file, nothing written
        pass
    assert os.stat(path).st_size == 0
    assert read_fresh(path) == b""


def tst_append(root: Path) -> None:
    path = root / "log"
    write_file(path, b"start;")
    first = os.open(path, os.O_WRONLY | os.O_APPEND)
    second = os.open(path, os.O_WRONLY | os.O_APPEND)
    try:
        os.write(first, b"one;")
        os.write(second, b"two;")  # appends after "one;", not over it
        os.lseek(first, 0, os.SEEK_SET)
        os.write(first, b"three;")  # O_APPEND ignores the file offset
        assert os.lseek(first, 0, os.SEEK_CUR) == len(b"start;one;two;three;")
    finally:
        os.close(first)
        os.close(second)
    with open(path, "ab") as file:
        file.write(b"four;")
    assert read_fresh(path) == b"start;one;two;three;four;"
    assert os.stat(path).st_size == len(b"start;one;two;three;four;")


# --- size: truncate, holes, chunk boundaries ---------------------------------------------
def tst_truncate(root: Path) -> None:
    path = root / "file"
    write_file(path, b"a" * 10_000)
    os.truncate(path, 100)
    assert os.stat(path).st_size == 100
    assert read_fresh(path) == b"a" * 100
    os.truncate(path, 10_000)  # the tail that comes back reads as zeros, not old bytes
    assert os.stat(path).st_size == 10_000
    assert read_fresh(path) == b"a" * 100 + bytes(9_900)
    fd = os.open(path, os.O_RDWR)
    try:
        os.ftruncate(fd, 50)
        assert os.fstat(fd).st_size == 50
        assert pread_all(fd, 100, 0) == b"a" * 50
        os.ftruncate(fd, 5_000)
        assert os.fstat(fd).st_size == 5_000
        assert pread_all(fd, 10_000, 0) == b"a" * 50 + bytes(4_950)
        pwrite_all(fd, b"tail", 6_000)
    finally:
        os.close(fd)
    assert read_fresh(path) == b"a" * 50 + bytes(5_950) + b"tail"
    drop_caches(3)
    assert read_fresh(path) == b"a" * 50 + bytes(5_950) + b"tail"
    os.truncate(path, 0)
    assert os.stat(path).st_size == 0
    assert read_fresh(path) == b""
    expect_errno(errno.EISDIR, os.truncate, root, 0)


def tst_truncate_across_chunk_boundary(root: Path) -> None:
    path = root / "file"
    start = CHUNK_SIZE_BYTES - 4096
    fd = os.open(path, os.O_CREAT | os.O_RDWR, 0o644)
    try:
        pwrite_all(fd, b"b" * 8192, start)  # straddles the boundary
        os.ftruncate(fd, CHUNK_SIZE_BYTES - 100)
        os.ftruncate(fd, CHUNK_SIZE_BYTES + 8192)
    finally:
        os.close(fd)
    assert os.stat(path).st_size == CHUNK_SIZE_BYTES + 8192
    drop_caches(1)
    assert read_fresh(path, 12_288, start) == b"b" * 3996 + bytes(8292)
    assert read_fresh(path, 4096, 0) == bytes(4096)


def tst_sparse_file(root: Path) -> None:
    path = root / "sparse"
    with open(path, "wb") as file:
        file.seek(10 * MiB)
        file.write(b"end")
    assert os.stat(path).st_size == 10 * MiB + 3
    assert read_fresh(path, 4096, 0) == bytes(4096)
    assert read_fresh(path, 65_536, 5 * MiB + 1) == bytes(65_536)
    assert read_fresh(path, 100, 10 * MiB - 10) == bytes(10) + b"end"
    assert read_fresh(path, 100, 10 * MiB + 3) == b""  # at end of file
    assert read_fresh(path, 100, 20 * MiB) == b""  # past it
    fd = os.open(path, os.O_RDWR)
    try:
        pwrite_all(fd, b"middle", 3 * MiB)
    finally:
        os.close(fd)
    drop_caches(1)
    assert read_fresh(path, 3 * MiB + 4096, 0) == bytes(3 * MiB) + b"middle" + bytes(4090)
    assert read_fresh(path) == bytes(3 * MiB) + b"middle" + bytes(7 * MiB - 6) + b"end"


def tst_unaligned_write_across_chunk_boundary(root: Path) -> None:
    path = root / "big"
    offset = CHUNK_SIZE_BYTES - 4000
    data = os.urandom(MiB)
    fd = os.open(path, os.O_CREAT | os.O_WRONLY, 0o644)
    try:
        pwrite_all(fd, data, offset)
    finally:
        os.close(fd)
    assert os.stat(path).st_size == offset + MiB
    drop_caches(1)
    assert read_fresh(path, 20, CHUNK_SIZE_BYTES - 10) == data[3990:4010]
    assert read_fresh(path, MiB + 8192, offset - 8192) == bytes(8192) + data
    assert read_fresh(path, 4096, 0) == bytes(4096)


# --- directories -----------------------------------------------------------------------
def tst_mkdir_rmdir(root: Path) -> None:
    links_before = os.stat(root).st_nlink
    directory = root / "dir"
    os.mkdir(directory, 0o750)
    info = os.stat(directory)
    assert stat.S_ISDIR(info.st_mode)
    assert stat.S_IMODE(info.st_mode) == 0o750 & ~current_umask()
    assert info.st_nlink == 2
    assert os.stat(root).st_nlink == links_before + 1
    assert os.listdir(directory) == []
    expect_errno(errno.EEXIST, os.mkdir, directory)
    write_file(directory / "file", b"x")
    expect_errno(errno.EEXIST, os.mkdir, directory / "file")
    expect_errno(errno.ENOTEMPTY, os.rmdir, directory)
    expect_errno(errno.ENOTDIR, os.rmdir, directory / "file")
    expect_errno(errno.ENOTDIR, os.mkdir, directory / "file" / "sub")
    expect_errno(errno.ENOTDIR, os.listdir, directory / "file")
    expect_errno({errno.EISDIR, errno.EPERM}, os.unlink, directory)  # Linux: EISDIR
    expect_errno(errno.ENOENT, os.mkdir, root / "no" / "such")
    os.unlink(directory / "file")
    os.rmdir(directory)
    assert not directory.exists()
    expect_errno(errno.ENOENT, os.rmdir, directory)
    assert os.stat(root).st_nlink == links_before
    os.makedirs(root / "a" / "b" / "c")
    assert os.stat(root / "a").st_nlink == 3
    os.rmdir(root / "a" / "b" / "c")
    assert os.stat(root / "a" / "b").st_nlink == 2
    os.rmdir(root / "a" / "b")
    os.rmdir(root / "a")
    assert os.listdir(root) == []


def tst_readdir_many_entries(root: Path) -> None:
    files = {f"entry-{index:04d}-{'x' * 40}" for index in range(READDIR_ENTRIES)}
    create_empty_files(root, files)
    directories = {f"dir-{index}" for index in range(10)}
    links = {f"link-{index}" for index in range(10)}
    for name in directories:
        os.mkdir(root / name)
    for name in links:
        os.symlink("somewhere", root / name)
    listed = os.listdir(root)
    assert "." not in listed and ".." not in listed
    assert len(listed) == len(set(listed)), "a name was listed twice"
    assert set(listed) == files | directories | links
    with os.scandir(root) as entries:
        by_name = {entry.name: entry for entry in entries}
    assert set(by_name) == files | directories | links
    for name in directories:
        assert by_name[name].is_dir(follow_symlinks=False)
    for name in links:
        assert by_name[name].is_symlink()
    for name in sorted(files)[::100]:
        entry = by_name[name]
        assert entry.is_file(follow_symlinks=False)
        assert entry.inode() == os.lstat(root / name).st_ino
    # A second listing of the unchanged directory gives the same.
    assert sorted(os.listdir(root)) == sorted(listed)


def tst_readdir_while_deleting(root: Path) -> None:
    names = [f"victim-{index:04d}-{'y' * 40}" for index in range(READDIR_ENTRIES)]
    create_empty_files(root, names)
    seen: list[str] = []
    deleted: set[str] = set()
    with os.scandir(root) as entries:
        for entry in entries:
            seen.append(entry.name)
            if len(seen) == 100:
                # Some of these were listed already, most not yet.
                for name in names[::3]:
                    os.unlink(root / name)
                    deleted.add(name)
    assert len(seen) == len(set(seen)), "a name was listed twice"
    assert set(seen) <= set(names)
    survivors = set(names) - deleted
    missing = survivors - set(seen)
    assert not missing, f"{len(missing)} surviving entries never listed, e.g. {min(missing)}"
    assert set(os.listdir(root)) == survivors


# --- links -----------------------------------------------------------------------------
def tst_hard_links(root: Path) -> None:
    first = root / "first"
    os.mkdir(root / "sub")
    second = root / "sub" / "second"
    write_file(first, b"shared data")
    os.link(first, second)
    info_first, info_second = os.stat(first), os.stat(second)
    assert info_first.st_ino == info_second.st_ino
    assert info_first.st_nlink == info_second.st_nlink == 2
    with open(second, "r+b") as file:
        file.write(b"SHARED")
    assert read_fresh(first) == b"SHARED data"
    expect_errno(errno.EEXIST, os.link, first, second)
    expect_errno(errno.EPERM, os.link, root / "sub", root / "dirlink")
    expect_errno(errno.ENOENT, os.link, root / "missing", root / "other")
    os.unlink(first)
    assert not first.exists()
    assert os.stat(second).st_nlink == 1
    assert read_fresh(second) == b"SHARED data"
    drop_caches(3)
    assert os.stat(second).st_nlink == 1
    assert os.stat(second).st_ino == info_first.st_ino
    assert read_fresh(second) == b"SHARED data"


def tst_symlinks(root: Path) -> None:
    target = root / "target"
    write_file(target, b"pointed at")
    link = root / "link"
    os.symlink("target", link)
    assert os.readlink(link) == "target"
    link_info = os.lstat(link)
    assert stat.S_ISLNK(link_info.st_mode)
    assert link_info.st_size == len("target")
    assert link_info.st_ino != os.stat(target).st_ino
    assert os.stat(link).st_ino == os.stat(target).st_ino  # stat follows
    assert stat.S_ISREG(os.stat(link).st_mode)
    assert read_fresh(link) == b"pointed at"
    dangling = root / "dangling"
    os.symlink("nowhere/at/all", dangling)
    assert os.readlink(dangling) == "nowhere/at/all"
    assert stat.S_ISLNK(os.lstat(dangling).st_mode)
    expect_errno(errno.ENOENT, os.stat, dangling)
    assert not os.path.exists(dangling) and os.path.lexists(dangling)
    os.mkdir(root / "dir")
    write_file(root / "dir" / "inside", b"")
    os.symlink("dir", root / "dirlink")
    assert os.listdir(root / "dirlink") == ["inside"]
    long_target = "/".join(["component"] * 100)  # about 1 KiB
    os.symlink(long_target, root / "long")
    assert os.readlink(root / "long") == long_target
    expect_errno(errno.EEXIST, os.symlink, "x", link)
    expect_errno(errno.EINVAL, os.readlink, target)
    os.unlink(link)
    assert not os.path.lexists(link)
    assert read_fresh(target) == b"pointed at"
    drop_caches(2)
    assert os.readlink(dangling) == "nowhere/at/all"


# --- rename ----------------------------------------------------------------------------
def tst_rename_file(root: Path) -> None:
    a, b = root / "a", root / "b"
    write_file(a, b"content of a")
    inode = os.stat(a).st_ino
    os.rename(a, b)
    assert not a.exists()
    assert os.stat(b).st_ino == inode
    assert read_fresh(b) == b"content of a"
    os.mkdir(root / "sub")
    os.rename(b, root / "sub" / "c")  # to another directory
    assert os.listdir(root / "sub") == ["c"]
    assert os.stat(root / "sub" / "c").st_ino == inode
    # Over an existing file: the old target loses this name, keeps its other.
    old, new = root / "old", root / "new"
    write_file(old, b"old data")
    os.link(old, root / "old-other-name")
    write_file(new, b"new data")
    new_inode = os.stat(new).st_ino
    os.rename(new, old)
    assert not new.exists()
    assert os.stat(old).st_ino == new_inode
    assert read_fresh(old) == b"new data"
    assert os.stat(root / "old-other-name").st_nlink == 1
    assert read_fresh(root / "old-other-name") == b"old data"
    # Onto itself, or onto another name of the same inode: nothing happens.
    os.rename(old, old)
    assert read_fresh(old) == b"new data"
    os.link(old, root / "alias")
    os.rename(old, root / "alias")
    assert old.exists() and (root / "alias").exists()
    assert os.stat(old).st_nlink == 2
    expect_errno(errno.ENOENT, os.rename, root / "missing", root / "x")
    expect_errno(errno.EISDIR, os.rename, old, root / "sub")
    assert sorted(os.listdir(root)) == ["alias", "old", "old-other-name", "sub"]


def tst_rename_directory(root: Path) -> None:
    one, two = root / "one", root / "two"
    os.mkdir(one)
    os.mkdir(two)
    moved = one / "moved"
    os.makedirs(moved / "deeper")
    write_file(moved / "file", b"in moved")
    inode = os.stat(moved).st_ino
    os.rename(moved, one / "renamed")
    assert os.stat(one / "renamed").st_ino == inode
    assert sorted(os.listdir(one / "renamed")) == ["deeper", "file"]
    assert (os.stat(one).st_nlink, os.stat(two).st_nlink) == (3, 2)
    os.rename(one / "renamed", two / "renamed")  # to another parent: '..' moves with it
    assert (os.stat(one).st_nlink, os.stat(two).st_nlink) == (2, 3)
    assert read_fresh(two / "renamed" / "file") == b"in moved"
    # Over an empty directory: replaced.
    os.mkdir(root / "empty")
    os.rename(two / "renamed", root / "empty")
    assert os.stat(root / "empty").st_ino == inode
    assert os.stat(two).st_nlink == 2
    # Over a non-empty one: refused (Linux says ENOTEMPTY; POSIX allows EEXIST).
    os.mkdir(root / "full")
    write_file(root / "full" / "keep", b"keep")
    expect_errno({errno.ENOTEMPTY, errno.EEXIST}, os.rename, root / "empty", root / "full")
    assert read_fresh(root / "full" / "keep") == b"keep"
    # Over a file, into itself or its own subtree: refused.
    write_file(root / "plain", b"")
    expect_errno(errno.ENOTDIR, os.rename, root / "empty", root / "plain")
    expect_errno(errno.EINVAL, os.rename, root / "empty", root / "empty" / "deeper" / "x")
    expect_errno(errno.EINVAL, os.rename, root / "empty", root / "empty" / "x")
    assert os.stat(root / "empty").st_ino == inode
    assert sorted(os.listdir(root)) == ["empty", "full", "one", "plain", "two"]


def tst_renameat2_noreplace(root: Path) -> None:
    a, b, c = root / "a", root / "b", root / "c"
    write_file(a, b"A")
    write_file(b, b"B")
    expect_errno(errno.EEXIST, renameat2, a, b, RENAME_NOREPLACE)
    assert (read_fresh(a), read_fresh(b)) == (b"A", b"B")
    renameat2(a, c, RENAME_NOREPLACE)
    assert not a.exists()
    assert read_fresh(c) == b"A"
    os.mkdir(root / "d")
    expect_errno(errno.EEXIST, renameat2, c, root / "d", RENAME_NOREPLACE)


def tst_renameat2_exchange(root: Path) -> None:
    a, b = root / "a", root / "b"
    write_file(a, b"A")
    write_file(b, b"B")
    inode_a, inode_b = os.stat(a).st_ino, os.stat(b).st_ino
    renameat2(a, b, RENAME_EXCHANGE)
    assert (read_fresh(a), read_fresh(b)) == (b"B", b"A")
    assert (os.stat(a).st_ino, os.stat(b).st_ino) == (inode_b, inode_a)
    # A file and a directory in different parents trade places.
    os.mkdir(root / "p1")
    os.mkdir(root / "p2")
    write_file(root / "p1" / "x", b"file")
    os.mkdir(root / "p2" / "y")
    write_file(root / "p2" / "y" / "inside", b"")
    renameat2(root / "p1" / "x", root / "p2" / "y", RENAME_EXCHANGE)
    assert os.listdir(root / "p1" / "x") == ["inside"]
    assert read_fresh(root / "p2" / "y") == b"file"
    assert (os.stat(root / "p1").st_nlink, os.stat(root / "p2").st_nlink) == (3, 2)
    expect_errno(errno.ENOENT, renameat2, a, root / "missing", RENAME_EXCHANGE)
    assert read_fresh(a) == b"B"
    expect_errno(errno.EINVAL, renameat2, a, b, RENAME_EXCHANGE | RENAME_NOREPLACE)


# --- attributes ------------------------------------------------------------------------
def tst_chmod_chown(root: Path) -> None:
    path = root / "file"
    write_file(path, b"data")
    os.chmod(path, 0o604)
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o604
    os.chmod(path, 0o4755)
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o4755
    os.chmod(root, 0o711)
    assert stat.S_IMODE(os.stat(root).st_mode) == 0o711
    os.chmod(root, 0o755)
    os.chown(path, 1234, 5678)
    info = os.stat(path)
    assert (info.st_uid, info.st_gid) == (1234, 5678)
    # Linux: a chown (root's included) clears set-user-ID on a regular file.
    assert stat.S_IMODE(info.st_mode) == 0o755
    os.chown(path, -1, 42)
    assert (os.stat(path).st_uid, os.stat(path).st_gid) == (1234, 42)
    os.symlink("file", root / "link")
    os.chown(root / "link", 7, 8, follow_symlinks=False)
    assert (os.lstat(root / "link").st_uid, os.lstat(root / "link").st_gid) == (7, 8)
    assert (os.stat(path).st_uid, os.stat(path).st_gid) == (1234, 42)
    drop_caches(2)
    info = os.stat(path)
    assert (info.st_uid, info.st_gid, stat.S_IMODE(info.st_mode)) == (1234, 42, 0o755)


def tst_utimens(root: Path) -> None:
    path = root / "file"
    write_file(path, b"data")
    atime_ns, mtime_ns = 1_000_000_001_111_111_111, 1_100_000_002_222_222_222
    os.utime(path, ns=(atime_ns, mtime_ns))
    info = os.stat(path)
    assert (info.st_atime_ns, info.st_mtime_ns) == (atime_ns, mtime_ns)
    before = time.time_ns()
    os.utime(path)  # both to now (UTIME_NOW)
    info = os.stat(path)
    for stamp in (info.st_atime_ns, info.st_mtime_ns):
        assert abs(stamp - before) < CLOCK_SLACK_NS
    os.utime(root, ns=(atime_ns, mtime_ns))
    assert os.stat(root).st_mtime_ns == mtime_ns
    os.symlink("file", root / "link")
    target_mtime = os.stat(path).st_mtime_ns
    os.utime(root / "link", ns=(atime_ns, mtime_ns + 1), follow_symlinks=False)
    assert os.lstat(root / "link").st_mtime_ns == mtime_ns + 1
    assert os.stat(path).st_mtime_ns == target_mtime
    drop_caches(2)
    assert os.lstat(root / "link").st_mtime_ns == mtime_ns + 1


def tst_mtime_changes_on_write(root: Path) -> None:
    path = root / "file"
    write_file(path, b"0123456789")
    old_ns = 1_000_000_000 * 10**9
    os.utime(path, ns=(old_ns, old_ns))
    with open(path, "r+b") as file:
        file.seek(3)
        file.write(b"x")  # an overwrite inside the file, no growth
    now = time.time_ns()
    info = os.stat(path)
    assert abs(info.st_mtime_ns - now) < CLOCK_SLACK_NS, "write did not update mtime"
    assert abs(info.st_ctime_ns - now) < CLOCK_SLACK_NS
    os.utime(path, ns=(old_ns, old_ns))
    os.truncate(path, 4)
    assert abs(os.stat(path).st_mtime_ns - time.time_ns()) < CLOCK_SLACK_NS
    os.utime(root, ns=(old_ns, old_ns))
    write_file(root / "new", b"")
    assert abs(os.stat(root).st_mtime_ns - time.time_ns()) < CLOCK_SLACK_NS
    drop_caches(2)
    assert abs(os.stat(path).st_mtime_ns - time.time_ns()) < CLOCK_SLACK_NS


def tst_inode_numbers_stable(root: Path) -> None:
    path = root / "file"
    write_file(path, b"data")
    os.mkdir(root / "dir")
    inode, dir_inode = os.stat(path).st_ino, os.stat(root / "dir").st_ino
    assert inode != dir_inode
    os.rename(path, root / "dir" / "moved")
    os.rename(root / "dir", root / "dir2")
    assert os.stat(root / "dir2" / "moved").st_ino == inode
    assert os.stat(root / "dir2").st_ino == dir_inode
    drop_caches(2)
    assert os.stat(root / "dir2" / "moved").st_ino == inode
    assert os.stat(root / "dir2").st_ino == dir_inode
    with os.scandir(root / "dir2") as entries:
        assert [entry.inode() for entry in entries] == [inode]
    os.link(root / "dir2" / "moved", root / "hard")
    drop_caches(2)
    assert os.stat(root / "hard").st_ino == inode
    fd = os.open(root / "hard", os.O_RDONLY)
    try:
        assert os.fstat(fd).st_ino == inode
    finally:
        os.close(fd)
    write_file(root / "other", b"")
    assert os.stat(root / "other").st_ino not in (inode, dir_inode)


# --- extended attributes -----------------------------------------------------------------
def tst_xattrs_user(root: Path) -> None:
    path = root / "file"
    write_file(path, b"")
    os.setxattr(path, "user.color", b"blue")
    assert os.getxattr(path, "user.color") == b"blue"
    binary = bytes(range(256)) * 8  # NULs and high bytes, 2 KiB
    os.setxattr(path, "user.binary", binary)
    os.setxattr(path, "user.empty", b"")
    assert os.getxattr(path, "user.binary") == binary
    assert os.getxattr(path, "user.empty") == b""
    assert {"user.color", "user.binary", "user.empty"} <= set(os.listxattr(path))
    os.setxattr(path, "user.color", b"green")  # no flags: replaces
    assert os.getxattr(path, "user.color") == b"green"
    os.removexattr(path, "user.color")
    expect_errno(errno.ENODATA, os.getxattr, path, "user.color")
    expect_errno(errno.ENODATA, os.removexattr, path, "user.color")
    assert "user.color" not in os.listxattr(path)
    os.setxattr(root, "user.on-a-directory", b"yes")
    assert os.getxattr(root, "user.on-a-directory") == b"yes"
    drop_caches(2)
    assert os.getxattr(path, "user.binary") == binary
    assert "user.on-a-directory" in os.listxattr(root)


def tst_xattr_create_replace_flags(root: Path) -> None:
    path = root / "file"
    write_file(path, b"")
    os.setxattr(path, "user.once", b"first", os.XATTR_CREATE)
    expect_errno(errno.EEXIST, os.setxattr, path, "user.once", b"second", os.XATTR_CREATE)
    assert os.getxattr(path, "user.once") == b"first"
    os.setxattr(path, "user.once", b"third", os.XATTR_REPLACE)
    assert os.getxattr(path, "user.once") == b"third"
    expect_errno(errno.ENODATA, os.setxattr, path, "user.absent", b"x", os.XATTR_REPLACE)
    expect_errno(errno.ENODATA, os.getxattr, path, "user.absent")
    assert "user.absent" not in os.listxattr(path)


def tst_xattrs_trusted_and_security(root: Path) -> None:
    path = root / "file"
    write_file(path, b"")
    names = {"trusted.vmstore-test": b"trusted value",
             "security.vmstore-test": b"security value"}
    for name, value in names.items():
        os.setxattr(path, name, value)
    for name, value in names.items():
        assert os.getxattr(path, name) == value
    assert set(names) <= set(os.listxattr(path))
    drop_caches(2)
    for name, value in names.items():
        assert os.getxattr(path, name) == value
        os.removexattr(path, name)
        expect_errno(errno.ENODATA, os.getxattr, path, name)
    assert not set(names) & set(os.listxattr(path))


# --- permissions (default_permissions) ---------------------------------------------------
def tst_permissions_for_other_user(root: Path) -> None:
    os.chmod(root, 0o755)
    write_file(root / "secret", b"secret")
    os.chmod(root / "secret", 0o600)
    write_file(root / "public", b"public")
    os.chmod(root / "public", 0o644)
    os.mkdir(root / "private", 0o700)
    os.chmod(root / "private", 0o700)
    write_file(root / "private" / "inside", b"inside")
    os.chmod(root / "private" / "inside", 0o644)

    def probe() -> dict[str, tuple[str, Any]]:
        return {
            "read secret": outcome(lambda: read_fresh(Path("secret"))),
            "read public": outcome(lambda: read_fresh(Path("public"))),
            "write public": outcome(lambda: os.close(os.open("public", os.O_WRONLY))),
            "create here": outcome(lambda: os.close(os.open("new", os.O_CREAT | os.O_WRONLY))),
            "unlink public": outcome(lambda: os.unlink("public")),
            "list private": outcome(lambda: os.listdir("private")),
            "read in private": outcome(lambda: read_fresh(Path("private/inside"))),
            "chmod public": outcome(lambda: os.chmod("public", 0o666)),
            "chown public": outcome(lambda: os.chown("public", NOBODY, -1)),
        }

    assert as_user(root, probe) == {
        "read secret": ("errno", "EACCES"),
        "read public": ("ok", b"public"),
        "write public": ("errno", "EACCES"),
        "create here": ("errno", "EACCES"),
        "unlink public": ("errno", "EACCES"),
        "list private": ("errno", "EACCES"),
        "read in private": ("errno", "EACCES"),
        "chmod public": ("errno", "EPERM"),
        "chown public": ("errno", "EPERM"),
    }
    assert sorted(os.listdir(root)) == ["private", "public", "secret"]
    assert stat.S_IMODE(os.stat(root / "public").st_mode) == 0o644


def tst_new_file_owned_by_creator(root: Path) -> None:
    os.chmod(root, 0o777)

    def create() -> dict[str, tuple[int, int]]:
        write_file(Path("mine"), b"mine", 0o644)
        os.mkdir("mydir")
        os.symlink("mine", "mylink")
        os.chmod("mine", 0o600)  # the owner may
        return {name: (os.lstat(name).st_uid, os.lstat(name).st_gid)
                for name in ("mine", "mydir", "mylink")}

    owners = as_user(root, create)
    assert owners == {name: (NOBODY, NOBODY) for name in ("mine", "mydir", "mylink")}
    drop_caches(2)
    for name in ("mine", "mydir", "mylink"):
        info = os.lstat(root / name)
        assert (info.st_uid, info.st_gid) == (NOBODY, NOBODY), name
    assert stat.S_IMODE(os.stat(root / "mine").st_mode) == 0o600
    assert read_fresh(root / "mine") == b"mine"


def tst_write_by_other_user_clears_setuid(root: Path) -> None:
    os.chmod(root, 0o755)
    path = root / "program"
    write_file(path, b"#!/bin/true\n")
    os.chmod(path, 0o4777)
    as_user(root, lambda: write_file(Path("program"), b"#!/bin/false\n"))
    assert read_fresh(path) == b"#!/bin/false\n"
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o777


def tst_setgid_directory(root: Path) -> None:
    shared = root / "shared"
    os.mkdir(shared)
    os.chown(shared, -1, OTHER_GID)
    os.chmod(shared, 0o2777)
    assert stat.S_IMODE(os.stat(shared).st_mode) == 0o2777
    write_file(shared / "by-root", b"")
    os.mkdir(shared / "subdir-by-root")
    assert os.stat(shared / "by-root").st_gid == OTHER_GID
    sub = os.stat(shared / "subdir-by-root")
    assert sub.st_gid == OTHER_GID
    assert sub.st_mode & stat.S_ISGID
    os.mkdir(shared / "subdir-by-root" / "deeper")
    deeper = os.stat(shared / "subdir-by-root" / "deeper")
    assert (deeper.st_gid, bool(deeper.st_mode & stat.S_ISGID)) == (OTHER_GID, True)

    def create() -> None:
        write_file(Path("by-nobody"), b"")
        os.mkdir("subdir-by-nobody")

    as_user(shared, create)  # not a member of OTHER_GID, and still gets it
    info = os.stat(shared / "by-nobody")
    assert (info.st_uid, info.st_gid) == (NOBODY, OTHER_GID)
    assert not info.st_mode & stat.S_ISGID
    sub = os.stat(shared / "subdir-by-nobody")
    assert (sub.st_uid, sub.st_gid) == (NOBODY, OTHER_GID)
    assert sub.st_mode & stat.S_ISGID


# --- the filesystem, names ---------------------------------------------------------------
def tst_statvfs(root: Path) -> None:
    info = os.statvfs(root)
    assert info.f_bsize > 0
    assert info.f_frsize > 0
    assert info.f_blocks > 0
    assert info.f_bfree <= info.f_blocks
    assert info.f_bavail <= info.f_blocks
    assert info.f_namemax == 255


def tst_name_length_limits(root: Path) -> None:
    longest = "n" * 255
    write_file(root / longest, b"long name")
    assert longest in os.listdir(root)
    assert read_fresh(root / longest) == b"long name"
    multibyte = "é" * 127 + "x"  # 255 bytes in UTF-8
    assert len(os.fsencode(multibyte)) == 255
    os.mkdir(root / multibyte)
    os.rename(root / longest, root / multibyte / ("m" * 255))
    assert os.listdir(root / multibyte) == ["m" * 255]
    too_long = "t" * 256
    expect_errno(errno.ENAMETOOLONG, os.open, root / too_long, os.O_CREAT | os.O_WRONLY)
    expect_errno(errno.ENAMETOOLONG, os.stat, root / too_long)
    expect_errno(errno.ENAMETOOLONG, os.mkdir, root / too_long)
    expect_errno(errno.ENAMETOOLONG, os.symlink, "x", root / too_long)
    expect_errno(errno.ENAMETOOLONG, os.rename, root / multibyte, root / too_long)
    expect_errno(errno.ENAMETOOLONG, os.stat, root / ("é" * 128))  # 256 bytes
    assert os.listdir(root) == [multibyte]


# --- open files ------------------------------------------------------------------------
def tst_unlinked_open_file_keeps_data(root: Path) -> None:
    path = root / "file"
    fd = os.open(path, os.O_CREAT | os.O_RDWR, 0o644)
    try:
        pwrite_all(fd, b"still here", 0)
        os.unlink(path)
        assert not os.path.lexists(path)
        assert os.listdir(root) == []
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)  # read from the filesystem
        assert pread_all(fd, 100, 0) == b"still here"
        pwrite_all(fd, b" and writable", 10)
        os.fsync(fd)
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        assert pread_all(fd, 100, 0) == b"still here and writable"
        info = os.fstat(fd)
        assert (info.st_nlink, info.st_size) == (0, 23)
    finally:
        os.close(fd)
    assert os.listdir(root) == []


def tst_fsync_and_fdatasync(root: Path) -> None:
    path = root / "file"
    fd = os.open(path, os.O_CREAT | os.O_RDWR, 0o644)
    try:
        pwrite_all(fd, b"durable", 0)
        os.fsync(fd)  # an error would raise: 0 is the only success
        pwrite_all(fd, b"!", 7)
        os.fdatasync(fd)
        os.fsync(fd)  # nothing new to sync
    finally:
        os.close(fd)
    reader = os.open(path, os.O_RDONLY)
    try:
        os.fsync(reader)
        assert pread_all(reader, 100, 0) == b"durable!"
    finally:
        os.close(reader)
    directory = os.open(root, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(directory)
    finally:
        os.close(directory)
    assert os.stat(path).st_size == 8


def tst_o_direct(root: Path) -> None:
    path = root / "direct"
    first = bytes(range(256)) * 16
    second = bytes(reversed(range(256))) * 16
    buffer = mmap.mmap(-1, 4096)  # page aligned, as O_DIRECT wants
    fd = os.open(path, os.O_CREAT | os.O_RDWR | os.O_DIRECT, 0o644)
    try:
        buffer[:] = first
        assert os.pwrite(fd, buffer, 0) == 4096
        buffer[:] = second
        assert os.pwrite(fd, buffer, 8192) == 4096
        assert os.fstat(fd).st_size == 12_288
        buffer[:] = b"\xff" * 4096
        assert os.preadv(fd, [buffer], 0) == 4096
        assert bytes(buffer) == first
        assert os.preadv(fd, [buffer], 4096) == 4096
        assert bytes(buffer) == bytes(4096)  # the hole
        assert os.preadv(fd, [buffer], 8192) == 4096
        assert bytes(buffer) == second
        assert os.preadv(fd, [buffer], 12_288) == 0  # at end of file
    finally:
        os.close(fd)
        buffer.close()
    assert read_fresh(path) == first + bytes(4096) + second


def tst_mkfifo(root: Path) -> None:
    fifo = root / "fifo"
    os.mkfifo(fifo, 0o640)
    info = os.stat(fifo)
    assert stat.S_ISFIFO(info.st_mode)
    assert stat.S_IMODE(info.st_mode) == 0o640 & ~current_umask()
    assert info.st_size == 0
    # A FIFO's data goes through the kernel, not the filesystem.
    reader = os.open(fifo, os.O_RDONLY | os.O_NONBLOCK)
    try:
        writer = os.open(fifo, os.O_WRONLY | os.O_NONBLOCK)
        try:
            os.write(writer, b"through the pipe")
        finally:
            os.close(writer)
        assert os.read(reader, 100) == b"through the pipe"
    finally:
        os.close(reader)
    os.mknod(root / "regular", stat.S_IFREG | 0o600)
    assert stat.S_ISREG(os.stat(root / "regular").st_mode)
    drop_caches(2)
    assert stat.S_ISFIFO(os.stat(fifo).st_mode)
    expect_errno(errno.EEXIST, os.mkfifo, fifo)
    os.unlink(fifo)
    assert os.listdir(root) == ["regular"]


def tst_image_locks_exclude_a_second_opener(root: Path) -> None:
    """QEMU locks images with OFD locks (bytes 100+ and 200+); flock is the other kind.

    Both belong to an open file description, so two opens in one process
    conflict as two processes would. On a FUSE mount without lock
    operations the kernel keeps them, per host: what QEMU needs there.
    """
    f_ofd_setlk = 37  # <fcntl.h>; the fcntl module does not name it
    path = root / "disk.img"
    path.write_bytes(bytes(4096))

    def ofd_lock(fd: int, lock_type: int, start: int) -> None:
        fcntl.fcntl(fd, f_ofd_setlk, struct.pack("hhqqi4x", lock_type, os.SEEK_SET, start,
                                                 1, 0))

    first, second = os.open(path, os.O_RDWR), os.open(path, os.O_RDWR)
    try:
        ofd_lock(first, fcntl.F_WRLCK, 201)
        expect_errno(errno.EAGAIN, ofd_lock, second, fcntl.F_RDLCK, 201)
        ofd_lock(second, fcntl.F_RDLCK, 100)  # other bytes are free
        ofd_lock(first, fcntl.F_UNLCK, 201)
        ofd_lock(second, fcntl.F_RDLCK, 201)
        fcntl.flock(first, fcntl.LOCK_EX | fcntl.LOCK_NB)
        expect_errno(errno.EWOULDBLOCK, fcntl.flock, second, fcntl.LOCK_SH | fcntl.LOCK_NB)
    finally:
        os.close(first)
        os.close(second)
    third = os.open(path, os.O_RDWR)  # closing released everything
    try:
        fcntl.flock(third, fcntl.LOCK_EX | fcntl.LOCK_NB)
        ofd_lock(third, fcntl.F_WRLCK, 201)
    finally:
        os.close(third)
