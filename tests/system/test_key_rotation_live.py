"""Rolling the cluster key in a running cluster: `vmstore key rotate add`, `promote`,
`retire`, with a mount writing (fsync) throughout and daemons restarted in
between that only know the newest keys; afterwards the old key opens nothing."""

from __future__ import annotations

import json
import signal
import time
from pathlib import Path

import pytest

from tests.system.conftest import Cluster, FsyncingWriter, Mount, require_fuse, vmstore_command
from vmstore.dfs.protocol.auth import KEY_FILE_CHECK_INTERVAL_S, load_keys

pytestmark = pytest.mark.system


def test_the_key_is_rolled_while_a_mount_writes(healing_cluster: Cluster,
                                                tmp_path: Path) -> None:
    require_fuse()
    cluster = healing_cluster
    key_file = cluster.directory / "cluster.key"
    old_key_file = tmp_path / "old.key"
    old_key_file.write_bytes(key_file.read_bytes())
    old_key_file.chmod(0o600)
    mount = Mount(cluster, tmp_path / "mnt")
    writer = FsyncingWriter(mount.path / "live.img")
    try:
        for step, restarted in (("add", "chunkserver0"), ("promote", "chunkserver1"),
                                ("retire", "chunkserver2")):
            result = vmstore_command("key", "rotate", step, config=cluster.config_path)
            assert result.returncode == 0, result.stderr
            time.sleep(KEY_FILE_CHECK_INTERVAL_S + 1)  # running processes re-read the file
            # A daemon started now knows only the file as it is: after "retire",
            # only the new key -- the master and the mount must have followed.
            cluster.restart_when_healthy(restarted, signal.SIGKILL)
            writer.wait_for_progress(5, f"after 'key rotate {step}' and {restarted} restarted")
            status = vmstore_command("status", "--json", config=cluster.config_path)
            assert status.returncode in (0, 1), status.stderr  # 1: degraded while it heals
            assert json.loads(status.stdout)["master"]
        writer.stop_and_check()
    finally:
        writer.stop()  # (again: after a failure, before unmounting)
        mount.force_unmount()
    keys = load_keys(key_file)
    assert len(keys.accepted) == 1 and keys.current != load_keys(old_key_file).current
    old_config = tmp_path / "old.toml"
    old_config.write_text(cluster.config_path.read_text().replace(str(key_file),
                                                                 str(old_key_file)))
    refused = vmstore_command("status", config=old_config)
    assert refused.returncode == 1
    assert "does not hold the cluster key" in refused.stderr
    shown = vmstore_command("key", "show", config=cluster.config_path)
    assert shown.stdout.startswith(f"{key_file}: current key ") and "also" not in shown.stdout
