"""What `vmstore bench` measures, and the fio runner for most of it.

A workload is one tool run that yields one or more figures (metrics). The
fio workloads are defined here; the qemu-img ones in ``bench_qemu``. Metric
keys are the stable field names of ``vmstore bench --json``: lower case,
unit last. deploy/bench/ scripts import these definitions rather than keep
their own.

Every workload except ``seq-write`` (which creates it) and
``qemu-img-convert`` (which brings its own files) works on one data file of
``--size`` bytes on the target; ``Place.data_file`` names it.

Caveat: the figures are what fio and qemu-img report, on a machine that may
be busy; compare only within one run.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

# BenchFailed is imported from here by the bench modules.
from vmstore.dfs.errors import BenchFailed as BenchFailed

# Sized (untimed) jobs and qemu-img convert may take long on a slow target;
# this bounds them beyond --runtime so a wedged mount cannot hang the bench.
TOOL_TIMEOUT_EXTRA_S = 900.0
DIRECT = ("--direct=1", "--ioengine=libaio")

Job = dict[str, Any]


@dataclass(frozen=True)
class Place:
    """Where one workload runs, and how long."""

    data_file: Path  # on the target: the file the fio and qemu-img bench jobs use
    scratch: Path  # on local disk: tool output, qemu-img convert's source image
    size_bytes: int
    runtime_s: float


@dataclass(frozen=True)
class Metric:
    key: str  # stable JSON field name, unit last
    label: str  # the table's row
    lower_is_better: bool = False


@dataclass(frozen=True)
class Workload:
    name: str
    metrics: tuple[Metric, ...]
    needs_data_file: bool
    tool: str  # the program that must be installed
    run: Callable[[Place], dict[str, float]]  # metric key -> value


def require_tool(tool: str) -> None:
    if shutil.which(tool) is None:
        raise BenchFailed(f"{tool} is not installed (deploy/install-deps.sh installs it)")


def run_tool(command: list[str], what: str, timeout_s: float) -> str:
    """Run a benchmark tool; its stdout, or BenchFailed naming it with its last error line."""
    try:
        result = subprocess.run(command, capture_output=True, text=True, timeout=timeout_s)
    except subprocess.TimeoutExpired:
        raise BenchFailed(f"{what}: no result after {timeout_s:.0f} s") from None
    if result.returncode:
        lines = (result.stderr or result.stdout).strip().splitlines() or ["(no output)"]
        raise BenchFailed(f"{what} failed (exit {result.returncode}): {lines[-1]}")
    return result.stdout


# --- fio -----------------------------------------------------------------------
def _fio_job(name: str, options: tuple[str, ...], timed: bool, place: Place) -> Job:
    output = place.scratch / f"{name}.json"  # not on the file system measured
    command = ["fio", f"--name={name}", f"--filename={place.data_file}",
               f"--size={place.size_bytes}", "--output-format=json", f"--output={output}",
               *options]
    if timed:
        # In milliseconds: fio reads a bare "0.5" as 0 s and refuses it.
        command += ["--time_based", f"--runtime={max(1, round(place.runtime_s * 1000))}ms"]
    run_tool(command, f"fio {name} on {place.data_file}",
             place.runtime_s + TOOL_TIMEOUT_EXTRA_S)
    try:
        jobs: list[Job] = json.loads(output.read_text())["jobs"]
    except (OSError, ValueError, KeyError) as error:
        raise BenchFailed(f"fio {name}: unreadable JSON output {output}: {error}") from None
    finally:
        output.unlink(missing_ok=True)
    if jobs[0]["error"]:
        raise BenchFailed(f"fio {name} on {place.data_file}: error {jobs[0]['error']}")
    return jobs[0]


def lay_out(place: Place) -> None:
    """Write the data file once over (what ``seq-write`` does), for jobs that need it."""
    _fio_job("lay-out", SEQ_WRITE_OPTIONS, False, place)


def _bw_mb_s(direction: str) -> Callable[[Job], float]:
    return lambda job: float(job[direction]["bw_bytes"]) / 1e6


def _iops(direction: str) -> Callable[[Job], float]:
    return lambda job: float(job[direction]["iops"])


def _mixed_mb_s(job: Job) -> float:
    return _bw_mb_s("read")(job) + _bw_mb_s("write")(job)


def _sync_percentile_us(name: str) -> Callable[[Job], float]:
    return lambda job: float(job["sync"]["lat_ns"]["percentile"][name]) / 1e3


FioMetric = tuple[Metric, Callable[[Job], float]]


def fio_workload(name: str, options: tuple[str, ...], timed: bool,
                 metrics: tuple[FioMetric, ...], needs_data_file: bool = True) -> Workload:
    def run(place: Place) -> dict[str, float]:
        job = _fio_job(name, options, timed, place)
        try:
            return {metric.key: extract(job) for metric, extract in metrics}
        except (KeyError, TypeError, ValueError) as error:
            raise BenchFailed(f"fio {name}: no {error} in its JSON output") from None

    return Workload(name, tuple(metric for metric, _ in metrics), needs_data_file, "fio", run)


# psync with a final fsync: what a guest's sequential write must reach.
SEQ_WRITE_OPTIONS = ("--rw=write", "--bs=1M", "--ioengine=psync", "--end_fsync=1")

FIO_WORKLOADS = (
    fio_workload("seq-write", SEQ_WRITE_OPTIONS, False, (
        (Metric("seq_write_mb_s", "seq write 1 MiB, fsync at end (MB/s)"), _bw_mb_s("write")),),
        needs_data_file=False),
    # invalidate=1 (fio's default, stated): the file's page cache is dropped first.
    fio_workload("seq-read", ("--rw=read", "--bs=1M", "--ioengine=psync", "--invalidate=1"),
                 False, ((Metric("seq_read_mb_s", "seq read 1 MiB (MB/s)"), _bw_mb_s("read")),)),
    fio_workload("randread-qd1", ("--rw=randread", "--bs=4k", *DIRECT, "--iodepth=1"), True, (
        (Metric("randread_4k_qd1_iops", "rand read 4 KiB, O_DIRECT, QD1 (IOPS)"),
         _iops("read")),)),
    fio_workload("randread-qd16", ("--rw=randread", "--bs=4k", *DIRECT, "--iodepth=16"), True, (
        (Metric("randread_4k_qd16_iops", "rand read 4 KiB, O_DIRECT, QD16 (IOPS)"),
         _iops("read")),)),
    fio_workload("randwrite-qd1", ("--rw=randwrite", "--bs=4k", *DIRECT, "--iodepth=1"), True, (
        (Metric("randwrite_4k_qd1_iops", "rand write 4 KiB, O_DIRECT, QD1 (IOPS)"),
         _iops("write")),)),
    fio_workload("randwrite-qd16", ("--rw=randwrite", "--bs=4k", *DIRECT, "--iodepth=16"), True, (
        (Metric("randwrite_4k_qd16_iops", "rand write 4 KiB, O_DIRECT, QD16 (IOPS)"),
         _iops("write")),)),
    fio_workload("randrw-64k", ("--rw=randrw", "--rwmixread=70", "--bs=64k", *DIRECT,
                                "--iodepth=16"), True, (
        (Metric("randrw_64k_mb_s", "rand 64 KiB 70/30 r/w, O_DIRECT, QD16 (MB/s)"),
         _mixed_mb_s),)),
    # One fsync after every 4 KiB O_DIRECT write: fio's "sync" latency is the fsync's.
    fio_workload("write-fsync", ("--rw=randwrite", "--bs=4k", "--direct=1", "--ioengine=psync",
                                 "--iodepth=1", "--fsync=1"), True, (
        (Metric("fsync_p50_us", "4 KiB write+fsync: fsync p50 (µs)", lower_is_better=True),
         _sync_percentile_us("50.000000")),
        (Metric("fsync_p99_us", "4 KiB write+fsync: fsync p99 (µs)", lower_is_better=True),
         _sync_percentile_us("99.000000")),
        (Metric("write_fsync_per_s", "4 KiB write+fsync pairs/s"), _iops("write")))),
)
