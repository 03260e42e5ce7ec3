#!/usr/bin/env python3
"""MooseFS goal 2, vmstore goal 2, a pyfuse3 pass-through and local disk, interleaved, in one run.

Run from a checkout, as root, on a Debian 12 host with fio and qemu-img
(deploy/install-deps.sh):

    python3 deploy/bench/compare_moosefs.py [--size 1G] [--runtime 10] [--repeat 3]
        [--workloads A,B] [--sequential] [--no-ceiling] [--json] [--keep]

All four systems are brought up at once, side by side on this machine:

1. MooseFS 3.0.117 goal 2, three chunkservers in a network namespace, a
   host ``mfsmount`` (deploy/bench/moosefs_cluster.py says how), its
   daemons at the nice level of every other system's processes (this
   script's own) rather than at the -19 they would give themselves: on a
   machine busy with other work, -19 hands MooseFS the CPU first and
   vmstore's daemons (nice 0, as its systemd units run them) wait behind
   the other work. ``--moosefs-nice-19`` keeps MooseFS's own;
2. vmstore: a local cluster (master, three chunkservers on loopback) and a
   real ``vmstore mount``, goal 2 set with ``vmstore goal`` (the same as
   deploy/bench/mount_bench.py);
3. unless --no-ceiling, the ceiling of any pyfuse3 mount on this machine: a
   trivial pass-through to local disk (deploy/bench/passthrough_fs.py, with
   vmstore's mount options, backing files opened without O_DIRECT; see
   deploy/bench/pyfuse3_ceiling.py). Where its column is below MooseFS's, no
   file system served through pyfuse3 can reach MooseFS on this machine;
4. local disk: a directory under --dir.

Then the workloads of ``vmstore bench`` (``vmstore/cli/bench*.py``) run
interleaved: round by round, workload by workload, each system in turn,
the order rotated at every step (deploy/bench/bench_schedule.py), each on a
settled disk (``mount_bench.settle``: sync, writeback done, page cache
dropped). A drift of a shared machine then moves every column of a row
alike, so the ratios hold. ``--sequential`` runs each system's rounds one
after the other instead (the order before issue 20; all systems are up in
both modes).

It prints:

* the machine's floors from deploy/bench/latency_floor.py (cross-CPU
  ping-pong p50, pwrite+fdatasync p50 alone and two at once), measured
  before the systems start and again after they are gone: where the two
  columns differ, the machine moved during the run;
* a markdown table of every figure (mean ±stdev over --repeat rounds) with
  the ratios vmstore / local disk, vmstore / MooseFS and pass-through /
  MooseFS. ↓ marks rows where lower is better: there a ratio above 1 means
  the numerator is slower;
* CPU microseconds per operation for each workload, summed over every
  process of each system (MooseFS: mfsmaster, three mfschunkservers,
  mfsmount; vmstore: master, three chunkservers, the mount; the
  pass-through's process), from /proc/PID/stat before and after the
  workload (deploy/bench/process_cpu.py says what is and is not counted;
  bench_schedule.py what one operation is), with the ratios vmstore /
  MooseFS and pass-through / MooseFS; and each system's idle CPU, measured
  over a few seconds with all systems up and nothing running.

Everything is torn down on exit, on failure and on Ctrl-C (daemons killed,
mounts unmounted, the namespace deleted, --dir removed if the script made
it), unless --keep.

Caveats: the systems share the machine's two cores and one disk, so each
workload's figures include whatever the idle others cost (the idle line);
the CPU figures leave out the kernel's work on the client's side.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from contextlib import ExitStack
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_schedule import OPERATIONS, interleaved, one_after_another  # noqa: E402
from latency_floor import Floors, measure_floors  # noqa: E402
from moosefs_cluster import NETNS, install_moosefs, moosefs_mount, say  # noqa: E402
from moosefs_cluster import is_mounted as is_mounted  # noqa: E402  (pyfuse3_ceiling's)
from moosefs_cluster import run as run  # noqa: E402
from moosefs_cluster import stop_process as stop_process  # noqa: E402
from mount_bench import add_bench_options, markdown_table, settle, vmstore_mount  # noqa: E402
from process_cpu import cpu_seconds, pids_naming  # noqa: E402

from vmstore.cli.bench import (  # noqa: E402
    DATA_FILE_NAME,
    Figure,
    choose_workloads,
    number,
    tool_versions,
)
from vmstore.cli.bench_workloads import Place, Workload, lay_out  # noqa: E402
from vmstore.dfs.errors import DfsError  # noqa: E402

MOOSEFS, VMSTORE, LOCAL_DISK = "MooseFS", "vmstore", "local disk"
PASSTHROUGH = "pass-through pyfuse3"  # pyfuse3_ceiling.PASSTHROUGH; it imports this module
SCHEDULE_ORDER = (MOOSEFS, VMSTORE, PASSTHROUGH, LOCAL_DISK)  # round 0's, then rotated
TABLE_ORDER = (LOCAL_DISK, MOOSEFS, VMSTORE, PASSTHROUGH)
IDLE_SAMPLE_S = 5.0
FLOOR_ROUNDS = 400


@dataclass
class System:
    name: str
    place: Place  # its data file (on the system), the shared scratch directory
    pids: tuple[int, ...]  # roots of its process trees; () for local disk (the kernel's)
    figures: dict[str, Figure] = field(default_factory=dict)  # metric key -> values
    cpu_us: dict[str, list[float]] = field(default_factory=dict)  # workload -> per round


def work_place(stack: ExitStack, target: Path, scratch: Path, args: argparse.Namespace) -> Place:
    """A new directory for the bench on ``target``, removed when ``stack`` closes (before the
    file system under it is unmounted, which ``stack`` does after)."""
    work = Path(tempfile.mkdtemp(prefix=".vmstore-bench-", dir=target))
    stack.callback(shutil.rmtree, work, ignore_errors=True)
    return Place(work / DATA_FILE_NAME, scratch, args.size, args.runtime)


def vmstore_pids(cluster_directory: Path, mount_point: Path) -> tuple[int, ...]:
    """The local cluster's daemons (their pid files) and the mount's process."""
    daemons = [int(path.read_text()) for path in (cluster_directory / "run").glob("*.pid")]
    mounts = pids_naming(mount_point)
    if not daemons or len(mounts) != 1:
        raise RuntimeError(f"vmstore: daemons {daemons}, mount processes {mounts} for"
                           f" {mount_point}: expected some daemons and one mount")
    return tuple(sorted({*daemons, *mounts}))


def bring_up(stack: ExitStack, directory: Path, args: argparse.Namespace) -> dict[str, System]:
    """Every system mounted and ready, each with a work directory; torn down by ``stack``."""
    scratch = directory / "scratch"  # on local disk: tool output, the convert source
    local = directory / "local"
    for path in (scratch, local):
        path.mkdir()
    systems = {LOCAL_DISK: System(LOCAL_DISK, work_place(stack, local, scratch, args), ())}
    say("starting MooseFS")
    nice_level = None if args.moosefs_nice_19 else os.getpriority(os.PRIO_PROCESS, 0)
    mounted, pids = stack.enter_context(moosefs_mount(directory / "moosefs", nice_level))
    systems[MOOSEFS] = System(MOOSEFS, work_place(stack, mounted, scratch, args), pids)
    say("starting vmstore")
    mounted = stack.enter_context(vmstore_mount(directory / "vmstore"))
    systems[VMSTORE] = System(VMSTORE, work_place(stack, mounted, scratch, args),
                              vmstore_pids(directory / "vmstore", mounted))
    if not args.no_ceiling:
        from pyfuse3_ceiling import passthrough_mount  # it imports this module

        ceiling = directory / "pyfuse3"
        for path in (ceiling / "backing", ceiling / "mnt"):
            path.mkdir(parents=True)
        say("starting the pass-through")
        process = stack.enter_context(passthrough_mount(
            ceiling / "backing", ceiling / "mnt", ceiling / "passthrough_fs.log",
            direct_backing=False))
        systems[PASSTHROUGH] = System(PASSTHROUGH, work_place(stack, ceiling / "mnt", scratch,
                                                              args), (process.pid,))
    for system in systems.values():
        say(f"{system.name}: bench in {system.place.data_file.parent}, CPU of pids"
            f" {list(system.pids) or 'none (the kernel)'} and their descendants")
    return systems


def idle_cpu_ms_per_s(systems: dict[str, System]) -> dict[str, float]:
    """Each system's CPU while nothing runs on any (heartbeats, scans), all up at once."""
    roots = {name: system.pids for name, system in systems.items() if system.pids}
    before = cpu_seconds(roots)
    time.sleep(IDLE_SAMPLE_S)
    after = cpu_seconds(roots)
    return {name: (after[name] - before[name]) * 1e3 / IDLE_SAMPLE_S for name in roots}


def measure(systems: dict[str, System], workloads: Sequence[Workload],
            args: argparse.Namespace) -> None:
    """Every cell of the schedule: each figure into its system's Figures, CPU per op too."""
    schedule = one_after_another if args.sequential else interleaved
    order = [name for name in SCHEDULE_ORDER if name in systems]
    cells = schedule(order, [w.name for w in workloads], args.repeat)
    by_name = {w.name: w for w in workloads}
    for system in systems.values():
        system.figures = {m.key: Figure(m, w.name) for w in workloads for m in w.metrics}
        system.cpu_us = {w.name: [] for w in workloads}
    round_of: dict[str, int] = {}
    for index, cell in enumerate(cells, 1):
        system, workload = systems[cell.system], by_name[cell.workload]
        place = system.place
        step = f"[{index}/{len(cells)}] round {cell.round_index + 1}/{args.repeat}"
        if round_of.get(system.name) != cell.round_index:
            place.data_file.unlink(missing_ok=True)  # each round lays out a fresh file
            round_of[system.name] = cell.round_index
        if workload.needs_data_file and not place.data_file.exists():
            say(f"{step}: laying out {args.size / 2**20:,.0f} MiB on {system.name}")
            lay_out(place)
        say(f"{step}: {workload.name} on {system.name}")
        settle()
        roots = {system.name: system.pids}
        before_s = cpu_seconds(roots)[system.name] if system.pids else 0.0
        started_s = time.monotonic()
        values = workload.run(place)
        wall_s = time.monotonic() - started_s
        after_s = cpu_seconds(roots)[system.name] if system.pids else 0.0
        for key, value in values.items():
            system.figures[key].values.append(value)
        operations = OPERATIONS[workload.name].count(values, args.size, args.runtime, wall_s)
        if system.pids and operations > 0:
            system.cpu_us[workload.name].append((after_s - before_s) * 1e6 / operations)


def mean_and_spread(values: list[float]) -> str:
    """As markdown_table writes a figure: the mean, ± the sample stdev in % of it."""
    if not values:
        return "-"
    mean = statistics.fmean(values)
    spread = statistics.stdev(values) / mean if mean and len(values) > 1 else 0.0
    return number(mean) + (f" ±{spread:.0%}" if spread else "")


def cpu_table(systems: dict[str, System], workloads: Sequence[Workload]) -> str:
    """CPU µs per operation, each system with processes, and the ratios to MooseFS."""
    columns = [name for name in (MOOSEFS, VMSTORE, PASSTHROUGH) if name in systems]
    ratios = [name for name in columns if name != MOOSEFS]
    header = ["CPU µs per operation ↓", "operation", *columns,
              *(f"{name} / {MOOSEFS}" for name in ratios)]
    lines = ["| " + " | ".join(header) + " |", "|---|---" + "|---:" * (len(header) - 2) + "|"]
    for workload in workloads:
        cells = [workload.name, OPERATIONS[workload.name].unit]
        cells += [mean_and_spread(systems[name].cpu_us[workload.name]) for name in columns]
        moosefs = systems[MOOSEFS].cpu_us[workload.name]
        for name in ratios:
            ours = systems[name].cpu_us[workload.name]
            cells.append(f"{statistics.fmean(ours) / statistics.fmean(moosefs):.2f}"
                         if ours and moosefs and statistics.fmean(moosefs) else "-")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def floors_table(before: Floors, after: Floors) -> str:
    rows = [("cross-CPU ping-pong, p50 (µs)", "ping_pong_p50_us"),
            ("pwrite+fdatasync alone, p50 (µs)", "sync_p50_us"),
            ("pwrite+fdatasync, two at once, p50 (µs)", "two_syncs_p50_us")]
    lines = ["| floor (deploy/bench/latency_floor.py) | before the systems | after |",
             "|---|---:|---:|"]
    lines += [f"| {label} | {number(getattr(before, key))} | {number(getattr(after, key))} |"
              for label, key in rows]
    # Issue 20's fsync target: two syncs at once, twice, plus four hops (two round trips).
    target = [2 * f.two_syncs_p50_us + 2 * f.ping_pong_p50_us for f in (before, after)]
    lines.append(f"| fsync p50 target: 2 × two syncs at once + 4 hops (µs) |"
                 f" {number(target[0])} | {number(target[1])} |")
    return "\n".join(lines)


def reports_of(systems: dict[str, System], versions: dict[str, str]) -> dict[str, Any]:
    """Each system's figures in the shape of ``vmstore bench --json`` (markdown_table's)."""
    return {name: {"tools": versions, "kernel": platform.release(), "cpus": os.cpu_count(),
                   "metrics": {key: figure.summary() for key, figure in
                               systems[name].figures.items()}}
            for name in TABLE_ORDER if name in systems}


def print_report(systems: dict[str, System], workloads: Sequence[Workload],
                 floors: tuple[Floors, Floors], idle: dict[str, float],
                 args: argparse.Namespace) -> None:
    versions = tool_versions(tuple(workloads))
    reports = reports_of(systems, versions)
    if args.json:
        print(json.dumps({
            "order": "sequential" if args.sequential else "interleaved",
            "moosefs_nice": -19 if args.moosefs_nice_19 else os.getpriority(os.PRIO_PROCESS, 0),
            "floors": {"before": asdict(floors[0]), "after": asdict(floors[1])},
            "idle_cpu_ms_per_s": idle, "reports": reports,
            "cpu_us_per_operation": {name: {"unit": {w.name: OPERATIONS[w.name].unit
                                                     for w in workloads},
                                            "runs": system.cpu_us}
                                     for name, system in systems.items() if system.pids}},
            indent=2))
        return
    print(f"{time.strftime('%Y-%m-%d %H:%M')}, {os.cpu_count()} CPUs, kernel"
          f" {platform.release()}; {', '.join(versions.values())};"
          f" {args.size / 2**20:,.0f} MiB file; timed jobs {args.runtime:g} s;"
          f" {'one system after another' if args.sequential else 'interleaved'},"
          f" mean ±stdev of {args.repeat} round(s); MooseFS's daemons at nice"
          f" {-19 if args.moosefs_nice_19 else os.getpriority(os.PRIO_PROCESS, 0)};"
          " ↓ lower is better\n")
    print(floors_table(*floors) + "\n")
    ratios = [(VMSTORE, LOCAL_DISK), (VMSTORE, MOOSEFS)]
    ratios += [(PASSTHROUGH, MOOSEFS)] if PASSTHROUGH in systems else []
    print(markdown_table(reports, tuple(ratios)) + "\n")
    print(cpu_table(systems, workloads) + "\n")
    print("CPU: utime+stime of every process of each system and its descendants (reaped"
          " children too), from /proc/PID/stat before and after each workload; not the"
          " client's kernel time. ± is the stdev over the rounds. Idle, all systems up,"
          f" nothing running ({IDLE_SAMPLE_S:g} s): "
          + ", ".join(f"{name} {value:.1f} ms/s" for name, value in idle.items()))


def run_comparison(directory: Path, args: argparse.Namespace, keep: ExitStack) -> None:
    workloads = choose_workloads(args.workloads)
    missing = [w.name for w in workloads if w.name not in OPERATIONS]
    if missing:
        raise RuntimeError(f"bench_schedule.OPERATIONS has no operation count for {missing}")
    say("the machine's floors, before")
    before = measure_floors(directory, args.floor_rounds)
    with ExitStack() as stack:
        systems = bring_up(stack, directory, args)
        say(f"idle CPU over {IDLE_SAMPLE_S:g} s")
        idle = idle_cpu_ms_per_s(systems)
        measure(systems, workloads, args)
        if args.keep:
            keep.push(stack.pop_all())
    say("the machine's floors, after")
    after = measure_floors(directory, args.floor_rounds)
    print_report(systems, workloads, (before, after), idle, args)


def terminate(signal_number: int, _frame: object) -> None:
    raise KeyboardInterrupt  # unwinds through every teardown, as Ctrl-C does


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="example: python3 deploy/bench/compare_moosefs.py --size 512M --runtime 5"
        " --repeat 2")
    parser.add_argument("--dir", type=Path, help="work directory (default: a new one under"
                        " /var/tmp, removed after)")
    add_bench_options(parser, repeat=3)
    parser.add_argument("--sequential", action="store_true", help="each system's rounds one"
                        " after the other (default: interleaved, workload by workload)")
    parser.add_argument("--moosefs-nice-19", action="store_true", help="MooseFS's daemons at"
                        " their default nice -19 (default: the nice level of every other"
                        " system's processes, this script's own)")
    parser.add_argument("--floor-rounds", type=int, default=FLOOR_ROUNDS,
                        help=f"samples per floor figure (default {FLOOR_ROUNDS})")
    parser.add_argument("--keep", action="store_true", help="leave everything up and in place")
    parser.add_argument("--no-ceiling", action="store_true", help="skip the pyfuse3"
                        " pass-through (the ceiling of any Python FUSE mount here)")
    parser.add_argument("--json", action="store_true", help="the reports as JSON")
    args = parser.parse_args()
    if os.geteuid() != 0:
        parser.error("run as root: network namespace, FUSE mounts, apt-get")
    signal.signal(signal.SIGTERM, terminate)
    install_moosefs()
    directory = (args.dir or Path(tempfile.mkdtemp(prefix="vmstore-compare-",
                                                   dir="/var/tmp"))).resolve()
    directory.mkdir(parents=True, exist_ok=True)
    keep = ExitStack()
    status = 0
    try:
        run_comparison(directory, args, keep)
    except (DfsError, subprocess.CalledProcessError, RuntimeError, OSError) as error:
        say(f"error: {error}")
        status = 1
    except KeyboardInterrupt:
        say("interrupted: tearing down")
        status = 130
    finally:
        if args.keep:
            say(f"--keep: left up under {directory}; tear down with: umount -l"
                f" {directory}/moosefs/mnt {directory}/pyfuse3/mnt; kill $(cat"
                f" {directory}/moosefs/*.pid {directory}/moosefs/*/*.pid); ip netns delete"
                f" {NETNS}; vmstore local down --dir {directory}/vmstore")
            sys.stdout.flush()
            os._exit(status)  # no interpreter shutdown: it would close the kept teardowns
        if args.dir is None:
            shutil.rmtree(directory, ignore_errors=True)
    return status


if __name__ == "__main__":
    sys.exit(main())
