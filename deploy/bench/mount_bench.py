#!/usr/bin/env python3
"""fio through the FUSE mount of a local cluster, next to local disk, in one run.

Run from a checkout, as root (FUSE mount, allow_other), with fio installed
(deploy/install-deps.sh):

    python3 deploy/bench/mount_bench.py [--dir /var/tmp/vmstore-mount-bench] [--runtime 10]

It starts a local cluster (master + 3 chunkservers on loopback, goal 2)
and mounts it with a real ``vmstore mount`` process, the same ``Cluster``
and ``Mount`` the system tests use. Then it runs the same fio jobs on a
1 GiB file in a directory on the local disk (under --dir) and on the mount,
and prints a markdown table with the ratio vmstore / local disk:

* sequential 1 MiB write of the 1 GiB file (psync, fsync at the end), then
  a sequential 1 MiB read of it (the page cache is dropped for the file
  before each job: fio's ``invalidate``);
* random 4 KiB reads and writes, O_DIRECT (libaio), queue depth 1 and 16;
* random 64 KiB 70 % read / 30 % write, O_DIRECT, depth 16;
* 4 KiB random writes each followed by fsync (O_DIRECT, depth 1): the fsync
  latency p50 / p99, and write+fsync pairs per second.

Random and fsync jobs run for --runtime seconds each. Numbers vary run to
run: compare only within one run. For latency rows a ratio above 1 means
vmstore is slower.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from tests.system.conftest import Cluster, Mount  # noqa: E402  (what the tests use)
from vmstore.cli.local_cluster import local_down  # noqa: E402

FILE_SIZE = "1G"
FILE_NAME = "bench.img"
DIRECT = ("--direct=1", "--ioengine=libaio")
JOB_TIMEOUT_EXTRA_S = 300  # over --runtime; sequential jobs are sized, not timed

Job = dict[str, Any]


def write_bw(job: Job) -> float:
    return float(job["write"]["bw_bytes"]) / 1e6


def read_bw(job: Job) -> float:
    return float(job["read"]["bw_bytes"]) / 1e6


def read_iops(job: Job) -> float:
    return float(job["read"]["iops"])


def write_iops(job: Job) -> float:
    return float(job["write"]["iops"])


def mixed_bw(job: Job) -> float:
    return read_bw(job) + write_bw(job)


def sync_percentile(name: str) -> Callable[[Job], float]:
    def metric(job: Job) -> float:
        return float(job["sync"]["lat_ns"]["percentile"][name]) / 1e3

    return metric


@dataclass(frozen=True)
class Workload:
    name: str
    options: tuple[str, ...]
    timed: bool  # time_based for --runtime (else: once over the file)
    metrics: tuple[tuple[str, Callable[[Job], float]], ...]


WORKLOADS = (
    Workload("seq-write", ("--rw=write", "--bs=1M", "--ioengine=psync", "--end_fsync=1"),
             False, (("seq write 1 MiB, fsync at end (MB/s)", write_bw),)),
    Workload("seq-read", ("--rw=read", "--bs=1M", "--ioengine=psync"),
             False, (("seq read 1 MiB (MB/s)", read_bw),)),
    Workload("randread-qd1", ("--rw=randread", "--bs=4k", *DIRECT, "--iodepth=1"),
             True, (("rand read 4 KiB, O_DIRECT, QD1 (IOPS)", read_iops),)),
    Workload("randread-qd16", ("--rw=randread", "--bs=4k", *DIRECT, "--iodepth=16"),
             True, (("rand read 4 KiB, O_DIRECT, QD16 (IOPS)", read_iops),)),
    Workload("randwrite-qd1", ("--rw=randwrite", "--bs=4k", *DIRECT, "--iodepth=1"),
             True, (("rand write 4 KiB, O_DIRECT, QD1 (IOPS)", write_iops),)),
    Workload("randwrite-qd16", ("--rw=randwrite", "--bs=4k", *DIRECT, "--iodepth=16"),
             True, (("rand write 4 KiB, O_DIRECT, QD16 (IOPS)", write_iops),)),
    Workload("randrw-64k", ("--rw=randrw", "--rwmixread=70", "--bs=64k", *DIRECT,
                            "--iodepth=16"),
             True, (("rand 64 KiB 70/30 r/w, O_DIRECT, QD16 (MB/s)", mixed_bw),)),
    Workload("write-fsync", ("--rw=randwrite", "--bs=4k", "--direct=1", "--ioengine=psync",
                             "--iodepth=1", "--fsync=1"),
             True, (("4 KiB write+fsync: fsync p50 (µs)", sync_percentile("50.000000")),
                    ("4 KiB write+fsync: fsync p99 (µs)", sync_percentile("99.000000")),
                    ("4 KiB write+fsync pairs/s", write_iops))),
)


def run_fio(workload: Workload, directory: Path, scratch: Path, runtime_s: float) -> Job:
    output = scratch / f"{workload.name}.json"  # not on the file system measured
    command = ["fio", f"--name={workload.name}", f"--filename={directory / FILE_NAME}",
               f"--size={FILE_SIZE}", "--output-format=json", f"--output={output}",
               *workload.options]
    if workload.timed:
        command += ["--time_based", f"--runtime={runtime_s:g}"]
    subprocess.run(command, check=True, timeout=runtime_s + JOB_TIMEOUT_EXTRA_S,
                   stdout=subprocess.DEVNULL)
    jobs: list[Job] = json.loads(output.read_text())["jobs"]
    output.unlink()
    job = jobs[0]
    if job["error"]:
        raise RuntimeError(f"fio {workload.name} in {directory}: error {job['error']}")
    return job


def measure(label: str, directory: Path, scratch: Path, runtime_s: float,
            workloads: tuple[Workload, ...]) -> dict[str, float]:
    results: dict[str, float] = {}
    for workload in workloads:
        job = run_fio(workload, directory, scratch, runtime_s)
        for name, metric in workload.metrics:
            results[name] = metric(job)
        print(f"  {label}: {workload.name} done", file=sys.stderr)
    (directory / FILE_NAME).unlink()
    return results


def fio_version() -> str:
    return subprocess.run(["fio", "--version"], capture_output=True, text=True,
                          check=True, timeout=30).stdout.strip()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dir", type=Path, help="work directory on the local disk to "
                        "measure (default: a new temp dir under /var/tmp, removed after)")
    parser.add_argument("--runtime", type=float, default=10.0,
                        help="seconds per random / fsync workload (default 10)")
    parser.add_argument("--workloads", help="comma-separated names to run, in table order"
                        f" (default: all of {', '.join(w.name for w in WORKLOADS)}); random"
                        " and fsync jobs need seq-write first, which lays the file out")
    args = parser.parse_args()
    chosen = WORKLOADS
    if args.workloads:
        names = set(args.workloads.split(","))
        unknown = names - {w.name for w in WORKLOADS}
        if unknown:
            parser.error(f"unknown workloads: {', '.join(sorted(unknown))}")
        chosen = tuple(w for w in WORKLOADS if w.name in names)
    if shutil.which("fio") is None:
        parser.error("fio is not installed (deploy/install-deps.sh installs it)")
    directory = args.dir or Path(tempfile.mkdtemp(prefix="vmstore-mount-bench-",
                                                  dir="/var/tmp"))
    directory = directory.resolve()
    local_dir = directory / "local"
    local_dir.mkdir(parents=True, exist_ok=True)

    local = measure("local disk", local_dir, directory, args.runtime, chosen)
    cluster = Cluster(directory / "cluster", 3)
    try:
        mount = Mount(cluster, directory / "cluster" / "mnt")
        try:
            remote = measure("vmstore mount", mount.path, directory, args.runtime, chosen)
        finally:
            mount.force_unmount()
    finally:
        local_down(cluster.directory)

    print(f"\n{fio_version()}, kernel {platform.release()}, {os.cpu_count()} CPUs; "
          f"1 GiB file; random and fsync jobs {args.runtime:g} s each; "
          f"local disk = {local_dir}\n")
    print("| workload | local disk | vmstore (goal 2, loopback) | ratio |")
    print("|---|---:|---:|---:|")
    for name, value in local.items():
        ratio = remote[name] / value if value else float("nan")
        print(f"| {name} | {value:,.0f} | {remote[name]:,.0f} | {ratio:.2f} |")
    if args.dir is None:
        shutil.rmtree(directory)
    return 0


if __name__ == "__main__":
    sys.exit(main())
