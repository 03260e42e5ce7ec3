#!/usr/bin/env python3
"""Where the CPU goes while fio runs one job on a fresh vmstore mount.

Stands up a local cluster (3 chunkservers, goal 2, a real mount, as
mount_bench does), lays out the data file, then runs the fio job while
sampling every daemon with py-spy (``pip install py-spy``; without it only
CPU shares are printed). Prints fio's result line, each process's share of
one CPU, and for each process its busiest functions (own time and inclusive
time, idle waits left out), so a change to the data path can be judged by
where its time went, before and after.

    sudo python3 deploy/bench/profile_io.py -- --rw=randwrite --bs=4k --direct=1 \\
        --ioengine=libaio --iodepth=16

Caveat: py-spy's sampling costs the daemons a few percent; compare profiles
with profiles, and throughput with `vmstore bench`.
"""

from __future__ import annotations

import argparse
import collections
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from mount_bench import vmstore_mount  # noqa: E402

# Frames that mean "waiting", not working: left out of the shares.
IDLE_FRAMES = ("EpollIOManager.get_events", "WorkerThread._work")
# Frames every busy sample has: no news in the inclusive list.
ENTRY_FRAMES = {"<module>", "main", "run", "_run_code", "_run_module_as_main", "unrolled_run",
                "mount_in_foreground", "run_mount_command", "run_chunkserver_command",
                "run_master_command"}


def daemons(directory: Path) -> dict[str, int]:
    """{"master" | "mount" | "chunkserverN": pid} of the cluster under ``directory``."""
    found: dict[str, int] = {}
    listing = subprocess.run(["pgrep", "-af", "vmstore.cli.main"], capture_output=True,
                             text=True).stdout
    for line in listing.splitlines():
        pid, command = line.split(" ", 1)
        if str(directory) not in command:
            continue
        words = command.split()
        role = words[words.index("vmstore.cli.main") + 1]
        if role == "chunkserver":
            role = Path(words[words.index("--data-dir") + 1]).name
        found[role] = int(pid)
    return found


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / 100  # utime + stime, in clock ticks


def summary(raw: Path, shown: int) -> list[str]:
    """py-spy's raw (collapsed) stacks as the top functions by own and inclusive time."""
    own: collections.Counter[str] = collections.Counter()
    inclusive: collections.Counter[str] = collections.Counter()
    total = 0
    for line in raw.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        frames = [frame.split(" (")[0] for frame in stack.split(";")]
        if frames[-1].startswith(IDLE_FRAMES):
            continue
        total += int(count)
        own[frames[-1]] += int(count)
        for frame in set(frames):
            inclusive[frame] += int(count)
    if not total:
        return ["  (no busy samples)"]
    lines = ["  own time:"]
    lines += [f"    {100 * n / total:5.1f}%  {name}" for name, n in own.most_common(shown)]
    lines.append("  inclusive:")
    lines += [f"    {100 * n / total:5.1f}%  {name}" for name, n in inclusive.most_common()
              if name not in ENTRY_FRAMES][:shown]
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", default="512M", help="data file size (fio syntax)")
    parser.add_argument("--runtime", type=float, default=10.0, help="seconds of the job")
    parser.add_argument("--top", type=int, default=12, help="functions shown per process")
    parser.add_argument("fio_arguments", nargs="+", help="the fio job, after --")
    options = parser.parse_args()
    spy = shutil.which("py-spy")
    with tempfile.TemporaryDirectory(dir="/var/tmp", prefix="vmstore-profile-") as work:
        directory = Path(work)
        with vmstore_mount(directory) as mountpoint:
            data = mountpoint / "data"
            subprocess.run(["fio", "--name=layout", f"--filename={data}", "--rw=write",
                            "--bs=1M", f"--size={options.size}", "--end_fsync=1"],
                           check=True, capture_output=True)
            processes = daemons(directory)
            before = {name: cpu_seconds(pid) for name, pid in processes.items()}
            samplers = [] if spy is None else [
                subprocess.Popen([spy, "record", "--rate", "200", "--duration",
                                  str(int(options.runtime)), "--format", "raw", "--output",
                                  str(directory / f"{name}.txt"), "--pid", str(pid)],
                                 stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
                for name, pid in processes.items()]
            started = time.monotonic()
            job = subprocess.run(["fio", "--name=job", f"--filename={data}",
                                  f"--size={options.size}", "--time_based",
                                  f"--runtime={options.runtime}", "--group_reporting",
                                  *options.fio_arguments], capture_output=True, text=True)
            elapsed = time.monotonic() - started
            after = {name: cpu_seconds(pid) for name, pid in processes.items()}
            for sampler in samplers:
                sampler.wait()
        print("\n".join(line.strip() for line in job.stdout.splitlines()
                        if "IOPS=" in line) or job.stdout + job.stderr)
        print("CPU (share of one core): " + ", ".join(
            f"{name} {100 * (after[name] - before[name]) / elapsed:.0f}%"
            for name in sorted(processes)))
        if spy is None:
            print("py-spy not found: no profiles (pip install py-spy)")
            return
        for name in sorted(processes):
            raw = directory / f"{name}.txt"
            if raw.exists():
                print(f"\n{name}:")
                print("\n".join(summary(raw, options.top)))


if __name__ == "__main__":
    main()
