"""Every operating error reaches the kernel as its errno, through the one table in fuse/errors.py.

The table must name every ``DfsError`` (itself or through an ancestor that
has a row), or the error must be one of the few that fall to the default
on purpose; a new error class fails here until somebody decides its errno.
Then each error is raised under a handler, and what comes out must be
``pyfuse3.FUSEError`` with that errno, the way the kernel would get it.
"""

from __future__ import annotations

import errno
import os
import stat
from collections.abc import Awaitable, Callable
from typing import Any, NoReturn

import pyfuse3
import pytest
import trio

from tests.fuse.kernel import ROOT, ROOT_INODE
from vmstore.dfs import errors
from vmstore.dfs.testing.cluster import SimCluster
from vmstore.fuse.errors import ERRNO_BY_ERROR, errno_of
from vmstore.fuse.operations import VmstoreOperations

# Errors with no row, and no ancestor with one: errno_of answers EIO, what a
# failing disk says. Each is here on purpose, with why nothing better fits;
# most are never raised under a mount's handler at all.
_NOT_ON_THE_MOUNTS_PATH = "never raised under a mount's handler"
DEFAULT_EIO: dict[type[errors.DfsError], str] = {
    errors.DfsError: "a code this build does not know (a newer peer's) arrives as DfsError",
    errors.DamagedMetadata: "the master's database breaks its schema: the data cannot be had",
    errors.ConfigError: f"{_NOT_ON_THE_MOUNTS_PATH}: the mount refuses to start instead",
    errors.ClusterMismatch: f"{_NOT_ON_THE_MOUNTS_PATH}: between a master and a chunkserver",
    errors.PreflightFailed: f"{_NOT_ON_THE_MOUNTS_PATH}: the migration coordinator's",
    errors.MigrationFailed: f"{_NOT_ON_THE_MOUNTS_PATH}: the migration coordinator's",
    errors.UnknownHost: f"{_NOT_ON_THE_MOUNTS_PATH}: a command line's",
    errors.ImportFailed: f"{_NOT_ON_THE_MOUNTS_PATH}: vmstore import's",
    errors.BenchFailed: f"{_NOT_ON_THE_MOUNTS_PATH}: vmstore bench's",
    errors.EtcdUnavailable: f"{_NOT_ON_THE_MOUNTS_PATH}: between an HA master and etcd",
    errors.JournalTrimmed: f"{_NOT_ON_THE_MOUNTS_PATH}: an HA standby's, about its copy",
    errors.StaleMaster: f"{_NOT_ON_THE_MOUNTS_PATH}: a chunkserver's, to a deposed master",
}


def every_error() -> list[type[errors.DfsError]]:
    found: list[type[errors.DfsError]] = []
    waiting = [errors.DfsError]
    while waiting:
        cls = waiting.pop()
        found.append(cls)
        waiting.extend(cls.__subclasses__())
    return sorted(found, key=lambda cls: cls.code)


def mapped_by(cls: type[errors.DfsError]) -> type[errors.DfsError] | None:
    """The class whose row decides ``cls``'s errno: itself or its nearest ancestor."""
    return next((base for base in cls.__mro__ if base in ERRNO_BY_ERROR), None)


def test_every_error_has_an_errno_or_the_documented_default() -> None:
    unmapped = {cls.__name__ for cls in every_error()
                if mapped_by(cls) is None and cls not in DEFAULT_EIO}
    assert not unmapped, f"add these to ERRNO_BY_ERROR in fuse/errors.py: {sorted(unmapped)}"
    stale = {cls.__name__ for cls in DEFAULT_EIO if mapped_by(cls) is not None}
    assert not stale, f"these have a row now; take them out of DEFAULT_EIO: {sorted(stale)}"
    for cls in every_error():
        expected = errno.EIO if cls in DEFAULT_EIO else ERRNO_BY_ERROR[mapped_by(cls)]  # type: ignore[index]
        assert errno_of(cls("x")) == expected, cls.__name__


def test_the_table_names_only_real_errors_and_errnos() -> None:
    known = set(every_error())
    assert set(ERRNO_BY_ERROR) <= known
    for cls, value in ERRNO_BY_ERROR.items():
        assert value in errno.errorcode or value == pyfuse3.ENOATTR, cls.__name__


def failing(error: errors.DfsError) -> Any:
    async def call(*args: Any, **kwargs: Any) -> NoReturn:
        raise error
    return call


async def test_each_error_reaches_the_kernel_as_its_errno(
        operations: VmstoreOperations, expected_logs: Any, monkeypatch: pytest.MonkeyPatch,
        sim_clock: trio.abc.Clock) -> None:
    """A namespace handler (getattr) and a data handler (read), each failing with every error."""
    expected_logs.allow("vmstore.fuse.operations", "failed with EIO")
    info, _entry = await operations.create(ROOT_INODE, b"f", stat.S_IFREG | 0o644, os.O_RDWR,
                                           ROOT)
    await operations.write(info.fh, 0, b"data")
    await operations.fsync(info.fh, False)
    handlers: dict[str, Callable[[], Awaitable[Any]]] = {
        # The root, not the open file: this mount answers GETATTR of a file it
        # holds the write lease of from what it knows, without the client.
        "getattr": lambda: operations.getattr(ROOT_INODE, ROOT),
        "read": lambda: operations.read(info.fh, 0, 4),
    }
    got: dict[tuple[str, str], int] = {}
    for cls in every_error():
        for name, handler in handlers.items():
            with monkeypatch.context() as patch:
                patch.setattr(operations.client, name, failing(cls("injected")))
                with pytest.raises(pyfuse3.FUSEError) as raised:
                    await handler()
            assert raised.value.__suppress_context__  # the kernel needs no DfsError traceback
            got[cls.__name__, name] = raised.value.errno
    # getattr names an inode: one that is gone is stale (the kernel looks the name up
    # again), not missing
    assert got == {(cls.__name__, name): errno.ESTALE if (
        name == "getattr" and errno_of(cls("x")) == errno.ENOENT) else errno_of(cls("x"))
        for cls in every_error() for name in handlers}
    assert await operations.read(info.fh, 0, 4) == b"data"  # unpatched again
    await operations.flush(info.fh)
    await operations.release(info.fh)


# --- errors the cluster itself raises, through the unpatched path -----------------------
async def test_a_file_leased_by_another_host_opens_for_writing_as_ebusy(
        cluster: SimCluster, operations: VmstoreOperations, expected_logs: Any,
        sim_clock: trio.abc.Clock) -> None:
    expected_logs.allow("vmstore.fuse.operations", "open for writing by pid 4242 refused",
                        count=1)
    info, entry = await operations.create(ROOT_INODE, b"f", stat.S_IFREG | 0o644, os.O_RDONLY,
                                          ROOT)
    async with cluster.client("client2") as other:
        await other.opened(entry.st_ino, writable=True)
        with pytest.raises(pyfuse3.FUSEError) as raised:
            await operations.open(entry.st_ino, os.O_WRONLY, ROOT)
        assert raised.value.errno == errno.EBUSY
        reader = await operations.open(entry.st_ino, os.O_RDONLY, ROOT)  # reading is fine
        await operations.release(reader.fh)
        await other.closed(entry.st_ino, writable=True)
    writer = await operations.open(entry.st_ino, os.O_WRONLY, ROOT)
    for fh in (writer.fh, info.fh):
        await operations.flush(fh)
        await operations.release(fh)
    assert operations.open_files == {}


async def test_a_read_with_every_chunkserver_down_is_eio(
        cluster: SimCluster, operations: VmstoreOperations, expected_logs: Any,
        sim_clock: trio.abc.Clock) -> None:
    expected_logs.allow("vmstore", ".")  # the client says at WARNING what it could not reach
    info, entry = await operations.create(ROOT_INODE, b"f", stat.S_IFREG | 0o644, os.O_RDWR,
                                          ROOT)
    await operations.write(info.fh, 0, b"x" * 100_000)
    await operations.fsync(info.fh, False)
    await operations.flush(info.fh)
    await operations.release(info.fh)
    for name in cluster.chunkserver_names:
        await cluster.kill(name)
    reader = await operations.open(entry.st_ino, os.O_RDONLY, ROOT)
    with trio.fail_after(600):  # virtual seconds: the client's retries are bounded
        with pytest.raises(pyfuse3.FUSEError) as raised:
            await operations.read(reader.fh, 0, 100_000)
    assert raised.value.errno == errno.EIO
    await operations.release(reader.fh)
