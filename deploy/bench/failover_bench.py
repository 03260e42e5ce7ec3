#!/usr/bin/env python3
"""Metadata HA (issue 15): failover time, a writer's stall across it, what HA costs.

Run from a checkout (after deploy/install-deps.sh, which installs etcd-server):

    python3 deploy/bench/failover_bench.py [--dir /var/tmp/vmstore-failover] [--runs 5]
        [--ops 100] [--rounds 3] [--inflight 16]

It starts two clusters on this machine with ``vmstore local up``'s code
(cli.local_cluster): an HA group (a three-member etcd, three masters, two
chunkservers) and an embedded master (one master on SQLite, two chunkservers).

1. Cost, measured first, interleaved: in each of --rounds rounds, for each
   system in turn (the order rotating), each metadata change --ops times one
   after another (latency: p50, p99) and --ops x 2 with --inflight at once
   (throughput), through the client library: create, rename, setattr (mode),
   and a 4 KiB append + fsync (a size change the master commits). Beside them,
   a bare etcd put and a put guarded as a journal append is (a txn), httpx to
   the JSON gateway of the same etcd, and the same txn sent as the leader
   sends it (etcd_client.BlockingTxn, from a worker thread): the floor under
   what HA adds. The last column says what HA adds in those txns.
2. Failover, --runs times: a prober client and a guest-like writer (64 KiB
   write + fsync, appending, in a loop, on a session of its own) run; the
   leader is killed with SIGKILL; the prober's next create is issued at once,
   and the failover time is from the kill to its acknowledgement (by the new
   leader: the old one is dead); beside it, when another master first accepts
   connections (the election and catch-up, without the client's reconnection
   backoff). The writer's stall is the longest time
   between two of its acknowledged write+fsyncs around the kill. The killed
   master is started again (a standby, from its data directory) and the next
   run waits until both standbys report 0 entries behind.

Prints both tables. Numbers vary run to run (two cores, other work): compare
only within one run. Nothing here is asserted; the tests check correctness.
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import shutil
import signal
import statistics
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import trio

from vmstore.cli.local_cluster import (
    local_down,
    local_up,
    spawn,
    wait_for_leader,
    wait_ready,
)
from vmstore.dfs.client.client import Client, open_client
from vmstore.dfs.client.master_client import ClientIdentity
from vmstore.dfs.master import etcd_client as etcd
from vmstore.dfs.protocol.auth import load_key
from vmstore.dfs.types import ROOT_INODE

try:
    from vmstore.dfs.master.etcd_client import BlockingTxn
except ImportError:  # an older tree, measured for a before/after
    BlockingTxn = None  # type: ignore[assignment,misc]

LEADER_TXN = "etcd guarded txn, as the leader sends it"
CHUNKSERVERS = 2
HA_MASTERS = 3
SMALL_BYTES = 4096
WRITER_BLOCK_BYTES = 64 * 1024
CLIENT_RECONNECT_S = 120.0
SETTLE_TIMEOUT_S = 120.0
# The writer runs this long before the kill, and after the failover.
WRITER_LEAD_S = 1.0
WRITER_TAIL_S = 2.0


@dataclass
class System:
    name: str
    directory: Path
    addresses: list[str]
    key: bytes
    samples: dict[str, list[float]] = field(default_factory=dict)  # op -> latencies (s)
    rates: dict[str, list[float]] = field(default_factory=dict)  # op -> ops/s per round

    @asynccontextmanager
    async def client(self) -> AsyncIterator[Client]:
        hosts = [(a.rsplit(":", 1)[0], int(a.rsplit(":", 1)[1])) for a in self.addresses]
        async with open_client(hosts[0][0], hosts[0][1], self.key,
                               ClientIdentity(host_label="local0"),
                               reconnect_timeout_s=CLIENT_RECONNECT_S,
                               other_masters=hosts[1:]) as client:
            yield client


def start(directory: Path, masters: int) -> System:
    if directory.exists():
        local_down(directory)
        shutil.rmtree(directory)
    address = local_up(directory, CHUNKSERVERS, None, masters=masters)
    return System("HA (3 masters, etcd x3)" if masters > 1 else "embedded master",
                  directory, address.split(","), load_key(directory / "cluster.key"))


def etcd_endpoints(directory: Path) -> list[str]:
    arguments = json.loads((directory / "run" / "master0.args").read_text())[0]
    return str(arguments[arguments.index("--etcd") + 1]).split(",")


# --- cost ----------------------------------------------------------------------

Change = Callable[[int], Awaitable[None]]  # one change, numbered


class Workload:
    """The four metadata changes on one client, each on objects of its own."""

    def __init__(self, client: Client, tag: str) -> None:
        self.client = client
        self.tag = tag
        self.inodes: dict[int, int] = {}
        self.appenders: dict[int, int] = {}  # task -> inode (its own file)
        self.appended: dict[int, int] = {}  # inode -> bytes appended

    async def create(self, index: int) -> None:
        attrs = await self.client.create_file(f"/{self.tag}-{index}")
        self.inodes[index] = attrs.inode

    async def rename(self, index: int) -> None:
        await self.client.rename(ROOT_INODE, f"{self.tag}-{index}".encode(), ROOT_INODE,
                                 f"{self.tag}-{index}-renamed".encode())

    async def setattr(self, index: int) -> None:
        await self.client.setattr(self.inodes[index], mode=0o600 if index % 2 else 0o640)

    async def append_fsync(self, inode: int) -> None:
        offset = self.appended.get(inode, 0)
        await self.client.write(inode, offset, b"x" * SMALL_BYTES)
        await self.client.fsync(inode)
        self.appended[inode] = offset + SMALL_BYTES

    async def appender(self, task: int) -> int:
        if task not in self.appenders:
            attrs = await self.client.create_file(f"/{self.tag}-append-{task}")
            await self.client.opened(attrs.inode, writable=True)
            self.appenders[task] = attrs.inode
        return self.appenders[task]

    async def close(self) -> None:
        for inode in self.appenders.values():
            await self.client.closed(inode, writable=True)


async def timed(change: Change, indexes: range, samples: list[float]) -> None:
    for index in indexes:
        started = time.perf_counter()
        await change(index)
        samples.append(time.perf_counter() - started)


async def concurrently(change: Change, indexes: range, inflight: int) -> float:
    """``change`` for every index, ``inflight`` at once; changes per second."""
    queue = iter(indexes)
    started = time.perf_counter()

    async def worker() -> None:
        for index in queue:
            await change(index)

    async with trio.open_nursery() as nursery:
        for _ in range(inflight):
            nursery.start_soon(worker)
    return len(indexes) / (time.perf_counter() - started)


async def measure_system(system: System, round_index: int, ops: int, inflight: int) -> None:
    async with system.client() as client:
        work = Workload(client, f"r{round_index}")
        base = 0
        for name, change in (("create", work.create), ("rename", work.rename),
                             ("setattr", work.setattr)):
            await timed(change, range(base, base + ops), system.samples.setdefault(name, []))
        # The same objects again, many at once: create, rename, setattr of fresh ones.
        base = ops
        for name, change in (("create", work.create), ("rename", work.rename),
                             ("setattr", work.setattr)):
            rate = await concurrently(change, range(base, base + 2 * ops), inflight)
            system.rates.setdefault(name, []).append(rate)
        one = await work.appender(0)

        async def append_one(_index: int) -> None:
            await work.append_fsync(one)

        await timed(append_one, range(ops), system.samples.setdefault("append+fsync", []))
        files = [await work.appender(task) for task in range(1, inflight + 1)]

        async def append_own(index: int) -> None:
            await work.append_fsync(files[index % inflight])

        # Each file is appended to by one task at a time: index modulo inflight.
        rate = await concurrently_by_file(append_own, 2 * ops, inflight)
        system.rates.setdefault("append+fsync", []).append(rate)
        await work.close()


async def concurrently_by_file(change: Change, count: int, inflight: int) -> float:
    started = time.perf_counter()

    async def worker(task: int) -> None:
        for index in range(task, count, inflight):
            await change(index)

    async with trio.open_nursery() as nursery:
        for task in range(inflight):
            nursery.start_soon(worker, task)
    return count / (time.perf_counter() - started)


@dataclass
class EtcdFloor:
    """A bare put, and a put guarded as a journal append is (a txn: the leader key's
    create revision is ours and the entry's key is new), straight to etcd's gateway."""

    samples: dict[str, list[float]] = field(default_factory=dict)
    rates: dict[str, list[float]] = field(default_factory=dict)


async def measure_etcd(endpoint: str, round_index: int, ops: int, inflight: int,
                       floor: EtcdFloor) -> None:
    async with httpx.AsyncClient(timeout=10.0) as http:
        async def call(path: str, body: dict[str, object]) -> dict[str, object]:
            response = await http.post(endpoint + path, json=body)
            response.raise_for_status()
            reply: dict[str, object] = response.json()
            return reply

        # A new key each round: the put's revision is its create revision.
        leader_key = _b64(f"/bench/leader/{round_index}".encode())
        created = await call("/v3/kv/put", {"key": leader_key, "value": _b64(b"me")})
        epoch = str(created["header"]["revision"])  # type: ignore[index]

        async def put(index: int) -> None:
            await call("/v3/kv/put", {"key": _b64(f"/bench/put/{round_index}/{index}".encode()),
                                      "value": _b64(b"x" * 100)})

        async def guarded(index: int) -> None:
            key = _b64(f"/bench/txn/{round_index}/{index}".encode())
            reply = await call("/v3/kv/txn", {
                "compare": [{"key": leader_key, "result": "EQUAL", "target": "CREATE",
                             "create_revision": epoch},
                            {"key": key, "result": "EQUAL", "target": "CREATE",
                             "create_revision": "0"}],
                "success": [{"request_put": {"key": key, "value": _b64(b"x" * 100)}}]})
            assert reply.get("succeeded"), reply

        for name, change in (("bare etcd put", put), ("etcd guarded txn", guarded)):
            await timed(change, range(ops), floor.samples.setdefault(name, []))
            floor.rates.setdefault(name, []).append(
                await concurrently(change, range(ops, 3 * ops), inflight))
    if BlockingTxn is None:
        return  # a tree from before the leader sent its txns this way
    blocking = BlockingTxn([endpoint])
    samples = floor.samples.setdefault(LEADER_TXN, [])

    def as_the_leader_does() -> None:
        for index in range(ops):
            key = f"/bench/leader-txn/{round_index}/{index}".encode()
            started = time.perf_counter()
            result = blocking.txn([etcd.created_at(leader_key_bytes, int(epoch)),
                                   etcd.created_at(key, 0)], [etcd.put(key, b"x" * 100)])
            samples.append(time.perf_counter() - started)
            assert result.succeeded, result

    leader_key_bytes = f"/bench/leader/{round_index}".encode()
    try:
        await trio.to_thread.run_sync(as_the_leader_does)
    finally:
        blocking.close()


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


# --- failover ------------------------------------------------------------------

@dataclass
class FailoverRun:
    listening_s: float  # from the kill until another master accepts connections
    failover_s: float
    stall_s: float
    writes: int


async def first_listener(addresses: list[str]) -> float:
    """perf_counter() when one of ``addresses`` first accepts a connection (polled)."""
    while True:
        for address in addresses:
            host, port = address.rsplit(":", 1)
            with trio.move_on_after(0.2):
                try:
                    stream = await trio.open_tcp_stream(host, int(port))
                except OSError:
                    continue
                await stream.aclose()
                return time.perf_counter()
        await trio.sleep(0.01)


async def wait_settled(system: System) -> None:
    """Until every master but the leader reports as a standby with 0 entries behind."""
    deadline = time.monotonic() + SETTLE_TIMEOUT_S
    async with system.client() as client:
        while True:
            status = await client.status()
            ha = status.ha
            if ha is not None and len(ha.standbys) == len(system.addresses) - 1 and all(
                    standby.lag_entries == 0 for standby in ha.standbys):
                return
            if time.monotonic() > deadline:
                raise RuntimeError(f"the HA group did not settle: {ha}")
            await trio.sleep(0.5)


async def failover_run(system: System, run: int) -> FailoverRun:
    leader = await trio.to_thread.run_sync(wait_for_leader, system.addresses)
    name = f"master{system.addresses.index(leader)}"
    pid = int((system.directory / "run" / f"{name}.pid").read_text())
    acknowledged: list[float] = []
    killed_at = failover_at = listening_at = 0.0
    stop = trio.Event()

    async with system.client() as prober, system.client() as writer:
        inode = (await writer.create_file(f"/guest-{run}")).inode
        await writer.opened(inode, writable=True)
        await prober.create_file(f"/probe-{run}-warm")

        async def guest() -> None:
            offset = 0
            while not stop.is_set():
                await writer.write(inode, offset, b"g" * WRITER_BLOCK_BYTES)
                await writer.fsync(inode)
                acknowledged.append(time.perf_counter())
                offset += WRITER_BLOCK_BYTES

        async def listener() -> None:
            nonlocal listening_at
            listening_at = await first_listener([a for a in system.addresses if a != leader])

        async with trio.open_nursery() as nursery:
            nursery.start_soon(guest)
            await trio.sleep(WRITER_LEAD_S)
            killed_at = time.perf_counter()
            os.kill(pid, signal.SIGKILL)
            nursery.start_soon(listener)
            await prober.create_file(f"/probe-{run}")
            failover_at = time.perf_counter()
            await trio.sleep(WRITER_TAIL_S)
            stop.set()
        await writer.closed(inode, writable=True)
    os.waitpid(pid, 0)
    around = [t for t in acknowledged if t >= killed_at - WRITER_LEAD_S]
    gaps = [later - earlier for earlier, later in zip(around, around[1:], strict=False)
            if later >= killed_at]
    spawn(system.directory, name)  # again, as a standby, on its own data directory
    await trio.to_thread.run_sync(wait_ready, system.directory / "run" / f"{name}.addr",
                                  name, system.directory)
    return FailoverRun(listening_at - killed_at, failover_at - killed_at,
                       max(gaps, default=0.0), len(acknowledged))


# --- report --------------------------------------------------------------------

def p(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(int(len(ordered) * fraction), len(ordered) - 1)]


def cost_table(embedded: System, ha: System, floor: EtcdFloor) -> str:
    txn = floor.samples.get(LEADER_TXN) or floor.samples["etcd guarded txn"]
    lines = ["| change | embedded p50 / p99 (ms) | HA p50 / p99 (ms) | HA − embedded p50 (ms)"
             " | embedded ops/s | HA ops/s | HA / embedded | HA − embedded in txns |",
             "|---|---:|---:|---:|---:|---:|---:|---:|"]
    for op in ("create", "rename", "setattr", "append+fsync"):
        e, h = embedded.samples[op], ha.samples[op]
        er, hr = statistics.median(embedded.rates[op]), statistics.median(ha.rates[op])
        lines.append(f"| {op} | {p(e, .5) * 1e3:.1f} / {p(e, .99) * 1e3:.1f} |"
                     f" {p(h, .5) * 1e3:.1f} / {p(h, .99) * 1e3:.1f} |"
                     f" {(p(h, .5) - p(e, .5)) * 1e3:+.1f} | {er:.0f} | {hr:.0f} |"
                     f" {hr / er:.2f} | {(p(h, .5) - p(e, .5)) / p(txn, .5):.2f} |")
    for name, samples in floor.samples.items():
        rate = f"{statistics.median(floor.rates[name]):.0f}" if name in floor.rates else ""
        lines.append(f"| {name} | | {p(samples, .5) * 1e3:.1f} / {p(samples, .99) * 1e3:.1f}"
                     f" | | | {rate} | | |")
    return "\n".join(lines)


def failover_table(runs: list[FailoverRun]) -> str:
    lines = ["| run | kill -9 → a new leader listens (s) | failover: kill -9 → first change"
             " acknowledged (s) | writer's longest stall (s) | writes+fsyncs acknowledged |",
             "|---:|---:|---:|---:|---:|"]
    for index, run in enumerate(runs, 1):
        lines.append(f"| {index} | {run.listening_s:.2f} | {run.failover_s:.2f} |"
                     f" {run.stall_s:.2f} | {run.writes} |")
    for name, pick in (("median", statistics.median), ("max", max)):
        lines.append(f"| {name} | {pick(r.listening_s for r in runs):.2f} |"
                     f" {pick(r.failover_s for r in runs):.2f} |"
                     f" {pick(r.stall_s for r in runs):.2f} | |")
    return "\n".join(lines)


async def bench(args: argparse.Namespace, embedded: System, ha: System) -> None:
    etcd = etcd_endpoints(ha.directory)[0]
    floor = EtcdFloor()
    await wait_settled(ha)
    for round_index in range(args.rounds):
        order = [embedded, ha, None]
        order = order[round_index % 3:] + order[:round_index % 3]
        for system in order:
            if system is None:
                await measure_etcd(etcd, round_index, args.ops, args.inflight, floor)
            else:
                await measure_system(system, round_index, args.ops, args.inflight)
        print(f"cost round {round_index + 1} of {args.rounds} done", flush=True)
    print("\nWhat HA costs (client library; latency one at a time, throughput"
          f" {args.inflight} at once; {args.rounds} interleaved rounds of {args.ops}):\n")
    print(cost_table(embedded, ha, floor), flush=True)
    runs = []
    for run in range(args.runs):
        await wait_settled(ha)
        runs.append(await failover_run(ha, run))
        print(f"failover run {run + 1}: {runs[-1]}", flush=True)
    print(f"\nFailover (kill -9 of the leader; {HA_MASTERS} masters, etcd x3,"
          f" {CHUNKSERVERS} chunkservers; writer: {WRITER_BLOCK_BYTES // 1024} KiB"
          " write+fsync loop through the client library):\n")
    print(failover_table(runs), flush=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dir", type=Path, default=Path(tempfile.gettempdir())
                        / "vmstore-failover-bench")
    parser.add_argument("--runs", type=int, default=5, help="failovers (default 5)")
    parser.add_argument("--ops", type=int, default=100, help="changes per kind per round")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved cost rounds")
    parser.add_argument("--inflight", type=int, default=16, help="for throughput")
    args = parser.parse_args()
    if shutil.which("etcd") is None:
        print("etcd is not installed (Debian: etcd-server; deploy/install-deps.sh)")
        return 1
    args.dir.mkdir(parents=True, exist_ok=True)
    embedded = ha = None
    try:
        embedded = start(args.dir / "embedded", masters=1)
        ha = start(args.dir / "ha", masters=HA_MASTERS)
        trio.run(bench, args, embedded, ha)
    finally:
        for system in (embedded, ha):
            if system is not None:
                local_down(system.directory)
    return 0


if __name__ == "__main__":
    sys.exit(main())
