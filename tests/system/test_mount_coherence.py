"""Two mounts of one cluster, an unmount under load, and a master that goes away."""

from __future__ import annotations

import json
import mmap
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import trio

from tests.system.conftest import Cluster, Mount, vmstore_command

pytestmark = pytest.mark.system


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
