"""Two mounts of one cluster, an unmount under load, and a master that goes away.

The coherence battery (issue 18): two mounts A and B (host labels local0 and
local1) of one cluster. In each case A changes something and B looks at once
(0 ms), once with B's caches cold and once warm (B looked at everything the
case touches just before A's change, and holds files open where the case
says so); three rounds each. What B sees must be exactly what A left.
"""

from __future__ import annotations

import errno
import json
import mmap
import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO

import pytest
import trio

from tests.system.conftest import (
    Cluster,
    Mount,
    assert_no_crash,
    require_fuse,
    vmstore_command,
)
from vmstore.cli.local_cluster import local_down

pytestmark = pytest.mark.system
ROUNDS = 3


def test_close_to_open_between_two_mounts(cluster: Cluster, mount: Mount) -> None:
    other = Mount(cluster, cluster.directory / "mnt2", host_label="local1")
    try:
        first = mount.path / "shared.img"
        with open(first, "wb") as writer:
            writer.write(os.urandom(3 * 2**20))
        # after close on one mount, an open on the other sees data and size
        expected = first.read_bytes()
        assert (other.path / "shared.img").read_bytes() == expected
        # the other way round, growing the file, with fsync instead of close
        with open(other.path / "shared.img", "r+b") as writer:
            writer.seek(0, os.SEEK_END)
            writer.write(b"appended by mount 2")
            writer.flush()
            os.fsync(writer.fileno())
            with open(first, "rb") as reader:
                data = reader.read()
        assert data == expected + b"appended by mount 2"
        # a new directory and a rename on one show on the other
        (mount.path / "dir").mkdir()
        (mount.path / "shared.img").rename(mount.path / "dir" / "moved.img")
        assert (other.path / "dir" / "moved.img").read_bytes() == data
    finally:
        other.force_unmount()


def read_direct(path: Path, blocks: int, block_bytes: int = 4096) -> bytes:
    """``blocks`` O_DIRECT reads in a row from the start, as QEMU reads an image."""
    buffer = mmap.mmap(-1, block_bytes)  # page-aligned, as O_DIRECT needs
    fd = os.open(path, os.O_RDONLY | os.O_DIRECT)
    try:
        parts = []
        for block in range(blocks):
            assert os.preadv(fd, [buffer], block * block_bytes) == block_bytes
            parts.append(bytes(buffer))
        return b"".join(parts)
    finally:
        os.close(fd)
        buffer.close()


def test_close_to_open_holds_for_a_stream_of_small_direct_reads(cluster: Cluster,
                                                                mount: Mount) -> None:
    """The reading mount reads ahead of such a stream; another mount's write,
    closed before the next open, must still be what that open reads."""
    other = Mount(cluster, cluster.directory / "mnt2", host_label="local1")
    try:
        image = mount.path / "streamed.img"
        image.write_bytes(os.urandom(2**20))
        assert read_direct(image, 8) == image.read_bytes()[:8 * 4096]
        rewritten = os.urandom(8 * 4096)
        with open(other.path / "streamed.img", "r+b") as writer:
            writer.write(rewritten)
        assert read_direct(image, 8) == rewritten
    finally:
        other.force_unmount()


def test_unmount_with_an_open_file_is_refused_clearly(mount: Mount) -> None:
    with open(mount.path / "open.txt", "w") as handle:
        handle.write("busy")
        handle.flush()
        result = mount.unmount()
        assert result.returncode == 1
        assert "busy" in result.stderr and "files are open" in result.stderr
        assert "Traceback" not in result.stderr
    assert mount.unmount().returncode == 0


def test_fileinfo_and_goal_commands(cluster: Cluster, mount: Mount) -> None:
    images = mount.path / "images"
    images.mkdir()
    result = vmstore_command("goal", str(images), "3", config=cluster.config_path)
    assert result.returncode == 0, result.stderr
    image = images / "a.img"
    with open(image, "wb") as writer:
        writer.seek(100 * 2**20)  # chunk 0 stays a hole
        writer.write(os.urandom(2**20))
    result = vmstore_command("fileinfo", str(image), "--json", config=cluster.config_path)
    assert result.returncode == 0, result.stderr
    info = json.loads(result.stdout)
    assert info["path"] == str(image) and info["size"] == 101 * 2**20 and info["goal"] == 3
    assert [chunk["index"] for chunk in info["chunks"]] == [1]
    replicas = info["chunks"][0]["replicas"]
    assert sorted(r["host"] for r in replicas) == ["local0", "local1", "local2"]
    assert {"chunkserver", "address", "host"} <= set(replicas[0])


def test_mount_blocks_while_the_master_is_down_and_resumes(cluster: Cluster,
                                                           mount: Mount) -> None:
    script = (
        "import os, sys\n"
        "root = sys.argv[1]\n"
        "for i in range(40):\n"
        "    with open(os.path.join(root, f'f{i}'), 'wb') as f:\n"
        "        f.write(bytes([i]) * 100000)\n"
        "    print(i, flush=True)\n"
    )
    worker = subprocess.Popen([sys.executable, "-c", script, str(mount.path)],
                              stdout=subprocess.PIPE, text=True)
    assert worker.stdout is not None
    while int(worker.stdout.readline()) < 5:
        pass
    cluster.kill("master")
    time.sleep(1.0)  # the worker is now blocked on the mount, not failing
    assert worker.poll() is None
    cluster.restart("master")
    assert worker.wait(timeout=120) == 0
    for i in range(40):
        assert (mount.path / f"f{i}").read_bytes() == bytes([i]) * 100000


async def test_local_up_and_down_with_a_mount(tmp_path: Path) -> None:
    directory = tmp_path / "local"
    up = await trio.to_thread.run_sync(lambda: subprocess.run(
        [sys.executable, "-m", "vmstore.cli.main", "local", "up", "--dir", str(directory),
         "--chunkservers", "2"], capture_output=True, text=True, timeout=120))
    try:
        assert up.returncode == 0, up.stderr
        assert f"mounted at:    {directory / 'mnt'}" in up.stdout
        (directory / "mnt" / "x").write_bytes(b"through the mount")
        assert (directory / "mnt" / "x").read_bytes() == b"through the mount"
    finally:
        down = subprocess.run([sys.executable, "-m", "vmstore.cli.main", "local", "down",
                               "--dir", str(directory)], capture_output=True, text=True,
                              timeout=120)
    assert down.returncode == 0, down.stderr
    with open("/proc/mounts") as mounts:
        assert str(directory / "mnt") not in mounts.read()


def test_mount_helper_and_fstab_style_options(cluster: Cluster) -> None:
    helper = Path("/usr/sbin/mount.fuse.vmstore")
    if not helper.exists():
        pytest.skip("mount helper not installed (run deploy/install-deps.sh as root)")
    target = cluster.directory / "helper-mnt"
    target.mkdir()
    result = subprocess.run(
        ["mount", "-t", "fuse.vmstore", "vmstore", str(target), "-o",
         f"defaults,_netdev,config={cluster.config_path},host_label=local2"],
        capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    try:
        (target / "via-helper").write_bytes(b"mounted by mount(8)")
        assert (target / "via-helper").read_bytes() == b"mounted by mount(8)"
        with open("/proc/mounts") as mounts:
            assert f"vmstore {target} fuse.vmstore" in mounts.read()
    finally:
        subprocess.run(["umount", str(target)], capture_output=True, timeout=60)
    bad = subprocess.run(["mount", "-t", "fuse.vmstore", "vmstore", str(target), "-o",
                          f"config={cluster.config_path},bogus=1"],
                         capture_output=True, text=True, timeout=60)
    assert bad.returncode != 0 and "unknown mount option 'bogus=1'" in bad.stderr


# --- the coherence battery ------------------------------------------------------------
class TwoMounts:
    """A and B: two mounts of one cluster, as two hosts would have."""

    def __init__(self, cluster: Cluster, a: Mount, b: Mount) -> None:
        self.cluster = cluster
        self.a_mount = a
        self.b_mount = b
        self._cases = 0

    def case(self, name: str) -> tuple[Path, Path]:
        """A fresh directory for one round of a case: its path on A and on B."""
        self._cases += 1
        directory = f"{name}-{self._cases}"
        (self.a_mount.path / directory).mkdir()
        return self.a_mount.path / directory, self.b_mount.path / directory


@pytest.fixture(scope="module")
def two_mounts(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TwoMounts]:
    require_fuse()
    cluster = Cluster(tmp_path_factory.mktemp("coherence") / "cluster", 3)
    mounts: list[Mount] = []
    try:
        mounts.append(Mount(cluster, cluster.directory / "a", host_label="local0"))
        mounts.append(Mount(cluster, cluster.directory / "b", host_label="local1"))
        yield TwoMounts(cluster, *mounts)
    finally:
        for mounted in mounts:
            mounted.force_unmount()
        local_down(cluster.directory)
    assert_no_crash(cluster.logs())


def look(path: Path) -> None:
    """What warms a mount's caches of ``path``: stat, and a read of a file's bytes."""
    if path.is_file():
        path.read_bytes()


def write(path: Path, data: bytes, mode: str = "wb") -> None:
    with open(path, mode) as writer:
        writer.write(data)


@contextmanager
def held_open(path: Path, hold: bool) -> Iterator[BinaryIO | None]:
    """``path`` open for reading while the block runs, if ``hold``."""
    if not hold:
        yield None
        return
    with open(path, "rb") as held:
        yield held


def assert_missing(path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        os.stat(path)


def each_round(two_mounts: TwoMounts, name: str, warm: bool,
               case: Callable[[Path, Path, bool], None]) -> None:
    for _round in range(ROUNDS):
        a, b = two_mounts.case(name)
        case(a, b, warm)


WARMTH = pytest.mark.parametrize("warm", [False, True], ids=["cold", "warm"])


@WARMTH
def test_append_then_read(two_mounts: TwoMounts, warm: bool) -> None:
    def case(a: Path, b: Path, warm: bool) -> None:
        write(a / "f", b"a" * 4096)
        if warm:
            look(b / "f")
        write(a / "f", b"b" * 8192, "ab")
        assert os.stat(b / "f").st_size == 12_288
        assert (b / "f").read_bytes() == b"a" * 4096 + b"b" * 8192

    each_round(two_mounts, "append", warm, case)


@WARMTH
def test_overwrite(two_mounts: TwoMounts, warm: bool) -> None:
    def case(a: Path, b: Path, warm: bool) -> None:
        write(a / "f", os.urandom(65536))
        if warm:
            look(b / "f")
        new = os.urandom(4096)
        with open(a / "f", "r+b") as writer:
            writer.write(new)
        expected = (a / "f").read_bytes()
        assert expected[:4096] == new
        assert (b / "f").read_bytes() == expected
        assert os.stat(b / "f").st_mtime_ns == os.stat(a / "f").st_mtime_ns

    each_round(two_mounts, "overwrite", warm, case)


@WARMTH
def test_truncate_down_and_up(two_mounts: TwoMounts, warm: bool) -> None:
    def case(a: Path, b: Path, warm: bool) -> None:
        data = os.urandom(100_000)
        write(a / "f", data)
        if warm:
            look(b / "f")
        os.truncate(a / "f", 40_000)
        assert os.stat(b / "f").st_size == 40_000
        assert (b / "f").read_bytes() == data[:40_000]
        os.truncate(a / "f", 50_000)
        assert os.stat(b / "f").st_size == 50_000
        assert (b / "f").read_bytes() == data[:40_000] + bytes(10_000)

    each_round(two_mounts, "truncate", warm, case)


@WARMTH
def test_rename_over_an_open_name(two_mounts: TwoMounts, warm: bool) -> None:
    def case(a: Path, b: Path, warm: bool) -> None:
        write(a / "dst", b"old")
        write(a / "src", b"new")
        with held_open(b / "dst", warm) as held:
            if warm:
                look(b / "src")
                look(b / "dst")
            os.rename(a / "src", a / "dst")
            assert os.stat(b / "dst").st_ino == os.stat(a / "dst").st_ino
            assert (b / "dst").read_bytes() == b"new"
            assert_missing(b / "src")
            assert sorted(os.listdir(b)) == ["dst"]
            if held is not None:
                assert held.read() == b"old"  # an open file keeps what it opened

    each_round(two_mounts, "rename", warm, case)


@WARMTH
def test_unlink_and_recreate(two_mounts: TwoMounts, warm: bool) -> None:
    def case(a: Path, b: Path, warm: bool) -> None:
        write(a / "f", b"one")
        with held_open(b / "f", warm) as held:
            if warm:
                look(b / "f")
            os.unlink(a / "f")
            assert_missing(b / "f")
            write(a / "f", b"two")
            assert os.stat(b / "f").st_ino == os.stat(a / "f").st_ino
            assert (b / "f").read_bytes() == b"two"
            if warm:
                look(b / "f")
            os.unlink(a / "f")  # and again with B's caches holding the new one
            write(a / "f", b"three")
            assert (b / "f").read_bytes() == b"three"
            if held is not None:
                assert held.read() == b"one"  # an unlinked open file stays readable

    each_round(two_mounts, "unlink", warm, case)


@WARMTH
def test_chmod_and_chown(two_mounts: TwoMounts, warm: bool) -> None:
    def case(a: Path, b: Path, warm: bool) -> None:
        write(a / "f", b"x")
        if warm:
            look(b / "f")
        os.chmod(a / "f", 0o600)
        assert os.stat(b / "f").st_mode & 0o7777 == 0o600
        os.chown(a / "f", 1234, 5678)
        seen = os.stat(b / "f")
        assert (seen.st_uid, seen.st_gid) == (1234, 5678)
        assert seen.st_ctime_ns == os.stat(a / "f").st_ctime_ns
        os.chmod(a, 0o711)  # a directory's too
        assert os.stat(b).st_mode & 0o7777 == 0o711

    each_round(two_mounts, "chmod", warm, case)


@WARMTH
def test_xattrs(two_mounts: TwoMounts, warm: bool) -> None:
    def case(a: Path, b: Path, warm: bool) -> None:
        write(a / "f", b"x")
        os.setxattr(a / "f", "user.k", b"v1")
        if warm:
            look(b / "f")
            assert os.getxattr(b / "f", "user.k") == b"v1"
        os.setxattr(a / "f", "user.k", b"v2")
        assert os.getxattr(b / "f", "user.k") == b"v2"
        assert os.stat(b / "f").st_ctime_ns == os.stat(a / "f").st_ctime_ns
        os.removexattr(a / "f", "user.k")
        with pytest.raises(OSError) as missing:
            os.getxattr(b / "f", "user.k")
        assert missing.value.errno == errno.ENODATA
        assert "user.k" not in os.listxattr(b / "f")

    each_round(two_mounts, "xattr", warm, case)


@WARMTH
def test_mkdir_then_rmdir(two_mounts: TwoMounts, warm: bool) -> None:
    def case(a: Path, b: Path, warm: bool) -> None:
        (a / "d").mkdir()
        if warm:
            look(b / "d")
            assert os.stat(b / "d").st_ino == os.stat(a / "d").st_ino
        (a / "d").rmdir()
        assert_missing(b / "d")
        assert os.listdir(b) == []
        (a / "d").mkdir()
        assert os.stat(b / "d").st_ino == os.stat(a / "d").st_ino
        assert os.stat(b).st_nlink == os.stat(a).st_nlink == 3

    each_round(two_mounts, "mkdir", warm, case)


def test_lease_handover_shows_the_old_holders_last_acknowledged_size(
        two_mounts: TwoMounts) -> None:
    """The destination opens the image (as QEMU does for an incoming migration) while
    the source still writes and extends it; its first read sees all the source had
    acknowledged, buffered or O_DIRECT."""
    a, b = two_mounts.case("handover")
    first, second = os.urandom(2**20), os.urandom(2**20)
    source = os.open(a / "image", os.O_RDWR | os.O_CREAT, 0o644)
    try:
        os.pwrite(source, first, 0)
        os.fsync(source)
        look(b / "image")  # the destination has looked at the image before
        handover = vmstore_command("lease", str(a / "image"), "--handover-to", "local1",
                                   config=two_mounts.cluster.config_path)
        assert handover.returncode == 0, handover.stderr
        buffered = os.open(b / "image", os.O_RDWR)
        direct = os.open(b / "image", os.O_RDWR | os.O_DIRECT)
        try:
            assert os.fstat(buffered).st_size == 2**20
            os.pwrite(source, second, 2**20)  # the source's last writes, acknowledged
            os.fsync(source)
            buffer = mmap.mmap(-1, 2**20)  # page-aligned, as O_DIRECT needs
            try:
                assert os.preadv(direct, [buffer], 2**20) == 2**20
                assert bytes(buffer) == second
            finally:
                buffer.close()
            assert os.fstat(buffered).st_size == 2 * 2**20
            assert os.pread(buffered, 2 * 2**20, 0) == first + second
            os.pwrite(buffered, b"destination", 2 * 2**20)  # takes the lease
            os.fsync(buffered)
        finally:
            os.close(direct)
            os.close(buffered)
    finally:
        try:
            os.close(source)
        except OSError as fenced:  # nothing was written after the handover; either is fine
            assert fenced.errno == errno.EIO
    assert (a / "image").read_bytes() == first + second + b"destination"
