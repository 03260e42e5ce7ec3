"""Role-only credential files with real daemons (issue 19): hosts that do not hold the
cluster key. A chunkserver started on its own chunkserver credential registers, takes
chain writes from peers and clients and serves reads (it checks clients, peers and
capabilities with what its file holds). A client credential copies a file in and out,
and its `vmstore status` (an admin request) and a chunkserver started on it are refused,
each with an error naming why; nothing is lost."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import trio

from tests.system.conftest import Cluster, vmstore_command
from vmstore.cli.credential_command import issue, write_credentials
from vmstore.cli.local_cluster import free_port
from vmstore.dfs.chunkserver.identity import server_uuid
from vmstore.dfs.protocol.auth import ClusterKeys
from vmstore.dfs.types import ROOT_INODE

pytestmark = pytest.mark.system
DEADLINE_S = 60.0


def config_with_key_file(cluster: Cluster, key_file: Path, name: str) -> Path:
    config = cluster.directory / name
    text = cluster.config_path.read_text()
    config.write_text(text.replace(str(cluster.directory / "cluster.key"), str(key_file)))
    return config


def issue_file(cluster: Cluster, kind: str, identity: str = "") -> Path:
    """What `vmstore credential issue` writes (its code, in process: a CLI start each
    costs seconds on a loaded machine)."""
    out = cluster.directory / f"{kind}.credential"
    keys = ClusterKeys(current=cluster.key, accepted=(cluster.key,))
    write_credentials(out, issue(keys, kind, identity))
    return out


def start_chunkserver(cluster: Cluster, name: str, key_file: Path) -> subprocess.Popen[bytes]:
    log = (cluster.directory / "logs" / f"{name}.log").open("ab")
    return subprocess.Popen(
        [sys.executable, "-m", "vmstore.cli.main", "chunkserver", "--data-dir",
         str(cluster.directory / name), "--listen", f"127.0.0.1:{free_port()}",
         "--master", cluster.master_address, "--key-file", str(key_file),
         "--host-label", name], stdout=log, stderr=subprocess.STDOUT)


async def chunkservers_up(cluster: Cluster) -> int:
    async with cluster.client() as client:
        return sum(1 for server in (await client.status()).chunkservers
                   if server.state == "up")


async def test_hosts_without_the_cluster_key(cluster: Cluster, tmp_path: Path) -> None:
    (cluster.directory / "credentialed").mkdir()
    server_credential = issue_file(cluster, "chunkserver",
                                   server_uuid(cluster.directory / "credentialed"))
    client_credential = issue_file(cluster, "client")
    for credential in (server_credential, client_credential):
        assert cluster.key.hex() not in credential.read_text()
    credentialed = start_chunkserver(cluster, "credentialed", server_credential)
    impostor = start_chunkserver(cluster, "impostor", client_credential)
    try:
        deadline = time.monotonic() + DEADLINE_S
        while await chunkservers_up(cluster) < 4:
            assert time.monotonic() < deadline, "the credentialed chunkserver never came up"
            assert credentialed.poll() is None, "the credentialed chunkserver died"
            await trio.sleep(0.2)
        assert impostor.wait(timeout=DEADLINE_S) != 0
        impostor_log = (cluster.directory / "logs" / "impostor.log").read_text()
        assert "client credential, which cannot act as chunkserver" in impostor_log
        client_config = config_with_key_file(cluster, client_credential, "client.toml")
        data = os.urandom(1 << 20)
        source, back = tmp_path / "in", tmp_path / "out"
        source.write_bytes(data)
        # Goal 4 on four chunkservers: the credentialed one is in every chain.
        async with cluster.client() as client:
            await client.set_goal(ROOT_INODE, 4)
        put = vmstore_command("put", str(source), "/c.img", config=client_config)
        assert put.returncode == 0, put.stderr
        for name in cluster.chunkserver_names[:3]:
            cluster.kill(name)  # only the credentialed chunkserver is left to read from
        got = vmstore_command("get", "/c.img", str(back), config=client_config)
        assert got.returncode == 0, got.stderr
        assert back.read_bytes() == data
        refused = vmstore_command("status", config=client_config)
        assert refused.returncode == 1
        assert "client credential, which cannot act as admin" in refused.stderr
    finally:
        for process in (credentialed, impostor):
            if process.poll() is None:
                process.kill()
                process.wait()
