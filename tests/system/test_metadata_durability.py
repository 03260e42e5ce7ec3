"""Metadata durability with real processes (issue 18 part 3): kill -9 of the master.

The embedded master answers namespace changes once committed to its WAL and
makes them durable on disk within METADATA_SYNC_DELAY_S_MAX, or at once when a
file is fsynced (dfs.master.committer). A master killed with SIGKILL loses none
of them: what it committed is in the kernel's page cache, and the restarted
master recovers it from the WAL. Timings are never asserted here.
"""

from __future__ import annotations

import os

import pytest

from tests.system.conftest import Cluster, Mount

pytestmark = pytest.mark.system

FILES = 20


def test_creates_acknowledged_before_kill_9_of_the_master_are_all_there(
        cluster: Cluster, mount: Mount) -> None:
    work = mount.path / "work"
    work.mkdir()
    for number in range(FILES):  # answered, not fsynced
        (work / f"plain{number}").write_bytes(b"")
    written = os.open(work / "written", os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
    os.write(written, b"w" * 4096)
    os.fsync(written)  # its create, its data and its size: durable
    empty = os.open(work / "empty", os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
    os.fsync(empty)  # nothing written: its create alone is made durable
    directory = os.open(work, os.O_RDONLY | os.O_DIRECTORY)
    os.fsync(directory)
    os.close(directory)

    cluster.kill("master")  # SIGKILL, and reaped
    cluster.restart("master")

    os.close(empty)  # the mount waits for the master that came back
    os.close(written)
    names = set(os.listdir(work))
    assert names == {f"plain{n}" for n in range(FILES)} | {"written", "empty"}
    assert (work / "written").read_bytes() == b"w" * 4096
    assert os.stat(work / "empty").st_size == 0
