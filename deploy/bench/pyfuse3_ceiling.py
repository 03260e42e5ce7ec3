#!/usr/bin/env python3
"""The ceiling of a pyfuse3 mount here: `vmstore bench` on a trivial one, next to local disk.

Run from a checkout, as root (FUSE mount with allow_other, page cache
drops), with fio and qemu-img installed (deploy/install-deps.sh):

    python3 deploy/bench/pyfuse3_ceiling.py [--size 1G] [--runtime 10] [--repeat 1]
        [--workloads A,B] [--no-direct-backing] [--json]

It mounts deploy/bench/passthrough_fs.py (a pass-through of a directory on
local disk, with vmstore's mount options, handle flags and attributes; see
its docstring) on a temp dir, then runs the workloads of ``vmstore bench``
on local disk and on that mount, one after the other, each on a settled
disk (``mount_bench.settle``), and prints a markdown table with the ratio
pass-through / local disk (``--json``: both reports).

What the figures mean: the pass-through does nothing behind the FUSE loop
but a system call, so where that call costs less than the loop's round
trip (buffered I/O into the page cache, fsync) no pyfuse3 file system
(vmstore included: it serves its mount with the same pyfuse3, trio and
options) can beat its column on this machine. A workload where this column
is below MooseFS's (deploy/bench/compare_moosefs.py, on the same machine)
is one a pyfuse3 file system cannot win, whatever it does behind the loop.

Caveat: the pass-through serves one request at a time and passes O_DIRECT
on, so its O_DIRECT rows at depth 16 wait for the disk at depth 1: there
its column is the disk's, and a mount that acknowledges a write before it
is on a disk (vmstore's write-behind) can beat it. ``--no-direct-backing``
opens the backing files without O_DIRECT (the FUSE handles stay
``direct_io``): those rows then show the loop's own ceiling.

Everything lives in a new directory under /var/tmp: the local-disk target,
the pass-through's backing directory, its mount point and its log. On exit,
failure, Ctrl-C or SIGTERM the mount is unmounted (``fusermount3 -u``, and
a lazy unmount where that fails), its process stopped, and the directory
removed.

Caveat: numbers vary run to run, and with whatever else runs on the
machine: compare only within one run.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from compare_moosefs import is_mounted, run, stop_process, terminate  # noqa: E402
from mount_bench import add_bench_options, markdown_table, settle  # noqa: E402
from passthrough_fs import FILE_SYSTEM_TYPE  # noqa: E402

from vmstore.cli.bench import choose_workloads, measure  # noqa: E402
from vmstore.dfs.constants import READ_AHEAD_KIB  # noqa: E402
from vmstore.dfs.errors import DfsError  # noqa: E402

PASSTHROUGH_SCRIPT = Path(__file__).resolve().parent / "passthrough_fs.py"
LOCAL_DISK = "local disk"
PASSTHROUGH = "pass-through pyfuse3"
MOUNT_TIMEOUT_S = 30.0
POLL_S = 0.05


def say(message: str) -> None:
    print(f"pyfuse3_ceiling: {message}", file=sys.stderr, flush=True)


def wait_mounted(process: subprocess.Popen[bytes], mountpoint: Path, log: Path) -> None:
    deadline = time.monotonic() + MOUNT_TIMEOUT_S
    while not is_mounted(mountpoint):
        if process.poll() is not None:
            raise RuntimeError(f"passthrough_fs exited ({process.returncode}) before mounting:"
                               f" {log.read_text(errors='replace')[-2000:]}")
        if time.monotonic() > deadline:
            raise RuntimeError(f"passthrough_fs: {mountpoint} not mounted after"
                               f" {MOUNT_TIMEOUT_S:.0f} s")
        time.sleep(POLL_S)


def raise_readahead(mountpoint: Path) -> None:
    """The readahead vmstore's mount sets for itself (fuse/mount.py), for the same
    sequential reads. Set from here: the kernel would ask the mount for the stat."""
    # The stat is answered once the kernel has the mount's INIT reply, which
    # is when it sets the readahead replaced here.
    device = mountpoint.stat().st_dev
    path = Path(f"/sys/class/bdi/{os.major(device)}:{os.minor(device)}/read_ahead_kb")
    try:
        path.write_text(f"{READ_AHEAD_KIB}\n")
    except OSError as error:
        say(f"readahead of {mountpoint} left as the kernel set it ({error})")


def unmount(mountpoint: Path) -> None:
    """``fusermount3 -u``; where that fails (a file still open, as after Ctrl-C mid-job),
    a lazy unmount: the mount point is free at once, the mount goes with its last user."""
    if is_mounted(mountpoint) and run("fusermount3", "-u", str(mountpoint),
                                      check=False).returncode:
        run("fusermount3", "-u", "-z", str(mountpoint), check=False)


@contextmanager
def passthrough_mount(backing: Path, mountpoint: Path, log: Path,
                      direct_backing: bool = True) -> Iterator[subprocess.Popen[bytes]]:
    """passthrough_fs.py serving ``backing`` at ``mountpoint`` (its output in ``log``),
    with vmstore's readahead; unmounted and its process stopped on leaving, however."""
    command = [sys.executable, str(PASSTHROUGH_SCRIPT), str(backing), str(mountpoint)]
    if not direct_backing:
        command.append("--no-direct-backing")
    # A session of its own: Ctrl-C reaches the bench, while the file system
    # stays up to serve the bench's clean-up.
    with open(log, "wb") as output:
        process = subprocess.Popen(command, stdout=output, stderr=subprocess.STDOUT,
                                   stdin=subprocess.DEVNULL, start_new_session=True)
    try:
        wait_mounted(process, mountpoint, log)
        raise_readahead(mountpoint)
        yield process
    finally:
        unmount(mountpoint)
        stop_process(process, "passthrough_fs")


def measure_both(directory: Path, args: argparse.Namespace) -> dict[str, dict[str, Any]]:
    workloads = choose_workloads(args.workloads)
    local, backing, mountpoint = directory / "local", directory / "backing", directory / "mnt"
    for path in (local, backing, mountpoint):
        path.mkdir()
    say(f"letting the disk settle, then vmstore bench on {LOCAL_DISK} ({local})")
    settle()
    reports = {LOCAL_DISK: measure(local, workloads, args.size, args.runtime, args.repeat,
                                   directory)}
    with passthrough_mount(backing, mountpoint, directory / "passthrough_fs.log",
                           not args.no_direct_backing):
        say(f"letting the disk settle, then vmstore bench on {PASSTHROUGH} ({mountpoint},"
            f" {FILE_SYSTEM_TYPE} of {backing}"
            f"{', backing files without O_DIRECT' if args.no_direct_backing else ''})")
        settle()
        reports[PASSTHROUGH] = measure(mountpoint, workloads, args.size, args.runtime,
                                       args.repeat, directory)
    return reports


def print_report(reports: dict[str, dict[str, Any]], args: argparse.Namespace) -> None:
    if args.json:
        print(json.dumps(reports, indent=2))
        return
    report = reports[PASSTHROUGH]
    tools = ", ".join(report["tools"].values())
    print(f"\n{time.strftime('%Y-%m-%d')}, {report['cpus']} CPUs, kernel {report['kernel']};"
          f" {tools}; {args.size / 2**20:,.0f} MiB file; timed jobs {args.runtime:g} s;"
          f" mean ±stdev of {args.repeat} round(s);"
          f" backing files {'without' if args.no_direct_backing else 'with'} O_DIRECT"
          " where opened with it; ↓ lower is better\n")
    print(markdown_table(reports, ((PASSTHROUGH, LOCAL_DISK),)))


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="example: python3 deploy/bench/pyfuse3_ceiling.py --size 256M --runtime 3")
    add_bench_options(parser, repeat=1)
    parser.add_argument("--no-direct-backing", action="store_true", help="open the"
                        " pass-through's backing files without O_DIRECT: O_DIRECT rows then"
                        " show the FUSE loop's cost, not the disk's latency at depth 1")
    parser.add_argument("--json", action="store_true", help="both reports as JSON")
    args = parser.parse_args()
    signal.signal(signal.SIGTERM, terminate)
    directory = Path(tempfile.mkdtemp(prefix="vmstore-pyfuse3-ceiling-", dir="/var/tmp"))
    status = 0
    try:
        print_report(measure_both(directory, args), args)
    except (DfsError, subprocess.CalledProcessError, RuntimeError, OSError) as error:
        say(f"error: {error}")
        status = 1
    except KeyboardInterrupt:
        say("interrupted")
        status = 130
    finally:
        shutil.rmtree(directory, ignore_errors=True)
    return status


if __name__ == "__main__":
    sys.exit(main())
