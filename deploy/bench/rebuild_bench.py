#!/usr/bin/env python3
"""Rebuild rate after a chunkserver dies, with and without foreground I/O.

    python3 deploy/bench/rebuild_bench.py [--chunks 12] [--dir D]

Starts a local cluster of 4 chunkservers (goal 2, rebuild after 2 s),
writes CHUNKS full 64 MiB chunks, kills the chunkserver holding the most
replicas, and times until every chunk is back at goal: MiB/s of replica
data rebuilt. Then the same again while a client does 64 KiB random writes
(8 in flight) to another file, reporting that foreground rate before and
during the rebuild. Copies are throttled per target chunkserver by
--replication-mib-per-s (default 200), so guests keep their I/O.
"""

from __future__ import annotations

import argparse
import os
import random
import sys
import tempfile
import time
from pathlib import Path

import trio

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from tests.system.conftest import Cluster  # noqa: E402
from vmstore.cli.local_cluster import local_down  # noqa: E402
from vmstore.dfs.client.client import Client  # noqa: E402
from vmstore.dfs.constants import CHUNK_SIZE_BYTES  # noqa: E402

FOREGROUND_BLOCK_BYTES = 64 * 1024
FOREGROUND_FILE_BYTES = 256 * 2**20


async def fill(client: Client, path: str, chunks: int) -> int:
    attrs = await client.create_file(path)
    block = os.urandom(2**20)
    limiter = trio.Semaphore(8)
    async with trio.open_nursery() as nursery:
        for offset in range(0, chunks * CHUNK_SIZE_BYTES, len(block)):
            await limiter.acquire()

            async def one(offset: int = offset) -> None:
                try:
                    await client.write(attrs.inode, offset, block)
                finally:
                    limiter.release()

            nursery.start_soon(one)
    await client.fsync(attrs.inode)
    return attrs.inode


async def healthy(client: Client) -> bool:
    chunks = (await client.status()).chunks
    return chunks.ok == chunks.total


async def rebuild_once(cluster: Cluster, client: Client, victim: str,
                       foreground: bool) -> tuple[float, float, float]:
    """(rebuild MiB/s, foreground ops/s before, foreground ops/s during)."""
    status = await client.status()
    label = "local" + victim.removeprefix("chunkserver")
    lost = next(s.chunk_count for s in status.chunkservers if s.host == label)
    target = await client.create_file(f"/foreground-{victim}.img") if foreground else None
    done = 0
    stop = trio.Event()

    async def foreground_writer() -> None:
        nonlocal done
        assert target is not None
        generator = random.Random(1)
        block = os.urandom(FOREGROUND_BLOCK_BYTES)
        while not stop.is_set():
            offset = generator.randrange(FOREGROUND_FILE_BYTES // len(block)) * len(block)
            await client.write(target.inode, offset, block)
            done += 1

    async with trio.open_nursery() as nursery:
        before = during = 0.0
        if foreground:
            for _ in range(8):
                nursery.start_soon(foreground_writer)
            await trio.sleep(5)
            before = done / 5
        await trio.to_thread.run_sync(cluster.kill, victim)
        started = time.monotonic()
        counted_from = done
        while (await client.status()).chunks.ok == (await client.status()).chunks.total:
            await trio.sleep(0.1)
        while not await healthy(client):
            await trio.sleep(0.2)
        elapsed = time.monotonic() - started
        during = (done - counted_from) / elapsed
        stop.set()
    return lost * CHUNK_SIZE_BYTES / 2**20 / elapsed, before, during


async def run(cluster: Cluster, chunks: int) -> None:
    async with cluster.client(host_label="bench") as client:
        await fill(client, "/data.img", chunks)
        quiet = await rebuild_once(cluster, client, "chunkserver0", foreground=False)
        busy = await rebuild_once(cluster, client, "chunkserver1", foreground=True)
    print("| case | rebuild MiB/s | foreground 64K writes/s before | during rebuild |")
    print("|---|---:|---:|---:|")
    print(f"| idle cluster | {quiet[0]:.0f} | - | - |")
    print(f"| with foreground I/O | {busy[0]:.0f} | {busy[1]:.0f} | {busy[2]:.0f} |")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--chunks", type=int, default=12, help="64 MiB chunks to write")
    parser.add_argument("--dir", type=Path)
    parser.add_argument("--replication-mib-per-s", default="200")
    args = parser.parse_args()
    directory = args.dir or Path(tempfile.mkdtemp(prefix="vmstore-rebuild-", dir="/var/tmp"))
    cluster = Cluster(directory / "cluster", 4,
                      master_flags=("--replication-delay", "2", "--startup-grace", "2"),
                      chunkserver_flags=("--replication-mib-per-s",
                                         args.replication_mib_per_s))
    try:
        trio.run(run, cluster, args.chunks)
    finally:
        local_down(cluster.directory)
    return 0


if __name__ == "__main__":
    sys.exit(main())
