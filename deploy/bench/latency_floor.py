#!/usr/bin/env python3
"""The floors under fsync latency on this machine: process wake-ups and disk syncs.

    python3 deploy/bench/latency_floor.py [--dir /var/tmp] [--rounds 400]

Prints, each as p50/p90 over --rounds:

* a socketpair ping-pong between two processes, free to run on any CPU and
  pinned to one: what waking a process on another CPU costs (each message
  hop of an fsync pays it: mount -> head -> tail -> head -> mount);
* a 4 KiB pwrite plus a 4-byte checksum-table pwrite plus fdatasync on a
  file in --dir (what a replica does per synchronous write), alone and with
  a second process doing the same on its own file at once (two replicas on
  one disk, as in the local benchmarks).

These are the numbers behind the README's explanation of the fsync row:
vmstore's fsync cannot be faster than its hops plus two replicas' syncs.
deploy/bench/compare_moosefs.py prints the three p50s (``measure_floors``)
before and after its systems run, in the same run.

Caveat: the machine's load moves these figures; compare within one run.
"""

from __future__ import annotations

import argparse
import os
import signal
import socket
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass
from multiprocessing import Pool
from pathlib import Path

BLOCK_BYTES = 4096
FILE_BYTES = 64 * 1024 * 1024


def percentiles(seconds: list[float]) -> str:
    ordered = sorted(seconds)
    p90 = ordered[int(len(ordered) * 0.9)]
    return f"p50 {statistics.median(ordered) * 1e6:,.0f} µs, p90 {p90 * 1e6:,.0f} µs"


def ping_pong(rounds: int, cpus: set[int] | None) -> list[float]:
    """Round trips of one byte between this process and a forked child."""
    if cpus is not None:
        os.sched_setaffinity(0, cpus)
    ours, theirs = socket.socketpair()
    child = os.fork()
    if child == 0:
        ours.close()
        while data := theirs.recv(64):
            theirs.send(data)
        os._exit(0)
    theirs.close()
    took = []
    for _ in range(rounds):
        started = time.perf_counter()
        ours.send(b"x")
        ours.recv(64)
        took.append(time.perf_counter() - started)
    ours.close()
    os.waitpid(child, 0)
    if cpus is not None:
        os.sched_setaffinity(0, range(os.cpu_count() or 1))
    return took


def synced_writes(directory: str, rounds: int) -> list[float]:
    """pwrite 4 KiB + 4 bytes of its checksum entry + fdatasync, over an allocated file."""
    fd, path = tempfile.mkstemp(dir=directory, prefix="latency-floor-")
    try:
        os.pwrite(fd, b"\1" * FILE_BYTES, 0)
        os.fsync(fd)
        block = os.urandom(BLOCK_BYTES)
        took = []
        for index in range(rounds):
            offset = BLOCK_BYTES * (16 + index % 4096)
            started = time.perf_counter()
            os.pwrite(fd, block, offset)
            os.pwrite(fd, b"crc!", BLOCK_BYTES + offset // 1024)
            os.fdatasync(fd)
            took.append(time.perf_counter() - started)
        return took
    finally:
        os.close(fd)
        os.unlink(path)


def synced_writes_two_at_once(directory: str, rounds: int) -> list[list[float]]:
    """``synced_writes`` in two processes at once, each on its own file."""
    # The workers take SIGTERM's default back: a caller's handler (compare_moosefs.py
    # raises KeyboardInterrupt) would make the pool's own shutdown print tracebacks.
    with Pool(2, initializer=signal.signal, initargs=(signal.SIGTERM, signal.SIG_DFL)) as pool:
        return pool.starmap(synced_writes, [(directory, rounds)] * 2)


@dataclass(frozen=True)
class Floors:
    """The p50s compare_moosefs.py prints beside its table, in microseconds."""

    ping_pong_p50_us: float  # a round trip between two processes free to run on any CPU
    sync_p50_us: float  # pwrite 4 KiB + checksum entry + fdatasync, alone
    two_syncs_p50_us: float  # the same in two processes at once (both processes' samples)


def measure_floors(directory: Path, rounds: int) -> Floors:
    both = synced_writes_two_at_once(str(directory), rounds)
    return Floors(statistics.median(ping_pong(rounds * 5, None)) * 1e6,
                  statistics.median(synced_writes(str(directory), rounds)) * 1e6,
                  statistics.median(both[0] + both[1]) * 1e6)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dir", type=Path, default=Path("/var/tmp"),
                        help="where the sync test's files go (default /var/tmp)")
    parser.add_argument("--rounds", type=int, default=400, help="samples per figure")
    args = parser.parse_args()
    print(f"{os.cpu_count()} CPUs; {args.rounds} rounds each")
    print(f"ping-pong across CPUs:      {percentiles(ping_pong(args.rounds * 5, None))}")
    print(f"ping-pong pinned to CPU 0:  {percentiles(ping_pong(args.rounds * 5, {0}))}")
    print(f"pwrite+fdatasync, alone:    {percentiles(synced_writes(str(args.dir), args.rounds))}")
    both = synced_writes_two_at_once(str(args.dir), args.rounds)
    print(f"pwrite+fdatasync, two at once: {percentiles(both[0])}; {percentiles(both[1])}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
