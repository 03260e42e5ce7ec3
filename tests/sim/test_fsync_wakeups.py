"""Tasks a write+fsync costs the client (issue 20: fewer wake-ups per fsync).

Promise: a file fsynced lately has its writes sent synchronous, one batch
at a time (``write_behind``); such a batch is sent by the chunk's sender
task itself, not by a task of its own, in the task's first step (its slot is
taken without a scheduler round), and an fsync that has no size to tell the
master waits for the replicas in its own task. Each task spawned and each
round costs a wake-up on the fsync's path.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import trio

from vmstore.dfs.protocol import messages as m
from vmstore.dfs.protocol.connection import Connection
from vmstore.dfs.testing.cluster import open_cluster

BLOCK = b"\x5a" * 4096


class _Spawns(trio.abc.Instrument):
    def __init__(self) -> None:
        self.names: list[str] = []

    def task_spawned(self, task: trio.lowlevel.Task) -> None:
        self.names.append(task.name)


async def test_a_synchronous_write_and_fsync_spawn_no_batch_or_flush_task(
        tmp_path: Path, sim_seed: int, sim_clock: trio.abc.Clock) -> None:
    async with open_cluster(tmp_path, seed=sim_seed) as cluster:
        async with cluster.client("client1") as client:
            inode = await cluster.stored_file(client, "/a.img", BLOCK * 4)
            await client.fsync(inode)  # the file's writes go synchronous from now
            spawns = _Spawns()
            trio.lowlevel.add_instrument(spawns)
            try:
                for round_ in range(3):
                    await client.write(inode, round_ * len(BLOCK), BLOCK, wait=False)
                    await client.fsync(inode, datasync=True)
            finally:
                trio.lowlevel.remove_instrument(spawns)
            client_tasks = [name for name in spawns.names if ".client." in name]
            assert not [name for name in client_tasks
                        if name.endswith(("ChunkIO._send_batch", "ChunkIO.flush"))], client_tasks
            assert await client.read(inode, 0, len(BLOCK), len(BLOCK) * 4) == BLOCK


class _SenderSteps(trio.abc.Instrument):
    """Steps the chunks' sender tasks run until the first write request is sent."""

    def __init__(self) -> None:
        self.steps = 0
        self.sent = False

    def before_task_step(self, task: trio.lowlevel.Task) -> None:
        if task.name.endswith("ChunkIO._send_chunk") and not self.sent:
            self.steps += 1


async def test_a_synchronous_batch_is_sent_in_its_sender_tasks_first_step(
        tmp_path: Path, sim_seed: int, sim_clock: trio.abc.Clock,
        monkeypatch: pytest.MonkeyPatch) -> None:
    async with open_cluster(tmp_path, seed=sim_seed) as cluster:
        async with cluster.client("client1") as client:
            inode = await cluster.stored_file(client, "/a.img", BLOCK * 4)
            await client.fsync(inode)  # the file's writes go synchronous from now
            sender = _SenderSteps()
            send_request = Connection.send_request

            async def noting_the_send(self: Connection, request: m.Request,
                                      payload: bytes | memoryview = b"",
                                      **options: float) -> object:
                if isinstance(request, m.ToChunkserverWriteChunk):
                    sender.sent = True
                return await send_request(self, request, payload, **options)

            monkeypatch.setattr(Connection, "send_request", noting_the_send)
            trio.lowlevel.add_instrument(sender)
            try:
                await client.write(inode, 0, BLOCK, wait=False)
                await client.fsync(inode, datasync=True)
            finally:
                trio.lowlevel.remove_instrument(sender)
            assert sender.sent
            assert sender.steps == 1, f"{sender.steps} steps of the sender before its send"
