"""An in-process cluster: a master, N chunkservers and clients in one trio run.

Promise: ``SimCluster`` runs the very services the daemons run
(``run_master``, ``run_chunkserver``, ``open_client``) with real SQLite and
real replica files under one directory, each node a host of one
``SimNetwork``, so a test can crash, restart, partition or silence any of
them, and lay disk faults on any chunkserver (``FaultyChunkStore``), and
see what the whole system does, in seconds. Everything random (the
network's delays and losses, the master's placement, the disks' random
faults) is drawn from the one seed the cluster is given.

    async with open_cluster(tmp_path, seed=7, chunkservers=3) as cluster:
        async with cluster.client("client1") as client:
            ...
        await cluster.kill("cs2")

Nodes are named ``master``, ``cs1``..``csN`` and whatever the test names its
clients; each is its own host (its own failure domain, ``host_label``).

What is not deterministic, and why: SQLite commits and big replica I/O run
in worker threads (as in the daemons), and trio's scheduler interleaves
their completions with the network's timers by the real clock. A seed
therefore replays the same faults and workload, and usually the same
interleaving, not always; run it again and again (``VMSTORE_SIM_SEEDS``).
Signed capabilities expire by the wall clock (every host checks them on its
own clock), so under a ``MockClock`` they never expire in virtual time.
"""

from __future__ import annotations

import logging
import math
import random
import shutil
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import trio
import trio.testing

from vmstore.dfs.chunkserver.main import ChunkserverSettings, run_chunkserver
from vmstore.dfs.client.client import Client, open_client
from vmstore.dfs.client.master_client import ClientIdentity
from vmstore.dfs.master.main import MasterSettings, run_master
from vmstore.dfs.protocol import network
from vmstore.dfs.testing.faulty_store import FaultyChunkStore
from vmstore.dfs.testing.simnet import NetworkFaults, SimNetwork

log = logging.getLogger(__name__)
MASTER = "master"
# While a worker thread runs, look again for idleness this often (real time).
_THREAD_POLL_S = 0.0005


def sim_clock() -> trio.testing.MockClock:
    """Virtual time for in-process clusters: it stands still until ``open_cluster``
    moves it (``_advance_virtual_time``), never while a worker thread runs."""
    return trio.testing.MockClock()


async def _advance_virtual_time(clock: trio.testing.MockClock) -> None:
    """MockClock's autojump, without its blind spot for threads.

    SQLite commits and big replica I/O run in worker threads, and trio counts
    a task that waits for a thread as blocked. MockClock's autojump then leaps
    from timer to timer while a 5 ms commit runs, past every RPC deadline, and
    a healthy master looks silent for 30 s (the model check's first "bug").
    Here time leaps to the next deadline only when every task is blocked and
    no thread of trio's default limiter (which every ``to_thread`` call of
    vmstore uses) is running.
    """
    threads = trio.to_thread.current_default_thread_limiter()
    while True:
        await trio.testing.wait_all_tasks_blocked(
            _THREAD_POLL_S if threads.borrowed_tokens else 0.0)
        if threads.borrowed_tokens:
            continue
        jump_s = trio.lowlevel.current_statistics().seconds_to_next_deadline
        if 0 < jump_s < math.inf:
            clock.jump(jump_s)


@dataclass
class _Node:
    name: str
    service: Callable[..., Awaitable[None]]
    settings: Any
    scope: trio.CancelScope | None = None
    stopped: trio.Event = field(default_factory=trio.Event)
    port: int = 0

    @property
    def running(self) -> bool:
        return self.scope is not None and not self.stopped.is_set()


class SimCluster:
    """See the module docstring. Made by ``open_cluster``."""

    def __init__(self, nursery: trio.Nursery, root: Path, seed: int,
                 network_faults: NetworkFaults | None,
                 capacity_bytes: int | None = None) -> None:
        self._nursery = nursery
        self.root = root
        self.seed = seed
        self.random = random.Random(seed)
        self.network = SimNetwork(self.random.getrandbits(64), network_faults)
        self.key = self.random.randbytes(32)
        self.stores: dict[str, FaultyChunkStore] = {}
        # Each chunkserver's store uses at most this much of its disk (None: all of it).
        self.capacity_bytes = capacity_bytes
        self._nodes: dict[str, _Node] = {}
        self.master_port = 0

    # --- nodes ------------------------------------------------------------------
    async def start_master(self, **overrides: Any) -> None:
        node = self._nodes.get(MASTER)
        if node is None:
            settings = MasterSettings(
                data_dir=self.root / MASTER, listen_host=MASTER, port=0, key=self.key,
                seed=self.random.getrandbits(32), replication_delay_s=0.5,
                startup_grace_s=2.0, new_cluster=True)
            node = self._nodes[MASTER] = _Node(MASTER, run_master, settings)
        node.settings = replace(node.settings, **overrides)
        await self._start(node)
        if not node.settings.port:
            node.settings = replace(node.settings, port=node.port)
        self.master_port = node.port

    async def start_chunkserver(self, name: str) -> None:
        node = self._nodes.get(name)
        if node is None:
            seed = self.random.getrandbits(32)

            def store(data_dir: Path) -> FaultyChunkStore:
                self.stores[name] = FaultyChunkStore(data_dir, seed=seed,
                                                     capacity_bytes=self.capacity_bytes)
                return self.stores[name]

            settings = ChunkserverSettings(
                data_dir=self.root / name, listen_host=name, port=0, master_host=MASTER,
                master_port=self.master_port, key=self.key, host_label=name,
                local_reads=False, store_factory=store)
            node = self._nodes[name] = _Node(name, run_chunkserver, settings)
        await self._start(node)
        if not node.settings.port:
            node.settings = replace(node.settings, port=node.port)

    async def kill(self, name: str) -> None:
        """Stop the node at once, and end its connections as a ``kill -9`` does."""
        node = self._nodes[name]
        assert node.scope is not None, f"{name} was never started"
        node.scope.cancel()
        self.network.crash(name)
        await node.stopped.wait()

    async def restart(self, name: str) -> None:
        if self._nodes[name].running:
            await self.kill(name)
        if name == MASTER:
            await self.start_master()
        else:
            await self.start_chunkserver(name)

    def wipe(self, name: str) -> None:
        """Lose the node's disk (it must be stopped)."""
        assert not self._nodes[name].running
        shutil.rmtree(self.root / name)

    async def _start(self, node: _Node) -> None:
        assert not node.running, f"{node.name} is running"
        node.stopped = trio.Event()
        node.port = await self._nursery.start(self._run, node)

    async def _run(self, node: _Node, *, task_status: Any) -> None:
        try:
            with network.using(self.network.host(node.name)), trio.CancelScope() as scope:
                node.scope = scope
                await node.service(node.settings, task_status=task_status)
                await trio.sleep_forever()  # a service that returned (none does) waits too
        finally:
            node.stopped.set()

    # --- clients ----------------------------------------------------------------
    @asynccontextmanager
    async def client(self, name: str, *, reconnect_timeout_s: float = 60.0
                     ) -> AsyncIterator[Client]:
        """A client library on host ``name`` for the block's duration."""
        identity = ClientIdentity(host_label=name, hostname=name, mount_point=f"/sim/{name}")
        with network.using(self.network.host(name)):
            async with open_client(MASTER, self.master_port, self.key, identity,
                                   reconnect_timeout_s=reconnect_timeout_s,
                                   short_circuit_reads=False) as client:
                yield client

    @staticmethod
    async def stored_file(client: Client, path: str, data: bytes) -> int:
        """A new file holding ``data``, durable on its replicas; its inode."""
        inode = (await client.create_file(path)).inode
        await client.write(inode, 0, data)
        await client.fsync(inode)
        return inode

    @staticmethod
    async def holders(client: Client, inode: int, index: int = 0) -> list[str]:
        """The nodes holding current replicas of chunk ``index`` of a file, chain order."""
        (location,) = await client.chunk_locations(inode, index, 1)
        return [replica.host_label for replica in location.replicas]

    def running(self, name: str) -> bool:
        return self._nodes[name].running

    @property
    def chunkserver_names(self) -> list[str]:
        return [name for name in self._nodes if name != MASTER]


@asynccontextmanager
async def open_cluster(root: Path, *, seed: int, chunkservers: int = 3,
                       network_faults: NetworkFaults | None = None,
                       capacity_bytes: int | None = None) -> AsyncIterator[SimCluster]:
    """A running cluster under ``root`` for the block's duration; every node stops after.
    ``capacity_bytes``: each chunkserver's disk holds that much (small disks)."""
    async with trio.open_nursery() as nursery:
        clock = trio.lowlevel.current_clock()
        if isinstance(clock, trio.testing.MockClock) and clock.autojump_threshold == math.inf:
            nursery.start_soon(_advance_virtual_time, clock)
        cluster = SimCluster(nursery, root, seed, network_faults, capacity_bytes)
        await cluster.start_master()
        for index in range(1, chunkservers + 1):
            await cluster.start_chunkserver(f"cs{index}")
        try:
            yield cluster
        finally:
            nursery.cancel_scope.cancel()
