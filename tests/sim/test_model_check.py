"""A randomized model check: a seeded workload on an in-process cluster under random
faults, compared with a plain in-memory model of the files after every step.

What must hold, whatever the faults (DESIGN.md's promises, as long as one
replica of every chunk survives, which the fault schedule keeps true: at
most one chunkserver is sick at a time, and it is made well, or replaced,
and the cluster healed before another falls sick):

* every write returns without error, and reads back at once (a client
  reads its own writes, queued or acknowledged);
* after ``fsync`` the master knows the file's size;
* a second client, opening every file after the first closed it, reads
  exactly the model (close-to-open);
* no chunk is lost, and the cluster heals to its goal.

Faults: a chunkserver killed (during a write, at a random virtual moment),
restarted, or replaced with an empty disk; its disk failing writes or
flushes with EIO; a bit flipped in one of its replicas; the master killed and
restarted under the workload; a network that delays and retransmits.

Which faults are drawn: ``VMSTORE_SIM_FAULTS`` (see FAULTS).
Seeds: ``VMSTORE_SIM_SEED`` (the first seed; random by default) and
``VMSTORE_SIM_SEEDS`` (how many runs; 200 by default, thousands for a soak),
``VMSTORE_SIM_STEPS`` (steps per run). A failing run prints its seed.
"""

from __future__ import annotations

import logging
import os
import random
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import trio

from tests.sim_seed import seed_from_environment
from vmstore.dfs.client.client import Client
from vmstore.dfs.constants import CHUNK_SIZE_BYTES
from vmstore.dfs.testing.cluster import MASTER, SimCluster, open_cluster
from vmstore.dfs.testing.model import FileModel, first_difference
from vmstore.dfs.testing.simnet import NetworkFaults

FIRST_SEED = seed_from_environment()
RUNS = int(os.environ.get("VMSTORE_SIM_SEEDS", "200"))
STEPS = int(os.environ.get("VMSTORE_SIM_STEPS", "60"))
# Which faults a run draws: "network" (delays, retransmits), "kills" (also
# chunkservers killed during writes, and restarted; the CI default), "chaos" (also
# disk EIO, bit flips, disk replacement, master restarts). Every failure they found
# is fixed, with its own deterministic test beside this file. The last two open
# ones (session 8: kills seed 3485262624, chaos seed 2851135364) were this harness
# breaking its own rule of one fault at a time (see _make_well and _seen_down).
# After that kills passed 300 of 300 seeds; chaos 497 of 498 (one teardown error
# that its seed did not repeat; the worker threads make replays likely, not certain).
# CI runs kills: a chaos failure that rare would still fail one CI run in three.
FAULTS = os.environ.get("VMSTORE_SIM_FAULTS", "kills")
assert FAULTS in ("network", "kills", "chaos"), FAULTS
KILLS = FAULTS in ("kills", "chaos")
CHAOS = FAULTS == "chaos"
FILES = 3
HEAL_TIMEOUT_S = 600.0  # virtual
# A write lands near the start of a file, or across the first chunk boundary.
NEAR_S = 256 * 1024
_FILE_STEPS = ("write", "truncate", "fsync", "reopen")


@dataclass
class Run:
    cluster: SimCluster
    client: Client
    draw: random.Random
    models: dict[int, FileModel] = field(default_factory=dict)
    sick: str | None = None  # the one chunkserver allowed to be unwell
    # Set once a kill drawn "during a write" has happened: the write may end
    # before the kill's moment comes, and the victim must not be made well (and
    # so left dead, for a second fault to join it) before it was even killed.
    killed: trio.Event | None = None
    log: list[str] = field(default_factory=list)

    def note(self, text: str) -> None:
        self.log.append(text)

    def history(self, inode: int) -> str:
        """The steps that touched ``inode`` and every fault, for a failure message."""
        mine = [step for step in self.log
                if f" {inode} " in f"{step} " or step.split()[0] not in _FILE_STEPS]
        return "; ".join(mine[-40:])


def _offset(draw: random.Random) -> int:
    if draw.random() < 0.15:
        return CHUNK_SIZE_BYTES - draw.randrange(1, 64 * 1024)
    return draw.randrange(0, NEAR_S)


async def _check_range(run: Run, inode: int, offset: int, length: int) -> None:
    model = run.models[inode]
    got = await run.client.read(inode, offset, length, model.size_bytes)
    want = model.read(offset, length)
    if got != want:
        where = await _replicas_report(run, inode, offset)
        raise AssertionError(f"inode {inode} [{offset}, +{length}):"
                             f" {first_difference(want, got)}; replicas: {where};"
                             f" steps: {run.history(inode)}")


async def _replicas_report(run: Run, inode: int, offset: int) -> str:
    """What the master lists for the chunk at ``offset`` and what each disk holds there."""
    index, inner = divmod(offset, CHUNK_SIZE_BYTES)
    try:
        (location,) = await run.client.chunk_locations(inode, index, 1)
    except ValueError:
        return "no chunk"
    listed = [(r.host_label, location.version) for r in location.replicas]
    held = []
    for name, store in run.cluster.stores.items():
        for chunk_id, version in store.list_chunks():
            if chunk_id == location.chunk_id:
                try:
                    data, _ = store.read(chunk_id, version, inner - inner % 4096, 4096)
                    byte = data[inner % 4096] if data else 0
                except Exception as error:  # noqa: BLE001 (a report, not a check)
                    byte = repr(error)
                held.append((name, version, byte))
    return f"chunk {location.chunk_id} listed {listed}, on disk {held}"


async def _write(run: Run, inode: int) -> None:
    offset, length = _offset(run.draw), run.draw.choice([1, 512, 4096, 65536, 200_000])
    payload = run.draw.randbytes(length)
    wait = run.draw.random() < 0.7
    run.note(f"write {inode} {offset}+{length} wait={wait}")
    await run.client.write(inode, offset, payload, wait=wait)
    run.models[inode].write(offset, payload)
    await _check_range(run, inode, offset, length)


async def _truncate(run: Run, inode: int) -> None:
    size = run.draw.choice([0, run.draw.randrange(0, NEAR_S),
                            run.models[inode].size_bytes // 2])
    run.note(f"truncate {inode} {size}")
    await run.client.setattr(inode, size_bytes=size)
    run.models[inode].truncate(size)


async def _fsync(run: Run, inode: int) -> None:
    run.note(f"fsync {inode}")
    await run.client.fsync(inode)
    attrs = await run.client.getattr(inode)
    assert attrs.size_bytes == run.models[inode].size_bytes, (
        f"inode {inode} is {attrs.size_bytes} bytes on the master after fsync,"
        f" {run.models[inode].size_bytes} in the model; steps: {run.history(inode)}")


async def _reopen(run: Run, inode: int) -> None:
    run.note(f"reopen {inode}")
    await run.client.closed(inode, writable=True)
    await run.client.opened(inode, writable=True)


async def _kill_during_write(run: Run, inode: int, nursery: trio.Nursery) -> None:
    if run.sick is not None:
        return await _write(run, inode)
    await _healed(run)
    victim = run.draw.choice(run.cluster.chunkserver_names)
    run.sick = victim
    delay_s = run.draw.uniform(0, 0.002)
    run.note(f"kill {victim} after {delay_s:.4f} s, during a write")
    killed = run.killed = trio.Event()

    async def kill_later() -> None:
        await trio.sleep(delay_s)
        await run.cluster.kill(victim)
        killed.set()

    nursery.start_soon(kill_later)
    await _write(run, inode)


async def _sicken_disk(run: Run) -> None:
    if run.sick is not None:
        return
    await _healed(run)
    victim = run.draw.choice(run.cluster.chunkserver_names)
    operation = run.draw.choice(["write", "flush"])
    run.sick = victim
    run.note(f"{victim}: {operation} fails with EIO")
    run.cluster.stores[victim].fail(operation, rate=0.5)


async def _flip(run: Run) -> None:
    if run.sick is not None:
        return
    await _healed(run)
    victim = run.draw.choice(run.cluster.chunkserver_names)
    store = run.cluster.stores[victim]
    chunks = store.list_chunks()
    if not chunks:
        return
    chunk_id, _ = run.draw.choice(chunks)
    offset = run.draw.randrange(0, NEAR_S)
    run.sick = victim
    run.note(f"{victim}: bit flipped in chunk {chunk_id} at {offset}")
    store.flip_bit(chunk_id, offset)


async def _restart_master(run: Run) -> None:
    run.note("master restarts")
    await run.cluster.restart(MASTER)


async def _make_well(run: Run) -> None:
    """The sick chunkserver is made well (its disk replaced if it rotted), and the
    cluster heals to its goal before anyone else may fall sick."""
    if run.sick is None:
        return
    if run.killed is not None:
        await run.killed.wait()
        run.killed = None
    victim, run.sick = run.sick, None
    run.note(f"{victim} made well")
    store = run.cluster.stores[victim]
    store.heal()
    if not run.cluster.running(victim):
        await run.cluster.restart(victim)
    # Healed before the disk is replaced: every chunk has its goal of replicas
    # again (copies to a sick disk failed until now), so the new disk loses none.
    await _settled(run)
    if store.faults_injected:
        await run.cluster.kill(victim)
        await _seen_down(run, victim)
        run.cluster.wipe(victim)  # a new disk: what it held is rebuilt from the others
        await run.cluster.restart(victim)
        await _settled(run)


async def _seen_down(run: Run, victim: str) -> None:
    """The master has noticed that ``victim`` is gone. Until it reads the end of the
    victim's link (the network may hold it back), it counts the victim's replicas
    and may even place new ones there, so "healed" would be a stale answer."""
    with trio.move_on_after(HEAL_TIMEOUT_S):
        while any(server.host == victim and server.state == "up"
                  for server in (await run.client.status()).chunkservers):
            await trio.sleep(0.1)
        return
    raise AssertionError(f"the master still lists {victim} up {HEAL_TIMEOUT_S} s after"
                         f" it was killed; steps: {run.log[-12:]}")


async def _settled(run: Run) -> None:
    """The last fault has played out: every queued write is on its chain (a write
    that failed at the sick server while it was sick drops it from that chain
    when it is retried, perhaps after it came back), and every chunk is at its
    goal again. Only then may another server fall sick: goal 2 promises to
    survive one fault at a time, not a second one inside the first's repair."""
    for inode in run.models:
        await _fsync(run, inode)
    await _healed(run)


async def _healed(run: Run) -> None:
    """Every chunk back at its goal. (Right after a master restart chunks count as
    lost until their chunkservers register again: only a loss that stays fails.)"""
    chunks = None
    with trio.move_on_after(HEAL_TIMEOUT_S):
        while True:
            chunks = (await run.client.status()).chunks
            if chunks.ok == chunks.total:
                return
            await trio.sleep(1)
    raise AssertionError(f"not healed after {HEAL_TIMEOUT_S} s: {chunks};"
                         f" steps: {run.log[-12:]}")


async def _step(run: Run, nursery: trio.Nursery) -> None:
    inode = run.draw.choice(list(run.models))
    roll = run.draw.random()
    if roll < 0.40:
        await _write(run, inode)
    elif roll < 0.48:
        await _truncate(run, inode)
    elif roll < 0.60:
        await _fsync(run, inode)
    elif roll < 0.72:
        model = run.models[inode]
        offset = run.draw.randrange(0, max(1, model.size_bytes))
        await _check_range(run, inode, offset, run.draw.randrange(1, 300_000))
    elif roll < 0.77:
        await _reopen(run, inode)
    elif roll < 0.82 and KILLS:
        await _kill_during_write(run, inode, nursery)
    elif roll >= 0.91:
        await _make_well(run)
    elif not CHAOS:
        await _write(run, inode)
    elif roll < 0.86:
        await _sicken_disk(run)
    elif roll < 0.89:
        await _flip(run)
    else:
        await _restart_master(run)


async def _run(root: Path, seed: int) -> None:
    faults = NetworkFaults(latency_s=0.0001, jitter_s=0.001, loss=0.01, retransmit_s=0.2)
    async with open_cluster(root, seed=seed, network_faults=faults) as cluster:
        draw = random.Random(seed)
        async with cluster.client("client1") as client, trio.open_nursery() as nursery:
            run = Run(cluster, client, draw)
            for index in range(FILES):
                attrs = await client.create_file(f"/f{index}.img")
                await client.opened(attrs.inode, writable=True)
                run.models[attrs.inode] = FileModel()
            for _ in range(STEPS):
                await _step(run, nursery)
            await _make_well(run)
            for inode in run.models:
                await _fsync(run, inode)
                await client.closed(inode, writable=True)
        async with cluster.client("client2") as reader:
            for inode, model in run.models.items():
                attrs = await reader.getattr(inode)
                assert attrs.size_bytes == model.size_bytes, f"inode {inode}: size"
                got = await reader.read(inode, 0, model.size_bytes, attrs.size_bytes)
                assert got == bytes(model.data), (
                    f"inode {inode} read by another client: {first_difference(model.data, got)};"
                    f" steps: {run.history(inode)}")


@pytest.mark.parametrize("run_index", range(RUNS))
async def test_model_check(run_index: int, tmp_path: Path, sim_clock: trio.abc.Clock,
                           expected_logs, request: pytest.FixtureRequest) -> None:  # type: ignore[no-untyped-def]
    seed = FIRST_SEED + run_index
    request.node.funcargs["sim_seed"] = seed  # printed on failure (tests/sim/conftest.py)
    # Faults are the point here: nodes and replicas come and go, loudly. Errors
    # (a broken invariant, a lost chunk) still fail the run.
    expected_logs.allow("vmstore", ".")
    # A flipped bit is found by a read or the scrub, which say so loudly.
    expected_logs.allow("vmstore.dfs.chunkserver",
                        "bad blocks|damaged|checksum|data where the table says zeros",
                        level=logging.ERROR)
    # Injected EIOs on the sick node's disk: its disk watch calls the disk failing
    # (issue 16), and the master, told so, copies its replicas away.
    expected_logs.allow("vmstore.dfs.chunkserver.disk_watch", "disk failing",
                        level=logging.ERROR)
    expected_logs.allow("vmstore.dfs.master.chunkserver_service", "disk failing",
                        level=logging.ERROR)
    await _run(tmp_path, seed)
