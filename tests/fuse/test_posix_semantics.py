"""Semantics from the POSIX battery (tests/posix.py), at the handlers.

tests/posix.py is written against a path (``os.*`` calls through the
kernel), so it needs a kernel mount and runs in tests/system. What the
filesystem itself decides (link counts, rename rules, setgid inheritance,
names, readdir positions under change) is checked here too, in process and
under virtual time; what the kernel decides (permission checks under
``default_permissions``, setuid cleared by a write, O_DIRECT, mmap, locks)
stays with the battery. Each test names the ``tst_`` it ports.
"""

from __future__ import annotations

import errno
import os
import stat
from collections.abc import Iterable

import pyfuse3
import trio

from tests.fuse.kernel import (
    FILE_MODE,
    ROOT,
    ROOT_INODE,
    Ctx,
    Fields,
    Kernel,
    attributes,
    create_file,
    expect_errno,
    names,
    readdir,
)
from vmstore.dfs.constants import READDIR_BATCH_ENTRIES_MAX
from vmstore.fuse.operations import VmstoreOperations

DIR_MODE = stat.S_IFDIR | 0o755
NOBODY = Ctx(uid=65534, gid=65534)
OTHER_GID = 4321


async def mkdir(operations: VmstoreOperations, parent: int, name: bytes,
                ctx: Ctx = ROOT) -> pyfuse3.EntryAttributes:
    return await operations.mkdir(parent, name, DIR_MODE, ctx)


async def make_files(operations: VmstoreOperations, directory: int,
                     file_names: Iterable[bytes]) -> None:
    """Empty files, made at once as many processes would (the master commits them together)."""
    async with trio.open_nursery() as nursery:
        for name in file_names:
            nursery.start_soon(operations.mknod, directory, name, FILE_MODE, 0, ROOT)


async def nlink(operations: VmstoreOperations, inode: int) -> int:
    return (await operations.getattr(inode, ROOT)).st_nlink


async def test_readdir_across_batches_of_the_master(operations: VmstoreOperations,
                                                    kernel: Kernel,
                                                    sim_clock: trio.abc.Clock) -> None:
    """tst_readdir_many_entries: more entries than one of the mount's batches."""
    directory = (await mkdir(operations, ROOT_INODE, b"d")).st_ino
    files = {b"entry-%04d-" % index + b"x" * 40 for index in range(READDIR_BATCH_ENTRIES_MAX + 20)}
    await make_files(operations, directory, files)
    await mkdir(operations, directory, b"sub")
    await operations.symlink(directory, b"link", b"somewhere", ROOT)
    listing = await readdir(operations, kernel, directory)
    listed = names(listing)[2:]
    assert len(listed) == len(set(listed)), "a name was listed twice"
    assert set(listed) == files | {b"sub", b"link"}
    kinds = {name: stat.S_IFMT(attr.st_mode) for name, attr, _ in listing}
    assert (kinds[b"sub"], kinds[b"link"]) == (stat.S_IFDIR, stat.S_IFLNK)
    for name, attr, _next_id in listing[2::100]:
        assert (await operations.lookup(directory, name, ROOT)).st_ino == attr.st_ino
    assert names(await readdir(operations, kernel, directory)) == names(listing)


async def test_readdir_while_deleting(operations: VmstoreOperations, kernel: Kernel,
                                      sim_clock: trio.abc.Clock) -> None:
    """tst_readdir_while_deleting: positions survive deletions, nothing twice or skipped."""
    directory = (await mkdir(operations, ROOT_INODE, b"d")).st_ino
    all_names = [b"victim-%04d" % index for index in range(150)]
    await make_files(operations, directory, all_names)
    kernel.room = 50
    seen = names(await readdir(operations, kernel, directory))
    position = kernel.listing[-1][2]
    deleted = set(all_names[::3])
    for name in deleted:
        await operations.unlink(directory, name, ROOT)
    kernel.room = None
    seen += names(await readdir(operations, kernel, directory, position))
    seen = seen[2:]
    assert len(seen) == len(set(seen)), "a name was listed twice"
    survivors = set(all_names) - deleted
    assert survivors <= set(seen) <= set(all_names)


async def test_rename_directory(operations: VmstoreOperations, kernel: Kernel,
                                sim_clock: trio.abc.Clock) -> None:
    """tst_rename_directory: '..' moves with it, and link counts with '..'."""
    one = (await mkdir(operations, ROOT_INODE, b"one")).st_ino
    two = (await mkdir(operations, ROOT_INODE, b"two")).st_ino
    moved = (await mkdir(operations, one, b"moved")).st_ino
    await mkdir(operations, moved, b"deeper")
    await create_file(operations, b"file", b"in moved", parent=moved)
    await operations.rename(one, b"moved", one, b"renamed", 0, ROOT)
    assert (await operations.lookup(one, b"renamed", ROOT)).st_ino == moved
    assert (await nlink(operations, one), await nlink(operations, two)) == (3, 2)
    await operations.rename(one, b"renamed", two, b"renamed", 0, ROOT)
    assert (await nlink(operations, one), await nlink(operations, two)) == (2, 3)
    assert sorted(names(await readdir(operations, kernel, moved))[2:]) == [b"deeper", b"file"]

    await mkdir(operations, ROOT_INODE, b"empty")
    await operations.rename(two, b"renamed", ROOT_INODE, b"empty", 0, ROOT)  # replaces it
    assert (await operations.lookup(ROOT_INODE, b"empty", ROOT)).st_ino == moved
    assert await nlink(operations, two) == 2
    full = (await mkdir(operations, ROOT_INODE, b"full")).st_ino
    await create_file(operations, b"keep", b"keep", parent=full)
    await expect_errno(errno.ENOTEMPTY, operations.rename, ROOT_INODE, b"empty", ROOT_INODE,
                       b"full", 0, ROOT)
    await create_file(operations, b"plain")
    await expect_errno(errno.ENOTDIR, operations.rename, ROOT_INODE, b"empty", ROOT_INODE,
                       b"plain", 0, ROOT)
    await expect_errno(errno.EISDIR, operations.rename, ROOT_INODE, b"plain", ROOT_INODE,
                       b"empty", 0, ROOT)
    deeper = (await operations.lookup(moved, b"deeper", ROOT)).st_ino
    await expect_errno(errno.EINVAL, operations.rename, ROOT_INODE, b"empty", deeper, b"x", 0,
                       ROOT)
    await expect_errno(errno.EEXIST, operations.rename, ROOT_INODE, b"plain", ROOT_INODE,
                       b"full", pyfuse3.RENAME_NOREPLACE, ROOT)
    assert sorted(names(await readdir(operations, kernel, ROOT_INODE))[2:]) == [
        b"empty", b"full", b"one", b"plain", b"two"]


async def test_links_to_what_cannot_be_linked(operations: VmstoreOperations,
                                              sim_clock: trio.abc.Clock) -> None:
    """tst_hard_links: a directory cannot be linked; a link needs a free name."""
    directory = (await mkdir(operations, ROOT_INODE, b"sub")).st_ino
    inode = await create_file(operations, b"first", b"x")
    await expect_errno(errno.EPERM, operations.link, directory, ROOT_INODE, b"dirlink", ROOT)
    await expect_errno(errno.EEXIST, operations.link, inode, ROOT_INODE, b"sub", ROOT)
    assert await nlink(operations, inode) == 1
    assert await nlink(operations, directory) == 2


async def test_setgid_directory(operations: VmstoreOperations,
                                sim_clock: trio.abc.Clock) -> None:
    """tst_setgid_directory: new objects take its gid, new directories its setgid bit."""
    shared = (await mkdir(operations, ROOT_INODE, b"shared")).st_ino
    await operations.setattr(shared, attributes(st_gid=OTHER_GID), Fields(update_gid=True),
                             None, ROOT)
    await operations.setattr(shared, attributes(st_mode=stat.S_IFDIR | 0o2777),
                             Fields(update_mode=True), None, ROOT)
    for ctx, suffix in ((ROOT, b"root"), (NOBODY, b"nobody")):  # NOBODY is not in OTHER_GID
        info, file = await operations.create(shared, b"by-" + suffix, FILE_MODE, os.O_WRONLY,
                                             ctx)
        await operations.release(info.fh)
        sub = await mkdir(operations, shared, b"subdir-by-" + suffix, ctx)
        assert (file.st_uid, file.st_gid) == (ctx.uid, OTHER_GID)
        assert not file.st_mode & stat.S_ISGID
        assert (sub.st_uid, sub.st_gid) == (ctx.uid, OTHER_GID)
        assert sub.st_mode & stat.S_ISGID
        link = await operations.symlink(shared, b"link-by-" + suffix, b"x", ctx)
        assert (link.st_uid, link.st_gid) == (ctx.uid, OTHER_GID)
    deeper = await mkdir(operations, sub.st_ino, b"deeper")
    assert (deeper.st_gid, bool(deeper.st_mode & stat.S_ISGID)) == (OTHER_GID, True)


async def test_mtime_and_ctime_change_on_write(operations: VmstoreOperations,
                                               sim_clock: trio.abc.Clock) -> None:
    """tst_mtime_changes_on_write: a write that is closed moves mtime and ctime on."""
    inode = await create_file(operations, b"f", b"before")
    old_ns = 10**9
    await operations.setattr(inode, attributes(st_atime_ns=old_ns, st_mtime_ns=old_ns),
                             Fields(update_atime=True, update_mtime=True), None, ROOT)
    ctime_ns = (await operations.getattr(inode, ROOT)).st_ctime_ns
    info = await operations.open(inode, os.O_WRONLY, ROOT)
    await operations.write(info.fh, 0, b"after!")
    await operations.flush(info.fh)
    await operations.release(info.fh)
    entry = await operations.getattr(inode, ROOT)
    assert entry.st_mtime_ns > old_ns
    assert entry.st_ctime_ns >= ctime_ns
    assert entry.st_atime_ns == old_ns  # a write is no access


async def test_name_length_limits(operations: VmstoreOperations,
                                  sim_clock: trio.abc.Clock) -> None:
    """tst_name_length_limits: 255 bytes is a name, 256 is ENAMETOOLONG everywhere."""
    longest, too_long = b"n" * 255, b"n" * 256
    inode = await create_file(operations, longest)
    assert (await operations.lookup(ROOT_INODE, longest, ROOT)).st_ino == inode
    await expect_errno(errno.ENAMETOOLONG, operations.create, ROOT_INODE, too_long, FILE_MODE,
                       os.O_WRONLY, ROOT)
    await expect_errno(errno.ENAMETOOLONG, operations.mkdir, ROOT_INODE, too_long, DIR_MODE,
                       ROOT)
    await expect_errno(errno.ENAMETOOLONG, operations.symlink, ROOT_INODE, too_long, b"x",
                       ROOT)
    await expect_errno(errno.ENAMETOOLONG, operations.link, inode, ROOT_INODE, too_long, ROOT)
    await expect_errno(errno.ENAMETOOLONG, operations.rename, ROOT_INODE, longest, ROOT_INODE,
                       too_long, 0, ROOT)
    assert operations.open_files == {}
