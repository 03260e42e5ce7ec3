"""A stopped master does not punish its clients (issue 15), with real processes.

The master is SIGSTOPped under a mount whose writer appends and fsyncs in a
loop, for longer than the session expiry, then SIGCONTinued. Before, the
master expired the mount's session for its own silence before it read the
renewals waiting in its sockets: the lease and the write-behind were lost and
the writer's fsync failed. Now the writer sees no error, keeps its session,
and every fsynced block reads back. The expiry is shortened (4 s) to keep the
stop short; the in-process test (tests/sim/test_master_stall.py) stalls the
default expiry three times over.
"""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import pytest

from tests.system.conftest import Cluster, FsyncingWriter, Mount, assert_no_crash, require_fuse
from vmstore.cli.local_cluster import local_down
from vmstore.dfs.constants import MASTER_STALL_S_MIN

pytestmark = pytest.mark.system
LEASE_EXPIRY_S = 4.0
STOP_S = LEASE_EXPIRY_S + MASTER_STALL_S_MIN + 1.0


def test_a_mount_writer_rides_out_a_master_stopped_past_the_expiry(tmp_path: Path) -> None:
    require_fuse()
    cluster = Cluster(tmp_path / "cluster", 3,
                      master_flags=("--lease-expiry", str(LEASE_EXPIRY_S)))
    try:
        mount = Mount(cluster, tmp_path / "mnt")
        writer = FsyncingWriter(mount.path / "guest.img")
        try:
            writer.wait_for_progress(5, "before the master stopped")
            master = cluster.pid("master")
            os.kill(master, signal.SIGSTOP)
            try:
                time.sleep(STOP_S)  # the fault itself: a master that does not run
            finally:
                os.kill(master, signal.SIGCONT)
            writer.wait_for_progress(5, "after the master ran again")
            writer.stop_and_check()
        finally:
            writer.stop()
            mount.force_unmount()
        logs = cluster.logs()
        assert "the master did not run for" in logs["master"]
        assert "session_ended" not in logs["master"] and " ended: silent" not in logs["master"]
        assert "it expired" not in logs[f"mount-{mount.path.name}"]
    finally:
        local_down(cluster.directory)
    assert_no_crash(cluster.logs())
