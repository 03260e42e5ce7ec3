"""The HA nemesis: seeded random faults against every process of an HA cluster,
under a workload whose every acknowledged effect is recorded, then checked.

Faults, one at a time, each healed before the next: kill -9 or SIGSTOP of the
leader, of a standby, of an etcd member, or of a chunkserver (a stopped etcd
member keeps the streams of the standbys watching through it open and silent).
Meanwhile a client creates files, overwrites them (each write
fsynced, each version recorded once acknowledged) and renames them.

The checker verifies:
* no acknowledged change is lost: every file acknowledged exists with the
  content of its last acknowledged write;
* no two masters acknowledged changes in overlapping epochs: in the journal,
  read back from etcd, epochs never go down with the sequence number, so each
  leader's entries come after every earlier leader's (a change is acknowledged
  only once its entry is in the journal);
* every read returns the last acknowledged write (checked after every
  acknowledged overwrite, and at the end).

``VMSTORE_NEMESIS_S`` sets how long faults are injected (default 60 s: the CI
form; a soak: 1800). ``VMSTORE_NEMESIS_SEED`` replays a run; a failing run prints
its seed.
"""

from __future__ import annotations

import os
import random
import signal
import time
from collections.abc import Callable
from functools import partial

import msgspec
import trio

from tests.system.test_metadata_ha import HaCluster, block, ha_cluster, require_etcd
from vmstore.cli.local_cluster import spawn
from vmstore.dfs.client.client import Client
from vmstore.dfs.master import etcd_client as etcd
from vmstore.dfs.master.etcd_client import EtcdClient
from vmstore.dfs.master.journal import JournalEntry, Keys
from vmstore.dfs.types import ROOT_INODE

__all__ = ["ha_cluster", "require_etcd"]  # the fixture, for pytest
NEMESIS_S = float(os.environ.get("VMSTORE_NEMESIS_S", "60"))
FILES = 6


class Workload:
    """Acknowledged effects: each file's last acknowledged content."""

    def __init__(self, draw: random.Random) -> None:
        self.draw = draw
        self.files: dict[str, bytes] = {}
        self.operations = 0

    async def run(self, client: Client, stop: trio.Event) -> None:
        serial = 0
        while not stop.is_set():
            serial += 1
            name = f"f{self.draw.randrange(FILES)}"
            data = (block(serial) * 2)[: self.draw.choice((4096, 65536, 100_000))]
            path = f"/{name}"
            if path not in self.files:
                inode = (await client.create_file(f"/new-{serial}")).inode
                await self._write(client, inode, data)
                await client.rename(ROOT_INODE, f"new-{serial}".encode(), ROOT_INODE,
                                    name.encode())
            else:
                inode = (await client.resolve(path)).inode
                await client.setattr(inode, size_bytes=0)
                await self._write(client, inode, data)
            self.files[path] = data
            self.operations += 1
            await self.check_one(client, path)

    @staticmethod
    async def _write(client: Client, inode: int, data: bytes) -> None:
        await client.opened(inode, writable=True)
        try:
            await client.write(inode, 0, data)
            await client.fsync(inode)
        finally:
            await client.closed(inode, writable=True)

    async def check_one(self, client: Client, path: str) -> None:
        attrs = await client.resolve(path)
        expected = self.files[path]
        assert attrs.size_bytes == len(expected), (path, attrs.size_bytes, len(expected))
        got = await client.read(attrs.inode, 0, len(expected), len(expected))
        assert got == expected, f"{path}: not the last acknowledged write"

    async def check_all(self, client: Client) -> None:
        for path in self.files:
            await self.check_one(client, path)


class Nemesis:
    def __init__(self, cluster: HaCluster, draw: random.Random) -> None:
        self.cluster = cluster
        self.draw = draw
        self.faults: list[str] = []

    def _faults(self) -> list[tuple[str, Callable[[], None]]]:
        leader = self.cluster.leader()
        standbys = [name for name in self.cluster.master_names if name != leader]
        chunkserver = self.draw.choice(self.cluster.chunkserver_names)
        member = f"etcd{self.draw.randrange(3)}"
        faults: list[tuple[str, Callable[[], None]]] = []
        for role, name in (("leader", leader), ("standby", standbys[0]),
                           ("etcd member", member), ("chunkserver", chunkserver)):
            faults.append((f"kill -9 {role} {name}", partial(self._kill_and_restart, name)))
            faults.append((f"SIGSTOP {role} {name}", partial(self._stop_and_continue, name)))
        return faults

    def _kill_and_restart(self, name: str) -> None:
        self.cluster.kill(name)
        time.sleep(self.draw.uniform(1.0, 4.0))
        if name.startswith("etcd"):
            spawn(self.cluster.directory, name)
        else:
            self.cluster.restart(name)

    def _stop_and_continue(self, name: str) -> None:
        pid = self.cluster.pid(name)
        os.kill(pid, signal.SIGSTOP)
        # A leader's: past its leadership, a standby takes over.
        time.sleep(self.draw.uniform(4.0, 8.0))
        os.kill(pid, signal.SIGCONT)

    def run(self, until_s: float) -> None:
        while time.monotonic() < until_s:
            time.sleep(self.draw.uniform(1.0, 3.0))
            what, fault = self.draw.choice(self._faults())
            self.faults.append(what)
            fault()


async def journal_epochs(cluster: HaCluster) -> list[tuple[int, int]]:
    """(seq, epoch) of every entry left in the journal."""
    endpoints = [f"http://{url}" for url in _etcd_client_urls(cluster)]
    client = EtcdClient(endpoints)
    try:
        keys = Keys(b"/vmstore/")
        values = await client.range(keys.journal, etcd.prefix_end(keys.journal))
    finally:
        await client.aclose()
    entries = [msgspec.msgpack.decode(kv.value, type=JournalEntry) for kv in values]
    return [(entry.seq, entry.epoch) for entry in entries]


def _etcd_client_urls(cluster: HaCluster) -> list[str]:
    arguments = (cluster.directory / "run" / "master0.args").read_text()
    urls = arguments.split('"--etcd", "')[1].split('"')[0]
    return [url.removeprefix("http://") for url in urls.split(",")]


def test_nemesis(ha_cluster: HaCluster, capsys) -> None:  # type: ignore[no-untyped-def]
    seed = int(os.environ.get("VMSTORE_NEMESIS_SEED", random.randrange(2**32)))
    with capsys.disabled():
        print(f"\nnemesis seed {seed} (replay: VMSTORE_NEMESIS_SEED={seed})")
    workload = Workload(random.Random(seed))
    nemesis = Nemesis(ha_cluster, random.Random(seed + 1))

    async def main() -> None:
        async with ha_cluster.ha_client() as client:
            stop = trio.Event()
            async with trio.open_nursery() as nursery:
                nursery.start_soon(workload.run, client, stop)
                await trio.to_thread.run_sync(nemesis.run, time.monotonic() + NEMESIS_S)
                stop.set()
            await workload.check_all(client)

    try:
        trio.run(main)
        epochs = trio.run(journal_epochs, ha_cluster)
    finally:
        with capsys.disabled():
            print(f"nemesis seed {seed}: {len(nemesis.faults)} faults"
                  f" ({'; '.join(nemesis.faults)}), {workload.operations} operations"
                  " acknowledged and checked")
    assert workload.operations > 0, "no operation was acknowledged"
    assert [seq for seq, _ in epochs] == list(range(epochs[0][0], epochs[0][0] + len(epochs)))
    assert all(a[1] <= b[1] for a, b in zip(epochs, epochs[1:], strict=False)), \
        f"a journal entry of an older epoch after a newer one: {epochs}"
