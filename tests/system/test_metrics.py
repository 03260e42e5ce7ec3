"""Every daemon and the mount serve Prometheus metrics with plausible values after I/O."""

from __future__ import annotations

import mmap
import os
import re
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.system.conftest import Cluster, Mount, require_fuse
from vmstore.cli.local_cluster import local_down

pytestmark = pytest.mark.system
MIB = 1024 * 1024
ENDPOINT = re.compile(r"serving metrics at (http://\S+/metrics)")
Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


@pytest.fixture
def metered(tmp_path: Path) -> Iterator[tuple[Cluster, Mount]]:
    require_fuse()
    cluster = Cluster(tmp_path / "cluster", 3, master_flags=("--metrics", "127.0.0.1:0"),
                      chunkserver_flags=("--metrics", "127.0.0.1:0"))
    try:
        mount = Mount(cluster, cluster.directory / "mnt",
                      extra_arguments=("--metrics", "127.0.0.1:0"))
        try:
            yield cluster, mount
        finally:
            mount.force_unmount()
    finally:
        local_down(cluster.directory)


def endpoint(log: Path) -> str:
    found = ENDPOINT.search(log.read_text())
    assert found, f"{log} names no metrics endpoint"
    return found.group(1)


def scrape(url: str) -> Samples:
    with urllib.request.urlopen(url, timeout=10) as response:
        text = response.read().decode()
    return {(sample.name, tuple(sorted(sample.labels.items()))): sample.value
            for family in text_string_to_metric_families(text) for sample in family.samples}


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


def test_metrics_after_io(metered: tuple[Cluster, Mount]) -> None:
    cluster, mount = metered
    data = os.urandom(8 * MIB)
    path = mount.path / "metered.img"
    path.write_bytes(data)
    with open(path, "rb+") as image:
        os.fsync(image.fileno())
    assert path.read_bytes() == data
    assert not (mount.path / "missing").exists()

    mount_samples = scrape(endpoint(mount.log))
    assert value(mount_samples, "vmstore_mount_data_bytes_total", direction="written") >= 8 * MIB
    assert value(mount_samples, "vmstore_mount_data_bytes_total", direction="read") >= 8 * MIB
    assert value(mount_samples, "vmstore_mount_operation_seconds_count", operation="write") > 0
    assert value(mount_samples, "vmstore_mount_operation_seconds_count", operation="fsync") >= 1
    assert value(mount_samples, "vmstore_mount_operation_errors_total", operation="lookup",
                 errno="ENOENT") >= 1

    stored, writers = 0.0, 0
    for name in cluster.chunkserver_names:
        samples = scrape(endpoint(cluster.directory / "logs" / f"{name}.log"))
        stored += value(samples, "vmstore_chunkserver_data_bytes_total", direction="written")
        writers += value(samples, "vmstore_chunkserver_request_seconds_count",
                         operation="write") > 0
        assert value(samples, "vmstore_chunkserver_disk_bytes", kind="total") > 0
        assert value(samples, "vmstore_chunkserver_master_connected") == 1
    assert stored >= 2 * 8 * MIB  # goal 2: every byte on two chunkservers
    assert writers >= 2

    master_url = endpoint(cluster.directory / "logs" / "master.log")
    deadline = time.monotonic() + 30
    while True:  # the health gauges follow every 2 s
        master = scrape(master_url)
        if value(master, "vmstore_chunks", state="ok") >= 1 or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    assert value(master, "vmstore_chunks", state="ok") >= 1
    assert value(master, "vmstore_chunks", state="lost") == 0
    assert value(master, "vmstore_chunkservers", state="up") == 3
    assert value(master, "vmstore_client_sessions") >= 1
    assert value(master, "vmstore_master_request_seconds_count", request="ChunkForWrite") >= 1
    assert ("vmstore_write_leases", ()) in master


def test_direct_writes_cost_one_request_each(metered: tuple[Cluster, Mount]) -> None:
    """An O_DIRECT handle is a direct_io one: the kernel does not ask for
    security.capability before each write (it did: a GETXATTR per write)."""
    _, mount = metered
    path = mount.path / "direct.img"
    path.write_bytes(bytes(256 * 4096))
    buffer = mmap.mmap(-1, 4096)  # page-aligned, as O_DIRECT needs
    buffer.write(os.urandom(4096))

    def getxattr_requests() -> float:
        return value(scrape(endpoint(mount.log)), "vmstore_mount_operation_seconds_count",
                     operation="getxattr")

    before = getxattr_requests()
    fd = os.open(path, os.O_RDWR | os.O_DIRECT)
    try:
        for block in range(200):
            assert os.pwritev(fd, [buffer], block * 4096) == 4096
        os.fsync(fd)
    finally:
        os.close(fd)
        buffer.close()
    assert getxattr_requests() - before < 10
