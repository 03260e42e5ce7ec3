"""deploy/bench/passthrough_fs.py, mounted the way pyfuse3_ceiling.py mounts it, with real I/O.

The pass-through is the yardstick of pyfuse3_ceiling.py: these tests check
that what the benchmark's workloads do works on it (bytes written read back
and reach the backing file, O_DIRECT goes through to the backing file,
fsync, truncate), and that the script's clean-up leaves no mount behind,
also when it unwinds from an error with a file still open.
"""

from __future__ import annotations

import contextlib
import errno
import importlib.util
import mmap
import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import pytest

from tests.system.conftest import require_fuse

pytestmark = pytest.mark.system

SCRIPT = Path(__file__).resolve().parents[2] / "deploy" / "bench" / "pyfuse3_ceiling.py"
BLOCK_BYTES = 4096


def load_ceiling() -> ModuleType:
    """pyfuse3_ceiling.py as a module: deploy/bench is scripts, not a package."""
    spec = importlib.util.spec_from_file_location("pyfuse3_ceiling", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def ceiling() -> ModuleType:
    require_fuse()
    if shutil.which("fusermount3") is None:
        pytest.skip("fusermount3 is not installed (Debian package fuse3)")
    return load_ceiling()


@pytest.fixture
def backing(tmp_path: Path) -> Path:
    path = tmp_path / "backing"
    path.mkdir()
    return path


@pytest.fixture
def mounted(ceiling: ModuleType, backing: Path, tmp_path: Path) -> Iterator[Path]:
    """The pass-through of ``backing`` at tmp_path/mnt; gone, process and all, after."""
    mountpoint = tmp_path / "mnt"
    mountpoint.mkdir()
    with ceiling.passthrough_mount(backing, mountpoint, tmp_path / "fs.log") as process:
        yield mountpoint
    assert not ceiling.is_mounted(mountpoint)
    assert process.poll() is not None


def aligned_block(fill: bytes) -> mmap.mmap:
    """O_DIRECT needs aligned memory: an anonymous mapping is page-aligned."""
    block = mmap.mmap(-1, BLOCK_BYTES)
    block.write(fill * (BLOCK_BYTES // len(fill)))
    return block


def test_bytes_written_read_back_and_reach_the_backing_file(mounted: Path,
                                                            backing: Path) -> None:
    data = os.urandom(300_000)  # more than one FUSE request
    (mounted / "file").write_bytes(data)
    assert (mounted / "file").read_bytes() == data
    assert (backing / "file").read_bytes() == data
    with open(mounted / "file", "r+b") as file:
        file.seek(1000)
        file.write(b"patch")
    assert (mounted / "file").read_bytes()[995:1010] == data[995:1000] + b"patch" + data[1005:1010]
    assert os.stat(mounted / "file").st_size == len(data)
    assert sorted(os.listdir(mounted)) == ["file"]
    (mounted / "directory").mkdir()  # vmstore bench works in a directory of its own
    (mounted / "directory" / "inside").write_bytes(b"x")
    assert (backing / "directory" / "inside").read_bytes() == b"x"
    shutil.rmtree(mounted / "directory")
    (mounted / "file").unlink()
    assert os.listdir(backing) == []


def test_o_direct_write_of_an_aligned_block_goes_to_the_backing_file(mounted: Path,
                                                                     backing: Path) -> None:
    if not hasattr(os, "O_DIRECT"):
        pytest.skip("no O_DIRECT on this platform")
    try:
        os.close(os.open(backing / "probe", os.O_CREAT | os.O_WRONLY | os.O_DIRECT, 0o644))
    except OSError as error:
        pytest.skip(f"the backing file system takes no O_DIRECT ({error.strerror})")
    path = mounted / "direct"
    fd = os.open(path, os.O_CREAT | os.O_RDWR | os.O_DIRECT, 0o644)
    try:
        assert os.pwritev(fd, [aligned_block(b"vmstore!")], 0) == BLOCK_BYTES
        read_back = mmap.mmap(-1, BLOCK_BYTES)
        assert os.preadv(fd, [read_back], 0) == BLOCK_BYTES
        assert read_back[:] == b"vmstore!" * (BLOCK_BYTES // 8)
        # O_DIRECT reached the backing file: it refuses what its device cannot take.
        with pytest.raises(OSError) as refused:
            os.pwrite(fd, b"not a block", 1)
        assert refused.value.errno == errno.EINVAL
    finally:
        os.close(fd)
    assert (backing / "direct").read_bytes() == b"vmstore!" * (BLOCK_BYTES // 8)


def test_without_direct_backing_o_direct_opens_still_work_through_the_page_cache(
        ceiling: ModuleType, backing: Path, tmp_path: Path) -> None:
    mountpoint = tmp_path / "mnt"
    mountpoint.mkdir()
    with ceiling.passthrough_mount(backing, mountpoint, tmp_path / "fs.log",
                                   direct_backing=False):
        fd = os.open(mountpoint / "cached", os.O_CREAT | os.O_RDWR | os.O_DIRECT, 0o644)
        try:
            assert os.pwritev(fd, [aligned_block(b"cached!!")], 0) == BLOCK_BYTES
            # The backing file has no O_DIRECT: what its device could not take, it takes.
            assert os.pwrite(fd, b"unaligned", 1) == len(b"unaligned")
        finally:
            os.close(fd)
    expected = bytearray(b"cached!!" * (BLOCK_BYTES // 8))
    expected[1:10] = b"unaligned"
    assert (backing / "cached").read_bytes() == expected


def test_fsync_and_fdatasync(mounted: Path, backing: Path) -> None:
    with open(mounted / "synced", "wb") as file:
        file.write(b"durable")
        file.flush()
        os.fsync(file.fileno())
        file.write(b" too")
        file.flush()
        os.fdatasync(file.fileno())
    assert (backing / "synced").read_bytes() == b"durable too"


def test_truncate_shrinks_and_grows(mounted: Path, backing: Path) -> None:
    path = mounted / "truncated"
    path.write_bytes(b"a" * 10_000)
    os.truncate(path, 100)  # by path: setattr without a handle
    assert os.stat(path).st_size == 100
    with open(path, "r+b") as file:
        file.truncate(BLOCK_BYTES * 2)  # by descriptor: setattr with one
    assert os.stat(path).st_size == BLOCK_BYTES * 2
    assert path.read_bytes() == b"a" * 100 + bytes(BLOCK_BYTES * 2 - 100)
    with open(path, "wb"):  # O_TRUNC at open
        pass
    assert os.stat(backing / "truncated").st_size == 0


def test_clean_up_after_an_error_with_a_file_open_leaves_no_mount(
        ceiling: ModuleType, backing: Path, tmp_path: Path) -> None:
    mountpoint = tmp_path / "mnt"
    mountpoint.mkdir()
    open_file = None
    with pytest.raises(KeyboardInterrupt):
        with ceiling.passthrough_mount(backing, mountpoint, tmp_path / "fs.log") as process:
            open_file = open(mountpoint / "busy", "wb")  # noqa: SIM115 - held across the exit
            raise KeyboardInterrupt  # as Ctrl-C in the middle of a job
    assert not ceiling.is_mounted(mountpoint)  # busy: the lazy unmount took it
    assert process.poll() is not None
    assert open_file is not None
    with contextlib.suppress(OSError):  # its file system is gone: ENOTCONN
        open_file.close()
    assert subprocess.run(["mountpoint", "-q", str(mountpoint)]).returncode != 0
