"""Full chunkserver disks with real daemons and a real mount (issue 19).

Three chunkservers on small ext4 file systems (a file on a loop device each),
eight goal-2 files filled in parallel through the mount, an fsync every 4 MiB.
Promises checked: every writer ends with ENOSPC, none with EIO, each within
its deadline (no fsync hangs); every byte an fsync acknowledged reads back;
the chunks' versions stay put while nothing can be copied. Before reservations
the disks overcommitted and writers got EIO (the issue measured one fsync
hung for over 10 minutes).

Needs root and loop devices; skipped, saying why, where they cannot be made.
"""

from __future__ import annotations

import errno
import json
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.system.conftest import Cluster, Mount, assert_no_crash, require_fuse, vmstore_command
from vmstore.cli.local_cluster import local_down

pytestmark = pytest.mark.system
MIB = 1024 * 1024
DISK_BYTES = 160 * MIB  # room for one full replica (64 MiB + table + margin) each
WRITERS = 8
WRITER_DEADLINE_S = 60.0  # far below the documented 300 s fsync bound

# In a process of its own (a write stuck in FUSE could not be bounded otherwise):
# 1 MiB blocks of one byte value, an fsync every 4; prints the bytes acknowledged
# after each fsync, and at the end the errno that stopped it.
_WRITER_SCRIPT = """
import os, sys
path, value = sys.argv[1], int(sys.argv[2])
block = bytes([value]) * (1 << 20)
fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o644)
written = 0
try:
    while True:
        for _ in range(4):
            os.write(fd, block)
            written += len(block)
        os.fsync(fd)
        print("acked", written, flush=True)
except OSError as error:
    print("errno", error.errno, flush=True)
"""


def _loop_disks(root: Path, names: list[str]) -> list[Path]:
    """A small ext4 file system mounted at root/NAME for each name; skip if impossible."""
    mounted: list[Path] = []
    for name in names:
        image, point = root / f"{name}.img", root / name
        point.mkdir(parents=True)
        with image.open("wb") as file:
            file.truncate(DISK_BYTES)
        steps = [["mkfs.ext4", "-q", "-F", str(image)], ["mount", "-o", "loop", str(image),
                                                         str(point)]]
        for step in steps:
            result = subprocess.run(step, capture_output=True, text=True)
            if result.returncode != 0:
                _unmount(mounted)
                pytest.skip(f"cannot make a loop-mounted file system ({' '.join(step)}):"
                            f" {result.stderr.strip()}")
        mounted.append(point)
    return mounted


def _unmount(points: list[Path]) -> None:
    for point in points:
        subprocess.run(["umount", "-l", str(point)], capture_output=True)


@pytest.fixture
def small_disk_cluster(tmp_path: Path) -> Iterator[Cluster]:
    directory = tmp_path / "cluster"
    disks = _loop_disks(directory, [f"chunkserver{i}" for i in range(3)])
    try:
        started = Cluster(directory, 3)
        try:
            yield started
        finally:
            local_down(started.directory)
        assert_no_crash(started.logs())
    finally:
        _unmount(disks)


def _versions(cluster: Cluster, path: Path) -> list[tuple[int, int]]:
    result = vmstore_command("fileinfo", str(path), "--json", config=cluster.config_path)
    assert result.returncode == 0, result.stderr
    return [(chunk["id"], chunk["version"]) for chunk in json.loads(result.stdout)["chunks"]]


def test_full_disks_give_enospc_and_keep_what_fsync_acknowledged(
        small_disk_cluster: Cluster) -> None:
    require_fuse()
    mount = Mount(small_disk_cluster, small_disk_cluster.directory / "mnt")
    try:
        paths = [mount.path / f"disk{n}.img" for n in range(WRITERS)]
        writers = [subprocess.Popen([sys.executable, "-c", _WRITER_SCRIPT, str(path),
                                     str(n + 1)], stdout=subprocess.PIPE, text=True)
                   for n, path in enumerate(paths)]
        deadline = time.monotonic() + WRITER_DEADLINE_S
        outputs = []
        for writer in writers:
            try:
                out, _ = writer.communicate(timeout=max(1.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                writer.kill()
                raise AssertionError(f"a writer was still writing or stuck after"
                                     f" {WRITER_DEADLINE_S} s") from None
            outputs.append(out.split())
        acked = [max([int(out[i + 1]) for i in range(0, len(out), 2) if out[i] == "acked"],
                     default=0) for out in outputs]
        ends = [int(out[-1]) if out and out[-2] == "errno" else None for out in outputs]
        print(f"acknowledged bytes per file: {acked}; errnos: {ends}")
        assert all(end == errno.ENOSPC for end in ends), f"writers ended with {ends}"
        assert sum(acked) > 0, "nothing was acknowledged"
        for n, (path, size) in enumerate(zip(paths, acked, strict=True)):
            with path.open("rb") as file:
                data = file.read(size)
            assert data == bytes([n + 1]) * size, f"{path.name}: acknowledged bytes differ"
        before = [_versions(small_disk_cluster, path) for path in paths]
        time.sleep(5)  # healing passes with nowhere to copy to
        assert [_versions(small_disk_cluster, path) for path in paths] == before
    finally:
        mount.force_unmount()
