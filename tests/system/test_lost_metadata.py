"""A master that lost its metadata must not wipe the cluster (issue 19), with real daemons.

The master's data directory is moved away: restarted, the master refuses to start;
forced with --new-cluster, it is refused by every chunkserver, which keep their
replicas; the master started again on the real metadata gets the cluster back whole.
"""

from __future__ import annotations

import hashlib
import json
import signal
import time
from typing import Any

import pytest

from tests.system.conftest import Cluster, vmstore_command
from tests.system.test_self_healing import read_back, replica_files, write_file
from vmstore.cli.local_cluster import forget_argument, spawn, wait_ready
from vmstore.dfs.errors import ConfigError

pytestmark = pytest.mark.system
REFUSAL_TIMEOUT_S = 30.0
CHUNKS = 2


def replicas_on_disk(cluster: Cluster) -> dict[str, str]:
    """Every replica file of every chunkserver, with a hash of its bytes."""
    return {str(path.relative_to(cluster.directory)):
            hashlib.sha256(path.read_bytes()).hexdigest()
            for name in cluster.chunkserver_names for path in replica_files(cluster, name)}


def start_master(cluster: Cluster, *extra: str) -> str:
    """Start the master as it was saved, plus ``extra`` flags for this start only."""
    arguments, prefix, environment, *_program = json.loads(
        (cluster.directory / "run" / "master.args").read_text())
    ready = spawn(cluster.directory, "master", [*arguments, *extra], prefix, environment)
    address = wait_ready(ready, "master", cluster.directory)
    for flag in extra:
        forget_argument(cluster.directory, "master", flag)
    return address


def wait_for_refusals(cluster: Cluster) -> dict[str, Any]:
    deadline = time.monotonic() + REFUSAL_TIMEOUT_S
    while True:
        result = vmstore_command("status", "--json", config=cluster.config_path)
        status = json.loads(result.stdout)
        if len(status["refused"]) == len(cluster.chunkserver_names):
            assert result.returncode == 1, "refused chunkservers make status exit 1"
            return status
        assert time.monotonic() < deadline, f"not refused by every chunkserver: {status}"
        time.sleep(0.2)


async def test_a_master_without_its_metadata_cannot_wipe_the_cluster(cluster: Cluster) -> None:
    async with cluster.client() as client:
        inode, data = await write_file(client, "/precious", CHUNKS)
    before = replicas_on_disk(cluster)
    assert len(before) == CHUNKS * 2
    cluster.kill("master", signal.SIGTERM)
    metadata = cluster.directory / "master"
    metadata.rename(cluster.directory / "master.moved")

    with pytest.raises(ConfigError, match="no metadata in .*--new-cluster"):
        cluster.restart("master")
    assert not metadata.exists(), "a master that refused to start made no metadata"

    start_master(cluster, "--new-cluster")
    status = wait_for_refusals(cluster)
    assert status["chunks"]["total"] == 0
    assert all("belongs to cluster" in r["reason"] for r in status["refused"])
    text = vmstore_command("status", config=cluster.config_path).stdout
    assert "3 chunkserver(s) REFUSED" in text
    for name in cluster.chunkserver_names:
        assert "master 127.0.0.1" in cluster.logs()[name]
        assert "refused, keeping every replica here" in cluster.logs()[name]
    assert replicas_on_disk(cluster) == before

    cluster.kill("master", signal.SIGTERM)
    metadata.rename(cluster.directory / "master.new")
    (cluster.directory / "master.moved").rename(metadata)
    cluster.restart("master")
    healthy = vmstore_command("status", "--wait-healthy", config=cluster.config_path)
    assert healthy.returncode == 0, healthy.stdout + healthy.stderr
    async with cluster.client() as client:
        assert await read_back(client, inode, CHUNKS) == data
    assert replicas_on_disk(cluster) == before
    status = json.loads(vmstore_command("status", "--json", config=cluster.config_path).stdout)
    assert status["refused"] == []
    assert status["chunks"]["ok"] == status["chunks"]["total"] == CHUNKS
