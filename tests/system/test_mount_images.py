"""VM images on the mount with the real tools: qemu-img, qemu-io and fio.

What a user does first with vmstore: create images, convert existing ones
onto it, run benchmarks and verifying workloads, and lose a chunkserver
while a guest writes. Every tool runs as a separate process against a real
``vmstore mount`` of a real cluster (master + 3 chunkservers, goal 2).

Correctness only: no timing is asserted. Each tool runs with an explicit,
generous timeout so that a wedged mount fails the test instead of hanging
the run.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest

from tests.system.conftest import Cluster, Mount, vmstore_command

pytestmark = pytest.mark.system

KiB = 1024
MiB = 1024 * KiB
GiB = 1024 * MiB

GOAL = 2  # the cluster default: every chunk on two chunkservers
SOURCE_BYTES = 2 * GiB
DATA_EVERY_BYTES = 256 * MiB  # a data region starts every 256 MiB ...
DATA_REGION_BYTES = 64 * MiB  # ... and is 64 MiB long; the rest is zeros
# Lone 4 KiB data blocks inside the zero regions (one at the very end).
SCATTERED_BLOCKS = (100 * MiB + 12 * KiB, 700 * MiB + 4 * KiB, 1500 * MiB + 308 * KiB,
                    SOURCE_BYTES - 4 * KiB)
SOURCE_DATA_BYTES = (SOURCE_BYTES // DATA_EVERY_BYTES) * DATA_REGION_BYTES \
    + len(SCATTERED_BLOCKS) * 4 * KiB

TOOL_TIMEOUT_S = 180.0  # one tool run; each takes seconds here


def run(*command: str | Path, timeout_s: float = TOOL_TIMEOUT_S, cwd: Path | None = None) -> str:
    """Run a tool to completion (check=True); its output goes into any failure."""
    try:
        result = subprocess.run([str(part) for part in command], check=True, timeout=timeout_s,
                                capture_output=True, text=True, cwd=cwd)
    except subprocess.CalledProcessError as error:
        raise AssertionError(f"{command[0]} exited {error.returncode}: {command}\n"
                             f"stdout: {error.stdout[-3000:]}\n"
                             f"stderr: {error.stderr[-3000:]}") from None
    return result.stdout


def allocated_bytes(path: Path) -> int:
    return os.stat(path).st_blocks * 512


def replica_disk_bytes(cluster: Cluster) -> int:
    """Disk space the chunkservers' replica files take (sparse files count holes as 0)."""
    return sum(allocated_bytes(path) for name in cluster.chunkserver_names
               for path in (cluster.directory / name).rglob("*.chunk"))


# --- a mixed data/zero source image on local disk ----------------------------------

@pytest.fixture(scope="module")
def source_image(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """2 GiB raw: 64 MiB of random data every 256 MiB, a few lone 4 KiB blocks, zeros."""
    path = tmp_path_factory.mktemp("source") / "source.raw"
    with open(path, "wb") as image:
        image.truncate(SOURCE_BYTES)
        for start in range(0, SOURCE_BYTES, DATA_EVERY_BYTES):
            image.seek(start)
            for _ in range(DATA_REGION_BYTES // MiB):
                image.write(os.urandom(MiB))
        for offset in SCATTERED_BLOCKS:
            assert offset % DATA_EVERY_BYTES >= DATA_REGION_BYTES  # inside a zero region
            image.seek(offset)
            image.write(os.urandom(4 * KiB))
    return path


# --- qemu-img ------------------------------------------------------------------------

# preallocation=metadata writes every L2 table with a flush after each batch
# (~40 fdatasyncs for 4 GiB, ~170 for 20 GiB): kept small so a loaded machine
# stays well inside the timeout.
@pytest.mark.parametrize(("preallocation", "size_gib"), [("off", 20), ("metadata", 4)])
def test_qcow2_created_on_mount_checks_clean(mount: Mount, preallocation: str,
                                             size_gib: int) -> None:
    image = mount.path / "new.qcow2"
    run("qemu-img", "create", "-q", "-f", "qcow2", "-o", f"preallocation={preallocation}",
        image, f"{size_gib}G")
    run("qemu-img", "check", image)
    info = json.loads(run("qemu-img", "info", "--output=json", image))
    assert info["format"] == "qcow2"
    assert info["virtual-size"] == size_gib * GiB


def test_raw_falloc_preallocation_is_emulated_and_reads_zeros(mount: Mount) -> None:
    """No fallocate in pyfuse3: glibc emulates it by writing a zero byte per block.

    libvirt/virt-manager create raw images this way ("allocate entire disk
    now"). Kept small: every emulated block is a request to the mount.
    """
    image = mount.path / "falloc.raw"
    run("qemu-img", "create", "-q", "-f", "raw", "-o", "preallocation=falloc", image, "8M")
    assert os.stat(image).st_size == 8 * MiB
    assert image.read_bytes() == bytes(8 * MiB)


def test_convert_raw_onto_mount_is_identical_and_thin(cluster: Cluster, mount: Mount,
                                                      source_image: Path) -> None:
    copy = mount.path / "copy.raw"
    run("qemu-img", "convert", "-O", "raw", source_image, copy)
    run("qemu-img", "compare", "-f", "raw", "-F", "raw", source_image, copy)
    assert os.stat(copy).st_size == SOURCE_BYTES
    # Zeros are holes: du shows the data (st_blocks counts whole chunks), far from 2 GiB.
    assert SOURCE_DATA_BYTES <= allocated_bytes(copy) <= SOURCE_BYTES // 2
    # ... and on the chunkservers' disks too: GOAL copies of the data, not of 2 GiB.
    assert GOAL * SOURCE_DATA_BYTES <= replica_disk_bytes(cluster) <= GOAL * SOURCE_BYTES // 2


def test_convert_over_existing_image_overwrites_with_zeros(mount: Mount,
                                                           source_image: Path) -> None:
    """``convert -n`` onto an image holding other data: the zeros must land as zeros.

    qemu-img cannot punch holes here (no fallocate), so it writes zero
    buffers, which the mount turns into zero ranges; where old data was,
    the bytes must read back as zeros afterwards.
    """
    target = mount.path / "target.raw"
    run("qemu-img", "create", "-q", "-f", "raw", target, str(SOURCE_BYTES))
    descriptor = os.open(target, os.O_WRONLY)
    try:
        # Old data where the source has zeros, including around a chunk edge and
        # next to a lone data block.
        for offset, size in ((DATA_REGION_BYTES - 4 * KiB, 8 * KiB), (128 * MiB, 4 * MiB),
                             (1000 * MiB, MiB), (1500 * MiB + 300 * KiB, 64 * KiB),
                             (SOURCE_BYTES - 1 * MiB, MiB - 4 * KiB)):
            os.pwrite(descriptor, os.urandom(size), offset)
    finally:
        os.close(descriptor)
    differs = subprocess.run(["qemu-img", "compare", "-q", "-f", "raw", "-F", "raw",
                              str(source_image), str(target)], timeout=TOOL_TIMEOUT_S)
    assert differs.returncode == 1  # the planted data is there
    run("qemu-img", "convert", "-n", "-O", "raw", source_image, target)
    run("qemu-img", "compare", "-f", "raw", "-F", "raw", source_image, target)


def test_convert_qcow2_onto_mount_is_identical_and_checks_clean(mount: Mount,
                                                                source_image: Path) -> None:
    copy = mount.path / "copy.qcow2"
    run("qemu-img", "convert", "-O", "qcow2", source_image, copy)
    run("qemu-img", "check", copy)
    run("qemu-img", "compare", "-f", "raw", "-F", "qcow2", source_image, copy)
    assert allocated_bytes(copy) <= SOURCE_BYTES // 2  # qcow2 does not store the zeros


@pytest.mark.parametrize("image_format", ["raw", "qcow2"])
@pytest.mark.parametrize("cache", ["none", "writeback"])  # none: O_DIRECT, as QEMU cache=none
def test_qemu_img_bench_writes_and_reads(mount: Mount, image_format: str, cache: str) -> None:
    image = mount.path / f"bench.{image_format}"
    run("qemu-img", "create", "-q", "-f", image_format, image, "256M")
    count, size = 2000, 4 * KiB
    run("qemu-img", "bench", "-f", image_format, "-t", cache, "-w", "--pattern=0xa5",
        "--flush-interval=500", "-c", str(count), "-s", str(size), image)
    run("qemu-img", "bench", "-f", image_format, "-t", cache, "-c", str(count),
        "-s", str(size), image)
    # What the write bench left: its pattern, then the image's zeros.
    written = count * size
    run("qemu-io", "-f", image_format, "-t", "none",
        "-c", f"read -P 0xa5 0 {written}", "-c", f"read -P 0 {written} {MiB}", image)
    if image_format == "qcow2":
        run("qemu-img", "check", image)


def test_vmstore_import_converts_skips_zeros_and_refuses_bad_targets(
        mount: Mount, source_image: Path, tmp_path: Path) -> None:
    target = mount.path / "imported.qcow2"
    result = vmstore_command("import", str(source_image), str(target), "--format", "qcow2",
                             config=mount.cluster.config_path)
    assert result.returncode == 0, result.stderr
    assert "of 2.00 GiB" in result.stderr  # the progress line (plain: not a terminal)
    assert "qcow2, 2.00 GiB virtual" in result.stdout
    run("qemu-img", "compare", "-f", "raw", "-F", "qcow2", source_image, target)
    assert allocated_bytes(target) < SOURCE_BYTES // 2  # the zeros were not written
    again = vmstore_command("import", str(source_image), str(target),
                            config=mount.cluster.config_path)
    assert again.returncode == 1 and "exists; pass --force" in again.stderr
    elsewhere = vmstore_command("import", str(source_image), str(tmp_path / "local.img"),
                                config=mount.cluster.config_path)
    assert elsewhere.returncode == 1 and "not on a vmstore mount" in elsewhere.stderr


# --- fio with verification -------------------------------------------------------------

MIXED_BLOCKS = "--bssplit=4k/40:16k/30:64k/30"
BUFFERED = ("--ioengine=psync",)
DIRECT = ("--direct=1", "--ioengine=libaio", "--iodepth=16")


def fio_command(directory: Path, output: Path, *options: str) -> list[str]:
    return ["fio", "--name=verify", f"--directory={directory}", "--verify=crc32c",
            "--do_verify=1", "--output-format=json", f"--output={output}", *options]


def fio(directory: Path, *options: str, output: Path) -> list[dict[str, Any]]:
    # cwd: where fio leaves its verify state files, if any
    run(*fio_command(directory, output, *options), cwd=output.parent)
    jobs: list[dict[str, Any]] = json.loads(output.read_text())["jobs"]
    return jobs


def assert_written_and_verified(jobs: list[dict[str, Any]], size_bytes: int) -> None:
    """Every job wrote its file whole and read all of it back verified, without error."""
    for job in jobs:
        assert job["error"] == 0, job
        assert job["write"]["io_bytes"] == size_bytes, job["write"]
        assert job["read"]["io_bytes"] == size_bytes, job["read"]  # the verify pass


@pytest.mark.parametrize(("options", "size", "jobs"), [
    pytest.param(("--rw=write", "--bs=1M", *BUFFERED), 128 * MiB, 1, id="seq-buffered"),
    pytest.param(("--rw=write", "--bs=1M", *DIRECT), 128 * MiB, 1, id="seq-direct"),
    pytest.param(("--rw=randwrite", MIXED_BLOCKS, *BUFFERED), 64 * MiB, 1,
                 id="rand-buffered"),
    pytest.param(("--rw=randwrite", MIXED_BLOCKS, *DIRECT), 64 * MiB, 3,
                 id="rand-direct-3jobs"),
])
def test_fio_write_then_verify(mount: Mount, tmp_path: Path, options: tuple[str, ...],
                               size: int, jobs: int) -> None:
    results = fio(mount.path, *options, f"--size={size}", f"--numjobs={jobs}",
                  output=tmp_path / "fio.json")
    assert len(results) == jobs
    assert_written_and_verified(results, size)


# --- a chunkserver killed under a verifying writer ---------------------------------

def chunk_files(cluster: Cluster, name: str) -> int:
    return sum(1 for _ in (cluster.directory / name).rglob("*.chunk"))


def test_chunkserver_killed_during_verifying_fio(cluster: Cluster, mount: Mount,
                                                 tmp_path: Path) -> None:
    """kill -9 of a replica holder mid-write: the writes go on, every byte verifies.

    Goal 2 with 3 chunkservers, so the mount gets a new chain from the master
    and repeats the write. Then the dead server comes back with stale
    replicas, and the file must still verify (nothing is read from them).
    """
    size = 256 * MiB
    job = ("--rw=randwrite", "--bssplit=4k/20:64k/80", *DIRECT, f"--size={size}")
    output = tmp_path / "fio.json"
    writer = subprocess.Popen(fio_command(mount.path, output, *job), stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True, cwd=tmp_path)
    try:
        # Wait until the writes have reached the chunkservers, then a little more.
        deadline = time.monotonic() + 60
        while not any(chunk_files(cluster, name) for name in cluster.chunkserver_names):
            assert writer.poll() is None, writer.communicate()
            assert time.monotonic() < deadline, "fio wrote nothing to the chunkservers"
            time.sleep(0.05)
        time.sleep(1.5)
        victim = max(cluster.chunkserver_names, key=lambda name: chunk_files(cluster, name))
        assert writer.poll() is None, "fio finished before the kill: the test proves nothing"
        cluster.kill(victim, signal.SIGKILL)
        stdout, stderr = writer.communicate(timeout=TOOL_TIMEOUT_S)
    finally:
        if writer.poll() is None:
            writer.kill()
            writer.communicate()
    assert writer.returncode == 0, f"fio exited {writer.returncode}:\n{stdout}\n{stderr}"
    jobs = json.loads(output.read_text())["jobs"]
    assert_written_and_verified(jobs, size)
    # The kill hit writes in flight: the mount repaired chains (it logs that at INFO).
    assert "new chain" in mount.log.read_text()

    cluster.restart(victim)
    again = fio(mount.path, *job, "--verify_only", output=tmp_path / "again.json")
    assert again[0]["error"] == 0, again[0]
    assert again[0]["read"]["io_bytes"] == size
