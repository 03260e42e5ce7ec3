"""The mount as a real process: the basics every later test stands on."""

from __future__ import annotations

import os
import subprocess

import pytest

from tests.system.conftest import Mount

pytestmark = pytest.mark.system


def test_mount_shows_as_fuse_vmstore_and_serves_files(mount: Mount) -> None:
    with open("/proc/mounts") as mounts:
        assert any(line.split()[1:3] == [str(mount.path), "fuse.vmstore"] for line in mounts)
    path = mount.path / "hello.txt"
    path.write_bytes(b"hello vmstore\n")
    assert path.read_bytes() == b"hello vmstore\n"
    assert os.stat(path).st_size == 14


def test_sparse_image_is_instant_and_uses_nothing(mount: Mount) -> None:
    image = mount.path / "sparse.img"
    subprocess.run(["qemu-img", "create", "-q", "-f", "raw", str(image), "100G"], check=True)
    info = os.stat(image)
    assert info.st_size == 100 * 2**30
    assert info.st_blocks == 0  # du shows nothing used
