"""Self-healing with real daemons: lost servers, rotten bytes, stale returns, goal changes.

The cluster here rebuilds after 2 s (not 30) and scrubs fast, so that the
tests wait seconds; the waits have generous limits and no timing is asserted.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import pytest
import trio

from tests.system.conftest import Cluster, vmstore_command
from vmstore.dfs.client.client import Client
from vmstore.dfs.client.zero_ranges import join_zero_ranges
from vmstore.dfs.constants import CHUNK_SIZE_BYTES
from vmstore.dfs.protocol import messages as m

pytestmark = pytest.mark.system
HEAL_TIMEOUT_S = 120.0


async def write_file(client: Client, path: str, chunks: int) -> tuple[int, bytes]:
    """A file with data in each of ``chunks`` chunks; returns (inode, its bytes)."""
    attrs = await client.create_file(path)
    data = bytearray()
    for index in range(chunks):
        piece = os.urandom(3 * 2**20)
        await client.write(attrs.inode, index * CHUNK_SIZE_BYTES, piece)
        data += piece
    await client.fsync(attrs.inode)
    return attrs.inode, bytes(data)


async def read_back(client: Client, inode: int, chunks: int) -> bytes:
    size = (await client.getattr(inode)).size_bytes
    parts = [await client.read(inode, index * CHUNK_SIZE_BYTES, 3 * 2**20, size)
             for index in range(chunks)]
    return b"".join(parts)


async def wait_until_healthy(client: Client, inode: int, chunks: int, goal: int) -> None:
    with trio.fail_after(HEAL_TIMEOUT_S):
        while True:
            locations = await client.chunk_locations(inode, 0, chunks)
            if len(locations) == chunks and all(
                    len({r.host_label for r in location.replicas}) == goal
                    and len(location.replicas) == goal for location in locations):
                status = await client.status()
                if status.chunks.ok == status.chunks.total:
                    return
            await trio.sleep(0.2)


def replica_files(cluster: Cluster, name: str) -> list[Path]:
    return sorted((cluster.directory / name / "chunks").rglob("*.chunk"))


async def test_lost_chunkserver_is_rebuilt_elsewhere(healing_cluster: Cluster) -> None:
    cluster = healing_cluster
    async with cluster.client() as client:
        inode, data = await write_file(client, "/rebuild.img", 4)
        await client.set_goal(inode, 2)
        await trio.to_thread.run_sync(cluster.kill, "chunkserver0")
        with trio.fail_after(30):
            while (await client.status()).chunks.undergoal + \
                    (await client.status()).chunks.endangered == 0:
                await trio.sleep(0.2)  # the master notices the loss
        await wait_until_healthy(client, inode, 4, goal=2)
        assert await read_back(client, inode, 4) == data
        for location in await client.chunk_locations(inode, 0, 4):
            assert all(r.host_label != "local0" for r in location.replicas)


async def test_rotten_bytes_are_never_returned_and_get_repaired(
        healing_cluster: Cluster, expected_logs) -> None:  # type: ignore[no-untyped-def]
    cluster = healing_cluster
    async with cluster.client() as client:
        inode, data = await write_file(client, "/rot.img", 2)
        locations = await client.chunk_locations(inode, 0, 2)
        # flip bytes inside the data of the first replica of every chunk
        for location in locations:
            victim = location.replicas[0]
            name = f"chunkserver{int(victim.host_label.removeprefix('local'))}"
            path = next(p for p in replica_files(cluster, name)
                        if int(p.stem, 16) == location.chunk_id)
            with open(path, "r+b") as replica:
                replica.seek(4096 + 65536 + 12345)
                original = replica.read(16)
                replica.seek(4096 + 65536 + 12345)
                replica.write(bytes(b ^ 0xFF for b in original))
        assert await read_back(client, inode, 2) == data  # served from the good copies
        await wait_until_healthy(client, inode, 2, goal=2)
        assert await read_back(client, inode, 2) == data
        for location in await client.chunk_locations(inode, 0, 2):
            assert location.version > 1  # the rebuilt set is a new version


async def test_scrub_finds_rot_nobody_reads(healing_cluster: Cluster) -> None:
    cluster = healing_cluster
    async with cluster.client() as client:
        inode, data = await write_file(client, "/scrub.img", 1)
        location = (await client.chunk_locations(inode, 0, 1))[0]
        victim = location.replicas[-1]
        name = f"chunkserver{int(victim.host_label.removeprefix('local'))}"
        path = next(p for p in replica_files(cluster, name)
                    if int(p.stem, 16) == location.chunk_id)
        with open(path, "r+b") as replica:
            replica.seek(4096 + 65536 + 2 * 2**20)
            replica.write(b"\x00rot\x00")
        with trio.fail_after(HEAL_TIMEOUT_S):
            while (await client.chunk_locations(inode, 0, 1))[0].version == location.version:
                await trio.sleep(0.2)  # the scrub reported it, the master moved on
        await wait_until_healthy(client, inode, 1, goal=2)
        assert await read_back(client, inode, 1) == data
        assert "bad blocks" in cluster.logs()[name]


async def test_returning_server_never_serves_its_stale_replicas(
        healing_cluster: Cluster) -> None:
    cluster = healing_cluster
    async with cluster.client() as client:
        inode, _ = await write_file(client, "/stale.img", 2)
        await client.set_goal(inode, 3)
        await wait_until_healthy(client, inode, 2, goal=3)
        await trio.to_thread.run_sync(cluster.kill, "chunkserver2")
        new_data = os.urandom(2**20)
        for index in range(2):  # writes while it is away: its replicas go stale
            await client.write(inode, index * CHUNK_SIZE_BYTES, new_data)
        await client.fsync(inode)
        await trio.to_thread.run_sync(cluster.restart, "chunkserver2")
        # back at goal 3, which needs chunkserver2 again: with rebuilt replicas
        await wait_until_healthy(client, inode, 2, goal=3)
        for location in await client.chunk_locations(inode, 0, 2):
            replica = next(r for r in location.replicas if r.host_label == "local2")
            connection = await client.io.chunkservers.get(replica.host, replica.port)
            reply, payload = await connection.call(m.ToChunkserverReadChunk(
                chunk_id=location.chunk_id, version=location.version, offset_bytes=0,
                length_bytes=2**20, capability=location.read_capability),
                reply_type=m.ReadChunkReply)
            assert join_zero_ranges(0, 2**20, reply.zero_ranges, payload) == new_data
    # Its stale replicas were counted out once, not twice: its heartbeats stay valid.
    assert "refused a request" not in cluster.logs()["master"]


async def test_goal_changes_both_ways(healing_cluster: Cluster) -> None:
    cluster = healing_cluster
    async with cluster.client() as client:
        inode, data = await write_file(client, "/goal.img", 3)
        await client.set_goal(inode, 3)
        await wait_until_healthy(client, inode, 3, goal=3)
        await client.set_goal(inode, 1)
        await wait_until_healthy(client, inode, 3, goal=1)
        total = sum(len(replica_files(cluster, n)) for n in cluster.chunkserver_names)
        with trio.fail_after(HEAL_TIMEOUT_S):
            while total != 3:  # surplus replica files really go from the disks
                await trio.sleep(0.2)
                total = sum(len(replica_files(cluster, n)) for n in cluster.chunkserver_names)
        assert hashlib.sha256(await read_back(client, inode, 3)).digest() == \
            hashlib.sha256(data).digest()


async def test_drain_while_a_writer_is_busy(healing_cluster: Cluster) -> None:
    cluster = healing_cluster
    async with cluster.client() as client:
        inode, data = await write_file(client, "/drain.img", 3)
        status = await client.status()
        drained = next(s.id for s in status.chunkservers if s.host == "local0")
        busy = await client.create_file("/busy.img")
        written: list[bytes] = []

        async def writer() -> None:
            for number in range(60):
                block = os.urandom(256 * 1024)
                await client.write(busy.inode, number * len(block), block)
                written.append(block)
                await trio.sleep(0.02)
            await client.fsync(busy.inode)

        async with trio.open_nursery() as nursery:
            nursery.start_soon(writer)
            result = await trio.to_thread.run_sync(lambda: vmstore_command(
                "chunkserver", "drain", str(drained), config=cluster.config_path))
            assert result.returncode == 0, result.stderr
            with trio.fail_after(HEAL_TIMEOUT_S):
                while True:
                    locations = await client.chunk_locations(inode, 0, 3)
                    locations += await client.chunk_locations(busy.inode, 0, 1)
                    if all(len(loc.replicas) == 2 and
                           all(r.server_id != drained for r in loc.replicas)
                           for loc in locations):
                        break
                    await trio.sleep(0.2)
        assert await read_back(client, inode, 3) == data
        size = (await client.getattr(busy.inode)).size_bytes
        assert await client.read(busy.inode, 0, size, size) == b"".join(written)
        status = await client.status()
        assert next(s for s in status.chunkservers if s.id == drained).draining
        assert status.chunks.ok == status.chunks.total
        with trio.fail_after(HEAL_TIMEOUT_S):  # its replica files really go
            while replica_files(cluster, "chunkserver0"):
                await trio.sleep(0.2)


async def test_fsck_names_lost_files(healing_cluster: Cluster) -> None:
    cluster = healing_cluster
    async with cluster.client(host_label="local0") as client:
        await client.makedirs("/vms/web")
        inode, _ = await write_file(client, "/vms/web/lonely.img", 1)
        await client.set_goal(inode, 1)
        await wait_until_healthy(client, inode, 1, goal=1)
        holder = (await client.chunk_locations(inode, 0, 1))[0].replicas[0].host_label
        name = f"chunkserver{int(holder.removeprefix('local'))}"
        clean = await trio.to_thread.run_sync(lambda: vmstore_command(
            "fsck", "--json", config=cluster.config_path))
        assert clean.returncode == 0, clean.stdout + clean.stderr
        await trio.to_thread.run_sync(cluster.kill, name)
        with trio.fail_after(30):
            while (await client.status()).chunks.lost == 0:
                await trio.sleep(0.2)
    result = await trio.to_thread.run_sync(lambda: vmstore_command(
        "fsck", "--json", config=cluster.config_path))
    assert result.returncode == 2
    report = json.loads(result.stdout)
    assert [(p["path"], p["state"]) for p in report["problems"]] == \
        [("/vms/web/lonely.img", "lost")]
    assert report["namespace_errors"] == []
    text = await trio.to_thread.run_sync(lambda: vmstore_command(
        "fsck", config=cluster.config_path))
    assert "LOST       /vms/web/lonely.img" in text.stdout


async def test_status_waits_for_the_rebuild_showing_its_progress(
        healing_cluster: Cluster) -> None:
    cluster = healing_cluster
    async with cluster.client() as client:
        inode, data = await write_file(client, "/watched.img", 3)
        await trio.to_thread.run_sync(cluster.kill, "chunkserver0")
        with trio.fail_after(30):
            while (await client.status()).chunks.ok == (await client.status()).chunks.total:
                await trio.sleep(0.2)  # the master notices the loss
        result = await trio.to_thread.run_sync(lambda: vmstore_command(
            "status", "--wait-healthy", config=cluster.config_path))
        assert result.returncode == 0, result.stdout + result.stderr
        assert "healing:" in result.stderr  # the progress, a plain line (not a terminal)
        assert ": healthy" in result.stdout
        assert await read_back(client, inode, 3) == data


async def test_drain_waits_until_the_server_holds_nothing(healing_cluster: Cluster) -> None:
    cluster = healing_cluster
    async with cluster.client() as client:
        await write_file(client, "/drained.img", 3)
        status = await client.status()
        drained = next(s.id for s in status.chunkservers if s.host == "local0")
        result = await trio.to_thread.run_sync(lambda: vmstore_command(
            "chunkserver", "drain", str(drained), "--wait", config=cluster.config_path))
        assert result.returncode == 0, result.stderr
        assert f"chunkserver {drained} is drained" in result.stdout
        assert "replicas left" in result.stderr, result.stdout  # the progress line
        status = await client.status()
        assert next(s for s in status.chunkservers if s.id == drained).replicas == 0
        assert status.chunks.ok == status.chunks.total
