"""A cluster with TLS required on every connection: the data tests pass unchanged,
the mount works, and a client that speaks plaintext is refused."""

from __future__ import annotations

import os
import signal
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.system import test_cluster_io
from tests.system.conftest import (
    Cluster,
    FsyncingWriter,
    Mount,
    assert_no_crash,
    require_fuse,
    vmstore_command,
)
from vmstore.cli.local_cluster import local_down
from vmstore.cli.tls_command import create_ca, issue_host_certificate

pytestmark = pytest.mark.system


@pytest.fixture
def tls_cluster(tmp_path: Path) -> Iterator[Cluster]:
    started = Cluster(tmp_path / "cluster", 3, tls=True)
    try:
        yield started
    finally:
        local_down(started.directory)
    assert_no_crash(started.logs())


async def test_large_files_round_trip_over_tls(tls_cluster: Cluster) -> None:
    assert tls_cluster.tls.mode == "required"
    await test_cluster_io.test_large_file_round_trip(tls_cluster, goal=2)


async def test_a_killed_chunkserver_loses_no_acknowledged_write_over_tls(
        tls_cluster: Cluster) -> None:
    await test_cluster_io.test_chunkserver_killed_mid_stream_loses_no_acknowledged_write(
        tls_cluster)


def test_the_mount_works_and_plaintext_is_refused(tls_cluster: Cluster, tmp_path: Path) -> None:
    require_fuse()
    mount = Mount(tls_cluster, tmp_path / "mnt")
    try:
        data = os.urandom(3 * 1024 * 1024 + 17)
        (mount.path / "over-tls.img").write_bytes(data)
        descriptor = os.open(mount.path / "over-tls.img", os.O_RDONLY)
        try:
            os.posix_fadvise(descriptor, 0, 0, os.POSIX_FADV_DONTNEED)
        finally:
            os.close(descriptor)
        assert (mount.path / "over-tls.img").read_bytes() == data
    finally:
        mount.force_unmount()
    status = vmstore_command("status", "--json", config=tls_cluster.config_path)
    assert status.returncode == 0, status.stderr
    plaintext = tmp_path / "plaintext.toml"
    plaintext.write_text(tls_cluster.config_path.read_text().split("[tls]")[0])
    refused = vmstore_command("status", config=plaintext)
    assert refused.returncode == 1
    assert f"handshake with {tls_cluster.master_address} failed" in refused.stderr
    assert "spoke plaintext; this daemon requires TLS" in tls_cluster.logs()["master"]


def test_tls_is_turned_on_in_a_running_cluster_while_a_writer_goes_on(
        healing_cluster: Cluster, tmp_path: Path) -> None:
    """The README's procedure: certificates, mode "on" (mount reloaded, daemons
    restarted one at a time), then "required" the same way; a writer with
    fsync runs throughout and loses nothing it was told is durable."""
    require_fuse()
    cluster = healing_cluster
    certificates = cluster.directory / "tls"
    create_ca(certificates)
    issue_host_certificate(certificates, "local", ["127.0.0.1"])
    plain_config = cluster.config_path.read_text()
    mount = Mount(cluster, tmp_path / "mnt")
    writer = FsyncingWriter(mount.path / "live.img")
    try:
        for mode in ("on", "required"):
            cluster.config_path.write_text(
                plain_config + f'\n[tls]\nmode = "{mode}"\nca_file = "{certificates}/ca.crt"\n'
                f'cert_file = "{certificates}/local.crt"\nkey_file = "{certificates}/local.key"\n')
            os.kill(mount.pid, signal.SIGHUP)
            for name in ["master", *cluster.chunkserver_names]:
                cluster.restart_when_healthy(name)
                writer.wait_for_progress(5, f"after {name} restarted in TLS mode {mode}")
        writer.stop_and_check()
        assert "configuration reloaded" in mount.log.read_text()
        refusals = tls_refusals(cluster.logs()["master"])
        assert refusals == 0, "a plaintext connection reached the master after 'required'"
    finally:
        writer.stop()  # (again: after a failure, before unmounting)
        mount.force_unmount()
    refused = vmstore_command("status", config=tmp_path / "absent.toml")
    assert refused.returncode == 1  # no [tls], no key: nothing gets in


def tls_refusals(master_log: str) -> int:
    """Plaintext refusals after the master's last start."""
    last_run = master_log.rsplit("master serving on", 1)[-1]
    return last_run.count("spoke plaintext")
