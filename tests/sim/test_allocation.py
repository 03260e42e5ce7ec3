"""A write chain never leaves out a holder at the current version.

The master allocates a chunk on the servers that confirm its creation. One
of them may die before the chain is handed out; a chain of the live ones at
the same version then takes every write, and the dead one comes back with
an empty replica that still looks current: re-replication copied it over
the written one (found by the model check, issue 17).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import trio

from vmstore.dfs.errors import DfsError
from vmstore.dfs.master.chunk_manager import ChunkManager
from vmstore.dfs.protocol import messages as m
from vmstore.dfs.testing.cluster import open_cluster
from vmstore.dfs.types import ServerId

DATA = b"\x5a" * 100_000


async def test_a_holder_that_dies_after_its_create_does_not_stay_current(
        tmp_path: Path, sim_seed: int, sim_clock: trio.abc.Clock, monkeypatch,
        expected_logs) -> None:  # type: ignore[no-untyped-def]
    expected_logs.allow("vmstore", ".")
    async with open_cluster(tmp_path, seed=sim_seed) as cluster:
        victims: list[str] = []
        command_all = ChunkManager._command_all

        async def create_then_die(self: ChunkManager, servers: list[ServerId],
                                  make: Callable[[ServerId], m.Request],
                                  refusals: dict[ServerId, DfsError] | None = None,
                                  ) -> list[ServerId]:
            confirmed = await command_all(self, servers, make, refusals)
            if confirmed and not victims and isinstance(make(confirmed[0]),
                                                        m.MasterToChunkserverCreateChunk):
                # Confirmed, then gone before the master hands out the chain.
                victims.append(self.registry.chunkservers[confirmed[0]].host_label)
                await cluster.kill(victims[0])
            return confirmed

        monkeypatch.setattr(ChunkManager, "_command_all", create_then_die)
        async with cluster.client("client1") as client:
            inode = await cluster.stored_file(client, "/a.img", DATA)
            (victim,) = victims
            await cluster.restart(victim)
            with trio.fail_after(300):  # healed: every chunk at its goal again
                while (chunks := (await client.status()).chunks).ok != chunks.total:
                    await trio.sleep(1)
            (location,) = await client.chunk_locations(inode, 0, 1)
            for replica in location.replicas:  # every current replica holds the data
                store = cluster.stores[replica.host_label]
                data, zeros = store.read(location.chunk_id, location.version, 0, len(DATA))
                assert not zeros and data == DATA, f"{replica.host_label} is current and empty"
