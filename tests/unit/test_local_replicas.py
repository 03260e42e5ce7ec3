"""Short-circuit reads over real replica files and a real chunkserver Unix socket.

The replica files are made by a real ChunkStore; the socket is served by a
real LocalReadService in this process (its abstract name is unique per
test); the client is a real LocalReplicas. What the verified read returns is
compared with what ChunkStore.read (the network path's source) returns.
"""

from __future__ import annotations

import itertools
import os
import socket
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest
import trio

from tests.unit.test_chunk_store import flip_bit
from vmstore.dfs.chunkserver.chunk_store import ChunkStore
from vmstore.dfs.chunkserver.data_service import DataService
from vmstore.dfs.chunkserver.identity import ServerIdentity
from vmstore.dfs.chunkserver.local_read_service import LocalReadService
from vmstore.dfs.chunkserver.write_fence import WriteFence
from vmstore.dfs.client import local_replicas
from vmstore.dfs.client.local_replicas import LocalReplicas, read_verified
from vmstore.dfs.client.zero_ranges import join_zero_ranges
from vmstore.dfs.constants import BLOCK_SIZE_BYTES, CHUNK_SIZE_BYTES, HEDGE_CEILING_S
from vmstore.dfs.errors import ChecksumMismatch, ChunkNotFound, ProtocolError, StaleChunkVersion
from vmstore.dfs.protocol import codec
from vmstore.dfs.protocol import messages as m
from vmstore.dfs.protocol.capability import READ, WRITE, VerifiedCapabilities, capability_key, sign
from vmstore.dfs.protocol.local_socket import (
    local_socket_name,
    new_socket,
    receive_frame,
    send_frame,
)
from vmstore.dfs.protocol.replica_format import DATA_OFFSET
from vmstore.dfs.protocol.rpc import ConnectionPool

KEY = os.urandom(32)
CHUNK = 0x51
BS = BLOCK_SIZE_BYTES
# Abstract socket names are shared by every process of the network namespace
# (other test runs included): this run's chunkservers get a host name of their own.
HOST = f"unit-test-{os.getpid()}-{os.urandom(4).hex()}"
_PORTS = itertools.count(1)


@pytest.fixture
def store(tmp_path: Path) -> Iterator[ChunkStore]:
    with ChunkStore(tmp_path / "data") as chunk_store:
        yield chunk_store


def replica_path(store: ChunkStore, chunk_id: int) -> Path:
    return store.data_dir / "chunks" / f"{chunk_id & 0xFF:02x}" / f"{chunk_id:016x}.chunk"


def network_read(store: ChunkStore, version: int, offset: int, length: int) -> bytes:
    payload, zero_ranges = store.read(CHUNK, version, offset, length)
    return join_zero_ranges(offset, length, zero_ranges, payload)


def local_read(store: ChunkStore, version: int, offset: int, length: int) -> bytes:
    fd = store.open_for_local_read(CHUNK, version)
    try:
        return read_verified(fd, CHUNK, version, offset, length)
    finally:
        os.close(fd)


# --- the verified read over real files ------------------------------------------------------
def test_data_holes_and_edges_read_as_the_store_reads_them(store: ChunkStore) -> None:
    store.create(CHUNK, 1)
    data = os.urandom(3 * BS + 100)
    store.write(CHUNK, 1, 5 * BS + 7, len(data), data, [])
    store.write(CHUNK, 1, 20 * BS, 2 * BS, b"", [(20 * BS, 2 * BS)])  # zeros: a hole
    store.write(CHUNK, 1, CHUNK_SIZE_BYTES - BS, BS, os.urandom(BS), [])
    ranges = [(0, BS), (5 * BS, 4 * BS), (5 * BS + 7, len(data)), (5 * BS + 9, 1),
              (0, 32 * BS), (19 * BS, 4 * BS), (CHUNK_SIZE_BYTES - 2 * BS, 2 * BS),
              (123, 0), (0, 1024 * 1024)]
    for offset, length in ranges:
        assert local_read(store, 1, offset, length) == network_read(store, 1, offset, length)
    assert local_read(store, 1, 5 * BS + 7, len(data)) == data
    assert local_read(store, 1, 20 * BS, 2 * BS) == bytes(2 * BS)


def test_a_flipped_byte_is_a_checksum_mismatch(store: ChunkStore) -> None:
    store.create(CHUNK, 1)
    store.write(CHUNK, 1, 0, 4 * BS, os.urandom(4 * BS), [])
    flip_bit(replica_path(store, CHUNK), DATA_OFFSET + 2 * BS + 17)
    assert len(local_read(store, 1, 0, 2 * BS)) == 2 * BS  # blocks around it are fine
    with pytest.raises(ChecksumMismatch, match="block 2"):
        local_read(store, 1, 0, 4 * BS)


def test_a_version_bump_or_a_delete_makes_the_fd_unusable(store: ChunkStore) -> None:
    store.create(CHUNK, 1)
    store.write(CHUNK, 1, 0, BS, os.urandom(BS), [])
    fd = store.open_for_local_read(CHUNK, 1)
    try:
        assert len(read_verified(fd, CHUNK, 1, 0, BS)) == BS
        store.set_version(CHUNK, 1, 2)
        with pytest.raises(local_replicas._Unusable, match="not at version 1"):
            read_verified(fd, CHUNK, 1, 0, BS)
        assert len(read_verified(fd, CHUNK, 2, 0, BS)) == BS
        store.delete(CHUNK)
        with pytest.raises(local_replicas._Unusable, match="deleted"):
            read_verified(fd, CHUNK, 2, 0, BS)
    finally:
        os.close(fd)


def test_open_for_local_read_is_read_only_and_checks_the_version(store: ChunkStore) -> None:
    store.create(CHUNK, 3)
    fd = store.open_for_local_read(CHUNK, 3)
    try:
        with pytest.raises(OSError):
            os.pwrite(fd, b"x", DATA_OFFSET)
    finally:
        os.close(fd)
    with pytest.raises(StaleChunkVersion):
        store.open_for_local_read(CHUNK, 2)
    with pytest.raises(ChunkNotFound):
        store.open_for_local_read(CHUNK + 1, 1)


# --- through the chunkserver's socket -----------------------------------------------------
def read_capability(chunk_id: int, operation: int = READ) -> m.Capability:
    return sign(capability_key(KEY), operation=operation, chunk_id=chunk_id, session_id=1,
                issued_ns=time.time_ns(), life_ns=60 * 10**9)


def location_of(port: int, version: int, capability: m.Capability | None = None,
                chunk_id: int = CHUNK) -> m.ChunkLocation:
    remote = m.ReplicaAddress(server_id=2, host="192.0.2.1", port=9, host_label="far")
    here = m.ReplicaAddress(server_id=1, host=HOST, port=port, host_label="here")
    return m.ChunkLocation(index=0, chunk_id=chunk_id, version=version, replicas=[remote, here],
                           read_capability=capability or read_capability(chunk_id))


@asynccontextmanager
async def chunkserver_socket(store: ChunkStore) -> AsyncIterator[tuple[int, DataService]]:
    """A LocalReadService on a name no other test uses; yields (its port, the service)."""
    port = next(_PORTS)
    async with trio.open_nursery() as nursery:
        peers = ConnectionPool(nursery, KEY, "chunkserver", compress=False)
        data = DataService(store, peers, WriteFence(VerifiedCapabilities(KEY)),
                           ServerIdentity(1), lambda *_: None)
        name = await nursery.start(LocalReadService(data).serve, HOST, port)
        assert name == local_socket_name(HOST, port)
        yield port, data
        nursery.cancel_scope.cancel()


def counts() -> tuple[float, float]:
    return local_replicas.LOCAL._value.get(), local_replicas.FALLBACK._value.get()


async def test_reads_come_from_the_local_file_and_fall_back_on_doubt(
        store: ChunkStore) -> None:
    store.create(CHUNK, 1)
    data = os.urandom(8 * BS)
    store.write(CHUNK, 1, 0, len(data), data, [])
    replicas = LocalReplicas()
    try:
        async with chunkserver_socket(store) as (port, _):
            local_before, fallback_before = counts()
            assert await replicas.read(location_of(port, 1), 0, len(data)) == data
            assert await replicas.read(location_of(port, 1), BS, 10) == data[BS:BS + 10]
            assert counts() == (local_before + 2, fallback_before)
            # rot: a fallback, never an error (generation 1: not from the readahead)
            flip_bit(replica_path(store, CHUNK), DATA_OFFSET + 3 * BS)
            assert await replicas.read(location_of(port, 1), 0, len(data), 1) is None
            assert counts() == (local_before + 2, fallback_before + 1)
            store.write(CHUNK, 1, 3 * BS, BS, data[3 * BS:4 * BS], [])  # repaired
            # the master moved the version on: the old fd is not used, the new one is
            store.set_version(CHUNK, 1, 2)
            assert await replicas.read(location_of(port, 1), 0, BS, 2) is None  # stale
            assert await replicas.read(location_of(port, 2), 0, len(data), 2) == data
            # a bound of one fd: the other replica's fd pushes this one out
            store.create(CHUNK + 1, 1)
            one = LocalReplicas(fds_max=1)
            try:
                assert await one.read(location_of(port, 2), 0, BS) == data[:BS]
                assert await one.read(location_of(port, 1, chunk_id=CHUNK + 1), 0, BS) == \
                    bytes(BS)
                assert len(one._fds) == 1
                assert await one.read(location_of(port, 2), 0, BS) == data[:BS]
            finally:
                one.close()
    finally:
        replicas.close()


async def test_a_sequential_stream_is_read_ahead_until_a_write_or_time_ends_it(
        store: ChunkStore, monkeypatch: pytest.MonkeyPatch) -> None:
    store.create(CHUNK, 1)
    data = os.urandom(64 * BS)
    store.write(CHUNK, 1, 0, len(data), data, [])
    file_reads: list[tuple[int, int]] = []

    def counted(fd: int, chunk_id: int, version: int, offset: int, length: int, *,
                check_replica: bool = True) -> bytes:
        file_reads.append((offset, length))
        return read_verified(fd, chunk_id, version, offset, length,
                             check_replica=check_replica)

    monkeypatch.setattr(local_replicas, "read_verified", counted)
    monkeypatch.setattr(local_replicas, "READAHEAD_TTL_S", 0.2)
    ahead_blocks = local_replicas.READAHEAD_BYTES // BS
    replicas = LocalReplicas()
    try:
        async with chunkserver_socket(store) as (port, _):
            location = location_of(port, 1)
            for block in range(ahead_blocks + 1):  # QEMU's 4 KiB stream
                assert await replicas.read(location, block * BS, BS, 0) == \
                    data[block * BS:(block + 1) * BS]
            assert file_reads == [(0, local_replicas.READAHEAD_BYTES),
                                  (ahead_blocks * BS, local_replicas.READAHEAD_BYTES)]
            # A write of ours acknowledged since (a new generation): read again.
            new = os.urandom(BS)
            store.write(CHUNK, 1, (ahead_blocks + 1) * BS, BS, new, [])
            assert await replicas.read(location, (ahead_blocks + 1) * BS, BS, 1) == new
            # Another host's write: seen once the readahead is READAHEAD_TTL_S old.
            newer = os.urandom(BS)
            store.write(CHUNK, 1, (ahead_blocks + 2) * BS, BS, newer, [])
            await trio.sleep(0.3)
            assert await replicas.read(location, (ahead_blocks + 2) * BS, BS, 1) == newer
            # Reads that do not follow on read only what they ask for.
            file_reads.clear()
            assert await replicas.read(location, 5 * BS, BS, 2) == data[5 * BS:6 * BS]
            assert await replicas.read(location, 60 * BS, 100, 2) == data[60 * BS:60 * BS + 100]
            assert file_reads == [(5 * BS, BS), (60 * BS, 100)]
    finally:
        replicas.close()


async def test_the_replica_checks_are_skipped_only_within_a_generation_and_a_while(
        store: ChunkStore, monkeypatch: pytest.MonkeyPatch) -> None:
    """Random reads look at the replica's header once per generation and
    READAHEAD_TTL_S; a version moved on is noticed after either ends."""
    store.create(CHUNK, 1)
    data = os.urandom(64 * BS)
    store.write(CHUNK, 1, 0, len(data), data, [])
    header_checks: list[int] = []

    def counted(header: bytes, chunk_id: int) -> int:
        header_checks.append(chunk_id)
        return local_replicas_decode_header(header, chunk_id)

    local_replicas_decode_header = local_replicas.decode_header
    monkeypatch.setattr(local_replicas, "decode_header", counted)
    monkeypatch.setattr(local_replicas, "READAHEAD_TTL_S", 0.2)
    replicas = LocalReplicas()
    try:
        async with chunkserver_socket(store) as (port, _):
            location = location_of(port, 1)
            for block in (0, 20, 40, 10):  # random: no readahead
                assert await replicas.read(location, block * BS, BS, 0) == \
                    data[block * BS:(block + 1) * BS]
            assert len(header_checks) == 1
            store.set_version(CHUNK, 1, 2)
            assert await replicas.read(location, 30 * BS, BS, 1) is None  # a new generation
            assert len(header_checks) == 2
            location = location_of(port, 2)  # the master's news: opened anew
            assert await replicas.read(location, 30 * BS, BS, 1) == data[30 * BS:31 * BS]
            store.set_version(CHUNK, 2, 3)
            await trio.sleep(0.3)  # the same generation, but the check is too old
            assert await replicas.read(location, 50 * BS, BS, 1) is None
    finally:
        replicas.close()


async def test_remote_addresses_are_remembered_as_not_local(store: ChunkStore) -> None:
    replicas = LocalReplicas()
    try:
        location = location_of(next(_PORTS), 1)  # nobody listens on either name
        assert await replicas.read(location, 0, BS) is None
        assert len(replicas._not_local_until_s) == 2
        assert await replicas.read(location, 0, BS) is None
    finally:
        replicas.close()


async def test_bad_capabilities_are_refused_and_the_socket_serves_on(
        store: ChunkStore, expected_logs) -> None:  # type: ignore[no-untyped-def]
    store.create(CHUNK, 1)
    store.create(CHUNK + 1, 1)
    replicas = LocalReplicas()
    try:
        async with chunkserver_socket(store) as (port, _):
            other_chunk = read_capability(CHUNK + 1)
            forged = m.Capability(chunk_id=CHUNK, operation=READ, epoch=0, session_id=1,
                                  issued_ns=0, expires_ns=2**62, mac=b"x" * 16)
            for capability in (other_chunk, forged, read_capability(CHUNK, WRITE)):
                _, fallback_before = counts()
                assert await replicas.read(location_of(port, 1, capability), 0, BS) is None
                assert counts()[1] == fallback_before + 1
            assert await replicas.read(location_of(port, 1), 0, BS) == bytes(BS)
    finally:
        replicas.close()


async def raw_call(port: int, packet: bytes) -> list[int] | None:
    """Send one raw packet: the fds of the reply, or None if the server closed instead."""
    sock = new_socket()
    with sock:
        await sock.connect(local_socket_name(HOST, port))
        await sock.send(packet)
        with trio.fail_after(5):
            received = await receive_frame(sock)
        return None if received is None else received[2]


async def test_malformed_packets_close_only_their_connection(
        store: ChunkStore, expected_logs) -> None:  # type: ignore[no-untyped-def]
    expected_logs.allow("vmstore.dfs.chunkserver.local_read_service", r"closed a connection")
    store.create(CHUNK, 1)
    replicas = LocalReplicas()
    try:
        async with chunkserver_socket(store) as (port, _):
            assert await replicas.read(location_of(port, 1), 0, BS) == bytes(BS)  # connected
            good_head, _ = codec.encode_frame(m.ToChunkserverOpenLocalReplica(
                chunk_id=CHUNK, version=1, capability=read_capability(CHUNK)), 7)
            wrong_type, _ = codec.encode_frame(m.ClientToMasterStatFs(), 7)
            for garbage in (b"\x00", os.urandom(200), good_head[:-3], good_head + b"junk",
                            wrong_type, b"x" * 5000,
                            good_head[:codec.HEADER_BYTES] + b"\xc1" * (len(good_head) - 20)):
                assert await raw_call(port, garbage) is None, garbage
            # a request with an fd attached is refused too
            sock = new_socket()
            with sock, open(os.devnull) as devnull:
                await sock.connect(local_socket_name(HOST, port))
                await sock.sendmsg([good_head], [(socket.SOL_SOCKET, socket.SCM_RIGHTS,
                                                  devnull.fileno().to_bytes(4, "little"))])
                with trio.fail_after(5):
                    assert await receive_frame(sock) is None
            # and a well-formed one on a fresh connection gets its fd
            fds = await raw_call(port, good_head)
            assert fds is not None
            assert len(fds) == 1
            os.close(fds[0])
            # the persistent connection made before all this still serves
            assert await replicas.read(location_of(port, 1), BS, BS) == bytes(BS)
    finally:
        replicas.close()


async def test_a_broken_connection_is_remade(store: ChunkStore) -> None:
    store.create(CHUNK, 1)
    replicas = LocalReplicas()
    try:
        async with chunkserver_socket(store) as (port, _):
            assert await replicas.read(location_of(port, 1), 0, BS) == bytes(BS)
            for link in replicas._links.values():
                link.sock.shutdown(socket.SHUT_RDWR)  # as if the chunkserver went away
            store.set_version(CHUNK, 1, 2)  # so that the next read must open again
            assert await replicas.read(location_of(port, 2), 0, BS) is None  # noticed here
            assert await replicas.read(location_of(port, 2), 0, BS) == bytes(BS)  # remade
    finally:
        replicas.close()


async def test_the_client_side_frame_check(store: ChunkStore) -> None:
    """receive_frame refuses a reply that carries more fds than it may."""
    left, right = trio.socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    with left, right, open(os.devnull) as a, open(os.devnull) as b:
        head, _ = codec.encode_frame(m.EmptyReply(), 1, response=True)
        fds = (a.fileno().to_bytes(4, "little") + b.fileno().to_bytes(4, "little"))
        await left.sendmsg([head], [(socket.SOL_SOCKET, socket.SCM_RIGHTS, fds)])
        with pytest.raises(ProtocolError, match="fd"):
            await receive_frame(right)
        await send_frame(left, m.EmptyReply(), 2, response=True)
        header, message, received = await receive_frame(right)  # type: ignore[misc]
        assert (header.request_id, message, received) == (2, m.EmptyReply(), [])


async def test_a_hung_local_chunkserver_costs_a_read_its_deadline_only(
        autojump_clock: trio.abc.Clock) -> None:
    """A chunkserver stopped (SIGSTOP) keeps its socket: connects and sends succeed, and
    no answer ever comes. The read falls back within the hedge deadline, not
    LOCAL_CALL_TIMEOUT_S, and the next reads go to the network without asking it."""
    port = next(_PORTS)
    with new_socket() as hung:  # listens, never accepts: a frozen process's socket
        await hung.bind(local_socket_name(HOST, port))
        hung.listen(8)
        replicas = LocalReplicas()
        try:
            started_s = trio.current_time()
            assert await replicas.read(location_of(port, 1), 0, BS) is None
            assert trio.current_time() - started_s <= HEDGE_CEILING_S  # virtual time
            started_s = trio.current_time()
            assert await replicas.read(location_of(port, 1), 0, BS) is None
            assert trio.current_time() == started_s  # not asked again meanwhile
        finally:
            replicas.close()
