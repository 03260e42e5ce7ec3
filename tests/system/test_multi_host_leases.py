"""One writer per image across hosts: real mounts in network namespaces.

Three hosts (h1, h2, h3), each a network namespace with its own chunkserver;
h1 and h2 also mount the cluster. The files are opened through the mounts
as QEMU would open an image, and what reached the disks is read back from
every replica directly.
"""

from __future__ import annotations

import errno
import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
import trio

from tests.system.conftest import assert_no_crash
from tests.system.network_lab import NetworkLab, require_network_namespaces, wait_until
from tests.system.replicas import every_replica
from vmstore.dfs.client.client import open_client
from vmstore.dfs.client.master_client import ClientIdentity
from vmstore.dfs.constants import CHUNK_SIZE_BYTES

pytestmark = pytest.mark.system
BLOCK_BYTES = 64 * 1024
LEASE_EXPIRY_S = 4.0


@pytest.fixture
def lab(tmp_path: Path) -> Iterator[NetworkLab]:
    require_network_namespaces()
    started = NetworkLab(tmp_path / "lab", ["h1", "h2", "h3"],
                         master_flags=("--lease-expiry", str(LEASE_EXPIRY_S)))
    try:
        started.mount("h1")
        started.mount("h2")
        yield started
    finally:
        started.close()
    assert_no_crash(started.logs())


def lease_command(lab: NetworkLab, path: Path, *options: str) -> str:
    result = subprocess.run([sys.executable, "-m", "vmstore.cli.main", "lease", str(path),
                             *options], capture_output=True, text=True, timeout=60,
                            env={**os.environ, "VMSTORE_CONFIG": str(lab.config("h1"))})
    assert result.returncode == 0, result.stderr
    return result.stdout


def write_at(fd: int, offset: int, data: bytes) -> None:
    assert os.pwrite(fd, data, offset) == len(data)


def assert_late_write_refused(fd: int, offset: int, data: bytes) -> None:
    """A fenced host's write fails at once if its mount already knows, else it
    is queued (write-behind) and the fsync reports it lost: never silent."""
    try:
        write_at(fd, offset, data)
    except OSError as refused:
        assert refused.errno == errno.EIO
        return
    with pytest.raises(OSError) as lost:
        os.fsync(fd)
    assert lost.value.errno == errno.EIO


def close_reporting_lost_writes(fd: int) -> None:
    try:
        os.close(fd)
    except OSError as error:  # the lost writes are reported at close too
        assert error.errno == errno.EIO


def replicas_of(lab: NetworkLab, inode: int, index: int) -> dict[str, bytes]:
    async def read() -> dict[str, bytes]:
        async with open_client(lab.address_of_master()[0], lab.address_of_master()[1],
                               lab.key, ClientIdentity(host_label="checker"),
                               reconnect_timeout_s=30) as client:
            return await every_replica(client, inode, index, 0, BLOCK_BYTES)

    return trio.run(read)


def test_second_writer_gets_ebusy_naming_the_holder(lab: NetworkLab) -> None:
    image_h1 = lab.mountpoints["h1"] / "guest.img"
    image_h2 = lab.mountpoints["h2"] / "guest.img"
    fd = os.open(image_h1, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        write_at(fd, 0, b"1" * BLOCK_BYTES)
        os.fsync(fd)
        with pytest.raises(OSError) as refused:
            os.open(image_h2, os.O_RDWR)
        assert refused.value.errno == errno.EBUSY
        with open(image_h2, "rb") as reader:  # reading from another host is fine
            assert reader.read(BLOCK_BYTES) == b"1" * BLOCK_BYTES
        assert "write lease held by host h1" in lease_command(lab, image_h2)
        mount_log = (lab.directory / "logs" / "mount-h2.log").read_text()
        assert "open for writing" in mount_log and "host h1" in mount_log
    finally:
        os.close(fd)
    fd = os.open(image_h2, os.O_RDWR)  # free once h1 closed it
    os.close(fd)


def test_authorized_handover_fences_the_old_host(lab: NetworkLab) -> None:
    old, new, late = b"o" * BLOCK_BYTES, b"n" * BLOCK_BYTES, b"x" * BLOCK_BYTES
    image_h1 = lab.mountpoints["h1"] / "moving.img"
    image_h2 = lab.mountpoints["h2"] / "moving.img"
    source = os.open(image_h1, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        for index in range(2):
            write_at(source, index * CHUNK_SIZE_BYTES, old)
        os.fsync(source)
        inode = os.fstat(source).st_ino
        assert "handover waiting: host h2" in lease_command(lab, image_h1, "--handover-to", "h2")
        destination = os.open(image_h2, os.O_RDWR)  # allowed: its first write takes over
        try:
            write_at(destination, 0, new)
            os.fsync(destination)
            assert "held by host h2" in lease_command(lab, image_h2)
            for index in range(2):  # the chunk h2 wrote, and one it never touched
                assert_late_write_refused(source, index * CHUNK_SIZE_BYTES, late)
        finally:
            os.close(destination)
    finally:
        close_reporting_lost_writes(source)
    for index, expected in {0: new, 1: old}.items():
        replicas = replicas_of(lab, inode, index)
        assert len(replicas) == 2 and set(replicas.values()) == {expected}, index


def test_cut_off_host_loses_the_lease_and_its_late_writes_land_nowhere(
        lab: NetworkLab) -> None:
    first, second, late = b"1" * BLOCK_BYTES, b"2" * BLOCK_BYTES, b"x" * BLOCK_BYTES
    image_h1 = lab.mountpoints["h1"] / "stranded.img"
    image_h2 = lab.mountpoints["h2"] / "stranded.img"
    stranded = os.open(image_h1, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        write_at(stranded, 0, first)
        os.fsync(stranded)
        inode = os.fstat(stranded).st_ino
        lab.cut("h1")

        def h2_can_write() -> bool:
            try:
                os.close(os.open(image_h2, os.O_RDWR))
                return True
            except OSError as error:
                assert error.errno == errno.EBUSY
                return False

        wait_until(h2_can_write, LEASE_EXPIRY_S * 5, "h1's lease to expire")
        taker = os.open(image_h2, os.O_RDWR)
        try:
            write_at(taker, 0, second)
            os.fsync(taker)
            lab.reconnect("h1")
            outcome: list[BaseException | None] = []

            def late_write() -> None:
                # Refused at once if h1 already knows, else queued (write-behind)
                # and refused at the fsync: never durable, never silent.
                try:
                    write_at(stranded, 0, late)
                    write_at(stranded, BLOCK_BYTES, late)
                    os.fsync(stranded)
                    outcome.append(None)
                except OSError as error:
                    outcome.append(error)

            writer = threading.Thread(target=late_write)
            writer.start()
            writer.join(timeout=120)
            assert not writer.is_alive(), "h1's write neither failed nor finished"
            assert isinstance(outcome[0], OSError) and outcome[0].errno == errno.EIO
            write_at(taker, BLOCK_BYTES, second)  # h2 goes on writing
            os.fsync(taker)
        finally:
            os.close(taker)
    finally:
        close_reporting_lost_writes(stranded)
    wait_until(lambda: set(replicas_of(lab, inode, 0).values()) == {second},
               30, "every replica to hold h2's bytes")
    replicas = replicas_of(lab, inode, 0)
    assert late not in replicas.values()
