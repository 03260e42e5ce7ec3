#!/usr/bin/env python3
"""The longest I/O stall a guest-like writer and reader see while a chunkserver hangs.

Run from a checkout (after deploy/install-deps.sh), as root (FUSE):

    python3 deploy/bench/stall_bench.py [--dir /var/tmp/vmstore-stall] [--runs 5]
                                        [--fault-seconds 40]

For each fault and each mode it starts a fresh ``vmstore local up`` (master,
3 chunkservers on loopback, goal 2, a mount), then:

* ``SIGSTOP chain member``: a writer does 4 KiB O_DIRECT pwrite + fsync in a
  loop on a new file; the tail of its chunk's chain is stopped for
  --fault-seconds, then continued.
* ``SIGSTOP local chunkserver``: a reader does 4 KiB O_DIRECT preads at random
  offsets of a 64 MiB file, starting while the chunkserver its short-circuit
  reads use (the first replica of the chunk) is stopped likewise.

The stall is the longest single operation that began before the fault ended
(one stuck across the SIGCONT counts whole). Modes: ``new`` (hedged reads,
silence deadlines) and ``old`` (the same code with VMSTORE_STALL_DEADLINES=off:
the fixed timeouts, 30 s per RPC). The table shows the median of --runs runs.
A fault shorter than the old timeouts (35 s) cuts the old figure short.
"""

from __future__ import annotations

import argparse
import mmap
import os
import random
import shutil
import signal
import statistics
import sys
import threading
import time
from pathlib import Path

import trio

from vmstore.cli.config import parse_address
from vmstore.cli.local_cluster import local_down, local_up
from vmstore.dfs.client.client import open_client
from vmstore.dfs.client.master_client import ClientIdentity
from vmstore.dfs.protocol.auth import load_key
from vmstore.dfs.protocol.latency import STALL_DEADLINES_ENV

BLOCK = 4096
READ_FILE_BYTES = 64 * 1024 * 1024


class Loop(threading.Thread):
    """Repeats one 4 KiB O_DIRECT operation; remembers the longest one begun before
    ``fault_over`` was set."""

    def __init__(self, path: Path, write: bool) -> None:
        super().__init__(daemon=True)
        self.path, self.write = path, write
        self.stop = threading.Event()
        self.fault_over = threading.Event()
        self.longest_s = 0.0
        self.operations = 0
        self.error: BaseException | None = None

    def run(self) -> None:
        buffer = mmap.mmap(-1, BLOCK)
        flags = os.O_DIRECT | (os.O_RDWR | os.O_CREAT if self.write else os.O_RDONLY)
        fd = os.open(self.path, flags, 0o644)
        offsets = random.Random(1)
        try:
            while not self.stop.is_set():
                counted = not self.fault_over.is_set()
                started = time.monotonic()
                if self.write:
                    buffer[:8] = self.operations.to_bytes(8, "little")
                    os.pwritev(fd, [buffer], self.operations % 16384 * BLOCK)
                    os.fsync(fd)
                else:
                    os.preadv(fd, [buffer], offsets.randrange(READ_FILE_BYTES // BLOCK) * BLOCK)
                if counted:
                    self.longest_s = max(self.longest_s, time.monotonic() - started)
                self.operations += 1
        except BaseException as error:  # reported by the caller
            self.error = error
        finally:
            os.close(fd)


async def first_replica(directory: Path, master: str, name: str) -> str:
    host, port = parse_address(master, "master")
    async with open_client(host, port, load_key(directory / "cluster.key"),
                           ClientIdentity(host_label="local0")) as client:
        inode = (await client.lookup(1, name.encode())).inode
        (location,) = await client.chunk_locations(inode, 0, 1)
    replica = location.replicas[0 if name == "read.img" else -1]
    return f"chunkserver{int(replica.host_label.removeprefix('local'))}"


def one_run(directory: Path, fault: str, mode: str, fault_s: float) -> float:
    shutil.rmtree(directory, ignore_errors=True)
    directory.mkdir(parents=True)
    os.environ[STALL_DEADLINES_ENV] = "on" if mode == "new" else "off"
    mount = directory / "mnt"
    master = local_up(directory, 3, mount)
    try:
        write = fault == "SIGSTOP chain member"
        name = "write.img" if write else "read.img"
        if not write:
            (mount / name).write_bytes(os.urandom(READ_FILE_BYTES))
        loop = Loop(mount / name, write)
        if write:
            loop.start()
            time.sleep(2.0)  # warm: connections, latency samples
        victim = trio.run(first_replica, directory, master, name)
        pid = int((directory / "run" / f"{victim}.pid").read_text())
        os.kill(pid, signal.SIGSTOP)
        try:
            if not write:
                # The reader starts during the fault: a replica fd opened before it
                # never asks the chunkserver again, the first open does.
                loop.start()
            time.sleep(fault_s)
        finally:
            os.kill(pid, signal.SIGCONT)
        loop.fault_over.set()
        time.sleep(1.0)
        loop.stop.set()
        loop.join(timeout=60)
        if loop.error is not None:
            raise RuntimeError(f"{fault}, {mode}: the guest saw {loop.error!r}")
        return loop.longest_s
    finally:
        local_down(directory)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--dir", type=Path, default=Path("/var/tmp/vmstore-stall"))
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--fault-seconds", type=float, default=40.0)
    parser.add_argument("--only", choices=("write", "read"), default=None)
    arguments = parser.parse_args()
    faults = tuple(fault for fault in ("SIGSTOP chain member", "SIGSTOP local chunkserver")
                   if arguments.only is None or (arguments.only == "write") == ("chain" in fault))
    print(f"{'fault':28} {'old worst stall':>16} {'new worst stall':>16}   (median of"
          f" {arguments.runs}, fault held {arguments.fault_seconds:.0f} s)")
    for fault in faults:
        medians = {}
        for mode in ("old", "new"):
            stalls = [one_run(arguments.dir, fault, mode, arguments.fault_seconds)
                      for _ in range(arguments.runs)]
            medians[mode] = statistics.median(stalls)
        print(f"{fault:28} {medians['old']:>15.3f}s {medians['new']:>15.3f}s", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
