"""CPU time of a file system's processes, from /proc: what compare_moosefs.py charges a system.

A system is a set of root pids: its daemons (master, chunkservers, the
mount). Its CPU time at an instant is the sum, over every live process in
the trees under those roots (the roots and all their descendants, found by
parent pid), of utime + stime + cutime + cstime from ``/proc/PID/stat``:

* utime + stime of a process (its thread group's line) cover all its
  threads, live and exited;
* cutime + cstime cover its children that have exited and been waited for,
  so a helper a daemon starts and reaps between two snapshots (MooseFS's
  master forks to dump its metadata) is counted once: through its own line
  while it lives, through its parent's after.

The difference of two snapshots is the CPU the system spent in between.

What is not counted: the kernel's work in the client's context (fio's system
calls into FUSE, copies into and out of the page cache), softirq time of
loopback networking charged to whatever ran at that moment, and kernel
threads (writeback kworkers, the block layer). They exist for every system
measured through the same kernel, but they are not zero.

Caveats: the kernel counts in clock ticks (``SC_CLK_TCK``, 100 a second
here), so each process's figure is known to a tick (10 ms) per snapshot; a
process whose parent is outside the tree and exits between two snapshots
takes its time with it.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import NamedTuple

TICKS_PER_S = os.sysconf("SC_CLK_TCK")
PROC = Path("/proc")
# Fields of /proc/PID/stat after the ")" that closes the command name (field 2):
# the 0th is field 3 (state); see proc(5).
PPID_FIELD, UTIME_FIELD, STIME_FIELD, CUTIME_FIELD, CSTIME_FIELD = 1, 11, 12, 13, 14


class ProcessTimes(NamedTuple):
    pid: int
    ppid: int
    own_ticks: int  # utime + stime: every thread of the process
    reaped_children_ticks: int  # cutime + cstime: its children that exited and were waited for


def parse_stat(line: str) -> ProcessTimes:
    """One ``/proc/PID/stat`` line. The command name may hold spaces and parentheses, so
    the fields are counted from the last ")"."""
    pid_text, _, _ = line.partition(" (")
    fields = line[line.rindex(")") + 2:].split()
    return ProcessTimes(
        int(pid_text), int(fields[PPID_FIELD]),
        int(fields[UTIME_FIELD]) + int(fields[STIME_FIELD]),
        int(fields[CUTIME_FIELD]) + int(fields[CSTIME_FIELD]))


def read_processes(proc: Path = PROC) -> dict[int, ProcessTimes]:
    """Every process now alive, by pid (those that exit while we read are skipped)."""
    table = {}
    for entry in proc.iterdir():
        if not entry.name.isdigit():
            continue
        try:
            times = parse_stat((entry / "stat").read_text())
        except (FileNotFoundError, ProcessLookupError):
            continue  # exited since the listing
        table[times.pid] = times
    return table


def tree_ticks(table: Mapping[int, ProcessTimes], roots: Iterable[int], system: str) -> int:
    """CPU ticks of ``roots`` and all their live descendants in ``table``, each process's own
    time plus its reaped children's. A root that is gone is an error naming ``system``."""
    roots = set(roots)
    missing = sorted(roots - table.keys())
    if missing:
        raise RuntimeError(f"{system}: process {missing[0]} is gone (a daemon died?)")
    children: dict[int, list[int]] = {}
    for times in table.values():
        children.setdefault(times.ppid, []).append(times.pid)
    seen: set[int] = set()
    pending = list(roots)
    while pending:
        pid = pending.pop()
        if pid in seen:
            continue
        seen.add(pid)
        pending.extend(children.get(pid, ()))
    return sum(table[pid].own_ticks + table[pid].reaped_children_ticks for pid in seen)


def cpu_seconds(systems: Mapping[str, Iterable[int]]) -> dict[str, float]:
    """Each system's CPU seconds so far (its process trees, one reading of /proc for all)."""
    table = read_processes()
    return {name: tree_ticks(table, roots, name) / TICKS_PER_S
            for name, roots in systems.items()}


def pids_naming(path: Path, proc: Path = PROC) -> list[int]:
    """Processes with ``path`` as one whole argument of their command line (a mount's
    daemon, whose pid its starter did not keep)."""
    wanted = os.fsencode(str(path))
    found = []
    for entry in proc.iterdir():
        if not entry.name.isdigit():
            continue
        try:
            arguments = (entry / "cmdline").read_bytes().split(b"\0")
        except (FileNotFoundError, ProcessLookupError):
            continue
        if wanted in arguments:
            found.append(int(entry.name))
    return found
