#!/usr/bin/env python3
"""Throughput of the client library against a local cluster, next to local disk.

Run from a checkout (after deploy/install-deps.sh):

    python3 deploy/bench/client_library_bench.py [--dir /var/tmp/vmstore-bench] [--seconds 5]

It starts ``vmstore local up`` (master + 3 chunkservers on loopback, goal 2),
then runs each workload against the cluster through the client library and
against a plain file in the same directory with the same concurrency
(threads doing pread/pwrite), and prints a table with the ratio
cluster/local. Sequential: 1 GiB in 1 MiB requests, 8 in flight, fsync at
the end of the write. Random: 4 KiB and 64 KiB aligned requests, 16 in
flight, for --seconds each, over a 1 GiB file. Numbers vary run to run:
compare only within one run.
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import trio

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from tests.system.conftest import Cluster  # noqa: E402  (the same cluster the tests use)
from vmstore.cli.local_cluster import local_down  # noqa: E402

FILE_BYTES = 1 << 30
SEQUENTIAL_BLOCK_BYTES = 1 << 20
SEQUENTIAL_INFLIGHT = 8
RANDOM_INFLIGHT = 16

Operation = Callable[[int, int], Awaitable[None]]  # (offset, size)


async def sequential(operation: Operation, inflight: int) -> float:
    started = time.perf_counter()
    limiter = trio.Semaphore(inflight)
    async with trio.open_nursery() as nursery:
        for offset in range(0, FILE_BYTES, SEQUENTIAL_BLOCK_BYTES):
            await limiter.acquire()

            async def one(offset: int = offset) -> None:
                try:
                    await operation(offset, SEQUENTIAL_BLOCK_BYTES)
                finally:
                    limiter.release()

            nursery.start_soon(one)
    return FILE_BYTES / (time.perf_counter() - started)


async def random_io(operation: Operation, size: int, seconds: float) -> float:
    done = 0
    deadline = time.perf_counter() + seconds
    generator = random.Random(size)

    async def worker() -> None:
        nonlocal done
        while time.perf_counter() < deadline:
            offset = generator.randrange(FILE_BYTES // size) * size
            await operation(offset, size)
            done += 1

    started = time.perf_counter()
    async with trio.open_nursery() as nursery:
        for _ in range(RANDOM_INFLIGHT):
            nursery.start_soon(worker)
    return done / (time.perf_counter() - started)


def incompressible(size: int) -> bytes:
    return os.urandom(size)


async def measure(name: str, write: Operation, read: Operation,
                  sync: Callable[[], Awaitable[None]], seconds: float) -> dict[str, float]:
    results: dict[str, float] = {}
    results["seq write MB/s"] = await sequential(write, SEQUENTIAL_INFLIGHT) / 1e6
    await sync()
    results["seq read MB/s"] = await sequential(read, SEQUENTIAL_INFLIGHT) / 1e6
    for size in (4096, 65536):
        label = f"{size // 1024}K"
        results[f"rand {label} write IOPS"] = await random_io(write, size, seconds)
        results[f"rand {label} read IOPS"] = await random_io(read, size, seconds)
    await sync()
    print(f"  {name} done", file=sys.stderr)
    return results


async def run_local(path: Path, seconds: float) -> dict[str, float]:
    descriptor = os.open(path, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o600)
    blocks = {size: incompressible(size) for size in (4096, 65536, SEQUENTIAL_BLOCK_BYTES)}
    threads = trio.CapacityLimiter(RANDOM_INFLIGHT)

    async def write(offset: int, size: int) -> None:
        await trio.to_thread.run_sync(os.pwrite, descriptor, blocks[size], offset,
                                      limiter=threads)

    async def read(offset: int, size: int) -> None:
        await trio.to_thread.run_sync(os.pread, descriptor, size, offset, limiter=threads)

    async def sync() -> None:
        await trio.to_thread.run_sync(os.fsync, descriptor)

    try:
        return await measure("local disk", write, read, sync, seconds)
    finally:
        os.close(descriptor)


async def run_cluster(cluster: Cluster, seconds: float) -> dict[str, float]:
    async with cluster.client() as client:
        attrs = await client.create_file("/bench.img")
        blocks = {size: incompressible(size) for size in (4096, 65536, SEQUENTIAL_BLOCK_BYTES)}

        async def write(offset: int, size: int) -> None:
            await client.write(attrs.inode, offset, blocks[size])

        async def read(offset: int, size: int) -> None:
            await client.read(attrs.inode, offset, size, FILE_BYTES)

        async def sync() -> None:
            await client.fsync(attrs.inode)

        return await measure("vmstore goal 2", write, read, sync, seconds)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dir", type=Path, help="work directory (default: a new temp dir)")
    parser.add_argument("--seconds", type=float, default=5.0, help="per random workload")
    args = parser.parse_args()
    directory = args.dir or Path(tempfile.mkdtemp(prefix="vmstore-bench-", dir="/var/tmp"))
    directory.mkdir(parents=True, exist_ok=True)
    local = trio.run(run_local, directory / "local.img", args.seconds)
    (directory / "local.img").unlink()
    cluster = Cluster(directory / "cluster", 3)
    try:
        remote = trio.run(run_cluster, cluster, args.seconds)
    finally:
        local_down(cluster.directory)
    print("| workload | local disk | vmstore (goal 2, loopback) | ratio |")
    print("|---|---:|---:|---:|")
    for key in local:
        ratio = remote[key] / local[key]
        print(f"| {key} | {local[key]:,.0f} | {remote[key]:,.0f} | {ratio:.2f} |")
    if args.dir is None:
        shutil.rmtree(directory)
    return 0


if __name__ == "__main__":
    sys.exit(main())
