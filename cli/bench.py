"""`vmstore bench [TARGET]`: the standard guest-disk workloads on a mount or any directory.

fio and qemu-img do the I/O (see ``bench_workloads`` and ``bench_qemu`` for
each job's exact options); a Python child makes and removes small files
(``bench_metadata``). Every workload runs ``--repeat`` times, the whole
list once per repetition so that a slow minute of a busy machine spreads
over all figures, and each figure is reported as mean, min, max and sample
standard deviation. Files are written in a new directory under TARGET,
removed at the end (also on failure or Ctrl-C); tool output and the
qemu-img convert source live in a scratch directory on local disk.

Caveats: the seq-write job recreates the data file each repetition, and the
random jobs read and overwrite it as left by the job before; the page cache
is dropped only where fio's ``invalidate`` does it (for the file, before
each fio job), so buffered reads of a local directory may be partly cached.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from vmstore.cli.bench_metadata import METADATA_WORKLOADS
from vmstore.cli.bench_qemu import QEMU_WORKLOADS
from vmstore.cli.bench_workloads import (
    FIO_WORKLOADS,
    BenchFailed,
    Metric,
    Place,
    Workload,
    lay_out,
    require_tool,
)
from vmstore.cli.config import load_config
from vmstore.dfs.errors import ConfigError
from vmstore.dfs.progress import ProgressDisplay

WORKLOADS = FIO_WORKLOADS + QEMU_WORKLOADS + METADATA_WORKLOADS
DATA_FILE_NAME = "bench.img"
SIZE_SUFFIXES = {"": 1, "K": 2**10, "M": 2**20, "G": 2**30, "T": 2**40}
SIZE_BYTES_MIN = 1 << 20
REPEAT_MAX = 100
JSON_FORMAT_VERSION = 1


@dataclass
class Figure:
    """One metric's values over the repetitions."""

    metric: Metric
    workload: str
    values: list[float] = field(default_factory=list)

    def summary(self) -> dict[str, Any]:
        return {"workload": self.workload, "label": self.metric.label,
                "lower_is_better": self.metric.lower_is_better,
                "mean": statistics.fmean(self.values), "min": min(self.values),
                "max": max(self.values),
                "stdev": statistics.stdev(self.values) if len(self.values) > 1 else 0.0,
                "runs": self.values}


def parse_size(text: str) -> int:
    """'1G', '512M', '64k', '1048576' -> bytes (powers of 1024, as fio reads them)."""
    number, suffix = text.strip(), ""
    if number[-1:].upper() in SIZE_SUFFIXES:
        number, suffix = number[:-1], number[-1].upper()
    if number.upper().endswith("I"):
        raise argparse.ArgumentTypeError(f"{text!r}: write sizes as 1G or 512M")
    if not number.isdigit() or int(number) * SIZE_SUFFIXES[suffix] < SIZE_BYTES_MIN:
        raise argparse.ArgumentTypeError(f"{text!r} is not a size of at least 1M (e.g. 1G)")
    return int(number) * SIZE_SUFFIXES[suffix]


def choose_workloads(text: str | None) -> tuple[Workload, ...]:
    if not text:
        return WORKLOADS
    names = [name.strip() for name in text.split(",") if name.strip()]
    unknown = sorted(set(names) - {w.name for w in WORKLOADS})
    if unknown:
        raise ConfigError(f"unknown workload {unknown[0]!r}; the workloads are: "
                          + ", ".join(w.name for w in WORKLOADS))
    return tuple(w for w in WORKLOADS if w.name in names)


def target_directory(text: str | None) -> Path:
    if text is None:
        # Only [client] mount is needed: the bench never talks to the cluster, so a
        # config without a key file (or no config: /var/lib/vmstore) will do.
        text = load_config(need_master=False, key_file="unused").mount
    target = Path(text).absolute()
    if not target.is_dir():
        raise ConfigError(f"{target}: not a directory (TARGET is a mount point or a directory)")
    return target


def tool_versions(workloads: tuple[Workload, ...]) -> dict[str, str]:
    versions = {}
    for tool in sorted({w.tool for w in workloads}):
        require_tool(tool)
        result = subprocess.run([tool, "--version"], capture_output=True, text=True,
                                timeout=30)
        versions[tool] = result.stdout.strip().splitlines()[0] if result.stdout else "?"
    return versions


def run_all(workloads: tuple[Workload, ...], place: Place, repeat: int,
            display: ProgressDisplay) -> list[Figure]:
    figures = {m.key: Figure(m, w.name) for w in workloads for m in w.metrics}
    for round_number in range(1, repeat + 1):
        place.data_file.unlink(missing_ok=True)  # each round lays out a fresh file
        for workload in workloads:
            if workload.needs_data_file and not place.data_file.exists():
                display.show(f"bench: round {round_number}/{repeat}: laying out"
                             f" {place.size_bytes / 2**20:,.0f} MiB")
                lay_out(place)
            display.show(f"bench: round {round_number}/{repeat}: {workload.name}")
            for key, value in workload.run(place).items():
                figures[key].values.append(value)
    display.finish()
    return list(figures.values())


def measure(target: Path, workloads: tuple[Workload, ...], size_bytes: int, runtime_s: float,
            repeat: int, scratch_parent: Path | None = None,
            display: ProgressDisplay | None = None) -> dict[str, Any]:
    """Run the workloads on ``target``; the report ``--json`` prints. Cleans up after itself."""
    versions = tool_versions(workloads)
    try:
        work = Path(tempfile.mkdtemp(prefix=".vmstore-bench-", dir=target))
    except OSError as error:
        raise BenchFailed(f"{target}: cannot write there ({error.strerror})") from None
    try:
        scratch = Path(tempfile.mkdtemp(prefix="vmstore-bench-scratch-", dir=scratch_parent))
        try:
            place = Place(work / DATA_FILE_NAME, scratch, size_bytes, runtime_s)
            figures = run_all(workloads, place, repeat, display or ProgressDisplay())
        finally:
            shutil.rmtree(scratch, ignore_errors=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return {"format": JSON_FORMAT_VERSION, "target": str(target), "size_bytes": size_bytes,
            "runtime_s": runtime_s, "repeat": repeat, "tools": versions,
            "kernel": platform.release(), "cpus": os.cpu_count(),
            "metrics": {figure.metric.key: figure.summary() for figure in figures}}


def number(value: float) -> str:
    """Enough digits to compare, whatever the unit: 73,512 / 830.4 / 2.315."""
    if abs(value) >= 1000:
        return f"{value:,.0f}"
    return f"{value:.1f}" if abs(value) >= 10 else f"{value:.3f}"


def report_text(report: dict[str, Any]) -> str:
    tools = ", ".join(report["tools"].values())
    lines = [f"{report['target']}: {report['size_bytes'] / 2**20:,.0f} MiB file,"
             f" timed jobs {report['runtime_s']:g} s, {report['repeat']} round(s); {tools}",
             f"{'workload':<62} {'mean':>10} {'min':>10} {'max':>10} {'stdev':>8}"]
    for metric in report["metrics"].values():
        label = metric["label"] + (" ↓" if metric["lower_is_better"] else "")
        lines.append(f"{label:<62} {number(metric['mean']):>10} {number(metric['min']):>10}"
                     f" {number(metric['max']):>10} {number(metric['stdev']):>8}")
    lines.append("↓: lower is better")
    return "\n".join(lines)


def run_bench(args: argparse.Namespace) -> int:
    workloads = choose_workloads(args.workloads)
    target = target_directory(args.target)
    if args.runtime <= 0:
        raise ConfigError(f"--runtime {args.runtime:g}: must be positive")
    if not 1 <= args.repeat <= REPEAT_MAX:
        raise ConfigError(f"--repeat {args.repeat}: must be 1 to {REPEAT_MAX}")
    if args.scratch is not None and not args.scratch.is_dir():
        raise ConfigError(f"--scratch {args.scratch}: not a directory")
    report = measure(target, workloads, args.size, args.runtime, args.repeat, args.scratch)
    print(json.dumps(report, indent=2) if args.json else report_text(report))
    return 0


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "bench", help="fio and qemu-img workloads on a mount or directory",
        description="Measure the guest-disk workloads (sequential 1 MiB write and read,"
        " random 4 KiB O_DIRECT at depth 1 and 16, 64 KiB 70/30 mix, fsync latency,"
        " qemu-img convert and bench, small files made and removed) on TARGET, each"
        " --repeat times; print mean, min, max and stdev of every figure. Needs fio and"
        " qemu-img.",
        epilog="example: vmstore bench /var/lib/vmstore --size 4G --repeat 5\n"
        "         vmstore bench /tmp --workloads seq-write,seq-read --json\n"
        f"workloads: {', '.join(w.name for w in WORKLOADS)}\n"
        "exit status: 0 done, 1 refused or a tool failed",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("target", nargs="?", metavar="TARGET",
                        help="a mount point or any directory (default: [client] mount"
                        " from the config file)")
    parser.add_argument("--size", type=parse_size, default=parse_size("1G"),
                        help="size of the data file and the convert image (default 1G)")
    parser.add_argument("--runtime", type=float, default=10.0,
                        help="seconds per timed job (default 10)")
    parser.add_argument("--repeat", type=int, default=3,
                        help="rounds over all workloads (default 3)")
    parser.add_argument("--workloads", metavar="NAME,...",
                        help="run only these (default: all, listed below)")
    parser.add_argument("--scratch", type=Path, metavar="DIR",
                        help="local directory for tool output and the convert source"
                        " (default: a new one under $TMPDIR, removed after)")
    parser.add_argument("--json", action="store_true", help="machine-readable output")
    parser.set_defaults(handler=run_bench)
