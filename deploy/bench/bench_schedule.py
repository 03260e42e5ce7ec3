"""The order compare_moosefs.py measures in, and what one operation of each workload is.

Interleaved (the default): round by round, workload by workload, every
system in turn, the systems' order rotated one place at each step (each
round and each workload), so that no system is always first after a settle
or always last in a slow minute of a shared machine: a drift of the
machine moves every column of a row alike, and the ratios hold.

One after another (``--sequential``): each system's rounds of every
workload before the next system's, the order before issue 20. A drift then
lands on whichever system ran during it.

Operations, for CPU per operation: what the workload's own figures say
was done in the timed part. Exact for the sized fio jobs and qemu-img
convert (the file's size), and to fio's millisecond for the timed fio jobs
(rate x --runtime). qemu-img bench sizes its run with probes first; its
count is its rate x the workload's wall time, which counts the probes and
each start of qemu-img (a few tens of ms) as operations: it undercounts
CPU per operation by a few per cent, alike for every system.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import NamedTuple

MIB_BYTES = 2**20


class Cell(NamedTuple):
    round_index: int  # 0-based
    workload: str
    system: str


def rotated(systems: Sequence[str], by: int) -> list[str]:
    shift = by % len(systems)
    return [*systems[shift:], *systems[:shift]]


def interleaved(systems: Sequence[str], workloads: Sequence[str], rounds: int) -> list[Cell]:
    """Round by round, workload by workload, every system once in each, rotated each step."""
    return [Cell(round_index, workload, system)
            for round_index in range(rounds)
            for workload_index, workload in enumerate(workloads)
            for system in rotated(systems, round_index + workload_index)]


def one_after_another(systems: Sequence[str], workloads: Sequence[str],
                      rounds: int) -> list[Cell]:
    """Each system's every round of every workload, then the next system's."""
    return [Cell(round_index, workload, system) for system in systems
            for round_index in range(rounds) for workload in workloads]


@dataclass(frozen=True)
class OperationCount:
    """How many operations a workload did, from its figures."""

    unit: str  # what one operation is, for the table
    rate_metric: str | None  # the per-second figure counted from; None: the file's MiB
    scale: float = 1.0  # operations per unit of that figure
    over_wall_time: bool = False  # the rate times the wall time, not times --runtime

    def count(self, figures: Mapping[str, float], size_bytes: int, runtime_s: float,
              wall_s: float) -> float:
        if self.rate_metric is None:
            return size_bytes / MIB_BYTES
        seconds = wall_s if self.over_wall_time else runtime_s
        return figures[self.rate_metric] * self.scale * seconds


def _iops(metric: str, unit: str) -> OperationCount:
    return OperationCount(unit, metric)


OPERATIONS = {
    "seq-write": OperationCount("1 MiB write", None),
    "seq-read": OperationCount("1 MiB read", None),
    "randread-qd1": _iops("randread_4k_qd1_iops", "4 KiB read"),
    "randread-qd16": _iops("randread_4k_qd16_iops", "4 KiB read"),
    "randwrite-qd1": _iops("randwrite_4k_qd1_iops", "4 KiB write"),
    "randwrite-qd16": _iops("randwrite_4k_qd16_iops", "4 KiB write"),
    "randrw-64k": OperationCount("64 KiB read or write", "randrw_64k_mb_s", 1e6 / 65536),
    "write-fsync": _iops("write_fsync_per_s", "4 KiB write+fsync"),
    "qemu-img-convert": OperationCount("MiB of image", None),
    "qemu-img-bench-read": OperationCount("4 KiB read", "qemu_img_bench_read_iops",
                                          over_wall_time=True),
    "qemu-img-bench-write": OperationCount("4 KiB write", "qemu_img_bench_write_iops",
                                           over_wall_time=True),
    "small-files": _iops("small_files_per_s", "file made and removed"),
}
