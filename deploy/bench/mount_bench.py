#!/usr/bin/env python3
"""`vmstore bench` through the FUSE mount of a local cluster, next to local disk, in one run.

Run from a checkout, as root (FUSE mount, allow_other), with fio and
qemu-img installed (deploy/install-deps.sh):

    python3 deploy/bench/mount_bench.py [--dir /var/tmp/vmstore-mount-bench] [--runtime 10] [--tls]
        [--no-short-circuit | --compare-short-circuit]

It starts a local cluster (master + 3 chunkservers on loopback, goal 2 set
with ``vmstore goal``) and mounts it with a real ``vmstore mount`` process,
the same ``Cluster`` and ``Mount`` the system tests use. Then it runs the
workloads of ``vmstore bench`` (``vmstore/cli/bench_workloads.py`` and
``bench_qemu.py`` define them) in a directory on the local disk (under
--dir) and on the mount, and prints a markdown table with the ratio
vmstore / local disk. For latency and time rows (↓) a ratio above 1 means
vmstore is slower. Numbers vary run to run: compare only within one run.
Before each system is measured the disk is let settle (``settle``: sync, wait
for writeback, drop the page cache), so none pays for the one before.

All chunkservers run on this host, so every replica is local to the mount
and reads take the short-circuit path (the mount reads replica files
itself). ``--no-short-circuit`` mounts without it (every read over TCP, as
a remote replica is read); ``--compare-short-circuit`` measures both, on
two clusters in the same run, with their ratio.

deploy/bench/compare_moosefs.py adds MooseFS to the same table; it reuses
``vmstore_mount`` and ``markdown_table`` from here.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from tests.system.conftest import Cluster, Mount, vmstore_command  # noqa: E402
from vmstore.cli.bench import choose_workloads, measure, number, parse_size  # noqa: E402
from vmstore.cli.local_cluster import local_down  # noqa: E402

CHUNKSERVERS = 3
GOAL = 2
# settle(): dirty and writeback bytes below which the disk counts as quiet.
SETTLED_DIRTY_BYTES = 32 * 2**20
SETTLE_TIMEOUT_S = 120.0
SETTLE_PAUSE_S = 5.0


def _dirty_bytes() -> int:
    fields = dict(line.split(":", 1) for line in Path("/proc/meminfo").read_text().splitlines())
    return sum(int(fields[name].split()[0]) * 1024 for name in ("Dirty", "Writeback"))


def settle() -> None:
    """Before each system is measured: the one before's writeback (and the freeing of
    its deleted files) done, and the page cache dropped. Without this the system
    measured after another paid for its leftovers: an fsync waits behind them."""
    os.sync()
    deadline = time.monotonic() + SETTLE_TIMEOUT_S
    while _dirty_bytes() > SETTLED_DIRTY_BYTES and time.monotonic() < deadline:
        time.sleep(0.5)
    try:
        Path("/proc/sys/vm/drop_caches").write_text("3\n")
    except OSError as error:  # not root: measure anyway, on a warm cache
        print(f"settle: page cache not dropped ({error})", file=sys.stderr)
    time.sleep(SETTLE_PAUSE_S)


@contextmanager
def vmstore_mount(directory: Path, tls: bool = False,
                  mount_arguments: tuple[str, ...] = ()) -> Iterator[Path]:
    """A local vmstore cluster (3 chunkservers, goal 2; TLS required if ``tls``)
    mounted under ``directory`` (``vmstore mount`` gets ``mount_arguments`` too)."""
    cluster = Cluster(directory, CHUNKSERVERS, tls=tls)
    try:
        mount = Mount(cluster, directory / "mnt", extra_arguments=mount_arguments)
        try:
            result = vmstore_command("goal", str(mount.path), str(GOAL),
                                     config=cluster.config_path)
            assert result.returncode == 0, result.stderr
            yield mount.path
        finally:
            mount.force_unmount()
    finally:
        local_down(cluster.directory)


def markdown_table(columns: dict[str, dict[str, Any]],
                   ratios: tuple[tuple[str, str], ...]) -> str:
    """Every figure of ``vmstore bench --json`` reports (column name -> report), mean ± stdev
    in %, then each ratio (numerator column, denominator column) of the means."""
    first = next(iter(columns.values()))
    header = ["workload", *columns, *(f"{a} / {b}" for a, b in ratios)]
    lines = ["| " + " | ".join(header) + " |", "|---" + "|---:" * (len(header) - 1) + "|"]
    for key, metric in first["metrics"].items():
        cells = [metric["label"] + (" ↓" if metric["lower_is_better"] else "")]
        for report in columns.values():
            figure = report["metrics"][key]
            spread = f" ±{figure['stdev'] / figure['mean']:.0%}" if figure["stdev"] else ""
            cells.append(number(figure["mean"]) + spread)
        for numerator, denominator in ratios:
            below = columns[denominator]["metrics"][key]["mean"]
            above = columns[numerator]["metrics"][key]["mean"]
            cells.append(f"{above / below:.2f}" if below else "-")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def add_bench_options(parser: argparse.ArgumentParser, repeat: int) -> None:
    """--size, --runtime, --repeat (default ``repeat``) and --workloads, as every
    script here that runs `vmstore bench` takes them."""
    parser.add_argument("--size", type=parse_size, default=parse_size("1G"),
                        help="file and image size for vmstore bench (default 1G)")
    parser.add_argument("--runtime", type=float, default=10.0,
                        help="seconds per timed job (default 10)")
    parser.add_argument("--repeat", type=int, default=repeat,
                        help=f"rounds (default {repeat})")
    parser.add_argument("--workloads", help="comma-separated subset (default: all; see"
                        " vmstore bench --help)")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dir", type=Path, help="work directory on the local disk to "
                        "measure (default: a new temp dir under /var/tmp, removed after)")
    add_bench_options(parser, repeat=1)
    parser.add_argument("--tls", action="store_true", help="also a second cluster with TLS"
                        " required on every connection: the cost of TLS, in the same run")
    reads = parser.add_mutually_exclusive_group()
    reads.add_argument("--no-short-circuit", action="store_true", help="mount with"
                       " --no-short-circuit: every read over TCP, as from a remote replica")
    reads.add_argument("--compare-short-circuit", action="store_true", help="also a second"
                       " cluster mounted with --no-short-circuit: what short-circuit reads"
                       " gain, in the same run")
    args = parser.parse_args()
    chosen = choose_workloads(args.workloads)
    directory = args.dir or Path(tempfile.mkdtemp(prefix="vmstore-mount-bench-",
                                                  dir="/var/tmp"))
    directory = directory.resolve()
    local_dir = directory / "local"
    local_dir.mkdir(parents=True, exist_ok=True)

    settle()
    reports = {"local disk": measure(local_dir, chosen, args.size, args.runtime, args.repeat,
                                     directory)}
    tcp_reads = ("--no-short-circuit",)
    with vmstore_mount(directory / "cluster",
                       mount_arguments=tcp_reads if args.no_short_circuit else ()) as mounted:
        settle()
        reports["vmstore"] = measure(mounted, chosen, args.size, args.runtime, args.repeat,
                                     directory)
    ratios: tuple[tuple[str, str], ...] = (("vmstore", "local disk"),)
    if args.compare_short_circuit:
        with vmstore_mount(directory / "cluster-tcp-reads", mount_arguments=tcp_reads) as mounted:
            settle()
            reports["vmstore TCP reads"] = measure(mounted, chosen, args.size, args.runtime,
                                                   args.repeat, directory)
        ratios += (("vmstore", "vmstore TCP reads"),)
    if args.tls:
        with vmstore_mount(directory / "cluster-tls", tls=True) as mounted:
            settle()
            reports["vmstore TLS"] = measure(mounted, chosen, args.size, args.runtime,
                                             args.repeat, directory)
        ratios += (("vmstore TLS", "vmstore"),)
    tools = ", ".join(reports["vmstore"]["tools"].values())
    print(f"\n{tools}; {args.size / 2**20:,.0f} MiB file; timed jobs {args.runtime:g} s;"
          f" {args.repeat} round(s); local disk = {local_dir}; ↓ lower is better\n")
    print(markdown_table(reports, ratios))
    if args.dir is None:
        shutil.rmtree(directory)
    return 0


if __name__ == "__main__":
    sys.exit(main())
