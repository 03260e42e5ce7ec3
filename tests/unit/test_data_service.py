"""The chunkserver's DataService against a real ChunkStore, with no network."""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import trio
import trio.testing

from vmstore.dfs.chunkserver.chunk_store import ChunkStore
from vmstore.dfs.chunkserver.data_service import INLINE_DISK_BYTES_MAX, DataService
from vmstore.dfs.chunkserver.identity import ServerIdentity
from vmstore.dfs.chunkserver.write_fence import WriteFence
from vmstore.dfs.protocol import messages as m
from vmstore.dfs.protocol.capability import WRITE, VerifiedCapabilities, capability_key, sign
from vmstore.dfs.protocol.rpc import ConnectionPool

KEY = os.urandom(32)
CHUNK = 0x33
# How long the thread holding a replica waits for the event loop to let it go.
# Only a broken run waits it out; a passing one is done in milliseconds.
LOOP_STALL_GUARD_S = 10.0


@pytest.fixture
def store(tmp_path: Path) -> Iterator[ChunkStore]:
    with ChunkStore(tmp_path / "data") as chunk_store:
        yield chunk_store


def flush_request(version: int) -> m.ToChunkserverFlushChunk:
    capability = sign(capability_key(KEY), operation=WRITE, chunk_id=CHUNK, session_id=1,
                      issued_ns=time.time_ns(), life_ns=60 * 10**9)
    return m.ToChunkserverFlushChunk(chunk_id=CHUNK, version=version, chain_rest=[],
                                     capability=capability)


async def test_a_flush_waits_for_the_disk_without_stalling_the_event_loop(
        store: ChunkStore) -> None:
    """A big write in the worker thread holds the replica's lock; a flush that
    arrives meanwhile must wait for it asynchronously, not block the loop on it."""
    store.create(CHUNK, 1)
    held, release = threading.Event(), threading.Event()
    stalled: list[bool] = []

    def big_write_in_progress() -> None:
        with store._cache.use(CHUNK):  # as ChunkStore.write holds it
            held.set()
            # Only the event loop sets release: if it is blocked, this times out.
            stalled.append(not release.wait(LOOP_STALL_GUARD_S))

    async with trio.open_nursery() as nursery:
        peers = ConnectionPool(nursery, KEY, "chunkserver", compress=False)
        data = DataService(store, peers, WriteFence(VerifiedCapabilities(KEY)),
                           ServerIdentity(1), lambda *_: None)
        nursery.start_soon(data.disk, INLINE_DISK_BYTES_MAX + 1, big_write_in_progress)
        await trio.to_thread.run_sync(held.wait)
        flushed = trio.Event()

        async def flush() -> None:
            assert await data.flush(flush_request(1)) == m.EmptyReply()
            flushed.set()

        nursery.start_soon(flush)
        await trio.testing.wait_all_tasks_blocked()
        assert not stalled, "the flush blocked the event loop on the replica's lock"
        assert not flushed.is_set()  # it waits behind the write
        release.set()
        await flushed.wait()
        nursery.cancel_scope.cancel()
    assert stalled == [False]
